//! The gateway's XDP program, attached to the LAN-facing interface.
//!
//! Per packet, in this order (each packet lands in exactly one counter slot):
//! 1. parse Ethernet, up to `MAX_VLAN_TAGS` (2) VLAN tags (802.1Q / 802.1ad /
//!    0x9100), IPv4 (options; non-first fragments carry no ports) or IPv6 (the
//!    extension headers `fw_common::proto::walk_ipv6_ext` walks: hop-by-hop,
//!    routing, fragment, destination options and AH, at most
//!    `MAX_IPV6_EXT_HEADERS`), then TCP, UDP, ICMP or ICMPv6. The userspace meter
//!    (`flow-meter`) parses with the same `fw_common::proto` rules, so its flow
//!    keys are the kernel's. Frames without a complete Ethernet and IP header
//!    (IPv4 options included) are passed and counted as malformed; a truncated
//!    extension or transport header does not exempt the packet from source
//!    filtering, it only leaves the flow without ports;
//! 2. allowlist (LPM on the source): pass;
//! 3. blocklist, entries with an expiry: first the exact-match host map (single
//!    addresses, /32 or /128), then the LPM trie of shorter prefixes (see
//!    `fw_common::maps::is_host_prefix` for why two structures): `XDP_DROP`, or
//!    would-drop and pass in observe mode;
//!    A host entry flagged `BLOCK_FLAG_NEW_FLOWS_ONLY` (a provisional quarantine,
//!    see 6.) drops only packets without a flow-map entry: the source's
//!    established flows pass;
//! 4. per-source token buckets (GCRA) for TCP SYN-without-ACK and for all packets:
//!    over the limit, drop (would-drop in observe mode);
//! 5. bidirectional flow accounting (per-CPU LRU hash, see `fw_common::flow`) of
//!    every packet that passes (would-drops in observe mode included); dropped
//!    packets open no flow, they are counted in the verdict counters and in the
//!    matching blocklist entry's `hits`. A flow enters the LRU on its second
//!    packet (`fw_common::admission`): a first packet waits in the `PENDING`
//!    array (a 64-byte slot, no allocation), so a spoofed flood of one-packet
//!    flows neither pays an insert per packet nor evicts established flows
//!    (`FLAG_ADMIT_FIRST_PACKET` restores the insert on the first packet);
//! 6. evidence (see `fw_common::evidence`): a packet from a source not on the
//!    allowlist that opens a flow is counted in its sender's and its receiver's
//!    evidence slots; a responder's first packet and every ICMP error in the slot
//!    of the flow's opener (`answer_on_flow`). A sender over its budget
//!    (`GatewayConfig::quarantine_distinct`) gets a provisional quarantine entry in
//!    the host blocklist (origin `ORIGIN_DATAPATH`, expiring after
//!    `quarantine_ttl_ms`) and an `EVENT_QUARANTINE` in the `EVENTS` ring buffer;
//!    one over the report threshold an `EVENT_REPORT` (once per epoch), which wakes
//!    the gateway daemon before its next poll.
//!
//! Fail-open: anything the program cannot parse is passed (and counted), because
//! a gateway that drops what it does not understand cuts off the devices behind
//! it; sources on the blocklist are dropped whatever follows their IP header.
//! Nothing is logged on the per-packet path.
#![no_std]
#![no_main]
// `atomic_xadd`: the bpfel target has no compare-and-swap, so core's AtomicU64
// offers no fetch_add, but BPF has a native atomic add (BPF_ATOMIC | BPF_ADD).
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys are passed by reference on purpose: a key by value (what this lint
// suggests) is copied onto the 512-byte BPF stack, the flow key out of scratch.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::{intrinsics::AtomicOrdering, mem};

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_NOEXIST, iphdr, ipv6hdr, tcphdr,
        xdp_action, xdp_md,
    },
    helpers::{
        bpf_ktime_get_ns, bpf_xdp_adjust_tail,
        generated::{
            bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
            bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6,
        },
    },
    macros::{map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key,
    },
    programs::XdpContext,
};
use fw_common::{
    admission::{
        Admission, PENDING_SLOTS, PendingFlow, STAT_ADMITTED, STAT_PENDED, STAT_REPLACED_LIVE,
        STAT_SLOTS, bucket_of,
    },
    config::GatewayConfig,
    counters::{COUNTER_SLOTS, CounterSlot, CounterValue, Reason, Verdict},
    evidence::{
        AfterOpening, Answer, EVENT_QUARANTINE, EVENT_REPORT, EVIDENCE_SLOTS, EvidenceEvent,
        EvidenceSlot, First, answer_on_flow, decide_after_opening, epoch_of, first_packet,
        inferred_reply, opening, slot_index,
    },
    filter::{AllowEntry, BLOCK_FLAG_NEW_FLOWS_ONLY, BlockEntry, BlockReason, ORIGIN_DATAPATH},
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, FlowStats, PacketMeta, tcp_flags, v4_mapped},
    maps as m,
    proto::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_HLEN, MAX_VLAN_TAGS, is_vlan_tpid, walk_ipv6_ext,
    },
    rate::{RateKey, RateState, gcra_admit},
    synauth::{ServiceKey, SynAuthEntry, csum_add_bytes, csum_fold},
};

/// Allowlist, IPv4 source prefixes. Key: prefix length + address (network order).
#[map(name = "ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> = LpmTrie::with_max_entries(m::ALLOW_MAX_ENTRIES, 0);
/// Allowlist, IPv6 source prefixes.
#[map(name = "ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> = LpmTrie::with_max_entries(m::ALLOW_MAX_ENTRIES, 0);
/// Blocklist, IPv4 source prefixes, entries with expiry (ns, bpf_ktime_get_ns clock).
#[map(name = "BLOCK_V4")]
static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::with_max_entries(m::BLOCK_MAX_ENTRIES, 0);
/// Blocklist, IPv6 source prefixes.
#[map(name = "BLOCK_V6")]
static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(m::BLOCK_MAX_ENTRIES, 0);
/// Blocklist, single IPv4 addresses (exact match). Key: address (network order).
#[map(name = "BLOCK_HOST_V4")]
static BLOCK_HOST_V4: HashMap<[u8; 4], BlockEntry> =
    HashMap::with_max_entries(m::BLOCK_HOST_MAX_ENTRIES, BPF_F_NO_PREALLOC);
/// Blocklist, single IPv6 addresses (exact match).
#[map(name = "BLOCK_HOST_V6")]
static BLOCK_HOST_V6: HashMap<[u8; 16], BlockEntry> =
    HashMap::with_max_entries(m::BLOCK_HOST_MAX_ENTRIES, BPF_F_NO_PREALLOC);
/// Token-bucket state per source address (IPv4-mapped for IPv4).
#[map(name = "RATE")]
static RATE: LruHashMap<RateKey, RateState> = LruHashMap::with_max_entries(m::RATE_MAX_ENTRIES, 0);
/// Flow statistics per normalised 5-tuple + VLAN, one value per CPU.
#[map(name = "FLOWS")]
static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> =
    LruPerCpuHashMap::with_max_entries(m::FLOWS_MAX_ENTRIES, 0);
/// Packets and bytes per verdict/reason slot, one value per CPU.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
/// Per-CPU scratch space: the parser's output, the flow key and a new flow's first
/// value live here, not on the 512-byte BPF stack.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
/// Runtime configuration, index 0.
#[map(name = "CONFIG")]
static CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);
/// Evidence per sending address, hash-indexed (`fw_common::evidence::slot_index`).
/// One value shared by all CPUs, updated with plain stores: two CPUs updating one
/// slot at the same instant can lose an increment or a bit, so the counts are a
/// lower bound (exact when one CPU sees a source, as RSS usually arranges).
/// `BPF_F_MMAPABLE`: the gateway daemon reads it through a shared mapping, without
/// a syscall per slot.
#[map(name = "EVIDENCE_SRC")]
static EVIDENCE_SRC: Array<EvidenceSlot> = Array::with_max_entries(EVIDENCE_SLOTS, BPF_F_MMAPABLE);
/// Evidence per receiving address, same layout and rules.
#[map(name = "EVIDENCE_DST")]
static EVIDENCE_DST: Array<EvidenceSlot> = Array::with_max_entries(EVIDENCE_SLOTS, BPF_F_MMAPABLE);
/// First packets of flows not yet in `FLOWS` (`fw_common::admission`): one value
/// shared by all CPUs, plain stores; `BPF_F_MMAPABLE` for the daemon's export of
/// one-packet flows.
#[map(name = "PENDING")]
static PENDING: Array<PendingFlow> = Array::with_max_entries(PENDING_SLOTS, BPF_F_MMAPABLE);
/// Counts of the admission rule (`fw_common::admission::STAT_*`), per CPU.
#[map(name = "ADMISSION")]
static ADMISSION: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);
/// Protected TCP services (SYN authentication, `fw_common::synauth`).
#[map(name = "SYN_AUTH")]
static SYN_AUTH: HashMap<ServiceKey, SynAuthEntry> =
    HashMap::with_max_entries(m::SYN_AUTH_MAX_ENTRIES, 0);
/// Sources that answered a challenge: address -> expiry (ns).
#[map(name = "SYN_VALIDATED")]
static SYN_VALIDATED: LruHashMap<[u8; 16], u64> =
    LruHashMap::with_max_entries(m::SYN_VALIDATED_MAX_ENTRIES, 0);
/// Wake-ups for the gateway daemon: `fw_common::evidence::EvidenceEvent`s.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(m::EVENTS_BYTES, 0);

mod synauth;
use synauth::{SYN_AUTH_GO_ON, syn_auth};

#[xdp]
pub fn fw(ctx: XdpContext) -> u32 {
    try_fw(&ctx)
}

/// Bounds-checked pointer to a `T` at `offset` bytes into the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a big-endian `u16` at `offset`.
#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Per-CPU working memory of one program run.
#[repr(C)]
struct Scratch {
    p: Parsed,
    key: FlowKey,
    fresh: FlowStats,
    /// A provisional quarantine entry being written.
    block: BlockEntry,
    /// An event being written.
    event: EvidenceEvent,
    /// The protected service a SYN or RST is for.
    svc: ServiceKey,
    /// Expiry of a validated source being written (ns).
    validated_until: u64,
    /// A synthetic IP header (IPv4: 20 bytes, IPv6: 40) for the cookie helpers.
    cookie_ip: [u32; 10],
    /// A synthetic 20-byte TCP header for the cookie helpers.
    cookie_th: [u32; 5],
}

/// What the parser learned about a packet.
#[repr(C)]
struct Parsed {
    src: [u8; 16],
    dst: [u8; 16],
    /// IPv4 source in network order (valid when `family == FAMILY_V4`).
    src4: [u8; 4],
    family: u8,
    proto: u8,
    vlan_id: u16,
    sport: u16,
    dport: u16,
    meta: PacketMeta,
    /// TCP sequence number (host order; valid when `meta.is_tcp`).
    tcp_seq: u32,
    /// Offset of the IP header in the frame, bytes.
    l3_off: u16,
    /// Offset of the transport header, bytes.
    l4_off: u16,
    /// An IPv4 header without options, or IPv6 with TCP/UDP right after the fixed
    /// header: a packet the program can turn into its own answer.
    simple_l3: bool,
}

#[inline(always)]
fn count(slot: CounterSlot, len: u64) {
    count_index(slot as u32, len)
}

/// [`count`] by slot index (out-of-range indices are ignored by the map lookup).
#[inline(always)]
fn count_index(slot: u32, len: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // Per-CPU value: plain updates are exact.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Atomically increments a `hits` field inside a map value the kernel owns.
#[inline(always)]
fn bump(hits: *const u64) {
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits as *mut u64, 1)
    };
}

#[inline(always)]
fn try_fw(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let scratch = unsafe { &mut *scratch };
    if !parse(ctx, &mut scratch.p) {
        // Not IP, or the L2/L3 headers are incomplete (already counted).
        return xdp_action::XDP_PASS;
    }
    // Index 0 of a one-entry array always exists; read in place (a copy would
    // take 40 bytes of the 512-byte stack).
    let Some(cfg) = CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // The clock is read at most once, and only on paths that need it (an expiring
    // entry, a rate limit, flow accounting): a drop by a permanent entry reads none.
    let mut clock = Clock(0);
    let (mut slot, provisional) = decide(cfg, &scratch.p, &mut clock);
    // The flow key is built only when needed: a drop by the blocklist needs none.
    let side =
        if provisional.is_some() || (slot.verdict() != Verdict::Drop && cfg.flow_accounting()) {
            flow_key(scratch)
        } else {
            0
        };
    if let Some(hits) = provisional {
        // A provisionally quarantined source: its established flows pass.
        if FLOWS.get_ptr_mut(&scratch.key).is_some() {
            slot = CounterSlot::PassNoMatch;
        } else {
            bump(hits);
        }
    }
    // SYN authentication of protected services: only SYNs and RSTs pay the lookup.
    if slot == CounterSlot::PassNoMatch
        && scratch.p.meta.is_tcp
        && scratch.p.meta.tcp_flags & (tcp_flags::SYN | tcp_flags::RST) != 0
        && scratch.p.meta.tcp_flags & tcp_flags::ACK == 0
    {
        let r = syn_auth(ctx.ctx, scratch, cfg, clock.now());
        if r != SYN_AUTH_GO_ON {
            count_index((r >> 32) as u32, len);
            return r as u32;
        }
    }
    count(slot, len);
    if slot.verdict() == Verdict::Drop {
        return xdp_action::XDP_DROP;
    }
    if cfg.flow_accounting() {
        let now = clock.now();
        let evidence = slot != CounterSlot::PassAllowlist;
        account_flow(scratch, side, cfg, now, evidence);
    }
    xdp_action::XDP_PASS
}

/// Builds the packet's normalised flow key in scratch space; returns the
/// sender's side.
#[inline(always)]
fn flow_key(sc: &mut Scratch) -> u8 {
    let p = &sc.p;
    sc.key.set(
        &p.src, p.sport, &p.dst, p.dport, p.proto, p.family, p.vlan_id,
    )
}

/// `bpf_ktime_get_ns`, read on first use.
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// Steps 1-4: the counter slot (and with it the verdict) for a parsed packet, and
/// for a provisional quarantine (a `BLOCK_FLAG_NEW_FLOWS_ONLY` entry) the entry's
/// `hits`: the slot is then the quarantine drop, which the caller turns into a
/// pass when the packet belongs to an established flow.
#[inline(always)]
fn decide(cfg: &GatewayConfig, p: &Parsed, clock: &mut Clock) -> (CounterSlot, Option<*const u64>) {
    let observe = cfg.observe();
    // 1. Allowlist.
    let allowed = if p.family == FAMILY_V4 {
        ALLOW_V4.get(Key::new(32, p.src4))
    } else {
        ALLOW_V6.get(Key::new(128, p.src))
    };
    if let Some(a) = allowed {
        bump(&a.hits);
        return (CounterSlot::PassAllowlist, None);
    }
    // 2. Blocklist: the host entry (the longest possible prefix) first, then the
    // trie; an expired entry counts as absent.
    // Safety: map values stay valid for the program run (RCU); `hits` is only
    // changed with atomic adds.
    // `black_box` keeps the two lookups at two call sites: merged into one call
    // fed with either map (what LLVM does otherwise), the verifier cannot inline
    // the hash-map lookup and every packet pays the generic helper, an indirect
    // call (~15 ns here; BENCHMARKS.md `xdp`, "Where the time goes").
    let host = unsafe {
        if p.family == FAMILY_V4 {
            core::hint::black_box(BLOCK_HOST_V4.get(&p.src4))
        } else {
            BLOCK_HOST_V6.get(&p.src)
        }
    };
    if let Some(b) = active(host, clock) {
        if b.new_flows_only() {
            return (
                CounterSlot::dropping(Reason::Quarantine, observe),
                Some(&b.hits as *const u64),
            );
        }
        bump(&b.hits);
        return (CounterSlot::dropping(Reason::Blocklist, observe), None);
    }
    let blocked = if p.family == FAMILY_V4 {
        BLOCK_V4.get(Key::new(32, p.src4))
    } else {
        BLOCK_V6.get(Key::new(128, p.src))
    };
    if let Some(b) = active(blocked, clock) {
        bump(&b.hits);
        return (CounterSlot::dropping(Reason::Blocklist, observe), None);
    }
    // 3. Per-source rate limits.
    if (cfg.syn_rate_pps != 0 || cfg.pkt_rate_pps != 0)
        && let Some(reason) = rate_limit(cfg, p, clock.now())
    {
        return (CounterSlot::dropping(reason, observe), None);
    }
    (CounterSlot::PassNoMatch, None)
}

/// The blocklist entry, when one was found and is in force.
#[inline(always)]
fn active<'a>(entry: Option<&'a BlockEntry>, clock: &mut Clock) -> Option<&'a BlockEntry> {
    match entry {
        Some(b) if b.active_at(|| clock.now()) => Some(b),
        _ => None,
    }
}

/// Runs the source's token buckets; returns the reason when over a limit.
#[inline(always)]
fn rate_limit(cfg: &GatewayConfig, p: &Parsed, now: u64) -> Option<Reason> {
    let key = RateKey { addr: p.src };
    let state = match RATE.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            let _ = RATE.insert(&key, &RateState::default(), BPF_NOEXIST as u64);
            RATE.get_ptr_mut(&key)?
        }
    };
    let state = unsafe { &mut *state };
    let f = p.meta.tcp_flags;
    let is_syn = p.meta.is_tcp && f & tcp_flags::SYN != 0 && f & tcp_flags::ACK == 0;
    if is_syn && !gcra_admit(&mut state.syn_tat_ns, now, cfg.syn_rate_pps, cfg.syn_burst) {
        return Some(Reason::SynRate);
    }
    if !gcra_admit(&mut state.pkt_tat_ns, now, cfg.pkt_rate_pps, cfg.pkt_burst) {
        return Some(Reason::PktRate);
    }
    None
}

/// Step 5 (and 6 when `evidence`): accounts the packet in its flow, whose key
/// [`flow_key`] put in scratch space.
#[inline(always)]
fn account_flow(sc: &mut Scratch, side: u8, cfg: &GatewayConfig, now: u64, evidence: bool) {
    if let Some(s) = FLOWS.get_ptr_mut(&sc.key) {
        let s = unsafe { &mut *s };
        // Answers count whoever sends them (not only non-allowlisted senders).
        let m = &sc.p.meta;
        if let Some(a) = answer_on_flow(
            s.first_seen_ns != 0,
            side == s.opener,
            s.dir[side as usize].packets,
            sc.p.proto,
            m.is_tcp,
            m.tcp_flags,
            m.icmp,
        ) {
            answer_to(&sc.p.dst, a);
        } else {
            let (mine, other) = if side == 0 {
                (&s.dir[0], &s.dir[1])
            } else {
                (&s.dir[1], &s.dir[0])
            };
            if inferred_reply(
                s.first_seen_ns != 0,
                side == s.opener,
                mine.packets,
                other.packets,
                mine.syn,
                m.is_tcp,
                m.tcp_flags,
            ) {
                answer_to(&sc.p.src, Answer::Reply);
            }
        }
        s.account(side, &sc.p.meta, now);
        return;
    }
    open_flow(sc, side, cfg, now, evidence);
}

/// A packet without a flow entry: admits its flow on its second packet
/// (`fw_common::admission`), or with `FLAG_ADMIT_FIRST_PACKET` inserts it now;
/// counts step 6 for a first packet. A BPF-to-BPF call of its own (not inlined):
/// the cold path's locals stay off `fw`'s 512-byte stack frame.
#[inline(never)]
fn open_flow(sc: &mut Scratch, side: u8, cfg: &GatewayConfig, now: u64, evidence: bool) {
    sc.fresh = FlowStats::default();
    if cfg.admit_first_packet() {
        sc.fresh.account(side, &sc.p.meta, now);
        if insert_flow(sc, side, now) {
            count_opening(sc, cfg, now, evidence);
        }
        return;
    }
    let base = bucket_of(&sc.key);
    let (Some(s0), Some(s1)) = (PENDING.get_ptr_mut(base), PENDING.get_ptr_mut(base + 1)) else {
        return;
    };
    let (s0, s1) = unsafe { (&mut *s0, &mut *s1) };
    match fw_common::admission::decide(&sc.key, s0, s1, now, cfg.flow_idle_ns()) {
        Admission::Admit(way) => {
            let pf = if way == 0 { s0 } else { s1 };
            pf.account_into(&mut sc.fresh);
            // The pending packet opened the flow: this one may answer it.
            let m = &sc.p.meta;
            let same_side = side == pf.side;
            if let Some(a) = answer_on_flow(
                true,
                same_side,
                same_side as u64,
                sc.p.proto,
                m.is_tcp,
                m.tcp_flags,
                m.icmp,
            ) {
                answer_to(&sc.p.dst, a);
            } else if inferred_reply(
                true,
                same_side,
                1,
                0,
                (pf.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN) as u32,
                m.is_tcp,
                m.tcp_flags,
            ) {
                answer_to(&sc.p.src, Answer::Reply);
            }
            pf.first_seen_ns = 0;
            sc.fresh.account(side, &sc.p.meta, now);
            let _ = insert_flow(sc, side, now);
            stat(STAT_ADMITTED);
        }
        Admission::Pend { way, replaces_live } => {
            let pf = if way == 0 { s0 } else { s1 };
            pf.set(&sc.key, side, &sc.p.meta, now);
            stat(STAT_PENDED);
            if replaces_live {
                stat(STAT_REPLACED_LIVE);
            }
            count_opening(sc, cfg, now, evidence);
        }
    }
}

/// Inserts `sc.fresh` as the flow of `sc.key`; whether it was new. When another
/// CPU created the entry in between, adds this packet to it instead.
#[inline(always)]
fn insert_flow(sc: &mut Scratch, side: u8, now: u64) -> bool {
    if FLOWS.insert(&sc.key, &sc.fresh, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    if let Some(s) = FLOWS.get_ptr_mut(&sc.key) {
        unsafe { (*s).account(side, &sc.p.meta, now) };
    }
    false
}

/// Counts one admission event (per-CPU: plain add).
#[inline(always)]
fn stat(slot: u32) {
    if let Some(c) = ADMISSION.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

/// Step 6 for a packet that opened a flow. A BPF-to-BPF call of its own (not
/// inlined), so its locals do not add to `fw`'s 512-byte stack frame.
#[inline(never)]
fn count_opening(sc: &mut Scratch, cfg: &GatewayConfig, now: u64, evidence: bool) {
    let p = &sc.p;
    let m = &p.meta;
    let epoch = epoch_of(now);
    let o = match first_packet(
        p.proto,
        m.is_tcp,
        m.tcp_flags,
        m.icmp,
        p.sport,
        p.dport,
        m.ip_len,
    ) {
        First::Opens(o) => o,
        First::Answers(a) => {
            // An ICMP error or a SYN-ACK answers a flow its receiver opened
            // (whoever sent it).
            answer_to(&p.dst, a);
            return;
        }
        First::Resets => {
            answer_to(&p.dst, Answer::Refused);
            if evidence && let Some(s) = EVIDENCE_SRC.get_ptr_mut(slot_index(&p.src)) {
                let s = unsafe { &mut *s };
                if s.claim(&p.src, p.family, epoch) {
                    s.count_unsolicited_rst();
                }
            }
            return;
        }
    };
    if !evidence {
        // An allowlisted sender's flows are not counted.
        return;
    }
    if let Some(d) = EVIDENCE_DST.get_ptr_mut(slot_index(&p.dst)) {
        let d = unsafe { &mut *d };
        if d.claim(&p.dst, p.family, epoch) {
            d.count_opening(&p.src, &o);
        }
    }
    let Some(s) = EVIDENCE_SRC.get_ptr_mut(slot_index(&p.src)) else {
        return;
    };
    let s = unsafe { &mut *s };
    if !s.claim(&p.src, p.family, epoch) {
        return;
    }
    s.count_opening(&p.dst, &o);
    match decide_after_opening(s, &cfg.budgets()) {
        AfterOpening::Nothing => {}
        AfterOpening::Report => emit(sc, s, EVENT_REPORT, now),
        AfterOpening::Quarantine => {
            if quarantine(sc, cfg, now) {
                emit(sc, s, EVENT_QUARANTINE, now);
            }
        }
    }
}

/// Counts an answer in the source slot of `to` (the flow's opener), when it has
/// one. Once per flow: a call of its own, not inlined.
#[inline(never)]
fn answer_to(to: &[u8; 16], a: Answer) {
    if let Some(s) = EVIDENCE_SRC.get_ptr_mut(slot_index(to)) {
        let s = unsafe { &mut *s };
        if s.owned_by(to) {
            s.count_answer(a);
        }
    }
}

/// Puts a provisional quarantine entry for the packet's sender into the host
/// blocklist, unless an entry is in force there already; whether it did.
#[inline(always)]
fn quarantine(sc: &mut Scratch, cfg: &GatewayConfig, now: u64) -> bool {
    sc.block = BlockEntry {
        expires_ns: now + cfg.quarantine_ttl_ns(),
        hits: 0,
        rule_id: 0,
        reason: BlockReason::Quarantine as u8,
        origin: ORIGIN_DATAPATH,
        flags: BLOCK_FLAG_NEW_FLOWS_ONLY,
        lpm_tag: 0,
    };
    let p = &sc.p;
    let entry = &sc.block;
    if p.family == FAMILY_V4 {
        if let Some(b) = unsafe { BLOCK_HOST_V4.get(&p.src4) }
            && b.active(now)
        {
            return false;
        }
        BLOCK_HOST_V4.insert(&p.src4, entry, BPF_ANY as u64).is_ok()
    } else {
        if let Some(b) = unsafe { BLOCK_HOST_V6.get(&p.src) }
            && b.active(now)
        {
            return false;
        }
        BLOCK_HOST_V6.insert(&p.src, entry, BPF_ANY as u64).is_ok()
    }
}

/// Writes an event about `s` into the ring buffer (dropped when it is full: the
/// daemon's poll reads the same evidence anyway).
#[inline(always)]
fn emit(sc: &mut Scratch, s: &EvidenceSlot, kind: u8, now: u64) {
    sc.event = s.event(kind, now);
    let _ = EVENTS.output::<EvidenceEvent>(&sc.event, 0);
}

/// Parses L2-L4 into `p`. `false` means "pass without filtering" (non-IP or
/// incomplete L2/L3 headers); the packet has then been counted.
#[inline(always)]
fn parse(ctx: &XdpContext, p: &mut Parsed) -> bool {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let Some(mut ethertype) = be16(ctx, 12) else {
        count(CounterSlot::PassMalformed, len);
        return false;
    };
    let mut off = ETH_HLEN;
    let mut vlan_id = 0u16;
    for _ in 0..MAX_VLAN_TAGS {
        if is_vlan_tpid(ethertype) {
            let (Some(tci), Some(inner)) = (be16(ctx, off), be16(ctx, off + 2)) else {
                count(CounterSlot::PassMalformed, len);
                return false;
            };
            vlan_id = tci & 0x0fff;
            ethertype = inner;
            off += 4;
        }
    }
    p.vlan_id = vlan_id;
    p.l3_off = off as u16;
    p.simple_l3 = false;
    p.sport = 0;
    p.dport = 0;
    p.meta = PacketMeta::default();
    let ok = match ethertype {
        ETH_P_IP => parse_v4(ctx, off, p).is_some(),
        ETH_P_IPV6 => parse_v6(ctx, off, p).is_some(),
        _ => {
            count(CounterSlot::PassNonIp, len);
            return false;
        }
    };
    if !ok {
        count(CounterSlot::PassMalformed, len);
    }
    ok
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize, p: &mut Parsed) -> Option<()> {
    let hdr = ptr_at::<[u8; 20]>(ctx, off)?;
    let h = unsafe { &*hdr };
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    // The options must be present too.
    ptr_at::<u8>(ctx, off + ihl - 1)?;
    let tot_len = u16::from_be_bytes([h[2], h[3]]);
    let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let src4 = [h[12], h[13], h[14], h[15]];
    let dst4 = [h[16], h[17], h[18], h[19]];
    p.src = v4_mapped(src4);
    p.dst = v4_mapped(dst4);
    p.src4 = src4;
    p.family = FAMILY_V4;
    p.proto = h[9];
    p.meta.ip_len = tot_len;
    if frag_off == 0 {
        p.simple_l3 = ihl == 20 && h[6] & 0x20 == 0;
        parse_l4(ctx, off + ihl, p);
    }
    Some(())
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize, p: &mut Parsed) -> Option<()> {
    let hdr = ptr_at::<[u8; 40]>(ctx, off)?;
    let h = unsafe { &*hdr };
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]);
    p.src.copy_from_slice(&h[8..24]);
    p.dst.copy_from_slice(&h[24..40]);
    let next = h[6];
    // The walk's offsets count from the end of the fixed header.
    let ext = off + IPV6_HLEN;
    let up = walk_ipv6_ext(next, |at| {
        // One bounds check for both octets, so the verifier sees it.
        ptr_at::<[u8; 2]>(ctx, ext + at).map(|e| unsafe { *e })
    });
    p.src4 = [0; 4];
    p.family = FAMILY_V6;
    p.proto = up.proto;
    p.meta.ip_len = payload_len.saturating_add(IPV6_HLEN as u16);
    if up.transport {
        p.simple_l3 = up.offset == 0;
        parse_l4(ctx, ext + up.offset, p);
    }
    Some(())
}

/// Reads ports, TCP flags or the ICMP type/code; leaves them unset when the
/// transport header is truncated.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, p: &mut Parsed) {
    p.l4_off = off as u16;
    match p.proto {
        IPPROTO_TCP => {
            if let Some(t) = ptr_at::<[u8; 20]>(ctx, off) {
                let t = unsafe { &*t };
                p.sport = u16::from_be_bytes([t[0], t[1]]);
                p.dport = u16::from_be_bytes([t[2], t[3]]);
                p.meta.tcp_flags = t[13];
                p.meta.is_tcp = true;
                p.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            }
        }
        IPPROTO_UDP => {
            if let Some(u) = ptr_at::<[u8; 8]>(ctx, off) {
                let u = unsafe { &*u };
                p.sport = u16::from_be_bytes([u[0], u[1]]);
                p.dport = u16::from_be_bytes([u[2], u[3]]);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Some(i) = ptr_at::<[u8; 4]>(ctx, off) {
                let i = unsafe { &*i };
                p.meta.icmp = Some((i[0], i[1]));
            }
        }
        _ => {}
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
