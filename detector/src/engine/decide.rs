//! The decision path: a detection passes the cross-path dedupe and the alert
//! cooldown, becomes an [`Alert`], lowers its source's trust and goes through the
//! verdict policy (see the module docs of [`crate::engine`]).

use std::net::IpAddr;

use fw_common::filter::BlockReason;
use tad_wire::{
    Action, Alert, AlertKind, Explanation, Mode, NodeId, SCHEMA_VERSION, Target, TrustLevel,
    Verdict,
};

use super::{Engine, Output, OwnerKey, Quarantine, RoutedVerdict};
use crate::rules::{Cool, Detection};

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

impl Engine {
    pub(super) fn detection(
        &mut self,
        gateway_id: &NodeId,
        d: Detection,
        now_ms: u64,
        out: &mut Output,
    ) {
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
        // Cooldown: the same rule on the same pair raises or renews its alert only
        // after the cooldown or once its main number doubled; in between, a
        // detection whose number grew only updates the merged alert.
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
        let (renews, grows) = match self.cooldown.get(&key) {
            Some(c) => (c.renews(now_ms, cool_ms, main), c.grows(main)),
            None => (true, true),
        };
        if !renews && !grows {
            self.counters.alerts_suppressed += 1;
            return;
        }
        if renews && d.kind == AlertKind::Anomaly {
            if self.anomaly_budget.1 >= self.cfg.ml.max_alerts_per_min {
                self.counters.anomaly_rate_limited += 1;
                return;
            }
            self.anomaly_budget.1 += 1;
        }
        let top = Cool {
            at_ms: now_ms,
            main,
            top: main,
        };
        match self.cooldown.get_mut(&key) {
            Some(c) if !renews => c.top = c.top.max(main),
            Some(c) => *c = top,
            None => {
                self.cooldown.insert(key, top);
            }
        }
        if let Some(p) = path.filter(|p| p.claims) {
            self.scan_owner.insert(p.key, (p.evidence, now_ms));
        }
        // One attack, one alert: merge into the alert of this source and kind
        // while the attack goes on, else raise a new one.
        let alert_id = match self.incidents.active(gateway_id, &d, now_ms, cool_ms) {
            Some(id) => {
                let id = id.to_string();
                self.incidents.merge(gateway_id, &d, now_ms, renews, None);
                self.counters.alerts_merged += 1;
                id
            }
            None => {
                let alert = self.alert_of(gateway_id, &d, now_ms);
                let id = alert.id.clone();
                tracing::info!(id = %id, rule = d.rule, source = ?d.source, target = ?d.target, "alert");
                self.incidents
                    .merge(gateway_id, &d, now_ms, true, Some(alert));
                id
            }
        };
        if !renews {
            return;
        }
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
                self.incidents.verdict(gateway_id, &d, &v.id);
                out.verdicts.push(RoutedVerdict {
                    gateway_id: gateway_id.clone(),
                    verdict: v,
                });
            }
        }
    }

    /// A new alert made of detection `d` alone.
    fn alert_of(&mut self, gateway_id: &NodeId, d: &Detection, now_ms: u64) -> Alert {
        Alert {
            v: SCHEMA_VERSION,
            id: self.next_id('a'),
            detector_id: self.cfg.detector.id.clone(),
            gateway_id: gateway_id.clone(),
            at_ms: now_ms,
            first_seen_ms: Some(now_ms),
            count: 1,
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
        }
    }

    pub(super) fn verdict(
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
}
