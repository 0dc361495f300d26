//! The gateway configuration the XDP program reads on every packet (map
//! [`crate::maps::CONFIG`], index 0). All-zero is a valid configuration: enforce
//! mode, flow accounting on, no rate limits.

/// Enforce (IPS) mode: matching packets get `XDP_DROP`.
pub const MODE_ENFORCE: u32 = 0;
/// Observe (IDS) mode: matching packets are counted as would-drop and passed.
pub const MODE_OBSERVE: u32 = 1;

/// `flags` bit: do not record flows (the flow map is left untouched).
pub const FLAG_NO_FLOW_ACCOUNTING: u32 = 1 << 0;

/// Runtime configuration of the XDP program. 24 bytes, host byte order.
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
}

impl GatewayConfig {
    /// Whether matching packets are only counted (observe, IDS) instead of dropped.
    #[inline(always)]
    pub fn observe(&self) -> bool {
        self.mode == MODE_OBSERVE
    }

    /// Whether the flow map is updated.
    #[inline(always)]
    pub fn flow_accounting(&self) -> bool {
        self.flags & FLAG_NO_FLOW_ACCOUNTING == 0
    }
}
