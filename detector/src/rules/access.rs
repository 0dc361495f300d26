//! Device access policy (`[access]`, `access.policy`): a TCP or UDP connection to
//! a port the policy of the destination device does not allow, from a source the
//! policy does not exempt. High (and blocking, if the policy says so) when the
//! device answered; medium otherwise. Stateless: one record, one finding at most.

use std::collections::BTreeMap;

use tad_wire::{AlertKind, FlowRecord, Severity};

use super::{Detection, flow_ref, map};
use crate::config::Config;

/// Reports `r` if the first device policy covering `r.dst` does not allow it.
/// A flow whose initiator sent a SYN-ACK (the meter saw the answer first) is
/// skipped, and so is anything but TCP and UDP.
pub(super) fn check(cfg: &Config, r: &FlowRecord, out: &mut Vec<Detection>) {
    if !matches!(r.proto, 6 | 17) || r.fwd.syn_ack > 0 {
        return;
    }
    for p in &cfg.access.devices {
        if !p.prefix.contains(&r.dst)
            || p.allowed_ports.contains(&r.dport)
            || p.allowed_sources.iter().any(|n| n.contains(&r.src))
        {
            continue;
        }
        let answered = if r.proto == 6 {
            r.bwd.syn_ack > 0
        } else {
            r.bwd.packets > 0
        };
        out.push(Detection {
            kind: AlertKind::UnauthorizedAccess,
            rule: "access.policy",
            main: 1.0,
            severity: if answered {
                Severity::High
            } else {
                Severity::Medium
            },
            confidence: if answered { 0.9 } else { 0.6 },
            source: Some(r.src),
            target: Some(r.dst),
            window_s: 0.0,
            observed: map(&[
                ("port", r.dport as f64),
                ("answered", answered as u8 as f64),
            ]),
            thresholds: BTreeMap::new(),
            text: format!(
                "{} connected to {}:{} ({}), which the policy for {} does not allow{}",
                r.src,
                r.dst,
                r.dport,
                if r.proto == 6 { "tcp" } else { "udp" },
                p.prefix,
                if answered {
                    " and the device answered"
                } else {
                    ""
                }
            ),
            flows: vec![flow_ref(r)],
            may_block: answered && p.block,
        });
        return;
    }
}
