//! Flow metering outside the kernel, with the XDP program's own rules.
//!
//! - [`capture`]: reads pcap/pcapng captures frame by frame
//!   ([`capture::for_each_frame`], pcapng `if_tsresol` scaling).
//! - [`parse`]: one frame → flow-key fields ([`parse::parse_frame`]), with the
//!   header rules of `fw_common::proto` the XDP program parses with.
//! - [`meter`]: the flow table: applies `fw_common::flow`'s per-packet accounting
//!   to parsed frames and runs the export passes, so training data, replayed
//!   captures and the kernel-equivalence test see the flows the kernel would. It
//!   re-exports the capture and parse items (`flow_meter::meter::for_each_frame`...).
//! - [`evidence`]: the XDP program's per-address evidence, report events and
//!   provisional quarantine (`fw_common::evidence`'s functions in the program's
//!   order), which the meter runs on every packet, and their bus form
//!   (`tad_wire::EpochEvidence`).
//! - [`export`]: the active/idle timeout rules (IPFIX, RFC 5102 §5.11 / RFC 7011)
//!   that turn a flow-map entry into a `tad_wire::FlowRecord`; the gateway
//!   daemon and the meter both call them.
//! - [`features`]: the detector's per-flow feature vector.
//!
//! Data flow: kernel flow map or capture → [`capture`] → [`parse`] → [`meter`] →
//! [`export`] → `FlowRecord` → [`features::extract`] → detector.

pub mod capture;
pub mod evidence;
pub mod export;
pub mod features;
pub mod meter;
pub mod parse;
pub mod pending;
#[cfg(test)]
mod test_frames;
