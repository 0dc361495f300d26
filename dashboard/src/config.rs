//! The dashboard's configuration: one TOML file (see `dashboard.toml.example`),
//! every key optional with a default, unknown keys rejected. Environment variables
//! `TAD_DASHBOARD_<SECTION>__<KEY>` override the file (e.g.
//! `TAD_DASHBOARD_SERVER__API_TOKEN`), so secrets need not be written into it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tad_bus::config_file::{self, ConfigFileError};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Missing file, syntax, type or unknown key ([`tad_bus::config_file`]).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A value [`Config::check`] refuses.
    #[error("config file {path}: {what}")]
    Value { path: PathBuf, what: String },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub influx: InfluxConfig,
    /// MQTT bus connection (mutual TLS), `tad_bus`'s own settings; absent runs
    /// the dashboard on its stored data only (nothing arrives, nothing is sent).
    pub bus: Option<tad_bus::BusConfig>,
    pub api: ApiConfig,
    /// Friendly device names by address, shown on the Devices page
    /// (`"192.0.2.10" = "thermostat"`). Named devices are listed even before the
    /// detector scores them.
    pub devices: BTreeMap<IpAddr, String>,
}

/// HTTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token required by every POST/DELETE. Empty disables the mutating
    /// endpoints (they answer 403).
    pub api_token: String,
    /// Name recorded as `operator` in commands issued through the API.
    pub operator: String,
    /// Origins (`scheme://host[:port]`) allowed to send mutating requests besides
    /// the dashboard's own (`http://<Host header>`).
    pub allowed_origins: Vec<String>,
    /// Live-event buffer per SSE client, events; a client that falls this far
    /// behind skips the oldest events (counted in `/metrics`).
    pub sse_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            api_token: String::new(),
            operator: "dashboard".into(),
            allowed_origins: Vec::new(),
            sse_buffer: 256,
        }
    }
}

/// Files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// SQLite database (WAL mode; `-wal` and `-shm` files appear beside it).
    pub db_path: PathBuf,
    /// Append-only JSON Lines audit log (see `dashboard::audit`).
    pub audit_log: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            db_path: "/var/lib/tad/dashboard.sqlite".into(),
            audit_log: "/var/lib/tad/audit.jsonl".into(),
        }
    }
}

/// How long rows are kept, days; 0 keeps them for ever. The audit log is never
/// pruned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub counters_days: u32,
    pub flows_days: u32,
    pub alerts_days: u32,
    pub verdicts_days: u32,
    pub acks_days: u32,
    pub commands_days: u32,
    /// How often expired rows are deleted, seconds.
    pub prune_interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            counters_days: 7,
            flows_days: 2,
            alerts_days: 90,
            verdicts_days: 90,
            acks_days: 30,
            commands_days: 365,
            prune_interval_s: 300,
        }
    }
}

/// Optional export of counters, alerts and trust scores in InfluxDB line protocol.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxConfig {
    pub enabled: bool,
    /// Append lines to this file (e.g. for Telegraf's `tail` input).
    pub file: Option<PathBuf>,
    /// Send each batch as one UDP datagram to this address (InfluxDB 1.x / Telegraf
    /// `socket_listener` UDP input).
    pub udp: Option<SocketAddr>,
}

/// Limits the API enforces on operator input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Gateway ids operators may send commands to, besides every gateway the
    /// dashboard has heard from.
    pub gateways: Vec<String>,
    /// Longest block TTL the API accepts, seconds (at most 30 days, the wire limit).
    pub max_ttl_s: u64,
    /// Removed: the keys the thresholds API accepts are the ones every detector's
    /// published settings schema (`tad/v1/det/<det>/settings/schema`) lists. Only
    /// parsed so that [`Config::check`] can refuse a config still setting it with
    /// a message saying so (instead of a bare "unknown field").
    #[serde(default, skip_serializing)]
    pub threshold_keys: Option<Removed>,
    /// Removed: value ranges come from the detectors' settings schemas too.
    #[serde(default, skip_serializing)]
    pub max_threshold: Option<Removed>,
    /// Messages waiting for the bus; when full, API requests that would publish
    /// get 503 and change nothing.
    pub outbound_queue: usize,
    /// Narrowest block the API sends (keys `min_prefix_v4`, `min_prefix_v6`): set
    /// them to the gateways' `[verdicts]` values (the defaults are the same), so the
    /// API refuses what a gateway would refuse, with the same message.
    pub block_width: tad_wire::WidthPolicy,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            gateways: Vec::new(),
            max_ttl_s: tad_wire::MAX_TTL_S,
            threshold_keys: None,
            max_threshold: None,
            outbound_queue: 64,
            block_width: tad_wire::WidthPolicy::default(),
        }
    }
}

/// A removed config key: deserialises from any value, so the config parser
/// accepts it and [`Config::check`] can refuse it with a message naming what
/// replaced it. Never serialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed;

impl<'de> Deserialize<'de> for Removed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Removed)
    }
}

impl Config {
    /// Environment prefix of overrides.
    pub const ENV_PREFIX: &'static str = "TAD_DASHBOARD_";

    /// Loads `path`, then applies `TAD_DASHBOARD_*` environment overrides
    /// (through the shared [`tad_bus::config_file::load`]), then [`Config::check`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the bad key or value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = config_file::load(path, Self::ENV_PREFIX)?;
        cfg.check().map_err(|what| ConfigError::Value {
            path: path.to_owned(),
            what,
        })?;
        Ok(cfg)
    }

    /// Checks values the types do not.
    pub fn check(&self) -> Result<(), String> {
        if self.api.max_ttl_s == 0 || self.api.max_ttl_s > tad_wire::MAX_TTL_S {
            return Err(format!(
                "api.max_ttl_s must be in 1..={}",
                tad_wire::MAX_TTL_S
            ));
        }
        if let Some(p) = self.api.block_width.problems().first() {
            return Err(format!("api.block_width: {p}"));
        }
        if self.server.sse_buffer == 0 || self.api.outbound_queue == 0 {
            return Err("server.sse_buffer and api.outbound_queue must be at least 1".into());
        }
        if self.influx.enabled && self.influx.file.is_none() && self.influx.udp.is_none() {
            return Err("influx.enabled needs influx.file or influx.udp".into());
        }
        for g in &self.api.gateways {
            tad_wire::NodeId::parse(g).map_err(|e| format!("api.gateways: {e}"))?;
        }
        for (key, set) in [
            ("threshold_keys", self.api.threshold_keys.is_some()),
            ("max_threshold", self.api.max_threshold.is_some()),
        ] {
            if set {
                return Err(format!(
                    "api.{key} was removed: the detectors publish the keys they accept and \
                     their ranges (settings schema), and the thresholds API checks against \
                     that; delete api.{key} from the config"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use figment::Jail;

    use super::*;

    // Every test that loads a config runs in a figment Jail: Jail serialises them
    // and scrubs the environment, so one test's variables never leak into another.

    #[test]
    fn example_file_loads() {
        Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard.toml.example");
            let cfg = Config::load(&path).map_err(|e| e.to_string())?;
            assert_eq!(cfg.server.listen.port(), 8080);
            assert_eq!(cfg.bus.map(|b| b.node_id).as_deref(), Some("dashboard"));
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "d.toml",
                "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
            )?;
            let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
            assert!(err.contains("listen_port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[server]\napi_token = \"from-file\"\n")?;
            jail.set_env("TAD_DASHBOARD_SERVER__API_TOKEN", "from-env");
            jail.set_env("TAD_DASHBOARD_RETENTION__FLOWS_DAYS", "3");
            let cfg = Config::load(Path::new("d.toml")).map_err(|e| e.to_string())?;
            assert_eq!(cfg.server.api_token, "from-env");
            assert_eq!(cfg.retention.flows_days, 3);
            jail.set_env("TAD_DASHBOARD_SERVER__NO_SUCH_KEY", "1");
            assert!(Config::load(Path::new("d.toml")).is_err());
            Ok(())
        });
    }

    #[test]
    fn removed_threshold_keys_are_refused_saying_what_replaced_them() {
        Jail::expect_with(|jail| {
            for body in [
                "[api]\nthreshold_keys = [\"portscan.vertical_ports\"]\n",
                "[api]\nthreshold_keys = []\n",
                "[api]\nmax_threshold = 1e9\n",
            ] {
                jail.create_file("d.toml", body)?;
                let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
                let key = if body.contains("max_threshold") {
                    "api.max_threshold"
                } else {
                    "api.threshold_keys"
                };
                assert!(err.contains(&format!("{key} was removed")), "{err}");
                assert!(err.contains("settings schema"), "{err}");
            }
            jail.create_file("d.toml", "")?;
            jail.set_env("TAD_DASHBOARD_API__THRESHOLD_KEYS", "[\"a.b\"]");
            let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
            assert!(err.contains("api.threshold_keys was removed"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_config_serialises_without_the_removed_keys() {
        let text = serde_json::to_string(&Config::default()).unwrap();
        assert!(!text.contains("threshold_keys"), "{text}");
        assert!(!text.contains("max_threshold"), "{text}");
    }

    #[test]
    fn bad_value_is_an_error() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[api]\nmax_ttl_s = 0\n")?;
            let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
            assert!(err.contains("max_ttl_s"), "{err}");
            assert!(matches!(
                Config::load(Path::new("none.toml")),
                Err(ConfigError::File(ConfigFileError::Missing { .. }))
            ));
            Ok(())
        });
    }
}
