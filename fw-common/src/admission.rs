//! Flow admission: a flow enters the flow map ([`crate::maps::FLOWS`], a per-CPU
//! LRU) on its *second* packet, not its first.
//!
//! # Why
//! Under a spoofed flood (`hping3 --flood --rand-source`) every packet is a new
//! flow. Inserting each into the LRU costs the datapath an allocation per packet
//! (the most expensive thing the program does, see BENCHMARKS.md `xdp`) and turns
//! the table over in well under a second, so a quiet device's established flow
//! can be evicted between two of its packets: the detector loses its features
//! exactly while the network is under attack (flow-table poisoning).
//!
//! # The rule
//! A packet whose flow is not in the flow map looks in the flow's *pending bucket*:
//! two slots ([`PENDING_WAYS`]) of the shared array [`crate::maps::PENDING`]
//! (`PENDING_SLOTS` [`PendingFlow`]s of 64 bytes, one cache line each), chosen by a
//! hash of the normalised key ([`bucket_of`]).
//! - If a slot holds the same flow and is *live* (its packet is younger than the
//!   flow idle timeout, [`crate::config::GatewayConfig::flow_idle_ms`]), this is
//!   the flow's second packet: the flow is admitted. Its flow-map value is built
//!   from both packets (the pending one first, with its own time, side and
//!   length), so the statistics are exactly those an insert on the first packet
//!   would have produced, and the slot is freed.
//! - Otherwise the packet becomes the slot's pending flow: it replaces an empty
//!   or expired slot, else the older of the two ([`decide`]). The replaced live
//!   flow, if any, has lost its one packet (counted by the caller).
//!
//! A flood of one-packet flows therefore only rewrites 64-byte slots of a fixed
//! array: no allocation, and the flow map keeps the flows that got an answer or a
//! second packet. Evidence ([`crate::evidence`]) is counted on the *first* packet
//! as before, so the scan, sweep and flood rules lose nothing.
//!
//! # One-packet flows still become records
//! A pending flow that never gets a second packet expires after the idle timeout.
//! The gateway daemon reads the array (it is `BPF_F_MMAPABLE`) on every export
//! pass and exports each slot whose packet crossed the idle timeout since the
//! previous pass as a one-packet flow record ([`PendingFlow::stats`], end reason
//! idle timeout). The kernel never needs userspace to clear a slot: expiry is a
//! comparison of times. What is lost: a live pending flow replaced by a
//! colliding one (two other flows of its bucket within the idle timeout), and an
//! expired one replaced before the next export pass. Under a flood that is the
//! flood's own one-packet flows, i.e. the design card's *sampled* statistics for
//! them; the per-source and per-destination aggregates stay exact.
//!
//! The price: while a flood rewrites the array, a *new* flow whose first two
//! packets are further apart than the time the flood needs to reach its bucket
//! twice (65,536 slots under 1 Mpps: about 65 ms; a TCP handshake or a UDP
//! request/answer takes far less) is not admitted until the flood ends, so its
//! packets are in no flow record; they still count in the evidence aggregates,
//! and flows established before the flood are untouched. Inserting on the first
//! packet is no better for such a flow: the LRU turns over just as fast and
//! evicts it between its packets, taking established flows with it.
//!
//! The userspace flow meter (`flow-meter`) keeps the same array with the same
//! hash, bucket rule and expiry, so training features equal live ones
//! (`fw-ctl/tests/meter_equivalence.rs` compares both tables slot by slot).
//!
//! Concurrency: one value shared by all CPUs, updated with plain stores. Two CPUs
//! handling the two first packets of one flow at the same instant may both
//! write a pending entry (the second packet is then pending too); the statistics
//! of the flow then miss one packet. RSS steers a flow's packets of one
//! direction to one queue, so this needs the two directions on two CPUs within
//! nanoseconds of each other.

use crate::flow::{FlowKey, FlowStats, PacketMeta};

/// Slots of the pending array: 65,536 x 64 bytes = 4 MiB. A power of two.
pub const PENDING_SLOTS: u32 = 65_536;
/// Slots per bucket (two-way set associative: a collision needs two other live
/// pending flows in the bucket).
pub const PENDING_WAYS: u32 = 2;

/// [`crate::maps::ADMISSION`] slot: flows admitted on their second packet.
pub const STAT_ADMITTED: u32 = 0;
/// [`crate::maps::ADMISSION`] slot: first packets written to a pending slot.
pub const STAT_PENDED: u32 = 1;
/// [`crate::maps::ADMISSION`] slot: live pending flows replaced by a colliding
/// one (their packet is in no flow record).
pub const STAT_REPLACED_LIVE: u32 = 2;
/// Slots of [`crate::maps::ADMISSION`].
pub const STAT_SLOTS: u32 = 3;

/// One pending flow: the first packet of a flow not (yet) in the flow map.
/// 64 bytes, one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingFlow {
    /// The flow's normalised key ([`FlowKey::new`]).
    pub key: FlowKey,
    /// Time of the packet, `bpf_ktime_get_ns` clock (ns); 0 = empty slot.
    pub first_seen_ns: u64,
    /// IP packet length, bytes (as [`PacketMeta::ip_len`]).
    pub ip_len: u16,
    /// TCP flag byte (0 when not TCP).
    pub tcp_flags: u8,
    /// Side of the sender ([`crate::flow::SIDE_A`] or [`crate::flow::SIDE_B`]).
    pub side: u8,
    /// 1 when the packet is a TCP segment with a parsed header.
    pub is_tcp: u8,
    /// ICMP/ICMPv6 type plus one (0 = not ICMP).
    pub icmp_type_plus1: u8,
    /// ICMP/ICMPv6 code.
    pub icmp_code: u8,
    pub _pad: [u8; 9],
}

impl PendingFlow {
    /// Overwrites the slot with one packet sent by `side` at `now_ns`.
    #[inline(always)]
    pub fn set(&mut self, key: &FlowKey, side: u8, meta: &PacketMeta, now_ns: u64) {
        self.key = *key;
        self.first_seen_ns = now_ns;
        self.ip_len = meta.ip_len;
        self.tcp_flags = meta.tcp_flags;
        self.side = side;
        self.is_tcp = meta.is_tcp as u8;
        match meta.icmp {
            Some((t, c)) => {
                self.icmp_type_plus1 = t.wrapping_add(1);
                self.icmp_code = c;
            }
            None => {
                self.icmp_type_plus1 = 0;
                self.icmp_code = 0;
            }
        }
    }

    /// The packet as the parser described it.
    #[inline(always)]
    pub fn meta(&self) -> PacketMeta {
        PacketMeta {
            ip_len: self.ip_len,
            tcp_flags: self.tcp_flags,
            is_tcp: self.is_tcp != 0,
            icmp: if self.icmp_type_plus1 == 0 {
                None
            } else {
                Some((self.icmp_type_plus1 - 1, self.icmp_code))
            },
        }
    }

    /// Whether the slot holds a packet younger than `idle_ns` at `now_ns`.
    #[inline(always)]
    pub fn live(&self, now_ns: u64, idle_ns: u64) -> bool {
        self.first_seen_ns != 0 && now_ns.saturating_sub(self.first_seen_ns) < idle_ns
    }

    /// The flow statistics of the pending packet alone: what the flow map would
    /// hold after its first packet (and what a one-packet record carries).
    #[inline(always)]
    pub fn stats(&self) -> FlowStats {
        let mut s = FlowStats::default();
        s.account(self.side, &self.meta(), self.first_seen_ns);
        s
    }

    /// Adds the pending packet to `fresh` (a default value), the first of the
    /// admitted flow's packets.
    #[inline(always)]
    pub fn account_into(&self, fresh: &mut FlowStats) {
        fresh.account(self.side, &self.meta(), self.first_seen_ns);
    }
}

/// Index of the first slot of `key`'s bucket (a multiple of [`PENDING_WAYS`]).
#[inline(always)]
pub fn bucket_of(key: &FlowKey) -> u32 {
    let (a0, a1) = crate::flow::addr_halves(&key.addr_a);
    let (b0, b1) = crate::flow::addr_halves(&key.addr_b);
    let rest = ((key.port_a as u64) << 48)
        | ((key.port_b as u64) << 32)
        | ((key.vlan_id as u64) << 16)
        | ((key.proto as u64) << 8)
        | key.family as u64;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = a0.wrapping_mul(K) ^ a1;
    h = h.rotate_left(27).wrapping_mul(K) ^ b0;
    h = h.rotate_left(27).wrapping_mul(K) ^ b1;
    h = h.rotate_left(27).wrapping_mul(K) ^ rest;
    h ^= h >> 31;
    h = h.wrapping_mul(K);
    let buckets = PENDING_SLOTS / PENDING_WAYS;
    ((h >> 40) as u32 & (buckets - 1)) * PENDING_WAYS
}

/// What to do with a packet whose flow is not in the flow map, given its
/// bucket's two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Slot `way` holds the flow's live first packet: admit the flow.
    Admit(u32),
    /// Make the packet slot `way`'s pending flow; `replaces_live` when that slot
    /// held another live pending flow (whose packet is lost).
    Pend { way: u32, replaces_live: bool },
}

/// The admission rule (see the module docs) for a packet of `key` at `now_ns`,
/// the bucket's slots `s0`, `s1` and the idle timeout `idle_ns`.
#[inline(always)]
pub fn decide(
    key: &FlowKey,
    s0: &PendingFlow,
    s1: &PendingFlow,
    now_ns: u64,
    idle_ns: u64,
) -> Admission {
    let live0 = s0.live(now_ns, idle_ns);
    let live1 = s1.live(now_ns, idle_ns);
    if live0 && s0.key.same(key) {
        return Admission::Admit(0);
    }
    if live1 && s1.key.same(key) {
        return Admission::Admit(1);
    }
    if !live0 {
        Admission::Pend {
            way: 0,
            replaces_live: false,
        }
    } else if !live1 {
        Admission::Pend {
            way: 1,
            replaces_live: false,
        }
    } else if s0.first_seen_ns <= s1.first_seen_ns {
        Admission::Pend {
            way: 0,
            replaces_live: true,
        }
    } else {
        Admission::Pend {
            way: 1,
            replaces_live: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{SIDE_A, SIDE_B, tcp_flags, v4_mapped};

    fn key(sport: u16) -> (FlowKey, u8) {
        FlowKey::new(
            v4_mapped([192, 0, 2, 10]),
            sport,
            v4_mapped([198, 51, 100, 5]),
            443,
            6,
            4,
            0,
        )
    }

    fn syn() -> PacketMeta {
        PacketMeta {
            ip_len: 60,
            tcp_flags: tcp_flags::SYN,
            is_tcp: true,
            icmp: None,
        }
    }

    const IDLE: u64 = 10_000_000_000;

    #[test]
    fn pending_flow_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<PendingFlow>(), 64);
    }

    #[test]
    fn second_packet_admits_with_the_statistics_of_both() {
        let (k, side) = key(40_000);
        let mut s0 = PendingFlow::default();
        let s1 = PendingFlow::default();
        assert_eq!(
            decide(&k, &s0, &s1, 1_000, IDLE),
            Admission::Pend {
                way: 0,
                replaces_live: false
            }
        );
        s0.set(&k, side, &syn(), 1_000);
        assert_eq!(decide(&k, &s0, &s1, 2_000, IDLE), Admission::Admit(0));
        // What the flow map would have held had the first packet inserted it.
        let synack = PacketMeta {
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            ..syn()
        };
        let mut direct = FlowStats::default();
        direct.account(side, &syn(), 1_000);
        direct.account(1 - side, &synack, 2_000);
        let mut admitted = FlowStats::default();
        s0.account_into(&mut admitted);
        admitted.account(1 - side, &synack, 2_000);
        assert_eq!(admitted, direct);
    }

    #[test]
    fn an_expired_packet_does_not_admit_and_is_replaced_first() {
        let (k, side) = key(40_000);
        let (other, oside) = key(40_001);
        let mut s0 = PendingFlow::default();
        let mut s1 = PendingFlow::default();
        s0.set(&k, side, &syn(), 1_000);
        s1.set(&other, oside, &syn(), 5_000);
        // Exactly the idle timeout later the first packet has expired.
        assert_eq!(
            decide(&k, &s0, &s1, 1_000 + IDLE, IDLE),
            Admission::Pend {
                way: 0,
                replaces_live: false
            }
        );
    }

    #[test]
    fn a_full_bucket_replaces_its_older_live_flow() {
        let (a, sa) = key(1);
        let (b, sb) = key(2);
        let (c, _) = key(3);
        let mut s0 = PendingFlow::default();
        let mut s1 = PendingFlow::default();
        s0.set(&a, sa, &syn(), 2_000);
        s1.set(&b, sb, &syn(), 1_000);
        assert_eq!(
            decide(&c, &s0, &s1, 3_000, IDLE),
            Admission::Pend {
                way: 1,
                replaces_live: true
            }
        );
        assert_eq!(decide(&b, &s0, &s1, 3_000, IDLE), Admission::Admit(1));
    }

    #[test]
    fn both_directions_share_a_bucket_and_buckets_spread() {
        let (k1, s1) = key(40_000);
        let (k2, s2) = FlowKey::new(
            v4_mapped([198, 51, 100, 5]),
            443,
            v4_mapped([192, 0, 2, 10]),
            40_000,
            6,
            4,
            0,
        );
        assert_eq!((k1, s1 != s2), (k2, true));
        assert_eq!(bucket_of(&k1), bucket_of(&k2));
        assert_eq!(bucket_of(&k1) % PENDING_WAYS, 0);
        // 10,000 flows from one client to one server fill many buckets.
        let mut used = [false; (PENDING_SLOTS / PENDING_WAYS) as usize];
        for p in 0..10_000u16 {
            used[(bucket_of(&key(10_000 + p).0) / PENDING_WAYS) as usize] = true;
        }
        let n = used.iter().filter(|u| **u).count();
        // Uniform hashing into 32,768 buckets: ~8,600 distinct expected.
        assert!(n > 8_000, "only {n} buckets used");
    }

    #[test]
    fn stats_of_an_icmp_packet_round_trip() {
        let (k, _) = FlowKey::new(
            v4_mapped([192, 0, 2, 10]),
            0,
            v4_mapped([198, 51, 100, 5]),
            0,
            1,
            4,
            0,
        );
        let echo = PacketMeta {
            ip_len: 84,
            tcp_flags: 0,
            is_tcp: false,
            icmp: Some((8, 0)),
        };
        let mut p = PendingFlow::default();
        p.set(&k, SIDE_B, &echo, 7);
        assert_eq!(p.meta(), echo);
        let mut direct = FlowStats::default();
        direct.account(SIDE_B, &echo, 7);
        assert_eq!(p.stats(), direct);
        assert_eq!(p.stats().opener, SIDE_B);
        let _ = SIDE_A;
    }
}
