//! The gateway configuration the XDP program reads on every packet (map
//! [`crate::maps::CONFIG`], index 0). All-zero is a valid configuration: enforce
//! mode, flow accounting and evidence on, no rate limits, no provisional quarantine,
//! no report events (the gateway daemon's defaults switch the last two on:
//! [`DEFAULT_QUARANTINE_DISTINCT`], [`DEFAULT_REPORT_DISTINCT`]).

/// Enforce (IPS) mode: matching packets get `XDP_DROP`.
pub const MODE_ENFORCE: u32 = 0;
/// Observe (IDS) mode: matching packets are counted as would-drop and passed.
pub const MODE_OBSERVE: u32 = 1;

/// `flags` bit: do not record flows (the flow map is left untouched).
pub const FLAG_NO_FLOW_ACCOUNTING: u32 = 1 << 0;
/// `flags` bit: insert a flow into the flow map on its *first* packet (the
/// behaviour before [`crate::admission`]; kept for benchmarks and comparison).
/// Without it a flow is admitted on its second packet.
pub const FLAG_ADMIT_FIRST_PACKET: u32 = 1 << 1;

/// Default [`GatewayConfig::flow_idle_ms`]: 10 s (the daemon's default idle timeout).
pub const DEFAULT_FLOW_IDLE_MS: u32 = 10_000;

/// Default [`GatewayConfig::quarantine_distinct`]: 48 set bits, about 52 distinct
/// hosts or ports in one to two seconds, each without a reply.
pub const DEFAULT_QUARANTINE_DISTINCT: u32 = 48;
/// Default [`GatewayConfig::quarantine_ttl_ms`]: 30 s, long enough for a detector
/// to confirm (block) or lift it, short enough to end by itself when none answers.
pub const DEFAULT_QUARANTINE_TTL_MS: u32 = 30_000;
/// Default [`GatewayConfig::report_distinct`]: 16 set bits.
pub const DEFAULT_REPORT_DISTINCT: u32 = 16;

/// Runtime configuration of the XDP program. 44 bytes, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    /// [`MODE_ENFORCE`] or [`MODE_OBSERVE`]; any other value is treated as enforce.
    pub mode: u32,
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// Per-source rate of TCP SYN-without-ACK segments, packets per second; 0 = off.
    pub syn_rate_pps: u32,
    /// Burst of SYN segments a source may send back to back, packets (>= 1 when on).
    pub syn_burst: u32,
    /// Per-source rate of all IP packets, packets per second; 0 = off.
    pub pkt_rate_pps: u32,
    /// Burst of packets a source may send back to back, packets (>= 1 when on).
    pub pkt_burst: u32,
    /// Provisional quarantine threshold ([`crate::evidence::EvidenceSlot::over_budget`]):
    /// a source with this many distinct destination hosts or ports (set bits of the
    /// one-to-two-second union) and this many new flows without a reply gets a
    /// blocklist entry that drops its *new* flows only
    /// ([`crate::filter::BLOCK_FLAG_NEW_FLOWS_ONLY`]) for
    /// [`Self::quarantine_ttl_ms`]; 0 = off.
    pub quarantine_distinct: u32,
    /// Lifetime of a provisional quarantine entry, ms (0 is treated as 1 s).
    pub quarantine_ttl_ms: u32,
    /// Distinct hosts or ports (set bits) at which a source's first crossing per
    /// epoch wakes the gateway daemon through the event ring buffer; 0 = no events.
    pub report_distinct: u32,
    /// How long a source that answered a SYN-authentication challenge stays
    /// validated, s (0 is treated as [`crate::synauth::DEFAULT_VALIDATED_TTL_S`]).
    pub syn_auth_ttl_s: u32,
    /// Flow idle timeout, ms: how long a pending first packet can admit its flow
    /// ([`crate::admission`]); the daemon sets its export idle timeout here
    /// (0 is treated as [`DEFAULT_FLOW_IDLE_MS`]).
    pub flow_idle_ms: u32,
}

impl GatewayConfig {
    /// Whether matching packets are only counted (observe, IDS) instead of dropped.
    #[inline(always)]
    pub fn observe(&self) -> bool {
        self.mode == MODE_OBSERVE
    }

    /// The evidence thresholds in [`crate::evidence::Budgets`] form.
    #[inline(always)]
    pub fn budgets(&self) -> crate::evidence::Budgets {
        let ttl_ms = if self.quarantine_ttl_ms == 0 {
            1_000
        } else {
            self.quarantine_ttl_ms
        };
        crate::evidence::Budgets {
            quarantine: self.quarantine_distinct,
            report: self.report_distinct,
            // One epoch more than the TTL covers: a quarantine made mid-epoch has
            // surely expired when the same CPU may make the next one.
            quarantine_epochs: (ttl_ms as u64).div_ceil(crate::evidence::EPOCH_NS / 1_000_000)
                as u32
                + 1,
        }
    }

    /// [`Self::quarantine_ttl_ms`] in ns, 0 read as 1 s.
    #[inline(always)]
    pub fn quarantine_ttl_ns(&self) -> u64 {
        let ms = if self.quarantine_ttl_ms == 0 {
            1_000
        } else {
            self.quarantine_ttl_ms
        };
        ms as u64 * 1_000_000
    }

    /// [`Self::syn_auth_ttl_s`] in ns, 0 read as the default.
    #[inline(always)]
    pub fn syn_auth_ttl_ns(&self) -> u64 {
        let s = if self.syn_auth_ttl_s == 0 {
            crate::synauth::DEFAULT_VALIDATED_TTL_S
        } else {
            self.syn_auth_ttl_s
        };
        s as u64 * 1_000_000_000
    }

    /// [`Self::flow_idle_ms`] in ns, 0 read as the default.
    #[inline(always)]
    pub fn flow_idle_ns(&self) -> u64 {
        let ms = if self.flow_idle_ms == 0 {
            DEFAULT_FLOW_IDLE_MS
        } else {
            self.flow_idle_ms
        };
        ms as u64 * 1_000_000
    }

    /// Whether flows are inserted on their first packet instead of admitted on
    /// their second ([`FLAG_ADMIT_FIRST_PACKET`]).
    #[inline(always)]
    pub fn admit_first_packet(&self) -> bool {
        self.flags & FLAG_ADMIT_FIRST_PACKET != 0
    }

    /// Whether the flow map is updated.
    #[inline(always)]
    pub fn flow_accounting(&self) -> bool {
        self.flags & FLAG_NO_FLOW_ACCOUNTING == 0
    }
}
