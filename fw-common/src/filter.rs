//! Values of the allowlist and blocklist LPM tries.
//!
//! Keys are `Key<[u8; 4]>` / `Key<[u8; 16]>` (aya's `lpm_trie::Key`: a `u32`
//! prefix length in bits followed by the address in network byte order), per the
//! kernel's `BPF_MAP_TYPE_LPM_TRIE` documentation (Documentation/bpf/map_lpm_trie.rst).

/// Who put an entry into a list.
pub const ORIGIN_MANUAL: u8 = 0;
/// Put there by a detector's verdict.
pub const ORIGIN_DETECTOR: u8 = 1;
/// Loaded from a threat-intelligence feed.
pub const ORIGIN_FEED: u8 = 2;
/// Implied by the gateway configuration (own addresses, management network).
pub const ORIGIN_CONFIG: u8 = 3;
/// Put there by a dashboard operator's command.
pub const ORIGIN_COMMAND: u8 = 4;
/// Put there by the XDP program itself: a provisional quarantine
/// ([`crate::config::GatewayConfig::quarantine_distinct`]).
pub const ORIGIN_DATAPATH: u8 = 5;

/// [`BlockEntry::flags`] bit: the entry drops only packets that would open a new
/// flow (no entry in the flow map); the source's established flows pass. A
/// provisional quarantine is such an entry.
pub const BLOCK_FLAG_NEW_FLOWS_ONLY: u8 = 1 << 0;

/// Why a source is blocked (stable codes; the text lives in userspace).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BlockReason {
    Unspecified = 0,
    Manual = 1,
    PortScan = 2,
    SynFlood = 3,
    BruteForce = 4,
    UnauthorizedAccess = 5,
    TrafficSpike = 6,
    Anomaly = 7,
    ThreatFeed = 8,
    Quarantine = 9,
}

impl BlockReason {
    /// The reason for a code read back from the map; unknown codes are `Unspecified`.
    pub const fn from_code(code: u8) -> BlockReason {
        match code {
            1 => BlockReason::Manual,
            2 => BlockReason::PortScan,
            3 => BlockReason::SynFlood,
            4 => BlockReason::BruteForce,
            5 => BlockReason::UnauthorizedAccess,
            6 => BlockReason::TrafficSpike,
            7 => BlockReason::Anomaly,
            8 => BlockReason::ThreatFeed,
            9 => BlockReason::Quarantine,
            _ => BlockReason::Unspecified,
        }
    }
}

/// A blocklist entry. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// Expiry on the `bpf_ktime_get_ns` clock (CLOCK_MONOTONIC, ns); 0 = permanent.
    /// An entry with `0 < expires_ns <= now` counts as absent.
    pub expires_ns: u64,
    /// Packets that matched this entry (dropped or would-drop). Incremented with an
    /// atomic add by the program, so it is exact across CPUs.
    pub hits: u64,
    /// Identifier of the rule or verdict that created the entry (0 = none).
    pub rule_id: u32,
    /// [`BlockReason`] code.
    pub reason: u8,
    /// `ORIGIN_*` code.
    pub origin: u8,
    /// `BLOCK_FLAG_*` bits.
    pub flags: u8,
    /// Userspace bookkeeping, ignored by the program: in an LPM-trie entry,
    /// fw-ctl writes the entry's own prefix length + 1 (1..=129) on insert, so an
    /// exact-prefix read can tell the entry from a covering shorter prefix with the
    /// same metadata (an LPM lookup returns the longest match, not the exact key).
    /// 0 in the host maps and in trie entries written by older versions. fw-ctl's
    /// reads return it as 0.
    pub lpm_tag: u8,
}

impl BlockEntry {
    /// Whether the entry drops only a source's new flows (a provisional quarantine).
    #[inline(always)]
    pub fn new_flows_only(&self) -> bool {
        self.flags & BLOCK_FLAG_NEW_FLOWS_ONLY != 0
    }

    /// Whether the entry is in force at `now_ns` (same clock as `expires_ns`).
    #[inline(always)]
    pub fn active(&self, now_ns: u64) -> bool {
        self.active_at(|| now_ns)
    }

    /// [`Self::active`] with the clock read only when the entry can expire, so a
    /// permanent entry costs no clock read on the XDP drop path.
    #[inline(always)]
    pub fn active_at(&self, now_ns: impl FnOnce() -> u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns()
    }
}

/// An allowlist entry. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowEntry {
    /// Packets that matched this entry, incremented atomically by the program.
    pub hits: u64,
    /// Identifier of the rule that created the entry (0 = none).
    pub rule_id: u32,
    /// `ORIGIN_*` code.
    pub origin: u8,
    pub _pad: [u8; 3],
}
