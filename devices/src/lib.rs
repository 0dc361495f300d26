//! Devices as first-class citizens of the gateway (issue 17; seeds 002, 003, 004):
//! IoT devices publish signed telemetry over MQTT, the router's guard validates it
//! and forwards it in hashed batches, every device has a trust score moved by
//! evidence, and commands to devices are vetted against that trust.
//!
//! - [`telemetry`]: the message (`device_id`, `sequence_no`, `timestamp`,
//!   `cpu_usage`, `battery_level`, `sensors`), its Ed25519-signed envelope and the
//!   topic `tad/v1/dev/<device_id>/telemetry`.
//! - [`registry`]: enrolled devices (key, sensors and ranges, rate, command kinds),
//!   one TOML file written atomically; the `tad-device` binary edits it.
//! - [`guard`]: validation of each message, refusals counted by reason, an alert per
//!   refusal; [`replay`]: the per-device anti-replay window (RFC 4303 §3.4.3),
//!   persisted before acceptance.
//! - [`batch`]: batches with a SHA-256 for the ledger, and the bounded outbox.
//! - [`trust`]: the trust ledger (seed 004's −20/+1 combined with seed 003's
//!   0.5/0.3/0.2 components; the arithmetic is in its docs).
//! - [`command`]: vetting of `set` / `reboot` / `firmware` commands.
//! - [`anomaly`]: a per-device Isolation Forest (Liu, Ting, Zhou 2008).
//! - [`station`]: all of the above as one value for the gateway daemon.
//! - [`sim`]: a simulated device for tests, benches and the testbed.
//! - [`vulnscan`]: the active vulnerability check (TCP connect scan, MQTT probe).
//! - [`gateway`]: the gateway's `[devices]` table.

pub mod anomaly;
pub mod batch;
pub mod cli;
pub mod command;
pub mod fsutil;
pub mod gateway;
pub mod guard;
pub mod ids;
pub mod registry;
pub mod replay;
mod rng;
pub mod sim;
pub mod station;
pub mod telemetry;
pub mod trust;
pub mod vulnscan;

pub use crate::{
    batch::{Outbox, TelemetryBatch},
    command::{CommandHistory, CommandKind, CommandRefusal, DeviceCommand, VetConfig, vet},
    gateway::DevicesConfig,
    guard::{Arrival, DeviceAlert, Guard, GuardConfig, RefusalCounts, RefusalReason},
    ids::DeviceId,
    registry::{Enrollment, Registry, SensorRange},
    station::{Station, StationConfig, StationOutput},
    telemetry::{SignedTelemetry, Telemetry},
    trust::{TrustConfig, TrustEntry, TrustLedger, TrustLevel},
};
