//! The detection engine: flow records in, alerts, verdicts and trust updates out.
//! Pure and synchronous (no I/O, time passed in), so one engine per detector
//! instance is driven by the MQTT service, the pcap replay and the tests alike.
//!
//! Per record: partition check ([`crate::partition`]), the rules
//! ([`crate::rules`]), the autoencoder ([`crate::model`], batched per call), trust
//! evidence ([`crate::trust`]). Each detection passes the alert cooldown (the same
//! rule on the same source/target alerts again only after `policy.alert_cooldown_s`,
//! unless it escalates), becomes an [`Alert`], lowers its source's trust, and goes
//! through the verdict policy:
//!
//! * a rule that may block, at confidence >= `policy.block_confidence`, with a
//!   source, or a device whose trust level falls to critical -> `Action::Quarantine`
//!   of the source's /32 (/128) with TTL `base_ttl_s * 2^(offences - 1)` capped at
//!   `max_ttl_s`;
//! * never for an allowlisted or management address, a victim-side report or a
//!   source showing spoofing evidence; no new verdict while a quarantine is active;
//! * everything else alerts only;
//! * in observe mode verdicts carry `observe_only: true` and are counted.
//!
//! Kernel evidence ([`Engine::evidence`], [`EvidenceBatch`]es): the records update
//! the per-address evidence ([`crate::rules::evidence`]), every address a batch
//! touches is judged at once (scans of its sources, floods on its destinations),
//! and its XDP events are answered:
//!
//! * `report`: the source is judged now (on this engine's view and on the event's
//!   own numbers);
//! * `quarantine` (the XDP program already drops the source's new flows for
//!   `quarantine_ttl_ms`): when a scan rule fires and the policy blocks, the block
//!   verdict goes out at once (`evidence.*`, reason `port_scan`); when no rule fires
//!   (or the policy would not block, e.g. an allowlisted address) an
//!   `Action::Unblock` verdict (`evidence.lift`, reason `quarantine`) releases the
//!   benign burst, unless this engine has the address quarantined itself (for any
//!   reason), which is never lifted;
//! * a source the evidence path quarantined that later shows spoofing evidence in
//!   its flow records (an idle scan's zombie) is lifted the same way.
//!
//! One report per attack across the two paths: a scan source (or flood victim) an
//! alert of one path (`portscan.{vertical,horizontal,sweep}` /
//! `evidence.{vertical,horizontal,sweep}`, `synflood.victim` /
//! `evidence.synflood`) named is not alerted on by the other path until
//! `policy.alert_cooldown_s` after that path's last such alert (`portscan.low` is
//! suppressed too, but claims nothing); counted in `cross_path_suppressed`.

use std::{collections::HashSet, net::IpAddr};

use flow_meter::features;
use fw_common::filter::BlockReason;
use tad_wire::{
    Action, Alert, AlertKind, EvidenceBatch, EvidenceEventKind, EvidenceRole, Explanation,
    FlowBatch, FlowRecord, Mode, NodeId, SCHEMA_VERSION, Severity, Target, TrustLevel, TrustUpdate,
    Verdict,
};

use crate::{
    HashMap, classify,
    config::{Config, ConfigError},
    model::Autoencoder,
    partition::Partitioner,
    rules::{self, CooldownKey, Detection, Gate, Rules},
    trust::{TrustBook, TrustChange},
    window::Distinct,
};

/// Confidence an `evidence.lift` unblock carries: no scan rule fired on the
/// source's evidence.
pub const LIFT_CONFIDENCE: f32 = 0.8;

/// A verdict and the gateway it goes to.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutedVerdict {
    pub gateway_id: NodeId,
    pub verdict: Verdict,
}

/// What one call produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub alerts: Vec<Alert>,
    pub verdicts: Vec<RoutedVerdict>,
    pub trust: Vec<TrustUpdate>,
}

impl Output {
    pub fn append(&mut self, o: Output) {
        self.alerts.extend(o.alerts);
        self.verdicts.extend(o.verdicts);
        self.trust.extend(o.trust);
    }
}

/// Engine counters (published in the detector's status and by `bench`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub records: u64,
    /// `ProtectSyn` verdicts sent (SYN authentication switched on or renewed).
    pub syn_auth_on: u64,
    /// `UnprotectSyn` verdicts sent (the flood ended).
    pub syn_auth_off: u64,
    /// Records of partitions this instance does not take (ignored).
    pub foreign_records: u64,
    pub alerts: u64,
    /// Detections suppressed by the cooldown.
    pub alerts_suppressed: u64,
    pub verdicts: u64,
    /// Verdicts published with `observe_only` (observe mode).
    pub would_block: u64,
    /// Blocks refused: allowlisted or management address.
    pub allowlisted: u64,
    /// Blocks skipped because a quarantine of that source is active.
    pub already_quarantined: u64,
    pub scored: u64,
    pub anomalous: u64,
    /// Anomaly alerts dropped by `ml.max_alerts_per_min`.
    pub anomaly_rate_limited: u64,
    pub model_errors: u64,
    pub batch_gaps: u64,
    pub records_dropped_upstream: u64,
    /// Records a rule skipped because its state table was full (`rules::MAX_TRACKED`).
    pub state_full: u64,
    /// Evidence batches processed (also those ignored with `evidence.enabled = false`).
    pub evidence_batches: u64,
    /// Evidence records of this instance's partitions.
    pub evidence_records: u64,
    /// Evidence records and events of partitions this instance does not take.
    pub foreign_evidence: u64,
    /// Evidence batches whose sequence number skipped (per gateway and partition).
    pub evidence_gaps: u64,
    /// Evidence records not kept: the evidence book was full.
    pub evidence_state_full: u64,
    /// XDP events received (`report` and `quarantine`).
    pub evidence_events: u64,
    /// Provisional quarantines confirmed (a block verdict sent, or already
    /// quarantined by this engine).
    pub quarantines_confirmed: u64,
    /// `evidence.lift` unblock verdicts sent.
    pub quarantines_lifted: u64,
    /// Evidence scans not reported because the source shows spoofing evidence.
    pub evidence_spoofed: u64,
    /// Alerts of one path suppressed because the other path reported the same
    /// source (victim) within the cooldown.
    pub cross_path_suppressed: u64,
}

struct Quarantine {
    until_ms: u64,
    offences: u32,
    /// Whether the active quarantine came from an `evidence.*` rule.
    by_evidence: bool,
}

/// Key of the cross-path dedupe: (kind, source) for scans, (kind, victim) for
/// victim-side floods.
type OwnerKey = (AlertKind, Option<IpAddr>, Option<IpAddr>);

/// Where a scan/flood detection sits in the cross-path dedupe.
#[derive(Clone, Copy)]
struct PathOf {
    /// From the evidence path (else the flow path).
    evidence: bool,
    key: OwnerKey,
    /// Whether its alert claims the key (`portscan.low` is only suppressed).
    claims: bool,
}

/// The detection's place in the cross-path dedupe, if it takes part.
fn path_of(d: &Detection) -> Option<PathOf> {
    let (evidence, claims) = match d.rule {
        "evidence.vertical" | "evidence.horizontal" | "evidence.sweep" => (true, true),
        "portscan.vertical" | "portscan.horizontal" | "portscan.sweep" => (false, true),
        "portscan.low" => (false, false),
        "evidence.synflood" => (true, true),
        "synflood.victim" => (false, true),
        _ => return None,
    };
    let key = match d.kind {
        AlertKind::SynFlood => (d.kind, None, d.target),
        _ => (d.kind, Some(d.source?), None),
    };
    Some(PathOf {
        evidence,
        key,
        claims,
    })
}

/// One detector instance's engine.
pub struct Engine {
    /// The configuration in force: `base` plus the runtime threshold overrides.
    cfg: Config,
    /// The configuration the engine was made with (the loaded file), kept
    /// unchanged: runtime overrides always apply to it.
    base: Config,
    model: Option<Autoencoder>,
    part: Partitioner,
    rules: Rules,
    trust: TrustBook,
    /// (rule, source, target) -> (last alert ms, its main observed number).
    cooldown: HashMap<CooldownKey, (u64, f64)>,
    quarantines: HashMap<IpAddr, Quarantine>,
    /// Victims under SYN authentication at a gateway: (gateway, victim) ->
    /// (last flood sign ms, protection renewed until ms).
    syn_auth: HashMap<(NodeId, IpAddr), (u64, u64)>,
    /// Cross-path dedupe: key -> (claimed by the evidence path, last alert ms).
    scan_owner: HashMap<OwnerKey, (bool, u64)>,
    /// Last evidence sequence number per (gateway, partition).
    last_evidence_seq: HashMap<(NodeId, u16), u64>,
    anomalies: HashMap<IpAddr, Distinct<u8>>,
    anomaly_budget: (u64, u32),
    last_seq: HashMap<String, u64>,
    seq: u64,
    last_gc_ms: u64,
    pub counters: Counters,
}

impl Engine {
    /// An engine with the given config and (optional) model.
    pub fn new(cfg: Config, model: Option<Autoencoder>) -> Engine {
        let part = Partitioner::new(&cfg.partitions);
        Engine {
            base: cfg.clone(),
            cfg,
            model,
            part,
            rules: Rules::default(),
            trust: TrustBook::default(),
            cooldown: HashMap::default(),
            quarantines: HashMap::default(),
            syn_auth: HashMap::default(),
            scan_owner: HashMap::default(),
            last_evidence_seq: HashMap::default(),
            anomalies: HashMap::default(),
            anomaly_budget: (0, 0),
            last_seq: HashMap::default(),
            seq: 0,
            last_gc_ms: 0,
            counters: Counters::default(),
        }
    }

    /// The configuration in force (the base config plus the runtime overrides).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The trust book (to install a threat feed, query scores).
    pub fn trust_mut(&mut self) -> &mut TrustBook {
        &mut self.trust
    }

    pub fn trust_of(&self, dev: IpAddr) -> (f64, TrustLevel) {
        self.trust.score_of(&self.cfg, dev)
    }

    /// The configuration the engine was made with (the loaded file), which the
    /// runtime overrides apply to.
    pub fn base_config(&self) -> &Config {
        &self.base
    }

    /// Makes `values` the whole set of runtime threshold overrides: the config in
    /// force becomes the base config ([`Self::base_config`]) plus `values`, so a key
    /// absent from `values` is back at its file value at once. All or nothing: on
    /// an error (unknown key, value out of range, see
    /// [`Config::apply_thresholds`]) the config in force is unchanged.
    pub fn apply_thresholds(
        &mut self,
        values: &std::collections::BTreeMap<String, f64>,
    ) -> Result<(), ConfigError> {
        let mut cfg = self.base.clone();
        cfg.apply_thresholds(values)?;
        self.cfg = cfg;
        Ok(())
    }

    /// Processes one batch received at `now_ms` (Unix ms).
    pub fn batch(&mut self, b: &FlowBatch, now_ms: u64) -> Output {
        if let Some(prev) = self.last_seq.insert(b.gateway_id.to_string(), b.seq)
            && b.seq > prev + 1
        {
            self.counters.batch_gaps += 1;
        }
        self.counters.records_dropped_upstream += b.dropped_records;
        self.records(&b.gateway_id, &b.records, now_ms)
    }

    /// Processes records from `gateway_id` at `now_ms` (Unix ms; never goes back).
    pub fn records(&mut self, gateway_id: &NodeId, records: &[FlowRecord], now_ms: u64) -> Output {
        let mut out = Output::default();
        let mine: Vec<&FlowRecord> = records
            .iter()
            .filter(|r| {
                let ok = self.part.takes(r.src);
                if !ok {
                    self.counters.foreign_records += 1;
                }
                ok
            })
            .collect();
        self.counters.records += mine.len() as u64;
        let scores = self.score(&mine);
        let mut found = Vec::new();
        let cool_ms = (self.cfg.policy.alert_cooldown_s * 1000.0) as u64;
        for (i, r) in mine.iter().enumerate() {
            let gate = Gate {
                cooldown: &self.cooldown,
                now_ms,
                cool_ms,
            };
            self.rules
                .record(&self.cfg, r, now_ms, self.part.share(), &gate, &mut found);
            if let Some(s) = scores.get(i).copied().flatten() {
                self.anomaly(r, s, now_ms, &mut found);
            }
            for c in self.trust.observe(&self.cfg, r, now_ms) {
                let is_feed = c.reason.contains("threat feed");
                if is_feed {
                    found.push(feed_detection(r, &c, &self.trust));
                }
                self.push_trust(c, now_ms, &mut out);
            }
            for d in found.drain(..) {
                self.detection(gateway_id, d, now_ms, &mut out);
            }
            if classify::unsolicited_rst(r) && self.quarantined_by_evidence(r.src, now_ms) {
                tracing::info!(src = %r.src, "evidence quarantine of a source with spoofing evidence lifted");
                self.lift(gateway_id, r.src, now_ms, &mut out);
            }
        }
        for c in self.trust.tick(&self.cfg, now_ms) {
            self.push_trust(c, now_ms, &mut out);
        }
        self.end_syn_auth(now_ms, &mut out);
        self.counters.state_full = self.rules.state_full;
        let full = self.rules.sources.len() >= rules::MAX_TRACKED
            || self.rules.victims.len() >= rules::MAX_TRACKED
            || self.rules.rates.len() >= rules::MAX_TRACKED;
        if now_ms.saturating_sub(self.last_gc_ms) >= if full { 1_000 } else { 10_000 } {
            self.gc(now_ms);
        }
        out
    }

    /// Processes one evidence batch received at `now_ms` (Unix ms, detector clock;
    /// never goes back): see the module docs. Windows are measured on the
    /// gateway's clock, the batch's `sent_at_ms`.
    pub fn evidence(&mut self, b: &EvidenceBatch, now_ms: u64) -> Output {
        let mut out = Output::default();
        self.counters.evidence_batches += 1;
        if let Some(prev) = self
            .last_evidence_seq
            .insert((b.gateway_id.clone(), b.partition), b.seq)
            && b.seq > prev + 1
        {
            self.counters.evidence_gaps += 1;
        }
        if !self.cfg.evidence.enabled {
            return out;
        }
        let gw = &b.gateway_id;
        let newest = b
            .records
            .iter()
            .map(|r| r.epoch_start_ms + rules::evidence::EPOCH_MS)
            .max()
            .unwrap_or(0);
        let gw_now = b.sent_at_ms.max(newest);
        let keep = rules::evidence::keep_ms(&self.cfg);
        let mut sources = Vec::new();
        let mut victims = Vec::new();
        for r in &b.records {
            if !self.part.takes(r.addr) {
                self.counters.foreign_evidence += 1;
                continue;
            }
            self.counters.evidence_records += 1;
            if self.rules.evidence.insert(gw, r, now_ms, gw_now, keep) {
                match r.role {
                    EvidenceRole::Source => sources.push(r.addr),
                    EvidenceRole::Destination => victims.push(r.addr),
                }
            }
        }
        // Each address once, in a stable order.
        for list in [&mut sources, &mut victims] {
            list.sort_unstable();
            list.dedup();
        }
        self.counters.evidence_state_full = self.rules.evidence.state_full;
        // Events first (a quarantine is answered even when the source also had
        // records), one answer per address and batch, a quarantine before a report.
        let mut events: Vec<&tad_wire::EvidenceEvent> = Vec::new();
        for e in &b.events {
            self.counters.evidence_events += 1;
            if !self.part.takes(e.addr) {
                self.counters.foreign_evidence += 1;
                continue;
            }
            match events.iter_mut().find(|x| x.addr == e.addr) {
                Some(x) if e.kind == EvidenceEventKind::Quarantine => *x = e,
                Some(_) => {}
                None => events.push(e),
            }
        }
        for e in events {
            if let Ok(i) = sources.binary_search(&e.addr) {
                sources.remove(i);
            }
            // The event's own numbers stand in for a view that does not fire,
            // unless the view shows the source's address is being forged.
            let d = match self.scan_view(gw, e.addr, gw_now, now_ms) {
                Some(d) => Some(d),
                None if self.view_spoofed(gw, e.addr, gw_now) => None,
                None => self.scan_of(e.addr, &rules::evidence::Summary::of_event(e), now_ms),
            };
            match e.kind {
                EvidenceEventKind::Report => {
                    if let Some(d) = d {
                        self.detection(gw, d, now_ms, &mut out);
                    }
                }
                EvidenceEventKind::Quarantine => {
                    self.answer_quarantine(gw, e.addr, d, now_ms, &mut out)
                }
            }
        }
        for src in sources {
            if let Some(d) = self.scan_view(gw, src, gw_now, now_ms) {
                self.detection(gw, d, now_ms, &mut out);
            }
        }
        let flood_ms = (self.cfg.synflood.window_s * 1000.0).round() as u64;
        for victim in victims {
            let Some(st) =
                self.rules
                    .evidence
                    .states
                    .get(&(gw.clone(), victim, EvidenceRole::Destination))
            else {
                continue;
            };
            let s = st.summary(gw_now, flood_ms);
            if let Some(d) = rules::evidence::flood(&self.cfg, victim, &s) {
                self.detection(gw, d, now_ms, &mut out);
            }
        }
        self.end_syn_auth(now_ms, &mut out);
        let full = self.rules.evidence.states.len() >= rules::MAX_TRACKED / 2;
        if now_ms.saturating_sub(self.last_gc_ms) >= if full { 1_000 } else { 10_000 } {
            self.gc(now_ms);
        }
        out
    }

    /// Whether this engine's evidence of source `src` at `gw` has unsolicited RSTs
    /// in the scan window (spoofing evidence, see [`Self::scan_of`]).
    fn view_spoofed(&self, gw: &NodeId, src: IpAddr, gw_now_ms: u64) -> bool {
        self.rules
            .evidence
            .states
            .get(&(gw.clone(), src, EvidenceRole::Source))
            .is_some_and(|st| {
                st.summary(
                    gw_now_ms,
                    (self.cfg.portscan.window_s * 1000.0).round() as u64,
                )
                .unsolicited_rsts
                    > 0
            })
    }

    /// The scan rule this engine's evidence of source `src` at `gw` meets.
    fn scan_view(
        &mut self,
        gw: &NodeId,
        src: IpAddr,
        gw_now_ms: u64,
        now_ms: u64,
    ) -> Option<Detection> {
        let st = self
            .rules
            .evidence
            .states
            .get(&(gw.clone(), src, EvidenceRole::Source))?;
        let s = st.summary(
            gw_now_ms,
            (self.cfg.portscan.window_s * 1000.0).round() as u64,
        );
        self.scan_of(src, &s, now_ms)
    }

    /// The scan rule summary `s` of `src` meets, unless `src` shows spoofing
    /// evidence in its flow records or in the kernel's evidence (unsolicited RSTs):
    /// then the flow path reports the victim.
    fn scan_of(
        &mut self,
        src: IpAddr,
        s: &rules::evidence::Summary,
        now_ms: u64,
    ) -> Option<Detection> {
        let d = rules::evidence::scan(&self.cfg.portscan, &self.cfg.evidence, src, s)?;
        let window_ms = (self.cfg.portscan.window_s * 1000.0).round() as u64;
        if s.unsolicited_rsts > 0 || self.rules.spoof_evidence(src, now_ms, window_ms) {
            self.counters.evidence_spoofed += 1;
            return None;
        }
        Some(d)
    }

    /// Answers a provisional quarantine of `src` by `gw`'s XDP program: confirms
    /// it with a block when `found` (a scan rule that fired) and the policy blocks,
    /// lifts it otherwise, except while this engine has `src` quarantined itself.
    fn answer_quarantine(
        &mut self,
        gw: &NodeId,
        src: IpAddr,
        found: Option<Detection>,
        now_ms: u64,
        out: &mut Output,
    ) {
        if let Some(d) = found {
            let blocking = d.may_block && d.confidence as f64 >= self.cfg.policy.block_confidence;
            let (kind, rule, confidence) = (d.kind, d.rule, d.confidence);
            self.detection(gw, d, now_ms, out);
            // The alert may have been suppressed (cooldown, the other path):
            // the block goes out all the same.
            if blocking
                && !self.is_quarantined(src, now_ms)
                && let Some(v) = self.verdict(src, kind, rule.to_string(), confidence, None, now_ms)
            {
                out.verdicts.push(RoutedVerdict {
                    gateway_id: gw.clone(),
                    verdict: v,
                });
            }
        }
        if self.is_quarantined(src, now_ms) {
            self.counters.quarantines_confirmed += 1;
        } else {
            self.lift(gw, src, now_ms, out);
        }
    }

    fn is_quarantined(&self, src: IpAddr, now_ms: u64) -> bool {
        self.quarantines
            .get(&src)
            .is_some_and(|q| q.until_ms > now_ms)
    }

    fn quarantined_by_evidence(&self, src: IpAddr, now_ms: u64) -> bool {
        self.quarantines
            .get(&src)
            .is_some_and(|q| q.until_ms > now_ms && q.by_evidence)
    }

    /// An `evidence.lift` unblock of `src` to `gw`; ends this engine's own
    /// evidence quarantine of it, if any (a quarantine for another reason is never
    /// lifted: callers check).
    fn lift(&mut self, gw: &NodeId, src: IpAddr, now_ms: u64, out: &mut Output) {
        if let Some(q) = self.quarantines.get_mut(&src)
            && q.by_evidence
        {
            q.until_ms = now_ms;
        }
        let observe = self.cfg.detector.mode == Mode::Observe;
        self.counters.quarantines_lifted += 1;
        let id = self.next_id('v');
        tracing::info!(%src, gateway = %gw, observe_only = observe, "provisional quarantine lifted");
        out.verdicts.push(RoutedVerdict {
            gateway_id: gw.clone(),
            verdict: Verdict {
                v: SCHEMA_VERSION,
                id,
                detector_id: self.cfg.detector.id.clone(),
                issued_at_ms: now_ms,
                action: Action::Unblock,
                target: Target::host(src),
                ttl_s: None,
                reason: BlockReason::Quarantine,
                rule: "evidence.lift".to_string(),
                confidence: LIFT_CONFIDENCE,
                alert_id: None,
                observe_only: observe,
                port: None,
            },
        });
    }

    /// Advances time without records (trust recovery, quarantine expiry).
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        for c in self.trust.tick(&self.cfg, now_ms) {
            self.push_trust(c, now_ms, &mut out);
        }
        out
    }

    fn gc(&mut self, now_ms: u64) {
        self.last_gc_ms = now_ms;
        let c = &self.cfg;
        let longest = [
            c.portscan.window_s,
            c.synflood.window_s,
            c.bruteforce.window_s,
            c.ml.window_s,
        ]
        .into_iter()
        .fold(0.0, f64::max);
        let idle_ms = (longest * 1000.0) as u64 + 1_000;
        self.rules.gc(now_ms, idle_ms);
        let cool_ms = (c.policy.alert_cooldown_s * 1000.0) as u64;
        self.cooldown
            .retain(|_, (t, _)| now_ms.saturating_sub(*t) <= cool_ms);
        self.scan_owner
            .retain(|_, (_, t)| now_ms.saturating_sub(*t) <= cool_ms);
        let ml_ms = (c.ml.window_s * 1000.0) as u64;
        self.anomalies.retain(|_, w| {
            w.evict(now_ms, ml_ms);
            !w.is_empty()
        });
        // Offence counts are kept a day after the quarantine ends.
        self.quarantines
            .retain(|_, q| now_ms.saturating_sub(q.until_ms) <= 86_400_000);
    }

    fn score(&mut self, recs: &[&FlowRecord]) -> Vec<Option<f32>> {
        let Some(m) = self.model.as_ref().filter(|_| self.cfg.ml.enabled) else {
            return Vec::new();
        };
        let rows: Vec<[f32; features::N_FEATURES]> =
            recs.iter().map(|r| features::extract(r)).collect();
        match m.scores(&rows) {
            Ok(s) => {
                self.counters.scored += s.len() as u64;
                s.into_iter().map(Some).collect()
            }
            Err(e) => {
                self.counters.model_errors += 1;
                tracing::warn!(error = %e, "model failed; rules go on without it");
                Vec::new()
            }
        }
    }

    fn anomaly(&mut self, r: &FlowRecord, score: f32, now_ms: u64, out: &mut Vec<Detection>) {
        let Some(m) = &self.model else { return };
        let ml = &self.cfg.ml;
        let thr = m.threshold() as f64 * ml.threshold_scale;
        if (score as f64) <= thr {
            return;
        }
        self.counters.anomalous += 1;
        let w_ms = (ml.window_s * 1000.0) as u64;
        if self.anomalies.len() >= rules::MAX_TRACKED && !self.anomalies.contains_key(&r.src) {
            self.rules.state_full += 1;
            return;
        }
        let w = self
            .anomalies
            .entry(r.src)
            .or_insert_with(|| Distinct::new(rules::WINDOW_CAP));
        w.evict(now_ms, w_ms);
        w.insert(now_ms, 0);
        let n = w.len() as f64;
        if n < ml.min_flows as f64 {
            return;
        }
        // One alert per source per cooldown (target-independent), checked before
        // the detection is built.
        let gate = Gate {
            cooldown: &self.cooldown,
            now_ms,
            cool_ms: (self.cfg.policy.alert_cooldown_s * 1000.0) as u64,
        };
        if !gate.open("ml.autoencoder", Some(r.src), None, n) {
            self.counters.alerts_suppressed += 1;
            return;
        }
        if now_ms / 60_000 != self.anomaly_budget.0 {
            self.anomaly_budget = (now_ms / 60_000, 0);
        }
        if self.anomaly_budget.1 >= ml.max_alerts_per_min {
            self.counters.anomaly_rate_limited += 1;
            return;
        }
        out.push(Detection {
            kind: AlertKind::Anomaly,
            rule: "ml.autoencoder",
            main: n,
            severity: if score as f64 > 10.0 * thr { Severity::Medium } else { Severity::Low },
            confidence: 0.4,
            source: Some(r.src),
            target: None,
            window_s: ml.window_s,
            observed: [("score".to_string(), score as f64), ("anomalous_flows".to_string(), n)].into(),
            thresholds: [("score".to_string(), thr), ("anomalous_flows".to_string(), ml.min_flows as f64)].into(),
            text: format!(
                "{} had {n} flows in {} s whose reconstruction error exceeds the benign threshold (latest {score:.3} > {thr:.3})",
                r.src, ml.window_s
            ),
            flows: vec![rules::flow_ref(r)],
            may_block: false,
        });
    }

    fn next_id(&mut self, tag: char) -> String {
        self.seq += 1;
        format!("{}-{tag}{}", self.cfg.detector.id, self.seq)
    }

    fn push_trust(&self, c: TrustChange, now_ms: u64, out: &mut Output) {
        out.trust.push(TrustUpdate {
            v: SCHEMA_VERSION,
            detector_id: self.cfg.detector.id.clone(),
            at_ms: now_ms,
            device: c.device,
            score: c.score,
            level: c.level,
            behavioural: c.behavioural,
            vulnerability: c.vulnerability,
            reputation: c.reputation,
            reason: c.reason,
        });
    }

    fn detection(&mut self, gateway_id: &NodeId, d: Detection, now_ms: u64, out: &mut Output) {
        // A flood from many sources (spoofed or distributed: blocking its sources is
        // useless) is answered with SYN authentication of the victim, whatever the
        // alert cooldown says. A single spoofed source (`synflood.spoofed`, an idle
        // scan's zombie) is not such a flood.
        let many_sources = match d.rule {
            "evidence.synflood" => true,
            "synflood.victim" => d
                .observed
                .get("distinct_sources")
                .is_some_and(|n| *n >= self.cfg.synflood.spoofed_min_sources as f64),
            _ => false,
        };
        if d.kind == AlertKind::SynFlood
            && many_sources
            && d.source.is_none()
            && let Some(victim) = d.target
        {
            self.protect_syn(gateway_id, victim, d.rule, d.confidence, now_ms, out);
        }
        // Cooldown: the same rule on the same pair again only after the cooldown,
        // unless it now may block and did not before, or its main number doubled.
        let key = (d.rule, d.source, d.target);
        let main = d.main;
        let cool_ms = (self.cfg.policy.alert_cooldown_s * 1000.0) as u64;
        // Cross-path dedupe: the other path reported this source (victim) lately.
        let path = path_of(&d);
        if let Some(p) = path
            && let Some((owner, t)) = self.scan_owner.get(&p.key)
            && *owner != p.evidence
            && now_ms.saturating_sub(*t) < cool_ms
        {
            self.counters.alerts_suppressed += 1;
            self.counters.cross_path_suppressed += 1;
            return;
        }
        if let Some((t, last_main)) = self.cooldown.get(&key)
            && now_ms.saturating_sub(*t) < cool_ms
            && main < 2.0 * last_main
        {
            self.counters.alerts_suppressed += 1;
            return;
        }
        // A low-volume scan alert is redundant once the source is reported for more.
        if d.kind == AlertKind::Anomaly {
            if self.anomaly_budget.1 >= self.cfg.ml.max_alerts_per_min {
                self.counters.anomaly_rate_limited += 1;
                return;
            }
            self.anomaly_budget.1 += 1;
        }
        self.cooldown.insert(key, (now_ms, main));
        if let Some(p) = path.filter(|p| p.claims) {
            self.scan_owner.insert(p.key, (p.evidence, now_ms));
        }
        let alert_id = self.next_id('a');
        let mut alert = Alert {
            v: SCHEMA_VERSION,
            id: alert_id.clone(),
            detector_id: self.cfg.detector.id.clone(),
            gateway_id: gateway_id.clone(),
            at_ms: now_ms,
            kind: d.kind,
            severity: d.severity,
            source: d.source,
            target: d.target,
            explanation: Explanation {
                rule: d.rule.to_string(),
                window_s: d.window_s,
                observed: d.observed.clone(),
                thresholds: d.thresholds.clone(),
                text: d.text.clone(),
            },
            flows: d.flows.clone(),
            verdict_id: None,
        };
        self.counters.alerts += 1;
        tracing::info!(id = %alert.id, rule = d.rule, source = ?d.source, target = ?d.target, "alert");
        let mut trust_critical = false;
        if let Some(src) = d.source {
            let c = self
                .trust
                .penalise(&self.cfg, src, d.severity, d.rule, now_ms);
            trust_critical = c.level == TrustLevel::Critical;
            self.push_trust(c, now_ms, out);
        }
        let blocking = d.may_block && d.confidence as f64 >= self.cfg.policy.block_confidence;
        if let Some(src) = d.source
            && (blocking || trust_critical)
        {
            let rule = if blocking {
                d.rule.to_string()
            } else {
                "trust.critical".to_string()
            };
            let confidence = if blocking {
                d.confidence
            } else {
                d.confidence.max(0.8)
            };
            if let Some(v) = self.verdict(src, d.kind, rule, confidence, Some(&alert_id), now_ms) {
                alert.verdict_id = Some(v.id.clone());
                out.verdicts.push(RoutedVerdict {
                    gateway_id: gateway_id.clone(),
                    verdict: v,
                });
            }
        }
        out.alerts.push(alert);
    }

    /// Records a flood sign for `victim` at `gw`; sends a `ProtectSyn` verdict when
    /// its protection is off or past half its lifetime (renewal).
    fn protect_syn(
        &mut self,
        gw: &NodeId,
        victim: IpAddr,
        rule: &str,
        confidence: f32,
        now_ms: u64,
        out: &mut Output,
    ) {
        let sf = &self.cfg.synflood;
        if !sf.syn_auth {
            return;
        }
        let ttl_ms = sf.syn_auth_ttl_s * 1000;
        let e = self
            .syn_auth
            .entry((gw.clone(), victim))
            .or_insert((now_ms, 0));
        e.0 = now_ms;
        if e.1 > now_ms + ttl_ms / 2 {
            return;
        }
        e.1 = now_ms + ttl_ms;
        let v = self.syn_auth_verdict(
            victim,
            Action::ProtectSyn,
            Some(sf.syn_auth_ttl_s),
            rule,
            confidence,
            now_ms,
        );
        self.counters.syn_auth_on += 1;
        tracing::info!(%victim, gateway = %gw, "SYN authentication on");
        out.verdicts.push(RoutedVerdict {
            gateway_id: gw.clone(),
            verdict: v,
        });
    }

    /// Sends `UnprotectSyn` for every victim whose flood has shown no sign for
    /// `synflood.syn_auth_quiet_s`.
    fn end_syn_auth(&mut self, now_ms: u64, out: &mut Output) {
        let quiet_ms = (self.cfg.synflood.syn_auth_quiet_s * 1000.0) as u64;
        let ended: Vec<(NodeId, IpAddr)> = self
            .syn_auth
            .iter()
            .filter(|(_, (last, _))| now_ms.saturating_sub(*last) > quiet_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for (gw, victim) in ended {
            self.syn_auth.remove(&(gw.clone(), victim));
            let v = self.syn_auth_verdict(
                victim,
                Action::UnprotectSyn,
                None,
                "synflood.ended",
                1.0,
                now_ms,
            );
            self.counters.syn_auth_off += 1;
            tracing::info!(%victim, gateway = %gw, "SYN authentication off: the flood ended");
            out.verdicts.push(RoutedVerdict {
                gateway_id: gw,
                verdict: v,
            });
        }
    }

    fn syn_auth_verdict(
        &mut self,
        victim: IpAddr,
        action: Action,
        ttl_s: Option<u64>,
        rule: &str,
        confidence: f32,
        now_ms: u64,
    ) -> Verdict {
        let observe = self.cfg.detector.mode == Mode::Observe;
        self.counters.verdicts += 1;
        Verdict {
            v: SCHEMA_VERSION,
            id: self.next_id('v'),
            detector_id: self.cfg.detector.id.clone(),
            issued_at_ms: now_ms,
            action,
            target: Target::host(victim),
            ttl_s,
            reason: BlockReason::SynFlood,
            rule: rule.to_string(),
            confidence: confidence.clamp(0.0, 1.0),
            alert_id: None,
            observe_only: observe,
            port: None,
        }
    }

    fn verdict(
        &mut self,
        src: IpAddr,
        kind: AlertKind,
        rule: String,
        confidence: f32,
        alert_id: Option<&str>,
        now_ms: u64,
    ) -> Option<Verdict> {
        if self.cfg.never_block(src) {
            self.counters.allowlisted += 1;
            tracing::info!(%src, "not blocking an allowlisted/management address");
            return None;
        }
        let p = &self.cfg.policy;
        let q = self.quarantines.entry(src).or_insert(Quarantine {
            until_ms: 0,
            offences: 0,
            by_evidence: false,
        });
        if q.until_ms > now_ms {
            self.counters.already_quarantined += 1;
            return None;
        }
        q.offences += 1;
        let ttl_s = p
            .base_ttl_s
            .saturating_mul(1u64 << (q.offences - 1).min(30))
            .min(p.max_ttl_s)
            .max(1);
        q.until_ms = now_ms + ttl_s * 1000;
        q.by_evidence = rule.starts_with("evidence.");
        let observe = self.cfg.detector.mode == Mode::Observe;
        self.counters.verdicts += 1;
        if observe {
            self.counters.would_block += 1;
        }
        let id = self.next_id('v');
        Some(Verdict {
            v: SCHEMA_VERSION,
            id,
            detector_id: self.cfg.detector.id.clone(),
            issued_at_ms: now_ms,
            action: Action::Quarantine,
            target: Target::host(src),
            ttl_s: Some(ttl_s),
            reason: if kind == AlertKind::ThreatFeed {
                BlockReason::ThreatFeed
            } else {
                kind.block_reason()
            },
            rule,
            confidence: confidence.clamp(0.0, 1.0),
            alert_id: alert_id.map(str::to_string),
            observe_only: observe,
            port: None,
        })
    }

    /// Sources currently quarantined by this engine.
    pub fn quarantined(&self, now_ms: u64) -> HashSet<IpAddr> {
        self.quarantines
            .iter()
            .filter(|(_, q)| q.until_ms > now_ms)
            .map(|(a, _)| *a)
            .collect()
    }
}

fn feed_detection(r: &FlowRecord, c: &TrustChange, trust: &TrustBook) -> Detection {
    let listed = if trust.feed.contains(r.src) {
        r.src
    } else {
        r.dst
    };
    Detection {
        kind: AlertKind::ThreatFeed,
        rule: "trust.threat_feed",
        main: 1.0,
        severity: Severity::Medium,
        confidence: 0.7,
        source: (listed == r.src).then_some(r.src),
        target: Some(c.device),
        window_s: 0.0,
        observed: [("listed".to_string(), 1.0)].into(),
        thresholds: Default::default(),
        text: format!(
            "{} exchanged traffic with {listed}, listed in the threat feed",
            c.device
        ),
        flows: vec![rules::flow_ref(r)],
        may_block: false,
    }
}
