//! SYN floods (`[synflood]`): half-open handshakes ([`classify::half_open`]) in
//! `synflood.window_s`, counted per source and victim (`synflood.source`, blocks; or
//! `synflood.spoofed` on the victim when the source shows spoofing evidence) and
//! per victim (`synflood.victim`, from any source, never blocks: a distributed or
//! spoofed flood is left to the in-kernel SYN rate limits).

use std::net::IpAddr;

use tad_wire::{AlertKind, FlowRecord, Severity};

use super::{Detection, Gate, Recent, Rules, Seen, map, ms, slot};
use crate::{
    classify,
    config::{Config, SynFlood},
    window::Distinct,
};

/// Per-victim SYN-flood state.
pub struct VictimState {
    /// Last half-open handshake to this victim, ms.
    pub last_ms: u64,
    /// Half-open handshakes, by source.
    half_open: Distinct<IpAddr>,
    recent: Recent,
}

/// Counts one half-open handshake of the source into `half_open` (by victim) and
/// reports `synflood.source` (or `synflood.spoofed`) once there are
/// `per_source_half_open` to the record's destination in the window. Half-open
/// handshakes spread over many hosts, one or two each, are a SYN ping sweep or
/// scan (the scan rules' `host_sweep`), not a flood of any of them.
pub(super) fn source(
    half_open: &mut Distinct<IpAddr>,
    sf: &SynFlood,
    seen: &Seen,
    out: &mut Vec<Detection>,
) {
    let (r, now_ms, spoofed) = (seen.r, seen.now_ms, seen.spoofed);
    half_open.evict(now_ms, ms(sf.window_s));
    half_open.insert(now_ms, r.dst);
    let n = half_open.count(&r.dst) as f64;
    let rule = if spoofed {
        "synflood.spoofed"
    } else {
        "synflood.source"
    };
    if n < sf.per_source_half_open as f64 || !seen.gate.open(rule, seen.source(), Some(r.dst), n) {
        return;
    }
    let observed = map(&[
        ("half_open", n),
        ("half_open_all_targets", half_open.len() as f64),
        ("distinct_targets", half_open.distinct() as f64),
    ]);
    let thresholds = map(&[("half_open", sf.per_source_half_open as f64)]);
    let d = if spoofed {
        Detection {
            kind: AlertKind::SynFlood,
            rule: "synflood.spoofed",
            severity: Severity::High,
            confidence: 0.9,
            source: None,
            target: Some(r.dst),
            window_s: sf.window_s,
            observed,
            thresholds,
            main: n,
            text: format!(
                "{n} half-open handshakes to {} in {} s carry the address of {}, which shows spoofing evidence: not blocked",
                r.dst, sf.window_s, r.src
            ),
            flows: seen.recent.list(),
            may_block: false,
        }
    } else {
        Detection {
            kind: AlertKind::SynFlood,
            rule: "synflood.source",
            severity: Severity::High,
            confidence: 0.9,
            source: Some(r.src),
            target: Some(r.dst),
            window_s: sf.window_s,
            observed,
            thresholds,
            main: n,
            text: format!(
                "{} left {n} handshakes half-open in {} s",
                r.src, sf.window_s
            ),
            flows: seen.recent.list(),
            may_block: true,
        }
    };
    out.push(d);
}

impl Rules {
    /// The victim side: counts a half-open handshake to `r.dst` and reports
    /// `synflood.victim` at `per_victim_half_open` scaled by `share` (this
    /// instance's share of the partitions, at least 1).
    pub(super) fn victim(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        share: f64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        if !classify::half_open(r) {
            return;
        }
        let sf = &cfg.synflood;
        let limit = (sf.per_victim_half_open as f64 * share).ceil().max(1.0);
        let Some(v) = slot(&mut self.victims, &mut self.state_full, r.dst, || {
            VictimState {
                last_ms: now_ms,
                half_open: Distinct::new(1 << 16),
                recent: Recent::default(),
            }
        }) else {
            return;
        };
        v.last_ms = now_ms;
        v.recent.push(r);
        v.half_open.evict(now_ms, ms(sf.window_s));
        v.half_open.insert(now_ms, r.src);
        let n = v.half_open.len() as f64;
        if n >= limit && gate.open("synflood.victim", None, Some(r.dst), n) {
            let sources = v.half_open.distinct() as f64;
            let spoofed = sources >= sf.spoofed_min_sources as f64;
            out.push(Detection {
                main: n,
                kind: AlertKind::SynFlood,
                rule: "synflood.victim",
                severity: Severity::High,
                confidence: 0.8,
                source: None,
                target: Some(r.dst),
                window_s: sf.window_s,
                observed: map(&[("half_open", n), ("distinct_sources", sources)]),
                thresholds: map(&[
                    ("half_open", limit),
                    ("spoofed_min_sources", sf.spoofed_min_sources as f64),
                ]),
                text: if spoofed {
                    format!(
                        "{} received {n} half-open handshakes from {sources} sources in {} s: distributed or spoofed flood, left to the in-kernel SYN rate limits",
                        r.dst, sf.window_s
                    )
                } else {
                    format!(
                        "{} received {n} half-open handshakes from {sources} sources in {} s",
                        r.dst, sf.window_s
                    )
                },
                flows: v.recent.list(),
                may_block: false,
            });
        }
    }
}
