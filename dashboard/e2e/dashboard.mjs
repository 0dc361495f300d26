// Browser check of the dashboard pages, driven by `cargo test -p dashboard --test browser`
// (tests/browser.rs starts the server, feeds it and reads this script's stdout).
//
// Protocol on stdout, one line each: `loaded` once the overview has drawn its first
// data (the Rust side then publishes a new alert and keeps feeding samples);
// `blocks-shown` once the Blocks page shows the gateway state's CLI and feed
// entries and the one about to expire (the Rust side then ingests the gateway's
// delta removing that one as expired); then `ok <json>` or `fail <reason>` at the
// end. Exit code 0 only on success.
//
// Env: DASHBOARD_URL (http://127.0.0.1:PORT), SCREENSHOT_DIR, CHROMIUM (default
// /usr/bin/chromium), ALERT_ID (id of the alert the Rust side sends after `loaded`),
// API_TOKEN (bearer token for the block form).
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const shots = process.env.SCREENSHOT_DIR;
const alertId = process.env.ALERT_ID;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 20000;

function fail(reason) {
  console.log(`fail ${reason}`);
  process.exitCode = 1;
}

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`); });

  await page.goto(url + '/', { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  await page.waitForSelector('#live.on', { timeout: WAIT_MS });
  const chart = page.locator('#chart-packets');
  const before = {
    points: Number(await chart.getAttribute('data-points')),
    last: await chart.getAttribute('data-last'),
    canvas: await page.locator('#chart-packets canvas').count(),
  };
  console.log('loaded');

  // Charts move: more points and different latest values arrive over SSE.
  await page.waitForFunction(
    ([p, l]) => {
      const el = document.getElementById('chart-packets');
      return Number(el.dataset.points) > p + 2 && el.dataset.last !== l;
    },
    [before.points, before.last],
    { timeout: WAIT_MS },
  );
  // The new alert appears at the top of the latest alerts, with its audit hash.
  const row = page.locator(`#overview-alerts tr[data-alert-id="${alertId}"]`);
  await row.waitFor({ timeout: WAIT_MS });
  const firstId = await page.locator('#overview-alerts tr').first().getAttribute('data-alert-id');
  const hashTitle = await row.locator('.hash').getAttribute('title');
  // The detector publishes the alert again as the attack goes on (same id): its
  // row is replaced in place, with the count and since when, not added.
  const alertsCard = await page.locator('#card-alerts').textContent();
  console.log('alert-shown');
  await page.waitForSelector(`#overview-alerts tr[data-alert-id="${alertId}"][data-count="4"]`, { timeout: WAIT_MS });
  const mergedRows = await page.locator(`#overview-alerts tr[data-alert-id="${alertId}"]`).count();
  const mergedSeen = await page.locator(`#overview-alerts tr[data-alert-id="${alertId}"] .alert-seen`).textContent();
  const alertsCardAfter = await page.locator('#card-alerts').textContent();
  const after = {
    points: Number(await chart.getAttribute('data-points')),
    last: await chart.getAttribute('data-last'),
  };
  await page.waitForTimeout(300); // let the flash animation and axes settle for the picture
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  // Every other page renders its data.
  const checks = {
    devices: '#devices tr[data-address="192.0.2.10"]',
    alerts: `#alerts tr[data-alert-id="${alertId}"]`,
    gateways: '#gateways .node[data-node="gateway-1"] .badge.online',
    history: '#history-packets canvas',
  };
  for (const [name, sel] of Object.entries(checks)) {
    await page.goto(`${url}/${name}`, { waitUntil: 'load' });
    await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
    await page.waitForSelector(sel, { timeout: WAIT_MS });
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  }
  // The Blocks page is the gateway's state: a CLI block and feed entries, each
  // with its origin; the entry that expired before the snapshot is not there.
  await page.goto(`${url}/blocks`, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  await page.waitForSelector('#blocks tr[data-prefix="192.0.2.66/32"][data-origin="cli"]', { timeout: WAIT_MS });
  await page.waitForSelector('#blocks tr[data-prefix="198.51.100.0/24"][data-origin="feed"]', { timeout: WAIT_MS });
  const expiring = page.locator('#blocks tr[data-prefix="203.0.113.0/24"]');
  await expiring.waitFor({ timeout: WAIT_MS });
  const staleShown = await page.locator('#blocks tr[data-prefix="203.0.113.77/32"]').count();
  const cliText = await page.locator('#blocks tr[data-prefix="192.0.2.66/32"]').textContent();
  console.log('blocks-shown');
  // The gateway's delta removes the expiring entry: it disappears live.
  await expiring.waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.screenshot({ path: `${shots}/blocks.png`, fullPage: true });

  // An operator blocks a source through the form (token, same-origin POST): it
  // is pending (sent, not in the gateway's state), not listed as a block.
  await page.fill('#token-form input[name="token"]', process.env.API_TOKEN);
  await page.click('#token-form button');
  await page.fill('#block-form input[name="target"]', '198.51.100.77');
  await page.fill('#block-form input[name="reason"]', 'browser test');
  await page.click('#block-form button');
  await page.waitForSelector('#pending tr[data-target="198.51.100.77/32"][data-status="sent"]', { timeout: WAIT_MS });
  const formBlockListed = await page.locator('#blocks tr[data-prefix="198.51.100.77/32"]').count();
  const blockResult = await page.locator('#block-result').textContent();
  await page.screenshot({ path: `${shots}/blocks-after-form.png`, fullPage: true });

  await page.goto(`${url}/history`, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  const historyPoints = Number(await page.locator('#history-packets').getAttribute('data-points'));

  if (firstId !== alertId) fail(`newest alert row is ${firstId}, expected ${alertId}`);
  else if (!/^[0-9a-f]{64}$/.test(hashTitle || '')) fail(`alert row has no audit hash: ${hashTitle}`);
  else if (mergedRows !== 1) fail(`the merged alert has ${mergedRows} rows`);
  else if (!/×4, since/.test(mergedSeen || '')) fail(`merged alert row shows: ${mergedSeen}`);
  else if (alertsCard !== alertsCardAfter) fail(`an update counted as a new alert: ${alertsCard} -> ${alertsCardAfter}`);
  else if (before.canvas < 1) fail('overview chart has no canvas');
  else if (historyPoints < 1) fail('history chart is empty');
  else if (!/^Sent/.test(blockResult || '')) fail(`block form said: ${blockResult}`);
  else if (staleShown !== 0) fail('an entry past its expiry is listed');
  else if (!/root/.test(cliText || '')) fail(`CLI row does not name its maker: ${cliText}`);
  else if (formBlockListed !== 0) fail('a command the gateway has not shown is listed as a block');
  else if (errors.length) fail(`page errors: ${errors.join(' | ')}`);
  else console.log(`ok ${JSON.stringify({ before, after, historyPoints })}`);
} catch (e) {
  fail(String(e).split('\n')[0]);
} finally {
  await browser.close();
}
