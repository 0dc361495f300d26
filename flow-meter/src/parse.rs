//! Frame parsing: one captured frame → the flow-key fields and per-packet
//! metadata ([`ParsedPacket`]) the XDP program extracts from the same bytes.
//!
//! The header rules are `fw_common::proto`'s, the ones the XDP program
//! (`fw-ebpf`) parses with, so a flow gets the same key in training as in the
//! kernel (`fw-ctl/tests/meter_equivalence.rs` checks it frame by frame):
//! 1. Link layer, by the file's (or pcapng interface's) link type: Ethernet (with up
//!    to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad / 0x9100 tags; the innermost VLAN id is
//!    kept), Linux cooked capture v1 (`LINUX_SLL`, 113) and v2 (`LINUX_SLL2`, 276),
//!    raw IP (`RAW` 101, `IPV4` 228, `IPV6` 229) and BSD loopback (`NULL` 0, `LOOP`
//!    108). Anything that is not IPv4/IPv6 (ARP, LLDP...) is not parsed.
//! 2. IPv4 (RFC 791): header length from IHL; a header whose options are cut short
//!    is not parsed (the kernel counts it malformed). `ip_len` = total length. A
//!    non-first fragment (fragment offset != 0) has no transport header: ports 0,
//!    no TCP flags.
//! 3. IPv6 (RFC 8200): [`walk_ipv6_ext`] steps over up to [`MAX_IPV6_EXT_HEADERS`]
//!    extension headers (hop-by-hop, routing, destination options, fragment, AH
//!    with its 4-octet length units, RFC 4302) to the upper-layer protocol; a
//!    non-first fragment, an extension header cut short or a longer chain leaves
//!    the flow without ports. `ip_len` = payload length + 40.
//! 4. TCP (ports and the flag byte), UDP (ports), ICMP / ICMPv6 (type, code; ports
//!    0). A transport header cut short by the capture's snap length is treated as
//!    absent (ports 0, no flags), as the XDP program's bounds checks do.
//!
//! Tunnels are not entered by either parser: IPv4 or IPv6 in IPv6 (next header 4,
//! 41), 6in4, GRE and ESP are flows of the outer addresses with that protocol
//! number and ports 0.

pub use fw_common::proto::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};
use fw_common::{
    flow::{FAMILY_V4, FAMILY_V6, PacketMeta, v4_mapped},
    proto::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_HLEN, is_vlan_tpid, walk_ipv6_ext,
    },
};
use pcap_file::DataLink;

/// Link layers the meter decodes (the XDP program sees Ethernet only; the
/// kernel-equivalence test gives other captures an Ethernet header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II, VLAN tags stepped over (`ETHERNET`, 1).
    Ethernet,
    /// Linux cooked capture v1, 16-octet header, protocol at octets 14-15 (113).
    LinuxSll,
    /// Linux cooked capture v2, 20-octet header, protocol at octets 0-1 (276).
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
    /// Source address (map encoding: network order, IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address, same encoding.
    pub dst: [u8; 16],
    /// Source port, host byte order; 0 for ICMP, non-first fragments, missing
    /// headers.
    pub sport: u16,
    /// Destination port, same rules.
    pub dport: u16,
    /// IP protocol number (IPv6: after the extension headers, see
    /// `fw_common::proto::Ipv6Upper::proto`).
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6` (`fw_common::flow`).
    pub family: u8,
    /// Innermost VLAN id (12 bits), 0 when untagged.
    pub vlan_id: u16,
    /// Length, TCP flags, ICMP type/code: the input of `FlowStats::account`.
    pub meta: PacketMeta,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses one frame of the given link type down to the flow key fields. `None` for
/// frames that are not IPv4/IPv6 or whose link-layer or IP header (IPv4 options
/// included) is cut short: the frames the XDP program counts as non-IP or
/// malformed and opens no flow for.
pub fn parse_frame(link: LinkType, frame: &[u8]) -> Option<ParsedPacket> {
    let (ethertype, l3, vlan_id) = match link {
        LinkType::Ethernet => {
            let mut ethertype = be16(frame, 12)?;
            let mut off = ETH_HLEN;
            let mut vlan = 0u16;
            for _ in 0..MAX_VLAN_TAGS {
                if !is_vlan_tpid(ethertype) {
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
            4 => (ETH_P_IP, 0, 0),
            6 => (ETH_P_IPV6, 0, 0),
            _ => return None,
        },
        LinkType::Loopback => {
            let fam = frame.get(..4)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24/28/30 (BSDs, macOS).
            let ethertype = match (le, be) {
                (2, _) | (_, 2) => ETH_P_IP,
                (10 | 24 | 28 | 30, _) | (_, 10 | 24 | 28 | 30) => ETH_P_IPV6,
                _ => return None,
            };
            (ethertype, 4, 0)
        }
    };
    let ip = frame.get(l3..)?;
    match ethertype {
        ETH_P_IP => parse_ipv4(ip, vlan_id),
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
    // The options are part of the header: without them the kernel counts the
    // frame malformed.
    if ihl < 20 || ip.len() < ihl {
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
    let h = ip.get(..IPV6_HLEN)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let ip_len = be16(h, 4)?.saturating_add(IPV6_HLEN as u16);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    // The XDP program's walk, over the captured bytes after the fixed header.
    let ext = &ip[IPV6_HLEN..];
    let up = walk_ipv6_ext(h[6], |at| Some([*ext.get(at)?, *ext.get(at + 1)?]));
    let l4 = if up.transport {
        ext.get(up.offset..)
    } else {
        None
    };
    Some(transport(
        src, dst, up.proto, FAMILY_V6, vlan_id, ip_len, l4,
    ))
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
        IPPROTO_TCP if l4.len() >= 20 => {
            p.sport = u16::from_be_bytes([l4[0], l4[1]]);
            p.dport = u16::from_be_bytes([l4[2], l4[3]]);
            p.meta.is_tcp = true;
            p.meta.tcp_flags = l4[13];
        }
        IPPROTO_UDP if l4.len() >= 8 => {
            p.sport = u16::from_be_bytes([l4[0], l4[1]]);
            p.dport = u16::from_be_bytes([l4[2], l4[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if l4.len() >= 4 => {
            p.meta.icmp = Some((l4[0], l4[1]));
        }
        _ => {}
    }
    p
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use fw_common::flow::tcp_flags::SYN;

    use super::*;
    use crate::test_frames::{eth, ipv4, tcp, udp};

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
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IP, &[0x2005, 0x0064], &ip)).unwrap();
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
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IP, &[], &frag)).unwrap();
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
            parse_frame(LinkType::Ethernet, &eth(ETH_P_IP, &[], &first))
                .unwrap()
                .sport,
            5353
        );
        // ARP and truncated headers are skipped.
        assert!(parse_frame(LinkType::Ethernet, &eth(0x0806, &[], &[0u8; 28])).is_none());
        assert!(parse_frame(LinkType::Ethernet, &eth(ETH_P_IP, &[], &ip[..19])).is_none());
        // Transport header cut by the snap length: accounted without ports.
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IP, &[], &ip[..30])).unwrap();
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
        sll.extend_from_slice(&ETH_P_IP.to_be_bytes());
        sll.extend_from_slice(&ip);
        let mut sll2 = ETH_P_IP.to_be_bytes().to_vec();
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

    /// AH with a 12-octet ICV: 24 octets, Payload Len (24 / 4) - 2 = 4.
    fn ah(next: u8) -> Vec<u8> {
        let mut a = vec![next, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 7];
        a.resize(24, 0xaa);
        a
    }

    #[test]
    fn ipv6_authentication_header_is_walked_in_4_octet_units() {
        // AH -> TCP.
        let mut ext = ah(6);
        let p = parse_frame(LinkType::RawIp, &ipv6(51, &ext, &tcp(40000, 443, SYN))).unwrap();
        assert_eq!((p.proto, p.sport, p.dport), (6, 40000, 443));
        // Hop-by-hop -> AH -> UDP.
        ext = vec![51, 0, 1, 4, 0, 0, 0, 0];
        ext.extend(ah(17));
        let pkt = ipv6(0, &ext, &udp(5353, 53, 4));
        let p = parse_frame(LinkType::Ethernet, &eth(ETH_P_IPV6, &[7], &pkt)).unwrap();
        assert_eq!((p.proto, p.sport, p.dport, p.vlan_id), (17, 5353, 53, 7));
        assert_eq!(p.meta.ip_len as usize, pkt.len());
    }

    #[test]
    fn cut_headers_match_the_kernel() {
        // An extension header cut short: the IPv6 header is complete, so the packet
        // is a flow of the header's type without ports (the kernel filters and
        // accounts it the same way).
        let mut pkt = ipv6(0, &[6, 0, 0, 0, 0, 0, 0, 0], &tcp(1, 2, SYN));
        pkt.truncate(41);
        let p = parse_frame(LinkType::RawIp, &pkt).unwrap();
        assert_eq!((p.proto, p.sport, p.meta.is_tcp), (0, 0, false));
        // A non-first fragment's payload is not read as headers, whatever it holds.
        let mut ext = vec![60, 0, 0x05, 0x00, 0, 0, 0, 1];
        ext.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        let p = parse_frame(LinkType::RawIp, &ipv6(44, &ext, &tcp(1, 2, SYN))).unwrap();
        assert_eq!((p.proto, p.sport), (60, 0));
        // IPv4 options cut short: the IP header is incomplete (kernel: malformed).
        let ip = ipv4([192, 0, 2, 1], [192, 0, 2, 2], 6, 0, 8, &tcp(1, 2, SYN));
        assert!(parse_frame(LinkType::RawIp, &ip[..27]).is_none());
        assert!(parse_frame(LinkType::RawIp, &ip[..28]).is_some());
    }
}
