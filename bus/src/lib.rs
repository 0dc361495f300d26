//! The MQTT/TLS bus between the nodes of the gateway cluster.
//!
//! Every node-to-node message (flow batches, counters, verdicts, acks, commands,
//! alerts, trust updates, threshold settings, node status) travels through one
//! Mosquitto broker over MQTT v5 with mutual TLS. This crate holds everything about
//! that bus except the payload types, which live in [`tad_wire`]:
//!
//! - [`pki`]: the rcgen CA, node (client) and broker certificates, written with
//!   private keys mode 0600 (`cargo xtask certs`).
//! - [`broker`]: `mosquitto.conf` and the ACL that confines each node to its topics.
//! - [`bridge`]: a per-site broker bridged to a central one (the site's
//!   `connection` section and the bridge's ACL block on the central broker).
//! - [`client`]: the one client used by fw-ctl, detector and dashboard ([`BusClient`]):
//!   typed publish/subscribe of `tad_wire` messages (or [`RawPayload`] bytes for
//!   consumers that decode themselves), Last Will + retained
//!   status, reconnect with exponential backoff, a bounded outgoing queue, counters.
//! - [`testing`]: starts a real `mosquitto` with fresh certificates for integration
//!   tests (also from other crates) and always stops it.

pub mod bridge;
pub mod broker;
pub mod client;
pub mod config_file;
pub mod pki;
pub mod signing;
pub mod testing;

pub use client::{
    AnyMessage, BusBuilder, BusClient, BusConfig, BusError, BusMetrics, ConnectionState, Inbound,
    Overflow, PublishOptions, RawPayload, Received, Subscription,
};
pub use rumqttc::v5::mqttbytes::QoS;
pub use signing::{SignError, Signed, Signer, Unverified, Verifier};
