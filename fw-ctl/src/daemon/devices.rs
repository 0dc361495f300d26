//! The device guard in the gateway daemon (issue 17): with a `[devices]` table
//! ([`tad_devices::DevicesConfig`]) the daemon subscribes to every device's
//! telemetry and to signed device command requests, and runs the
//! `tad_devices::Station` on its own task:
//!
//! ```text
//! tad/v1/dev/+/telemetry ──► Station (guard: identity = topic level, which the broker
//!                            ACL ties to the device certificate's CN, checked against
//!                            the enrolled Ed25519 key; never a payload field)
//!     accepted ──► batches (SHA-256) ──► outbox ──► tad/v1/gw/<gw>/devices/telemetry
//!     refused  ──► counted by device and reason ──► .../devices/refusals
//!     trust    ──► .../devices/trust (audit entries, with batch hashes)
//! tad/v1/gw/<gw>/devices/requests/<dash> (JWS) ──► signer = topic level, in
//!     [trust] dashboards, device enrolled ──► tad_devices::vet ──► .../devices/decisions
//!     allowed ──► tad/v1/dev/<device>/commands
//! scan schedule (new device at once, then every scan.interval_ms) ──► connect scan
//!     ──► vulnerability score into the trust ledger ──► .../devices/vulns
//! every publish_interval_ms ──► retained .../devices/state
//! ```
//!
//! Batches leave the outbox only when the bus client accepts them (QoS 1, waiting
//! messages): while the broker is down they wait in the bounded outbox, which drops
//! its oldest batch when full (counted in the next batch and in the state). The
//! replay windows and the trust ledger are files ([`tad_devices::GuardConfig`],
//! [`tad_devices::TrustConfig`]), so a restarted gateway still refuses replays of
//! messages it accepted before.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tad_bus::{
    BusBuilder, BusClient, ConnectionState, PublishOptions, QoS, RawPayload, Subscription, Verifier,
};
use tad_devices::{
    Arrival, CommandHistory, DeviceCommand, DeviceId, DevicesConfig, Registry, Station,
    StationOutput, TrustEntry, TrustLevel,
    trust::{Components, TrustCause},
    vulnscan::{self, ScanReport, Schedule},
};
use tad_wire::{
    NodeId, SCHEMA_VERSION,
    devices::{
        CommandDecision, DeviceCommandDecision, DeviceCommandMessage, DeviceCommandRequest,
        DeviceCommandSpec, DeviceRecord, DeviceRefusal, DeviceRefusalReason, DeviceRefusals,
        DeviceStates, DeviceTelemetryBatch, DeviceTopicKind, DeviceTrustCause, DeviceTrustChange,
        DeviceTrustChanges, DeviceTrustComponents, DeviceTrustLevel, DeviceView, DeviceVulnReport,
        Severity, VulnFinding,
    },
    topic,
};
use tokio::sync::mpsc;

/// The device subscriptions, made on the bus builder before it starts.
pub struct DeviceSubscriptions {
    pub telemetry: Subscription<RawPayload>,
    pub requests: Subscription<RawPayload>,
}

/// Subscribes `b` to device telemetry and to the device command requests for `gw`.
pub fn subscribe(b: &mut BusBuilder, gw: &NodeId) -> DeviceSubscriptions {
    DeviceSubscriptions {
        telemetry: b.subscribe::<RawPayload>(topic::DEVICE_TELEMETRY_FILTER, QoS::AtLeastOnce),
        requests: b.subscribe::<RawPayload>(&topic::device_requests_filter(gw), QoS::AtLeastOnce),
    }
}

/// Counters of the device task (status file, `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStats {
    /// Telemetry messages received (= accepted + refused).
    pub received: u64,
    pub accepted: u64,
    /// Refusals by reason.
    pub refused: BTreeMap<DeviceRefusalReason, u64>,
    pub batches_published: u64,
    /// Batches (and their records) the full outbox dropped.
    pub batches_dropped: u64,
    pub records_dropped: u64,
    /// Batches waiting in the outbox.
    pub outbox_queued: u64,
    pub commands_allowed: u64,
    pub commands_refused: BTreeMap<String, u64>,
    pub scans: u64,
    pub trust_changes: u64,
    pub registry_reloads: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct PerDevice {
    accepted: u64,
    refused: u64,
    last_seen_ms: Option<u64>,
}

/// The device side of the gateway: station, vetting, scan schedule and what is
/// waiting to be published. Synchronous (tests drive it directly); [`run`] is the
/// daemon's task around it.
pub struct Devices {
    cfg: DevicesConfig,
    gw: NodeId,
    station: Station,
    registry: Registry,
    registry_mtime: Option<SystemTime>,
    counts: HashMap<(String, DeviceRefusalReason), u64>,
    refusals: Vec<DeviceRefusal>,
    suppressed: u64,
    trust: Vec<DeviceTrustChange>,
    out: Vec<Outgoing>,
    history: HashMap<DeviceId, CommandHistory>,
    per_device: HashMap<String, PerDevice>,
    schedule: Schedule,
    trusted_dashboards: Vec<String>,
    pub stats: DeviceStats,
}

/// A message waiting for the bus (decisions, vulnerability reports, forwarded commands).
#[derive(Clone, Debug)]
pub enum Outgoing {
    Decision(DeviceCommandDecision),
    Forward(String, DeviceCommandMessage),
    Vulns(DeviceVulnReport),
}

fn reason_of(r: tad_devices::RefusalReason) -> DeviceRefusalReason {
    DeviceRefusalReason::from_name(r.as_str()).expect("the wire lists every guard reason")
}

fn level(l: TrustLevel) -> DeviceTrustLevel {
    match l {
        TrustLevel::Critical => DeviceTrustLevel::Critical,
        TrustLevel::Alert => DeviceTrustLevel::Alert,
        TrustLevel::Warning => DeviceTrustLevel::Warning,
        TrustLevel::Normal => DeviceTrustLevel::Normal,
    }
}

fn components(c: &Components) -> DeviceTrustComponents {
    DeviceTrustComponents {
        behaviour: c.behaviour,
        vulnerability: c.vulnerability,
        reputation: c.reputation,
    }
}

fn trust_change(e: &TrustEntry) -> DeviceTrustChange {
    let cause = match &e.cause {
        TrustCause::SecurityAlert { reason, detail } => DeviceTrustCause::SecurityAlert {
            reason: reason.clone(),
            detail: detail.clone(),
        },
        TrustCause::WeakAlert { reason, detail } => DeviceTrustCause::WeakAlert {
            reason: reason.clone(),
            detail: detail.clone(),
        },
        TrustCause::Anomaly { score, threshold } => DeviceTrustCause::Anomaly {
            score: *score,
            threshold: *threshold,
        },
        TrustCause::Heartbeat { sequence_no } => DeviceTrustCause::Heartbeat {
            sequence_no: *sequence_no,
        },
        TrustCause::Vulnerability { score, findings } => DeviceTrustCause::Vulnerability {
            score: *score,
            findings: findings.clone(),
        },
    };
    DeviceTrustChange {
        device_id: e.device_id.to_string(),
        at_ms: e.at_ms,
        cause,
        old: e.old,
        new: e.new,
        old_level: level(e.old_level),
        new_level: level(e.new_level),
        components: components(&e.components),
        batch_sha256: e.batch_sha256.clone(),
    }
}

fn severity(s: vulnscan::Severity) -> Severity {
    match s {
        vulnscan::Severity::Low => Severity::Low,
        vulnscan::Severity::Medium => Severity::Medium,
        vulnscan::Severity::High => Severity::High,
        vulnscan::Severity::Critical => Severity::Critical,
    }
}

fn spec_to_command(s: &DeviceCommandSpec) -> DeviceCommand {
    match s {
        DeviceCommandSpec::Set { key, value } => DeviceCommand::Set {
            key: key.clone(),
            value: *value,
        },
        DeviceCommandSpec::Reboot {} => DeviceCommand::Reboot {},
        DeviceCommandSpec::Firmware { url, sha256 } => DeviceCommand::Firmware {
            url: url.clone(),
            sha256: sha256.clone(),
        },
    }
}

fn mtime(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Devices {
    /// Loads the registry (a missing file is an empty registry: every device
    /// unenrolled), the replay windows and the trust ledger. `trusted_dashboards`
    /// are the ids whose command requests are vetted (`[trust] dashboards`).
    pub fn open(
        cfg: DevicesConfig,
        gw: NodeId,
        trusted_dashboards: Vec<String>,
    ) -> Result<Devices, String> {
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let registry = Registry::load_or_empty(&cfg.registry)
            .map_err(|e| format!("devices.registry {}: {e}", cfg.registry.display()))?;
        let station =
            Station::open(&registry, cfg.station()).map_err(|e| format!("devices: {e}"))?;
        Ok(Devices {
            registry_mtime: mtime(&cfg.registry),
            cfg,
            gw,
            station,
            registry,
            counts: HashMap::new(),
            refusals: Vec::new(),
            suppressed: 0,
            trust: Vec::new(),
            out: Vec::new(),
            history: HashMap::new(),
            per_device: HashMap::new(),
            schedule: Schedule::default(),
            trusted_dashboards,
            stats: DeviceStats::default(),
        })
    }

    /// The station (counters, ledger).
    pub fn station(&mut self) -> &mut Station {
        &mut self.station
    }

    /// Runs received telemetry publishes `(topic, payload)` through the guard.
    pub fn on_telemetry(&mut self, msgs: &[(String, Vec<u8>)], now_ms: u64) {
        let arrivals: Vec<Arrival<'_>> = msgs
            .iter()
            .map(|(t, p)| Arrival {
                topic: t,
                payload: p,
                arrival_ms: now_ms,
            })
            .collect();
        let out = self.station.handle(&arrivals);
        // Accepted messages, per device (the alerts say which were refused).
        let mut refused_per_topic: HashMap<&str, usize> = HashMap::new();
        for a in &out.alerts {
            *refused_per_topic.entry(a.device_id.as_str()).or_default() += 1;
        }
        for (t, _) in msgs {
            if let Some(id) = tad_devices::telemetry::device_of_topic(t) {
                match refused_per_topic.get_mut(id) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => {
                        let d = self.per_device.entry(id.to_owned()).or_default();
                        d.accepted += 1;
                        d.last_seen_ms = Some(now_ms);
                    }
                }
            }
        }
        self.absorb(out);
    }

    fn absorb(&mut self, out: StationOutput) {
        for a in out.alerts {
            let reason = reason_of(a.reason);
            let n = self
                .counts
                .entry((a.device_id.clone(), reason))
                .or_default();
            *n += 1;
            let count = *n;
            *self.stats.refused.entry(reason).or_default() += 1;
            if a.enrolled {
                self.per_device
                    .entry(a.device_id.clone())
                    .or_default()
                    .refused += 1;
            }
            tracing::warn!(device = %a.device_id, reason = %a.reason, detail = %a.detail, "device telemetry refused");
            if self.refusals.len() < self.cfg.max_refusals_per_message {
                self.refusals.push(DeviceRefusal {
                    device_id: a.device_id,
                    enrolled: a.enrolled,
                    reason,
                    count,
                    at_ms: a.at_ms,
                    sequence_no: a.sequence_no,
                    detail: a.detail,
                });
            } else {
                self.suppressed += 1;
            }
        }
        self.stats.trust_changes += out.trust.len() as u64;
        self.trust.extend(out.trust.iter().map(trust_change));
        for d in &out.dropped {
            self.stats.batches_dropped += 1;
            self.stats.records_dropped += d.records as u64;
        }
        if let Some(e) = out.save_error {
            self.stats.last_error = Some(format!("trust ledger: {e}"));
        }
        let m = self.station.metrics();
        self.stats.received = m.received;
        self.stats.accepted = m.accepted;
        self.stats.outbox_queued = m.outbox.queued_batches as u64;
    }

    /// Vets one device command (`tad_devices::vet` against the device's trust, its
    /// enrolled kinds and its history) and queues the decision and, when allowed,
    /// the command for the device.
    pub fn vet(
        &mut self,
        request_id: &str,
        device_id: &str,
        spec: &DeviceCommandSpec,
        requested_by: &str,
        now_ms: u64,
    ) -> DeviceCommandDecision {
        let mut d = DeviceCommandDecision {
            v: SCHEMA_VERSION,
            gateway_id: self.gw.clone(),
            request_id: request_id.to_owned(),
            device_id: device_id.to_owned(),
            command: spec.kind().to_owned(),
            spec: spec.clone(),
            decision: CommandDecision::Refused,
            reason: None,
            detail: String::new(),
            trust: 0.0,
            requested_by: requested_by.to_owned(),
            at_ms: now_ms,
        };
        let enrolled = DeviceId::parse(device_id).ok().and_then(|id| {
            self.registry
                .get(id.as_str())
                .map(|e| (id, e.commands.clone()))
        });
        let Some((id, kinds)) = enrolled else {
            d.reason = Some("unenrolled".into());
            d.detail = format!("device {device_id:?} is not enrolled");
            return self.decided(d);
        };
        let trust = self.station.ledger().trust(id.as_str(), now_ms);
        d.trust = trust.clamp(0.0, 100.0);
        let cmd = spec_to_command(spec);
        let h = self.history.entry(id.clone()).or_default();
        let verdict = tad_devices::vet(&cmd, trust, &kinds, h, &self.cfg.commands, now_ms);
        h.record(
            cmd.kind(),
            verdict.is_ok(),
            now_ms,
            self.cfg.commands.burst_window_ms,
        );
        match verdict {
            Ok(()) => {
                d.decision = CommandDecision::Allowed;
                self.out.push(Outgoing::Forward(
                    topic::device_commands(id.as_str()),
                    DeviceCommandMessage {
                        v: SCHEMA_VERSION,
                        id: request_id.to_owned(),
                        command: spec.clone(),
                        at_ms: now_ms,
                    },
                ));
            }
            Err(r) => {
                d.reason = Some(r.reason().to_owned());
                d.detail = r.to_string();
            }
        }
        self.decided(d)
    }

    fn decided(&mut self, d: DeviceCommandDecision) -> DeviceCommandDecision {
        match (&d.decision, &d.reason) {
            (CommandDecision::Allowed, _) => self.stats.commands_allowed += 1,
            (CommandDecision::Refused, r) => {
                let r = r.clone().unwrap_or_default();
                tracing::warn!(device = %d.device_id, command = %d.command, reason = %r, detail = %d.detail, "device command refused");
                *self.stats.commands_refused.entry(r).or_default() += 1;
            }
        }
        self.out.push(Outgoing::Decision(d.clone()));
        d
    }

    /// A signed request received on `topic`: the JWS must verify against the bus
    /// CA, its signer be the topic's last level and listed in `[trust]
    /// dashboards`; then [`Self::vet`].
    pub fn on_request(
        &mut self,
        topic_name: &str,
        payload: &[u8],
        verifier: &Verifier,
        now_ms: u64,
    ) -> DeviceCommandDecision {
        let from = match DeviceTopicKind::parse(topic_name) {
            Some(DeviceTopicKind::Requests { dashboard, .. }) => dashboard,
            _ => String::new(),
        };
        let refuse = |this: &mut Self, reason: &str, detail: String, id: String, dev: String| {
            let d = DeviceCommandDecision {
                v: SCHEMA_VERSION,
                gateway_id: this.gw.clone(),
                request_id: id,
                device_id: dev,
                command: String::new(),
                spec: DeviceCommandSpec::Reboot {},
                decision: CommandDecision::Refused,
                reason: Some(reason.to_owned()),
                detail,
                trust: 0.0,
                requested_by: from.clone(),
                at_ms: now_ms,
            };
            this.decided(d)
        };
        let signed = match verifier.verify::<DeviceCommandRequest>(payload) {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    self,
                    "bad_signature",
                    e.to_string(),
                    String::new(),
                    String::new(),
                );
            }
        };
        let req = signed.message;
        if signed.signer.as_str() != from {
            return refuse(
                self,
                "not_trusted",
                format!("signed by {} but published under {from:?}", signed.signer),
                req.id,
                req.device_id,
            );
        }
        if !self.trusted_dashboards.contains(&from) {
            return refuse(
                self,
                "not_trusted",
                format!("dashboard {from:?} is not in [trust] dashboards"),
                req.id,
                req.device_id,
            );
        }
        let by = format!("{from}/{}", req.issued_by);
        self.vet(&req.id, &req.device_id, &req.command, &by, now_ms)
    }

    /// Devices due for a scan now (new ones at once, then on the interval).
    pub fn scans_due(&mut self, now_ms: u64) -> Vec<(DeviceId, std::net::IpAddr)> {
        self.schedule.due(&self.cfg.scan, now_ms)
    }

    /// Feeds a finished scan into the trust ledger and queues its report.
    pub fn on_scan(&mut self, r: ScanReport) {
        self.stats.scans += 1;
        let labels = r.findings.iter().map(|f| f.label()).collect();
        let e = self
            .station
            .ledger()
            .set_vulnerability(&r.device_id, r.score, labels, r.at_ms);
        if let Err(e) = self.station.ledger().save() {
            self.stats.last_error = Some(format!("trust ledger: {e}"));
        }
        self.stats.trust_changes += 1;
        self.trust.push(trust_change(&e));
        self.out.push(Outgoing::Vulns(DeviceVulnReport {
            v: SCHEMA_VERSION,
            gateway_id: self.gw.clone(),
            device_id: r.device_id.to_string(),
            addr: r.addr,
            at_ms: r.at_ms,
            open_ports: r.open_ports,
            findings: r
                .findings
                .into_iter()
                .map(|f| VulnFinding {
                    port: f.port,
                    proto: f.proto,
                    service: f.service,
                    severity: severity(f.severity),
                    why: f.why,
                })
                .collect(),
            score: r.score,
            scanner: "connect".into(),
        }));
    }

    /// Closes an aged batch; re-reads the registry when its file changed.
    pub fn tick(&mut self, now_ms: u64) {
        let out = self.station.tick(now_ms);
        self.absorb(out);
        let m = mtime(&self.cfg.registry);
        if m != self.registry_mtime {
            self.registry_mtime = m;
            match Registry::load_or_empty(&self.cfg.registry) {
                Ok(r) => match self.station.reload_registry(&r) {
                    Ok(()) => {
                        self.registry = r;
                        self.stats.registry_reloads += 1;
                    }
                    Err(e) => self.stats.last_error = Some(format!("devices.registry: {e}")),
                },
                Err(e) => self.stats.last_error = Some(format!("devices.registry: {e}")),
            }
        }
    }

    /// Closes the open batch whatever its age (shutdown).
    pub fn flush(&mut self, now_ms: u64) {
        let out = self.station.flush(now_ms);
        self.absorb(out);
    }

    /// Hands what is due to `bus`: outbox batches while the bus takes them, queued
    /// decisions, reports and commands, and with `interval` the refusals, trust
    /// changes and the retained state.
    pub fn publish(&mut self, bus: &BusClient, interval: bool, now_ms: u64) {
        let up = matches!(*bus.state().borrow(), ConnectionState::Connected { .. });
        while let (true, Some(_)) = (up, self.station.outbox().front()) {
            let (gw, dropped) = (
                self.gw.clone(),
                (self.stats.batches_dropped, self.stats.records_dropped),
            );
            let Some(b) = self.station.outbox().front() else {
                break;
            };
            let msg = wire_batch(&gw, dropped, b, now_ms);
            match bus.try_publish(
                &topic::devices_telemetry(&self.gw),
                &msg,
                PublishOptions::reliable(),
            ) {
                Ok(()) => {
                    self.station.outbox().delivered();
                    self.stats.batches_published += 1;
                }
                Err(e) => {
                    self.stats.last_error = Some(format!("publishing a telemetry batch: {e}"));
                    break;
                }
            }
        }
        self.stats.outbox_queued = self.station.outbox().metrics().queued_batches as u64;
        let gw = self.gw.clone();
        for o in std::mem::take(&mut self.out) {
            let r = match &o {
                Outgoing::Decision(d) => bus.try_publish(
                    &topic::devices_decisions(&gw),
                    d,
                    PublishOptions::reliable(),
                ),
                Outgoing::Forward(t, m) => bus.try_publish(t, m, PublishOptions::reliable()),
                Outgoing::Vulns(v) => {
                    bus.try_publish(&topic::devices_vulns(&gw), v, PublishOptions::reliable())
                }
            };
            if let Err(e) = r {
                self.stats.last_error = Some(format!("publishing device messages: {e}"));
            }
        }
        if !interval {
            return;
        }
        let totals: BTreeMap<DeviceRefusalReason, u64> = DeviceRefusalReason::ALL
            .into_iter()
            .map(|r| (r, self.stats.refused.get(&r).copied().unwrap_or(0)))
            .collect();
        if !self.refusals.is_empty() || self.suppressed > 0 {
            let m = DeviceRefusals {
                v: SCHEMA_VERSION,
                gateway_id: gw.clone(),
                sent_at_ms: now_ms,
                refusals: std::mem::take(&mut self.refusals),
                suppressed: std::mem::take(&mut self.suppressed),
                totals: totals.clone(),
            };
            let _ = bus.try_publish(
                &topic::devices_refusals(&gw),
                &m,
                PublishOptions::reliable(),
            );
        }
        if !self.trust.is_empty() {
            let m = DeviceTrustChanges {
                v: SCHEMA_VERSION,
                gateway_id: gw.clone(),
                sent_at_ms: now_ms,
                changes: std::mem::take(&mut self.trust),
            };
            let _ = bus.try_publish(&topic::devices_trust(&gw), &m, PublishOptions::reliable());
        }
        let state = self.states(now_ms, totals);
        let _ = bus.try_publish(
            &topic::devices_state(&gw),
            &state,
            PublishOptions::retained(),
        );
    }
}

/// A closed batch as published, with the outbox's drop counts `(batches, records)`.
fn wire_batch(
    gw: &NodeId,
    dropped: (u64, u64),
    b: &tad_devices::TelemetryBatch,
    now_ms: u64,
) -> DeviceTelemetryBatch {
    DeviceTelemetryBatch {
        v: SCHEMA_VERSION,
        gateway_id: gw.clone(),
        batch_no: b.batch_no,
        opened_ms: b.opened_ms,
        closed_ms: b.closed_ms,
        sent_at_ms: now_ms,
        sha256: b.sha256.clone(),
        dropped_batches: dropped.0,
        dropped_records: dropped.1,
        // The devices crate's record JSON is the wire's DeviceRecord.
        records: b
            .records
            .iter()
            .filter_map(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| serde_json::from_value::<DeviceRecord>(v).ok())
            })
            .collect(),
    }
}

impl Devices {
    /// The retained snapshot of every enrolled device.
    pub fn states(
        &mut self,
        now_ms: u64,
        refused: BTreeMap<DeviceRefusalReason, u64>,
    ) -> DeviceStates {
        let ids: Vec<(DeviceId, Vec<String>)> = self
            .registry
            .devices
            .iter()
            .map(|(id, e)| (id.clone(), e.sensors.keys().cloned().collect()))
            .collect();
        let mut devices = Vec::new();
        for (id, sensors) in ids {
            let ledger = self.station.ledger();
            let t = ledger.trust(id.as_str(), now_ms);
            let c = ledger.components(id.as_str());
            let pd = self.per_device.get(id.as_str());
            devices.push(DeviceView {
                device_id: id.to_string(),
                trust: t,
                level: level(TrustLevel::of(t)),
                components: components(&c),
                accepted: pd.map_or(0, |d| d.accepted),
                refused: pd.map_or(0, |d| d.refused),
                last_seen_ms: pd.and_then(|d| d.last_seen_ms),
                sensors,
            });
        }
        DeviceStates {
            v: SCHEMA_VERSION,
            gateway_id: self.gw.clone(),
            at_ms: now_ms,
            devices,
            received: self.stats.received,
            accepted: self.stats.accepted,
            refused,
            outbox_queued: self.stats.outbox_queued,
            outbox_dropped_batches: self.stats.batches_dropped,
        }
    }
}

fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

/// The device task of the daemon (module docs) until `shutdown`; the stats are
/// copied into `stats` after every event.
pub async fn run(
    mut d: Devices,
    bus: BusClient,
    mut subs: DeviceSubscriptions,
    verifier: Verifier,
    stats: Arc<Mutex<DeviceStats>>,
    shutdown: impl Future<Output = ()>,
) {
    let interval = Duration::from_millis(d.cfg.publish_interval_ms);
    let mut tick = tokio::time::interval(interval.min(Duration::from_millis(250)));
    let mut last_interval = std::time::Instant::now();
    let (scan_tx, mut scan_rx) = mpsc::channel::<ScanReport>(16);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(first) = subs.telemetry.recv() => {
                let mut got = vec![(first.topic, first.message.0)];
                while got.len() < 256 {
                    match subs.telemetry.try_recv() {
                        Some(m) => got.push((m.topic, m.message.0)),
                        None => break,
                    }
                }
                tokio::task::block_in_place(|| d.on_telemetry(&got, now_ms()));
                d.publish(&bus, false, now_ms());
            }
            Some(r) = subs.requests.recv() => {
                d.on_request(&r.topic, &r.message.0, &verifier, now_ms());
                d.publish(&bus, false, now_ms());
            }
            Some(r) = scan_rx.recv() => {
                d.on_scan(r);
                d.publish(&bus, false, now_ms());
            }
            _ = tick.tick() => {
                let now = now_ms();
                d.tick(now);
                for (id, addr) in d.scans_due(now) {
                    let (cfg, tx) = (d.cfg.scan.clone(), scan_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let r = vulnscan::scan(&id, addr, &cfg, now_ms());
                        let _ = tx.blocking_send(r);
                    });
                }
                let due = last_interval.elapsed() >= interval;
                if due {
                    last_interval = std::time::Instant::now();
                }
                d.publish(&bus, due, now);
            }
        }
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = d.stats.clone();
    }
    let now = now_ms();
    d.flush(now);
    d.publish(&bus, true, now);
    *stats.lock().unwrap_or_else(|p| p.into_inner()) = d.stats.clone();
}
