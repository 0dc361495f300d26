//! The detector node: turns flow records from the gateways into alerts, device
//! trust scores and verdicts.
//!
//! Data flow: the MQTT service ([`service`]) or a capture replay ([`replay`]) hands
//! [`tad_wire::FlowRecord`]s to an [`engine::Engine`], which keeps the
//! instance's partitions ([`partition`]), runs the rules ([`rules`], over the
//! per-record facts of [`classify`]), scores flows with the autoencoder
//! ([`model`]), keeps device trust scores ([`trust`]) and turns alerts into
//! verdicts. [`settings`] is the table of runtime-settable thresholds (their
//! ranges, the published settings schema). Everything except [`service`] is
//! synchronous and free of I/O, so tests drive the engine with synthetic records
//! or real captures.

pub mod bench;
pub mod classify;
pub mod config;
pub mod engine;
pub mod features_csv;
pub mod feed;
pub mod fleet;
pub mod model;
pub mod partition;
pub mod replay;
pub mod rules;
pub mod service;
pub mod settings;
pub mod trust;
pub mod window;

/// Hash map of the per-record state: foldhash (randomly seeded per map, several
/// times faster than SipHash on small keys such as addresses and ports).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
