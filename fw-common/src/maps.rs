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
/// LPM trie, IPv4 blocklist. Key `Key<[u8; 4]>` (network byte order), value
/// [`crate::filter::BlockEntry`].
pub const BLOCK_V4: &str = "BLOCK_V4";
/// LPM trie, IPv6 blocklist. Key `Key<[u8; 16]>` (network byte order), value
/// [`crate::filter::BlockEntry`].
pub const BLOCK_V6: &str = "BLOCK_V6";
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

/// Every map, in the order the loader pins them.
pub const ALL: [&str; 8] = [
    ALLOW_V4, ALLOW_V6, BLOCK_V4, BLOCK_V6, RATE, FLOWS, COUNTERS, CONFIG,
];

/// Default capacity of each allowlist trie (prefixes).
pub const ALLOW_MAX_ENTRIES: u32 = 16_384;
/// Default capacity of each blocklist trie (prefixes). LPM tries allocate nodes on
/// insert (`BPF_F_NO_PREALLOC`), so an empty large trie costs no memory.
pub const BLOCK_MAX_ENTRIES: u32 = 1_048_576;
/// Default capacity of the rate-limit LRU (sources tracked at once).
pub const RATE_MAX_ENTRIES: u32 = 65_536;
/// Default capacity of the flow LRU (flows tracked at once). Memory: entries x
/// possible CPUs x `size_of::<FlowStats>()` (152 bytes), preallocated.
pub const FLOWS_MAX_ENTRIES: u32 = 65_536;

/// Name of the XDP program in the object file and under the pin directory.
pub const PROGRAM: &str = "fw";
