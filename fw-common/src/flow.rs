//! Bidirectional flow accounting (map [`crate::maps::FLOWS`]).
//!
//! A flow is keyed by its 5-tuple plus VLAN id, normalised so that both directions
//! land in one entry: the (address, port) pair that sorts lower is side A, the other
//! side B ([`FlowKey::new`]). The entry records which side sent the first packet
//! (the opener, usually the client).
//!
//! # Concurrency: per-CPU values
//! The map is a `BPF_MAP_TYPE_LRU_PERCPU_HASH`: each CPU updates its own copy of
//! [`FlowStats`] with plain stores, so every count is exact without atomics, and
//! userspace merges the copies ([`FlowStats::merge`]): counts add, minima take the
//! minimum, maxima the maximum, the first/last timestamps the earliest/latest, and
//! the opener is that of the copy that saw the earliest packet.
//!
//! # Inter-arrival times
//! Each copy keeps the sum of the gaps between consecutive packets it saw (ns) and
//! the sum of their squares (µs², saturating). The mean inter-arrival time of the
//! whole flow is exact: `(last_seen_ns - first_seen_ns) / (packets - 1)`. The
//! standard deviation comes from the per-CPU gap samples (`sqrt(E[g²] - E[g]²)`
//! over `packets - cpus_seen` samples); it is exact when one CPU saw the whole flow
//! (the usual case, since RSS steers a flow to one queue) and an estimate from the
//! per-CPU sub-sequences otherwise.
//!
//! Packet length is the IP packet length (header and payload, as IPFIX's
//! octetDeltaCount, RFC 7012 IE 1): IPv4 total length, IPv6 payload length + 40.

/// TCP header flag bits (RFC 9293 3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Index of side A (the lower (address, port) pair) in [`FlowStats::dir`].
pub const SIDE_A: u8 = 0;
/// Index of side B (the higher (address, port) pair) in [`FlowStats::dir`].
pub const SIDE_B: u8 = 1;

/// `FlowKey::family` for IPv4 (addresses stored IPv4-mapped).
pub const FAMILY_V4: u8 = 4;
/// `FlowKey::family` for IPv6.
pub const FAMILY_V6: u8 = 6;

/// Short names of the IP protocol numbers a [`FlowKey::proto`] is compared with
/// most: [`crate::proto`]'s `IPPROTO_*`, re-exported (no second set of values).
pub mod proto {
    pub use crate::proto::{
        IPPROTO_ICMP as ICMP, IPPROTO_ICMPV6 as ICMPV6, IPPROTO_TCP as TCP, IPPROTO_UDP as UDP,
    };
}

/// Normalised bidirectional flow key. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Side A address, network byte order; IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub addr_a: [u8; 16],
    /// Side B address, same encoding.
    pub addr_b: [u8; 16],
    /// Side A transport port, host byte order; 0 for ICMP and non-first fragments.
    pub port_a: u16,
    /// Side B transport port, host byte order; 0 for ICMP and non-first fragments.
    pub port_b: u16,
    /// IP protocol number (innermost after IPv6 extension headers).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Innermost 802.1Q VLAN id (12 bits), 0 when untagged.
    pub vlan_id: u16,
}

impl FlowKey {
    /// Normalises one packet's 5-tuple into a key and the side its sender is on.
    /// Addresses in network byte order (IPv4-mapped for IPv4), ports in host order.
    #[inline(always)]
    pub fn new(
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        proto: u8,
        family: u8,
        vlan_id: u16,
    ) -> (FlowKey, u8) {
        let mut key = FlowKey::default();
        let side = key.set(&src, sport, &dst, dport, proto, family, vlan_id);
        (key, side)
    }

    /// [`Self::new`] in place: overwrites `self` with the key of a packet and
    /// returns its sender's side. The XDP program builds the key in its scratch
    /// map this way, without a 40-byte temporary on the 512-byte BPF stack.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &mut self,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
        proto: u8,
        family: u8,
        vlan_id: u16,
    ) -> u8 {
        let src_lower = match cmp_addr(src, dst) {
            Ord3::Less => true,
            Ord3::Greater => false,
            Ord3::Equal => sport <= dport,
        };
        self.proto = proto;
        self.family = family;
        self.vlan_id = vlan_id;
        if src_lower {
            self.addr_a = *src;
            self.addr_b = *dst;
            self.port_a = sport;
            self.port_b = dport;
            SIDE_A
        } else {
            self.addr_a = *dst;
            self.addr_b = *src;
            self.port_a = dport;
            self.port_b = sport;
            SIDE_B
        }
    }
}

impl FlowKey {
    /// Whether `self` and `other` are the same key, compared in 64-bit words (the
    /// verifier and JIT handle this without a byte loop).
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        addr_halves(&self.addr_a) == addr_halves(&other.addr_a)
            && addr_halves(&self.addr_b) == addr_halves(&other.addr_b)
            && self.port_a == other.port_a
            && self.port_b == other.port_b
            && self.proto == other.proto
            && self.family == other.family
            && self.vlan_id == other.vlan_id
    }
}

enum Ord3 {
    Less,
    Equal,
    Greater,
}

/// Compares two addresses as big-endian 128-bit numbers, in two 64-bit halves (the
/// BPF verifier and JIT handle these without loops).
#[inline(always)]
fn cmp_addr(a: &[u8; 16], b: &[u8; 16]) -> Ord3 {
    let (ah, al) = addr_halves(a);
    let (bh, bl) = addr_halves(b);
    if ah < bh || (ah == bh && al < bl) {
        Ord3::Less
    } else if ah == bh && al == bl {
        Ord3::Equal
    } else {
        Ord3::Greater
    }
}

/// An address as two big-endian 64-bit halves (high, low).
#[inline(always)]
pub fn addr_halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// Returns `addr` as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Counters of one direction of a flow (packets sent by one side). 56 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Packets.
    pub packets: u64,
    /// Bytes: sum of IP packet lengths.
    pub bytes: u64,
    /// TCP segments with SYN and without ACK.
    pub syn: u32,
    /// TCP segments with SYN and ACK.
    pub syn_ack: u32,
    /// TCP segments with FIN.
    pub fin: u32,
    /// TCP segments with RST.
    pub rst: u32,
    /// TCP segments with PSH.
    pub psh: u32,
    /// TCP segments whose only flag (of FIN, SYN, RST, PSH, ACK, URG) is ACK.
    pub ack_only: u32,
    /// TCP segments with URG.
    pub urg: u32,
    /// TCP segments with none of FIN, SYN, RST, PSH, ACK, URG (NULL-scan probes).
    pub no_flags: u32,
    /// Smallest IP packet length seen, bytes (0 while `packets == 0`).
    pub min_len: u16,
    /// Largest IP packet length seen, bytes.
    pub max_len: u16,
    /// Bitwise OR of every TCP flag byte seen.
    pub tcp_flags_or: u8,
    /// ICMP/ICMPv6 type of the last ICMP message plus one (0 = none seen).
    pub icmp_type_plus1: u8,
    /// ICMP/ICMPv6 code of the last ICMP message.
    pub icmp_code: u8,
    pub _pad: u8,
}

/// One CPU's view of a flow. 152 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// First packet, `bpf_ktime_get_ns` clock (ns); 0 = this copy saw no packet.
    pub first_seen_ns: u64,
    /// Latest packet, same clock (ns).
    pub last_seen_ns: u64,
    /// Sum of gaps between consecutive packets seen by this copy, ns.
    pub iat_sum_ns: u64,
    /// Sum of squared gaps, µs² (each gap truncated to whole µs), saturating.
    pub iat_sq_sum_us2: u64,
    /// Per side: `dir[SIDE_A]` counts packets sent by side A.
    pub dir: [DirStats; 2],
    /// Side that sent the first packet ([`SIDE_A`] or [`SIDE_B`]).
    pub opener: u8,
    pub _pad: [u8; 7],
}

/// What the packet parser knows about one packet, for [`FlowStats::account`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// IP packet length, bytes.
    pub ip_len: u16,
    /// TCP flag byte (0 when not TCP or no TCP header).
    pub tcp_flags: u8,
    /// Whether this is a TCP segment with a parsed header.
    pub is_tcp: bool,
    /// ICMP/ICMPv6 (type, code), when the packet is ICMP with a parsed header.
    pub icmp: Option<(u8, u8)>,
}

impl FlowStats {
    /// Accounts one packet sent by `side` at `now_ns`. The single update rule used by
    /// the XDP program and by the userspace flow meter.
    #[inline(always)]
    pub fn account(&mut self, side: u8, meta: &PacketMeta, now_ns: u64) {
        if self.first_seen_ns == 0 {
            self.first_seen_ns = now_ns;
            self.last_seen_ns = now_ns;
            self.opener = side;
        } else {
            let gap_ns = now_ns.saturating_sub(self.last_seen_ns);
            self.iat_sum_ns = self.iat_sum_ns.saturating_add(gap_ns);
            let gap_us = gap_ns / 1_000;
            let gap_us = if gap_us > u32::MAX as u64 {
                u32::MAX as u64
            } else {
                gap_us
            };
            self.iat_sq_sum_us2 = self.iat_sq_sum_us2.saturating_add(gap_us * gap_us);
            if now_ns > self.last_seen_ns {
                self.last_seen_ns = now_ns;
            }
        }
        let d = if side == SIDE_A {
            &mut self.dir[0]
        } else {
            &mut self.dir[1]
        };
        d.packets += 1;
        d.bytes += meta.ip_len as u64;
        if d.packets == 1 || meta.ip_len < d.min_len {
            d.min_len = meta.ip_len;
        }
        if meta.ip_len > d.max_len {
            d.max_len = meta.ip_len;
        }
        if meta.is_tcp {
            let f = meta.tcp_flags;
            d.tcp_flags_or |= f;
            let syn = f & tcp_flags::SYN != 0;
            let ack = f & tcp_flags::ACK != 0;
            if syn && !ack {
                d.syn += 1;
            }
            if syn && ack {
                d.syn_ack += 1;
            }
            if f & tcp_flags::FIN != 0 {
                d.fin += 1;
            }
            if f & tcp_flags::RST != 0 {
                d.rst += 1;
            }
            if f & tcp_flags::PSH != 0 {
                d.psh += 1;
            }
            if f & tcp_flags::URG != 0 {
                d.urg += 1;
            }
            let six = f & 0x3f;
            if six == tcp_flags::ACK {
                d.ack_only += 1;
            }
            if six == 0 {
                d.no_flags += 1;
            }
        }
        if let Some((t, c)) = meta.icmp {
            d.icmp_type_plus1 = t.wrapping_add(1);
            d.icmp_code = c;
        }
    }

    /// Total packets in both directions of this copy.
    #[inline(always)]
    pub fn packets(&self) -> u64 {
        self.dir[0].packets + self.dir[1].packets
    }

    /// Merges per-CPU copies into one view (see the module docs). Copies that saw
    /// no packet are ignored. Returns the merged stats and the number of copies that
    /// saw at least one packet.
    pub fn merge<'a>(copies: impl IntoIterator<Item = &'a FlowStats>) -> (FlowStats, u32) {
        let mut out = FlowStats::default();
        let mut seen = 0u32;
        for c in copies {
            if c.first_seen_ns == 0 {
                continue;
            }
            seen += 1;
            if out.first_seen_ns == 0 || c.first_seen_ns < out.first_seen_ns {
                out.first_seen_ns = c.first_seen_ns;
                out.opener = c.opener;
            }
            out.last_seen_ns = out.last_seen_ns.max(c.last_seen_ns);
            out.iat_sum_ns = out.iat_sum_ns.saturating_add(c.iat_sum_ns);
            out.iat_sq_sum_us2 = out.iat_sq_sum_us2.saturating_add(c.iat_sq_sum_us2);
            for (o, d) in out.dir.iter_mut().zip(c.dir.iter()) {
                if d.packets == 0 {
                    continue;
                }
                if o.packets == 0 || d.min_len < o.min_len {
                    o.min_len = d.min_len;
                }
                o.max_len = o.max_len.max(d.max_len);
                o.packets += d.packets;
                o.bytes += d.bytes;
                o.syn += d.syn;
                o.syn_ack += d.syn_ack;
                o.fin += d.fin;
                o.rst += d.rst;
                o.psh += d.psh;
                o.ack_only += d.ack_only;
                o.urg += d.urg;
                o.no_flags += d.no_flags;
                o.tcp_flags_or |= d.tcp_flags_or;
                if d.icmp_type_plus1 != 0 {
                    o.icmp_type_plus1 = d.icmp_type_plus1;
                    o.icmp_code = d.icmp_code;
                }
            }
        }
        (out, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        v4_mapped(a)
    }

    #[test]
    fn both_directions_share_one_key() {
        let (k1, s1) = FlowKey::new(
            v4([192, 0, 2, 10]),
            40000,
            v4([198, 51, 100, 5]),
            443,
            6,
            4,
            0,
        );
        let (k2, s2) = FlowKey::new(
            v4([198, 51, 100, 5]),
            443,
            v4([192, 0, 2, 10]),
            40000,
            6,
            4,
            0,
        );
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        assert_eq!(s1, SIDE_A);
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = v4([192, 0, 2, 1]);
        let (k, s) = FlowKey::new(a, 5000, a, 80, 17, 4, 0);
        assert_eq!((k.port_a, k.port_b, s), (80, 5000, SIDE_B));
    }

    #[test]
    fn account_counts_flags_lengths_and_gaps() {
        let mut f = FlowStats::default();
        let syn = PacketMeta {
            ip_len: 60,
            tcp_flags: tcp_flags::SYN,
            is_tcp: true,
            icmp: None,
        };
        let synack = PacketMeta {
            ip_len: 60,
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            ..syn
        };
        let ack = PacketMeta {
            ip_len: 52,
            tcp_flags: tcp_flags::ACK,
            ..syn
        };
        f.account(SIDE_B, &syn, 1_000_000);
        f.account(SIDE_A, &synack, 3_000_000);
        f.account(SIDE_B, &ack, 7_000_000);
        assert_eq!(f.opener, SIDE_B);
        assert_eq!((f.first_seen_ns, f.last_seen_ns), (1_000_000, 7_000_000));
        assert_eq!(f.iat_sum_ns, 6_000_000);
        assert_eq!(f.iat_sq_sum_us2, 2_000 * 2_000 + 4_000 * 4_000);
        let b = f.dir[SIDE_B as usize];
        assert_eq!(
            (b.packets, b.bytes, b.syn, b.ack_only, b.min_len, b.max_len),
            (2, 112, 1, 1, 52, 60)
        );
        assert_eq!(f.dir[SIDE_A as usize].syn_ack, 1);
    }

    #[test]
    fn merge_adds_counts_and_keeps_earliest_opener() {
        let meta = PacketMeta {
            ip_len: 100,
            ..Default::default()
        };
        let mut c0 = FlowStats::default();
        let mut c1 = FlowStats::default();
        c1.account(SIDE_A, &meta, 10);
        c0.account(SIDE_B, &meta, 20);
        c0.account(SIDE_B, &PacketMeta { ip_len: 40, ..meta }, 30);
        let (m, seen) = FlowStats::merge([&c0, &c1, &FlowStats::default()]);
        assert_eq!(seen, 2);
        assert_eq!(m.opener, SIDE_A);
        assert_eq!((m.first_seen_ns, m.last_seen_ns), (10, 30));
        assert_eq!(
            (m.dir[1].packets, m.dir[1].min_len, m.dir[1].max_len),
            (2, 40, 100)
        );
        assert_eq!(m.packets(), 3);
    }
}
