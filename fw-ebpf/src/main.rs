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
//! 4. per-source token buckets (GCRA) for TCP SYN-without-ACK and for all packets:
//!    over the limit, drop (would-drop in observe mode);
//! 5. bidirectional flow accounting (per-CPU LRU hash, see `fw_common::flow`) of
//!    every packet that passes (would-drops in observe mode included); dropped
//!    packets open no flow, they are counted in the verdict counters and in the
//!    matching blocklist entry's `hits`.
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
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use fw_common::{
    config::GatewayConfig,
    counters::{COUNTER_SLOTS, CounterSlot, CounterValue, Reason, Verdict},
    filter::{AllowEntry, BlockEntry},
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, FlowStats, PacketMeta, tcp_flags, v4_mapped},
    maps as m,
    proto::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_HLEN, MAX_VLAN_TAGS, is_vlan_tpid, walk_ipv6_ext,
    },
    rate::{RateKey, RateState, gcra_admit},
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
}

#[inline(always)]
fn count(slot: CounterSlot, len: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot as u32) {
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
    let p = &scratch.p;
    let cfg = match CONFIG.get(0) {
        Some(c) => *c,
        None => GatewayConfig::default(),
    };
    // The clock is read at most once, and only on paths that need it (an expiring
    // entry, a rate limit, flow accounting): a drop by a permanent entry reads none.
    let mut clock = Clock(0);
    let slot = decide(&cfg, p, &mut clock);
    count(slot, len);
    if slot.verdict() == Verdict::Drop {
        return xdp_action::XDP_DROP;
    }
    if cfg.flow_accounting() {
        let now = clock.now();
        account_flow(scratch, now);
    }
    xdp_action::XDP_PASS
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

/// Steps 1-3: the counter slot (and with it the verdict) for a parsed packet.
#[inline(always)]
fn decide(cfg: &GatewayConfig, p: &Parsed, clock: &mut Clock) -> CounterSlot {
    let observe = cfg.observe();
    // 1. Allowlist.
    let allowed = if p.family == FAMILY_V4 {
        ALLOW_V4.get(Key::new(32, p.src4))
    } else {
        ALLOW_V6.get(Key::new(128, p.src))
    };
    if let Some(a) = allowed {
        bump(&a.hits);
        return CounterSlot::PassAllowlist;
    }
    // 2. Blocklist: the host entry (the longest possible prefix) first, then the
    // trie; an expired entry counts as absent.
    // Safety: map values stay valid for the program run (RCU); `hits` is only
    // changed with atomic adds.
    let host = unsafe {
        if p.family == FAMILY_V4 {
            BLOCK_HOST_V4.get(&p.src4)
        } else {
            BLOCK_HOST_V6.get(&p.src)
        }
    };
    if active(host, clock) {
        return CounterSlot::dropping(Reason::Blocklist, observe);
    }
    let blocked = if p.family == FAMILY_V4 {
        BLOCK_V4.get(Key::new(32, p.src4))
    } else {
        BLOCK_V6.get(Key::new(128, p.src))
    };
    if active(blocked, clock) {
        return CounterSlot::dropping(Reason::Blocklist, observe);
    }
    // 3. Per-source rate limits.
    if (cfg.syn_rate_pps != 0 || cfg.pkt_rate_pps != 0)
        && let Some(reason) = rate_limit(cfg, p, clock.now())
    {
        return CounterSlot::dropping(reason, observe);
    }
    CounterSlot::PassNoMatch
}

/// Whether a blocklist entry was found and is in force; counts the hit if so.
#[inline(always)]
fn active(entry: Option<&BlockEntry>, clock: &mut Clock) -> bool {
    match entry {
        Some(b) if b.active_at(|| clock.now()) => {
            bump(&b.hits);
            true
        }
        _ => false,
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

#[inline(always)]
fn account_flow(sc: &mut Scratch, now: u64) {
    let p = &sc.p;
    let (key, side) = FlowKey::new(p.src, p.sport, p.dst, p.dport, p.proto, p.family, p.vlan_id);
    sc.key = key;
    if let Some(s) = FLOWS.get_ptr_mut(&sc.key) {
        unsafe { (*s).account(side, &sc.p.meta, now) };
        return;
    }
    // A new flow: its first value is built in scratch space.
    sc.fresh = FlowStats::default();
    sc.fresh.account(side, &sc.p.meta, now);
    if FLOWS
        .insert(&sc.key, &sc.fresh, BPF_NOEXIST as u64)
        .is_err()
    {
        // Another packet of this flow created the entry in between: add to it.
        if let Some(s) = FLOWS.get_ptr_mut(&sc.key) {
            unsafe { (*s).account(side, &sc.p.meta, now) };
        }
    }
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
        parse_l4(ctx, ext + up.offset, p);
    }
    Some(())
}

/// Reads ports, TCP flags or the ICMP type/code; leaves them unset when the
/// transport header is truncated.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, p: &mut Parsed) {
    match p.proto {
        IPPROTO_TCP => {
            if let Some(t) = ptr_at::<[u8; 20]>(ctx, off) {
                let t = unsafe { &*t };
                p.sport = u16::from_be_bytes([t[0], t[1]]);
                p.dport = u16::from_be_bytes([t[2], t[3]]);
                p.meta.tcp_flags = t[13];
                p.meta.is_tcp = true;
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
