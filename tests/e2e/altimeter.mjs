// The example page clients/examples/altimeter.html in headless Chromium, served from clients/ by a
// static HTTP server on loopback (as its README says: a module import needs http): it imports the
// JavaScript client, draws the altimeter and a track, and says "live".
//   node tests/e2e/altimeter.mjs ws://127.0.0.1:8765/ target/altimeter.png
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";

const [bridge, screenshot] = process.argv.slice(2);
const clients = fileURLToPath(new URL("../../clients/", import.meta.url));
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 860, height: 360 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const files = http.createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname.slice(1);
    let body;
    try {
      if (path.includes("..")) throw new Error("outside clients/");
      body = readFileSync(clients + path);
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": path.endsWith(".html") ? "text/html" : "text/javascript" });
    res.end(body);
  });
  await new Promise((r) => files.listen(0, "127.0.0.1", r));
  files.unref();
  const origin = `http://127.0.0.1:${files.address().port}`;
  await page.goto(`${origin}/examples/altimeter.html?bridge=${encodeURIComponent(bridge)}`);
  await page.waitForFunction(() => window.example && example.track.length >= 3, null, { timeout: 15000 })
    .catch(() => fail(`no track: ${errors.join("; ")}`));
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 5000 })
    .catch(async () => fail(`status ${await page.textContent("#status")}`));
  const alt = await page.evaluate(() => example.client.state["Aircraft.Altitude"]);
  if (typeof alt !== "number") fail(`altitude ${alt}`);
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot });
  console.log(`altimeter ok: altitude ${alt} m, ${await page.evaluate(() => example.track.length)} track points`);
} finally {
  await browser.close();
}
