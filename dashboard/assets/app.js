// TAD dashboard pages: one script for every page (chosen by location.pathname).
// Reads the JSON API under /api/v1, stays live through the SSE stream at
// /api/v1/events, draws charts with uPlot (vendored, MIT).
'use strict';

const API = '/api/v1';
const WINDOW_MS = 5 * 60 * 1000; // overview charts: last 5 minutes

// ------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJson(path) {
  const res = await fetch(API + path, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function token() { return sessionStorage.getItem('tad-token') || ''; }

async function mutate(method, path, body) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function showResult(el, ok, text) {
  el.textContent = text;
  el.className = 'result ' + (ok ? 'ok' : 'err');
}

const fmtTime = (ms) => ms ? new Date(ms).toLocaleString() : '–';
const fmtNum = (v) => v === null || v === undefined ? '–' :
  Math.abs(v) >= 100 ? Math.round(v).toLocaleString() : (Math.round(v * 10) / 10).toString();

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function duration(s) {
  if (s === null || s === undefined) return 'permanent';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const shortHash = (hash) => h('span', { class: 'hash', title: hash }, hash.slice(0, 16) + '…');
// A hash linking to its audit record (GET /api/v1/audit/{hash} on the Audit page).
const auditLink = (hash) => h('a', {
  class: 'hash', title: hash, href: `/audit?hash=${encodeURIComponent(hash)}`,
}, hash.slice(0, 16) + '…');

// A token form (sessionStorage, this tab only): `formId`, its result `resultId`.
function tokenForm(formId, resultId) {
  document.getElementById(formId).addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem('tad-token', new FormData(e.target).get('token'));
    showResult(document.getElementById(resultId), true, 'Token set for this tab.');
  });
}

function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

// ------------------------------------------------------------ live events

const handlers = {};
function on(name, fn) { (handlers[name] = handlers[name] || []).push(fn); }

function connectEvents() {
  const live = document.getElementById('live');
  const es = new EventSource(API + '/events');
  es.onopen = () => { live.textContent = 'live'; live.className = 'live on'; };
  es.onerror = () => { live.textContent = 'reconnecting'; live.className = 'live off'; };
  for (const name of ['sample', 'alert', 'trust', 'status', 'blocks', 'devices']) {
    es.addEventListener(name, (e) => {
      const ev = JSON.parse(e.data);
      for (const fn of handlers[name] || []) fn(ev.data);
    });
  }
}

// ------------------------------------------------------------ charts

const SERIES_PACKETS = [
  { label: 'passed', key: 'pass_pps', stroke: '#15803d' },
  { label: 'drop: blocklist', key: 'drop_blocklist_pps', stroke: '#b91c1c' },
  { label: 'drop: SYN rate', key: 'drop_syn_rate_pps', stroke: '#c2410c' },
  { label: 'drop: packet rate', key: 'drop_pkt_rate_pps', stroke: '#7c3aed' },
  { label: 'would drop (observe)', key: 'would_drop_pps', stroke: '#64748b', dash: [4, 4] },
];

function makeChart(el, series, height) {
  const opts = {
    width: Math.max(300, el.clientWidth || 400),
    height: height || 220,
    series: [{}, ...series.map((s) => ({
      label: s.label, stroke: s.stroke, width: 2, dash: s.dash, points: { show: false },
    }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  const data = [[], ...series.map(() => [])];
  const chart = new uPlot(opts, data, el);
  new ResizeObserver(() => chart.setSize({ width: Math.max(300, el.clientWidth), height: opts.height }))
    .observe(el);
  return chart;
}

// Points keyed by second, summed over gateways (each gateway sends one a second).
class LiveSeries {
  constructor(el, series) {
    this.el = el;
    this.series = series;
    this.chart = makeChart(el, series);
    this.buckets = new Map(); // second -> Map(gateway -> point)
  }
  add(p) {
    const sec = Math.floor(p.at_ms / 1000);
    if (!this.buckets.has(sec)) this.buckets.set(sec, new Map());
    const bucket = this.buckets.get(sec);
    // A live point replaces the stored sum ('*') its second was loaded with.
    if (p.gateway_id !== '*') bucket.delete('*');
    bucket.set(p.gateway_id, p);
  }
  redraw() {
    const cutoff = Math.floor((Date.now() - WINDOW_MS) / 1000);
    for (const k of this.buckets.keys()) if (k < cutoff) this.buckets.delete(k);
    const secs = [...this.buckets.keys()].sort((a, b) => a - b);
    const cols = this.series.map((s) => secs.map((sec) => {
      let sum = 0;
      for (const p of this.buckets.get(sec).values()) sum += p[s.key] || 0;
      return sum;
    }));
    this.chart.setData([secs, ...cols]);
    // For people: the latest values; for the browser test: that the chart moved.
    this.el.dataset.points = String(secs.length);
    this.el.dataset.last = cols.map((c) => c.length ? c[c.length - 1] : 0).join(',');
    return cols.map((c) => c.length ? c[c.length - 1] : 0);
  }
}

// ------------------------------------------------------------ rows

// When an alert was seen: its last time, and for a merged alert (one attack,
// published again under its id while it goes on) since when and how many times.
function seenCell(a) {
  const first = a.first_seen_ms ?? a.at_ms;
  const count = a.count ?? 1;
  if (count <= 1 && first === a.at_ms) return h('td', {}, fmtTime(a.at_ms));
  return h('td', { class: 'alert-seen', title: `first seen ${fmtTime(first)}, last seen ${fmtTime(a.at_ms)}` },
    fmtTime(a.at_ms),
    h('div', { class: 'hint' }, `×${count}, since ${fmtTime(first)}`));
}

function alertRow(a, withGateway, fresh) {
  return h('tr', { class: fresh ? 'new alert-row' : 'alert-row', 'data-alert-id': a.id,
    'data-count': String(a.count ?? 1) },
    seenCell(a),
    h('td', {}, h('span', { class: `badge sev-${a.severity}` }, a.severity)),
    h('td', {}, a.kind.replace(/_/g, ' ')),
    withGateway ? h('td', {}, a.gateway_id) : null,
    h('td', {}, `${a.source || '?'} → ${a.target
      || (a.explanation.observed.targets ? `${a.explanation.observed.targets} hosts` : '?')}`),
    h('td', {}, a.explanation.text,
      h('div', { class: 'hint' }, `${a.explanation.rule}, window ${a.explanation.window_s} s: ` +
        Object.entries(a.explanation.observed).map(([k, v]) =>
          `${k} ${v} (threshold ${a.explanation.thresholds[k] ?? '–'})`).join('; '))),
    h('td', {}, auditLink(a.audit_hash)));
}

// ------------------------------------------------------------ pages

async function overview() {
  const packets = new LiveSeries(document.getElementById('chart-packets'), SERIES_PACKETS);
  const flows = new LiveSeries(document.getElementById('chart-flows'),
    [{ label: 'flows/s', key: 'flows_per_s', stroke: '#2563eb' }]);
  const alerts = new LiveSeries(document.getElementById('chart-alerts'),
    [{ label: 'alerts/min', key: 'alerts_per_min', stroke: '#b91c1c' }]);
  const charts = [packets, flows, alerts];
  const cards = () => {
    const last = packets.redraw();
    flows.redraw();
    alerts.redraw();
    document.getElementById('card-pass').textContent = fmtNum(last[0]);
    document.getElementById('card-drop').textContent =
      fmtNum(last[1] + last[2] + last[3]);
  };
  const now = Date.now();
  const hist = await getJson(`/overview?from_ms=${now - WINDOW_MS}&to_ms=${now + 1000}&step_s=1`);
  for (const p of hist.points) for (const c of charts) c.add({ ...p, gateway_id: '*' });
  cards();
  on('sample', (p) => { for (const c of charts) c.add(p); cards(); });

  const tbody = document.getElementById('overview-alerts');
  const drawAlerts = (list) => {
    tbody.replaceChildren(...(list.length ? list.map((a) => alertRow(a, false, false))
      : [h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No alerts yet.'))]));
  };
  drawAlerts(await getJson('/alerts?limit=8'));
  const lastHour = await getJson(`/alerts?limit=1000&since_ms=${now - 3600000}`);
  const seenAlerts = new Set(lastHour.map((a) => a.id));
  let alertCount = lastHour.length;
  document.getElementById('card-alerts').textContent = alertCount;
  on('alert', (a) => {
    tbody.querySelector('.empty')?.parentElement.remove();
    // An update of a merged alert replaces its row and is not a new alert.
    const known = dropAlertRow(tbody, a.id);
    tbody.prepend(alertRow(a, false, true));
    while (tbody.children.length > 8) tbody.lastChild.remove();
    if (!known && !seenAlerts.has(a.id)) {
      document.getElementById('card-alerts').textContent = ++alertCount;
    }
    seenAlerts.add(a.id);
  });

  const refreshNodes = async () => {
    const nodes = await getJson('/gateways');
    const gws = nodes.filter((n) => n.role === 'gateway');
    document.getElementById('card-gateways').textContent =
      `${gws.filter((n) => n.online).length} / ${gws.length}`;
  };
  const refreshBlocks = async () => {
    const b = await getJson('/blocks');
    const now = Date.now();
    document.getElementById('card-blocks').textContent =
      b.blocks.filter((x) => x.expires_at_ms === null || x.expires_at_ms > now).length;
  };
  await Promise.all([refreshNodes(), refreshBlocks()]);
  on('status', throttle(refreshNodes, 500));
  on('blocks', throttle(refreshBlocks, 500));
}

async function devices() {
  await iotDevices();
  const tbody = document.getElementById('devices');
  const draw = async () => {
    const list = await getJson('/devices');
    tbody.replaceChildren(...(list.length ? list.map((d) => h('tr', { 'data-address': d.address },
      h('td', {}, d.address),
      h('td', {}, d.name || '–'),
      h('td', {}, d.score === null ? h('span', { class: 'badge unknown' }, 'not scored')
        : h('span', { class: `badge lvl-${d.level}`, title: d.level }, `${fmtNum(d.score)} ${d.level}`)),
      h('td', {}, d.score === null ? '–'
        : `${fmtNum(d.behavioural)} / ${fmtNum(d.vulnerability)} / ${fmtNum(d.reputation)}`),
      h('td', {}, d.reason || '–'),
      h('td', { title: fmtTime(d.last_seen_ms) }, ago(d.last_seen_ms)),
      h('td', {}, d.blocked ? h('span', { class: 'badge offline' }, 'blocked') : 'no')))
      : [h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No devices yet.'))]));
  };
  await draw();
  const later = throttle(draw, 500);
  on('trust', later);
  on('blocks', later);
}

// ------------------------------------------------------------ IoT devices
// Everything here is what the gateways published (GET /api/v1/iot/...): the
// device list is each gateway's retained device state, the charts and tables
// the reports it sent; nothing is recomputed in the page.

const SENSOR_COLOURS = ['#2563eb', '#c2410c', '#15803d', '#7c3aed', '#0e7490', '#b45309'];

// A chart in `el` replacing the one drawn there before (the old one and its
// resize observer are released).
function redrawChart(el, series, data) {
  if (el._chart) { el._observer.disconnect(); el._chart.destroy(); }
  el.replaceChildren();
  const opts = {
    width: Math.max(300, el.clientWidth || 400),
    height: 220,
    series: [{}, ...series.map((x) => ({ label: x.label, stroke: x.stroke, width: 2, points: { show: data[0].length < 60 } }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  const chart = new uPlot(opts, data, el);
  const observer = new ResizeObserver(() => chart.setSize({ width: Math.max(300, el.clientWidth), height: opts.height }));
  observer.observe(el);
  el._chart = chart;
  el._observer = observer;
  el.dataset.points = String(data[0].length);
  el.dataset.series = series.map((x) => x.label).join(',');
}

function causeText(c) {
  switch (c.kind) {
    case 'security_alert': return `security alert: ${c.reason} (${c.detail})`;
    case 'weak_alert': return `weak alert: ${c.reason} (${c.detail})`;
    case 'anomaly': return `anomalous reading: score ${fmtNum(c.score)} ≥ ${fmtNum(c.threshold)}`;
    case 'heartbeat': return `valid heartbeat (sequence ${c.sequence_no})`;
    case 'vulnerability': return `vulnerability scan: score ${fmtNum(c.score)}${c.findings.length ? ': ' + c.findings.join('; ') : ''}`;
    case 'command_refused': return `command refused: ${c.reason}`;
    default: return JSON.stringify(c);
  }
}

const emptyRow = (cols, text) => h('tr', {}, h('td', { colspan: cols, class: 'empty' }, text));
const trustBadge = (t, level) => h('span', { class: `badge lvl-${level}`, title: level }, `${fmtNum(t)} ${level}`);

async function iotDevices() {
  const tbody = document.getElementById('iot-devices');
  const detail = document.getElementById('iot-detail');
  const params = new URLSearchParams(location.search);
  let selected = params.get('device') ? { device: params.get('device'), gateway: params.get('gateway') || '' } : null;

  const drawList = async () => {
    const data = await getJson('/iot/devices');
    document.getElementById('iot-gateways').textContent = data.gateways.map((g) =>
      `${g.gateway_id}: ${g.accepted.toLocaleString()} of ${g.received.toLocaleString()} telemetry messages accepted, ` +
      `${Object.values(g.refused).reduce((a, b) => a + b, 0).toLocaleString()} refused; state ${ago(g.at_ms)}` +
      (g.outbox_queued ? `; ${g.outbox_queued} batches waiting for the broker` : '') +
      (g.outbox_dropped_batches ? `; ${g.outbox_dropped_batches} batches dropped` : '')).join(' · ');
    tbody.replaceChildren(...(data.devices.length ? data.devices.map((d) => h('tr', {
      'data-device': d.device_id, 'data-gateway': d.gateway_id, 'data-level': d.level,
      class: selected && selected.device === d.device_id && (!selected.gateway || selected.gateway === d.gateway_id) ? 'selected' : '',
      onclick: () => select({ device: d.device_id, gateway: d.gateway_id }),
    },
      h('td', {}, h('a', { href: `/devices?device=${encodeURIComponent(d.device_id)}&gateway=${encodeURIComponent(d.gateway_id)}`,
        onclick: (e) => e.preventDefault() }, d.device_id)),
      h('td', {}, d.gateway_id),
      h('td', { class: 'trust' }, trustBadge(d.trust, d.level)),
      h('td', {}, `${fmtNum(d.components.behaviour)} / ${fmtNum(d.components.vulnerability)} / ${fmtNum(d.components.reputation)}`),
      h('td', {}, `${d.accepted.toLocaleString()} / ${d.refused.toLocaleString()}`),
      h('td', { class: 'findings' }, d.findings === null ? 'not scanned'
        : d.findings ? h('span', { class: 'badge sev-critical' }, `${d.findings} dangerous`) : 'none'),
      h('td', { title: fmtTime(d.last_seen_ms) }, ago(d.last_seen_ms))))
      : [emptyRow(7, 'No gateway has published its device state yet.')]));
  };

  const drawAllRefusals = async () => {
    const list = await getJson('/iot/refusals?limit=50');
    document.getElementById('iot-all-refusals').replaceChildren(...(list.length ? list.map((r) => h('tr', {
      'data-device': r.device_id, 'data-reason': r.reason,
    },
      h('td', {}, fmtTime(r.at_ms)),
      h('td', {}, r.gateway_id),
      h('td', {}, r.device_id),
      h('td', {}, r.enrolled ? 'yes' : h('span', { class: 'badge offline' }, 'no')),
      h('td', {}, r.reason.replace(/_/g, ' ')),
      h('td', {}, r.detail),
      h('td', {}, r.audit_hash ? auditLink(r.audit_hash) : '–')))
      : [emptyRow(7, 'No telemetry refused.')]));
  };

  const drawDetail = async () => {
    if (!selected) { detail.hidden = true; return; }
    const gw = selected.gateway ? `?gateway_id=${encodeURIComponent(selected.gateway)}` : '';
    let d;
    try {
      d = await getJson(`/iot/devices/${encodeURIComponent(selected.device)}${gw}`);
    } catch (err) {
      detail.hidden = false;
      document.getElementById('iot-title').textContent = `${selected.device}: ${err.message}`;
      return;
    }
    detail.hidden = false;
    detail.dataset.device = d.device_id;
    const st = d.state[0];
    document.getElementById('iot-title').replaceChildren(`Device ${d.device_id} `,
      st ? trustBadge(st.trust, st.level) : h('span', { class: 'badge unknown' }, 'not in any gateway\u2019s state'));

    const xs = d.telemetry.map((p) => p.arrival_ms / 1000);
    redrawChart(document.getElementById('iot-chart-health'), [
      { label: 'CPU %', stroke: '#c2410c' }, { label: 'battery %', stroke: '#15803d' },
    ], [xs, d.telemetry.map((p) => p.cpu_usage), d.telemetry.map((p) => p.battery_level)]);
    const names = [...new Set(d.telemetry.flatMap((p) => Object.keys(p.sensors)))].sort();
    redrawChart(document.getElementById('iot-chart-sensors'),
      names.map((n, i) => ({ label: n, stroke: SENSOR_COLOURS[i % SENSOR_COLOURS.length] })),
      [xs, ...names.map((n) => d.telemetry.map((p) => (n in p.sensors ? p.sensors[n] : null)))]);
    // Trust: the value before the first change, then each change's new value.
    const tx = d.trust.length ? [d.trust[0].at_ms / 1000, ...d.trust.map((t) => t.at_ms / 1000)] : [];
    const ty = d.trust.length ? [d.trust[0].old, ...d.trust.map((t) => t.new)] : [];
    redrawChart(document.getElementById('iot-chart-trust'), [{ label: 'trust', stroke: '#2563eb' }], [tx, ty]);

    document.getElementById('iot-trust').replaceChildren(...(d.trust.length ? [...d.trust].reverse().map((t) => h('tr', {
      'data-cause': t.cause.kind, 'data-new': t.new,
    },
      h('td', {}, fmtTime(t.at_ms)),
      h('td', {}, `${fmtNum(t.old)} → ${fmtNum(t.new)}`),
      h('td', {}, t.old_level === t.new_level ? t.new_level : `${t.old_level} → ${t.new_level}`),
      h('td', { class: 'cause' }, causeText(t.cause)),
      h('td', {}, auditLink(t.audit_hash))))
      : [emptyRow(5, 'No trust change reported.')]));

    const scan = d.vulns[0];
    document.getElementById('iot-scan').replaceChildren(scan
      ? h('span', {}, `Scanned ${scan.addr} ${ago(scan.at_ms)} (${scan.scanner}): open ports ${scan.open_ports.join(', ') || 'none'}; vulnerability score ${fmtNum(scan.score)} `, auditLink(scan.audit_hash))
      : 'Not scanned yet.');
    document.getElementById('iot-findings').replaceChildren(...(scan && scan.findings.length ? scan.findings.map((v) => h('tr', {
      'data-port': v.port, 'data-service': v.service,
    },
      h('td', {}, `${v.port}/${v.proto}`),
      h('td', {}, v.service),
      h('td', {}, h('span', { class: `badge sev-${v.severity}` }, v.severity)),
      h('td', {}, v.why)))
      : [emptyRow(4, scan ? 'Nothing dangerous open.' : 'No scan yet.')]));

    document.getElementById('iot-refusals').replaceChildren(...(d.refusals.length ? d.refusals.map((r) => h('tr', {
      'data-reason': r.reason,
    },
      h('td', {}, fmtTime(r.at_ms)),
      h('td', {}, r.reason.replace(/_/g, ' ')),
      h('td', {}, r.sequence_no ?? '–'),
      h('td', {}, r.detail),
      h('td', { class: 'num' }, r.count),
      h('td', {}, r.audit_hash ? auditLink(r.audit_hash) : '–')))
      : [emptyRow(6, 'No message refused.')]));

    document.getElementById('iot-commands').replaceChildren(...(d.commands.length ? d.commands.map((c) => h('tr', {
      'data-decision': c.decision, 'data-request': c.request_id,
    },
      h('td', {}, fmtTime(c.at_ms)),
      h('td', {}, c.command, c.spec.kind === 'set' ? ` ${c.spec.key} = ${c.spec.value}` : ''),
      h('td', {}, h('span', { class: `badge dec-${c.decision}` }, c.decision), c.reason ? ` ${c.reason.replace(/_/g, ' ')}` : ''),
      h('td', {}, c.detail || '–'),
      h('td', { class: 'num' }, fmtNum(c.trust)),
      h('td', {}, c.requested_by),
      h('td', {}, auditLink(c.audit_hash))))
      : [emptyRow(7, 'No command sent to this device.')]));

    document.getElementById('iot-batches').replaceChildren(...(d.batches.length ? d.batches.slice(0, 20).map((b) => h('tr', {
      'data-sha256': b.sha256,
    },
      h('td', {}, fmtTime(b.closed_ms)),
      h('td', {}, `${b.gateway_id} #${b.batch_no}`),
      h('td', { class: 'num' }, b.records),
      h('td', {}, shortHash(b.sha256)),
      h('td', {}, auditLink(b.audit_hash))))
      : [emptyRow(5, 'No telemetry forwarded.')]));
  };

  const select = async (sel) => {
    selected = sel;
    history.replaceState(null, '', `/devices?device=${encodeURIComponent(sel.device)}&gateway=${encodeURIComponent(sel.gateway)}`);
    for (const tr of tbody.querySelectorAll('tr[data-device]')) {
      tr.classList.toggle('selected', tr.dataset.device === sel.device && tr.dataset.gateway === sel.gateway);
    }
    await drawDetail();
  };

  await Promise.all([drawList(), drawAllRefusals(), drawDetail()]);
  on('devices', throttle(() => {
    drawList().catch(() => {});
    drawAllRefusals().catch(() => {});
    drawDetail().catch(() => {});
  }, 500));
}

async function alertsPage() {
  const tbody = document.getElementById('alerts');
  const list = await getJson('/alerts?limit=200');
  tbody.replaceChildren(...(list.length ? list.map((a) => alertRow(a, true, false))
    : [h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No alerts yet.'))]));
  on('alert', (a) => {
    tbody.querySelector('.empty')?.parentElement.remove();
    dropAlertRow(tbody, a.id);
    tbody.prepend(alertRow(a, true, true));
  });
}

// Removes the row of alert `id` from `tbody`; whether there was one.
function dropAlertRow(tbody, id) {
  const old = [...tbody.querySelectorAll('tr[data-alert-id]')].find((r) => r.dataset.alertId === id);
  old?.remove();
  return Boolean(old);
}

async function fillGatewaySelect(select, keepFirst) {
  const nodes = await getJson('/gateways');
  const opts = nodes.filter((n) => n.role === 'gateway').map((n) => h('option', { value: n.node_id }, n.node_id));
  if (keepFirst) select.replaceChildren(select.options[0], ...opts);
  else select.replaceChildren(...opts);
}

async function blocksPage() {
  // Everything here comes from GET /blocks: the entries of each gateway's
  // published state (never a guess from verdicts or commands) and the commands
  // the gateways' state does not show yet.
  const tbody = document.getElementById('blocks');
  const pending = document.getElementById('pending');
  const protectedBody = document.getElementById('protected');
  const stateLine = document.getElementById('blocks-state');
  let data = { blocks: [], pending: [], protected: [], gateways: [] };
  const fetchedAt = { t: Date.now() };
  const draw = () => {
    const elapsed = Math.floor((Date.now() - fetchedAt.t) / 1000);
    // An entry whose expiry passed is gone, whether or not the delta arrived yet.
    const rows = data.blocks.filter((b) => b.ttl_left_s === null || b.ttl_left_s - elapsed > 0);
    tbody.replaceChildren(...(rows.length ? rows.map((b) => h('tr', {
      'data-prefix': b.prefix, 'data-origin': b.origin, 'data-gateway': b.gateway_id,
    },
      h('td', {}, b.gateway_id),
      h('td', {}, b.prefix),
      h('td', {}, h('span', { class: `badge origin-${b.origin}` }, b.origin)),
      h('td', {}, b.reason.replace(/_/g, ' ')),
      h('td', {}, b.rule || '–'),
      h('td', {}, b.by || '–'),
      h('td', { title: fmtTime(b.created_ms) }, b.created_ms ? ago(b.created_ms) : 'unknown'),
      h('td', {}, b.ttl_left_s === null ? 'permanent' : duration(Math.max(0, b.ttl_left_s - elapsed))),
      h('td', {}, fmtNum(b.hits)),
      h('td', {}, h('button', {
        class: 'small',
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await mutate('DELETE', `/blocks?gateway_id=${encodeURIComponent(b.gateway_id)}&target=${encodeURIComponent(b.prefix)}`);
          } catch (err) {
            alert(`Unblock failed: ${err.message}`);
          }
          e.target.disabled = false;
        },
      }, 'Unblock'))))
      : [h('tr', {}, h('td', { colspan: 10, class: 'empty' },
        data.gateways.length ? 'Nothing blocked.' : 'No gateway has published its state yet.'))]));
    // Protected services: the gateways' own list (never a guess from protect_syn
    // verdicts), with the counters as of the state they come from.
    const prot = (data.protected || []).filter((p) => p.ttl_left_s === null || p.ttl_left_s - elapsed > 0);
    protectedBody.replaceChildren(...(prot.length ? prot.map((p) => h('tr', {
      'data-service': p.service, 'data-origin': p.origin, 'data-gateway': p.gateway_id,
    },
      h('td', {}, p.gateway_id),
      h('td', {}, p.port === null ? `${p.service} (every TCP port)` : p.service),
      h('td', {}, h('span', { class: `badge origin-${p.origin}` }, p.origin)),
      h('td', {}, p.rule || '–'),
      h('td', {}, p.by || '–'),
      h('td', { title: fmtTime(p.created_ms) }, p.created_ms ? ago(p.created_ms) : 'unknown'),
      h('td', {}, p.ttl_left_s === null ? 'until removed' : duration(Math.max(0, p.ttl_left_s - elapsed))),
      h('td', { class: 'num challenged', title: `as of ${fmtTime(p.state_at_ms)}` }, fmtNum(p.challenged)),
      h('td', { class: 'num' }, fmtNum(p.validated)),
      h('td', { class: 'num' }, fmtNum(p.passed)),
      h('td', { class: 'num' }, fmtNum(p.limited)),
      h('td', {}, h('button', {
        class: 'small',
        onclick: async (e) => {
          e.target.disabled = true;
          const port = p.port === null ? '' : `&port=${p.port}`;
          try {
            await mutate('DELETE', `/protected?gateway_id=${encodeURIComponent(p.gateway_id)}&target=${encodeURIComponent(p.addr)}${port}`);
          } catch (err) {
            alert(`Unprotect failed: ${err.message}`);
          }
          e.target.disabled = false;
        },
      }, 'Unprotect'))))
      : [h('tr', {}, h('td', { colspan: 12, class: 'empty' }, 'No service under SYN authentication.'))]));
    pending.replaceChildren(...(data.pending.length ? data.pending.map((p) => h('tr', {
      'data-target': p.target, 'data-status': p.status, 'data-command': p.command_id,
    },
      h('td', {}, p.gateway_id),
      h('td', {}, p.action.replace(/_/g, ' ')),
      h('td', {}, p.port ? `${p.target} port ${p.port}` : p.target),
      h('td', {}, p.operator),
      h('td', { title: fmtTime(p.issued_at_ms) }, ago(p.issued_at_ms)),
      h('td', { title: p.error || '' }, p.status === 'refused'
        ? h('span', { class: 'badge offline' }, `refused: ${p.error || 'no reason given'}`)
        : p.status === 'acked' ? `acked (${(p.outcome || '').replace('_', ' ')}), not in the state yet`
          : 'sent, no answer yet')))
      : [h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'Nothing pending.'))]));
    stateLine.textContent = data.gateways.map((g) =>
      `${g.gateway_id}: state rev ${g.rev}, read ${ago(g.at_ms)}${g.synced ? '' : ' (waiting for the next snapshot)'}`).join(' · ');
  };
  const load = async () => { data = await getJson('/blocks'); fetchedAt.t = Date.now(); draw(); };
  await load();
  setInterval(draw, 1000);
  on('blocks', throttle(load, 300));
  await fillGatewaySelect(document.getElementById('block-gateway'), false);
  await fillGatewaySelect(document.getElementById('protect-gateway'), false);

  document.getElementById('protect-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { gateway_id: f.get('gateway_id'), target: f.get('target').trim(), ttl_s: Number(f.get('ttl_s')) };
    if (f.get('port')) body.port = Number(f.get('port'));
    if (f.get('reason').trim()) body.reason = f.get('reason').trim();
    const out = document.getElementById('protect-result');
    try {
      const r = await mutate('POST', '/protected', body);
      showResult(out, true, `Sent (command ${r.command.id}).`);
      load();
    } catch (err) { showResult(out, false, err.message); }
  });

  document.getElementById('block-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { gateway_id: f.get('gateway_id'), target: f.get('target').trim() };
    if (f.get('ttl_s')) body.ttl_s = Number(f.get('ttl_s'));
    if (f.get('reason').trim()) body.reason = f.get('reason').trim();
    const out = document.getElementById('block-result');
    try {
      const r = await mutate('POST', '/blocks', body);
      showResult(out, true, `Sent (command ${r.command.id}).`);
      load();
    } catch (err) { showResult(out, false, err.message); }
  });

  const tokenForm = document.getElementById('token-form');
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem('tad-token', new FormData(e.target).get('token'));
    showResult(document.getElementById('token-result'), true, 'Token set for this tab.');
  });
}

const STATUS_BADGE = { applied: 'online', refused: 'offline', pending: 'sev-medium', none: 'unknown' };

async function settingsPage() {
  const tbodyDet = document.getElementById('settings-detectors');
  const tbodyKeys = document.getElementById('settings-keys');
  const select = document.getElementById('settings-key');
  const range = document.getElementById('settings-range');
  const out = document.getElementById('settings-result');
  let keys = new Map(); // key -> { kind, min, max, defaults: [], unit, help }
  const describe = (k) => {
    const s = keys.get(k);
    return s ? `${s.kind}, ${s.min} … ${s.max}${s.unit ? ' ' + s.unit : ''}; default ${s.defaults.join(' / ')}` : '';
  };
  const remove = async (k) => {
    try {
      await mutate('DELETE', `/thresholds/${encodeURIComponent(k)}`);
      showResult(out, true, `Removed ${k}: the detectors' default applies again.`);
      load();
    } catch (err) { showResult(out, false, err.message); }
  };
  const load = async () => {
    const v = await getJson('/thresholds');
    document.getElementById('settings-current').textContent = v.id
      ? `Settings ${v.id} by ${v.operator}, ${fmtTime(v.issued_at_ms)}: ${Object.keys(v.values).length} override(s).`
      : 'No overrides set: every detector runs its defaults.';
    tbodyDet.replaceChildren(...(v.detectors.length ? v.detectors.map((d) => h('tr', { 'data-detector': d.detector_id, 'data-status': d.status },
      h('td', {}, d.detector_id, d.has_schema ? null : h('div', { class: 'hint' }, 'no schema')),
      h('td', {}, h('span', { class: `badge ${STATUS_BADGE[d.status] || 'unknown'}` }, d.status)),
      h('td', {}, d.ack && d.ack.error ? d.ack.error : '–'),
      h('td', {}, d.ack ? fmtTime(d.ack.at_ms) : '–'),
      h('td', {}, d.ack ? auditLink(d.ack.audit_hash) : '–')))
      : [h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No detector has published its settings schema yet.'))]));
    // Union of the schemas' keys; the range every detector accepts.
    keys = new Map();
    for (const sc of v.schemas) {
      for (const k of sc.keys) {
        const cur = keys.get(k.key);
        if (!cur) keys.set(k.key, { ...k, defaults: [k.default], count: 1 });
        else {
          cur.min = Math.max(cur.min, k.min);
          cur.max = Math.min(cur.max, k.max);
          if (!cur.defaults.includes(k.default)) cur.defaults.push(k.default);
          cur.count += 1;
        }
      }
    }
    const inForce = (k) => {
      const vals = [...new Set(v.detectors.filter((d) => d.ack && d.ack.effective && k in d.ack.effective)
        .map((d) => d.ack.effective[k]))];
      return vals.length ? vals.join(' / ') : '–';
    };
    const rows = [...keys.entries()].sort(([a], [b]) => a.localeCompare(b));
    tbodyKeys.replaceChildren(...(rows.length ? rows.map(([k, s]) => h('tr', { 'data-key': k, class: k in v.values ? 'set' : '' },
      h('td', {}, k, s.count < v.schemas.length ? h('div', { class: 'hint' }, 'not every detector has it') : null),
      h('td', {}, s.kind),
      h('td', {}, `${s.min} … ${s.max}${s.unit ? ' ' + s.unit : ''}`),
      h('td', {}, s.defaults.join(' / ')),
      h('td', { class: 'value-set' }, k in v.values ? String(v.values[k]) : '–'),
      h('td', { class: 'value-in-force' }, inForce(k)),
      h('td', { class: 'hint' }, s.help),
      h('td', {}, k in v.values ? h('button', { type: 'button', class: 'small', onclick: () => remove(k) }, 'remove') : null)))
      : [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No keys known yet.'))]));
    const chosen = select.value;
    select.replaceChildren(...rows.map(([k]) => h('option', { value: k }, k)));
    if (keys.has(chosen)) select.value = chosen;
    range.textContent = describe(select.value);
  };
  await load();
  select.addEventListener('change', () => { range.textContent = describe(select.value); });
  // Acks arrive on the bus: refresh while the page is open.
  setInterval(() => { load().catch(() => {}); }, 2000);
  document.getElementById('settings-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      const r = await mutate('POST', '/thresholds', { values: { [f.get('key')]: Number(f.get('value')) } });
      showResult(out, true, `Sent (settings ${r.settings.id}); awaiting ${r.awaiting.join(', ') || 'no detector'}.`);
      load();
    } catch (err) { showResult(out, false, err.message); }
  });
  tokenForm('settings-token-form', 'settings-token-result');
}

async function auditPage() {
  const form = document.getElementById('audit-form');
  const box = document.getElementById('audit-entry');
  const show = async (hash) => {
    const res = await fetch(`${API}/audit/${encodeURIComponent(hash)}`, { headers: { accept: 'application/json' } });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      box.replaceChildren(h('p', { class: 'result err' }, data.error || `HTTP ${res.status}`));
      return;
    }
    const ver = data.verification;
    box.replaceChildren(h('div', { class: 'panel', 'data-index': data.index, 'data-verified': String(ver.ok) },
      h('dl', {},
        h('dt', {}, 'Position'), h('dd', {}, `record ${data.index} (seq ${data.entry.seq})`),
        h('dt', {}, 'Kind'), h('dd', {}, data.entry.kind),
        h('dt', {}, 'Written'), h('dd', {}, fmtTime(data.entry.at_ms)),
        h('dt', {}, 'Hash'), h('dd', { class: 'hash' }, data.entry.hash),
        h('dt', {}, 'Previous'), h('dd', {}, /^0+$/.test(data.entry.prev) ? 'none (first record)' : auditLink(data.entry.prev)),
        h('dt', {}, 'Chain up to it'), h('dd', {}, ver.ok
          ? h('span', { class: 'badge online' }, `verified (${ver.checked} records)`)
          : h('span', { class: 'badge offline', title: ver.error }, `broken at record ${ver.first_broken}: ${ver.error}`))),
      h('pre', { class: 'audit-data' }, JSON.stringify(data.entry.data, null, 2))));
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const hash = new FormData(form).get('hash').trim();
    history.replaceState(null, '', `/audit?hash=${encodeURIComponent(hash)}`);
    show(hash);
  });
  const hash = new URLSearchParams(location.search).get('hash');
  if (hash) {
    form.hash.value = hash;
    await show(hash);
  }
}

function toLocalInput(ms) {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

async function historyPage() {
  const form = document.getElementById('history-form');
  form.from.value = toLocalInput(Date.now() - 3600000);
  form.to.value = toLocalInput(Date.now() + 60000);
  await fillGatewaySelect(document.getElementById('history-gateway'), true);
  const rates = [
    { label: 'flows/s', key: 'flows_per_s', stroke: '#2563eb' },
    { label: 'alerts/min', key: 'alerts_per_min', stroke: '#b91c1c' },
  ];
  const elP = document.getElementById('history-packets');
  const elR = document.getElementById('history-rates');
  const cp = makeChart(elP, SERIES_PACKETS, 260);
  const cr = makeChart(elR, rates, 260);
  const load = async () => {
    const from = new Date(form.from.value).getTime();
    const to = new Date(form.to.value).getTime();
    const info = document.getElementById('history-info');
    const gw = form.gateway_id.value;
    try {
      const r = await getJson(`/history?from_ms=${from}&to_ms=${to}` + (gw ? `&gateway_id=${encodeURIComponent(gw)}` : ''));
      const xs = r.points.map((p) => p.at_ms / 1000);
      cp.setData([xs, ...SERIES_PACKETS.map((s) => r.points.map((p) => p[s.key]))]);
      cr.setData([xs, ...rates.map((s) => r.points.map((p) => p[s.key]))]);
      elP.dataset.points = String(xs.length);
      info.textContent = `${r.points.length} points, ${r.step_ms / 1000} s each`;
      info.className = 'hint';
    } catch (err) {
      info.textContent = err.message;
      info.className = 'result err';
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  await load();
}

async function gatewaysPage() {
  const box = document.getElementById('gateways');
  const draw = async () => {
    const nodes = await getJson('/gateways');
    box.replaceChildren(...(nodes.length ? nodes.map((n) => {
      const state = n.online === null ? ['unknown', 'no status'] : n.online ? ['online', 'online'] : ['offline', 'offline'];
      return h('div', { class: 'node', 'data-node': n.node_id },
        h('h3', {}, h('span', {}, n.node_id), h('span', { class: `badge ${state[0]}` }, state[1])),
        h('dl', {},
          h('dt', {}, 'Role'), h('dd', {}, n.role),
          h('dt', {}, 'Mode'), h('dd', {}, n.mode ? (n.mode === 'enforce' ? 'enforce (IPS)' : 'observe (IDS)') : '–'),
          h('dt', {}, 'Version'), h('dd', {}, n.version || '–'),
          h('dt', {}, 'Status since'), h('dd', {}, fmtTime(n.status_at_ms)),
          h('dt', {}, 'Last counters'), h('dd', {}, n.last_counters_ms ? ago(n.last_counters_ms) : '–'),
          h('dt', {}, 'Interfaces'), h('dd', {}, n.interfaces.map((i) => `${i.name} (${i.xdp_mode})`).join(', ') || '–')),
        ...n.maps.map((m) => {
          const pct = m.max_entries ? (100 * m.entries) / m.max_entries : 0;
          const fill = h('div', { class: pct > 80 ? 'high' : '' });
          fill.style.width = `${Math.min(100, pct)}%`;
          return h('div', { class: 'fill' },
            `${m.name}: ${m.entries.toLocaleString()} / ${m.max_entries.toLocaleString()} (${pct.toFixed(1)}%)`,
            h('div', { class: 'bar' }, fill));
        }));
    }) : [h('p', { class: 'empty' }, 'No node heard from yet.')]));
  };
  await draw();
  const later = throttle(draw, 1000);
  on('status', later);
  on('sample', later);
}

const PAGES = {
  overview, devices, alerts: alertsPage, blocks: blocksPage, history: historyPage, gateways: gatewaysPage,
  settings: settingsPage, audit: auditPage,
};

async function main() {
  const name = location.pathname.replace(/^\/+|\/+$/g, '') || 'overview';
  const page = PAGES[name] ? name : 'overview';
  document.getElementById(`page-${page}`).hidden = false;
  document.querySelector(`nav a[data-page="${page}"]`).classList.add('active');
  connectEvents();
  try {
    await PAGES[page]();
    document.body.dataset.ready = 'true';
  } catch (err) {
    document.querySelector('main').prepend(h('p', { class: 'result err' }, `Could not load: ${err.message}`));
    document.body.dataset.ready = 'error';
  }
}

main();
