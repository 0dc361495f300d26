//! Protocol numbers and header rules both parsers use (the XDP program in
//! `fw-ebpf` and the userspace meter in `flow-meter`), written once: the
//! EtherTypes and VLAN tags they step over, the IP protocol numbers they read, and
//! the IPv6 extension-header walk ([`walk_ipv6_ext`], driven by the table
//! [`ipv6_ext_header`]) that finds the transport header, so a flow gets the same
//! key in training as in the kernel.
//!
//! EtherTypes are in host byte order: compare them with `u16::from_be_bytes` of
//! the frame's two bytes. Sources: IEEE 802.1Q (0x8100, 0x88a8), the IANA
//! EtherType and Protocol Numbers registries, RFC 8200 §4 (IPv6 extension
//! headers), RFC 4302 §2 (AH).

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

/// Ethernet header length without VLAN tags, octets.
pub const ETH_HLEN: usize = 14;
/// Most VLAN tags either parser steps over (QinQ); the innermost VLAN id is kept.
pub const MAX_VLAN_TAGS: usize = 2;

/// Whether an EtherType is a VLAN tag (802.1Q, 802.1ad or pre-standard QinQ
/// 0x9100) that both parsers step over, 4 octets: TCI (VLAN id in the low 12
/// bits), then the inner EtherType.
#[inline(always)]
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ)
}

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
/// IPv6 fixed header length, octets (RFC 8200 §3).
pub const IPV6_HLEN: usize = 40;

/// How an IPv6 extension header that both parsers walk codes its length. Every
/// variant starts with the next-header octet; all are at least 8 octets long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop, routing, destination options (RFC 8200 §4.3, §4.4, §4.6):
    /// octet 1 is the length in 8-octet units, not counting the first 8.
    Options,
    /// Fragment (RFC 8200 §4.5): always 8 octets; octets 2-3 hold the fragment
    /// offset (upper 13 bits, 8-octet units) and the M flag.
    Fragment,
    /// Authentication Header (RFC 4302 §2.2): octet 1 ("Payload Len") is the
    /// length in 4-octet units, minus 2.
    Auth,
}

/// The table both parsers walk by: whether `next_header` names an IPv6 extension
/// header they step over, and how its length is coded. `None` means "upper-layer
/// protocol" (TCP, UDP, ICMPv6, and also ESP, IPv4/IPv6 in IPv6, No Next Header,
/// and the extension headers neither parser knows: Mobility 135, HIP 139, Shim6
/// 140, experimental 253/254): the walk stops there.
#[inline(always)]
pub const fn ipv6_ext_header(next_header: u8) -> Option<Ipv6Ext> {
    match next_header {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => Some(Ipv6Ext::Options),
        IPPROTO_FRAGMENT => Some(Ipv6Ext::Fragment),
        IPPROTO_AH => Some(Ipv6Ext::Auth),
        _ => None,
    }
}

impl Ipv6Ext {
    /// Length of the whole header in octets, from its second octet (`len_field`:
    /// "Hdr Ext Len", or AH's "Payload Len"; ignored for the fragment header).
    #[inline(always)]
    pub const fn header_len(self, len_field: u8) -> usize {
        match self {
            Ipv6Ext::Options => (len_field as usize + 1) * 8,
            Ipv6Ext::Fragment => 8,
            Ipv6Ext::Auth => (len_field as usize + 2) * 4,
        }
    }
}

/// Whether a fragment header's octets 2-3 (offset and flags, host order) belong
/// to a non-first fragment (offset != 0), which carries no transport header.
#[inline(always)]
pub const fn is_later_fragment(offset_flags: u16) -> bool {
    offset_flags & 0xfff8 != 0
}

/// Where [`walk_ipv6_ext`] found the upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// The flow's protocol: the first next-header value that is not a walked
    /// extension header; for a non-first fragment the fragment header's next
    /// header; when the walk stops early (header cut short, more than
    /// [`MAX_IPV6_EXT_HEADERS`]) the type of the header it stopped at.
    pub proto: u8,
    /// Offset of the upper-layer header, octets after the 40-octet fixed header.
    pub offset: usize,
    /// Whether the transport header is at `offset`: false for a non-first
    /// fragment and when the walk stopped early (the flow then has no ports).
    pub transport: bool,
}

/// Walks the IPv6 extension-header chain after the fixed header, at most
/// [`MAX_IPV6_EXT_HEADERS`] headers of the kinds [`ipv6_ext_header`] lists, to the
/// upper-layer protocol. `first` is the fixed header's Next Header; `read(at)`
/// returns the two octets `at` octets after the fixed header, `None` past the end
/// of the frame (the kernel's bounds check, the capture's snap length). Pure
/// arithmetic and at most two reads per header, so the XDP program and the meter
/// run this very code.
#[inline(always)]
pub fn walk_ipv6_ext(first: u8, mut read: impl FnMut(usize) -> Option<[u8; 2]>) -> Ipv6Upper {
    let mut next = first;
    let mut offset = 0usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let Some(kind) = ipv6_ext_header(next) else {
            return Ipv6Upper {
                proto: next,
                offset,
                transport: true,
            };
        };
        let stopped = Ipv6Upper {
            proto: next,
            offset,
            transport: false,
        };
        let Some([nh, len_field]) = read(offset) else {
            return stopped;
        };
        if let Ipv6Ext::Fragment = kind {
            let Some(fo) = read(offset + 2) else {
                return stopped;
            };
            if is_later_fragment(u16::from_be_bytes(fo)) {
                return Ipv6Upper {
                    proto: nh,
                    offset: offset + 8,
                    transport: false,
                };
            }
        }
        next = nh;
        offset += kind.header_len(len_field);
    }
    Ipv6Upper {
        proto: next,
        offset,
        transport: ipv6_ext_header(next).is_none(),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{vec, vec::Vec};

    use super::*;

    fn walk(first: u8, ext: &[u8]) -> Ipv6Upper {
        walk_ipv6_ext(first, |at| Some([*ext.get(at)?, *ext.get(at + 1)?]))
    }

    #[test]
    fn lengths_follow_each_header_kind() {
        // Hop-by-hop, 16 octets (Hdr Ext Len 1) -> AH with a 12-octet ICV (24
        // octets, Payload Len 4) -> TCP.
        let mut ext = vec![IPPROTO_AH, 1];
        ext.resize(16, 0);
        ext.extend_from_slice(&[IPPROTO_TCP, 4]);
        ext.resize(16 + 24, 0);
        let up = walk(IPPROTO_HOPOPTS, &ext);
        assert_eq!(
            up,
            Ipv6Upper {
                proto: IPPROTO_TCP,
                offset: 40,
                transport: true
            }
        );
        assert_eq!(Ipv6Ext::Auth.header_len(4), 24, "RFC 4302: (4 + 2) * 4");
        assert_eq!(Ipv6Ext::Options.header_len(4), 40, "RFC 8200: (4 + 1) * 8");
        for (nh, kind) in [
            (0, Some(Ipv6Ext::Options)),
            (43, Some(Ipv6Ext::Options)),
            (44, Some(Ipv6Ext::Fragment)),
            (51, Some(Ipv6Ext::Auth)),
            (60, Some(Ipv6Ext::Options)),
            (4, None),
            (41, None),
            (50, None),
            (59, None),
            (135, None),
        ] {
            assert_eq!(ipv6_ext_header(nh), kind, "next header {nh}");
        }
    }

    #[test]
    fn fragments_truncation_and_the_bound_leave_no_transport() {
        // First fragment (offset 0, M set): the walk goes on.
        let up = walk(IPPROTO_FRAGMENT, &[IPPROTO_UDP, 0, 0x00, 0x01, 0, 0, 0, 1]);
        assert_eq!((up.proto, up.offset, up.transport), (IPPROTO_UDP, 8, true));
        // Non-first fragment: its next header, whatever the payload looks like.
        let up = walk(
            IPPROTO_FRAGMENT,
            &[IPPROTO_DSTOPTS, 0, 0x05, 0x00, 0, 0, 0, 1, 6, 0, 0, 0],
        );
        assert_eq!((up.proto, up.transport), (IPPROTO_DSTOPTS, false));
        // A header cut short: stops at it.
        assert_eq!(
            walk(IPPROTO_HOPOPTS, &[6]),
            Ipv6Upper {
                proto: IPPROTO_HOPOPTS,
                offset: 0,
                transport: false
            }
        );
        assert_eq!(walk(IPPROTO_FRAGMENT, &[6, 0, 0]).proto, IPPROTO_FRAGMENT);
        // Exactly the bound ends on TCP; one more is too many.
        let chain = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| {
                    let nh = if i + 1 == n {
                        IPPROTO_TCP
                    } else {
                        IPPROTO_DSTOPTS
                    };
                    [nh, 0, 0, 0, 0, 0, 0, 0]
                })
                .collect()
        };
        let up = walk(IPPROTO_DSTOPTS, &chain(MAX_IPV6_EXT_HEADERS));
        assert_eq!((up.proto, up.transport), (IPPROTO_TCP, true));
        let up = walk(IPPROTO_DSTOPTS, &chain(MAX_IPV6_EXT_HEADERS + 1));
        assert_eq!((up.proto, up.transport), (IPPROTO_DSTOPTS, false));
    }
}
