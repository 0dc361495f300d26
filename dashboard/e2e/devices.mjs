// Browser check of the IoT device part of the Devices page, driven by
// `cargo test -p dashboard --test browser_devices` (tests/browser_devices.rs
// starts the server, feeds it a gateway's device reports and reads this
// script's stdout).
//
// Protocol on stdout, one line each: `detail-shown` once the page shows the
// device list and esp32-1's detail (the Rust side then publishes a new trust
// change, state and batch); then `ok <json>` or `fail <reason>`. Exit code 0
// only on success.
//
// Env: DASHBOARD_URL (http://127.0.0.1:PORT), SCREENSHOT_DIR, CHROMIUM (default
// /usr/bin/chromium).
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const shots = process.env.SCREENSHOT_DIR;
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
    '--no-proxy-server',
  ],
});
let step = 'start';
let page;
const wait = async (sel) => {
  step = sel;
  await page.waitForSelector(sel, { timeout: WAIT_MS });
};
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`); });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const text = async (sel) => (await page.locator(sel).first().textContent()) || '';
  const count = async (sel) => page.locator(sel).count();
  const data = async (sel, key) => page.locator(sel).first().getAttribute(`data-${key}`);

  await page.goto(`${url}/devices`, { waitUntil: 'load' });
  await wait('body[data-ready="true"]');
  const row = '#iot-devices tr[data-device="esp32-1"]';
  await wait(row);
  const listOrder = await page.$$eval('#iot-devices tr[data-device]', (trs) => trs.map((t) => t.dataset.device));
  const trustBefore = await text(`${row} td.trust`);
  const findingsCell = await text(`${row} td.findings`);
  const gatewaysLine = await text('#iot-gateways');
  const unenrolled = await count('#iot-all-refusals tr[data-device="rogue-1"][data-reason="unenrolled"]');

  // The detail: charts, trust history with causes, findings, refusals, commands.
  await page.click(row);
  await wait('#iot-detail[data-device="esp32-1"]');
  await wait('#iot-trust tr[data-cause]');
  step = 'the page URL';
  await page.waitForURL(/\/devices\?device=esp32-1&gateway=gateway-1$/, { timeout: WAIT_MS });
  const healthPoints = Number(await data('#iot-chart-health', 'points'));
  const sensorSeries = await data('#iot-chart-sensors', 'series');
  const trustPoints = Number(await data('#iot-chart-trust', 'points'));
  const causes = await page.$$eval('#iot-trust tr[data-cause] td.cause', (tds) => tds.map((t) => t.textContent));
  const telnet = await count('#iot-findings tr[data-port="23"][data-service="telnet"]');
  const scanLine = await text('#iot-scan');
  const replay = await count('#iot-refusals tr[data-reason="replay"]');
  const refusedCmd = await text('#iot-commands tr[data-decision="refused"]');
  const allowedCmd = await count('#iot-commands tr[data-decision="allowed"]');
  const batches = await count('#iot-batches tr[data-sha256]');
  await page.screenshot({ path: `${shots}/devices-iot.png`, fullPage: true });
  console.log('detail-shown');

  // Live: the gateway reports a forged signature, trust falls to critical, and
  // one more batch of readings arrives.
  await wait(`${row}[data-level="critical"]`);
  await wait('#iot-trust tr[data-cause="security_alert"][data-new="15"]');
  step = 'more telemetry points';
  await page.waitForFunction((n) => Number(document.getElementById('iot-chart-health').dataset.points) > n,
    healthPoints, { timeout: WAIT_MS });
  const trustAfter = await text(`${row} td.trust`);
  const trustPointsAfter = Number(await data('#iot-chart-trust', 'points'));
  await page.screenshot({ path: `${shots}/devices-iot-live.png`, fullPage: true });

  // A trust change links to its audit record: a verified device_trust entry.
  await page.click('#iot-trust tr[data-new="15"] a.hash');
  step = 'the audit page URL';
  await page.waitForURL(/\/audit\?hash=[0-9a-f]{64}$/, { timeout: WAIT_MS });
  await wait('#audit-entry [data-verified="true"]');
  const auditText = await text('#audit-entry');

  const result = { listOrder, trustBefore, trustAfter, healthPoints, sensorSeries, trustPoints, causes };
  if (listOrder.join(',') !== 'esp32-1,esp32-2') fail(`device list order ${listOrder}`);
  else if (!/35 alert/.test(trustBefore)) fail(`trust shown as ${trustBefore}`);
  else if (!/1 dangerous/.test(findingsCell)) fail(`findings cell ${findingsCell}`);
  else if (!/gateway-1: 20 of 24 telemetry messages accepted, 4 refused/.test(gatewaysLine)) fail(`gateway line ${gatewaysLine}`);
  else if (unenrolled !== 1) fail('the unenrolled device\'s refusal is not listed');
  else if (healthPoints !== 6) fail(`health chart has ${healthPoints} points`);
  else if (sensorSeries !== 'temperature') fail(`sensor series ${sensorSeries}`);
  else if (trustPoints !== 3) fail(`trust chart has ${trustPoints} points`);
  else if (!causes.some((c) => /vulnerability scan: score 40: 23\/telnet/.test(c))
    || !causes.some((c) => /security alert: replay/.test(c))) fail(`causes ${JSON.stringify(causes)}`);
  else if (telnet !== 1 || !/open ports 23, 80; vulnerability score 40/.test(scanLine)) fail(`findings: ${telnet}, ${scanLine}`);
  else if (replay !== 1) fail('the replayed message is not listed');
  else if (!/low trust/.test(refusedCmd) || allowedCmd !== 1) fail(`commands: ${refusedCmd}, allowed ${allowedCmd}`);
  else if (batches !== 2) fail(`${batches} batches listed`);
  else if (!/15 critical/.test(trustAfter)) fail(`trust after the change shown as ${trustAfter}`);
  else if (trustPointsAfter !== 4) fail(`trust chart has ${trustPointsAfter} points after the change`);
  else if (!/verified \(\d+ records\)/.test(auditText) || !/device_trust/.test(auditText) || !/bad_signature/.test(auditText)) fail(`audit page shows ${auditText}`);
  else if (errors.length) fail(`page errors: ${errors.join(' | ')}`);
  else console.log(`ok ${JSON.stringify(result)}`);
} catch (e) {
  if (page) await page.screenshot({ path: `${shots}/devices-failure.png`, fullPage: true }).catch(() => {});
  fail(`at ${step}: ${String(e).split('\n')[0]}`);
} finally {
  await browser.close();
}
