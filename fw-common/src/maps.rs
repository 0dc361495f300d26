//! Names and default sizes of the XDP program's maps.
//!
//! The names are the ELF symbol names in `fw-ebpf` and the file names under the
//! pin directory (`/sys/fs/bpf/<instance>/maps/<NAME>`), so the kernel program,
//! the loader and the operator CLI agree on them in one place.

/// LPM trie, IPv4 allowlist. Key `Key<[u8; 4]>` (prefix length in bits, address in
/// network byte order), value [`crate::filter::AllowEntry`].
pub const ALLOW_V4: &str = "ALLOW_V4";
/// LPM trie, IPv6 allowlist. Key `Key<[u8; 16]>` (network byte order), value
/// [`crate::filter::AllowEntry`].
pub const ALLOW_V6: &str = "ALLOW_V6";
/// LPM trie, IPv4 blocklist prefixes shorter than /32. Key `Key<[u8; 4]>` (network
/// byte order), value [`crate::filter::BlockEntry`].
pub const BLOCK_V4: &str = "BLOCK_V4";
/// LPM trie, IPv6 blocklist prefixes shorter than /128. Key `Key<[u8; 16]>` (network
/// byte order), value [`crate::filter::BlockEntry`].
pub const BLOCK_V6: &str = "BLOCK_V6";
/// Hash map, IPv4 blocklist single addresses (/32). Key `[u8; 4]`, the address in
/// network byte order; value [`crate::filter::BlockEntry`]. See [`is_host_prefix`].
pub const BLOCK_HOST_V4: &str = "BLOCK_HOST_V4";
/// Hash map, IPv6 blocklist single addresses (/128). Key `[u8; 16]`, network byte
/// order; value [`crate::filter::BlockEntry`].
pub const BLOCK_HOST_V6: &str = "BLOCK_HOST_V6";
/// LRU hash, per-source rate-limit state. Key [`crate::rate::RateKey`], value
/// [`crate::rate::RateState`].
pub const RATE: &str = "RATE";
/// LRU per-CPU hash, bidirectional flow accounting. Key [`crate::flow::FlowKey`],
/// value [`crate::flow::FlowStats`] (one per possible CPU; merge in userspace).
pub const FLOWS: &str = "FLOWS";
/// Per-CPU array of [`crate::counters::CounterValue`], indexed by
/// [`crate::counters::CounterSlot`].
pub const COUNTERS: &str = "COUNTERS";
/// Array with one [`crate::config::GatewayConfig`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// Array (one value shared by all CPUs, `BPF_F_MMAPABLE`: readable through `mmap`
/// of the map fd, slot `i` at byte `i * size_of::<EvidenceSlot>()`) of
/// [`EVIDENCE_SLOTS`] [`crate::evidence::EvidenceSlot`]s, one per sending address
/// (hash-indexed, see [`crate::evidence::slot_index`]).
pub const EVIDENCE_SRC: &str = "EVIDENCE_SRC";
/// The same for receiving addresses.
pub const EVIDENCE_DST: &str = "EVIDENCE_DST";
/// Array (one value shared by all CPUs, `BPF_F_MMAPABLE`) of
/// [`crate::admission::PENDING_SLOTS`] [`crate::admission::PendingFlow`]s: the
/// first packets of flows not yet admitted to [`FLOWS`] (see [`crate::admission`]).
pub const PENDING: &str = "PENDING";
/// Per-CPU array of `u64` event counts of the admission rule, indexed by
/// [`crate::admission::STAT_ADMITTED`], `STAT_PENDED`, `STAT_REPLACED_LIVE`.
pub const ADMISSION: &str = "ADMISSION";
/// BPF ring buffer of [`crate::evidence::EvidenceEvent`]s ([`EVENTS_BYTES`] bytes).
pub const EVENTS: &str = "EVENTS";

/// Hash map of protected TCP services (SYN authentication, see
/// [`crate::synauth`]). Key [`crate::synauth::ServiceKey`], value
/// [`crate::synauth::SynAuthEntry`].
pub const SYN_AUTH: &str = "SYN_AUTH";
/// LRU hash of sources that answered a SYN-authentication challenge. Key: the
/// source address (16 bytes, network order, IPv4-mapped), value: `u64` expiry on
/// the `bpf_ktime_get_ns` clock (ns).
pub const SYN_VALIDATED: &str = "SYN_VALIDATED";
/// Capacity of [`SYN_AUTH`] (protected services).
pub const SYN_AUTH_MAX_ENTRIES: u32 = 1024;
/// Capacity of [`SYN_VALIDATED`] (validated sources). Spoofed sources never get
/// in (they never answer), so a flood cannot churn it.
pub const SYN_VALIDATED_MAX_ENTRIES: u32 = 65_536;

pub use crate::{admission::PENDING_SLOTS, evidence::EVIDENCE_SLOTS};
/// Size of the [`EVENTS`] ring buffer, bytes (a power of two, a multiple of the
/// page size): 64 KiB, about 1,300 events.
pub const EVENTS_BYTES: u32 = 64 * 1024;

/// Every map, in the order the loader pins them.
pub const ALL: [&str; 17] = [
    ALLOW_V4,
    ALLOW_V6,
    BLOCK_V4,
    BLOCK_V6,
    BLOCK_HOST_V4,
    BLOCK_HOST_V6,
    RATE,
    FLOWS,
    COUNTERS,
    CONFIG,
    EVIDENCE_SRC,
    EVIDENCE_DST,
    PENDING,
    ADMISSION,
    EVENTS,
    SYN_AUTH,
    SYN_VALIDATED,
];

/// Whether a blocklist prefix of `prefix_len` bits is a single address, kept in the
/// exact-match maps [`BLOCK_HOST_V4`] / [`BLOCK_HOST_V6`] instead of the LPM tries.
///
/// Why two structures: the kernel's LPM trie is a binary trie of separately
/// allocated nodes, so with traffic from many blocked single addresses nearly every
/// level of the walk is a cache miss (100,000 adjacent /32s: about 17 levels,
/// +200 ns per packet on this project's `filters` benchmark); a hash map answers a
/// single address in one bucket probe. Detector verdicts block single hosts, so
/// that is the common case. The program looks the source up in the host map first:
/// a /32 (/128) is the longest possible prefix, so this keeps longest-prefix-match
/// semantics, and an expired host entry falls through to a covering prefix.
#[inline(always)]
pub const fn is_host_prefix(prefix_len: u8, v6: bool) -> bool {
    prefix_len == if v6 { 128 } else { 32 }
}

/// Default capacity of each allowlist trie (prefixes).
pub const ALLOW_MAX_ENTRIES: u32 = 16_384;
/// Default capacity of each blocklist trie (prefixes). LPM tries allocate nodes on
/// insert (`BPF_F_NO_PREALLOC`), so an empty large trie costs no memory.
pub const BLOCK_MAX_ENTRIES: u32 = 1_048_576;
/// Default capacity of each host blocklist hash map (single addresses). Allocated
/// on insert (`BPF_F_NO_PREALLOC`); the kernel allocates the bucket array up front:
/// 16 bytes per entry of capacity rounded up to a power of two (4 MiB here).
pub const BLOCK_HOST_MAX_ENTRIES: u32 = 262_144;
/// Default capacity of the rate-limit LRU (sources tracked at once).
pub const RATE_MAX_ENTRIES: u32 = 65_536;
/// Default capacity of the flow LRU (flows tracked at once). Memory: entries x
/// possible CPUs x `size_of::<FlowStats>()` (152 bytes), preallocated.
pub const FLOWS_MAX_ENTRIES: u32 = 65_536;

/// Name of the XDP program in the object file and under the pin directory.
pub const PROGRAM: &str = "fw";
