//! Flow metering outside the kernel, with the XDP program's own rules.
//!
//! - [`meter`]: reads pcap/pcapng captures ([`meter::for_each_frame`]) and applies
//!   `fw_common::flow`'s per-packet accounting to them, so training data, replayed
//!   captures and the kernel-equivalence test see the flows the kernel would.
//! - [`export`]: the active/idle timeout rules (IPFIX, RFC 5102 §5.11 / RFC 7011)
//!   that turn a flow-map entry into a `tad_wire::FlowRecord`; the gateway
//!   daemon and the meter both call them.
//! - [`features`]: the detector's per-flow feature vector.
//!
//! Data flow: kernel flow map or capture → [`export`] → `FlowRecord` →
//! [`features::extract`] → detector.

pub mod export;
pub mod features;
pub mod meter;
