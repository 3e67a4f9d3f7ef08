// End-to-end: load the dashboard in headless Chromium, check that values update, click a command,
// see its reply and its effect, save a screenshot.
//   node tests/e2e/dashboard.mjs http://127.0.0.1:8765/ target/dashboard.png
import { chromium } from "playwright-core";

// COMPRESSION=off: the server was started with --ws-compression off (no extension expected).
const [url, screenshot] = process.argv.slice(2);
const compressed = process.env.COMPRESSION !== "off";
const agreed = (ext) => (compressed ? ext.startsWith("permessage-deflate") : ext === "");
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };
// CERT=PEM (https): Chromium trusts that certificate's key the way it allows, by an SPKI
// allow-list flag (SHA-256 of the SubjectPublicKeyInfo, base64), not by ignoring TLS errors.
const spki = [];
if (process.env.CERT) {
  const { X509Certificate, createHash } = await import("node:crypto");
  const { readFileSync } = await import("node:fs");
  const cert = new X509Certificate(readFileSync(process.env.CERT));
  const der = cert.publicKey.export({ type: "spki", format: "der" });
  spki.push(`--ignore-certificate-errors-spki-list=${createHash("sha256").update(der).digest("base64")}`);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", ...spki],
});
try {
  const page = await browser.newPage({ viewport: { width: 1320, height: 560 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  if (url.startsWith("https:") && !(await page.evaluate(() => window.isSecureContext && location.protocol === "https:"))) {
    fail("not a secure https page");
  }
  await page.waitForFunction(() => document.getElementById("state").textContent === "live", null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("alt").textContent !== "–", null, { timeout: 5000 });
  const first = Number(await page.textContent("#counter"));
  await page.waitForTimeout(1200);
  const second = Number(await page.textContent("#counter"));
  if (!(second > first)) fail(`frame counter did not advance (${first} → ${second})`);
  // 25 messages a second (v2 at 25 Hz): wait for a full second that shows it (a busy machine
  // may deliver the first seconds late).
  await page.waitForFunction(() => Number(document.getElementById("fps").textContent) >= 20, null, { timeout: 15000 })
    .catch(async () => fail(`message rate ${await page.textContent("#fps")}/s`));
  const fps = Number(await page.textContent("#fps"));
  // Session protocol v2: a subset as deltas, a few kB/s instead of v1's ~570 kB/s.
  const proto = await page.textContent("#proto");
  if (!proto.startsWith("v2 · profile")) fail(`not on protocol v2: ${proto}`);
  // Chromium offers permessage-deflate; the server compresses each profile's message once.
  const extensions = await page.evaluate(() => dashboard.client.extensions);
  if (!agreed(extensions)) fail(`extensions "${extensions}" (compression expected: ${compressed})`);
  const kbps = Number(await page.textContent("#rate"));
  if (!(kbps > 0 && kbps < 50)) fail(`received ${kbps} kB/s`);
  // The throttle slider shows the aircraft's throttle, not a made-up default.
  const shown = Number(await page.inputValue("#throttle"));
  const actual = Number((await page.textContent("#thr")).replace("%", "")) / 100;
  if (!(Math.abs(shown - actual) <= 0.015)) fail(`throttle slider ${shown} while the aircraft's throttle is ${actual}`);
  // The server's own view of its clients (GET /connections).
  await page.waitForFunction(() => /^\d+ clients · \d+ frames skipped · lag ≤ \d+ ms$/.test(document.getElementById("server").textContent), null, { timeout: 5000 })
    .catch(async () => fail(`server stats: ${await page.textContent("#server")}`));
  // The ground track is a line (points every half second), not just the current dot.
  await page.waitForFunction(() => dashboard.track.length >= 4, null, { timeout: 5000 });
  await page.click("#gear-down");
  await page.waitForSelector("#log .ok", { timeout: 5000 });
  const reply = await page.textContent("#log .ok");
  if (!reply.includes("Controls.Gear = 1")) fail(`unexpected reply: ${reply}`);
  await page.waitForFunction(() => document.getElementById("cfg").textContent.includes("down"), null, { timeout: 15000 });
  await page.click("#send-throttle");
  await page.waitForFunction(() => document.querySelectorAll("#log .ok").length >= 2, null, { timeout: 5000 });
  // Longer than the server's idle timeout in the test (3 s): still live, no error.
  await page.waitForTimeout(4000);
  if ((await page.textContent("#state")) !== "live") fail(`not live after 4 s: ${await page.textContent("#state")}`);
  // A plain v1 client in the same browser: the full frames arrive compressed once per tick for
  // everyone, and every one of them parses, in order.
  const v1 = await page.evaluate(() => new Promise((resolve) => {
    const s = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`);
    const counters = [];
    s.onmessage = (e) => {
      counters.push(JSON.parse(e.data).update_counter);
      if (counters.length === 150) { s.close(); resolve({ extensions: s.extensions, counters }); }
    };
    s.onerror = () => resolve({ error: true });
  }));
  if (v1.error) fail("v1 WebSocket failed");
  if (!agreed(v1.extensions)) fail(`v1: extensions "${v1.extensions}" (compression expected: ${compressed})`);
  const steps = v1.counters.slice(1).map((c, i) => c - v1.counters[i]);
  if (steps.some((d) => d !== 1)) fail(`v1 counters not consecutive: ${v1.counters.join(",")}`);
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  const refused = await page.$$eval("#log .err", (els) => els.map((e) => e.textContent));
  if (refused.length) fail(`errors in the command log: ${refused.join("; ")}`);
  await page.screenshot({ path: screenshot });
  console.log(`dashboard ok: ${proto}, ${kbps} kB/s, frames ${first}→${second}, ${fps} messages/s, reply "${reply}", gear down, screenshot ${screenshot}`);
} finally {
  await browser.close();
}
