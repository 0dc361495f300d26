//! The monitoring node (`dashboard`): subscribes to everything gateways and
//! detectors publish on the MQTT bus, stores it in SQLite ([`store`]), writes
//! alerts, verdicts and operator commands to a hash-chained audit log
//! ([`audit`]), optionally exports InfluxDB line protocol ([`influx`]), and serves
//! the web pages and JSON API ([`api`], [`web`]) through which operators watch
//! traffic and block or unblock sources (published as commands signed with the
//! dashboard's certificate key, [`publish`]). Verdicts and commands heard are
//! believed only once their signature and identity verify ([`ingest`]); the
//! block list is only what each gateway publishes as its state (`store`'s
//! `gateway_state`), never a guess from verdicts or commands.
//!
//! The shared state is [`app::App`]. Data flow: bus message → [`app::App::ingest`]
//! ([`ingest`]) → store + audit + live event
//! (SSE) → pages. Operator action → [`api`] → [`publish::Publisher`] → bus, and
//! store + audit. Detector settings ([`settings`]): schemas and acks in, threshold
//! changes checked against every schema before they are sent. IoT devices
//! ([`devices`]): the gateways' device reports (telemetry batches, trust changes,
//! refusals, command decisions, scans, retained device state) are stored for the
//! Devices page, and batch hashes and trust changes are committed to the audit log.
// warp composes every route into one nested type; release builds need more
// recursion than the default 128 to prove it Unpin.
#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod audit;
pub mod bus;
pub mod config;
pub mod devices;
pub mod influx;
pub mod ingest;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod settings;
pub mod store;
pub mod validate;
pub mod web;
