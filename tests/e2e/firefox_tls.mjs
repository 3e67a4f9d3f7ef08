// Firefox (Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core) loads the
// dashboard over https and reads telemetry over wss. It trusts the test CA the way Firefox
// allows: the CA is in the profile's NSS database (certutil -A), nothing is ignored.
//   node tests/e2e/firefox_tls.mjs https://localhost:PORT/ PROFILE_DIR
import puppeteer from "puppeteer-core";

const [url, profile] = process.argv.slice(2);
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
  headless: true,
  userDataDir: profile,
  extraPrefsFirefox: { "security.enterprise_roots.enabled": false, "network.stricttransportsecurity.preloadlist": false },
});
try {
  const page = await browser.newPage();
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  const secure = await page.evaluate(() => window.isSecureContext && location.protocol === "https:");
  if (!secure) fail("not a secure https page");
  await page.waitForFunction(() => document.getElementById("state").textContent === "live", { timeout: 20000 });
  const first = Number(await page.evaluate(() => document.getElementById("counter").textContent));
  await new Promise((r) => setTimeout(r, 1500));
  const second = Number(await page.evaluate(() => document.getElementById("counter").textContent));
  if (!(second > first)) fail(`frame counter did not advance (${first} → ${second})`);
  // A plain v1 wss client in the same page: 100 consecutive frames, each whole JSON.
  const v1 = await page.evaluate(() => new Promise((resolve) => {
    const s = new WebSocket(`wss://${location.host}/`);
    const counters = [];
    s.onmessage = (e) => {
      counters.push(JSON.parse(e.data).update_counter);
      if (counters.length === 100) { s.close(); resolve({ counters }); }
    };
    s.onerror = () => resolve({ error: true });
  }));
  if (v1.error) fail("wss WebSocket failed");
  const steps = v1.counters.slice(1).map((c, i) => c - v1.counters[i]);
  if (steps.some((d) => d !== 1)) fail(`v1 counters not consecutive: ${v1.counters.join(",")}`);
  console.log(`firefox ok: frames ${first}→${second}, 100 wss frames in order`);
} finally {
  await browser.close();
}
