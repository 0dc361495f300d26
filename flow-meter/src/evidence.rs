//! The XDP program's step 6 in userspace: per-address evidence, report events and
//! the provisional quarantine (`fw-ebpf/src/main.rs`: `count_opening`,
//! `answer_to`, `quarantine`, `emit`), so that `eval` on captures sees the
//! evidence, the events and the quarantine drops the live gateway would.
//!
//! [`Evidence`] holds what the kernel keeps in its maps: the two direct-mapped
//! tables of [`EVIDENCE_SLOTS`] [`EvidenceSlot`]s (`EVIDENCE_SRC`, `EVIDENCE_DST`,
//! indexed by [`slot_index`]), the provisional quarantine entries the program puts
//! in `BLOCK_HOST_V4/V6` (origin [`ORIGIN_DATAPATH`], flag
//! [`BLOCK_FLAG_NEW_FLOWS_ONLY`]) and the [`EvidenceEvent`]s of the `EVENTS` ring
//! buffer. It calls the `fw_common::evidence` functions in the program's order;
//! the clock is the packet's capture time (Unix ns), so an epoch is
//! [`epoch_of`]`(ts_ns)`. [`crate::meter::Meter`] drives it packet by packet;
//! `fw-ctl/tests/meter_equivalence.rs` checks it against the kernel.
//!
//! For the bus, [`EvidenceTracker`] turns a table into the
//! [`tad_wire::EpochEvidence`] records that changed since its previous call (what
//! a gateway polling its maps publishes), and [`epoch_evidence`] / [`wire_event`]
//! convert one slot or event; they take the offset between the clock of the slots
//! and Unix time, so the gateway daemon can use them on the kernel's maps too.

use std::{collections::HashMap, net::IpAddr};

use fw_common::{
    config::{
        DEFAULT_QUARANTINE_DISTINCT, DEFAULT_QUARANTINE_TTL_MS, DEFAULT_REPORT_DISTINCT,
        GatewayConfig, MODE_ENFORCE, MODE_OBSERVE,
    },
    evidence::{
        AfterOpening, Answer, EPOCH_NS, EVENT_QUARANTINE, EVENT_REPORT, EVIDENCE_SLOTS,
        EpochCounts, EvidenceEvent, EvidenceSlot, First, decide_after_opening, epoch_of,
        first_packet, slot_index,
    },
    filter::{BLOCK_FLAG_NEW_FLOWS_ONLY, BlockEntry, BlockReason, ORIGIN_DATAPATH},
};
use tad_wire::{EpochEvidence, EvidenceEventKind, EvidenceRole, addr_from_map, addr_to_map};

use crate::parse::ParsedPacket;

/// The gateway settings the evidence step depends on (`GatewayConfig`'s fields of
/// the same names; see there for the rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceOptions {
    /// Observe (IDS) mode: a provisionally quarantined source's new flows are
    /// counted as would-drop and pass (and go on counting evidence); otherwise
    /// (enforce) they are dropped and open no flow.
    pub observe: bool,
    /// Provisional quarantine threshold, set bits and unreplied new flows; 0 = off.
    pub quarantine_distinct: u32,
    /// Lifetime of a provisional quarantine entry, ms (0 is read as 1 s).
    pub quarantine_ttl_ms: u32,
    /// Report-event threshold, set bits; 0 = no report events.
    pub report_distinct: u32,
    /// Whether [`crate::meter::Meter`] collects [`EpochEvidence`] records at its
    /// export passes ([`crate::meter::Meter::take_evidence`]); off by default, so a
    /// caller that never drains them does not accumulate them.
    /// [`crate::meter::for_each_output`] turns it on.
    pub export_records: bool,
}

impl Default for EvidenceOptions {
    /// The gateway daemon's defaults: enforce mode, `DEFAULT_QUARANTINE_DISTINCT`
    /// (48), `DEFAULT_QUARANTINE_TTL_MS` (30,000 ms), `DEFAULT_REPORT_DISTINCT` (16).
    fn default() -> Self {
        EvidenceOptions {
            observe: false,
            quarantine_distinct: DEFAULT_QUARANTINE_DISTINCT,
            quarantine_ttl_ms: DEFAULT_QUARANTINE_TTL_MS,
            report_distinct: DEFAULT_REPORT_DISTINCT,
            export_records: false,
        }
    }
}

impl EvidenceOptions {
    /// Evidence counted, but no provisional quarantine and no report events (what an
    /// all-zero `GatewayConfig` does).
    pub fn off() -> Self {
        EvidenceOptions {
            quarantine_distinct: 0,
            report_distinct: 0,
            ..EvidenceOptions::default()
        }
    }

    /// The settings of a gateway configuration (mode and the three budgets).
    pub fn from_config(cfg: &GatewayConfig) -> Self {
        EvidenceOptions {
            observe: cfg.observe(),
            quarantine_distinct: cfg.quarantine_distinct,
            quarantine_ttl_ms: cfg.quarantine_ttl_ms,
            report_distinct: cfg.report_distinct,
            export_records: false,
        }
    }

    /// As a `GatewayConfig` (other fields zero), whose `budgets()` and
    /// `quarantine_ttl_ns()` the meter uses, as the program does.
    pub fn to_config(&self) -> GatewayConfig {
        GatewayConfig {
            mode: if self.observe {
                MODE_OBSERVE
            } else {
                MODE_ENFORCE
            },
            quarantine_distinct: self.quarantine_distinct,
            quarantine_ttl_ms: self.quarantine_ttl_ms,
            report_distinct: self.report_distinct,
            ..GatewayConfig::default()
        }
    }
}

/// An allowlist prefix with a length beyond its family's address size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowlist prefix {addr}/{len}: the length must be at most {max} for this family")]
pub struct PrefixError {
    pub addr: IpAddr,
    pub len: u8,
    pub max: u8,
}

/// One allowlist prefix, in the map encoding.
#[derive(Clone, Copy, Debug)]
struct Prefix {
    addr: [u8; 16],
    family: u8,
    /// Bits to compare in the 16-byte encoding (IPv4: 96 + length).
    bits: u32,
}

impl Prefix {
    fn contains(&self, addr: &[u8; 16], family: u8) -> bool {
        if family != self.family {
            return false;
        }
        let full = (self.bits / 8) as usize;
        if self.addr[..full] != addr[..full] {
            return false;
        }
        let rest = self.bits % 8;
        rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            self.addr[full] & mask == addr[full] & mask
        }
    }
}

/// The evidence maps, quarantine entries and events of one meter (see the module
/// docs). Memory: two tables of 4,096 × 232 bytes, plus the export bookkeeping.
pub struct Evidence {
    cfg: GatewayConfig,
    src: Vec<EvidenceSlot>,
    dst: Vec<EvidenceSlot>,
    /// Provisional quarantine entries by source (map encoding), expiry on the
    /// capture clock (Unix ns).
    quarantine: HashMap<[u8; 16], BlockEntry>,
    allow: Vec<Prefix>,
    events: Vec<EvidenceEvent>,
    /// Events already handed to [`Evidence::export`].
    events_exported: usize,
    src_tracker: EvidenceTracker,
    dst_tracker: EvidenceTracker,
}

/// What the filtering steps say about a packet before flow accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// The source is on the allowlist: pass, no evidence.
    Allowed,
    /// The source has a provisional quarantine entry in force.
    Quarantined,
    /// Nothing matched.
    NoMatch,
}

impl Evidence {
    /// Empty tables.
    pub fn new(opts: &EvidenceOptions) -> Self {
        Evidence {
            cfg: opts.to_config(),
            src: vec![EvidenceSlot::default(); EVIDENCE_SLOTS as usize],
            dst: vec![EvidenceSlot::default(); EVIDENCE_SLOTS as usize],
            quarantine: HashMap::new(),
            allow: Vec::new(),
            events: Vec::new(),
            events_exported: 0,
            src_tracker: EvidenceTracker::new(EvidenceRole::Source),
            dst_tracker: EvidenceTracker::new(EvidenceRole::Destination),
        }
    }

    /// Adds an allowlist prefix (`ALLOW_V4`/`ALLOW_V6`): its sources pass and count
    /// no evidence, neither their openings nor their answers. An IPv4 prefix matches
    /// IPv4 packets only, an IPv6 one IPv6 packets only, as the program's two tries.
    /// Errors: a length over 32 (IPv4) or 128 (IPv6).
    pub fn allow(&mut self, addr: IpAddr, len: u8) -> Result<(), PrefixError> {
        let (max, extra) = if addr.is_ipv4() { (32, 96) } else { (128, 0) };
        if len > max {
            return Err(PrefixError { addr, len, max });
        }
        let (bytes, family) = addr_to_map(addr);
        self.allow.push(Prefix {
            addr: bytes,
            family,
            bits: extra + len as u32,
        });
        Ok(())
    }

    /// Source slots (`EVIDENCE_SRC`), [`EVIDENCE_SLOTS`] of them, index [`slot_index`].
    pub fn src(&self) -> &[EvidenceSlot] {
        &self.src
    }

    /// Destination slots (`EVIDENCE_DST`), same layout.
    pub fn dst(&self) -> &[EvidenceSlot] {
        &self.dst
    }

    /// Every event raised so far, in order (`at_ns` on the capture clock).
    pub fn events(&self) -> &[EvidenceEvent] {
        &self.events
    }

    /// The provisional quarantine entries, as the program writes them into
    /// `BLOCK_HOST_V4/V6` (expired ones included until the next export pass removes
    /// them), sorted by address (map encoding).
    pub fn quarantines(&self) -> Vec<([u8; 16], BlockEntry)> {
        let mut v: Vec<_> = self.quarantine.iter().map(|(a, e)| (*a, *e)).collect();
        v.sort_unstable_by_key(|(a, _)| *a);
        v
    }

    /// The program's steps 2-3 as far as the meter models them: the allowlist,
    /// then a provisional quarantine entry in force at `now_ns`.
    pub(crate) fn filter(&self, p: &ParsedPacket, now_ns: u64) -> Filter {
        if self.allow.iter().any(|a| a.contains(&p.src, p.family)) {
            return Filter::Allowed;
        }
        match self.quarantine.get(&p.src) {
            Some(b) if b.active(now_ns) && b.new_flows_only() => Filter::Quarantined,
            _ => Filter::NoMatch,
        }
    }

    /// Counts a quarantined source's packet that would open a new flow in its
    /// entry's `hits`.
    pub(crate) fn hit(&mut self, src: &[u8; 16]) {
        if let Some(b) = self.quarantine.get_mut(src) {
            b.hits += 1;
        }
    }

    /// Whether the meter runs in observe mode.
    pub(crate) fn observe(&self) -> bool {
        self.cfg.observe()
    }

    /// The program's `count_opening`, for a packet that opened a flow at `now_ns`.
    /// `evidence`: the sender is not allowlisted (an ICMP error counts either way).
    pub(crate) fn count_opening(&mut self, p: &ParsedPacket, now_ns: u64, evidence: bool) {
        let m = &p.meta;
        let epoch = epoch_of(now_ns);
        let o = match first_packet(
            p.proto,
            m.is_tcp,
            m.tcp_flags,
            m.icmp,
            p.sport,
            p.dport,
            m.ip_len,
        ) {
            First::Opens(o) => o,
            First::Answers(a) => {
                // An ICMP error or a SYN-ACK answers a flow its receiver opened.
                self.answer_to(&p.dst, a);
                return;
            }
            First::Resets => {
                self.answer_to(&p.dst, Answer::Refused);
                let s = &mut self.src[slot_index(&p.src) as usize];
                if evidence && s.claim(&p.src, p.family, epoch) {
                    s.count_unsolicited_rst();
                }
                return;
            }
        };
        if !evidence {
            return;
        }
        let d = &mut self.dst[slot_index(&p.dst) as usize];
        if d.claim(&p.dst, p.family, epoch) {
            d.count_opening(&p.src, &o);
        }
        let s = &mut self.src[slot_index(&p.src) as usize];
        if !s.claim(&p.src, p.family, epoch) {
            return;
        }
        s.count_opening(&p.dst, &o);
        match decide_after_opening(s, &self.cfg.budgets()) {
            AfterOpening::Nothing => {}
            AfterOpening::Report => self.events.push(s.event(EVENT_REPORT, now_ns)),
            AfterOpening::Quarantine => {
                let event = s.event(EVENT_QUARANTINE, now_ns);
                if self.quarantine(&p.src, now_ns) {
                    self.events.push(event);
                }
            }
        }
    }

    /// The program's `answer_to`: counts an answer in `to`'s source slot when `to`
    /// holds it.
    pub(crate) fn answer_to(&mut self, to: &[u8; 16], a: Answer) {
        let s = &mut self.src[slot_index(to) as usize];
        if s.owned_by(to) {
            s.count_answer(a);
        }
    }

    /// The program's `quarantine`: a new entry unless one is in force; whether it
    /// made one.
    fn quarantine(&mut self, src: &[u8; 16], now_ns: u64) -> bool {
        if self.quarantine.get(src).is_some_and(|b| b.active(now_ns)) {
            return false;
        }
        self.quarantine.insert(
            *src,
            BlockEntry {
                expires_ns: now_ns + self.cfg.quarantine_ttl_ns(),
                hits: 0,
                rule_id: 0,
                reason: BlockReason::Quarantine as u8,
                origin: ORIGIN_DATAPATH,
                flags: BLOCK_FLAG_NEW_FLOWS_ONLY,
                lpm_tag: 0,
            },
        );
        true
    }

    /// Removes the quarantine entries expired at `now_ns` (the daemon's expiry
    /// sweep; an expired entry acts as absent either way).
    pub(crate) fn prune(&mut self, now_ns: u64) {
        self.quarantine.retain(|_, b| b.active(now_ns));
    }

    /// One poll of the tables at `now_ns`: the records that changed since the
    /// previous call and the events raised since then (wire form, Unix time), and
    /// expired quarantine entries removed (the daemon's expiry sweep).
    pub(crate) fn export(
        &mut self,
        now_ns: u64,
    ) -> (Vec<EpochEvidence>, Vec<tad_wire::EvidenceEvent>) {
        self.prune(now_ns);
        let mut records = self.src_tracker.changes(&self.src, 0);
        records.extend(self.dst_tracker.changes(&self.dst, 0));
        let events = self.events[self.events_exported..]
            .iter()
            .filter_map(|e| wire_event(e, 0))
            .collect();
        self.events_exported = self.events.len();
        (records, events)
    }
}

/// Start of epoch `epoch` (see `fw_common::evidence::epoch_of`) in Unix ms, for
/// slots whose clock is `unix_offset_ns` behind Unix time.
pub fn epoch_start_ms(epoch: u32, unix_offset_ns: i128) -> u64 {
    let ns = (epoch.saturating_sub(1) as i128) * EPOCH_NS as i128 + unix_offset_ns;
    (ns.max(0) / 1_000_000) as u64
}

/// One slot's counts of one epoch (`slot.cur` at `slot.epoch`, or `slot.prev` at
/// `slot.epoch - 1`) as a bus record. `unix_offset_ns`: Unix time minus the slots'
/// clock (0 for the meter; CLOCK_REALTIME - CLOCK_MONOTONIC for the kernel's maps).
pub fn epoch_evidence(
    slot: &EvidenceSlot,
    role: EvidenceRole,
    counts: &EpochCounts,
    epoch: u32,
    unix_offset_ns: i128,
) -> EpochEvidence {
    record_of(
        addr_from_map(slot.addr, slot.family),
        role,
        counts,
        epoch,
        unix_offset_ns,
    )
}

/// The bus record of `addr`'s `counts` in kernel epoch `epoch`: the one conversion
/// the meter and the gateway daemon share, so eval on captures and the live path
/// publish the same records.
pub fn record_of(
    addr: IpAddr,
    role: EvidenceRole,
    counts: &EpochCounts,
    epoch: u32,
    unix_offset_ns: i128,
) -> EpochEvidence {
    EpochEvidence {
        addr,
        role,
        epoch_start_ms: epoch_start_ms(epoch, unix_offset_ns),
        hosts: counts.hosts,
        ports: counts.ports,
        new_flows: counts.new_flows,
        syn: counts.syn,
        tcp_other: counts.tcp_other,
        udp: counts.udp,
        icmp: counts.icmp as u32,
        bytes: counts.bytes as u64,
        replies: counts.replies as u32,
        refused: counts.refused as u32,
        icmp_errors: counts.icmp_errors as u32,
        unsolicited_rsts: counts.unsolicited_rsts as u32,
    }
}

/// An event in bus form; `unix_offset_ns` as in [`epoch_evidence`]. Kinds other than
/// `EVENT_REPORT` / `EVENT_QUARANTINE` give `None`.
pub fn wire_event(e: &EvidenceEvent, unix_offset_ns: i128) -> Option<tad_wire::EvidenceEvent> {
    let kind = match e.kind {
        EVENT_REPORT => EvidenceEventKind::Report,
        EVENT_QUARANTINE => EvidenceEventKind::Quarantine,
        _ => return None,
    };
    Some(tad_wire::EvidenceEvent {
        kind,
        addr: addr_from_map(e.addr, e.family),
        at_ms: ((e.at_ns as i128 + unix_offset_ns).max(0) / 1_000_000) as u64,
        union_hosts: e.union_hosts,
        union_ports: e.union_ports,
        new_flows: e.new_flows,
        unreplied: e.unreplied,
    })
}

/// What a tracker last published for one slot.
#[derive(Clone, Copy, Default)]
struct Seen {
    addr: [u8; 16],
    /// 0 = nothing published.
    epoch: u32,
    counts: EpochCounts,
}

/// Turns successive readings of one evidence table into the [`EpochEvidence`]
/// records that changed in between, as a gateway polling its maps publishes them
/// (`EvidenceBatch::records`: counts only grow within an epoch, a receiver keeps
/// the latest record per address and epoch).
///
/// Per slot and call: when the owner and epoch are the ones of the previous call,
/// `cur` if its counts changed; when the slot rolled on by one epoch since, first
/// the final `prev` (if it changed since it was last published as `cur`), then
/// `cur`; a new owner, or a gap of epochs, gives `prev` and `cur` when not empty.
/// What a slot counted and lost to a new owner between two calls is lost, as it is
/// for the daemon.
pub struct EvidenceTracker {
    role: EvidenceRole,
    seen: Vec<Seen>,
}

impl EvidenceTracker {
    /// A tracker for a table of `role`; every slot unpublished.
    pub fn new(role: EvidenceRole) -> Self {
        EvidenceTracker {
            role,
            seen: vec![Seen::default(); EVIDENCE_SLOTS as usize],
        }
    }

    /// The records of `slots` (a whole table, [`EVIDENCE_SLOTS`] long; a shorter
    /// one is read as far as it goes) that changed since the previous call, in slot
    /// order; `unix_offset_ns` as in [`epoch_evidence`].
    pub fn changes(&mut self, slots: &[EvidenceSlot], unix_offset_ns: i128) -> Vec<EpochEvidence> {
        let empty = EpochCounts::default();
        let mut out = Vec::new();
        for (slot, seen) in slots.iter().zip(self.seen.iter_mut()) {
            if slot.epoch == 0 {
                continue;
            }
            let mut push = |counts: &EpochCounts, epoch: u32| {
                out.push(epoch_evidence(
                    slot,
                    self.role,
                    counts,
                    epoch,
                    unix_offset_ns,
                ))
            };
            let same_owner = seen.epoch != 0 && seen.addr == slot.addr;
            if same_owner && seen.epoch == slot.epoch {
                if seen.counts != slot.cur {
                    push(&slot.cur, slot.epoch);
                }
            } else if same_owner && seen.epoch + 1 == slot.epoch {
                if seen.counts != slot.prev {
                    push(&slot.prev, seen.epoch);
                }
                if slot.cur != empty {
                    push(&slot.cur, slot.epoch);
                }
            } else {
                if slot.prev != empty {
                    push(&slot.prev, slot.epoch.saturating_sub(1));
                }
                if slot.cur != empty {
                    push(&slot.cur, slot.epoch);
                }
            }
            *seen = Seen {
                addr: slot.addr,
                epoch: slot.epoch,
                counts: slot.cur,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use fw_common::flow::{FAMILY_V4, FAMILY_V6, PacketMeta, tcp_flags, v4_mapped};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn syn(src: [u8; 4], dst: [u8; 4], dport: u16) -> ParsedPacket {
        ParsedPacket {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport: 40000,
            dport,
            proto: 6,
            family: FAMILY_V4,
            vlan_id: 0,
            meta: PacketMeta {
                ip_len: 40,
                tcp_flags: tcp_flags::SYN,
                is_tcp: true,
                icmp: None,
            },
        }
    }

    #[test]
    fn allowlist_prefixes_match_their_family_and_length() {
        let mut e = Evidence::new(&EvidenceOptions::default());
        e.allow("198.51.100.0".parse().unwrap(), 24).unwrap();
        e.allow("2001:db8::".parse().unwrap(), 33).unwrap();
        let err = e.allow("192.0.2.1".parse().unwrap(), 33).unwrap_err();
        assert_eq!(err.max, 32);
        let mut p = syn([198, 51, 100, 200], [192, 0, 2, 1], 80);
        assert_eq!(e.filter(&p, S), Filter::Allowed);
        p.src = v4_mapped([198, 51, 101, 1]);
        assert_eq!(e.filter(&p, S), Filter::NoMatch);
        p.family = FAMILY_V6;
        p.src = "2001:db8:7fff::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(e.filter(&p, S), Filter::Allowed);
        p.src = "2001:db8:8000::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(e.filter(&p, S), Filter::NoMatch);
    }

    #[test]
    fn tracker_publishes_changes_and_the_final_count_of_a_rolled_epoch() {
        let mut e = Evidence::new(&EvidenceOptions::off());
        let scanner = [198, 51, 100, 7];
        let t0 = 1_700_000_000 * S;
        e.count_opening(&syn(scanner, [192, 0, 2, 1], 22), t0, true);
        let (first, _) = e.export(t0);
        // The scanner's source record and the target's destination record.
        assert_eq!(first.len(), 2);
        assert_eq!(
            first[0].addr,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            "{first:?}"
        );
        assert_eq!(first[0].epoch_start_ms, t0 / 1_000_000);
        // Nothing new: nothing published.
        assert!(e.export(t0 + 1).0.is_empty());
        // One more probe in the same epoch, then one in the next: the first epoch's
        // final count (2) is published before the new epoch's.
        e.count_opening(&syn(scanner, [192, 0, 2, 1], 23), t0 + S / 2, true);
        e.count_opening(&syn(scanner, [192, 0, 2, 1], 24), t0 + S, true);
        let (rec, _) = e.export(t0 + S);
        let src: Vec<_> = rec
            .iter()
            .filter(|r| r.role == EvidenceRole::Source)
            .map(|r| (r.epoch_start_ms, r.new_flows))
            .collect();
        assert_eq!(
            src,
            vec![(t0 / 1_000_000, 2), ((t0 + S) / 1_000_000, 1)],
            "{rec:?}"
        );
    }

    #[test]
    fn crossing_the_budget_quarantines_once_and_reports_in_wire_form() {
        let mut e = Evidence::new(&EvidenceOptions::default());
        let t0 = 1_700_000_000 * S;
        let scanner = [198, 51, 100, 7];
        for port in 1..=200u16 {
            let p = syn(scanner, [192, 0, 2, 1], port);
            if e.filter(&p, t0) == Filter::Quarantined {
                break;
            }
            e.count_opening(&p, t0, true);
        }
        let q = e.quarantines();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].0, v4_mapped(scanner));
        assert_eq!(q[0].1.expires_ns, t0 + 30 * S);
        let kinds: Vec<u8> = e.events().iter().map(|ev| ev.kind).collect();
        assert_eq!(kinds, vec![EVENT_REPORT, EVENT_QUARANTINE]);
        let (_, events) = e.export(t0);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EvidenceEventKind::Quarantine);
        assert!(events[1].union_ports >= 48 && events[1].unreplied >= 48);
        // The export pass after expiry removes the entry.
        e.export(t0 + 30 * S);
        assert!(e.quarantines().is_empty());
    }
}
