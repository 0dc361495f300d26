//! SYN authentication of flood victims: `ProtectSyn` while a many-source flood
//! goes on (renewed at half its lifetime), `UnprotectSyn` once it has been quiet.

use std::net::IpAddr;

use fw_common::filter::BlockReason;
use tad_wire::{Action, Mode, NodeId, SCHEMA_VERSION, Target, Verdict};

use super::{Engine, Output, RoutedVerdict};

impl Engine {
    /// Records a flood sign for `victim` at `gw`; sends a `ProtectSyn` verdict when
    /// its protection is off or past half its lifetime (renewal).
    pub(super) fn protect_syn(
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
    pub(super) fn end_syn_auth(&mut self, now_ms: u64, out: &mut Output) {
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

    pub(super) fn syn_auth_verdict(
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
}
