//! Pcap flow meter: turns a capture (pcap or pcapng) into the flow records the
//! gateway daemon would export for the same traffic, stamped with the capture time
//! at which each record would have left the gateway.
//!
//! Used for training the detector's model (`detector features`), for replaying
//! captures through the detector in tests (`detector replay-pcap`), and as the
//! reference the eval harness compares against.
//!
//! # What it does per packet
//! 1. Link layer, by the file's (or pcapng interface's) link type: Ethernet (with up
//!    to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags; the innermost VLAN id is kept),
//!    Linux cooked capture v1 (`LINUX_SLL`, 113) and v2 (`LINUX_SLL2`, 276), raw IP
//!    (`RAW` 101, `IPV4` 228, `IPV6` 229) and BSD loopback (`NULL` 0, `LOOP` 108).
//!    Anything that is not IPv4/IPv6 (ARP, LLDP...) is skipped and counted.
//! 2. IPv4 (RFC 791): header length from IHL (options skipped), `ip_len` = total
//!    length. A non-first fragment (fragment offset != 0) has no transport header:
//!    ports 0, no TCP flags.
//! 3. IPv6 (RFC 8200): up to [`MAX_IPV6_EXT_HEADERS`] extension headers (hop-by-hop,
//!    routing, destination options, AH, fragment) are walked to the upper-layer
//!    protocol; a non-first fragment has ports 0. `ip_len` = payload length + 40.
//! 4. TCP (ports and the flag byte), UDP (ports), ICMP / ICMPv6 (type, code; ports
//!    0). A transport header cut short by the capture's snap length is treated as
//!    absent (ports 0, no flags), as the XDP program's bounds checks do.
//! 5. [`FlowKey::new`] and [`FlowStats::account`]: the same key and accounting code
//!    the XDP program runs.
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

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    time::Duration,
};

use fw_common::flow::{FAMILY_V4, FAMILY_V6, FlowKey, FlowStats, PacketMeta, proto, v4_mapped};
use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};
use tad_wire::{EndReason, FlowRecord};

use crate::export::{self, Timeouts};

/// Most VLAN tags walked in an Ethernet header (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// Most IPv6 extension headers walked before giving up on finding the transport.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

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

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("cannot open capture {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capture {path} is neither pcap nor pcapng (magic {magic:02x?})")]
    UnknownFormat { path: PathBuf, magic: [u8; 4] },
    #[error("capture {path} is malformed: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: PcapError,
    },
    #[error(
        "capture {path}: link type {linktype} is not supported (Ethernet, Linux SLL/SLL2, raw IP, loopback are)"
    )]
    Linktype { path: PathBuf, linktype: u32 },
}

/// Link layers the meter decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// Raw IPv4 or IPv6, version from the first nibble.
    RawIp,
    /// BSD loopback: 4-byte address family (either byte order).
    Loopback,
}

impl LinkType {
    /// The decoder for a pcap link type, if supported.
    pub fn of(dl: DataLink) -> Option<LinkType> {
        match dl {
            DataLink::ETHERNET => Some(LinkType::Ethernet),
            DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
            DataLink::LINUX_SLL2 => Some(LinkType::LinuxSll2),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(LinkType::RawIp),
            DataLink::NULL | DataLink::LOOP => Some(LinkType::Loopback),
            _ => None,
        }
    }
}

/// What the parser extracted from one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedPacket {
    /// Source address (map encoding: IPv4-mapped for IPv4).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports, host byte order; 0 for ICMP, non-first fragments, missing headers.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub vlan_id: u16,
    pub meta: PacketMeta,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ: u16 = 0x9100;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses one frame of the given link type down to the flow key fields. `None` for
/// frames that are not IPv4/IPv6 or whose IP header is cut short.
pub fn parse_frame(link: LinkType, frame: &[u8]) -> Option<ParsedPacket> {
    let (ethertype, l3, vlan_id) = match link {
        LinkType::Ethernet => {
            let mut ethertype = be16(frame, 12)?;
            let mut off = 14;
            let mut vlan = 0u16;
            for _ in 0..MAX_VLAN_TAGS {
                if !matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ) {
                    break;
                }
                vlan = be16(frame, off)? & 0x0fff;
                ethertype = be16(frame, off + 2)?;
                off += 4;
            }
            (ethertype, off, vlan)
        }
        LinkType::LinuxSll => (be16(frame, 14)?, 16, 0),
        LinkType::LinuxSll2 => (be16(frame, 0)?, 20, 0),
        LinkType::RawIp => match frame.first()? >> 4 {
            4 => (ETH_P_IPV4, 0, 0),
            6 => (ETH_P_IPV6, 0, 0),
            _ => return None,
        },
        LinkType::Loopback => {
            let fam = frame.get(..4)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24/28/30 (BSDs, macOS).
            let ethertype = match (le, be) {
                (2, _) | (_, 2) => ETH_P_IPV4,
                (10 | 24 | 28 | 30, _) | (_, 10 | 24 | 28 | 30) => ETH_P_IPV6,
                _ => return None,
            };
            (ethertype, 4, 0)
        }
    };
    let ip = frame.get(l3..)?;
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ip, vlan_id),
        ETH_P_IPV6 => parse_ipv6(ip, vlan_id),
        _ => None,
    }
}

fn parse_ipv4(ip: &[u8], vlan_id: u16) -> Option<ParsedPacket> {
    let h = ip.get(..20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let total_len = be16(h, 2)?;
    let frag_off = be16(h, 6)? & 0x1fff;
    let src = v4_mapped([h[12], h[13], h[14], h[15]]);
    let dst = v4_mapped([h[16], h[17], h[18], h[19]]);
    let l4 = if frag_off == 0 { ip.get(ihl..) } else { None };
    Some(transport(src, dst, h[9], FAMILY_V4, vlan_id, total_len, l4))
}

fn parse_ipv6(ip: &[u8], vlan_id: u16) -> Option<ParsedPacket> {
    let h = ip.get(..40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let ip_len = be16(h, 4)?.saturating_add(40);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = 40usize;
    let mut l4_ok = true;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            // Hop-by-hop, routing, destination options: (hdr ext len + 1) * 8 bytes.
            0 | 43 | 60 => (*ip.get(off + 1)? as usize + 1) * 8,
            // Fragment header: 8 bytes; offset in the upper 13 bits of bytes 2-3.
            44 => {
                if be16(ip, off + 2)? >> 3 != 0 {
                    l4_ok = false;
                }
                8
            }
            // Authentication header: (payload len + 2) * 4 bytes.
            51 => (*ip.get(off + 1)? as usize + 2) * 4,
            _ => break,
        };
        next = *ip.get(off)?;
        off += len;
    }
    if matches!(next, 0 | 43 | 44 | 51 | 60) {
        // Chain longer than the bound: no transport header.
        l4_ok = false;
    }
    let l4 = if l4_ok { ip.get(off..) } else { None };
    Some(transport(src, dst, next, FAMILY_V6, vlan_id, ip_len, l4))
}

fn transport(
    src: [u8; 16],
    dst: [u8; 16],
    proto_nr: u8,
    family: u8,
    vlan_id: u16,
    ip_len: u16,
    l4: Option<&[u8]>,
) -> ParsedPacket {
    let mut p = ParsedPacket {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: proto_nr,
        family,
        vlan_id,
        meta: PacketMeta {
            ip_len,
            ..Default::default()
        },
    };
    let Some(l4) = l4 else { return p };
    match proto_nr {
        proto::TCP if l4.len() >= 20 => {
            p.sport = u16::from_be_bytes([l4[0], l4[1]]);
            p.dport = u16::from_be_bytes([l4[2], l4[3]]);
            p.meta.is_tcp = true;
            p.meta.tcp_flags = l4[13];
        }
        proto::UDP if l4.len() >= 8 => {
            p.sport = u16::from_be_bytes([l4[0], l4[1]]);
            p.dport = u16::from_be_bytes([l4[2], l4[3]]);
        }
        proto::ICMP | proto::ICMPV6 if l4.len() >= 4 => {
            p.meta.icmp = Some((l4[0], l4[1]));
        }
        _ => {}
    }
    p
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

/// One frame as stored in a capture.
#[derive(Clone, Copy, Debug)]
pub struct CapturedFrame<'a> {
    /// Capture time, Unix ns (pcapng timestamps scaled by the interface's
    /// `if_tsresol`; a Simple Packet Block, which has none, gets the previous time).
    pub ts_ns: u64,
    /// The interface's link type.
    pub linktype: DataLink,
    /// Length of the frame on the wire, bytes (`data` may be shorter: snap length).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Calls `f` with every frame of a pcap or pcapng file (told apart by the magic
/// number), in file order: the one capture reader of the project (the meter, the
/// replay tool and the kernel-equivalence test use it). A record cut short at the
/// end of the file ends the capture; an error from `f` stops the walk.
pub fn for_each_frame(
    path: &Path,
    mut f: impl FnMut(CapturedFrame<'_>) -> Result<(), MeterError>,
) -> Result<(), MeterError> {
    let open_err = |source| MeterError::Open {
        path: path.to_owned(),
        source,
    };
    let fmt_err = |source| MeterError::Format {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open_err)?;
    let reader = BufReader::new(File::open(path).map_err(open_err)?);
    let mut last_ts_ns = 0u64;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let mut r = PcapNgReader::new(reader).map_err(fmt_err)?;
            // Per interface: link type and timestamp units per second.
            let mut ifaces: Vec<(DataLink, u64)> = Vec::new();
            while let Some(block) = r.next_block() {
                let block = match block {
                    Ok(b) => b,
                    Err(PcapError::IncompleteBuffer) => break,
                    Err(e) => return Err(fmt_err(e)),
                };
                match block {
                    Block::SectionHeader(_) => ifaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let mut units = 1_000_000u64;
                        for o in &idb.options {
                            if let InterfaceDescriptionOption::IfTsResol(r) = o {
                                let exp = (*r & 0x7f) as u32;
                                units = if r & 0x80 != 0 {
                                    2u64.checked_pow(exp).unwrap_or(u64::MAX)
                                } else {
                                    10u64.checked_pow(exp).unwrap_or(u64::MAX)
                                };
                            }
                        }
                        ifaces.push((idb.linktype, units));
                    }
                    Block::EnhancedPacket(epb) => {
                        let Some(&(linktype, units)) = ifaces.get(epb.interface_id as usize) else {
                            return Err(fmt_err(PcapError::InvalidInterfaceId(epb.interface_id)));
                        };
                        // pcap-file stores the raw tick count in a Duration's ns.
                        let ticks = epb.timestamp.as_nanos();
                        last_ts_ns = (ticks * 1_000_000_000 / units.max(1) as u128) as u64;
                        f(CapturedFrame {
                            ts_ns: last_ts_ns,
                            linktype,
                            orig_len: epb.original_len,
                            data: &epb.data,
                        })?;
                    }
                    Block::SimplePacket(spb) => {
                        if let Some(&(linktype, _)) = ifaces.first() {
                            f(CapturedFrame {
                                ts_ns: last_ts_ns,
                                linktype,
                                orig_len: spb.original_len,
                                data: &spb.data,
                            })?;
                        }
                    }
                    Block::Packet(pb) => {
                        if let Some(&(linktype, units)) = ifaces.get(pb.interface_id as usize) {
                            last_ts_ns = (pb.timestamp as u128 * 1_000_000_000
                                / units.max(1) as u128)
                                as u64;
                            f(CapturedFrame {
                                ts_ns: last_ts_ns,
                                linktype,
                                orig_len: pb.original_len,
                                data: &pb.data,
                            })?;
                        }
                    }
                    _ => {}
                }
            }
        }
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let mut r = PcapReader::new(reader).map_err(fmt_err)?;
            let linktype = r.header().datalink;
            while let Some(pkt) = r.next_packet() {
                let pkt = match pkt {
                    Ok(p) => p,
                    Err(PcapError::IncompleteBuffer) => break,
                    Err(e) => return Err(fmt_err(e)),
                };
                f(CapturedFrame {
                    ts_ns: pkt.timestamp.as_nanos() as u64,
                    linktype,
                    orig_len: pkt.orig_len,
                    data: &pkt.data,
                })?;
            }
        }
        other => {
            return Err(MeterError::UnknownFormat {
                path: path.to_owned(),
                magic: other,
            });
        }
    }
    Ok(())
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
    use std::{borrow::Cow, net::IpAddr};

    use fw_common::flow::tcp_flags::{ACK, RST, SYN};
    use pcap_file::{
        pcap::{PcapHeader, PcapPacket, PcapWriter},
        pcapng::{
            PcapNgWriter,
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::InterfaceDescriptionBlock,
            },
        },
    };

    use super::*;

    const S: u64 = 1_000_000_000;

    fn ipv4(
        src: [u8; 4],
        dst: [u8; 4],
        proto_nr: u8,
        frag_off: u16,
        options: usize,
        l4: &[u8],
    ) -> Vec<u8> {
        let ihl = 20 + options;
        let total = (ihl + l4.len()) as u16;
        let mut h = vec![0u8; ihl];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&frag_off.to_be_bytes());
        h[8] = 64;
        h[9] = proto_nr;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h.extend_from_slice(l4);
        h
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        u
    }

    fn eth(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for v in vlans {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn addr(p: &ParsedPacket) -> (IpAddr, IpAddr) {
        (
            tad_wire::addr_from_map(p.src, p.family),
            tad_wire::addr_from_map(p.dst, p.family),
        )
    }

    #[test]
    fn ipv4_with_options_vlan_and_fragments() {
        let seg = tcp(40000, 22, SYN);
        let ip = ipv4([192, 0, 2, 1], [198, 51, 100, 2], 6, 0, 8, &seg);
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV4, &[0x2005, 0x0064], &ip)).unwrap();
        assert_eq!(addr(&p).0.to_string(), "192.0.2.1");
        assert_eq!(
            (p.sport, p.dport, p.proto, p.vlan_id),
            (40000, 22, 6, 100),
            "innermost VLAN id"
        );
        assert_eq!(
            (p.meta.ip_len, p.meta.tcp_flags, p.meta.is_tcp),
            (48, SYN, true)
        );
        // A non-first fragment has no ports, whatever its payload looks like.
        let frag = ipv4(
            [192, 0, 2, 1],
            [198, 51, 100, 2],
            17,
            185,
            0,
            &udp(53, 53, 20),
        );
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV4, &[], &frag)).unwrap();
        assert_eq!((p.sport, p.dport, p.meta.ip_len), (0, 0, 48));
        // First fragment (MF set, offset 0) keeps its ports.
        let first = ipv4(
            [192, 0, 2, 1],
            [198, 51, 100, 2],
            17,
            0x2000,
            0,
            &udp(5353, 53, 20),
        );
        assert_eq!(
            parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV4, &[], &first))
                .unwrap()
                .sport,
            5353
        );
        // ARP and truncated headers are skipped.
        assert!(parse_frame(LinkType::Ethernet, &eth(0x0806, &[], &[0u8; 28])).is_none());
        assert!(parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV4, &[], &ip[..19])).is_none());
        // Transport header cut by the snap length: accounted without ports.
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV4, &[], &ip[..30])).unwrap();
        assert_eq!((p.sport, p.meta.is_tcp, p.meta.ip_len), (0, false, 48));
    }

    fn ipv6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        h[6] = next;
        h[8..24].copy_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h[24..40].copy_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h.extend_from_slice(ext);
        h.extend_from_slice(l4);
        h
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
        let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1]);
        ext.extend_from_slice(&[0; 14]);
        let pkt = ipv6(0, &ext, &tcp(1234, 443, SYN));
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV6, &[], &pkt)).unwrap();
        assert_eq!(
            (p.proto, p.sport, p.dport, p.family),
            (6, 1234, 443, FAMILY_V6)
        );
        assert_eq!(p.meta.ip_len as usize, pkt.len());
        assert_eq!(addr(&p).1.to_string(), "2001:db8::2");
        // Fragment header with a non-zero offset: upper protocol known, no ports.
        let frag = [17, 0, 0x05, 0x00, 0, 0, 0, 1];
        let p = parse_frame(LinkType::RawIp, &ipv6(44, &frag, &udp(53, 53, 0))).unwrap();
        assert_eq!((p.proto, p.sport, p.dport), (17, 0, 0));
        // ICMPv6 echo request.
        let p = parse_frame(LinkType::RawIp, &ipv6(58, &[], &[128, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!((p.meta.icmp, p.sport), (Some((128, 0)), 0));
        // A chain longer than the bound: no transport header.
        let long: Vec<u8> = (0..MAX_IPV6_EXT_HEADERS + 1)
            .flat_map(|_| [60u8, 0, 0, 0, 0, 0, 0, 0])
            .collect();
        let p = parse_frame(LinkType::RawIp, &ipv6(60, &long, &tcp(1, 2, SYN))).unwrap();
        assert_eq!((p.sport, p.meta.is_tcp), (0, false));
    }

    #[test]
    fn cooked_and_loopback_link_types() {
        let ip = ipv4([192, 0, 2, 1], [192, 0, 2, 2], 17, 0, 0, &udp(1, 2, 0));
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        sll.extend_from_slice(&ip);
        let mut sll2 = ETH_P_IPV4.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut lo = 2u32.to_le_bytes().to_vec();
        lo.extend_from_slice(&ip);
        for (lt, f) in [
            (LinkType::LinuxSll, sll),
            (LinkType::LinuxSll2, sll2),
            (LinkType::Loopback, lo),
            (LinkType::RawIp, ip.clone()),
        ] {
            let p = parse_frame(lt, &f).unwrap_or_else(|| panic!("{lt:?}"));
            assert_eq!((p.sport, p.dport), (1, 2), "{lt:?}");
        }
    }

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
            eth(ETH_P_IPV4, &[], &ipv4(c, s, 6, 0, 0, &tcp(40000, 80, SYN))),
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
