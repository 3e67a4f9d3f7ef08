// One-off for docs/dashboard.png: let the dashboard watch for a while so the track shows a pattern.
import { chromium } from "playwright-core";
const [url, screenshot, seconds] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
const page = await browser.newPage({ viewport: { width: 1320, height: 560 } });
await page.goto(url);
await page.waitForTimeout(Number(seconds) * 1000);
await page.click("#gear-down");
await page.waitForTimeout(1500);
await page.screenshot({ path: screenshot });
await browser.close();
