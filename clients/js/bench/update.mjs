// What one update costs the client: a delta of 30 changed values (of 30 subscribed), from the
// JSON text to the rebuilt state and the Update. Prints µs per delta (median of 7 runs).
//   node clients/js/bench/update.mjs
import { SessionState } from "../aerobridge-client.js";

const N = 30;
const names = Array.from({ length: N }, (_, i) => `Aircraft.Value${i}`);
const s = new SessionState();
s.types = new Map(names.map((n) => [n, "number"]));
s.subscribed({ op: "ack", profile: 1, every: 5, vars: names });
s.data({ op: "key", p: 1, seq: 0, t: 0, valid: 1, v: names.map((_, i) => i * 1.5) });
const deltas = Array.from({ length: 50000 }, (_, k) => JSON.stringify({
  op: "delta", p: 1, seq: 5 * (k + 1), base: 0, t: k, valid: 1,
  c: names.map((_, i) => [i, 309.123456789 + i + k * 0.01]),
}));
const run = () => {
  s.profiles.get(1).seq = 0;
  const start = process.hrtime.bigint();
  for (const text of deltas) s.data(JSON.parse(text));
  return Number(process.hrtime.bigint() - start) / 1000 / deltas.length;
};
run(); // warm up the JIT
const times = Array.from({ length: 7 }, run).sort((a, b) => a - b);
console.log(`node: ${times[3].toFixed(2)} µs per delta of ${N} values (min ${times[0].toFixed(2)}), Node ${process.version}`);
