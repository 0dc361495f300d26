//! The per-record path: flow records through the partition check, the rules, the
//! autoencoder and trust evidence, each detection then to [`Engine::detection`].

use flow_meter::features;
use tad_wire::{AlertKind, FlowBatch, FlowRecord, NodeId, Severity};

use super::{Engine, Output};
use crate::{
    classify,
    rules::{self, Detection, Gate},
    trust::{TrustBook, TrustChange},
    window::Distinct,
};

impl Engine {
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
            // A reflector's unsolicited answers are the reflection rule's (on the
            // victim), never an anomaly of the innocent reflector.
            if let Some(s) = scores.get(i).copied().flatten()
                && rules::reflection::answer(&self.cfg.reflection, r).is_none()
            {
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
            let reflector =
                self.rules
                    .reflection
                    .reflector_in_flood(&self.cfg, r, self.part.share());
            if (classify::unsolicited_rst(r) || reflector)
                && self.quarantined_by_evidence(r.src, now_ms)
            {
                tracing::info!(src = %r.src, reflector, "evidence quarantine of a source with spoofing evidence (or a reflector) lifted");
                self.lift(gateway_id, r.src, now_ms, &mut out);
            }
        }
        for c in self.trust.tick(&self.cfg, now_ms) {
            self.push_trust(c, now_ms, &mut out);
        }
        self.end_syn_auth(now_ms, &mut out);
        self.publish_alerts(now_ms, &mut out);
        self.counters.state_full = self.rules.state_full;
        let full = self.rules.sources.len() >= rules::MAX_TRACKED
            || self.rules.victims.len() >= rules::MAX_TRACKED
            || self.rules.rates.len() >= rules::MAX_TRACKED;
        if now_ms.saturating_sub(self.last_gc_ms) >= if full { 1_000 } else { 10_000 } {
            self.gc(now_ms);
        }
        out
    }

    pub(super) fn score(&mut self, recs: &[&FlowRecord]) -> Vec<Option<f32>> {
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

    pub(super) fn anomaly(
        &mut self,
        r: &FlowRecord,
        score: f32,
        now_ms: u64,
        out: &mut Vec<Detection>,
    ) {
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
