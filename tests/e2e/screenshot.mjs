// Retakes docs/dashboard.png: starts its own server (the release build, on free loopback ports),
// lets the dashboard watch for a while so the track shows a pattern, lowers the gear on that
// server — never on one it did not start — and saves the screenshot.
//   cargo build --release && node tests/e2e/screenshot.mjs docs/dashboard.png 240
// Given a URL as the third argument it only watches that server: no command is sent.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const [screenshot, seconds = "240", url] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node tests/e2e/screenshot.mjs OUT.png [SECONDS] [URL of a running server: watch only]");
  process.exit(2);
}
let server = null, target = url;
if (!target) {
  const bin = fileURLToPath(new URL("../../target/release/aerobridge", import.meta.url));
  server = spawn(bin, ["--data-port", "0", "--command-port", "0", "--ws-port", "0"], { stdio: ["ignore", "ignore", "pipe"] });
  target = await new Promise((resolve, reject) => {
    let log = "";
    server.on("error", (e) => reject(new Error(`${bin}: ${e.message} (cargo build --release first)`)));
    server.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/listening on (\S+) \(websocket\)/);
      if (m) resolve(`http://${m[1]}/`);
    });
    server.on("exit", (code) => reject(new Error(`the server exited (${code}): ${log}`)));
  });
}
// Chromium's sandbox refuses to run as root; this browser only ever opens our own page.
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
try {
  const page = await browser.newPage({ viewport: { width: 1320, height: 560 } });
  await page.goto(target);
  await page.waitForTimeout(Number(seconds) * 1000); // the length of the watch, not a wait for an event
  if (server) {
    await page.click("#gear-down");
    await page.waitForSelector("#log .ok", { timeout: 5000 });
  }
  await page.screenshot({ path: screenshot });
  console.log(`screenshot ${screenshot} of ${target}`);
} finally {
  await browser.close();
  server?.kill();
}
