//! [`BusConfig`]: a node's connection settings (the `[bus]` table of every role's
//! TOML config), their defaults, and the checks [`BusClient::builder`] runs on them
//! before anything connects.
//!
//! [`BusClient::builder`]: super::BusClient::builder

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tad_wire::{NodeId, Role};

use super::BusError;
use crate::broker::role_of;

/// Connection settings of a node; the `[bus]` table of each role's TOML config.
///
/// Unknown keys are an error; every key has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Node id: the CN of this node's client certificate (`gateway-1`,
    /// `detector-1`, `dashboard`). Its prefix gives the role.
    pub node_id: String,
    /// Broker host name or IP address; must be a SAN of the broker certificate.
    pub host: String,
    /// Broker TLS port.
    pub port: u16,
    /// CA certificate (PEM) the broker certificate must chain to.
    pub ca_file: PathBuf,
    /// This node's client certificate (PEM).
    pub cert_file: PathBuf,
    /// This node's private key (PEM, PKCS#8 or SEC1).
    pub key_file: PathBuf,
    /// MQTT client id; empty = the node id. Must be unique per broker (a second
    /// connection with the same id takes over the session and kicks the first).
    pub client_id: String,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// How long the broker keeps this node's session (subscriptions, queued QoS 1
    /// messages) after the connection drops, seconds (MQTT v5 session expiry).
    pub session_expiry_s: u32,
    /// TCP + TLS + CONNECT timeout, seconds.
    pub connect_timeout_s: u64,
    /// First reconnect delay, ms; doubled after each failed attempt.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Outgoing queue capacity, messages.
    pub queue_capacity: usize,
    /// Per-subscription incoming queue capacity, messages.
    pub subscription_capacity: usize,
    /// At most one "malformed payload" warning per subscription per this many
    /// seconds (the others are only counted).
    pub malformed_log_interval_s: u64,
    /// Largest MQTT packet this node sends or accepts, bytes (MQTT v5 Maximum
    /// Packet Size, told to the broker on connect). A publish whose payload does
    /// not fit is refused with [`BusError::TooLarge`]. Flow batches must be sized
    /// below it.
    pub max_packet_bytes: u32,
    /// Software version reported in the node's status.
    pub software_version: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            host: "127.0.0.1".into(),
            port: 8883,
            ca_file: "certs/out/ca.pem".into(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_id: String::new(),
            keep_alive_s: 30,
            session_expiry_s: 3600,
            connect_timeout_s: 10,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            queue_capacity: 1024,
            subscription_capacity: 1024,
            malformed_log_interval_s: 60,
            max_packet_bytes: 1024 * 1024,
            software_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl BusConfig {
    /// A config for `node_id` using the files of a `cargo xtask certs` output
    /// directory ([`crate::pki::PkiLayout`]).
    pub fn from_certs_dir(node_id: &str, certs_dir: &Path, host: &str, port: u16) -> Self {
        let l = crate::pki::PkiLayout::new(certs_dir);
        Self {
            node_id: node_id.into(),
            host: host.into(),
            port,
            ca_file: l.ca_cert(),
            cert_file: l.node_cert(node_id),
            key_file: l.node_key(node_id),
            ..Self::default()
        }
    }

    /// The MQTT client id: [`client_id`](Self::client_id) or, when empty, the node id.
    pub(super) fn client_id(&self) -> &str {
        if self.client_id.is_empty() {
            &self.node_id
        } else {
            &self.client_id
        }
    }

    /// Checks the values (not the files): a valid node id with a known role prefix,
    /// non-zero queue capacities, `0 < reconnect_min_ms <= reconnect_max_ms`,
    /// `max_packet_bytes >= 4096`, `keep_alive_s >= 5`. Returns the parsed node id
    /// and its role; [`BusError::Config`] names the first bad value.
    pub(super) fn check(&self) -> Result<(NodeId, Role), BusError> {
        let id = NodeId::parse(&self.node_id).map_err(|e| BusError::Config {
            what: format!("node_id: {e}"),
        })?;
        let role = role_of(&self.node_id).map_err(|e| BusError::Config {
            what: e.to_string(),
        })?;
        if self.queue_capacity == 0 || self.subscription_capacity == 0 {
            return Err(BusError::Config {
                what: "queue_capacity and subscription_capacity must be at least 1".into(),
            });
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(BusError::Config {
                what: "need 0 < reconnect_min_ms <= reconnect_max_ms".into(),
            });
        }
        if self.max_packet_bytes < 4096 {
            return Err(BusError::Config {
                what: "max_packet_bytes must be at least 4096".into(),
            });
        }
        if self.keep_alive_s < 5 {
            return Err(BusError::Config {
                what: "keep_alive_s must be at least 5".into(),
            });
        }
        Ok((id, role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> BusConfig {
        BusConfig {
            node_id: "gateway-1".into(),
            ..BusConfig::default()
        }
    }

    fn config_error(cfg: &BusConfig) -> String {
        match cfg.check() {
            Err(BusError::Config { what }) => what,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn check_accepts_the_defaults_with_a_node_id() {
        let (id, role) = valid().check().unwrap();
        assert_eq!(id.as_str(), "gateway-1");
        assert_eq!(role, Role::Gateway);
    }

    #[test]
    fn check_names_the_bad_value() {
        assert!(config_error(&BusConfig::default()).starts_with("node_id"));
        type Case = (fn(&mut BusConfig), &'static str);
        let cases: [Case; 5] = [
            (|c| c.queue_capacity = 0, "queue_capacity"),
            (|c| c.subscription_capacity = 0, "subscription_capacity"),
            (
                |c| c.reconnect_max_ms = c.reconnect_min_ms - 1,
                "reconnect_min_ms",
            ),
            (|c| c.max_packet_bytes = 4095, "max_packet_bytes"),
            (|c| c.keep_alive_s = 4, "keep_alive_s"),
        ];
        for (bad, key) in cases {
            let mut cfg = valid();
            bad(&mut cfg);
            let what = config_error(&cfg);
            assert!(what.contains(key), "{key}: {what}");
        }
    }

    #[test]
    fn client_id_defaults_to_the_node_id() {
        let mut cfg = valid();
        assert_eq!(cfg.client_id(), "gateway-1");
        cfg.client_id = "gateway-1-b".into();
        assert_eq!(cfg.client_id(), "gateway-1-b");
    }

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let cfg = valid();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<BusConfig>(&text).unwrap(), cfg);
        let partial: BusConfig = toml::from_str("node_id = \"detector-1\"\nport = 9883").unwrap();
        assert_eq!(partial.port, 9883);
        assert_eq!(partial.queue_capacity, BusConfig::default().queue_capacity);
        assert!(toml::from_str::<BusConfig>("prot = 9883").is_err());
    }
}
