// The I/O-free session state: keyframes and deltas rebuild the view; repeats are not shown.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SessionState, checkUrl, ClientError, connect } from "../aerobridge-client.js";

function session() {
  const s = new SessionState();
  s.types = new Map([["A", "number"], ["B", "string"], ["C", "number"]]);
  s.subscribed({ op: "ack", ok: true, sub: 1, profile: 3, every: 5, vars: ["A", "B", "C"] });
  return s;
}

test("keyframes and deltas rebuild the state against the keyframe", () => {
  const s = session();
  let u = s.data({ op: "key", p: 3, seq: 10, t: 1, valid: 1, v: [1, "x", null] });
  assert.deepEqual(u.values, { A: 1, B: "x", C: null });
  u = s.data({ op: "delta", p: 3, seq: 15, base: 10, t: 2, valid: 1, c: [[0, 2.5]] });
  assert.deepEqual(u.values, { A: 2.5 });
  // Against the keyframe, not the previous delta: A goes back to 1.
  u = s.data({ op: "delta", p: 3, seq: 20, base: 10, t: 3, valid: 0, c: [[1, "y"]] });
  assert.deepEqual(u.values, { A: 1, B: "y" });
  assert.equal(u.valid, false);
  assert.deepEqual(s.state, { A: 1, B: "y", C: null });
  assert.equal(s.updateCounter, 20);
});

test("a repeated keyframe is not shown; a delta without its keyframe is skipped", () => {
  const s = session();
  s.data({ op: "key", p: 3, seq: 10, t: 1, valid: 1, v: [1, "x", 2] });
  s.data({ op: "delta", p: 3, seq: 15, base: 10, t: 2, valid: 1, c: [[0, 5]] });
  assert.equal(s.data({ op: "key", p: 3, seq: 10, t: 1, valid: 1, v: [1, "x", 2] }), null);
  assert.equal(s.state.A, 5);
  assert.equal(s.data({ op: "delta", p: 3, seq: 25, base: 7, t: 4, valid: 1, c: [] }), null);
  assert.deepEqual(s.data({ op: "key", p: 3, seq: 30, t: 5, valid: 1, v: [1, "z", 2] }).values, { A: 1, B: "z" });
});

test("bad URLs are refused at once, with the reason", async () => {
  for (const url of ["http://127.0.0.1/", "tcp://127.0.0.1:12345", "not a url"]) {
    assert.throws(() => checkUrl(url), (e) => e instanceof ClientError && e.code === "bad_url");
    await assert.rejects(connect(url), (e) => e.code === "bad_url");
  }
  assert.equal(checkUrl("wss://bridge.local:8765/").protocol, "wss:");
});
