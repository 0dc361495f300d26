// The Blocks page as a browser shows it, for `cargo xtask demo` (xtask/src/demo/enforced.rs).
//
// Loads DASHBOARD_URL/blocks in headless Chromium, waits until the page has drawn
// its first answer from GET /api/v1/blocks (a row with data-prefix, or the empty
// row), and prints one line: `ok <json>` with the enforced rows
// ([{prefix, origin, gateway}], then the protected services drawn in the same
// pass as [{kind: "protected", service, origin, gateway, challenged}]), or
// `fail <reason>`. Exit code 0 only with `ok`.
//
// Env: DASHBOARD_URL (http://HOST:PORT), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 15000;

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-proxy-server',
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(`${url}/blocks`, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });
  await page.waitForSelector('#blocks tr[data-prefix], #blocks td.empty', { timeout: WAIT_MS });
  const rows = await page.$$eval('#blocks tr[data-prefix]', (trs) => trs.map((tr) => ({
    prefix: tr.dataset.prefix, origin: tr.dataset.origin, gateway: tr.dataset.gateway,
  })));
  const prot = await page.$$eval('#protected tr[data-service]', (trs) => trs.map((tr) => ({
    kind: 'protected', service: tr.dataset.service, origin: tr.dataset.origin,
    gateway: tr.dataset.gateway,
    challenged: Number((tr.querySelector('td.challenged')?.textContent || '').replace(/[^0-9]/g, '')),
  })));
  rows.push(...prot);
  console.log(`ok ${JSON.stringify(rows)}`);
} catch (e) {
  console.log(`fail ${String(e).split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
