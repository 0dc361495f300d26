//! Evidence at packet speed, from the kernel to the detectors: the XDP program's
//! per-address epoch counts (`EVIDENCE_SRC` / `EVIDENCE_DST`, see
//! `fw_common::evidence`) and its events (`EVENTS` ring buffer) published as
//! [`EvidenceBatch`]es on `tad/v1/gw/<gw>/evidence/<p>` (QoS 0).
//!
//! ```text
//!  every [evidence] poll_interval_ms ─┐
//!  EVENTS readable (AsyncFd) ─────────┼─► drain events ─► read both arrays (mmap)
//!                                     │   ─► Tracker: records of the current and the
//!                                     │      previous epoch that changed since sent
//!                                     └─► partition_of(addr) ─► EvidenceBatch per
//!                                         partition ─► bus (best effort)
//! ```
//!
//! A slot holds its owner's counts for the epoch `epoch` (`cur`) and `epoch - 1`
//! (`prev`); only slots whose `epoch` is the current kernel epoch or the one before
//! are read (older ones were sent while they were recent: the poll interval is at
//! most one epoch). Each (address, role, epoch) is sent again only when its counts
//! changed, so a quiet gateway publishes nothing. Epoch `e` starts at kernel time
//! `(e - 1) * EPOCH_NS` (`fw_common::evidence::epoch_of`), converted to Unix ms with
//! one clock offset read at start ([`crate::clock::unix_offset_ns`]), so a record
//! keeps its `epoch_start_ms` from poll to poll. IPv4 owners are IPv4-mapped in the
//! kernel and published as IPv4.
//!
//! An event wakes the task at once: it is published with the records read right
//! after it, in the batch of its address's partition, without waiting for the
//! poll. Reads are at least [`MIN_READ_GAP`] apart (a copy of both arrays is
//! 1.9 MB): events that arrive sooner go out at once on their own, their records
//! with the next read. While the bus is not connected nothing is read (the evidence would be
//! stale when it arrives) and events are drained and counted only.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use fw_common::{
    evidence::{EVENT_QUARANTINE, EVENT_REPORT, EpochCounts, EvidenceSlot, epoch_of},
    flow::FAMILY_V4,
};
use serde::{Deserialize, Serialize};
use tad_bus::{BusClient, ConnectionState, PublishOptions};
use tad_wire::{
    EpochEvidence, EvidenceBatch, EvidenceEvent, EvidenceEventKind, EvidenceRole, NodeId,
    SCHEMA_VERSION, partition_of, topic,
};
use tokio::io::unix::AsyncFd;

use crate::{
    clock,
    error::{CtlError, Result},
    kernel::{self, EvidenceTable},
    pin::PinDir,
};

/// Most records in one published batch (about 450 bytes each as JSON, so a batch
/// stays far below the bus's `max_packet_bytes`).
pub const BATCH_MAX_RECORDS: usize = 256;

/// Least time between two reads of the evidence arrays, so a burst of events
/// (many sources crossing the report threshold) costs one read per gap.
pub const MIN_READ_GAP: Duration = Duration::from_millis(10);

/// The evidence task's counters, since the daemon started (in the status file,
/// `fw-ctl status --json` under `daemon.evidence`, and `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceStats {
    /// `report` events read from the ring buffer.
    pub events_report: u64,
    /// `quarantine` events read from the ring buffer.
    pub events_quarantine: u64,
    /// Ring buffer records of an unknown kind or size (skipped).
    pub events_malformed: u64,
    /// Events read while the bus was not connected (not published).
    pub events_unpublished: u64,
    /// Reads of both evidence arrays.
    pub polls: u64,
    /// Batches handed to the bus.
    pub batches_published: u64,
    /// Records in those batches.
    pub records_published: u64,
    /// Batches the bus refused (closed, too large).
    pub publish_failed: u64,
    /// Whether the arrays are read through the shared mapping (false: lookups).
    pub mapped: bool,
}

/// The address of a kernel address (16 bytes, network order, IPv4-mapped for
/// IPv4) of family `family` (`FAMILY_V4` / `FAMILY_V6`).
pub fn addr_of(addr: &[u8; 16], family: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(*addr);
    match (family, v6.to_ipv4_mapped()) {
        (FAMILY_V4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

/// Start of kernel epoch `epoch` (>= 1) in Unix ms (the meter's conversion).
pub use flow_meter::evidence::epoch_start_ms;

/// Unix ms of a kernel (`bpf_ktime_get_ns`) time, given Unix minus monotonic, ns.
fn unix_ms(kernel_ns: u64, offset_ns: i128) -> u64 {
    ((kernel_ns as i128 + offset_ns).max(0) / 1_000_000) as u64
}

fn record(
    addr: IpAddr,
    role: EvidenceRole,
    epoch: u32,
    c: &EpochCounts,
    offset_ns: i128,
) -> EpochEvidence {
    flow_meter::evidence::record_of(addr, role, c, epoch, offset_ns)
}

/// The records of one slot: its `cur` epoch and its `prev` epoch (when it saw
/// anything), with their kernel epochs. An empty slot (epoch 0) gives none.
pub fn slot_records(
    slot: &EvidenceSlot,
    role: EvidenceRole,
    offset_ns: i128,
) -> Vec<(u32, EpochEvidence)> {
    if slot.epoch == 0 {
        return Vec::new();
    }
    let addr = addr_of(&slot.addr, slot.family);
    let mut out = Vec::with_capacity(2);
    let empty = EpochCounts::default();
    if slot.epoch > 1 && slot.prev != empty {
        let e = slot.epoch - 1;
        out.push((e, record(addr, role, e, &slot.prev, offset_ns)));
    }
    if slot.cur != empty {
        out.push((
            slot.epoch,
            record(addr, role, slot.epoch, &slot.cur, offset_ns),
        ));
    }
    out
}

/// The wire form of a ring buffer event; `None` for an unknown kind.
pub fn event_of(e: &fw_common::evidence::EvidenceEvent, offset_ns: i128) -> Option<EvidenceEvent> {
    let kind = match e.kind {
        EVENT_REPORT => EvidenceEventKind::Report,
        EVENT_QUARANTINE => EvidenceEventKind::Quarantine,
        _ => return None,
    };
    Some(EvidenceEvent {
        kind,
        addr: addr_of(&e.addr, e.family),
        at_ms: unix_ms(e.at_ns, offset_ns),
        union_hosts: e.union_hosts,
        union_ports: e.union_ports,
        new_flows: e.new_flows,
        unreplied: e.unreplied,
    })
}

/// Remembers what was sent per (address, role, kernel epoch) and picks the
/// records that changed since.
#[derive(Debug, Default)]
pub struct Tracker {
    sent: HashMap<(IpAddr, EvidenceRole, u32), EpochCounts>,
}

impl Tracker {
    /// The records of `slots` (one evidence array, role `role`) whose slot is
    /// recent at kernel epoch `now_epoch` (its `epoch` is `now_epoch` or the one
    /// before) and whose counts differ from the last ones returned for the same
    /// address, role and epoch; those are remembered as sent.
    pub fn changed(
        &mut self,
        slots: &[EvidenceSlot],
        role: EvidenceRole,
        now_epoch: u32,
        offset_ns: i128,
    ) -> Vec<EpochEvidence> {
        let mut out = Vec::new();
        for s in slots {
            if s.epoch == 0 || s.epoch.saturating_add(1) < now_epoch {
                continue;
            }
            let addr = addr_of(&s.addr, s.family);
            for (epoch, counts) in [(s.epoch.wrapping_sub(1), &s.prev), (s.epoch, &s.cur)] {
                if epoch == 0 || *counts == EpochCounts::default() {
                    continue;
                }
                let key = (addr, role, epoch);
                if self.sent.get(&key) == Some(counts) {
                    continue;
                }
                self.sent.insert(key, *counts);
                out.push(record(addr, role, epoch, counts, offset_ns));
            }
        }
        out
    }

    /// Forgets epochs that can no longer change (older than `now_epoch - 2`), so
    /// memory stays bounded by the recent slots.
    pub fn prune(&mut self, now_epoch: u32) {
        self.sent
            .retain(|(_, _, e), _| e.saturating_add(2) >= now_epoch);
    }

    /// Entries remembered.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// Cuts records and events into [`EvidenceBatch`]es per partition
/// (`tad_wire::partition_of` of the address, like flow batches by initiator),
/// at most [`BATCH_MAX_RECORDS`] records each, with a sequence number per
/// partition.
#[derive(Debug)]
pub struct Batcher {
    gateway_id: NodeId,
    partitions: u16,
    seq: BTreeMap<u16, u64>,
}

impl Batcher {
    /// A batcher for `gateway_id` over `partitions` (>= 1) partitions.
    pub fn new(gateway_id: NodeId, partitions: u16) -> Batcher {
        Batcher {
            gateway_id,
            partitions: partitions.max(1),
            seq: BTreeMap::new(),
        }
    }

    /// The batches for `records` and `events`, sent at `sent_at_ms` (Unix).
    pub fn batches(
        &mut self,
        records: Vec<EpochEvidence>,
        events: Vec<EvidenceEvent>,
        sent_at_ms: u64,
    ) -> Vec<EvidenceBatch> {
        let mut parts: BTreeMap<u16, (Vec<EpochEvidence>, Vec<EvidenceEvent>)> = BTreeMap::new();
        for r in records {
            parts
                .entry(partition_of(r.addr, self.partitions))
                .or_default()
                .0
                .push(r);
        }
        for e in events {
            parts
                .entry(partition_of(e.addr, self.partitions))
                .or_default()
                .1
                .push(e);
        }
        let mut out = Vec::new();
        for (p, (records, mut events)) in parts {
            let mut chunks: Vec<Vec<EpochEvidence>> = records
                .chunks(BATCH_MAX_RECORDS)
                .map(<[EpochEvidence]>::to_vec)
                .collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            for records in chunks {
                let seq = self.seq.entry(p).or_insert(0);
                out.push(EvidenceBatch {
                    v: SCHEMA_VERSION,
                    gateway_id: self.gateway_id.clone(),
                    seq: *seq,
                    partition: p,
                    sent_at_ms,
                    records,
                    // The events ride in the partition's first batch.
                    events: std::mem::take(&mut events),
                });
                *seq += 1;
            }
        }
        out
    }
}

/// What the evidence task needs from the configuration.
#[derive(Clone, Debug)]
pub struct EvidenceConfig {
    pub gateway_id: NodeId,
    /// `export.partitions`.
    pub partitions: u16,
    /// `evidence.poll_interval_ms`.
    pub poll_interval: Duration,
}

/// The kernel side of the task: both arrays, the ring buffer, the change tracker.
struct Source {
    src: EvidenceTable,
    dst: EvidenceTable,
    events: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tracker: Tracker,
    buf: Vec<EvidenceSlot>,
    offset_ns: i128,
}

impl Source {
    fn open(dir: &PinDir) -> Result<Source> {
        let src = EvidenceTable::open(dir, fw_common::maps::EVIDENCE_SRC)?;
        let dst = EvidenceTable::open(dir, fw_common::maps::EVIDENCE_DST)?;
        let ring = kernel::open_events(dir)?;
        // SAFETY: the ring buffer owns its map fd, which stays open (and is the one
        // `as_raw_fd` returns) until the `AsyncFd` and with it the ring is dropped.
        let events =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    CtlError::map(
                        fw_common::maps::EVENTS,
                        "register with the event loop",
                        e.into(),
                    )
                })?;
        Ok(Source {
            src,
            dst,
            events,
            tracker: Tracker::default(),
            buf: Vec::new(),
            offset_ns: clock::unix_offset_ns(),
        })
    }

    /// The changed records of both arrays now.
    fn read(&mut self, stats: &mut EvidenceStats) -> Result<Vec<EpochEvidence>> {
        let now_epoch = epoch_of(clock::mono_ns());
        let mut out = Vec::new();
        for (role, table) in [
            (EvidenceRole::Source, &self.src),
            (EvidenceRole::Destination, &self.dst),
        ] {
            table.read_all(&mut self.buf)?;
            out.extend(
                self.tracker
                    .changed(&self.buf, role, now_epoch, self.offset_ns),
            );
        }
        self.tracker.prune(now_epoch);
        stats.polls += 1;
        Ok(out)
    }
}

fn connected(bus: &BusClient) -> bool {
    matches!(*bus.state().borrow(), ConnectionState::Connected { .. })
}

fn lock(stats: &Mutex<EvidenceStats>) -> std::sync::MutexGuard<'_, EvidenceStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes every pending event from the ring (decoded; unknown ones counted).
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    offset_ns: i128,
    stats: &Mutex<EvidenceStats>,
) -> Vec<EvidenceEvent> {
    let mut out = Vec::new();
    let mut s = lock(stats);
    while let Some(item) = ring.next() {
        match kernel::decode_event(&item).and_then(|e| event_of(&e, offset_ns)) {
            Some(e) => {
                match e.kind {
                    EvidenceEventKind::Report => s.events_report += 1,
                    EvidenceEventKind::Quarantine => s.events_quarantine += 1,
                }
                out.push(e);
            }
            None => s.events_malformed += 1,
        }
    }
    out
}

/// Publishes `records` and `events` as batches (best effort, QoS 0).
fn publish(
    bus: &BusClient,
    batcher: &mut Batcher,
    gw: &NodeId,
    records: Vec<EpochEvidence>,
    events: Vec<EvidenceEvent>,
    stats: &Mutex<EvidenceStats>,
) {
    if records.is_empty() && events.is_empty() {
        return;
    }
    for batch in batcher.batches(records, events, clock::unix_ms()) {
        let n = batch.records.len() as u64;
        let r = bus.try_publish(
            &topic::evidence(gw, batch.partition),
            &batch,
            PublishOptions::best_effort(),
        );
        let mut s = lock(stats);
        match r {
            Ok(()) => {
                s.batches_published += 1;
                s.records_published += n;
            }
            Err(e) => {
                s.publish_failed += 1;
                tracing::warn!(error = %e, "evidence: publishing a batch");
            }
        }
    }
}

/// Runs the evidence task until `shutdown` resolves (see the module docs),
/// publishing on `bus` (none: events are only counted) and keeping `stats` up to
/// date.
///
/// # Errors
/// The evidence maps or the ring buffer of `dir` cannot be opened (an instance
/// loaded by a version without them). Later read errors are logged and the task
/// goes on.
pub async fn run(
    dir: PinDir,
    cfg: EvidenceConfig,
    bus: Option<BusClient>,
    stats: Arc<Mutex<EvidenceStats>>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut src = Source::open(&dir).inspect_err(
        |e| tracing::warn!(error = %e, "evidence: no evidence maps; nothing is published"),
    )?;
    lock(&stats).mapped = src.src.mapped() && src.dst.mapped();
    let mut batcher = Batcher::new(cfg.gateway_id.clone(), cfg.partitions);
    let mut last_read: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let (events, polled) = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            r = src.events.readable_mut() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "evidence: polling the event ring buffer");
                        tokio::time::sleep(cfg.poll_interval).await;
                        continue;
                    }
                };
                let events = drain(guard.get_inner_mut(), src.offset_ns, &stats);
                guard.clear_ready();
                if events.is_empty() {
                    continue;
                }
                (events, false)
            }
            _ = tick.tick() => (Vec::new(), true),
        };
        let Some(b) = bus.as_ref().filter(|b| connected(b)) else {
            lock(&stats).events_unpublished += events.len() as u64;
            continue;
        };
        let due = polled || last_read.is_none_or(|t| t.elapsed() >= MIN_READ_GAP);
        let records = if due {
            last_read = Some(std::time::Instant::now());
            let mut s = lock(&stats);
            src.read(&mut s).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "evidence: reading the evidence maps");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        publish(b, &mut batcher, &cfg.gateway_id, records, events, &stats);
    }
}

#[cfg(test)]
mod tests {
    use fw_common::{
        evidence::{Answer, OpenKind, Opening},
        flow::{FAMILY_V6, v4_mapped},
    };

    use super::*;

    const SCANNER: [u8; 4] = [198, 51, 100, 7];

    fn syn(dport: u16) -> Opening {
        Opening {
            kind: OpenKind::Syn,
            dport,
            ip_len: 60,
        }
    }

    /// A source slot of `SCANNER` at `epoch` with `probes` refused SYNs.
    fn scanner(epoch: u32, probes: u16) -> EvidenceSlot {
        let mut s = EvidenceSlot::default();
        assert!(s.claim(&v4_mapped(SCANNER), FAMILY_V4, epoch));
        for p in 0..probes {
            s.count_opening(&v4_mapped([192, 0, 2, 10]), &syn(1000 + p));
            s.count_answer(Answer::Refused);
        }
        s
    }

    #[test]
    fn a_slot_becomes_records_of_its_current_and_previous_epoch() {
        let offset = 1_700_000_000_000_000_000i128; // Unix minus monotonic, ns
        let mut s = scanner(10, 3);
        s.roll(11);
        for p in 0..2 {
            s.count_opening(&v4_mapped([192, 0, 2, 11]), &syn(2000 + p));
        }
        let r = slot_records(&s, EvidenceRole::Source, offset);
        assert_eq!(r.len(), 2);
        let (e_prev, prev) = &r[0];
        let (e_cur, cur) = &r[1];
        assert_eq!((*e_prev, *e_cur), (10, 11));
        assert_eq!(prev.addr, IpAddr::from(SCANNER), "IPv4-mapped back to IPv4");
        assert_eq!(prev.role, EvidenceRole::Source);
        // Epoch 10 covers kernel time [9 s, 10 s).
        assert_eq!(prev.epoch_start_ms, 1_700_000_000_000 + 9_000);
        assert_eq!(cur.epoch_start_ms, prev.epoch_start_ms + 1_000);
        assert_eq!(
            (prev.new_flows, prev.syn, prev.refused, prev.replies),
            (3, 3, 3, 0)
        );
        assert_eq!(prev.unreplied(), 3);
        assert_eq!(prev.bytes, 180);
        assert_eq!(cur.new_flows, 2);
        assert_eq!(cur.ports, s.cur.ports);
        assert_eq!(cur.hosts.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
        // An empty slot gives nothing, a fresh one only its current epoch.
        assert!(slot_records(&EvidenceSlot::default(), EvidenceRole::Source, 0).is_empty());
        assert_eq!(
            slot_records(&scanner(5, 1), EvidenceRole::Source, 0).len(),
            1
        );
    }

    #[test]
    fn ipv6_owners_stay_ipv6() {
        let a: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(addr_of(&a.octets(), FAMILY_V6), IpAddr::V6(a));
        // A v4-mapped address tagged IPv6 is what the kernel says it is.
        let m = v4_mapped(SCANNER);
        assert_eq!(addr_of(&m, FAMILY_V6), IpAddr::V6(Ipv6Addr::from(m)));
        assert_eq!(addr_of(&m, FAMILY_V4), IpAddr::from(SCANNER));
    }

    #[test]
    fn only_changed_records_of_recent_slots_are_sent() {
        let mut t = Tracker::default();
        let mut slots = vec![EvidenceSlot::default(), scanner(20, 4)];
        let first = t.changed(&slots, EvidenceRole::Source, 20, 0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].new_flows, 4);
        // Nothing changed: nothing to send.
        assert!(t.changed(&slots, EvidenceRole::Source, 20, 0).is_empty());
        // The same counts under the other role are another record.
        assert_eq!(t.changed(&slots, EvidenceRole::Destination, 20, 0).len(), 1);
        // One more probe in the same epoch: sent again, with the new count.
        slots[1].count_opening(&v4_mapped([192, 0, 2, 12]), &syn(9));
        let again = t.changed(&slots, EvidenceRole::Source, 20, 0);
        assert_eq!(again.iter().map(|r| r.new_flows).collect::<Vec<_>>(), [5]);
        // The epoch rolls: `prev` is what was sent already, the new epoch is empty.
        slots[1].roll(21);
        assert!(t.changed(&slots, EvidenceRole::Source, 21, 0).is_empty());
        slots[1].count_opening(&v4_mapped([192, 0, 2, 13]), &syn(10));
        let cur = t.changed(&slots, EvidenceRole::Source, 21, 0);
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].epoch_start_ms, 20_000);
        // Two epochs on, the slot is stale: skipped, and its entries pruned.
        assert!(t.changed(&slots, EvidenceRole::Source, 23, 0).is_empty());
        t.prune(24);
        assert!(t.is_empty(), "{t:?}");
    }

    #[test]
    fn batches_follow_the_partition_of_each_address_and_carry_the_events() {
        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut b = Batcher::new(gw, 4);
        let addrs: Vec<IpAddr> = (1..=40u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .collect();
        let rec = |a: IpAddr| {
            let mut s = scanner(3, 1);
            s.addr = match a {
                IpAddr::V4(v) => v4_mapped(v.octets()),
                IpAddr::V6(v) => v.octets(),
            };
            slot_records(&s, EvidenceRole::Source, 0).remove(0).1
        };
        let records: Vec<EpochEvidence> = addrs.iter().map(|a| rec(*a)).collect();
        let event = EvidenceEvent {
            kind: EvidenceEventKind::Quarantine,
            addr: addrs[7],
            at_ms: 5,
            union_hosts: 1,
            union_ports: 50,
            new_flows: 50,
            unreplied: 50,
        };
        let out = b.batches(records, vec![event.clone()], 99);
        let mut seen = 0;
        for batch in &out {
            assert_eq!((batch.seq, batch.sent_at_ms), (0, 99));
            for r in &batch.records {
                assert_eq!(partition_of(r.addr, 4), batch.partition);
                seen += 1;
            }
        }
        assert_eq!(seen, addrs.len());
        let with_event: Vec<&EvidenceBatch> = out.iter().filter(|b| !b.events.is_empty()).collect();
        assert_eq!(with_event.len(), 1);
        assert_eq!(with_event[0].partition, partition_of(event.addr, 4));
        assert_eq!(with_event[0].events, std::slice::from_ref(&event));
        // An event alone makes a batch of its own; sequence numbers go on.
        let out = b.batches(Vec::new(), vec![event.clone()], 100);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].seq, out[0].records.len()), (1, 0));
    }

    #[test]
    fn large_partitions_are_cut_into_bounded_batches() {
        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut b = Batcher::new(gw, 1);
        let r = slot_records(&scanner(3, 1), EvidenceRole::Source, 0)
            .remove(0)
            .1;
        let out = b.batches(vec![r; BATCH_MAX_RECORDS + 1], Vec::new(), 1);
        assert_eq!(
            out.iter()
                .map(|b| (b.seq, b.records.len()))
                .collect::<Vec<_>>(),
            [(0, BATCH_MAX_RECORDS), (1, 1)]
        );
    }

    #[test]
    fn events_convert_and_unknown_kinds_are_refused() {
        let s = scanner(4, 20);
        let k = s.event(EVENT_QUARANTINE, 3_500_000_000);
        let e = event_of(&k, 1_000_000_000_000).unwrap();
        assert_eq!(e.kind, EvidenceEventKind::Quarantine);
        assert_eq!(e.addr, IpAddr::from(SCANNER));
        assert_eq!(e.at_ms, 1_000_000 + 3_500);
        assert_eq!((e.new_flows, e.unreplied), (20, 20));
        let mut bad = k;
        bad.kind = 9;
        assert!(event_of(&bad, 0).is_none());
        // Through the ring buffer's bytes.
        let bytes: Vec<u8> = unsafe {
            std::slice::from_raw_parts(
                (&k as *const fw_common::evidence::EvidenceEvent).cast::<u8>(),
                std::mem::size_of_val(&k),
            )
        }
        .to_vec();
        assert_eq!(kernel::decode_event(&bytes), Some(k));
        assert_eq!(kernel::decode_event(&bytes[..39]), None);
    }
}
