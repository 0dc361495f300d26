//! Per-CPU verdict counters (map [`crate::maps::COUNTERS`]): packets and bytes by
//! verdict and reason. Every packet the program sees lands in exactly one slot.

/// Packets and bytes counted in one slot on one CPU. Bytes are frame bytes as XDP
/// sees them (`data_end - data`, L2 header included, no FCS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// Packets.
    pub packets: u64,
    /// Bytes (L2 frame length).
    pub bytes: u64,
}

/// What the program did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Verdict {
    /// `XDP_PASS`.
    Pass,
    /// `XDP_DROP` (enforce mode).
    Drop,
    /// Would have been dropped (or answered); passed because the gateway is in
    /// observe mode.
    WouldDrop,
    /// `XDP_TX`: answered by the program itself (a SYN-authentication challenge).
    Tx,
}

/// Why the program reached its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Reason {
    /// No rule matched.
    NoMatch,
    /// Source matched the allowlist.
    Allowlist,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Truncated or unparseable headers.
    Malformed,
    /// Source matched an unexpired blocklist entry.
    Blocklist,
    /// Source exceeded its SYN token bucket.
    SynRate,
    /// Source exceeded its packet token bucket.
    PktRate,
    /// A provisionally quarantined source opened a new flow
    /// ([`crate::filter::BLOCK_FLAG_NEW_FLOWS_ONLY`]).
    Quarantine,
    /// SYN authentication of a protected service ([`crate::synauth`]): a SYN
    /// challenged (`Tx`), or a client's RST with a valid cookie consumed (`Drop`).
    SynAuth,
    /// A SYN to a protected service that could not be challenged, over the
    /// service's fallback rate.
    VictimRate,
}

/// Index into the counter array. Host byte order `u32`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterSlot {
    PassNoMatch = 0,
    PassAllowlist = 1,
    PassNonIp = 2,
    PassMalformed = 3,
    DropBlocklist = 4,
    DropSynRate = 5,
    DropPktRate = 6,
    WouldDropBlocklist = 7,
    WouldDropSynRate = 8,
    WouldDropPktRate = 9,
    DropQuarantine = 10,
    WouldDropQuarantine = 11,
    TxSynAuth = 12,
    WouldTxSynAuth = 13,
    DropSynAuth = 14,
    DropVictimRate = 15,
    WouldDropVictimRate = 16,
}

/// Number of slots in the counter array.
pub const COUNTER_SLOTS: u32 = 17;

impl CounterSlot {
    /// Every slot, in index order.
    pub const ALL: [CounterSlot; COUNTER_SLOTS as usize] = [
        CounterSlot::PassNoMatch,
        CounterSlot::PassAllowlist,
        CounterSlot::PassNonIp,
        CounterSlot::PassMalformed,
        CounterSlot::DropBlocklist,
        CounterSlot::DropSynRate,
        CounterSlot::DropPktRate,
        CounterSlot::WouldDropBlocklist,
        CounterSlot::WouldDropSynRate,
        CounterSlot::WouldDropPktRate,
        CounterSlot::DropQuarantine,
        CounterSlot::WouldDropQuarantine,
        CounterSlot::TxSynAuth,
        CounterSlot::WouldTxSynAuth,
        CounterSlot::DropSynAuth,
        CounterSlot::DropVictimRate,
        CounterSlot::WouldDropVictimRate,
    ];

    /// The verdict this slot counts.
    pub const fn verdict(self) -> Verdict {
        match self {
            CounterSlot::PassNoMatch
            | CounterSlot::PassAllowlist
            | CounterSlot::PassNonIp
            | CounterSlot::PassMalformed => Verdict::Pass,
            CounterSlot::DropBlocklist
            | CounterSlot::DropSynRate
            | CounterSlot::DropPktRate
            | CounterSlot::DropQuarantine
            | CounterSlot::DropSynAuth
            | CounterSlot::DropVictimRate => Verdict::Drop,
            CounterSlot::WouldDropBlocklist
            | CounterSlot::WouldDropSynRate
            | CounterSlot::WouldDropPktRate
            | CounterSlot::WouldDropQuarantine
            | CounterSlot::WouldTxSynAuth
            | CounterSlot::WouldDropVictimRate => Verdict::WouldDrop,
            CounterSlot::TxSynAuth => Verdict::Tx,
        }
    }

    /// The reason this slot counts.
    pub const fn reason(self) -> Reason {
        match self {
            CounterSlot::PassNoMatch => Reason::NoMatch,
            CounterSlot::PassAllowlist => Reason::Allowlist,
            CounterSlot::PassNonIp => Reason::NonIp,
            CounterSlot::PassMalformed => Reason::Malformed,
            CounterSlot::DropBlocklist | CounterSlot::WouldDropBlocklist => Reason::Blocklist,
            CounterSlot::DropSynRate | CounterSlot::WouldDropSynRate => Reason::SynRate,
            CounterSlot::DropPktRate | CounterSlot::WouldDropPktRate => Reason::PktRate,
            CounterSlot::DropQuarantine | CounterSlot::WouldDropQuarantine => Reason::Quarantine,
            CounterSlot::TxSynAuth | CounterSlot::WouldTxSynAuth | CounterSlot::DropSynAuth => {
                Reason::SynAuth
            }
            CounterSlot::DropVictimRate | CounterSlot::WouldDropVictimRate => Reason::VictimRate,
        }
    }

    /// The slot for a filtering decision: `Drop` in enforce mode, `WouldDrop` in
    /// observe mode. `reason` must be a dropping reason (blocklist, a rate limit or quarantine).
    #[inline(always)]
    pub const fn dropping(reason: Reason, observe: bool) -> CounterSlot {
        match (reason, observe) {
            (Reason::SynRate, false) => CounterSlot::DropSynRate,
            (Reason::SynRate, true) => CounterSlot::WouldDropSynRate,
            (Reason::PktRate, false) => CounterSlot::DropPktRate,
            (Reason::PktRate, true) => CounterSlot::WouldDropPktRate,
            (Reason::Quarantine, false) => CounterSlot::DropQuarantine,
            (Reason::Quarantine, true) => CounterSlot::WouldDropQuarantine,
            (Reason::VictimRate, false) => CounterSlot::DropVictimRate,
            (Reason::VictimRate, true) => CounterSlot::WouldDropVictimRate,
            (_, false) => CounterSlot::DropBlocklist,
            (_, true) => CounterSlot::WouldDropBlocklist,
        }
    }
}
