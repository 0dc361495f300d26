//! Scans, sweeps and victim-side SYN floods from the gateways' kernel evidence
//! ([`tad_wire::EvidenceBatch`]: per address and 1 s epoch, what the XDP program
//! counted on every new flow, `fw_common::evidence`), so a scan is judged within one
//! evidence poll (250 ms) instead of when its flows end or idle out (an unanswered
//! probe's flow record comes one idle timeout late).
//!
//! State ([`EvidenceBook`]): per (gateway, address, role) the latest record of each
//! epoch (counts only grow within an epoch, so a newer record of the same epoch
//! replaces the older), epochs older than the longest window dropped. A
//! [`Summary`] ORs the bitmaps of the epochs in a window
//! ([`tad_wire::evidence::bitmap_or`]), estimates the distinct hosts and ports
//! ([`tad_wire::evidence::distinct_estimate`], linear counting) and adds the counts.
//! Windows are measured on the gateway's clock (the batch's `sent_at_ms`), so a
//! skew between gateway and detector clocks does not stretch them.
//!
//! Rules, with the `[portscan]` thresholds and `evidence.unreplied_share` (`s`):
//!
//! `evidence.vertical` is a `port_scan`, `evidence.horizontal` and `evidence.sweep`
//! a `host_sweep` (host count in `observed["targets"]`).
//!
//! | rule id | fires when (over `portscan.window_s`) | blocks |
//! |---|---|---|
//! | `evidence.vertical` | `min(ports, tcp_udp_flows / hosts) >= vertical_ports` and `unreplied / new_flows >= s` | yes |
//! | `evidence.horizontal` | `min(hosts, tcp_udp_flows / ports) >= horizontal_hosts` and `unreplied / new_flows >= s` | yes |
//! | `evidence.sweep` | `min(hosts * icmp / new_flows, icmp) >= sweep_hosts` and `unreplied / new_flows >= s` | yes |
//! | `evidence.synflood` | a destination: `syn >= per_victim_half_open` and distinct sources `>= spoofed_min_sources`, over `synflood.window_s` | no (victim only) |
//!
//! The bitmaps do not pair hosts with ports, so the shape terms bound the
//! per-host port count by the flows per host (and the per-port host count by the
//! flows per port): a peer-to-peer client talking to many hosts, each on its own
//! port, has about one flow per host and per port and is neither. Of several scan
//! rules that fire together the one furthest over its threshold is reported.
//!
//! A destination record carries no answers (the victim's SYN-ACKs are answers in
//! flows the sources opened), so the flood rule cannot tell half-open handshakes
//! from completed ones; it never blocks, and the flow path's `synflood.victim`
//! confirms half-open handshakes when their records arrive.

use std::{collections::BTreeMap, net::IpAddr};

use tad_wire::{
    AlertKind, EpochEvidence, EvidenceEvent, EvidenceRole, NodeId, Severity,
    evidence::{BITMAP_BITS, BITMAP_WORDS, EPOCH_NS, bitmap_or, distinct_estimate},
};

use super::{Detection, map, ms};
use crate::{
    HashMap,
    config::{Config, Evidence, PortScan},
};

/// Length of one kernel epoch, ms.
pub const EPOCH_MS: u64 = EPOCH_NS / 1_000_000;
/// Most epochs kept per address (an hour of 1 s epochs): bounds one address's
/// state whatever the windows are set to.
pub const MAX_EPOCHS: usize = 3_600;

/// Key of one address's evidence: the gateway that counted it, the address, its role.
pub type EvidenceKey = (NodeId, IpAddr, EvidenceRole);

/// The latest record per epoch of one address at one gateway.
#[derive(Clone, Debug, Default)]
pub struct AddrEvidence {
    /// Last record received, detector ms (idle state is dropped by [`EvidenceBook::gc`]).
    pub last_ms: u64,
    /// Epoch start (gateway Unix ms) -> the latest record of that epoch.
    epochs: BTreeMap<u64, EpochEvidence>,
}

impl AddrEvidence {
    /// Keeps `r` as its epoch's latest record (a record of an epoch already held
    /// replaces it: the kernel's counts only grow within an epoch) and drops epochs
    /// that ended before `keep_from_ms` (gateway ms).
    fn insert(&mut self, r: &EpochEvidence, keep_from_ms: u64) {
        self.epochs.insert(r.epoch_start_ms, r.clone());
        self.expire(keep_from_ms);
        while self.epochs.len() > MAX_EPOCHS {
            self.epochs.pop_first();
        }
    }

    fn expire(&mut self, keep_from_ms: u64) {
        while let Some((&start, _)) = self.epochs.first_key_value() {
            if start + EPOCH_MS > keep_from_ms {
                break;
            }
            self.epochs.pop_first();
        }
    }

    /// The epochs that overlap the window `(now_ms - window_ms, now_ms]` (gateway ms).
    pub fn summary(&self, now_ms: u64, window_ms: u64) -> Summary {
        let from = now_ms.saturating_sub(window_ms);
        let mut s = Summary::default();
        let mut hosts = [0u64; BITMAP_WORDS];
        let mut ports = [0u64; BITMAP_WORDS];
        for r in self
            .epochs
            .values()
            .filter(|r| r.epoch_start_ms + EPOCH_MS > from)
        {
            s.epochs += 1;
            bitmap_or(&mut hosts, &r.hosts);
            bitmap_or(&mut ports, &r.ports);
            s.new_flows += r.new_flows as u64;
            s.replies += r.replies as u64;
            s.refused += r.refused as u64;
            s.icmp_errors += r.icmp_errors as u64;
            s.unsolicited_rsts += r.unsolicited_rsts as u64;
            s.syn += r.syn as u64;
            s.tcp_other += r.tcp_other as u64;
            s.udp += r.udp as u64;
            s.icmp += r.icmp as u64;
        }
        s.hosts = distinct_estimate(&hosts);
        s.ports = distinct_estimate(&ports);
        s
    }
}

/// One address's evidence over a window: distinct estimates and sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Epochs in the window that had a record.
    pub epochs: usize,
    /// Distinct peer hosts (destinations of a source, sources of a destination),
    /// linear-counting estimate.
    pub hosts: f64,
    /// Distinct destination ports (TCP and UDP), linear-counting estimate.
    pub ports: f64,
    pub new_flows: u64,
    /// Source only: flows that got a reply (SYN-ACK, UDP, ICMP reply).
    pub replies: u64,
    /// Source only: flows refused (RST).
    pub refused: u64,
    /// Source only: ICMP errors addressed to the source.
    pub icmp_errors: u64,
    /// Source only: RSTs it sent that opened a flow: spoofing evidence (the kernel's
    /// form of the flow path's unsolicited RST, see [`super`]).
    pub unsolicited_rsts: u64,
    pub syn: u64,
    pub tcp_other: u64,
    pub udp: u64,
    pub icmp: u64,
    /// Whether this is an XDP event's own numbers ([`Summary::of_event`]): flows
    /// by kind guessed, refusals and ICMP errors unknown.
    pub from_event: bool,
}

impl Summary {
    /// New flows without a reply (refused, ICMP error or silence).
    pub fn unreplied(&self) -> u64 {
        self.new_flows.saturating_sub(self.replies)
    }

    /// `unreplied / new_flows` (0 without flows).
    pub fn unreplied_share(&self) -> f64 {
        if self.new_flows == 0 {
            0.0
        } else {
            self.unreplied() as f64 / self.new_flows as f64
        }
    }

    /// What an XDP event says on its own (its one to two epochs): set bits become
    /// linear-counting estimates; without kind counts, flows with ports count as
    /// TCP/UDP, and flows of a source with no port bits as ICMP.
    pub fn of_event(e: &EvidenceEvent) -> Summary {
        let tcp_udp = if e.union_ports > 0 {
            e.new_flows as u64
        } else {
            0
        };
        Summary {
            epochs: 1,
            hosts: estimate_of_bits(e.union_hosts),
            ports: estimate_of_bits(e.union_ports),
            new_flows: e.new_flows as u64,
            replies: e.new_flows.saturating_sub(e.unreplied) as u64,
            tcp_other: tcp_udp,
            icmp: if e.union_ports == 0 {
                e.new_flows as u64
            } else {
                0
            },
            from_event: true,
            ..Summary::default()
        }
    }

    /// The observed numbers an alert carries.
    fn observed(&self, first: (&str, f64)) -> BTreeMap<String, f64> {
        let mut m = map(&[
            first,
            ("distinct_hosts", self.hosts.round()),
            ("distinct_ports", self.ports.round()),
            ("new_flows", self.new_flows as f64),
            ("unreplied", self.unreplied() as f64),
            ("unreplied_share", self.unreplied_share()),
            ("refused", self.refused as f64),
            ("icmp_errors", self.icmp_errors as f64),
            ("syn", self.syn as f64),
            ("tcp_other", self.tcp_other as f64),
            ("udp", self.udp as f64),
            ("icmp", self.icmp as f64),
        ]);
        m.insert(first.0.to_string(), first.1);
        m
    }
}

/// The linear-counting estimate of a bitmap with `set` bits set (the kernel's
/// `union_hosts`/`union_ports` are set-bit counts).
pub fn estimate_of_bits(set: u16) -> f64 {
    let mut bits = [0u64; BITMAP_WORDS];
    for b in 0..u32::from(set).min(BITMAP_BITS) {
        bits[(b / 64) as usize] |= 1 << (b % 64);
    }
    distinct_estimate(&bits)
}

/// Every address's evidence, by gateway and role.
#[derive(Default)]
pub struct EvidenceBook {
    pub states: HashMap<EvidenceKey, AddrEvidence>,
    /// Records not kept because the book held [`super::MAX_TRACKED`] entries (or,
    /// for single-flow addresses, half of that; see [`EvidenceBook::insert`]).
    pub state_full: u64,
}

impl EvidenceBook {
    /// Keeps record `r` from `gw`, received at `now_ms` (detector ms), with epochs
    /// older than `keep_ms` before `gw_now_ms` (gateway ms) dropped. Whether it was
    /// kept: a new address with at most one new flow (what each source of a spoofed
    /// flood is) gets state only while the book is below half its bound, any other
    /// new address while it is below [`super::MAX_TRACKED`]; a destination only
    /// for SYNs (its one rule counts them).
    pub fn insert(
        &mut self,
        gw: &NodeId,
        r: &EpochEvidence,
        now_ms: u64,
        gw_now_ms: u64,
        keep_ms: u64,
    ) -> bool {
        let key = (gw.clone(), r.addr, r.role);
        if !self.states.contains_key(&key) {
            let room = if r.new_flows <= 1 {
                super::MAX_TRACKED / 2
            } else {
                super::MAX_TRACKED
            };
            if r.role == EvidenceRole::Destination && r.syn == 0 {
                return false;
            }
            if self.states.len() >= room {
                self.state_full += 1;
                return false;
            }
        }
        let st = self.states.entry(key).or_default();
        st.last_ms = now_ms;
        st.insert(r, gw_now_ms.saturating_sub(keep_ms));
        true
    }

    /// Drops addresses without a record for `idle_ms` (detector ms).
    pub fn gc(&mut self, now_ms: u64, idle_ms: u64) {
        self.states
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
    }
}

/// The longest window the evidence rules look at, ms.
pub fn keep_ms(cfg: &Config) -> u64 {
    ms(cfg.portscan.window_s.max(cfg.synflood.window_s))
}

/// The scan rule `s` (a source's summary over `portscan.window_s`) meets, as a
/// detection naming `src` (no target: the bitmaps do not name hosts), or none.
/// Of several, the one furthest over its threshold.
pub fn scan(ps: &PortScan, ev: &Evidence, src: IpAddr, s: &Summary) -> Option<Detection> {
    if s.new_flows == 0 || s.unreplied_share() < ev.unreplied_share {
        return None;
    }
    let f = s.new_flows as f64;
    let tcp_udp = (s.syn + s.tcp_other + s.udp) as f64;
    let per_host = s.ports.min(tcp_udp / s.hosts.max(1.0));
    let per_port = s.hosts.min(tcp_udp / s.ports.max(1.0));
    let icmp_hosts = (s.hosts * s.icmp as f64 / f).min(s.icmp as f64);
    let candidates = [
        (
            "evidence.vertical",
            "distinct_ports",
            per_host,
            ps.vertical_ports,
        ),
        (
            "evidence.horizontal",
            "distinct_hosts",
            per_port,
            ps.horizontal_hosts,
        ),
        ("evidence.sweep", "icmp_hosts", icmp_hosts, ps.sweep_hosts),
    ];
    let (rule, name, main, limit) = candidates
        .into_iter()
        .filter(|(_, _, v, t)| *v >= *t as f64)
        .max_by(|a, b| (a.2 / a.3 as f64).total_cmp(&(b.2 / b.3 as f64)))?;
    let main = main.round();
    let source = if s.from_event {
        "the XDP program's event (flows by kind guessed)"
    } else {
        "the gateway's kernel evidence"
    };
    let what = match rule {
        "evidence.vertical" => format!(
            "{src} probed about {main} ports ({} hosts)",
            s.hosts.round()
        ),
        "evidence.horizontal" => format!(
            "{src} probed about {main} hosts ({} ports)",
            s.ports.round()
        ),
        _ => format!("{src} sent ICMP requests to about {main} hosts"),
    };
    let mut observed = s.observed((name, main));
    let kind = if rule == "evidence.vertical" {
        AlertKind::PortScan
    } else {
        // One alert for the whole sweep, with its host count.
        observed.insert("targets".to_string(), main);
        AlertKind::HostSweep
    };
    Some(Detection {
        kind,
        rule,
        severity: Severity::High,
        confidence: 0.9,
        source: Some(src),
        target: None,
        window_s: ps.window_s,
        observed,
        thresholds: map(&[
            (name, limit as f64),
            ("unreplied_share", ev.unreplied_share),
        ]),
        main,
        text: format!(
            "{what} in {} s, {} of {} new flows unanswered ({} refused, {} ICMP errors; syn={} tcp_other={} udp={} icmp={}), from {source}",
            ps.window_s,
            s.unreplied(),
            s.new_flows,
            s.refused,
            s.icmp_errors,
            s.syn,
            s.tcp_other,
            s.udp,
            s.icmp
        ),
        flows: Vec::new(),
        may_block: true,
    })
}

/// `evidence.synflood` on `victim` (a destination's summary over
/// `synflood.window_s`): never a source, never a block. The threshold is not
/// scaled by the partition share as the flow path's is: a destination's evidence
/// counts every source and goes whole to the partition of the destination.
pub fn flood(cfg: &Config, victim: IpAddr, s: &Summary) -> Option<Detection> {
    let sf = &cfg.synflood;
    let limit = (sf.per_victim_half_open as f64).max(1.0);
    let syn = s.syn as f64;
    if syn < limit || s.hosts < sf.spoofed_min_sources as f64 {
        return None;
    }
    let sources = s.hosts.round();
    Some(Detection {
        kind: AlertKind::SynFlood,
        rule: "evidence.synflood",
        severity: Severity::High,
        confidence: 0.8,
        source: None,
        target: Some(victim),
        window_s: sf.window_s,
        observed: map(&[
            ("syn", syn),
            ("distinct_sources", sources),
            ("new_flows", s.new_flows as f64),
        ]),
        thresholds: map(&[
            ("syn", limit),
            ("spoofed_min_sources", sf.spoofed_min_sources as f64),
        ]),
        main: syn,
        text: format!(
            "{victim} received {syn} SYNs from about {sources} sources in {} s (gateway kernel evidence): distributed or spoofed flood, left to the in-kernel SYN rate limits; no source is blocked",
            sf.window_s
        ),
        flows: Vec::new(),
        may_block: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch_start_ms: u64, new_flows: u32) -> EpochEvidence {
        EpochEvidence {
            addr: "203.0.113.66".parse().unwrap(),
            role: EvidenceRole::Source,
            epoch_start_ms,
            hosts: [0; 4],
            ports: [0; 4],
            new_flows,
            syn: new_flows,
            tcp_other: 0,
            udp: 0,
            icmp: 0,
            bytes: 0,
            replies: 0,
            refused: 0,
            icmp_errors: 0,
            unsolicited_rsts: 0,
        }
    }

    #[test]
    fn the_latest_record_of_an_epoch_replaces_the_older_and_old_epochs_go() {
        let mut a = AddrEvidence::default();
        a.insert(&rec(10_000, 3), 0);
        a.insert(&rec(10_000, 7), 0);
        a.insert(&rec(11_000, 1), 0);
        assert_eq!(a.summary(12_000, 60_000).new_flows, 8);
        // An epoch that overlaps the window counts; one that ended before it does not.
        assert_eq!(a.summary(12_000, 1_500).new_flows, 8);
        assert_eq!(a.summary(12_000, 1_000).new_flows, 1);
        a.insert(&rec(80_000, 2), 80_000 - 60_000);
        assert_eq!(a.epochs.len(), 1, "epochs older than the kept span dropped");
    }

    #[test]
    fn estimates_of_set_bits_follow_linear_counting() {
        assert_eq!(estimate_of_bits(0), 0.0);
        let e = estimate_of_bits(40);
        assert!((40.0..50.0).contains(&e), "{e}");
        assert!(estimate_of_bits(256) > 1_000.0);
        assert_eq!(estimate_of_bits(300), estimate_of_bits(256));
    }
}
