//! Types shared by the XDP program (`fw-ebpf`, kernel side) and the gateway's
//! userspace (`fw-ctl`, and through `tad-wire` and `flow-meter` the other nodes).
//!
//! Without features this crate is `#![no_std]` plain old data: every map key and
//! value is `#[repr(C)]` with explicit padding, and every field names its unit and
//! byte order. The per-packet update rules that both sides must agree on (flow
//! accounting, the GCRA token bucket) live here as pure functions, so the kernel
//! program and the userspace flow meter run the very same code.
//!
//! The `serde` feature adds serde derives to the enums that also travel on the bus;
//! `user` adds `aya::Pod` impls for the map types (and serde). The MQTT payloads
//! live in `tad-wire`, the pcap flow meter, export rules and features in
//! `flow-meter`.
#![no_std]

pub mod admission;
pub mod config;
pub mod counters;
pub mod evidence;
pub mod filter;
pub mod flow;
pub mod maps;
pub mod proto;
pub mod rate;
pub mod synauth;

/// `aya::Pod` for the map types: plain old data with no padding holes left
/// uninitialised (all padding is an explicit field).
#[cfg(feature = "user")]
mod pod {
    use crate::{admission, config, counters, evidence, filter, flow, rate, synauth};

    macro_rules! pod {
        ($($t:ty),* $(,)?) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        admission::PendingFlow,
        config::GatewayConfig,
        counters::CounterValue,
        evidence::EpochCounts,
        evidence::EvidenceSlot,
        evidence::EvidenceEvent,
        filter::AllowEntry,
        filter::BlockEntry,
        flow::FlowKey,
        flow::FlowStats,
        flow::DirStats,
        rate::RateKey,
        rate::RateState,
        synauth::ServiceKey,
        synauth::SynAuthEntry,
    );
}
