// The conformance scenario (clients/conformance/scenario.json) against the real server, under
// Node's test runner. Needs the fixture in AEROBRIDGE_CONFORMANCE: `cargo test --test
// client_conformance` starts it and runs this file; without it these tests skip (and that run
// fails on any skip). The browser has no raw TCP, so this client runs the WebSocket transport.

import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync } from "node:fs";
import { connect, ClientError } from "../aerobridge-client.js";

const FIXTURE = JSON.parse(process.env.AEROBRIDGE_CONFORMANCE || "{}");
const SCENARIO = JSON.parse(readFileSync(FIXTURE.scenario || new URL("../../conformance/scenario.json", import.meta.url), "utf8"));
const DEADLINE = SCENARIO.deadline_s * 1000;
const skip = FIXTURE.ws ? false : "needs the fixture: cargo test --test client_conformance";
const TRANSPORTS = SCENARIO.transports.filter((t) => t === "ws");

function withDeadline(what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`not within ${DEADLINE} ms: ${what}`)), DEADLINE); }),
  ]).finally(() => clearTimeout(timer));
}

async function until(what, condition) {
  await withDeadline(what, (async () => { while (!condition()) await new Promise((r) => setTimeout(r, 50)); })());
}

/** v1 frames straight from the edge's data port, by update_counter. */
class Reference {
  constructor() { this.frames = new Map(); this.waiters = new Set(); }
  async start() {
    const [host, port] = hostPort(FIXTURE.reference);
    this.socket = net.connect(port, host);
    let buffer = "";
    this.socket.setEncoding("utf8");
    this.socket.on("data", (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const frame = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        this.frames.set(frame.update_counter, frame.variables);
        if (this.frames.size > 6000) this.frames.delete(this.frames.keys().next().value);
      }
      for (const w of this.waiters) w();
    });
    // A new subscriber may get its profile's current keyframe, up to a second old.
    await until("reference frames for 1.5 s", () => this.frames.size >= 75);
  }
  frame(counter) {
    return withDeadline(`reference frame ${counter}`, new Promise((resolve, reject) => {
      const check = () => {
        if (this.frames.has(counter)) { this.waiters.delete(check); resolve(this.frames.get(counter)); }
        else if (this.frames.size && this.frames.keys().next().value > counter) {
          this.waiters.delete(check);
          reject(new Error(`reference frame ${counter} is gone`));
        }
      };
      this.waiters.add(check);
      check();
    }));
  }
  stop() { this.socket.destroy(); }
}

function hostPort(addr) {
  const i = addr.lastIndexOf(":");
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

function control(request) {
  return withDeadline(request, new Promise((resolve, reject) => {
    const [host, port] = hostPort(FIXTURE.control);
    const s = net.connect(port, host, () => s.write(request + "\n"));
    let answer = "";
    s.setEncoding("utf8");
    s.on("data", (d) => {
      answer += d;
      if (!answer.includes("\n")) return;
      s.destroy();
      answer = answer.trim();
      if (answer.startsWith("ok ")) resolve(Number(answer.split(" ")[1]));
      else reject(new Error(`${request}: ${answer}`));
    });
    s.on("error", reject);
  }));
}

/** Reads every update as it comes and checks it against the reference. */
function checker(client, reference) {
  const c = { checked: 0, last: null, gaps: [], rebuilt: {}, failure: null, waiters: new Set() };
  const notify = () => { for (const w of c.waiters) w(); };
  (async () => {
    for await (const update of client) {
      const n = update.updateCounter, every = client.subscription.every;
      assert.equal(n % every, 0, `update ${n} is not on the subscription's frames (every ${every})`);
      assert.ok(c.last === null || n > c.last, `update ${n} after ${c.last}: repeated or going back`);
      // Steps other than `every`: allowed only where a connection starts (its first keyframe may
      // be up to a second old, then the current frame follows).
      if (c.last !== null && n - c.last !== every) c.gaps.push([c.last, n]);
      c.last = n;
      Object.assign(c.rebuilt, update.values);
      const ref = await reference.frame(n);
      const names = client.subscription.vars;
      assert.ok(names.length > 0);
      for (const name of names) {
        assert.deepEqual(c.rebuilt[name], ref[name], `${name} at ${n}`);
        const kind = client.catalog.get(name).type;
        assert.equal(typeof c.rebuilt[name], kind === "string" ? "string" : "number", name);
      }
      if (client.updateCounter === n) for (const name of names) assert.deepEqual(client.state[name], ref[name]);
      c.checked++;
      notify();
    }
  })().catch((e) => { c.failure = e; notify(); });
  c.updates = (count) => {
    const target = c.checked + count;
    return withDeadline(`${count} updates`, new Promise((resolve, reject) => {
      const check = () => {
        if (c.failure) { c.waiters.delete(check); reject(c.failure); }
        else if (c.checked >= target) { c.waiters.delete(check); resolve(); }
      };
      c.waiters.add(check);
      check();
    }));
  };
  return c;
}

for (const transport of TRANSPORTS) {
  test(`scenario over ${transport}`, { skip }, async () => {
    const sub = SCENARIO.subscription;
    const reference = new Reference();
    await reference.start();
    const client = await withDeadline("connect", connect(FIXTURE[transport], { vars: sub.vars, hz: sub.hz, mode: sub.mode, token: FIXTURE.token }));
    const check = checker(client, reference);
    const session = client.session;
    const staleEvents = [];
    client.on("stale", (s) => staleEvents.push(s));
    try {
      for (const step of SCENARIO.steps) {
        switch (step.step) {
          case "updates": await check.updates(step.count); break;
          case "cut": assert.ok((await control("cut")) >= 1, "the proxy had the client's connection"); break;
          case "resumed":
            assert.ok(client.reconnects >= 1 && client.resumed === true, `${client.reconnects} ${client.resumed} ${client.lastError}`);
            assert.equal(client.session, session);
            assert.equal(await control(`subscriptions ${client.session}`), step.subscriptions);
            break;
          case "set":
            if (step.ok) {
              const ack = await client.set(step.variable, step.value);
              assert.ok(ack.frame !== null || ack.relayed, JSON.stringify(ack));
            } else {
              await assert.rejects(client.set(step.variable, step.value), (e) => {
                assert.ok(e instanceof ClientError);
                assert.equal(e.code, step.code);
                assert.ok(e.serverMessage.includes(step.message ?? ""), e.serverMessage);
                return true;
              });
            }
            break;
          case "source": await control(`source ${step.do}`); break;
          case "stale":
            await until(`stale is ${step.expect}`, () => client.stale === step.expect);
            await until(`a stale event ${step.expect}`, () => staleEvents.at(-1) === step.expect);
            break;
          default: throw new Error(`unknown step ${step.step}`);
        }
      }
      assert.equal(check.failure, null);
      assert.ok(check.gaps.length <= 2 * (1 + client.reconnects), `gaps beyond the server's rules: ${JSON.stringify(check.gaps)}`);
    } finally {
      await client.close();
      reference.stop();
    }
  });
}

for (const kase of SCENARIO.errors) {
  const urls = kase.url ? [kase.url.replace("{refused}", FIXTURE.refused)] : TRANSPORTS.map((t) => FIXTURE[t]);
  for (const url of urls) {
    // A browser has no raw TCP: tcp:// URLs are a bad_url here, said as clearly.
    const code = url.startsWith("tcp://") ? "bad_url" : kase.code;
    test(`error: ${kase.case} (${url})`, { skip }, async () => {
      const sub = SCENARIO.subscription;
      await withDeadline(kase.case, assert.rejects(async () => {
        const client = await connect(url, { vars: kase.vars ?? sub.vars, hz: sub.hz, token: kase.token ?? FIXTURE.token });
        try { await client.set(kase.set.variable, kase.set.value); } finally { await client.close(); }
      }, (e) => {
        assert.ok(e instanceof ClientError, String(e));
        assert.equal(e.code, code);
        assert.ok(e.serverMessage.includes(kase.message_contains ?? ""), e.serverMessage);
        return true;
      }));
    });
  }
}
