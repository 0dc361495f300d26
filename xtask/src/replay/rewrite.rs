//! Steps 2 and 3 of a replay: one Ethernet frame rewritten in place into testbed
//! addresses and MACs ([`rewrite_frame`]), with its IP, TCP, UDP, ICMP and ICMPv6
//! checksums fixed (RFC 1071 sums; RFC 1624 incremental updates for fragments).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::checksum::Sum16BitWords;
use fw_common::proto::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ};

use super::{AddrMap, Macs};

/// End of the IP datagram in an Ethernet frame (after up to two VLAN tags), from
/// the IPv4 total length or IPv6 payload length.
pub(super) fn ip_end(f: &[u8]) -> Option<usize> {
    let (off, ethertype) = l3_start(f);
    match ethertype {
        ETH_P_IP if f.len() >= off + 4 => Some(off + usize::from(be16(f, off + 2))),
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
        if matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ) && f.len() >= off + 6 {
            off += 4;
            ethertype = be16(f, off);
        }
    }
    (off + 2, ethertype)
}

pub(super) fn be16(b: &[u8], at: usize) -> u16 {
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
        ETH_P_IP => rewrite_ipv4(l3, map, true),
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
    if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != ETH_P_IP || p[4] != 6 || p[5] != 4 {
        return Ok(());
    }
    p[8..14].copy_from_slice(&macs.src);
    map4(map, &mut p[14..18])?;
    if p[18..24].iter().any(|&b| b != 0) && p[18] & 1 == 0 {
        p[18..24].copy_from_slice(&macs.dst);
    }
    map4(map, &mut p[24..28])
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::{
        super::{V4_BASE, tests::MACS},
        *,
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
}
