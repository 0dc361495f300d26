//! Protocol numbers both parsers use (the XDP program in `fw-ebpf` and the
//! userspace meter in `flow-meter`), written once. EtherTypes are in host byte
//! order: compare them with `u16::from_be_bytes` of the frame's two bytes.
//! Sources: IEEE 802.1Q (0x8100, 0x88a8), the IANA EtherType and Protocol Numbers
//! registries, RFC 8200 §4 (IPv6 extension headers), RFC 4302 (AH).

/// IPv4 EtherType.
pub const ETH_P_IP: u16 = 0x0800;
/// ARP EtherType.
pub const ETH_P_ARP: u16 = 0x0806;
/// IPv6 EtherType.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q customer VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service VLAN tag (QinQ outer tag).
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still sent by some switches.
pub const ETH_P_QINQ: u16 = 0x9100;

/// IPv6 hop-by-hop options header (RFC 8200 §4.3).
pub const IPPROTO_HOPOPTS: u8 = 0;
/// ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 routing header (RFC 8200 §4.4).
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header (RFC 8200 §4.5).
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IP Authentication Header (RFC 4302): its length field counts 4-octet units
/// minus 2, unlike the other extension headers' 8-octet units minus 1.
pub const IPPROTO_AH: u8 = 51;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 destination options header (RFC 8200 §4.6).
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Most IPv6 extension headers either parser walks before giving up on ports.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
