//! Ethernet, VLAN, IPv4, IPv6 (with extension headers), TCP, UDP and ICMP headers
//! built byte by byte for the verdict tables; checksums are left zero (XDP does
//! not check them).

use std::net::{Ipv4Addr, Ipv6Addr};

/// TPID of an IEEE 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an IEEE 802.1ad (service, QinQ outer) VLAN tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Ethernet header (+ VLAN tags, outermost first, as (TPID, VID)) and ethertype.
pub fn eth(vlans: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header with `opt_words` 32-bit words of options (NOPs), `frag` = flags +
/// fragment offset field, followed by `payload`. Total length covers the payload.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    opt_words: u8,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + opt_words;
    let tot = ihl as u16 * 4 + payload.len() as u16;
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(std::iter::repeat_n(1u8, opt_words as usize * 4)); // NOP options
    h.extend_from_slice(payload);
    h
}

/// IPv6 header, the extension headers `ext` in order, then `payload`. Each
/// extension header is (type, body) where the body excludes the 2 bytes of
/// next-header and length and is padded to a multiple of 8 octets; a fragment
/// header (44) takes the 6 bytes of [`frag6`]. Payload length covers all of it.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    ext: &[(u8, Vec<u8>)],
    payload: &[u8],
) -> Vec<u8> {
    let mut exts = Vec::new();
    let mut types: Vec<u8> = ext.iter().map(|(t, _)| *t).collect();
    types.push(proto);
    for (i, (t, body)) in ext.iter().enumerate() {
        let next = types[i + 1];
        if *t == 44 {
            // Fragment header: next, reserved, offset/flags (2), id (4).
            exts.push(next);
            exts.push(0);
            exts.extend_from_slice(&body[..6]);
        } else {
            let mut b = vec![next, 0];
            b.extend_from_slice(body);
            while b.len() % 8 != 0 {
                b.push(0);
            }
            b[1] = (b.len() / 8 - 1) as u8;
            exts.extend(b);
        }
    }
    let first = if ext.is_empty() { proto } else { ext[0].0 };
    let plen = (exts.len() + payload.len()) as u16;
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&plen.to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(exts);
    h.extend_from_slice(payload);
    h
}

/// IPv6 fragment-header body: fragment offset (8-octet units) and M flag.
pub fn frag6(offset_units: u16, more: bool) -> Vec<u8> {
    let v = (offset_units << 3) | more as u16;
    let mut b = v.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 7]);
    b
}

/// TCP header (20 bytes) with `flags`, followed by `payload_len` zero bytes.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload_len);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + payload_len, 0);
    t
}

/// UDP header (8 bytes) + `payload_len` bytes.
pub fn udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload_len, 0);
    u
}

/// ICMP / ICMPv6 header: type, code, checksum, 4 bytes rest.
pub fn icmp(typ: u8, code: u8) -> Vec<u8> {
    vec![typ, code, 0, 0, 0, 1, 0, 1]
}

/// A whole Ethernet/IPv4/TCP frame.
pub fn v4_tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        6,
        0,
        0,
        &tcp(sport, dport, flags, payload),
    ));
    f
}

/// A whole Ethernet/IPv6/TCP frame.
pub fn v6_tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = eth(&[], 0x86dd);
    f.extend(ipv6(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        6,
        &[],
        &tcp(sport, dport, flags, payload),
    ));
    f
}
