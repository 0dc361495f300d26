// Browser check of the Settings and Audit pages, driven by
// `cargo test -p dashboard --test browser_settings` (tests/browser_settings.rs
// starts the server, feeds it schemas and acks and reads this script's stdout).
//
// Protocol on stdout, one line each: `settings-sent` once the settings form has
// sent a change and both detectors show it pending (the Rust side then ingests
// detector-1's ack of it); then `ok <json>` or `fail <reason>` at the end. Exit
// code 0 only on success.
//
// Env: DASHBOARD_URL (http://127.0.0.1:PORT), SCREENSHOT_DIR, CHROMIUM (default
// /usr/bin/chromium), ALERT_ID (an alert the dashboard holds), API_TOKEN.
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
let step = 'start';
let page;
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // The refused change and the malformed hash below answer 400 on purpose;
  // anything else is an error.
  page.on('response', (r) => {
    const expected = r.status() === 400
      && (r.url().endsWith('/api/v1/thresholds') || r.url().endsWith('/api/v1/audit/xyz'));
    if (r.status() >= 400 && !expected) errors.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 400/.test(m.text())) errors.push(m.text());
  });
  const text = async (sel) => (await page.locator(sel).textContent()) || '';

  // The schema's keys with their ranges, the values set and in force, and per
  // detector applied / refused with the error.
  await page.goto(`${url}/settings`, { waitUntil: 'load' });
  step = 'body[data-ready="true"]';
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  const vp = '#settings-keys tr[data-key="portscan.vertical_ports"]';
  step = 'vp';
  await page.waitForSelector(vp, { timeout: WAIT_MS });
  const vpRange = await text(`${vp} td:nth-child(3)`);
  const vpSet = await text(`${vp} .value-set`);
  const vpInForce = await text(`${vp} .value-in-force`);
  step = '#settings-detectors tr[data-detector="detector-1"][data-status="applied"]';
  await page.waitForSelector('#settings-detectors tr[data-detector="detector-1"][data-status="applied"]', { timeout: WAIT_MS });
  const refused = '#settings-detectors tr[data-detector="detector-2"][data-status="refused"]';
  step = 'refused';
  await page.waitForSelector(refused, { timeout: WAIT_MS });
  const refusedText = await text(refused);
  await page.screenshot({ path: `${shots}/settings.png`, fullPage: true });

  // A value out of the schema's range: refused by the API, naming the key.
  await page.fill('#settings-token-form input[name="token"]', process.env.API_TOKEN);
  await page.click('#settings-token-form button');
  await page.selectOption('#settings-key', 'spike.alpha');
  const alphaRange = await text('#settings-range');
  await page.fill('#settings-form input[name="value"]', '5');
  await page.click('#settings-form button');
  step = "#settings-result.err";
  await page.waitForSelector('#settings-result.err', { timeout: WAIT_MS });
  const badResult = await text('#settings-result');
  // A valid one: sent, pending at both detectors until they ack.
  await page.fill('#settings-form input[name="value"]', '0.5');
  await page.click('#settings-form button');
  step = "#settings-result.ok";
  await page.waitForSelector('#settings-result.ok', { timeout: WAIT_MS });
  const goodResult = await text('#settings-result');
  step = '#settings-detectors tr[data-detector="detector-1"][data-status="pending"]';
  await page.waitForSelector('#settings-detectors tr[data-detector="detector-1"][data-status="pending"]', { timeout: WAIT_MS });
  step = '#settings-detectors tr[data-detector="detector-2"][data-status="pending"]';
  await page.waitForSelector('#settings-detectors tr[data-detector="detector-2"][data-status="pending"]', { timeout: WAIT_MS });
  console.log('settings-sent');
  // detector-1's ack arrives; the page shows it (it refreshes itself).
  step = '#settings-detectors tr[data-detector="detector-1"][data-status="applied"]';
  await page.waitForSelector('#settings-detectors tr[data-detector="detector-1"][data-status="applied"]', { timeout: WAIT_MS });
  const alphaSet = await text('#settings-keys tr[data-key="spike.alpha"] .value-set');
  await page.screenshot({ path: `${shots}/settings-after-change.png`, fullPage: true });

  // An alert links to its audit record, shown with its position and a verified chain.
  await page.goto(`${url}/alerts`, { waitUntil: 'load' });
  step = 'body[data-ready="true"]';
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  await page.click(`#alerts tr[data-alert-id="${alertId}"] a.hash`);
  step = 'the audit page URL';
  await page.waitForURL(/\/audit\?hash=[0-9a-f]{64}$/, { timeout: WAIT_MS });
  step = '#audit-entry [data-verified="true"]';
  await page.waitForSelector('#audit-entry [data-verified="true"]', { timeout: WAIT_MS });
  const auditText = await text('#audit-entry');
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
  // A malformed hash: the API's message is shown.
  await page.goto(`${url}/audit?hash=xyz`, { waitUntil: 'load' });
  step = "#audit-entry .result.err";
  await page.waitForSelector('#audit-entry .result.err', { timeout: WAIT_MS });
  const badHash = await text('#audit-entry');

  if (!/1 … 65535 ports/.test(vpRange)) fail(`vertical_ports range shown as ${vpRange}`);
  else if (vpSet !== '30' || vpInForce !== '30 / 15') fail(`vertical_ports set ${vpSet}, in force ${vpInForce}`);
  else if (!/must be 1/.test(refusedText)) fail(`refusal shown without its error: ${refusedText}`);
  else if (!/float, 0\.000001 … 1/.test(alphaRange)) fail(`spike.alpha range shown as ${alphaRange}`);
  else if (!/^spike\.alpha: 5 is outside/.test(badResult)) fail(`bad value answered ${badResult}`);
  else if (!/^Sent .*awaiting detector-1, detector-2/.test(goodResult)) fail(`good value answered ${goodResult}`);
  else if (alphaSet !== '0.5') fail(`spike.alpha set shown as ${alphaSet}`);
  else if (!/verified \(\d+ records\)/.test(auditText) || !/alert/.test(auditText) || !auditText.includes(alertId)) fail(`audit page shows ${auditText}`);
  else if (!/not hex/.test(badHash)) fail(`bad hash shown as ${badHash}`);
  else if (errors.length) fail(`page errors: ${errors.join(' | ')}`);
  else console.log(`ok ${JSON.stringify({ vpRange, vpInForce, goodResult })}`);
} catch (e) {
  if (page) await page.screenshot({ path: `${shots}/settings-failure.png`, fullPage: true }).catch(() => {});
  fail(`at ${step}: ${String(e).split('\n')[0]}`);
} finally {
  await browser.close();
}
