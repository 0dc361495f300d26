//! Frames crafted byte by byte for the unit tests of [`crate::parse`] and
//! [`crate::meter`] (test builds only).

use fw_common::proto::ETH_P_8021Q;

/// IPv4 header (`options` octets of zero options, `frag_off` = flags + fragment
/// offset field) followed by `l4`; total length covers `l4`.
pub(crate) fn ipv4(
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

/// TCP header (20 octets) with `flags`.
pub(crate) fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

/// UDP header + `payload` zero octets.
pub(crate) fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    u
}

/// Ethernet header with 802.1Q tags (VLAN ids, outermost first) and `ethertype`,
/// followed by `payload`.
pub(crate) fn eth(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    for v in vlans {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
