//! Pcap flow meter: turns a capture (pcap or pcapng) into the flow records the
//! gateway daemon would export for the same traffic, stamped with the capture time
//! at which each record would have left the gateway.
//!
//! Used for training the detector's model (`detector features`), for replaying
//! captures through the detector in tests (`detector replay-pcap`), and as the
//! reference the eval harness compares against.
//!
//! This module holds the flow table and its export clock; the pieces before it
//! live next door and are re-exported here (the paths other crates use):
//! [`crate::capture`] reads the file ([`for_each_frame`], [`MeterError`]),
//! [`crate::parse`] turns a frame into a [`ParsedPacket`] ([`parse_frame`],
//! [`LinkType`]) with the XDP program's header rules (`fw_common::proto`).
//!
//! # What it does per packet
//! [`parse_frame`] (frames it rejects are skipped and counted), then
//! [`FlowKey::new`] and [`FlowStats::account`]: the same key and accounting code
//! the XDP program runs. A flow enters the table on its second packet
//! (`fw_common::admission`, mirrored in [`crate::pending`]); a one-packet flow
//! becomes a record at the first export pass after its idle timeout, as the
//! daemon exports the kernel's pending array ([`MeterOptions::admit_first_packet`]
//! restores insertion on the first packet).
//!
//! # Export passes
//! Like the daemon, the meter walks its flow table every `poll` interval (default
//! 250 ms) of *capture* time, starting at the first packet, and calls
//! [`export::expiry`]: due flows become records ([`export::to_record`], delta counts
//! after an active-timeout export via [`export::delta_since`]). Passes due before a
//! packet run before that packet is accounted. At the end of the capture every
//! remaining flow is flushed with [`EndReason::ForcedEnd`] at the last packet's time.
//! While the flow table is empty the pass grid jumps ahead to the next packet, so a
//! capture spanning years (merged captures) costs nothing extra.
//!
//! Timestamps: the flow statistics use the capture's Unix time in ns directly (the
//! kernel's monotonic clock in the daemon), so `unix_offset_ns` is 0 and
//! [`FlowRecord::start_ms`] is the capture time of the flow's first packet.
//!
//! # Evidence and the provisional quarantine
//! Each packet then goes through the XDP program's step 6 ([`crate::evidence`],
//! settings in [`MeterOptions::evidence`], by default the gateway daemon's), in
//! the program's order (`fw-ebpf/src/main.rs`, `try_fw`):
//! 1. a source on the meter's allowlist ([`Meter::allow`]) passes
//!    (`PassAllowlist`) and counts no evidence;
//! 2. a source with a provisional quarantine entry in force: a packet of a flow
//!    already in the table passes (`PassNoMatch`); one that would open a flow
//!    counts in the entry's `hits` and is dropped (`DropQuarantine`: it opens no
//!    flow, counts no evidence and is in no record) or, in observe mode, counted
//!    `WouldDropQuarantine` and metered like any other;
//! 3. flow accounting; a responder's first packet counts an answer in its
//!    receiver's source slot, a packet that opened a flow counts in the evidence
//!    tables (`count_opening`), which may raise a report event or quarantine the
//!    sender.
//!
//! [`Meter::frame`] returns the counter slot the program would count the packet
//! in, and [`MeterStats::by_slot`] sums them. Not modelled: blocklist entries
//! other than the meter's own quarantines, the token-bucket rate limits, the
//! flow map's LRU eviction, and the kernel's per-CPU flow copies (the meter is
//! one CPU). With `evidence.export_records` (what [`for_each_output`] sets), every
//! export pass also reads the evidence tables like the daemon's poll
//! ([`crate::evidence::EvidenceTracker`]) and a packet that raised an event
//! triggers one at once (the ring buffer's wake-up); the results wait in
//! [`Meter::take_evidence`] as [`TimedEvidence`].

use std::{collections::HashMap, net::IpAddr, path::Path, time::Duration};

use fw_common::{
    admission::PendingFlow,
    counters::{COUNTER_SLOTS, CounterSlot, Reason, Verdict},
    evidence::{Answer, answer_on_flow, inferred_reply},
    flow::{FlowKey, FlowStats},
};
use tad_wire::{EndReason, EpochEvidence, EvidenceEvent, FlowRecord};

pub use crate::{
    capture::{CapturedFrame, MeterError, for_each_frame},
    evidence::{Evidence, EvidenceOptions, PrefixError},
    parse::{LinkType, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, ParsedPacket, parse_frame},
};
use crate::{
    evidence::Filter,
    export::{self, Timeouts},
    pending::{Pended, PendingTable},
};

/// Meter settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterOptions {
    /// Export timeouts (the daemon's defaults unless changed).
    pub timeouts: Timeouts,
    /// Interval between export passes, capture time (default 250 ms); evidence
    /// records are read at the same passes.
    pub poll: Duration,
    /// Evidence, report events and provisional quarantine settings (default: the
    /// gateway daemon's; [`EvidenceOptions::off`] for no quarantine and no events).
    pub evidence: EvidenceOptions,
    /// Insert flows on their first packet (the XDP program's
    /// `FLAG_ADMIT_FIRST_PACKET`) instead of admitting them on their second.
    pub admit_first_packet: bool,
}

impl Default for MeterOptions {
    fn default() -> Self {
        MeterOptions {
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(250),
            evidence: EvidenceOptions::default(),
            admit_first_packet: false,
        }
    }
}

/// One exported record and the capture time of the export pass that emitted it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedRecord {
    /// Capture time of the export pass (Unix time, ns).
    pub at_ns: u64,
    /// The record as the daemon would publish it.
    pub record: FlowRecord,
}

/// Evidence the meter read at one export pass, or at once after a packet that
/// raised an event (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TimedEvidence {
    /// Capture time of the reading (Unix ns).
    pub at_ns: u64,
    /// Records whose counts changed since the previous reading
    /// ([`crate::evidence::EvidenceTracker`]), source table first.
    pub records: Vec<EpochEvidence>,
    /// Events raised since the previous reading, in order.
    pub events: Vec<EvidenceEvent>,
}

/// Counts of what the meter saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterStats {
    /// Frames read from the capture.
    pub frames: u64,
    /// Frames accounted to a flow (IPv4/IPv6).
    pub accounted: u64,
    /// Frames skipped: not IP (ARP, LLDP...), unknown link type, or too short.
    pub skipped: u64,
    /// Records emitted.
    pub records: u64,
    /// IP frames dropped (a provisionally quarantined source's new flows, enforce
    /// mode): neither accounted nor metered.
    pub dropped: u64,
    /// IP frames per counter slot the XDP program would count them in, indexed by
    /// `CounterSlot as usize` (only `PassNoMatch`, `PassAllowlist`,
    /// `DropQuarantine` and `WouldDropQuarantine` occur).
    pub by_slot: [u64; COUNTER_SLOTS as usize],
}

struct Entry {
    stats: FlowStats,
    /// Snapshot at the previous active-timeout export.
    base: Option<FlowStats>,
    /// Time of the previous active-timeout export (ns).
    last_export_ns: Option<u64>,
}

type SortKey = ([u8; 16], [u8; 16], u16, u16, u8, u16);

fn sort_key(k: &FlowKey) -> SortKey {
    (k.addr_a, k.addr_b, k.port_a, k.port_b, k.proto, k.vlan_id)
}

/// The flow table and export clock of one capture.
pub struct Meter {
    opts: MeterOptions,
    flows: HashMap<FlowKey, Entry>,
    next_pass_ns: Option<u64>,
    last_ts_ns: u64,
    stats: MeterStats,
    evidence: Evidence,
    pending: Vec<TimedEvidence>,
    /// First packets of flows not admitted yet.
    admission: PendingTable,
}

impl Meter {
    /// An empty flow table and evidence tables; the export clock starts at the
    /// first packet.
    pub fn new(opts: MeterOptions) -> Self {
        Meter {
            opts,
            flows: HashMap::new(),
            next_pass_ns: None,
            last_ts_ns: 0,
            stats: MeterStats::default(),
            evidence: Evidence::new(&opts.evidence),
            pending: Vec::new(),
            admission: PendingTable::default(),
        }
    }

    /// Adds an allowlist prefix (see [`Evidence::allow`]): its sources pass, are
    /// metered, and count no evidence. Errors: a length over 32 (IPv4) / 128 (IPv6).
    pub fn allow(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), PrefixError> {
        self.evidence.allow(addr, prefix_len)
    }

    /// The evidence tables, quarantine entries and events
    /// ([`Evidence::src`], [`Evidence::dst`], [`Evidence::quarantines`],
    /// [`Evidence::events`]).
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The evidence readings made since the previous call (only with
    /// `evidence.export_records`), in capture-time order.
    pub fn take_evidence(&mut self) -> Vec<TimedEvidence> {
        std::mem::take(&mut self.pending)
    }

    /// The flows in the table now (unordered): key and statistics, as the kernel's
    /// flow map holds them.
    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &FlowStats)> {
        self.flows.iter().map(|(k, e)| (k, &e.stats))
    }

    /// The pending array (first packets of flows not admitted yet), as the
    /// kernel's `PENDING` map holds it.
    pub fn admission(&self) -> &PendingTable {
        &self.admission
    }

    /// What the meter has seen so far.
    pub fn stats(&self) -> MeterStats {
        self.stats
    }

    /// Flows currently in the table.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Feeds one frame captured at `ts_ns` (Unix ns). Export passes due up to `ts_ns`
    /// run first; their records go to `emit`. Returns the counter slot the XDP
    /// program would count the frame in (its verdict), `None` for a frame skipped
    /// (not IP, headers cut short).
    pub fn frame(
        &mut self,
        ts_ns: u64,
        link: LinkType,
        frame: &[u8],
        emit: &mut impl FnMut(TimedRecord),
    ) -> Option<CounterSlot> {
        self.stats.frames += 1;
        let Some(p) = parse_frame(link, frame) else {
            self.stats.skipped += 1;
            return None;
        };
        Some(self.packet(ts_ns, &p, emit))
    }

    /// Filters, accounts and counts the evidence of one parsed packet captured at
    /// `ts_ns` (Unix ns; an earlier time than the previous packet's is read as
    /// that), after running the export passes due up to then; returns its counter
    /// slot (see the module docs for the steps).
    pub fn packet(
        &mut self,
        ts_ns: u64,
        p: &ParsedPacket,
        emit: &mut impl FnMut(TimedRecord),
    ) -> CounterSlot {
        // 0 means "no packet" in FlowStats; no real capture starts at the epoch.
        let ts_ns = ts_ns.max(1).max(self.last_ts_ns);
        self.advance(ts_ns, emit);
        self.last_ts_ns = ts_ns;
        let (key, side) =
            FlowKey::new(p.src, p.sport, p.dst, p.dport, p.proto, p.family, p.vlan_id);
        let slot = match self.evidence.filter(p, ts_ns) {
            Filter::Allowed => CounterSlot::PassAllowlist,
            Filter::NoMatch => CounterSlot::PassNoMatch,
            // A provisionally quarantined source: its established flows pass.
            Filter::Quarantined if self.flows.contains_key(&key) => CounterSlot::PassNoMatch,
            Filter::Quarantined => {
                self.evidence.hit(&p.src);
                CounterSlot::dropping(Reason::Quarantine, self.evidence.observe())
            }
        };
        self.stats.by_slot[slot as usize] += 1;
        if slot.verdict() == Verdict::Drop {
            self.stats.dropped += 1;
            return slot;
        }
        self.stats.accounted += 1;
        let evidence = slot != CounterSlot::PassAllowlist;
        let events_before = self.evidence.events().len();
        match self.flows.get_mut(&key) {
            Some(entry) => {
                // The program's `answer_on_flow` test (the meter's one table always
                // saw the flow open); answers count whoever sends them.
                let m = &p.meta;
                if let Some(a) = answer_on_flow(
                    entry.stats.first_seen_ns != 0,
                    side == entry.stats.opener,
                    entry.stats.dir[side as usize].packets,
                    p.proto,
                    m.is_tcp,
                    m.tcp_flags,
                    m.icmp,
                ) {
                    self.evidence.answer_to(&p.dst, a);
                } else {
                    let st = &entry.stats;
                    let (mine, other) = (&st.dir[side as usize], &st.dir[1 - side as usize]);
                    if inferred_reply(
                        st.first_seen_ns != 0,
                        side == st.opener,
                        mine.packets,
                        other.packets,
                        mine.syn,
                        m.is_tcp,
                        m.tcp_flags,
                    ) {
                        self.evidence.answer_to(&p.src, Answer::Reply);
                    }
                }
                entry.stats.account(side, &p.meta, ts_ns);
            }
            None if self.opts.admit_first_packet => {
                let mut stats = FlowStats::default();
                stats.account(side, &p.meta, ts_ns);
                self.insert(key, stats);
                self.evidence.count_opening(p, ts_ns, evidence);
            }
            None => {
                let idle = self.opts.timeouts.idle.as_nanos() as u64;
                match self.admission.packet(&key, side, &p.meta, ts_ns, idle) {
                    Pended::Admitted(stats) => {
                        // The pending packet opened the flow: this one may answer.
                        let m = &p.meta;
                        let same = side == stats.opener;
                        if let Some(a) = answer_on_flow(
                            true,
                            same,
                            same as u64,
                            p.proto,
                            m.is_tcp,
                            m.tcp_flags,
                            m.icmp,
                        ) {
                            self.evidence.answer_to(&p.dst, a);
                        } else if inferred_reply(
                            true,
                            same,
                            1,
                            0,
                            stats.dir[side as usize].syn,
                            m.is_tcp,
                            m.tcp_flags,
                        ) {
                            self.evidence.answer_to(&p.src, Answer::Reply);
                        }
                        self.insert(key, stats);
                    }
                    Pended::First => self.evidence.count_opening(p, ts_ns, evidence),
                }
            }
        }
        if self.evidence.events().len() > events_before {
            // The ring buffer wakes the daemon, which reads the maps at once.
            self.evidence_pass(ts_ns);
        }
        slot
    }

    fn insert(&mut self, key: FlowKey, stats: FlowStats) {
        self.flows.insert(
            key,
            Entry {
                stats,
                base: None,
                last_export_ns: None,
            },
        );
    }

    /// Reads the evidence tables (when `export_records`) and sweeps expired
    /// quarantine entries.
    fn evidence_pass(&mut self, now_ns: u64) {
        if !self.opts.evidence.export_records {
            self.evidence.prune(now_ns);
            return;
        }
        let (records, events) = self.evidence.export(now_ns);
        if !records.is_empty() || !events.is_empty() {
            self.pending.push(TimedEvidence {
                at_ns: now_ns,
                records,
                events,
            });
        }
    }

    /// Runs every export pass due at or before `now_ns`.
    pub fn advance(&mut self, now_ns: u64, emit: &mut impl FnMut(TimedRecord)) {
        let poll = (self.opts.poll.as_nanos() as u64).max(1);
        let mut next = match self.next_pass_ns {
            Some(n) => n,
            None => {
                self.next_pass_ns = Some(now_ns + poll);
                return;
            }
        };
        while next <= now_ns {
            if self.flows.is_empty() && self.admission.is_empty() {
                // Nothing can expire: jump to the last grid point at or before now.
                next += (now_ns - next) / poll * poll;
            }
            self.pass(next, emit);
            self.evidence_pass(next);
            next += poll;
        }
        self.next_pass_ns = Some(next);
    }

    fn pass(&mut self, now_ns: u64, emit: &mut impl FnMut(TimedRecord)) {
        let t = self.opts.timeouts;
        let mut done = Vec::new();
        // Sorted for a deterministic record order within one pass.
        let mut keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        keys.sort_unstable_by_key(sort_key);
        for key in keys {
            let entry = self.flows.get_mut(&key).expect("key from the table");
            let Some(reason) = export::expiry(&entry.stats, now_ns, entry.last_export_ns, &t)
            else {
                continue;
            };
            let rec_stats = match &entry.base {
                Some(base) => export::delta_since(&entry.stats, base),
                None => entry.stats,
            };
            if reason == EndReason::ActiveTimeout {
                entry.base = Some(entry.stats);
                entry.last_export_ns = Some(now_ns);
            } else {
                done.push(key);
            }
            if rec_stats.packets() > 0 {
                self.stats.records += 1;
                emit(TimedRecord {
                    at_ns: now_ns,
                    record: export::to_record(&key, &rec_stats, 1, 0, reason),
                });
            }
        }
        for k in done {
            self.flows.remove(&k);
        }
        let idle = t.idle.as_nanos() as u64;
        for pf in self.admission.expire(now_ns, idle) {
            self.emit_pending(&pf, now_ns, EndReason::IdleTimeout, emit);
        }
    }

    /// Emits the record of a one-packet flow.
    fn emit_pending(
        &mut self,
        pf: &PendingFlow,
        at_ns: u64,
        reason: EndReason,
        emit: &mut impl FnMut(TimedRecord),
    ) {
        self.stats.records += 1;
        emit(TimedRecord {
            at_ns,
            record: export::to_record(&pf.key, &pf.stats(), 1, 0, reason),
        });
    }

    /// Flushes every remaining flow with [`EndReason::ForcedEnd`] at the last packet's
    /// time (or `at_ns` when given and later), as the daemon does when it stops.
    pub fn finish(&mut self, at_ns: Option<u64>, emit: &mut impl FnMut(TimedRecord)) {
        let now = at_ns.unwrap_or(0).max(self.last_ts_ns);
        let mut keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        keys.sort_unstable_by_key(sort_key);
        for key in keys {
            let entry = self.flows.remove(&key).expect("key from the table");
            let rec_stats = match &entry.base {
                Some(base) => export::delta_since(&entry.stats, base),
                None => entry.stats,
            };
            if rec_stats.packets() > 0 {
                self.stats.records += 1;
                emit(TimedRecord {
                    at_ns: now,
                    record: export::to_record(&key, &rec_stats, 1, 0, EndReason::ForcedEnd),
                });
            }
        }
        for pf in self.admission.flush() {
            self.emit_pending(&pf, now, EndReason::ForcedEnd, emit);
        }
        self.evidence_pass(now);
    }
}

/// Streams the records of a capture to `emit`, in export order (non-decreasing
/// `at_ns`), ending with the forced flush. Returns what the meter saw.
///
/// Errors: the file cannot be opened, is neither pcap nor pcapng, is malformed
/// (a truncated last record ends the capture without error), or uses a link type
/// the meter does not decode.
pub fn for_each_record(
    path: &Path,
    opts: &MeterOptions,
    emit: impl FnMut(TimedRecord),
) -> Result<MeterStats, MeterError> {
    meter_capture(path, *opts, emit, |_| {})
}

/// [`for_each_record`] with the evidence too: `on_evidence` gets every
/// [`TimedEvidence`] (the records that changed at each export pass and the events,
/// see the module docs; `opts.evidence.export_records` is set), interleaved with
/// the flow records in capture-time order. Errors as [`for_each_record`].
pub fn for_each_output(
    path: &Path,
    opts: &MeterOptions,
    on_record: impl FnMut(TimedRecord),
    on_evidence: impl FnMut(TimedEvidence),
) -> Result<MeterStats, MeterError> {
    let mut opts = *opts;
    opts.evidence.export_records = true;
    meter_capture(path, opts, on_record, on_evidence)
}

fn meter_capture(
    path: &Path,
    opts: MeterOptions,
    mut emit: impl FnMut(TimedRecord),
    mut on_evidence: impl FnMut(TimedEvidence),
) -> Result<MeterStats, MeterError> {
    let mut meter = Meter::new(opts);
    for_each_frame(path, |fr| {
        let link = LinkType::of(fr.linktype).ok_or_else(|| MeterError::Linktype {
            path: path.to_owned(),
            linktype: u32::from(fr.linktype),
        })?;
        meter.frame(fr.ts_ns, link, fr.data, &mut emit);
        meter.take_evidence().into_iter().for_each(&mut on_evidence);
        Ok(())
    })?;
    meter.finish(None, &mut emit);
    meter.take_evidence().into_iter().for_each(&mut on_evidence);
    Ok(meter.stats())
}

/// All records of a capture, in export order (see [`for_each_record`]).
pub fn records_from_pcap(path: &Path, opts: &MeterOptions) -> Result<Vec<TimedRecord>, MeterError> {
    let mut out = Vec::new();
    for_each_record(path, opts, |r| out.push(r))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
