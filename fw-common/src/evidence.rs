//! Evidence at packet speed: what the scan, sweep and flood rules need, counted in
//! the kernel on every new flow, whether or not any flow has ended yet (maps
//! [`crate::maps::EVIDENCE_SRC`] and [`crate::maps::EVIDENCE_DST`]).
//!
//! # Layout
//! Each map is an array (one value shared by all CPUs) of [`EVIDENCE_SLOTS`]
//! [`EvidenceSlot`]s, a direct-mapped table indexed by a hash of the address it describes
//! ([`slot_index`]): the owner of a source slot is a packet's sender, of a
//! destination slot its receiver. A slot is tagged with its owner's address; an
//! address whose slot is held by another is not tracked (see [`EvidenceSlot::claim`]
//! for the sticky rule that keeps a spoofed flood from evicting a real scanner).
//! There is no insert: a flood of spoofed sources costs an array store per packet,
//! not an LRU insert, and cannot grow the table.
//!
//! # Epochs
//! Time is cut into epochs of [`EPOCH_NS`] (`bpf_ktime_get_ns` / `EPOCH_NS` + 1). A
//! slot keeps the counts of the current epoch (`cur`) and of the one before (`prev`);
//! `union_hosts` / `union_ports` count the distinct peers of `prev | cur`, a sliding
//! window of one to two epochs, kept up to date without a popcount. A reader that
//! polls at least once per epoch sees every epoch at least once (as `cur` or `prev`).
//!
//! # Distinct counts
//! Peers are counted in 256-bit bitmaps (linear counting, Whang, Vander-Zanden,
//! Taylor 1990, "A linear-time probabilistic counting algorithm for database
//! applications"): a peer sets bit `hash(peer) mod 256`; `z` bits still clear
//! estimate `-256 ln(z / 256)` distinct peers. For small counts the number of set
//! bits is close to the distinct count (48 distinct: 44 bits on average); the
//! thresholds of [`crate::config::GatewayConfig`] are in set bits.
//!
//! # What is counted
//! On a packet that opens a flow ([`Opening`], the flow map had no entry for it)
//! from a source not on the allowlist, the sender's source slot and the
//! receiver's destination slot count a new flow of its kind, its first packet's IP
//! bytes, and the peer's address and destination port. On the first packet from a
//! flow's responder and on every ICMP error ([`answer_on_flow`]), the source slot
//! of the packet's receiver (the flow's opener) counts a reply, a refusal (RST) or
//! an ICMP error, when that receiver holds a slot; answers count whoever sends
//! them (an allowlisted server's SYN-ACK is a reply too). The same functions run in the XDP program and in the
//! userspace meter (`flow-meter`), so `eval` on captures and the live path agree.

use crate::flow::{proto, tcp_flags};

/// Length of one epoch, ns (1 s).
pub const EPOCH_NS: u64 = 1_000_000_000;
/// Slots per evidence map (a power of two).
pub const EVIDENCE_SLOTS: u32 = 4096;
/// Words of a peer bitmap (4 × 64 = 256 bits).
pub const BITMAP_WORDS: usize = 4;
/// Bits of a peer bitmap.
pub const BITMAP_BITS: u32 = 64 * BITMAP_WORDS as u32;

/// [`EvidenceSlot::flags`] bit: this CPU put a provisional quarantine entry in the
/// blocklist for the slot's owner during epoch [`EvidenceSlot::quarantined_epoch`].
pub const SLOT_QUARANTINED: u32 = 1 << 0;

/// [`EvidenceEvent::kind`]: the source crossed the report threshold this epoch.
pub const EVENT_REPORT: u8 = 1;
/// [`EvidenceEvent::kind`]: the program quarantined the source provisionally.
pub const EVENT_QUARANTINE: u8 = 2;

/// Counts of one address in one epoch. 104 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochCounts {
    /// Peer addresses seen, bit `hash(peer) mod 256` (destinations of a source slot,
    /// sources of a destination slot).
    pub hosts: [u64; BITMAP_WORDS],
    /// Destination ports of the new flows, bit `hash(port) mod 256` (TCP and UDP only).
    pub ports: [u64; BITMAP_WORDS],
    /// New flows (flow-map misses) opened by (source slot) or towards (destination
    /// slot) the owner.
    pub new_flows: u32,
    /// Of them: opened by a TCP SYN without ACK.
    pub syn: u32,
    /// Of them: TCP without SYN (FIN, NULL, XMAS, ACK, Maimon probes, mid-stream).
    pub tcp_other: u32,
    /// Of them: UDP.
    pub udp: u32,
    /// IP bytes of the new flows' first packets (saturating).
    pub bytes: u32,
    /// Of them: ICMP/ICMPv6 that is not an error (echo and other requests).
    pub icmp: u16,
    /// Source slot: flows the owner opened that got a reply (a responder's first
    /// packet that is not a RST: SYN-ACK, UDP, ICMP reply).
    pub replies: u16,
    /// Source slot: flows the owner opened that were refused (responder's first
    /// packet a RST).
    pub refused: u16,
    /// Source slot: ICMP/ICMPv6 errors addressed to the owner (unreachable, time
    /// exceeded, parameter problem, packet too big).
    pub icmp_errors: u16,
    /// Bits set in [`Self::hosts`].
    pub distinct_hosts: u16,
    /// Bits set in [`Self::ports`].
    pub distinct_ports: u16,
    /// Source slot: RSTs the owner sent that opened a flow (answering nothing the
    /// flow map saw): a host resetting SYN-ACKs it never asked for, which is what a
    /// host whose address someone else forges does (nmap's idle-scan zombie).
    pub unsolicited_rsts: u16,
    pub _pad: [u16; 3],
}

/// One address's evidence. 248 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvidenceSlot {
    /// Owner address, network byte order, IPv4-mapped for IPv4.
    pub addr: [u8; 16],
    /// Epoch of [`Self::cur`] (see the module docs); 0 = empty slot.
    pub epoch: u32,
    /// Distinct peer hosts over `prev | cur` (set bits).
    pub union_hosts: u16,
    /// Distinct destination ports over `prev | cur` (set bits).
    pub union_ports: u16,
    /// Epoch in which the last [`EvidenceEvent`] was emitted for this slot (0 = none).
    pub reported_epoch: u32,
    /// Epoch of the last provisional quarantine this CPU made (with [`SLOT_QUARANTINED`]).
    pub quarantined_epoch: u32,
    /// `SLOT_*` bits.
    pub flags: u32,
    /// [`crate::flow::FAMILY_V4`] or [`crate::flow::FAMILY_V6`] of the owner.
    pub family: u8,
    pub _pad: [u8; 3],
    /// The current epoch.
    pub cur: EpochCounts,
    /// The epoch before `epoch` (all zero when it saw nothing).
    pub prev: EpochCounts,
}

/// A wake-up for the gateway daemon (BPF ring buffer [`crate::maps::EVENTS`]). 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvidenceEvent {
    /// The source, network byte order, IPv4-mapped for IPv4.
    pub addr: [u8; 16],
    /// When, `bpf_ktime_get_ns` clock (ns).
    pub at_ns: u64,
    /// `EVENT_*`.
    pub kind: u8,
    /// [`crate::flow::FAMILY_V4`] or [`crate::flow::FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 2],
    /// [`EvidenceSlot::union_hosts`] at the time.
    pub union_hosts: u16,
    /// [`EvidenceSlot::union_ports`] at the time.
    pub union_ports: u16,
    /// New flows over `prev + cur`.
    pub new_flows: u32,
    /// New flows over `prev + cur` without a reply ([`EvidenceSlot::unreplied`]).
    pub unreplied: u32,
}

/// What kind of first packet opened a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenKind {
    Syn,
    TcpOther,
    Udp,
    /// ICMP/ICMPv6 that is not an error.
    Icmp,
    /// Any other IP protocol.
    Other,
}

/// A packet that opened a flow, as the evidence maps see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    pub kind: OpenKind,
    /// Destination port, host order (0 for ICMP and other protocols).
    pub dport: u16,
    /// IP packet length, bytes.
    pub ip_len: u16,
}

/// A first packet from a flow's responder, or an ICMP error, to the flow's opener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Reply,
    Refused,
    IcmpError,
}

/// Whether an ICMP (`proto` 1) or ICMPv6 (58) message of type `t` is an error
/// (RFC 792: 3 unreachable, 4 source quench, 5 redirect, 11 time exceeded, 12
/// parameter problem; RFC 4443: types 1-4).
#[inline(always)]
pub const fn is_icmp_error(proto_nr: u8, t: u8) -> bool {
    if proto_nr == proto::ICMP {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    } else {
        proto_nr == proto::ICMPV6 && t >= 1 && t <= 4
    }
}

/// What the first packet of a flow is for the evidence maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum First {
    /// It opens a flow of its sender's.
    Opens(Opening),
    /// It answers a flow its receiver opened that the flow map no longer (or
    /// never) held: an ICMP error, a SYN-ACK (a server's retransmission to a
    /// flooder whose flow was exported, backscatter), a reflection service's
    /// datagram. Counted for the receiver.
    Answers(Answer),
    /// A RST: a refusal for the receiver and, for the sender, an unsolicited
    /// reset ([`EpochCounts::unsolicited_rsts`]).
    Resets,
}

/// UDP services abused for reflection and amplification (US-CERT/CISA alert
/// TA14-017A, plus CoAP, WS-Discovery, NAT-T, mDNS, Ubiquiti discovery, DVR DHCPDiscover,
/// BACnet): a datagram *from* one of these ports is normally an answer.
#[inline(always)]
pub const fn is_reflection_port(port: u16) -> bool {
    matches!(
        port,
        17 | 19
            | 53
            | 111
            | 123
            | 137
            | 161
            | 389
            | 500
            | 1900
            | 3702
            | 4500
            | 5353
            | 5683
            | 10001
            | 11211
            | 37810
            | 47808
    )
}

/// Smallest IP packet (bytes) a first UDP datagram from a reflection port must
/// have to count as an answer ([`first_packet`]): 100 bytes, above an empty or
/// short probe (`nmap -g 53` sends its UDP probes from port 53) and below a
/// typical amplified answer.
pub const REFLECTED_MIN_IP_LEN: u16 = 100;

/// Classifies a packet that opened a flow (see [`First`]). `tcp_flags` and `icmp`
/// as in [`crate::flow::PacketMeta`]; ports in host byte order.
///
/// A UDP datagram from a reflection service port ([`is_reflection_port`]) to an
/// unprivileged port (>= 1024) of at least [`REFLECTED_MIN_IP_LEN`] bytes answers
/// (a reflector's answer to a spoofed request, or a server's answer the flow map
/// did not pair): the reflector is not counted as scanning its victim.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn first_packet(
    proto_nr: u8,
    is_tcp: bool,
    flags: u8,
    icmp: Option<(u8, u8)>,
    sport: u16,
    dport: u16,
    ip_len: u16,
) -> First {
    let kind = if is_tcp {
        if flags & tcp_flags::RST != 0 {
            return First::Resets;
        }
        let syn = flags & tcp_flags::SYN != 0;
        let ack = flags & tcp_flags::ACK != 0;
        if syn && ack {
            return First::Answers(Answer::Reply);
        }
        if syn {
            OpenKind::Syn
        } else {
            OpenKind::TcpOther
        }
    } else if proto_nr == proto::UDP {
        if dport >= 1024 && ip_len >= REFLECTED_MIN_IP_LEN && is_reflection_port(sport) {
            return First::Answers(Answer::Reply);
        }
        OpenKind::Udp
    } else if proto_nr == proto::ICMP || proto_nr == proto::ICMPV6 {
        match icmp {
            Some((t, _)) if is_icmp_error(proto_nr, t) => return First::Answers(Answer::IcmpError),
            _ => OpenKind::Icmp,
        }
    } else {
        OpenKind::Other
    };
    let dport = match kind {
        OpenKind::Syn | OpenKind::TcpOther | OpenKind::Udp => dport,
        _ => 0,
    };
    First::Opens(Opening {
        kind,
        dport,
        ip_len,
    })
}

/// The [`Opening`] of a first packet, `None` when it only answers or resets
/// ([`first_packet`]).
#[inline(always)]
pub fn opening(
    proto_nr: u8,
    is_tcp: bool,
    flags: u8,
    icmp: Option<(u8, u8)>,
    dport: u16,
    ip_len: u16,
) -> Option<Opening> {
    match first_packet(proto_nr, is_tcp, flags, icmp, 0, dport, ip_len) {
        First::Opens(o) => Some(o),
        _ => None,
    }
}

/// The answer a responder's first packet in a flow gives its opener: a RST refuses,
/// anything else replies.
#[inline(always)]
pub fn answer_of(is_tcp: bool, flags: u8) -> Answer {
    if is_tcp && flags & tcp_flags::RST != 0 {
        Answer::Refused
    } else {
        Answer::Reply
    }
}

/// What a packet of a flow already in the flow map tells its receiver's source
/// slot, if anything:
/// - an ICMP/ICMPv6 error ([`is_icmp_error`]) is an [`Answer::IcmpError`], every
///   one of them (errors from one router to one scanner share a flow key);
/// - when this copy of the flow saw it open (`copy_seen`: the per-CPU copy has a
///   first packet), the responder's first packet (`!from_opener`, `sent_before ==
///   0` packets from its side) answers with [`answer_of`];
/// - when another CPU's copy saw it open, only the TCP flags tell: a RST or a
///   SYN-ACK answers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn answer_on_flow(
    copy_seen: bool,
    from_opener: bool,
    sent_before: u64,
    proto_nr: u8,
    is_tcp: bool,
    flags: u8,
    icmp: Option<(u8, u8)>,
) -> Option<Answer> {
    if let Some((t, _)) = icmp
        && is_icmp_error(proto_nr, t)
    {
        return Some(Answer::IcmpError);
    }
    let first = if copy_seen {
        !from_opener && sent_before == 0
    } else {
        is_tcp
            && (flags & tcp_flags::RST != 0
                || flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK)
    };
    first.then(|| answer_of(is_tcp, flags))
}

/// Whether a packet of a flow already in the flow map is an *inferred* reply: the
/// opener's first ACK-bearing segment (no SYN, no RST) after its own SYN, on a
/// flow from whose responder this copy has seen nothing (`other_sent == 0`). A TCP
/// stack only acknowledges after the SYN-ACK, so the handshake was answered on a
/// path the program does not see: with XDP on the LAN side only, a device's
/// outbound connections look unanswered otherwise, and a device talking to many
/// hosts (CDNs, NTP pools) would look like a scan. The reply is counted in the
/// *sender's* source slot (it is the flow's opener).
///
/// The cost: a scanner that follows each SYN with a forged ACK earns replies
/// for its probes; the destination-side flood rules still see it, and the
/// detector's one-way rules (`detector::classify`) treat such flows alike.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn inferred_reply(
    copy_seen: bool,
    from_opener: bool,
    sent_before: u64,
    other_sent: u64,
    opener_syns: u32,
    is_tcp: bool,
    flags: u8,
) -> bool {
    copy_seen
        && from_opener
        && is_tcp
        && sent_before == 1
        && other_sent == 0
        && opener_syns == 1
        && flags & tcp_flags::ACK != 0
        && flags & (tcp_flags::SYN | tcp_flags::RST) == 0
}

/// The epoch of a `bpf_ktime_get_ns` reading (never 0).
#[inline(always)]
pub fn epoch_of(now_ns: u64) -> u32 {
    (now_ns / EPOCH_NS) as u32 + 1
}

#[inline(always)]
fn mix(a: &[u8; 16]) -> u64 {
    let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let x = hi.rotate_left(29) ^ lo;
    (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Index of `addr`'s slot in an evidence map.
#[inline(always)]
pub fn slot_index(addr: &[u8; 16]) -> u32 {
    (mix(addr) >> 40) as u32 & (EVIDENCE_SLOTS - 1)
}

/// Bitmap bit of a peer address.
#[inline(always)]
pub fn host_bit(addr: &[u8; 16]) -> u32 {
    (mix(addr) >> 56) as u32
}

/// Bitmap bit of a port.
#[inline(always)]
pub fn port_bit(port: u16) -> u32 {
    ((port as u32).wrapping_mul(0x9e37_79b1) >> 24) & 0xff
}

/// Sets bit `bit` (0..256) of `bits`; whether it was clear.
#[inline(always)]
fn set_bit(bits: &mut [u64; BITMAP_WORDS], bit: u32) -> bool {
    let w = ((bit >> 6) & 3) as usize;
    let m = 1u64 << (bit & 63);
    let fresh = bits[w] & m == 0;
    bits[w] |= m;
    fresh
}

#[inline(always)]
fn has_bit(bits: &[u64; BITMAP_WORDS], bit: u32) -> bool {
    bits[((bit >> 6) & 3) as usize] & (1u64 << (bit & 63)) != 0
}

#[inline(always)]
fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    // Two 64-bit compares: the verifier and JIT handle these without a loop.
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
        == u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        && u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]])
            == u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

impl EvidenceSlot {
    /// Makes the slot `addr`'s at `epoch` and rolls its epochs; `false` when the slot
    /// belongs to another address that keeps it.
    ///
    /// Sticky rule: another owner keeps its slot while it was active in the last two
    /// epochs with more than one new flow; a stale owner or one with a single new flow
    /// (what every source of a spoofed flood is) is replaced. So a flood of one-packet
    /// sources churns only among itself and a scanner, once it has sent two probes,
    /// keeps its evidence.
    #[inline(always)]
    pub fn claim(&mut self, addr: &[u8; 16], family: u8, epoch: u32) -> bool {
        if self.epoch != 0 && same_addr(&self.addr, addr) {
            self.roll(epoch);
            return true;
        }
        if self.epoch != 0 && epoch < self.epoch.saturating_add(2) {
            let flows = self.cur.new_flows + self.prev.new_flows;
            if flows > 1 {
                return false;
            }
        }
        // In place: a 232-byte temporary would not fit the 512-byte BPF stack
        // next to the program's other locals.
        unsafe { core::ptr::write_bytes(self as *mut EvidenceSlot, 0, 1) };
        self.addr = *addr;
        self.family = family;
        self.epoch = epoch;
        true
    }

    /// Whether the slot holds `addr`'s evidence (for answers: never claims).
    #[inline(always)]
    pub fn owned_by(&self, addr: &[u8; 16]) -> bool {
        self.epoch != 0 && same_addr(&self.addr, addr)
    }

    /// Moves to `epoch`: one epoch on, `cur` becomes `prev`; more, both are cleared.
    /// An earlier epoch (another CPU's clock read) counts as the current one.
    #[inline(always)]
    pub fn roll(&mut self, epoch: u32) {
        if epoch <= self.epoch {
            return;
        }
        // Copies and clears in place (no stack temporaries, see `claim`).
        if epoch == self.epoch + 1 {
            unsafe { core::ptr::copy_nonoverlapping(&self.cur, &mut self.prev, 1) };
            self.union_hosts = self.cur.distinct_hosts;
            self.union_ports = self.cur.distinct_ports;
        } else {
            unsafe { core::ptr::write_bytes(&mut self.prev as *mut EpochCounts, 0, 1) };
            self.union_hosts = 0;
            self.union_ports = 0;
        }
        unsafe { core::ptr::write_bytes(&mut self.cur as *mut EpochCounts, 0, 1) };
        self.epoch = epoch;
    }

    /// Counts a flow opened towards (`outbound`: by) the owner, with `peer` the other
    /// end and `o` its first packet.
    #[inline(always)]
    pub fn count_opening(&mut self, peer: &[u8; 16], o: &Opening) {
        let c = &mut self.cur;
        c.new_flows = c.new_flows.saturating_add(1);
        match o.kind {
            OpenKind::Syn => c.syn = c.syn.saturating_add(1),
            OpenKind::TcpOther => c.tcp_other = c.tcp_other.saturating_add(1),
            OpenKind::Udp => c.udp = c.udp.saturating_add(1),
            OpenKind::Icmp => c.icmp = c.icmp.saturating_add(1),
            OpenKind::Other => {}
        }
        c.bytes = c.bytes.saturating_add(o.ip_len as u32);
        let hb = host_bit(peer);
        if set_bit(&mut c.hosts, hb) {
            c.distinct_hosts += 1;
            if !has_bit(&self.prev.hosts, hb) {
                self.union_hosts += 1;
            }
        }
        if matches!(o.kind, OpenKind::Syn | OpenKind::TcpOther | OpenKind::Udp) {
            let pb = port_bit(o.dport);
            let c = &mut self.cur;
            if set_bit(&mut c.ports, pb) {
                c.distinct_ports += 1;
                if !has_bit(&self.prev.ports, pb) {
                    self.union_ports += 1;
                }
            }
        }
    }

    /// Counts a RST the owner sent that opened a flow.
    #[inline(always)]
    pub fn count_unsolicited_rst(&mut self) {
        let c = &mut self.cur;
        c.unsolicited_rsts = c.unsolicited_rsts.saturating_add(1);
    }

    /// Counts an answer to a flow the owner opened.
    #[inline(always)]
    pub fn count_answer(&mut self, a: Answer) {
        let c = &mut self.cur;
        match a {
            Answer::Reply => c.replies = c.replies.saturating_add(1),
            Answer::Refused => c.refused = c.refused.saturating_add(1),
            Answer::IcmpError => c.icmp_errors = c.icmp_errors.saturating_add(1),
        }
    }

    /// New flows over `prev + cur`.
    #[inline(always)]
    pub fn new_flows(&self) -> u32 {
        self.cur.new_flows.saturating_add(self.prev.new_flows)
    }

    /// New flows over `prev + cur` that got no reply (refused, ICMP error or silence).
    #[inline(always)]
    pub fn unreplied(&self) -> u32 {
        let replies = self.cur.replies as u32 + self.prev.replies as u32;
        self.new_flows().saturating_sub(replies)
    }

    /// The provisional-quarantine test: at least `threshold` distinct peer hosts or
    /// destination ports (set bits) and at least `threshold` new flows without a
    /// reply over the last one to two epochs. `threshold == 0` is off.
    ///
    /// The reply condition spares a busy client: a browser that opens 50 connections
    /// in a second gets 50 SYN-ACKs, a scan of an empty or filtered address space gets
    /// none and a port scan mostly RSTs.
    #[inline(always)]
    pub fn over_budget(&self, threshold: u32) -> bool {
        threshold != 0
            && (self.union_hosts as u32 >= threshold || self.union_ports as u32 >= threshold)
            && self.unreplied() >= threshold
    }

    /// Whether the report threshold is crossed (distinct hosts or ports only).
    #[inline(always)]
    pub fn over_report(&self, threshold: u32) -> bool {
        threshold != 0
            && (self.union_hosts as u32 >= threshold || self.union_ports as u32 >= threshold)
    }

    /// The event describing this slot now.
    #[inline(always)]
    pub fn event(&self, kind: u8, at_ns: u64) -> EvidenceEvent {
        EvidenceEvent {
            addr: self.addr,
            at_ns,
            kind,
            family: self.family,
            _pad: [0; 2],
            union_hosts: self.union_hosts,
            union_ports: self.union_ports,
            new_flows: self.new_flows(),
            unreplied: self.unreplied(),
        }
    }
}

/// What the program (or meter) should do after counting an opening in the sender's
/// source slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterOpening {
    /// Nothing more.
    Nothing,
    /// Emit an [`EVENT_REPORT`] (first crossing of the report threshold this epoch).
    Report,
    /// Quarantine the sender provisionally and emit [`EVENT_QUARANTINE`].
    Quarantine,
}

/// The thresholds of [`decide_after_opening`], from [`crate::config::GatewayConfig`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    /// [`EvidenceSlot::over_budget`] threshold; 0 = no provisional quarantine.
    pub quarantine: u32,
    /// [`EvidenceSlot::over_report`] threshold; 0 = no report events.
    pub report: u32,
    /// Epochs after a provisional quarantine before the same CPU may make another
    /// for the same source (its TTL, rounded up).
    pub quarantine_epochs: u32,
}

/// After an opening was counted in `src` (at `src.epoch`): whether to report or
/// quarantine, updating the slot's bookkeeping so that each happens at most once
/// per epoch (report) or per quarantine lifetime (quarantine).
#[inline(always)]
pub fn decide_after_opening(src: &mut EvidenceSlot, b: &Budgets) -> AfterOpening {
    let epoch = src.epoch;
    if src.over_budget(b.quarantine) {
        let recent = src.flags & SLOT_QUARANTINED != 0
            && epoch < src.quarantined_epoch.saturating_add(b.quarantine_epochs);
        if !recent {
            src.flags |= SLOT_QUARANTINED;
            src.quarantined_epoch = epoch;
            src.reported_epoch = epoch;
            return AfterOpening::Quarantine;
        }
    }
    if src.reported_epoch != epoch && src.over_report(b.report) {
        src.reported_epoch = epoch;
        return AfterOpening::Report;
    }
    AfterOpening::Nothing
}

#[cfg(test)]
mod tests;
