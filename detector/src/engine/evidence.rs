//! The evidence path: kernel evidence batches, their XDP events (report,
//! provisional quarantine) and the answers to them (confirm or lift).

use std::net::IpAddr;

use fw_common::filter::BlockReason;
use tad_wire::{
    Action, EvidenceBatch, EvidenceEventKind, EvidenceRole, Mode, NodeId, SCHEMA_VERSION, Target,
    Verdict,
};

use super::{Engine, LIFT_CONFIDENCE, Output, RoutedVerdict};
use crate::rules::{self, Detection};

impl Engine {
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
        self.publish_alerts(now_ms, &mut out);
        let full = self.rules.evidence.states.len() >= rules::MAX_TRACKED / 2;
        if now_ms.saturating_sub(self.last_gc_ms) >= if full { 1_000 } else { 10_000 } {
            self.gc(now_ms);
        }
        out
    }

    /// Whether this engine's evidence of source `src` at `gw` has unsolicited RSTs
    /// in the scan window (spoofing evidence, see [`Self::scan_of`]).
    pub(super) fn view_spoofed(&self, gw: &NodeId, src: IpAddr, gw_now_ms: u64) -> bool {
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
    pub(super) fn scan_view(
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
    pub(super) fn scan_of(
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
    pub(super) fn answer_quarantine(
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

    pub(super) fn is_quarantined(&self, src: IpAddr, now_ms: u64) -> bool {
        self.quarantines
            .get(&src)
            .is_some_and(|q| q.until_ms > now_ms)
    }

    pub(super) fn quarantined_by_evidence(&self, src: IpAddr, now_ms: u64) -> bool {
        self.quarantines
            .get(&src)
            .is_some_and(|q| q.until_ms > now_ms && q.by_evidence)
    }

    /// An `evidence.lift` unblock of `src` to `gw`; ends this engine's own
    /// evidence quarantine of it, if any (a quarantine for another reason is never
    /// lifted: callers check).
    pub(super) fn lift(&mut self, gw: &NodeId, src: IpAddr, now_ms: u64, out: &mut Output) {
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
}
