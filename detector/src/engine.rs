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

use std::{collections::HashSet, net::IpAddr};

use flow_meter::features;
use fw_common::filter::BlockReason;
use tad_wire::{
    Action, Alert, AlertKind, Explanation, FlowBatch, FlowRecord, Mode, NodeId, SCHEMA_VERSION,
    Severity, Target, TrustLevel, TrustUpdate, Verdict,
};

use crate::{
    HashMap,
    config::{Config, ConfigError},
    model::Autoencoder,
    partition::Partitioner,
    rules::{self, CooldownKey, Detection, Gate, Rules},
    trust::{TrustBook, TrustChange},
    window::Distinct,
};

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
}

struct Quarantine {
    until_ms: u64,
    offences: u32,
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
        }
        for c in self.trust.tick(&self.cfg, now_ms) {
            self.push_trust(c, now_ms, &mut out);
        }
        self.counters.state_full = self.rules.state_full;
        let full = self.rules.sources.len() >= rules::MAX_TRACKED
            || self.rules.victims.len() >= rules::MAX_TRACKED
            || self.rules.rates.len() >= rules::MAX_TRACKED;
        if now_ms.saturating_sub(self.last_gc_ms) >= if full { 1_000 } else { 10_000 } {
            self.gc(now_ms);
        }
        out
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
        // Cooldown: the same rule on the same pair again only after the cooldown,
        // unless it now may block and did not before, or its main number doubled.
        let key = (d.rule, d.source, d.target);
        let main = d.main;
        let cool_ms = (self.cfg.policy.alert_cooldown_s * 1000.0) as u64;
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
            if let Some(v) = self.verdict(src, d.kind, rule, confidence, &alert_id, now_ms) {
                alert.verdict_id = Some(v.id.clone());
                out.verdicts.push(RoutedVerdict {
                    gateway_id: gateway_id.clone(),
                    verdict: v,
                });
            }
        }
        out.alerts.push(alert);
    }

    fn verdict(
        &mut self,
        src: IpAddr,
        kind: AlertKind,
        rule: String,
        confidence: f32,
        alert_id: &str,
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
            alert_id: Some(alert_id.to_string()),
            observe_only: observe,
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
