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
//! the XDP program runs.
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

use std::{collections::HashMap, path::Path, time::Duration};

use fw_common::flow::{FlowKey, FlowStats};
use tad_wire::{EndReason, FlowRecord};

use crate::export::{self, Timeouts};
pub use crate::{
    capture::{CapturedFrame, MeterError, for_each_frame},
    parse::{LinkType, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, ParsedPacket, parse_frame},
};

/// Meter settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterOptions {
    /// Export timeouts (the daemon's defaults unless changed).
    pub timeouts: Timeouts,
    /// Interval between export passes, capture time (default 250 ms).
    pub poll: Duration,
}

impl Default for MeterOptions {
    fn default() -> Self {
        MeterOptions {
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(250),
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
}

impl Meter {
    /// An empty flow table; the export clock starts at the first packet.
    pub fn new(opts: MeterOptions) -> Self {
        Meter {
            opts,
            flows: HashMap::new(),
            next_pass_ns: None,
            last_ts_ns: 0,
            stats: MeterStats::default(),
        }
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
    /// run first; their records go to `emit`.
    pub fn frame(
        &mut self,
        ts_ns: u64,
        link: LinkType,
        frame: &[u8],
        emit: &mut impl FnMut(TimedRecord),
    ) {
        self.stats.frames += 1;
        let Some(p) = parse_frame(link, frame) else {
            self.stats.skipped += 1;
            return;
        };
        self.packet(ts_ns, &p, emit);
    }

    /// Accounts one parsed packet captured at `ts_ns` (Unix ns), after running the
    /// export passes due up to then.
    pub fn packet(&mut self, ts_ns: u64, p: &ParsedPacket, emit: &mut impl FnMut(TimedRecord)) {
        // 0 means "no packet" in FlowStats; no real capture starts at the epoch.
        let ts_ns = ts_ns.max(1).max(self.last_ts_ns);
        self.advance(ts_ns, emit);
        self.last_ts_ns = ts_ns;
        self.stats.accounted += 1;
        let (key, side) =
            FlowKey::new(p.src, p.sport, p.dst, p.dport, p.proto, p.family, p.vlan_id);
        let entry = self.flows.entry(key).or_insert_with(|| Entry {
            stats: FlowStats::default(),
            base: None,
            last_export_ns: None,
        });
        entry.stats.account(side, &p.meta, ts_ns);
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
            if self.flows.is_empty() {
                // Nothing can expire: jump to the last grid point at or before now.
                next += (now_ns - next) / poll * poll;
            }
            self.pass(next, emit);
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
    mut emit: impl FnMut(TimedRecord),
) -> Result<MeterStats, MeterError> {
    let mut meter = Meter::new(*opts);
    for_each_frame(path, |fr| {
        let link = LinkType::of(fr.linktype).ok_or_else(|| MeterError::Linktype {
            path: path.to_owned(),
            linktype: u32::from(fr.linktype),
        })?;
        meter.frame(fr.ts_ns, link, fr.data, &mut emit);
        Ok(())
    })?;
    meter.finish(None, &mut emit);
    Ok(meter.stats())
}

/// All records of a capture, in export order (see [`for_each_record`]).
pub fn records_from_pcap(path: &Path, opts: &MeterOptions) -> Result<Vec<TimedRecord>, MeterError> {
    let mut out = Vec::new();
    for_each_record(path, opts, |r| out.push(r))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, fs::File, path::PathBuf};

    use fw_common::flow::tcp_flags::{ACK, RST, SYN};
    use pcap_file::{
        DataLink,
        pcap::{PcapHeader, PcapPacket, PcapWriter},
        pcapng::{
            PcapNgWriter,
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            },
        },
    };

    use super::*;
    use crate::test_frames::{eth, ipv4, tcp, udp};

    const S: u64 = 1_000_000_000;

    fn collect(m: &mut Meter, pkts: &[(u64, Vec<u8>)], end: bool) -> Vec<TimedRecord> {
        let mut out = Vec::new();
        for (t, f) in pkts {
            m.frame(*t, LinkType::RawIp, f, &mut |r| out.push(r));
        }
        if end {
            m.finish(None, &mut |r| out.push(r));
        }
        out
    }

    #[test]
    fn export_passes_follow_the_expiry_rules() {
        let c = [192, 0, 2, 1];
        let s = [192, 0, 2, 2];
        let mut m = Meter::new(MeterOptions::default());
        let t0 = 1_000 * S;
        let pkts = vec![
            (t0, ipv4(c, s, 6, 0, 0, &tcp(40000, 22, SYN))),
            (
                t0 + S / 1000,
                ipv4(s, c, 6, 0, 0, &tcp(22, 40000, RST | ACK)),
            ),
            // A later packet of another flow drives the clock past the end grace.
            (t0 + 2 * S, ipv4(c, s, 17, 0, 0, &udp(5000, 53, 10))),
        ];
        let out = collect(&mut m, &pkts, false);
        assert_eq!(out.len(), 1, "the reset flow ends after the 500 ms grace");
        let r = &out[0];
        assert_eq!(r.record.end_reason, EndReason::EndOfFlow);
        assert_eq!(
            (r.record.src.to_string(), r.record.dport),
            ("192.0.2.1".to_string(), 22)
        );
        assert!(
            r.at_ns >= t0 + S / 2 && r.at_ns <= t0 + S / 2 + 250_000_000 + S / 1000,
            "{}",
            r.at_ns - t0
        );
        let rest = collect(&mut m, &[], true);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].record.end_reason, EndReason::ForcedEnd);
        assert_eq!(rest[0].at_ns, t0 + 2 * S);

        // Idle timeout, and a long flow reported by active timeout with delta counts.
        let mut m = Meter::new(MeterOptions::default());
        let mut pkts: Vec<(u64, Vec<u8>)> = (0..=70)
            .map(|i| (t0 + i * S, ipv4(c, s, 17, 0, 0, &udp(7000, 7000, 0))))
            .collect();
        pkts.push((t0 + 90 * S, ipv4(s, c, 17, 0, 0, &udp(9, 9, 0))));
        let out = collect(&mut m, &pkts, true);
        let reasons: Vec<_> = out
            .iter()
            .map(|r| (r.record.end_reason, r.record.packets()))
            .collect();
        assert_eq!(reasons[0].0, EndReason::ActiveTimeout);
        assert_eq!(reasons[1].0, EndReason::IdleTimeout);
        assert_eq!(
            reasons[0].1 + reasons[1].1,
            71,
            "delta counts add up: {reasons:?}"
        );
        assert_eq!(reasons[2], (EndReason::ForcedEnd, 1));
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fw-common-meter-{}-{name}", std::process::id()))
    }

    #[test]
    fn reads_pcap_and_pcapng_with_their_timestamp_units() {
        let c = [192, 0, 2, 1];
        let s = [192, 0, 2, 2];
        let frames = [
            eth(
                fw_common::proto::ETH_P_IP,
                &[],
                &ipv4(c, s, 6, 0, 0, &tcp(40000, 80, SYN)),
            ),
            eth(0x0806, &[], &[0u8; 28]),
        ];
        let t0 = 1_600_000_000 * S + 123_456_789;
        let p1 = tmp("a.pcap");
        {
            let hdr = PcapHeader {
                ts_resolution: pcap_file::TsResolution::NanoSecond,
                ..PcapHeader::default()
            };
            let mut w = PcapWriter::with_header(File::create(&p1).unwrap(), hdr).unwrap();
            for f in &frames {
                w.write_packet(&PcapPacket::new(
                    Duration::from_nanos(t0),
                    f.len() as u32,
                    f,
                ))
                .unwrap();
            }
        }
        let p2 = tmp("b.pcapng");
        {
            let mut w = PcapNgWriter::new(File::create(&p2).unwrap()).unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            })
            .unwrap();
            for f in &frames {
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(t0),
                    original_len: f.len() as u32,
                    data: Cow::Borrowed(f),
                    options: vec![],
                })
                .unwrap();
            }
        }
        for p in [&p1, &p2] {
            let mut recs = Vec::new();
            let stats = for_each_record(p, &MeterOptions::default(), |r| recs.push(r)).unwrap();
            assert_eq!(
                (stats.frames, stats.accounted, stats.skipped, stats.records),
                (2, 1, 1, 1),
                "{p:?}"
            );
            assert_eq!(recs[0].record.start_ms, t0 / 1_000_000, "{p:?}");
            assert_eq!(recs[0].at_ns, t0);
            std::fs::remove_file(p).unwrap();
        }
        let bad = tmp("c.pcap");
        std::fs::write(&bad, b"not a capture").unwrap();
        let err = records_from_pcap(&bad, &MeterOptions::default()).unwrap_err();
        assert!(matches!(err, MeterError::UnknownFormat { .. }), "{err}");
        std::fs::remove_file(&bad).unwrap();
    }
}
