//! [`BusError`]: everything the bus client can fail with (config, TLS files,
//! refused or timed-out first connection, full queue, oversized message, shutdown).

use std::{path::PathBuf, time::Duration};

/// Errors of the bus client.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A [`BusConfig`](super::BusConfig) value is out of range or its node id /
    /// role is invalid; `what` says which.
    #[error("bus config: {what}")]
    Config { what: String },
    /// The CA, client certificate or key file (`what`, at `path`) cannot be read or
    /// holds no usable PEM; `why` is the OS or parser error.
    #[error("cannot read {what} {path}: {why}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// rustls rejected the certificates or the key while building the client config.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The first connection attempt failed (TLS handshake refused, CONNACK refused,
    /// broker unreachable). `reason` is the rumqttc/rustls error text, e.g.
    /// `received fatal alert: UnknownCA`.
    #[error("connection to {broker} refused: {reason}")]
    Refused { broker: String, reason: String },
    /// The first connection did not come up within `timeout`
    /// ([`BusConfig::connect_timeout_s`](super::BusConfig::connect_timeout_s)).
    #[error("no connection to {broker} within {timeout:?}")]
    ConnectTimeout { broker: String, timeout: Duration },
    /// [`BusClient::try_publish`](super::BusClient::try_publish) of an
    /// [`Overflow::Wait`](super::Overflow::Wait) message found the outgoing queue
    /// (`capacity` messages) holding only messages that may not be dropped.
    #[error("outgoing queue full ({capacity} messages)")]
    QueueFull { capacity: usize },
    /// Payload + topic + a 256-byte header allowance, `bytes`, is more than `max`
    /// ([`BusConfig::max_packet_bytes`](super::BusConfig::max_packet_bytes)).
    #[error("message for {topic} is {bytes} bytes, more than max_packet_bytes {max}")]
    TooLarge {
        topic: String,
        bytes: usize,
        max: u32,
    },
    /// The client is shut down (or its event loop ended).
    #[error("the bus client is shut down")]
    Closed,
}
