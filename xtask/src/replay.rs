//! `cargo xtask replay FILE --iface IF [--netns NS] [--timing ...]`: replays a real
//! capture inside the testbed.
//!
//! 1. Reads pcap or pcapng (pcap-file 2) and re-frames every packet as Ethernet:
//!    Ethernet as is; Linux cooked capture (SLL, SLL2), raw IP (DLT_RAW, IPv4, IPv6)
//!    and BSD loopback (NULL, LOOP) get an Ethernet header with the right EtherType.
//!    Frames cut short by the capture's snap length are padded with zeros to their
//!    original length (up to [`MAX_FRAME`]) so the receiver sees well-formed packets;
//!    a trailer after the IP datagram (a captured FCS) is cut off when the frame
//!    would otherwise exceed [`MAX_FRAME`]; frames still longer are skipped.
//! 2. Rewrites every IPv4/IPv6 address into testbed ranges ([`AddrMap`]): in the IP
//!    headers (outer, and the offending header quoted in ICMP/ICMPv6 errors), in
//!    ARP, and in the target of IPv6 neighbour discovery. The mapping is
//!    deterministic: the n-th distinct address seen (source before destination)
//!    becomes 198.18.0.0 + n (IPv4) or 2001:db8:7ad:: + n (IPv6). Broadcast,
//!    multicast and unspecified addresses are kept. Unicast destination MACs
//!    become `--dst-mac` (the testbed router's LAN interface by default), every
//!    source MAC becomes the sending interface's.
//! 3. Fixes checksums with etherparse's RFC 1071 sums: the IPv4 header checksum
//!    always; TCP/UDP/ICMPv6 (pseudo-header) and ICMP checksums recomputed over the
//!    whole segment when it is complete, otherwise (first fragment of a fragmented
//!    datagram) updated incrementally for the changed addresses (RFC 1624, eqn. 3).
//!    A UDP checksum of 0 ("none", IPv4) stays 0.
//! 4. Injects the frames through an AF_PACKET raw socket at the original timing
//!    (gaps capped at `--max-gap`), at a fixed rate, or at top speed.
//!
//! The mapping is written with `--map-out` as JSON ([`AddrMap::save`]) so `eval`
//! can translate blocks and alerts back into the capture's own addresses.
use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail, ensure};
use etherparse::checksum::Sum16BitWords;
use pcap_file::DataLink;
use serde::{Deserialize, Serialize};

use crate::testbed::{self, netns};

/// Largest frame injected (Ethernet header + 1500-byte MTU). Longer frames (from
/// captures taken with segmentation offload) are skipped and counted.
pub const MAX_FRAME: usize = 1514;
/// Base of the IPv4 replay range (198.18.0.0/15, RFC 2544 benchmarking).
pub const V4_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Addresses in the IPv4 replay range (a /15).
pub const V4_SIZE: u32 = 1 << 17;
/// Base of the IPv6 replay range (inside 2001:db8::/32, RFC 3849 documentation).
pub const V6_BASE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7ad, 0, 0, 0, 0, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Capture to replay (pcap or pcapng).
    file: PathBuf,
    /// Interface to inject on.
    #[arg(long)]
    iface: String,
    /// Network namespace of the interface (e.g. tad-replay).
    #[arg(long)]
    netns: Option<String>,
    /// original (gaps capped by --max-gap), rate=PPS, or topspeed.
    #[arg(long, default_value = "original")]
    timing: Timing,
    /// Longest pause between two packets with --timing original (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    max_gap: Duration,
    /// Write the address mapping (JSON) here.
    #[arg(long)]
    map_out: Option<PathBuf>,
    /// Destination MAC for unicast frames (default: the testbed router's LAN
    /// interface when the testbed is up).
    #[arg(long)]
    dst_mac: Option<String>,
    /// Also write the rewritten frames to this pcap file.
    #[arg(long)]
    pcap_out: Option<PathBuf>,
    /// Rewrite (and write --map-out / --pcap-out) but inject nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: &ReplayArgs) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    let src_mac = if a.dry_run && a.netns.is_none() && a.dst_mac.is_some() {
        [0x02, 0, 0, 0, 0, 0x99]
    } else {
        iface_mac(a.netns.as_deref(), &a.iface)?
    };
    let dst_mac = match &a.dst_mac {
        Some(m) => netns::parse_mac(m)?,
        None => testbed_router_mac().context(
            "no --dst-mac given and the testbed router's LAN MAC is unknown (is `cargo xtask testbed up` done?)",
        )?,
    };
    let prepared = prepare(
        &a.file,
        Macs {
            src: src_mac,
            dst: dst_mac,
        },
    )?;
    eprintln!(
        "replay: {} of {} packets from {} ({}); {} addresses mapped; skipped: {}",
        prepared.frames.len(),
        prepared.packets_in_file,
        a.file.display(),
        prepared.linktype_name,
        prepared.map.entries.len(),
        prepared.skipped
    );
    if let Some(p) = &a.map_out {
        prepared.map.save(p)?;
        eprintln!("replay: mapping written to {}", p.display());
    }
    if let Some(p) = &a.pcap_out {
        write_pcap(p, &prepared)?;
        eprintln!("replay: rewritten capture written to {}", p.display());
    }
    if a.dry_run {
        return Ok(());
    }
    let timing = a.timing.with_max_gap(a.max_gap);
    let report = inject(&prepared, a.netns.as_deref(), &a.iface, timing, |_, _| {})?;
    eprintln!(
        "replay: sent {} frames ({} bytes) in {:.2} s; send errors {}",
        report.sent,
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.send_errors
    );
    Ok(())
}

/// The MAC of `iface` (in `ns`, or the root namespace).
fn iface_mac(ns: Option<&str>, iface: &str) -> anyhow::Result<[u8; 6]> {
    match ns {
        Some(ns) => netns::mac_of(ns, iface),
        None => {
            let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
                .with_context(|| format!("no interface {iface:?} in the root namespace"))?;
            netns::parse_mac(s.trim())
        }
    }
}

/// MAC of the testbed router's LAN interface.
pub fn testbed_router_mac() -> anyhow::Result<[u8; 6]> {
    netns::mac_of(testbed::NS_ROUTER, testbed::ROUTER_LAN_IF)
}

/// Replay pacing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timing {
    /// The capture's own gaps, each capped at the given maximum.
    Original(Duration),
    /// A fixed rate in packets per second.
    Rate(f64),
    /// As fast as the socket takes them.
    TopSpeed,
}

impl Timing {
    fn with_max_gap(self, gap: Duration) -> Timing {
        match self {
            Timing::Original(_) => Timing::Original(gap),
            t => t,
        }
    }
}

impl FromStr for Timing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "original" => Ok(Timing::Original(Duration::from_secs(5))),
            "topspeed" => Ok(Timing::TopSpeed),
            _ => match s.strip_prefix("rate=").map(str::parse::<f64>) {
                Some(Ok(pps)) if pps > 0.0 && pps.is_finite() => Ok(Timing::Rate(pps)),
                _ => Err(format!(
                    "bad timing {s:?}: expected original, rate=PPS (PPS > 0) or topspeed"
                )),
            },
        }
    }
}

/// One address of the capture and its replacement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MapEntry {
    /// Address as found in the capture.
    pub original: IpAddr,
    /// Address injected instead.
    pub replayed: IpAddr,
}

/// The recorded, deterministic address mapping of one capture.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AddrMap {
    /// Entries in order of first appearance.
    pub entries: Vec<MapEntry>,
    #[serde(skip)]
    forward: HashMap<IpAddr, IpAddr>,
    #[serde(skip)]
    n_v4: u32,
    #[serde(skip)]
    n_v6: u128,
}

impl AddrMap {
    /// An empty mapping whose first IPv4 address is 198.18.0.0 + `v4_skip` + 1 (and
    /// IPv6 likewise), so several captures replayed into one testbed never share
    /// an address.
    pub fn starting_after(v4_skip: u32, v6_skip: u128) -> AddrMap {
        AddrMap {
            n_v4: v4_skip,
            n_v6: v6_skip,
            ..AddrMap::default()
        }
    }

    /// Whether an address is kept as is (not a host's own address).
    pub fn keeps(a: IpAddr) -> bool {
        match a {
            IpAddr::V4(v) => v.is_unspecified() || v.is_broadcast() || v.is_multicast(),
            IpAddr::V6(v) => v.is_unspecified() || v.is_multicast(),
        }
    }

    /// The replacement of `a`, allocating the next one on first sight.
    /// Fails when the IPv4 range (2^17 - 2 addresses) is exhausted.
    pub fn map(&mut self, a: IpAddr) -> anyhow::Result<IpAddr> {
        if Self::keeps(a) {
            return Ok(a);
        }
        if let Some(r) = self.forward.get(&a) {
            return Ok(*r);
        }
        let r = match a {
            IpAddr::V4(_) => {
                self.n_v4 += 1;
                ensure!(
                    self.n_v4 < V4_SIZE - 1,
                    "more than {} IPv4 addresses in one capture",
                    V4_SIZE - 2
                );
                IpAddr::V4(Ipv4Addr::from(u32::from(V4_BASE) + self.n_v4))
            }
            IpAddr::V6(_) => {
                self.n_v6 += 1;
                IpAddr::V6(Ipv6Addr::from(u128::from(V6_BASE) + self.n_v6))
            }
        };
        self.forward.insert(a, r);
        self.entries.push(MapEntry {
            original: a,
            replayed: r,
        });
        Ok(r)
    }

    /// The capture's own address behind a replayed one.
    pub fn original_of(&self, replayed: IpAddr) -> Option<IpAddr> {
        self.entries
            .iter()
            .find(|e| e.replayed == replayed)
            .map(|e| e.original)
    }

    /// The replayed address of a capture's address, if it appeared.
    pub fn replayed_of(&self, original: IpAddr) -> Option<IpAddr> {
        self.forward.get(&original).copied()
    }

    /// Writes the mapping as JSON: `{"entries": [{"original": .., "replayed": ..}]}`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads a mapping written by [`AddrMap::save`] (for tools that translate
    /// results back; the round trip is tested).
    #[allow(
        dead_code,
        reason = "API for readers of --map-out; exercised by the tests"
    )]
    pub fn load(path: &Path) -> anyhow::Result<AddrMap> {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut m: AddrMap = serde_json::from_str(&s)
            .with_context(|| format!("{} is not an address map", path.display()))?;
        m.forward = m.entries.iter().map(|e| (e.original, e.replayed)).collect();
        m.n_v4 = m.entries.iter().filter(|e| e.replayed.is_ipv4()).count() as u32;
        m.n_v6 = m.entries.iter().filter(|e| e.replayed.is_ipv6()).count() as u128;
        Ok(m)
    }
}

/// MACs written into the frames.
#[derive(Clone, Copy, Debug)]
pub struct Macs {
    /// Source MAC of every frame (the injecting interface).
    pub src: [u8; 6],
    /// Destination MAC of unicast frames (the router's LAN interface).
    pub dst: [u8; 6],
}

/// One rewritten frame, ready to inject.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture timestamp (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The Ethernet frame.
    pub data: Vec<u8>,
    /// Its (replayed) IP source address, if it carries IP.
    pub src: Option<IpAddr>,
}

/// Frames not injected, by reason.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Skipped {
    /// Shorter than an Ethernet header (or its link-layer header).
    pub runt: u64,
    /// Longer than [`MAX_FRAME`].
    pub too_big: u64,
    /// Padded to their original length (still injected).
    pub padded: u64,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runts, {} too big (padded {} truncated frames)",
            self.runt, self.too_big, self.padded
        )
    }
}

/// A capture read, re-framed and rewritten.
pub struct Prepared {
    /// The frames in capture order.
    pub frames: Vec<Frame>,
    /// Packets in the file (including skipped ones).
    pub packets_in_file: u64,
    /// The address mapping.
    pub map: AddrMap,
    /// Frames left out.
    pub skipped: Skipped,
    /// Link type of the capture (e.g. ETHERNET, LINUX_SLL).
    pub linktype_name: String,
}

/// A packet as read from the file.
struct RawPacket {
    ts_ns: u64,
    linktype: DataLink,
    orig_len: u32,
    data: Vec<u8>,
}

/// Reads every packet of a pcap or pcapng file with the project's capture reader
/// ([`flow_meter::meter::for_each_frame`]).
fn read_capture(path: &Path) -> anyhow::Result<Vec<RawPacket>> {
    let mut out = Vec::new();
    flow_meter::meter::for_each_frame(path, |fr| {
        out.push(RawPacket {
            ts_ns: fr.ts_ns,
            linktype: fr.linktype,
            orig_len: fr.orig_len,
            data: fr.data.to_vec(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// Wraps a link-layer frame as Ethernet. `Ok(None)`: too short for its own header.
/// Fails on link types that carry no IP/ARP we can re-frame.
pub fn to_ethernet(linktype: DataLink, data: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let eth = |ethertype: u16, payload: &[u8]| {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let by_version = |payload: &[u8]| match payload.first().map(|b| b >> 4) {
        Some(4) => Some(eth(ETH_P_IPV4, payload)),
        Some(6) => Some(eth(ETH_P_IPV6, payload)),
        _ => None,
    };
    Ok(match linktype {
        DataLink::ETHERNET => (data.len() >= 14).then(|| data.to_vec()),
        // struct sll_header: 16 bytes, protocol (network order) at 14.
        DataLink::LINUX_SLL => {
            (data.len() >= 16).then(|| eth(u16::from_be_bytes([data[14], data[15]]), &data[16..]))
        }
        // struct sll2_header: 20 bytes, protocol at 0.
        DataLink::LINUX_SLL2 => {
            (data.len() >= 20).then(|| eth(u16::from_be_bytes([data[0], data[1]]), &data[20..]))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => by_version(data),
        // 4-byte address family, host order (NULL) or network order (LOOP).
        DataLink::NULL | DataLink::LOOP => {
            if data.len() < 4 {
                None
            } else {
                by_version(&data[4..])
            }
        }
        other => bail!(
            "link type {other:?} is not supported (Ethernet, Linux SLL/SLL2, raw IP and loopback are)"
        ),
    })
}

/// Reads `path`, re-frames and rewrites every packet.
pub fn prepare(path: &Path, macs: Macs) -> anyhow::Result<Prepared> {
    prepare_with(path, macs, AddrMap::default())
}

/// [`prepare`] continuing the mapping `map` (see [`AddrMap::starting_after`]).
pub fn prepare_with(path: &Path, macs: Macs, mut map: AddrMap) -> anyhow::Result<Prepared> {
    let raw = read_capture(path)?;
    let mut frames = Vec::with_capacity(raw.len());
    let mut skipped = Skipped::default();
    let linktype_name = raw
        .first()
        .map(|p| format!("{:?}", p.linktype))
        .unwrap_or_else(|| "empty".into());
    for (i, p) in raw.iter().enumerate() {
        let Some(mut data) = to_ethernet(p.linktype, &p.data)
            .with_context(|| format!("{}: packet {}", path.display(), i + 1))?
        else {
            skipped.runt += 1;
            continue;
        };
        // Restore the length the frame had on the wire.
        let header_delta = data.len() as i64 - p.data.len() as i64;
        let wire_len = (i64::from(p.orig_len) + header_delta).max(0) as usize;
        if wire_len > data.len() && wire_len <= MAX_FRAME {
            data.resize(wire_len, 0);
            skipped.padded += 1;
        }
        if data.len() > MAX_FRAME
            && let Some(end) = ip_end(&data)
        {
            // A trailer (often the FCS) after the IP datagram: drop it.
            data.truncate(end.max(60));
        }
        if data.len() > MAX_FRAME {
            skipped.too_big += 1;
            continue;
        }
        let src = rewrite_frame(&mut data, &mut map, macs)
            .with_context(|| format!("{}: packet {}", path.display(), i + 1))?;
        frames.push(Frame {
            ts_ns: p.ts_ns,
            data,
            src,
        });
    }
    Ok(Prepared {
        frames,
        packets_in_file: raw.len() as u64,
        map,
        skipped,
        linktype_name,
    })
}

/// End of the IP datagram in an Ethernet frame (after up to two VLAN tags), from
/// the IPv4 total length or IPv6 payload length.
fn ip_end(f: &[u8]) -> Option<usize> {
    let (off, ethertype) = l3_start(f);
    match ethertype {
        ETH_P_IPV4 if f.len() >= off + 4 => Some(off + usize::from(be16(f, off + 2))),
        ETH_P_IPV6 if f.len() >= off + 6 => Some(off + 40 + usize::from(be16(f, off + 4))),
        _ => None,
    }
}

/// Offset of the L3 header in an Ethernet frame of at least 14 bytes and its
/// ethertype, behind up to two VLAN tags (802.1Q, 802.1ad, old QinQ 0x9100).
fn l3_start(f: &[u8]) -> (usize, u16) {
    let mut off = 12;
    let mut ethertype = be16(f, off);
    for _ in 0..2 {
        if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) && f.len() >= off + 6 {
            off += 4;
            ethertype = be16(f, off);
        }
    }
    (off + 2, ethertype)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites one Ethernet frame in place (MACs, addresses, checksums); returns the
/// replayed IP source address.
pub fn rewrite_frame(
    f: &mut [u8],
    map: &mut AddrMap,
    macs: Macs,
) -> anyhow::Result<Option<IpAddr>> {
    if f.len() < 14 {
        return Ok(None);
    }
    if f[0] & 1 == 0 {
        f[0..6].copy_from_slice(&macs.dst);
    }
    f[6..12].copy_from_slice(&macs.src);
    let (off, ethertype) = l3_start(f);
    let l3 = &mut f[off..];
    match ethertype {
        ETH_P_IPV4 => rewrite_ipv4(l3, map, true),
        ETH_P_IPV6 => rewrite_ipv6(l3, map, true),
        ETH_P_ARP => {
            rewrite_arp(l3, map, macs)?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn map4(map: &mut AddrMap, b: &mut [u8]) -> anyhow::Result<()> {
    let a = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    if let IpAddr::V4(r) = map.map(IpAddr::V4(a))? {
        b.copy_from_slice(&r.octets());
    }
    Ok(())
}

fn map6(map: &mut AddrMap, b: &mut [u8]) -> anyhow::Result<()> {
    let a = Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).expect("16 bytes"));
    if let IpAddr::V6(r) = map.map(IpAddr::V6(a))? {
        b.copy_from_slice(&r.octets());
    }
    Ok(())
}

/// RFC 1071 checksum of `parts` (etherparse's sum), as written into a header.
fn csum(parts: &[&[u8]]) -> u16 {
    let mut s = Sum16BitWords::new();
    for p in parts {
        s = s.add_slice(p);
    }
    s.ones_complement().to_be()
}

/// RFC 1624 eqn. 3: the checksum `hc` after the bytes `old` became `new` (equal
/// even lengths, aligned to 16-bit words of the summed data).
pub fn csum_adjust(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum: u32 = u32::from(!hc);
    for w in old.chunks(2) {
        sum += u32::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    for w in new.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Byte offset of the checksum field inside the L4 header, for protocols whose
/// checksum covers a pseudo header (TCP, UDP) or not (ICMP).
fn l4_csum_offset(proto: u8) -> Option<usize> {
    match proto {
        6 => Some(16),
        17 => Some(6),
        1 | 58 => Some(2),
        _ => None,
    }
}

/// Rewrites an IPv4 packet at the start of `p`. `outer`: false for a header quoted
/// inside an ICMP error (no source returned, no nested quoting).
fn rewrite_ipv4(p: &mut [u8], map: &mut AddrMap, outer: bool) -> anyhow::Result<Option<IpAddr>> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return Ok(None);
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Ok(None);
    }
    let old_addrs: [u8; 8] = p[12..20].try_into().expect("8 bytes");
    map4(map, &mut p[12..16])?;
    map4(map, &mut p[16..20])?;
    let new_addrs: [u8; 8] = p[12..20].try_into().expect("8 bytes");
    put16(p, 10, 0);
    let hc = csum(&[&p[..ihl]]);
    put16(p, 10, hc);
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));

    let total = usize::from(be16(p, 2));
    let frag = be16(p, 6);
    let (more_frags, frag_off) = (frag & 0x2000 != 0, frag & 0x1fff);
    let proto = p[9];
    if frag_off != 0 || total < ihl {
        return Ok(Some(src));
    }
    let end = total.min(p.len());
    let complete = total <= p.len() && !more_frags;
    let l4 = &mut p[ihl..end];
    if outer && proto == 1 && l4.len() >= 8 && matches!(l4[0], 3 | 4 | 5 | 11 | 12) {
        // ICMP error: the offending datagram's header follows the 8-byte ICMP header.
        rewrite_ipv4(&mut l4[8..], map, false)?;
    }
    let Some(co) = l4_csum_offset(proto) else {
        return Ok(Some(src));
    };
    if l4.len() < co + 2 {
        return Ok(Some(src));
    }
    let old = be16(l4, co);
    if proto == 17 && old == 0 {
        return Ok(Some(src)); // UDP over IPv4 without checksum.
    }
    let new = if complete && outer {
        put16(l4, co, 0);
        let c = if proto == 1 {
            csum(&[l4])
        } else {
            let len = (l4.len() as u16).to_be_bytes();
            csum(&[&new_addrs, &[0, proto], &len, l4])
        };
        if proto == 17 && c == 0 { 0xffff } else { c }
    } else if proto == 1 {
        old // ICMP covers no pseudo header; a quoted ICMP header is left as is.
    } else {
        csum_adjust(old, &old_addrs, &new_addrs)
    };
    put16(l4, co, new);
    Ok(Some(src))
}

/// Rewrites an IPv6 packet at the start of `p` (see [`rewrite_ipv4`]).
fn rewrite_ipv6(p: &mut [u8], map: &mut AddrMap, outer: bool) -> anyhow::Result<Option<IpAddr>> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Ok(None);
    }
    let old_addrs: [u8; 32] = p[8..40].try_into().expect("32 bytes");
    map6(map, &mut p[8..24])?;
    map6(map, &mut p[24..40])?;
    let new_addrs: [u8; 32] = p[8..40].try_into().expect("32 bytes");
    let src = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&p[8..24]).expect("16 bytes"),
    ));

    // Walk the extension headers (hop-by-hop, routing, fragment, destination
    // options), at most 8 of them.
    let payload_len = usize::from(be16(p, 4));
    let mut next = p[6];
    let mut off = 40;
    let mut complete = 40 + payload_len <= p.len();
    for _ in 0..8 {
        match next {
            0 | 43 | 60 if p.len() >= off + 2 => {
                next = p[off];
                off += (usize::from(p[off + 1]) + 1) * 8;
            }
            44 if p.len() >= off + 8 => {
                let fo = be16(p, off + 2);
                if fo & 0xfff8 != 0 {
                    return Ok(Some(src)); // Not the first fragment: no L4 header.
                }
                if fo & 1 != 0 {
                    complete = false;
                }
                next = p[off];
                off += 8;
            }
            _ => break,
        }
    }
    let end = (40 + payload_len).min(p.len());
    if off >= end {
        return Ok(Some(src));
    }
    let l4 = &mut p[off..end];
    if outer && next == 58 && l4.len() >= 8 {
        match l4[0] {
            // Errors quote the offending packet after the 8-byte header.
            1..=4 => {
                rewrite_ipv6(&mut l4[8..], map, false)?;
            }
            // Neighbour solicitation/advertisement: target address at 8.
            135 | 136 if l4.len() >= 24 => map6(map, &mut l4[8..24])?,
            _ => {}
        }
    }
    let Some(co) = l4_csum_offset(next).filter(|_| next != 1) else {
        return Ok(Some(src));
    };
    if l4.len() < co + 2 {
        return Ok(Some(src));
    }
    let old = be16(l4, co);
    let new = if complete && outer {
        put16(l4, co, 0);
        let len = (l4.len() as u32).to_be_bytes();
        let c = csum(&[&new_addrs, &len, &[0, 0, 0, next], l4]);
        if next == 17 && c == 0 { 0xffff } else { c }
    } else {
        csum_adjust(old, &old_addrs, &new_addrs)
    };
    put16(l4, co, new);
    Ok(Some(src))
}

/// Rewrites an Ethernet/IPv4 ARP packet: sender and target protocol addresses,
/// sender hardware address (and a non-zero target hardware address).
fn rewrite_arp(p: &mut [u8], map: &mut AddrMap, macs: Macs) -> anyhow::Result<()> {
    if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != ETH_P_IPV4 || p[4] != 6 || p[5] != 4 {
        return Ok(());
    }
    p[8..14].copy_from_slice(&macs.src);
    map4(map, &mut p[14..18])?;
    if p[18..24].iter().any(|&b| b != 0) && p[18] & 1 == 0 {
        p[18..24].copy_from_slice(&macs.dst);
    }
    map4(map, &mut p[24..28])
}

/// Writes the rewritten frames as an Ethernet pcap (nanosecond timestamps).
pub fn write_pcap(path: &Path, p: &Prepared) -> anyhow::Result<()> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(f), header)?;
    for fr in &p.frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(fr.ts_ns),
            fr.data.len() as u32,
            &fr.data,
        ))?;
    }
    Ok(())
}

/// Outcome of an injection.
#[derive(Clone, Debug, Default)]
pub struct InjectReport {
    /// Frames sent.
    pub sent: u64,
    /// Bytes sent (Ethernet frames).
    pub bytes: u64,
    /// Frames the socket refused (after retries).
    pub send_errors: u64,
    /// Wall-clock time from the first to the last frame.
    pub elapsed: Duration,
    /// When the first frame went out.
    pub started: Option<SystemTime>,
}

/// Send offsets (from the first frame) of each frame under `timing`.
pub fn schedule(frames: &[Frame], timing: Timing) -> Vec<Duration> {
    let mut out = Vec::with_capacity(frames.len());
    let mut t = Duration::ZERO;
    for (i, f) in frames.iter().enumerate() {
        match timing {
            Timing::Original(cap) => {
                if i > 0 {
                    let gap = Duration::from_nanos(f.ts_ns.saturating_sub(frames[i - 1].ts_ns));
                    t += gap.min(cap);
                }
                out.push(t);
            }
            Timing::Rate(pps) => out.push(Duration::from_secs_f64(i as f64 / pps)),
            Timing::TopSpeed => out.push(Duration::ZERO),
        }
    }
    out
}

/// An AF_PACKET raw socket bound to one interface (send only).
struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    fn open(iface: &str) -> anyhow::Result<PacketSocket> {
        let name = std::ffi::CString::new(iface).context("interface name has a NUL byte")?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned by the result.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            ensure!(ifindex != 0, "no interface {iface:?} here");
            // Protocol 0: this socket receives nothing.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            ensure!(
                fd >= 0,
                "AF_PACKET socket: {} (needs root/CAP_NET_RAW)",
                std::io::Error::last_os_error()
            );
            let s = PacketSocket { fd };
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            ensure!(
                rc == 0,
                "binding to {iface:?}: {}",
                std::io::Error::last_os_error()
            );
            Ok(s)
        }
    }

    /// Sends one frame, retrying briefly while the device queue is full.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut tries = 0;
        loop {
            // SAFETY: the buffer is valid for its length; fd is an open socket.
            let rc = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) && tries < 100 {
                tries += 1;
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            return Err(e);
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// Injects the frames on `iface` (inside `ns` when given) with `timing`. Calls
/// `on_sent(index, wall_clock)` after each frame. Runs on a helper thread that
/// enters the namespace, so the caller's namespace is untouched. Stops early on
/// Ctrl-C.
pub fn inject(
    p: &Prepared,
    ns: Option<&str>,
    iface: &str,
    timing: Timing,
    mut on_sent: impl FnMut(usize, SystemTime) + Send,
) -> anyhow::Result<InjectReport> {
    let offsets = schedule(&p.frames, timing);
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> anyhow::Result<InjectReport> {
                if let Some(ns) = ns {
                    netns::enter_thread(ns)?;
                }
                let sock = PacketSocket::open(iface)?;
                let mut r = InjectReport::default();
                let start = Instant::now();
                r.started = Some(SystemTime::now());
                let mut first_err = None;
                for (i, (f, off)) in p.frames.iter().zip(&offsets).enumerate() {
                    let due = start + *off;
                    loop {
                        let now = Instant::now();
                        if now >= due {
                            break;
                        }
                        netns::check_interrupt()?;
                        std::thread::sleep((due - now).min(Duration::from_millis(100)));
                    }
                    match sock.send(&f.data) {
                        Ok(()) => {
                            r.sent += 1;
                            r.bytes += f.data.len() as u64;
                            on_sent(i, SystemTime::now());
                        }
                        Err(e) => {
                            r.send_errors += 1;
                            first_err.get_or_insert(e);
                        }
                    }
                }
                r.elapsed = start.elapsed();
                if let Some(e) = first_err {
                    eprintln!(
                        "replay: {} frames not sent, first error: {e}",
                        r.send_errors
                    );
                }
                Ok(r)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the injecting thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;

    const MACS: Macs = Macs {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
    };

    fn tcp_v4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([0x0a; 6], [0x0c; 6])
            .ipv4(src, dst, 64)
            .tcp(40000, 22, 7, 1024)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Checks every checksum of an Ethernet frame with etherparse's own code.
    fn assert_checksums_valid(f: &[u8]) {
        let s = SlicedPacket::from_ethernet(f).unwrap();
        match s.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                let h = ip.header().to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "IPv4 header checksum"
                );
                match s.transport.unwrap() {
                    TransportSlice::Tcp(t) => {
                        assert_eq!(
                            t.checksum(),
                            t.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                                .unwrap()
                        )
                    }
                    TransportSlice::Udp(u) => {
                        let hdr = u.to_header();
                        assert_eq!(
                            hdr.checksum,
                            hdr.calc_checksum_ipv4_raw(
                                ip.header().source(),
                                ip.header().destination(),
                                u.payload()
                            )
                            .unwrap()
                        )
                    }
                    TransportSlice::Icmpv4(i) => {
                        assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()))
                    }
                    other => panic!("unexpected transport {other:?}"),
                }
            }
            etherparse::NetSlice::Ipv6(ip) => {
                let (src, dst) = (ip.header().source(), ip.header().destination());
                match s.transport.unwrap() {
                    TransportSlice::Tcp(t) => {
                        assert_eq!(t.checksum(), t.calc_checksum_ipv6(src, dst).unwrap())
                    }
                    TransportSlice::Udp(u) => {
                        let hdr = u.to_header();
                        assert_eq!(
                            hdr.checksum,
                            hdr.calc_checksum_ipv6_raw(src, dst, u.payload()).unwrap()
                        )
                    }
                    TransportSlice::Icmpv6(i) => assert!(i.is_checksum_valid(src, dst)),
                    other => panic!("unexpected transport {other:?}"),
                }
            }
            other => panic!("unexpected net {other:?}"),
        }
    }

    #[test]
    fn mapping_is_deterministic_in_order_of_first_sight() {
        let mut m = AddrMap::default();
        let a: IpAddr = "172.16.0.8".parse().unwrap();
        let b: IpAddr = "64.13.134.52".parse().unwrap();
        assert_eq!(m.map(a).unwrap(), "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(m.map(b).unwrap(), "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(m.map(a).unwrap(), "198.18.0.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(
            m.map(v6).unwrap(),
            "2001:db8:7ad::1".parse::<IpAddr>().unwrap()
        );
        for keep in ["255.255.255.255", "224.0.0.251", "0.0.0.0", "ff02::1", "::"] {
            let k: IpAddr = keep.parse().unwrap();
            assert_eq!(m.map(k).unwrap(), k, "{keep} must be kept");
        }
        assert_eq!(m.original_of("198.18.0.2".parse().unwrap()), Some(b));
        assert_eq!(m.entries.len(), 3);
    }

    #[test]
    fn mapping_survives_a_save_load_round_trip() {
        let mut m = AddrMap::default();
        for a in ["10.0.0.1", "10.0.0.2", "2001:db8::5"] {
            m.map(a.parse().unwrap()).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("tad-map-{}", std::process::id()));
        m.save(&dir).unwrap();
        let mut l = AddrMap::load(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(l.entries, m.entries);
        // New addresses continue after the loaded ones.
        assert_eq!(
            l.map("10.0.0.3".parse().unwrap()).unwrap(),
            "198.18.0.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            l.replayed_of("10.0.0.2".parse().unwrap()),
            Some("198.18.0.2".parse().unwrap())
        );
    }

    #[test]
    fn ipv4_tcp_frame_gets_new_addresses_macs_and_valid_checksums() {
        let mut f = tcp_v4([172, 16, 0, 8], [64, 13, 134, 52], b"hello");
        let mut m = AddrMap::default();
        let src = rewrite_frame(&mut f, &mut m, MACS).unwrap();
        assert_eq!(src, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(&f[0..6], &MACS.dst);
        assert_eq!(&f[6..12], &MACS.src);
        let s = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [198, 18, 0, 1]);
        assert_eq!(ip.header().destination(), [198, 18, 0, 2]);
        assert_checksums_valid(&f);
    }

    #[test]
    fn broadcast_destination_mac_is_kept() {
        let mut f = tcp_v4([10, 0, 0, 1], [10, 0, 0, 255], b"");
        f[0..6].copy_from_slice(&[0xff; 6]);
        rewrite_frame(&mut f, &mut AddrMap::default(), MACS).unwrap();
        assert_eq!(&f[0..6], &[0xff; 6]);
    }

    #[test]
    fn udp_and_icmp_and_ipv6_checksums_are_recomputed() {
        let mut frames = Vec::new();
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
            .udp(5353, 53)
            .write(&mut v, b"query")
            .unwrap();
        frames.push(v);
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
            .icmpv4_echo_request(1, 2)
            .write(&mut v, b"ping")
            .unwrap();
        frames.push(v);
        let (a, b) = (
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(a, b, 64)
            .udp(5683, 5683)
            .write(&mut v, b"coap")
            .unwrap();
        frames.push(v);
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(a, b, 64)
            .tcp(1, 2, 3, 4)
            .write(&mut v, b"x")
            .unwrap();
        frames.push(v);
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(a, b, 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut v, b"ping6")
            .unwrap();
        frames.push(v);
        let mut m = AddrMap::default();
        for mut f in frames {
            rewrite_frame(&mut f, &mut m, MACS).unwrap();
            assert_checksums_valid(&f);
        }
        assert!(m.entries.iter().all(|e| match e.replayed {
            IpAddr::V4(v) => u32::from(v) >> 17 == u32::from(V4_BASE) >> 17,
            IpAddr::V6(v) => v.segments()[..3] == [0x2001, 0xdb8, 0x7ad],
        }));
    }

    #[test]
    fn incremental_update_matches_a_full_recompute() {
        // A first fragment: the TCP checksum covers data we do not have, so it is
        // adjusted for the address change; applying the same rewrite to the
        // complete segment and recomputing must give the same value.
        let payload = vec![0x5a; 100];
        let mut full = tcp_v4([10, 0, 2, 15], [192, 168, 0, 101], &payload);
        let mut frag = full.clone();
        let frag_field = 14 + 6;
        frag[frag_field] |= 0x20; // More Fragments
        rewrite_frame(&mut full, &mut AddrMap::default(), MACS).unwrap();
        rewrite_frame(&mut frag, &mut AddrMap::default(), MACS).unwrap();
        let tcp_csum = 14 + 20 + 16;
        assert_eq!(be16(&frag, tcp_csum), be16(&full, tcp_csum));
        assert_checksums_valid(&full);
    }

    #[test]
    fn icmp_error_quotes_are_rewritten_consistently() {
        // Port unreachable from 10.9.9.9 quoting a UDP packet 10.0.0.1 -> 10.9.9.9.
        let mut quoted = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 9, 9, 9], 64)
            .udp(4000, 161)
            .write(&mut quoted, b"")
            .unwrap();
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 9, 9, 9], [10, 0, 0, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut v, &quoted)
            .unwrap();
        let mut m = AddrMap::default();
        rewrite_frame(&mut v, &mut m, MACS).unwrap();
        assert_checksums_valid(&v);
        let inner = &v[14 + 20 + 8..];
        assert_eq!(
            &inner[12..16],
            &[198, 18, 0, 2],
            "quoted source = the outer destination"
        );
        assert_eq!(&inner[16..20], &[198, 18, 0, 1]);
        let h = etherparse::Ipv4HeaderSlice::from_slice(inner)
            .unwrap()
            .to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "quoted header checksum"
        );
    }

    #[test]
    fn arp_addresses_and_macs_are_rewritten() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0xaa; 6]);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0xaa; 6]);
        f.extend_from_slice(&[192, 168, 1, 10]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[192, 168, 1, 1]);
        let mut m = AddrMap::default();
        rewrite_frame(&mut f, &mut m, MACS).unwrap();
        assert_eq!(&f[22..28], &MACS.src);
        assert_eq!(&f[28..32], &[198, 18, 0, 1]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[198, 18, 0, 2]);
    }

    #[test]
    fn vlan_tagged_frames_are_rewritten_behind_the_tag() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut v, b"abc")
            .unwrap();
        rewrite_frame(&mut v, &mut AddrMap::default(), MACS).unwrap();
        let s = SlicedPacket::from_ethernet(&v).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [198, 18, 0, 1]);
        let TransportSlice::Udp(u) = s.transport.unwrap() else {
            panic!()
        };
        let h = u.to_header();
        assert_eq!(
            h.checksum,
            h.calc_checksum_ipv4_raw(ip.header().source(), ip.header().destination(), u.payload())
                .unwrap()
        );
    }

    #[test]
    fn cooked_and_raw_captures_are_reframed_as_ethernet() {
        let mut ip = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut ip, b"x")
            .unwrap();
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let e = to_ethernet(DataLink::LINUX_SLL, &sll).unwrap().unwrap();
        assert_eq!(be16(&e, 12), ETH_P_IPV4);
        assert_eq!(&e[14..], &ip[..]);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert_eq!(
            to_ethernet(DataLink::LINUX_SLL2, &sll2).unwrap().unwrap()[14..],
            ip[..]
        );
        assert_eq!(
            to_ethernet(DataLink::RAW, &ip).unwrap().unwrap()[14..],
            ip[..]
        );
        assert_eq!(to_ethernet(DataLink::LINUX_SLL, &[0; 5]).unwrap(), None);
        assert!(to_ethernet(DataLink::IEEE802_11, &ip).is_err());
    }

    #[test]
    fn original_timing_caps_long_gaps() {
        let f = |s: u64| Frame {
            ts_ns: s * 1_000_000_000,
            data: vec![],
            src: None,
        };
        let frames = [f(100), f(101), f(200), f(202)];
        let s = schedule(&frames, Timing::Original(Duration::from_secs(5)));
        assert_eq!(s, [0, 1, 6, 8].map(Duration::from_secs));
        let r = schedule(&frames, Timing::Rate(2.0));
        assert_eq!(r[3], Duration::from_millis(1500));
        assert!("rate=0".parse::<Timing>().is_err());
        assert_eq!("rate=100".parse::<Timing>().unwrap(), Timing::Rate(100.0));
    }

    #[test]
    fn every_shared_capture_rewrites_into_testbed_ranges_with_valid_ip_checksums() {
        let dir = crate::util::workspace_root().join("../shared/pcaps");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut seen = 0;
        for e in rd.flatten() {
            let p = e.path();
            if !p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                continue;
            }
            seen += 1;
            let prep = prepare(&p, MACS).unwrap();
            assert_eq!(
                prep.frames.len() as u64 + prep.skipped.runt + prep.skipped.too_big,
                prep.packets_in_file
            );
            for e in &prep.map.entries {
                let ok = match e.replayed {
                    IpAddr::V4(v) => u32::from(v) >> 17 == u32::from(V4_BASE) >> 17,
                    IpAddr::V6(v) => v.segments()[..3] == [0x2001, 0xdb8, 0x7ad],
                };
                assert!(
                    ok,
                    "{}: {} mapped outside the replay ranges",
                    p.display(),
                    e.replayed
                );
            }
            for f in &prep.frames {
                if let Ok(s) = SlicedPacket::from_ethernet(&f.data)
                    && let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net
                {
                    let h = ip.header().to_header();
                    assert_eq!(
                        h.header_checksum,
                        h.calc_header_checksum(),
                        "{}",
                        p.display()
                    );
                    // No address of the capture leaks into the testbed.
                    for a in [h.source, h.destination].map(Ipv4Addr::from) {
                        let in_range = u32::from(a) >> 17 == u32::from(V4_BASE) >> 17;
                        assert!(
                            in_range || AddrMap::keeps(IpAddr::V4(a)),
                            "{}: {a} left unmapped",
                            p.display()
                        );
                    }
                }
            }
        }
        assert!(seen > 0 || !dir.exists());
    }
}
