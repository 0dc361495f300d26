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
//! Files: this module (arguments, reading and re-framing, the address map),
//! [`rewrite`] (steps 2 and 3), [`inject`] (step 4 and `--write`).
//!
//! The mapping is written with `--map-out` as JSON ([`AddrMap::save`]) so `eval`
//! can translate blocks and alerts back into the capture's own addresses.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use fw_common::proto::{ETH_P_IP, ETH_P_IPV6};
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

mod inject;
mod rewrite;
pub use inject::{inject, write_pcap};
use rewrite::ip_end;
pub use rewrite::rewrite_frame;

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
        Some(4) => Some(eth(ETH_P_IP, payload)),
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

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket};

    use super::*;

    pub(super) const MACS: Macs = Macs {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
    };

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
    fn cooked_and_raw_captures_are_reframed_as_ethernet() {
        let mut ip = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut ip, b"x")
            .unwrap();
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let e = to_ethernet(DataLink::LINUX_SLL, &sll).unwrap().unwrap();
        assert_eq!(rewrite::be16(&e, 12), ETH_P_IP);
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
        let s = inject::schedule(&frames, Timing::Original(Duration::from_secs(5)));
        assert_eq!(s, [0, 1, 6, 8].map(Duration::from_secs));
        let r = inject::schedule(&frames, Timing::Rate(2.0));
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
