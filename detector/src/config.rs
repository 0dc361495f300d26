//! Detector configuration: one TOML file (`detector.toml`; commented example in
//! `detector/detector.toml.example`). Every section and field has a default, and an
//! unknown key anywhere is an error. Loaded through the shared loader
//! (`tad_bus::config_file`): the file, then environment overrides
//! `TAD_DETECTOR_<SECTION>__<KEY>` (e.g. `TAD_DETECTOR_POLICY__BLOCK_CONFIDENCE=0.9`);
//! keys given by neither take their serde defaults (a table the file gives replaces
//! its default table whole); then [`Config::validate`].
//!
//! One job, kept in one file: the schema (every section with its defaults and
//! units), its loading, its range checks and the runtime threshold changes.
//!
//! Thresholds can also be changed at runtime from a
//! [`tad_wire::ThresholdSettings`] message: its keys are the dotted config
//! paths of numeric fields (`portscan.vertical_ports`, `synflood.window_s`...),
//! listed with their ranges in [`crate::settings`] (which also holds
//! [`Config::apply_thresholds`] and the published settings schema). Unknown keys
//! and values that fail validation refuse the whole message and change nothing.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tad_wire::Mode;

/// Errors loading or changing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist, or its TOML or an environment override is wrong:
    /// syntax, a wrong type, an unknown key (the message names the file, the key
    /// and, for an override, the variable).
    #[error(transparent)]
    File(#[from] tad_bus::config_file::ConfigFileError),
    /// TOML text given as a string ([`Config::from_toml`]) is wrong.
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<figment::Error>,
    },
    /// A value out of its range or breaking a cross-key rule; the message starts
    /// with (or names) the key.
    #[error("{0}")]
    Invalid(String),
    /// A runtime threshold key this detector does not have (see
    /// `crate::settings::thresholds` and the published settings schema).
    #[error(
        "{0}: unknown threshold key (the keys are those of this detector's settings schema, e.g. portscan.vertical_ports)"
    )]
    UnknownKey(String),
}

/// The whole detector configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub detector: DetectorSection,
    pub partitions: Partitions,
    /// Several gateways and detectors (`crate::fleet`, `docs/fleet.md`).
    pub fleet: crate::fleet::FleetSection,
    /// Bus connection (`tad_bus::BusConfig`); `node_id` defaults to `detector.id`.
    pub bus: tad_bus::BusConfig,
    pub service: ServiceSection,
    pub portscan: PortScan,
    pub evidence: Evidence,
    pub synflood: SynFlood,
    pub spike: Spike,
    pub bruteforce: BruteForce,
    pub reflection: Reflection,
    pub access: Access,
    pub ml: Ml,
    pub trust: Trust,
    pub policy: Policy,
}

/// Identity and mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSection {
    /// Detector id (the CN of its client certificate, `detector-*`); appears in
    /// every message and the topics it publishes on.
    pub id: tad_wire::NodeId,
    /// `enforce` publishes verdicts the gateways apply; `observe` publishes them with
    /// `observe_only: true` (the gateways record but do not block) and counts them.
    pub mode: Mode,
}

impl Default for DetectorSection {
    fn default() -> Self {
        DetectorSection {
            id: "detector-1".parse().expect("a valid node id"),
            mode: Mode::Enforce,
        }
    }
}

/// Which flow partitions this instance handles (see `crate::partition`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Partitions {
    /// Number of partitions the gateways publish to (`partition_of(src, count)`).
    pub count: u16,
    /// Partitions this instance subscribes to; empty = all of them.
    pub take: Vec<u16>,
    /// Share the partitions with the other live detectors (`crate::fleet`):
    /// each detector subscribes to all `count` partitions and handles those it
    /// owns by rendezvous hashing over the detectors whose retained status says
    /// online (itself included); a detector that goes offline (clean shutdown,
    /// or its Last Will after 1.5 × keep-alive) has its partitions taken over at
    /// once. Exclusive with `take`.
    pub live: bool,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            count: 1,
            take: Vec::new(),
            live: false,
        }
    }
}

/// The MQTT service (`detector run`, [`crate::service`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSection {
    /// Bounded queue between the flow subscriptions and the engine, batches. When
    /// full the subscriptions wait, and the bus client's per-subscription queue
    /// (`bus.subscription_capacity`) drops and counts.
    pub queue: usize,
    /// MQTT v5 expiry of a published verdict, seconds: a gateway that was offline
    /// longer does not apply a stale decision.
    pub verdict_expiry_s: u32,
    /// Interval of trust recovery and status logging, ms.
    pub tick_ms: u64,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection {
            queue: 256,
            verdict_expiry_s: 60,
            tick_ms: 1000,
        }
    }
}

/// Port scans and sweeps (`rules::portscan`).
///
/// Defaults follow Zeek's scan policy (15 distinct ports on one host, 25 distinct
/// hosts on one port) and are of the order of Snort 3 `port_scan`'s medium
/// sensitivity, but counted in a 60 s sliding window and checked on every record, so
/// a scan is reported as soon as the threshold is crossed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortScan {
    /// Sliding window, seconds.
    pub window_s: f64,
    /// Distinct ports probed on one host: vertical scan (blocks).
    pub vertical_ports: u32,
    /// Distinct hosts probed on one port: horizontal scan (blocks).
    pub horizontal_hosts: u32,
    /// Distinct hosts sent ICMP echo / timestamp / address-mask requests (blocks).
    pub sweep_hosts: u32,
    /// Distinct ports probed on one host that raise a low-volume scan alert
    /// (medium severity, no block).
    pub low_ports: u32,
    /// A flow with more initiator packets than this is a connection, not a probe.
    pub max_probe_packets: u32,
}

impl Default for PortScan {
    fn default() -> Self {
        PortScan {
            window_s: 60.0,
            vertical_ports: 15,
            horizontal_hosts: 25,
            sweep_hosts: 25,
            low_ports: 5,
            max_probe_packets: 4,
        }
    }
}

/// The kernel-evidence rules (`rules::evidence`): the gateways' per-address,
/// per-epoch counts ([`tad_wire::EvidenceBatch`]) judged with the `[portscan]`
/// thresholds (`window_s`, `vertical_ports`, `horizontal_hosts`, `sweep_hosts`) and
/// the `[synflood]` victim thresholds (`window_s`, `per_victim_half_open`,
/// `spoofed_min_sources`), without waiting for flow records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evidence {
    /// Whether evidence batches are used at all (`false`: ignored and counted; the
    /// XDP program's provisional quarantines then expire by themselves).
    pub enabled: bool,
    /// Share of a source's new flows in the window left without a reply (refused,
    /// ICMP error or silence: `new_flows - replies`) at or above which many
    /// distinct ports or hosts make a scan, in [0, 1]. A busy client whose
    /// connections are answered stays far below it.
    pub unreplied_share: f64,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            enabled: true,
            unreplied_share: 0.5,
        }
    }
}

/// SYN floods (`rules::synflood`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynFlood {
    /// Sliding window, seconds.
    pub window_s: f64,
    /// Half-open attempts from one source to one host in the window (blocks).
    pub per_source_half_open: u32,
    /// Half-open attempts to one host from any source in the window (alert on the
    /// victim; never blocks). With several partitions each instance sees its share,
    /// see `crate::partition`.
    pub per_victim_half_open: u32,
    /// Distinct sources at which a victim-side flood counts as distributed or
    /// spoofed (reported without a source).
    pub spoofed_min_sources: u32,
    /// Answer a victim-side flood with SYN authentication of the victim at its
    /// gateway (`ProtectSyn` verdict; `fw_common::synauth`), switched off again
    /// `syn_auth_quiet_s` after the flood's last sign.
    pub syn_auth: bool,
    /// Lifetime of a `ProtectSyn` verdict, seconds (renewed while the flood goes
    /// on; the gateway ends it by itself if no `UnprotectSyn` arrives).
    pub syn_auth_ttl_s: u64,
    /// Seconds without a victim-side flood detection before `UnprotectSyn`.
    pub syn_auth_quiet_s: f64,
}

impl Default for SynFlood {
    fn default() -> Self {
        SynFlood {
            window_s: 10.0,
            per_source_half_open: 20,
            per_victim_half_open: 200,
            spoofed_min_sources: 50,
            syn_auth: true,
            syn_auth_ttl_s: 300,
            syn_auth_quiet_s: 5.0,
        }
    }
}

/// Traffic spikes per device (`rules::spike`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spike {
    /// Rate interval, seconds.
    pub interval_s: f64,
    /// EWMA weight of the newest interval (0, 1].
    pub alpha: f64,
    /// z-score above the baseline that counts as a spike.
    pub z: f64,
    /// Minimum absolute rate for a spike, packets/s.
    pub min_pps: f64,
    /// Minimum absolute rate for a spike, bytes/s.
    pub min_bps: f64,
    /// Intervals of baseline needed before spikes are reported.
    pub warmup_intervals: u32,
}

impl Default for Spike {
    fn default() -> Self {
        Spike {
            interval_s: 1.0,
            alpha: 0.05,
            z: 6.0,
            min_pps: 5_000.0,
            min_bps: 5_000_000.0,
            warmup_intervals: 60,
        }
    }
}

/// Brute force on authentication services (`rules::bruteforce`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForce {
    /// Sliding window, seconds.
    pub window_s: f64,
    /// Short or failed connections from one source to one service (blocks).
    pub attempts: u32,
    /// Authentication services: FTP 21, SSH 22, Telnet 23/2323, MQTT 1883/8883.
    pub ports: Vec<u16>,
    /// HTTP ports whose logins are watched (many short connections are normal for
    /// HTTP, so these use `http_attempts` and alert without blocking).
    pub http_ports: Vec<u16>,
    pub http_attempts: u32,
    /// A connection longer than this is a session, not a guess, seconds.
    pub max_duration_s: f64,
    /// A connection carrying more than this (both directions) is a session, bytes.
    pub max_bytes: u64,
    /// Connection-pattern rule (`bruteforce.pattern`, any port): short answered
    /// connections of similar size from one source to one service (address and
    /// port) in `window_s` that make password guessing (blocks). On `ports` the
    /// lower `attempts` applies.
    pub pattern_attempts: u32,
    /// Similar sizes: the connections' bytes (both directions) lie within this
    /// relative distance of their median, e.g. 0.25 = ±25 %.
    pub size_spread: f64,
    /// Share of the counted connections that must be of similar size, in (0, 1].
    pub similar_share: f64,
    /// Guessing reconnects at once: the counted connections arrive at
    /// `min_rate_per_s` or more (median gap between their starts), or keep the
    /// service busy (the sum of their durations over their span) at least
    /// `min_busy_share` of the time. A device's periodic reconnects (one short
    /// session every few seconds or minutes) do neither.
    pub min_rate_per_s: f64,
    pub min_busy_share: f64,
}

impl Default for BruteForce {
    fn default() -> Self {
        BruteForce {
            window_s: 120.0,
            attempts: 10,
            ports: vec![21, 22, 23, 2323, 1883, 8883],
            http_ports: vec![80, 443, 8000, 8080, 8081, 8443],
            http_attempts: 60,
            max_duration_s: 30.0,
            max_bytes: 20_000,
            pattern_attempts: 20,
            size_spread: 0.25,
            similar_share: 0.5,
            min_rate_per_s: 2.0,
            min_busy_share: 0.5,
        }
    }
}

/// Reflection and amplification floods (`rules::reflection`): answers from UDP
/// service ports, or SYN-ACKs, that the victim never asked for, from many
/// reflectors (`reflection.victim`, alert on the victim, never blocks); and a
/// device of `trust.device_networks` (private-use addresses when that list is
/// empty) answering many requests from outside with larger responses
/// (`reflection.amplifier`, alert on the device, never blocks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reflection {
    /// Sliding window, seconds.
    pub window_s: f64,
    /// UDP source ports of amplification vectors (CISA TA14-017A "UDP-Based
    /// Amplification Attacks": QOTD 17, CharGEN 19, DNS 53, TFTP 69, portmap 111,
    /// NTP 123, NetBIOS 137, SNMP 161, CLDAP 389, ISAKMP 500 / NAT-T 4500, RIPv1
    /// 520, MS-SQL 1434, SSDP 1900, ARMS 3283, STUN 3478, WS-Discovery 3702,
    /// NAT-PMP 5351, CoAP 5683, Ubiquiti discovery 10001, memcached 11211, DVR
    /// discovery 37810, BACnet 47808).
    pub udp_ports: Vec<u16>,
    /// Distinct reflectors sending one victim unsolicited answers in the window.
    pub min_reflectors: u32,
    /// And at least this many answer packets (with several partitions each
    /// instance sees its share, see `crate::partition`).
    pub min_packets: u64,
    /// Answer bytes to one victim in the window that make a flood from any number
    /// of reflectors (a few strong ones, e.g. memcached).
    pub min_bytes: u64,
    /// Response packets a device sent to requesters outside in the window that
    /// make it an amplifier (with `amplification`).
    pub amplifier_packets: u64,
    /// Response bytes over request bytes at or above which the device amplifies
    /// (every vector of TA14-017A but NetBIOS and BitTorrent is above 3); met
    /// when the gateway sees no requests (XDP on the LAN side only).
    pub amplification: f64,
}

impl Default for Reflection {
    fn default() -> Self {
        Reflection {
            window_s: 10.0,
            udp_ports: vec![
                17, 19, 53, 69, 111, 123, 137, 161, 389, 500, 520, 1434, 1900, 3283, 3478, 3702,
                4500, 5351, 5683, 10001, 11211, 37810, 47808,
            ],
            min_reflectors: 20,
            min_packets: 200,
            min_bytes: 10_000_000,
            amplifier_packets: 100,
            amplification: 3.0,
        }
    }
}

/// Device access policy (`rules::access`): which services of a device may be used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Access {
    pub devices: Vec<DevicePolicy>,
}

/// Services one device (or network of devices) offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    /// The device(s).
    pub prefix: IpNet,
    /// Ports (TCP and UDP) that may be connected to; anything else is unauthorized.
    #[serde(default)]
    pub allowed_ports: Vec<u16>,
    /// Sources that may reach any port (management hosts).
    #[serde(default)]
    pub allowed_sources: Vec<IpNet>,
    /// Whether an answered connection to a disallowed port blocks its source.
    #[serde(default)]
    pub block: bool,
}

/// The autoencoder (`crate::model`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ml {
    pub enabled: bool,
    /// ONNX model; the parameters JSON sits beside it (`model.json`).
    pub model: PathBuf,
    /// Multiplier on the model's benign threshold (1.0 = as trained).
    pub threshold_scale: f64,
    /// Anomalous flows from one source in `window_s` before an alert.
    pub min_flows: u32,
    pub window_s: f64,
    /// At most this many anomaly alerts per minute in total (extra ones counted).
    pub max_alerts_per_min: u32,
}

impl Default for Ml {
    fn default() -> Self {
        Ml {
            enabled: true,
            model: PathBuf::from("detector/model/model.onnx"),
            threshold_scale: 1.0,
            min_flows: 3,
            window_s: 60.0,
            max_alerts_per_min: 60,
        }
    }
}

/// Device trust scores (`crate::trust`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trust {
    pub weight_behavioural: f64,
    pub weight_vulnerability: f64,
    pub weight_reputation: f64,
    /// Behavioural points lost per alert of each severity.
    pub penalty_low: f64,
    pub penalty_medium: f64,
    pub penalty_high: f64,
    pub penalty_critical: f64,
    /// Points regained per minute by each component while quiet.
    pub recovery_per_min: f64,
    /// Quiet time before recovery starts, seconds.
    pub quiet_s: f64,
    /// Devices whose open services are checked for the vulnerability component.
    pub device_networks: Vec<IpNet>,
    /// Whether the vulnerability check (open risky services) is on.
    pub vulnerability_check: bool,
    /// Vulnerability points lost per open risky service, by port. A
    /// `[trust.risky_ports]` table in the file replaces the default table whole;
    /// an environment override changes or adds one port.
    #[serde(with = "port_keys")]
    pub risky_ports: BTreeMap<u16, f64>,
    /// Threat-intelligence list (one IP or CIDR a line, `#`/`;` comments).
    pub threat_feed: Option<PathBuf>,
    /// Reputation points lost per distinct listed address contacted.
    pub feed_penalty: f64,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            weight_behavioural: 0.5,
            weight_vulnerability: 0.3,
            weight_reputation: 0.2,
            penalty_low: 5.0,
            penalty_medium: 15.0,
            penalty_high: 40.0,
            penalty_critical: 70.0,
            recovery_per_min: 5.0,
            quiet_s: 60.0,
            device_networks: Vec::new(),
            vulnerability_check: false,
            risky_ports: BTreeMap::from([
                (21, 20.0),
                (23, 40.0),
                (2323, 40.0),
                (1883, 15.0),
                (5555, 30.0),
            ]),
            threat_feed: None,
            feed_penalty: 25.0,
        }
    }
}

/// Serde of a map keyed by port as a table whose keys are strings (`"21"`), as
/// TOML and figment write them (figment's own values take no integer keys).
mod port_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u16, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(port, v)| (port.to_string(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, f64>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match k.parse::<u16>() {
                Ok(port) => Ok((port, v)),
                Err(_) => Err(D::Error::custom(format!("`{k}` is not a port (0-65535)"))),
            })
            .collect()
    }
}

/// Verdict policy (`crate::policy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Alerts at or above this confidence block their source (when the rule may
    /// block).
    pub block_confidence: f64,
    /// First quarantine, seconds; doubled on every repeat offence.
    pub base_ttl_s: u64,
    /// Longest quarantine, seconds.
    pub max_ttl_s: u64,
    /// Never blocked.
    pub allowlist: Vec<IpNet>,
    /// Management networks: never blocked either.
    pub management: Vec<IpNet>,
    /// Same rule on the same source/target alerts again only after this, seconds.
    pub alert_cooldown_s: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            block_confidence: 0.8,
            base_ttl_s: 600,
            max_ttl_s: 86_400,
            allowlist: Vec::new(),
            management: Vec::new(),
            alert_cooldown_s: 60.0,
        }
    }
}

impl Config {
    /// The bus settings with `node_id` defaulted to `detector.id`.
    pub fn bus_config(&self) -> tad_bus::BusConfig {
        let mut b = self.bus.clone();
        if b.node_id.is_empty() {
            b.node_id = self.detector.id.to_string();
        }
        b
    }

    /// Environment prefix of overrides: `TAD_DETECTOR_<SECTION>__<KEY>`, e.g.
    /// `TAD_DETECTOR_PORTSCAN__VERTICAL_PORTS=30`.
    pub const ENV_PREFIX: &'static str = "TAD_DETECTOR_";

    /// Reads a TOML file over the defaults, applies the [`Self::ENV_PREFIX`]
    /// environment overrides (`tad_bus::config_file::load`) and validates the
    /// result.
    ///
    /// # Errors
    /// [`ConfigError::File`] for a missing file, bad TOML, a wrong type or an
    /// unknown key; [`ConfigError::Invalid`] for a value [`Config::validate`]
    /// rejects.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let cfg: Config = tad_bus::config_file::load(path, Self::ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates TOML text over the defaults, without environment
    /// overrides (tests, `config check` of a text).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML, a wrong type or an unknown key;
    /// [`ConfigError::Invalid`] for a value [`Config::validate`] rejects.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            tad_bus::config_file::parse(text).map_err(|source| ConfigError::Parse {
                path: PathBuf::from("<string>"),
                source,
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Range checks beyond the schema: the ranges and cross-key rules of the
    /// runtime thresholds (`crate::settings`, the same table the settings schema is
    /// published from), then the bus identity, service and partitions.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        crate::settings::validate(self)?;
        if !self.bus.node_id.is_empty() && self.bus.node_id != self.detector.id.as_str() {
            return bad(format!(
                "bus.node_id = {:?} differs from detector.id = {:?} (both are the certificate CN)",
                self.bus.node_id, self.detector.id
            ));
        }
        if self.service.queue == 0 || self.service.tick_ms == 0 {
            return bad("service.queue and service.tick_ms must be at least 1".into());
        }
        let (rf, bf) = (&self.reflection, &self.bruteforce);
        if !(rf.window_s.is_finite() && rf.window_s > 0.0 && rf.amplification >= 1.0) {
            return bad(format!(
                "reflection.window_s = {} must be above 0 and reflection.amplification = {} at least 1",
                rf.window_s, rf.amplification
            ));
        }
        if !(bf.size_spread >= 0.0
            && bf.similar_share > 0.0
            && bf.similar_share <= 1.0
            && bf.min_rate_per_s > 0.0
            && bf.min_busy_share > 0.0)
        {
            return bad("bruteforce.size_spread must be >= 0, similar_share in (0, 1], min_rate_per_s and min_busy_share above 0".into());
        }
        if self.partitions.count == 0 {
            return bad("partitions.count must be at least 1".into());
        }
        if self.partitions.live && !self.partitions.take.is_empty() {
            return bad(
                "partitions.live = true computes the partitions taken: leave partitions.take empty"
                    .into(),
            );
        }
        if !(1..=tad_wire::MAX_TTL_S).contains(&self.synflood.syn_auth_ttl_s) {
            return bad(format!(
                "synflood.syn_auth_ttl_s = {} must be 1-{} s",
                self.synflood.syn_auth_ttl_s,
                tad_wire::MAX_TTL_S
            ));
        }
        if !(self.synflood.syn_auth_quiet_s.is_finite()
            && self.synflood.syn_auth_quiet_s > 0.0
            && (self.synflood.syn_auth_quiet_s as u64) < self.synflood.syn_auth_ttl_s)
        {
            return bad(format!(
                "synflood.syn_auth_quiet_s = {} must be above 0 and below synflood.syn_auth_ttl_s",
                self.synflood.syn_auth_quiet_s
            ));
        }
        if let Some(p) = self
            .partitions
            .take
            .iter()
            .find(|p| **p >= self.partitions.count)
        {
            return bad(format!(
                "partition {p} in partitions.take is not below partitions.count = {}",
                self.partitions.count
            ));
        }
        Ok(())
    }

    /// Whether `addr` is allowlisted or in a management network.
    pub fn never_block(&self, addr: IpAddr) -> bool {
        self.policy
            .allowlist
            .iter()
            .chain(&self.policy.management)
            .any(|n| n.contains(&addr))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use std::path::Path;

    use figment::Jail;
    use tad_bus::config_file::ConfigFileError;

    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("[portscan]\nvertical_port = 3\n").is_err());
        assert!(Config::from_toml("[nosuch]\n").is_err());
        let c = Config::from_toml("[portscan]\nvertical_ports = 30\n").unwrap();
        assert_eq!(c.portscan.vertical_ports, 30);
        assert_eq!(
            c.portscan.horizontal_hosts, 25,
            "others keep their defaults"
        );
    }

    // Every test that loads a file runs in a figment Jail: Jail serialises them and
    // scrubs the environment, so one test's variables never leak into another.

    #[test]
    fn example_file_parses() {
        Jail::expect_with(|_| {
            let path =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("detector.toml.example");
            let c = Config::load(&path).map_err(|e| e.to_string())?;
            assert_eq!(c.trust.risky_ports, Trust::default().risky_ports);
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "d.toml",
                "[portscan]\nvertical_ports = 30\nlow_ports = 4\n[trust.risky_ports]\n22 = 9.0\n",
            )?;
            jail.set_env("TAD_DETECTOR_PORTSCAN__VERTICAL_PORTS", "40");
            jail.set_env("TAD_DETECTOR_POLICY__BLOCK_CONFIDENCE", "0.9");
            let c = Config::load(Path::new("d.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.portscan.vertical_ports, 40, "the environment wins");
            assert_eq!(c.portscan.low_ports, 4, "the file beats the default");
            assert_eq!(
                c.portscan.horizontal_hosts, 25,
                "others keep their defaults"
            );
            assert_eq!(c.policy.block_confidence, 0.9);
            assert_eq!(c.trust.risky_ports.get(&22), Some(&9.0));
            assert_eq!(
                c.trust.risky_ports.get(&23),
                None,
                "the file's table replaces the default"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_the_file_or_environment_is_an_error() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[portscan]\nvertical_port = 3\n")?;
            let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
            assert!(err.contains("vertical_port"), "{err}");
            jail.create_file("d.toml", "[portscan]\nvertical_ports = 30\n")?;
            Config::load(Path::new("d.toml")).map_err(|e| e.to_string())?;
            jail.set_env("TAD_DETECTOR_PORTSCAN__NO_SUCH_KEY", "1");
            let err = Config::load(Path::new("d.toml")).unwrap_err().to_string();
            assert!(err.contains("no_such_key"), "{err}");
            assert!(matches!(
                Config::load(Path::new("none.toml")),
                Err(ConfigError::File(ConfigFileError::Missing { .. }))
            ));
            Ok(())
        });
    }

    #[test]
    fn values_are_validated_after_loading() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[portscan]\nvertical_ports = 30\n")?;
            jail.set_env("TAD_DETECTOR_SPIKE__ALPHA", "2.0");
            let err = Config::load(Path::new("d.toml")).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
            assert!(err.to_string().contains("spike.alpha"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn thresholds_apply_all_or_nothing() {
        let mut c = Config::default();
        let ok = BTreeMap::from([
            ("portscan.vertical_ports".to_string(), 20.0),
            ("synflood.window_s".to_string(), 5.0),
        ]);
        c.apply_thresholds(&ok).unwrap();
        assert_eq!((c.portscan.vertical_ports, c.synflood.window_s), (20, 5.0));
        let before = c.clone();
        for bad in [
            BTreeMap::from([
                ("portscan.vertical_ports".to_string(), 25.0),
                ("portscan.nope".to_string(), 1.0),
            ]),
            BTreeMap::from([("portscan.vertical_ports".to_string(), 2.5)]),
            BTreeMap::from([("portscan.vertical_ports".to_string(), 0.0)]),
            BTreeMap::from([("detector.id".to_string(), 1.0)]),
            BTreeMap::from([("portscan".to_string(), 1.0)]),
            BTreeMap::from([("bus.port".to_string(), 1.0)]),
            BTreeMap::from([("partitions.count".to_string(), 4.0)]),
        ] {
            assert!(c.apply_thresholds(&bad).is_err(), "{bad:?}");
            assert_eq!(c, before, "a rejected message changes nothing");
        }
    }
}
