//! The gateway's configuration file (`gateway.toml`; commented example in
//! `fw-ctl/gateway.toml.example`). Every section and key has a default
//! (`#[serde(default)]`) and an unknown key is an error (`deny_unknown_fields`).
//! [`GatewayFile::check`] validates what serde cannot (prefixes, ranges) and names
//! every problem it finds; `fw-ctl config check FILE` prints them.
//! [`GatewayFile::load`] reads the file through the loader every role shares
//! (`tad_bus::config_file`), so `TAD_GATEWAY_<SECTION>__<KEY>` variables override it.

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use flow_meter::export::Timeouts;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tad_bus::{BusConfig, config_file::ConfigFileError};
use tad_wire::MAX_TTL_S;

use crate::{
    cidr::parse_prefix,
    error::{CtlError, Result},
    pin::{AttachMode, DEFAULT_INSTANCE, PinDir},
};

/// Prefix of the environment variables that override `gateway.toml`:
/// `TAD_GATEWAY_<SECTION>__<KEY>` or `TAD_GATEWAY_<KEY>` for a top-level key.
pub const ENV_PREFIX: &str = "TAD_GATEWAY_";

/// Observe (IDS) or enforce (IPS), as written in the file and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Count would-drops and pass everything (IDS).
    Observe,
    /// Drop what matches (IPS).
    Enforce,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayFile {
    /// This gateway's id: its MQTT client certificate's CN and its topic segment.
    pub gateway_id: String,
    /// Pin directory name under /sys/fs/bpf.
    pub instance: String,
    /// Interfaces the daemon attaches to when the program is not loaded yet.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Filtering mode set at load.
    pub mode: ModeName,
    /// Block state file; default `/var/lib/fw-ctl/<instance>/state.json`.
    pub state_file: Option<PathBuf>,
    /// Management networks: always allowlisted, so no verdict or command can lock
    /// the operator out. Addresses or CIDR prefixes.
    pub management: Vec<String>,
    /// Further static allowlist entries (same protection as `management`).
    pub allow: Vec<String>,
    /// Also allowlist every address configured on this host (default true).
    pub allow_own_addresses: bool,
    pub limits: Limits,
    pub maps: MapSizes,
    pub export: Export,
    /// Connect to the MQTT bus at all (false: enforce and export locally only,
    /// e.g. during bring-up).
    pub bus_enabled: bool,
    /// The MQTT/TLS connection (`tad_bus::BusConfig`; see bus-api). `node_id`
    /// defaults to `gateway_id`, and must start with `gateway-`.
    pub bus: BusConfig,
    /// Runtime status of the daemon (counters of verdicts, queue, bus), rewritten
    /// every second; `fw-ctl status` shows it. Default `/run/fw-ctl/<instance>.json`.
    pub status_file: Option<PathBuf>,
    pub trust: Trust,
    pub verdicts: Verdicts,
    /// Publication of what the gateway enforces (`GatewayState` and deltas).
    pub state: StatePublication,
    /// The local HTTP endpoints (`/metrics`, `/health`).
    pub http: Http,
    /// IPFIX export of the flow records to a standard collector (off by default).
    pub ipfix: Ipfix,
    /// Evidence at packet speed (the XDP program's per-address counts) and the
    /// provisional quarantine it makes.
    pub evidence: Evidence,
    /// IoT devices (issue 17): the telemetry guard, trust ledger, command vetting
    /// and vulnerability scan (`tad_devices::DevicesConfig`); absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<tad_devices::DevicesConfig>,
    /// Threat feeds the daemon refreshes on a schedule (`[[feeds]]`,
    /// `daemon::feeds`); none by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<Feed>,
}

impl Default for GatewayFile {
    fn default() -> Self {
        GatewayFile {
            gateway_id: "gateway-1".parse().unwrap(),
            instance: DEFAULT_INSTANCE.into(),
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Native,
            mode: ModeName::Enforce,
            state_file: None,
            management: Vec::new(),
            allow: Vec::new(),
            allow_own_addresses: true,
            limits: Limits::default(),
            maps: MapSizes::default(),
            export: Export::default(),
            bus_enabled: true,
            bus: BusConfig::default(),
            status_file: None,
            trust: Trust::default(),
            verdicts: Verdicts::default(),
            state: StatePublication::default(),
            http: Http::default(),
            ipfix: Ipfix::default(),
            evidence: Evidence::default(),
            devices: None,
            feeds: Vec::new(),
        }
    }
}

/// Per-source rate limits (GCRA token buckets in the XDP program); 0 = off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// TCP SYN-without-ACK per source, packets/s.
    pub syn_pps: u32,
    /// SYN burst, packets.
    pub syn_burst: u32,
    /// All packets per source, packets/s.
    pub pps: u32,
    /// Packet burst, packets.
    pub burst: u32,
}

/// Map capacities set at load (0 = the default from `fw_common::maps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapSizes {
    /// Allowlist tries (prefixes per family).
    pub allow_max_entries: u32,
    /// Blocklist tries (prefixes shorter than /32 or /128, per family).
    pub block_max_entries: u32,
    /// Blocklist host maps (single addresses, /32 or /128, per family).
    pub block_host_max_entries: u32,
    pub flows_max_entries: u32,
    pub rate_max_entries: u32,
}

/// Flow export (IPFIX timeouts, RFC 7011 terms) and publishing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Export {
    /// How often the flow map is walked, ms.
    pub poll_interval_ms: u64,
    /// A flow with no packet for this long is over, s (fractions allowed).
    pub idle_timeout_s: f64,
    /// A running flow is reported this often, s.
    pub active_timeout_s: f64,
    /// Quiet time after FIN+FIN or RST before a TCP flow counts as ended, ms.
    pub end_grace_ms: u64,
    /// Number of flow partitions (detector instances); records go to
    /// `partition_of(initiator, partitions)`.
    pub partitions: u16,
    /// Most records in one published batch.
    pub batch_max_records: usize,
    /// Records held while the broker is unreachable; the oldest are dropped when full.
    pub queue_capacity: usize,
    /// Counters snapshot interval, ms.
    pub counters_interval_ms: u64,
    /// Expired-block sweep interval, ms.
    pub sweep_interval_ms: u64,
    /// When a flow enters the kernel flow map (`fw_common::admission`):
    /// `"second_packet"` (default; one-packet flows are exported from the pending
    /// array after the idle timeout) or `"first_packet"` (every first packet is an
    /// LRU insert, as before; for comparison).
    pub admission: AdmissionMode,
}

/// [`Export::admission`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionMode {
    /// A flow is admitted on its second packet.
    #[default]
    SecondPacket,
    /// A flow is inserted on its first packet.
    FirstPacket,
}

impl Default for Export {
    fn default() -> Self {
        let t = Timeouts::default();
        Export {
            poll_interval_ms: 1_000,
            idle_timeout_s: t.idle.as_secs_f64(),
            active_timeout_s: t.active.as_secs_f64(),
            end_grace_ms: t.end_grace.as_millis() as u64,
            partitions: 1,
            batch_max_records: 500,
            queue_capacity: 100_000,
            counters_interval_ms: 1_000,
            sweep_interval_ms: 1_000,
            admission: AdmissionMode::SecondPacket,
        }
    }
}

impl Export {
    /// The IPFIX timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            idle: Duration::from_secs_f64(self.idle_timeout_s.max(0.0)),
            active: Duration::from_secs_f64(self.active_timeout_s.max(0.0)),
            end_grace: Duration::from_millis(self.end_grace_ms),
        }
    }

    /// Writes the admission rule and the idle timeout it uses into the kernel
    /// configuration (the other fields untouched): the kernel must treat a
    /// pending first packet as expired exactly when the export does.
    pub fn apply(&self, cfg: &mut fw_common::config::GatewayConfig) {
        use fw_common::config::FLAG_ADMIT_FIRST_PACKET;
        let ms = (self.idle_timeout_s.max(0.0) * 1_000.0).round();
        cfg.flow_idle_ms = ms.clamp(1.0, u32::MAX as f64) as u32;
        match self.admission {
            AdmissionMode::SecondPacket => cfg.flags &= !FLAG_ADMIT_FIRST_PACKET,
            AdmissionMode::FirstPacket => cfg.flags |= FLAG_ADMIT_FIRST_PACKET,
        }
    }
}

/// Whose verdicts and commands are obeyed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trust {
    /// Detector ids (certificate CNs) whose verdicts are applied.
    pub detectors: Vec<String>,
    /// Dashboard ids whose commands are applied.
    pub dashboards: Vec<String>,
}

/// Limits on what a verdict may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Verdicts {
    /// Longest TTL accepted, s (at most 30 days).
    pub max_ttl_s: u64,
    /// TTL given to a detector's `block` without one, s; 0 = permanent.
    pub default_block_ttl_s: u64,
    /// Narrowest IPv4 prefix a verdict may block (refuse e.g. 0.0.0.0/0).
    pub min_prefix_v4: u8,
    /// Narrowest IPv6 prefix a verdict may block.
    pub min_prefix_v6: u8,
    /// Largest difference between a verdict's or command's `issued_at_ms` and this
    /// gateway's clock, either way, s; older (or future) messages are refused as
    /// `stale`. At least 1.
    pub max_age_s: u64,
    /// How many message ids accepted from each sender are remembered to refuse a
    /// replay (`replayed`); memory is bounded by this times the number of trusted
    /// senders. At least 1.
    pub replay_window: usize,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            max_ttl_s: 24 * 3600,
            default_block_ttl_s: 3600,
            min_prefix_v4: 16,
            min_prefix_v6: 48,
            max_age_s: 300,
            replay_window: 4096,
        }
    }
}

/// How the daemon publishes what it enforces: it reads the pinned maps and the
/// state file every `poll_interval_ms`, publishes the changes as a
/// `GatewayStateDelta`, and a full retained `GatewayState` at start, after every
/// reconnect, and every `snapshot_interval_ms` when something changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatePublication {
    /// How often the maps are read and compared with the last publication, ms.
    pub poll_interval_ms: u64,
    /// Least time between two full snapshots, ms (none while nothing changes).
    pub snapshot_interval_ms: u64,
}

impl Default for StatePublication {
    fn default() -> Self {
        StatePublication {
            poll_interval_ms: 500,
            snapshot_interval_ms: 5_000,
        }
    }
}

/// Evidence at packet speed (`fw_common::evidence`): the XDP program counts, per
/// address and 1 s epoch, new flows, distinct peers and ports and the answers they
/// got; the daemon reads those counts every `poll_interval_ms` (and at once when
/// the program raises an event) and publishes them to the detectors as
/// `tad_wire::EvidenceBatch`es. The thresholds are written into the kernel
/// configuration map at load and daemon start; they count set bits of the 256-bit
/// peer bitmaps (about distinct peers for small numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evidence {
    /// How often both evidence maps are read and the changed records published,
    /// ms (50..=1000; at most one epoch, so no epoch goes unseen).
    pub poll_interval_ms: u64,
    /// Provisional quarantine: a source with this many distinct destination hosts
    /// or ports and this many new flows without a reply within one to two seconds
    /// gets a blocklist entry that drops its new flows only, until a detector
    /// confirms (block) or lifts (unblock) it or it expires; 0 = off.
    pub quarantine_distinct: u32,
    /// Lifetime of a provisional quarantine entry, ms (1000..=3600000).
    pub quarantine_ttl_ms: u32,
    /// Distinct hosts or ports at which the program wakes the daemon (a `report`
    /// event, at most one per source and epoch); 0 = off.
    pub report_distinct: u32,
}

impl Default for Evidence {
    fn default() -> Self {
        use fw_common::config as c;
        Evidence {
            poll_interval_ms: 250,
            quarantine_distinct: c::DEFAULT_QUARANTINE_DISTINCT,
            quarantine_ttl_ms: c::DEFAULT_QUARANTINE_TTL_MS,
            report_distinct: c::DEFAULT_REPORT_DISTINCT,
        }
    }
}

impl Evidence {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(50..=1000).contains(&self.poll_interval_ms) {
            p.push(format!(
                "evidence.poll_interval_ms {}: must be in 50..=1000 (ms)",
                self.poll_interval_ms
            ));
        }
        if !(1000..=3_600_000).contains(&self.quarantine_ttl_ms) {
            p.push(format!(
                "evidence.quarantine_ttl_ms {}: must be in 1000..=3600000 (ms)",
                self.quarantine_ttl_ms
            ));
        }
        let bits = fw_common::evidence::BITMAP_BITS;
        for (key, v) in [
            ("quarantine_distinct", self.quarantine_distinct),
            ("report_distinct", self.report_distinct),
        ] {
            if v > bits {
                p.push(format!(
                    "evidence.{key} {v}: at most {bits} (bits of the peer bitmap); 0 = off"
                ));
            }
        }
        p
    }

    /// Writes the thresholds into the kernel configuration (the other fields
    /// untouched).
    pub fn apply(&self, cfg: &mut fw_common::config::GatewayConfig) {
        cfg.quarantine_distinct = self.quarantine_distinct;
        cfg.quarantine_ttl_ms = self.quarantine_ttl_ms;
        cfg.report_distinct = self.report_distinct;
    }
}

/// IPFIX export (RFC 7011 over UDP, `daemon::ipfix`): every flow record the
/// daemon exports also goes to this collector, as one uniflow data record per
/// direction with packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ipfix {
    /// The collector, `host:port` (e.g. `"192.0.2.10:4739"`, `"[2001:db8::10]:4739"`,
    /// `"collector.lan:2055"`; resolved once at start); absent = no IPFIX export.
    pub collector: Option<String>,
    /// Observation domain id in every message header (RFC 7011 §3.1).
    pub observation_domain_id: u32,
    /// Templates are resent this often, s (RFC 7011 §8.4, UDP); 1..=3600.
    pub template_refresh_s: u64,
    /// Largest IPFIX message (the UDP payload), bytes; 512..=65507. Keep it under
    /// the path MTU less the IP and UDP headers (default 1400).
    pub max_message_bytes: usize,
}

impl Default for Ipfix {
    fn default() -> Self {
        Ipfix {
            collector: None,
            observation_domain_id: 1,
            template_refresh_s: 60,
            max_message_bytes: 1400,
        }
    }
}

impl Ipfix {
    /// Every problem of this section, each naming its key (the collector is
    /// resolved only when the daemon starts).
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(c) = &self.collector {
            let ok = c.rsplit_once(':').is_some_and(|(host, port)| {
                let host_ok = !host.is_empty()
                    && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
                host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                p.push(format!(
                    "ipfix.collector {c:?}: not host:port (e.g. \"192.0.2.10:4739\", \"[2001:db8::10]:4739\"); leave it out to turn IPFIX export off"
                ));
            }
        }
        if !(1..=3600).contains(&self.template_refresh_s) {
            p.push(format!(
                "ipfix.template_refresh_s {}: must be in 1..=3600 (s)",
                self.template_refresh_s
            ));
        }
        if !(512..=65507).contains(&self.max_message_bytes) {
            p.push(format!(
                "ipfix.max_message_bytes {}: must be in 512..=65507 (bytes, the UDP payload)",
                self.max_message_bytes
            ));
        }
        p
    }
}

/// One threat feed the daemon refreshes (`[[feeds]]`): each refresh applies the
/// diff against the blocks this feed made before (`fw_ctl::feed::refresh`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Name: `[A-Za-z0-9._-]`, 1..=64 characters, unique; its blocks carry
    /// `feed:<name>` as their `by` in the state file.
    pub name: String,
    /// A local file path, or an `http://` / `https://` URL (TLS with the
    /// webpki root certificates).
    pub source: String,
    /// Refresh period, s (1..=604800); the first refresh runs at start.
    #[serde(default = "Feed::default_interval_s")]
    pub interval_s: u64,
    /// Lifetime of the blocks it adds, s; absent = until the prefix leaves the feed.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// With `ttl_s`: each refresh extends the blocks still listed to now + ttl.
    #[serde(default)]
    pub renew: bool,
    /// Largest feed accepted, bytes (a bigger download is refused).
    #[serde(default = "Feed::default_max_bytes")]
    pub max_bytes: u64,
    /// HTTP(S) fetch timeout, s (whole request).
    #[serde(default = "Feed::default_timeout_s")]
    pub timeout_s: u64,
}

impl Feed {
    fn default_interval_s() -> u64 {
        3600
    }
    fn default_max_bytes() -> u64 {
        64 << 20
    }
    fn default_timeout_s() -> u64 {
        30
    }

    /// Whether `source` is an HTTP(S) URL (otherwise a file path).
    pub fn is_url(&self) -> bool {
        self.source.starts_with("http://") || self.source.starts_with("https://")
    }

    /// Every problem of this entry, each naming `feeds[<i>].<key>`.
    pub fn check(&self, i: usize) -> Vec<String> {
        let mut p = Vec::new();
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !name_ok {
            p.push(format!(
                "feeds[{i}].name {:?}: 1..=64 characters of A-Z a-z 0-9 . _ -",
                self.name
            ));
        }
        if self.source.is_empty() {
            p.push(format!(
                "feeds[{i}].source is empty (a file path or an http(s) URL)"
            ));
        } else if self.source.contains("://") && !self.is_url() {
            p.push(format!(
                "feeds[{i}].source {:?}: only http:// and https:// URLs, or a file path",
                self.source
            ));
        }
        if !(1..=604_800).contains(&self.interval_s) {
            p.push(format!(
                "feeds[{i}].interval_s {}: must be in 1..=604800 (s)",
                self.interval_s
            ));
        }
        if let Some(t) = self.ttl_s
            && (t == 0 || t > MAX_TTL_S)
        {
            p.push(format!(
                "feeds[{i}].ttl_s {t}: must be in 1..={MAX_TTL_S} (s); leave it out for no expiry"
            ));
        }
        if self.renew && self.ttl_s.is_none() {
            p.push(format!("feeds[{i}].renew needs feeds[{i}].ttl_s"));
        }
        if self.max_bytes == 0 || self.timeout_s == 0 {
            p.push(format!(
                "feeds[{i}].max_bytes and feeds[{i}].timeout_s must be > 0"
            ));
        }
        p
    }
}

/// The daemon's local HTTP server: Prometheus `/metrics` and `/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// `address:port` to listen on (port 0: any free port, written to the status
    /// file); empty = no HTTP server.
    pub listen: String,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:9102".into(),
        }
    }
}

impl Http {
    /// The listen address, `None` when the server is off.
    ///
    /// # Errors
    /// A `listen` that is not `address:port`, naming the key.
    pub fn addr(&self) -> std::result::Result<Option<std::net::SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|e| {
            format!(
                "http.listen {:?}: not an address:port ({e}); \"\" turns the server off",
                self.listen
            )
        })
    }
}

impl GatewayFile {
    /// `gateway_id` as a validated node id.
    ///
    /// # Errors
    /// [`CtlError::Config`] naming the key (what [`Self::check`] also reports).
    pub fn node_id(&self) -> Result<tad_wire::NodeId> {
        tad_wire::NodeId::parse(&self.gateway_id).map_err(|e| CtlError::Config {
            path: PathBuf::from("(config)"),
            why: format!("gateway_id: {e}"),
        })
    }
}

impl Verdicts {
    /// The width policy these keys set.
    pub fn width(&self) -> tad_wire::WidthPolicy {
        tad_wire::WidthPolicy {
            min_prefix_v4: self.min_prefix_v4,
            min_prefix_v6: self.min_prefix_v6,
        }
    }
}

impl GatewayFile {
    /// Reads `path` the way every role reads its file
    /// ([`tad_bus::config_file::load`]): the TOML file, then environment overrides
    /// [`ENV_PREFIX`]`<SECTION>__<KEY>` (e.g.
    /// `TAD_GATEWAY_EXPORT__POLL_INTERVAL_MS=500`, `TAD_GATEWAY_INSTANCE=lab`), keys
    /// given by neither at their serde defaults; then [`Self::check`].
    ///
    /// # Errors
    /// [`CtlError::File`] when the file does not exist; [`CtlError::Config`] for
    /// TOML syntax, a wrong type or an unknown key (in the file or in a
    /// `TAD_GATEWAY_` variable; the message names it), and for every problem
    /// [`Self::check`] finds, joined with `; `.
    pub fn load(path: &Path) -> Result<GatewayFile> {
        let cfg: GatewayFile =
            tad_bus::config_file::load(path, ENV_PREFIX).map_err(|e| match e {
                ConfigFileError::Missing { path } => {
                    CtlError::file(path, io::Error::from_raw_os_error(libc::ENOENT))
                }
                ConfigFileError::Invalid { path, source } => CtlError::Config {
                    path,
                    why: source.to_string(),
                },
            })?;
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(CtlError::Config {
                path: path.to_path_buf(),
                why: problems.join("; "),
            });
        }
        Ok(cfg)
    }

    /// Parses TOML text over the defaults, without environment overrides or
    /// semantic checks (`fw-ctl config check`, tests).
    ///
    /// # Errors
    /// The message of a syntax, type or unknown-key error, naming the key.
    pub fn parse(text: &str) -> std::result::Result<GatewayFile, String> {
        tad_bus::config_file::parse(text).map_err(|e| e.to_string())
    }

    /// Every semantic problem, each naming the key; empty when valid.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = PinDir::new(&self.instance) {
            p.push(format!("instance: {e}"));
        }
        if let Err(e) = tad_wire::NodeId::parse(&self.gateway_id) {
            p.push(format!("gateway_id: {e}"));
        }
        for (key, list) in [("management", &self.management), ("allow", &self.allow)] {
            for s in list {
                if let Err(e) = parse_prefix(s) {
                    p.push(format!("{key}: {e}"));
                }
            }
        }
        let l = &self.limits;
        if l.syn_pps > 0 && l.syn_burst == 0 {
            p.push("limits.syn_burst must be at least 1 when limits.syn_pps is set".into());
        }
        if l.pps > 0 && l.burst == 0 {
            p.push("limits.burst must be at least 1 when limits.pps is set".into());
        }
        let e = &self.export;
        if e.poll_interval_ms == 0 {
            p.push("export.poll_interval_ms must be > 0".into());
        }
        if e.idle_timeout_s.is_nan() || e.idle_timeout_s <= 0.0 {
            p.push("export.idle_timeout_s must be > 0".into());
        }
        if e.active_timeout_s.is_nan() || e.active_timeout_s <= 0.0 {
            p.push("export.active_timeout_s must be > 0".into());
        }
        if e.partitions == 0 {
            p.push("export.partitions must be at least 1".into());
        }
        if e.batch_max_records == 0 {
            p.push("export.batch_max_records must be at least 1".into());
        }
        if e.queue_capacity == 0 {
            p.push("export.queue_capacity must be at least 1".into());
        }
        if e.counters_interval_ms == 0 || e.sweep_interval_ms == 0 {
            p.push("export.counters_interval_ms and export.sweep_interval_ms must be > 0".into());
        }
        let v = &self.verdicts;
        if v.max_ttl_s == 0 || v.max_ttl_s > MAX_TTL_S {
            p.push(format!("verdicts.max_ttl_s must be in 1..={MAX_TTL_S}"));
        }
        if v.default_block_ttl_s > v.max_ttl_s {
            p.push("verdicts.default_block_ttl_s exceeds verdicts.max_ttl_s".into());
        }
        if v.min_prefix_v4 > 32 || v.min_prefix_v6 > 128 {
            p.push("verdicts.min_prefix_v4 <= 32 and verdicts.min_prefix_v6 <= 128".into());
        }
        if v.max_age_s == 0 {
            p.push("verdicts.max_age_s must be at least 1 (s)".into());
        }
        if v.replay_window == 0 {
            p.push("verdicts.replay_window must be at least 1 (message ids per sender)".into());
        }
        if self.state.poll_interval_ms == 0 || self.state.snapshot_interval_ms == 0 {
            p.push("state.poll_interval_ms and state.snapshot_interval_ms must be > 0".into());
        }
        if let Err(e) = self.http.addr() {
            p.push(e);
        }
        p.extend(self.ipfix.check());
        p.extend(self.evidence.check());
        if let Some(d) = &self.devices {
            p.extend(d.check());
        }
        for (i, f) in self.feeds.iter().enumerate() {
            p.extend(f.check(i));
            if self.feeds[..i].iter().any(|o| o.name == f.name) {
                p.push(format!("feeds[{i}].name {:?}: used twice", f.name));
            }
        }
        if self.bus_enabled {
            let b = self.bus_config();
            if !b.node_id.starts_with("gateway-") {
                p.push(format!(
                    "bus.node_id {:?}: a gateway's id must start with \"gateway-\" (the broker ACL gives the role by prefix)",
                    b.node_id
                ));
            }
            if b.node_id != self.gateway_id {
                p.push(format!(
                    "bus.node_id {:?} differs from gateway_id {:?}; leave bus.node_id empty",
                    b.node_id, self.gateway_id
                ));
            }
            if b.host.is_empty() {
                p.push("bus.host is empty".into());
            }
            if b.cert_file.as_os_str().is_empty() || b.key_file.as_os_str().is_empty() {
                p.push("bus.cert_file and bus.key_file must be set (this gateway's client certificate)".into());
            }
            if self.trust.detectors.is_empty() && self.trust.dashboards.is_empty() {
                p.push(
                    "trust: no detector or dashboard is trusted; every verdict and command would be rejected"
                        .into(),
                );
            }
        }
        p
    }

    /// The bus settings with `node_id` filled in from `gateway_id` when empty.
    pub fn bus_config(&self) -> BusConfig {
        let mut b = self.bus.clone();
        if b.node_id.is_empty() {
            b.node_id = self.gateway_id.clone();
        }
        b
    }

    /// The daemon's runtime status file.
    pub fn status_path(&self) -> PathBuf {
        self.status_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/fw-ctl").join(format!("{}.json", self.instance)))
    }

    /// The state file path.
    pub fn state_path(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| default_state_path(&self.instance))
    }

    /// Management and static allowlist prefixes (invalid ones were refused by
    /// [`Self::check`] and are skipped here).
    pub fn allow_prefixes(&self) -> Vec<IpNet> {
        self.management
            .iter()
            .chain(self.allow.iter())
            .filter_map(|s| parse_prefix(s).ok())
            .collect()
    }
}

/// `/var/lib/fw-ctl/<instance>/state.json`.
pub fn default_state_path(instance: &str) -> PathBuf {
    PathBuf::from("/var/lib/fw-ctl")
        .join(instance)
        .join("state.json")
}

/// Every address configured on this host (in this network namespace), loopback
/// included, from `getifaddrs(3)`.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
            } else if fam == libc::AF_INET6 {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sa.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = GatewayFile::parse("").unwrap();
        assert_eq!(c, GatewayFile::default());
        assert_eq!(
            c.state_path(),
            PathBuf::from("/var/lib/fw-ctl/tad/state.json")
        );
    }

    #[test]
    fn the_shipped_evidence_defaults_switch_provisional_quarantine_on() {
        use fw_common::config::{self as k, GatewayConfig};
        let mut cfg = GatewayConfig {
            syn_rate_pps: 7,
            ..Default::default()
        };
        GatewayFile::default().evidence.apply(&mut cfg);
        assert_eq!(
            (
                cfg.quarantine_distinct,
                cfg.quarantine_ttl_ms,
                cfg.report_distinct
            ),
            (
                k::DEFAULT_QUARANTINE_DISTINCT,
                k::DEFAULT_QUARANTINE_TTL_MS,
                k::DEFAULT_REPORT_DISTINCT
            )
        );
        assert!(cfg.quarantine_distinct > 0);
        assert_eq!(cfg.syn_rate_pps, 7, "the other fields are left alone");
        let mut e = GatewayFile::parse("[export]\nidle_timeout_s = 3.0\n")
            .unwrap()
            .export;
        e.apply(&mut cfg);
        assert_eq!(cfg.flow_idle_ms, 3_000);
        assert!(!cfg.admit_first_packet());
        e.admission = AdmissionMode::FirstPacket;
        e.apply(&mut cfg);
        assert!(cfg.admit_first_packet());
        let e = GatewayFile::parse("[export]\nadmission = \"third_packet\"\n").unwrap_err();
        assert!(e.contains("third_packet"), "{e}");
        let off = GatewayFile::parse("[evidence]\nquarantine_distinct = 0\n").unwrap();
        assert_eq!(off.evidence.quarantine_distinct, 0);
        assert!(off.evidence.check().is_empty(), "0 is off, not an error");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = GatewayFile::parse("gateway_id = \"gw\"\nmanagment = []\n").unwrap_err();
        assert!(e.contains("managment"), "{e}");
        let e = GatewayFile::parse("[export]\nidle_timeout = 3\n").unwrap_err();
        assert!(e.contains("idle_timeout"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../gateway.toml.example");
        let c = GatewayFile::parse(text).unwrap();
        assert_eq!(c.check(), Vec::<String>::new());
    }

    #[test]
    fn check_names_each_problem() {
        let c = GatewayFile::parse(
            "gateway_id = \"gw 1\"\nbus_enabled = false\nmanagement = [\"192.0.2.300/24\"]\n[limits]\nsyn_pps = 100\n",
        )
        .unwrap();
        let p = c.check().join("\n");
        assert!(p.contains("gateway_id"), "{p}");
        assert!(p.contains("192.0.2.300/24"), "{p}");
        assert!(p.contains("syn_burst"), "{p}");
        let c = GatewayFile::parse(
            "bus_enabled = false\n[verdicts]\nmax_age_s = 0\nreplay_window = 0\n[http]\nlisten = \"localhost\"\n",
        )
        .unwrap();
        let p = c.check().join("\n");
        assert!(p.contains("verdicts.max_age_s"), "{p}");
        assert!(p.contains("verdicts.replay_window"), "{p}");
        assert!(p.contains("http.listen \"localhost\""), "{p}");
        let c = GatewayFile::parse(
            "bus_enabled = false\n[evidence]\npoll_interval_ms = 20\nquarantine_ttl_ms = 10\nreport_distinct = 300\n",
        )
        .unwrap();
        let p = c.check().join("\n");
        assert!(p.contains("evidence.poll_interval_ms 20"), "{p}");
        assert!(p.contains("evidence.quarantine_ttl_ms 10"), "{p}");
        assert!(p.contains("evidence.report_distinct 300"), "{p}");
        assert!(!p.contains("quarantine_distinct"), "{p}");
        let c = GatewayFile::parse("bus_enabled = false\n[http]\nlisten = \"\"\n").unwrap();
        assert_eq!(c.check(), Vec::<String>::new());
        assert_eq!(c.http.addr(), Ok(None));
    }

    #[test]
    fn ipfix_section_is_checked_key_by_key() {
        let c =
            GatewayFile::parse("bus_enabled = false\n[ipfix]\ncollector = \"127.0.0.1:4739\"\n")
                .unwrap();
        assert_eq!(c.check(), Vec::<String>::new());
        assert_eq!(c.ipfix.collector.as_deref(), Some("127.0.0.1:4739"));
        assert_eq!(c.ipfix.max_message_bytes, 1400, "defaults for the rest");
        assert_eq!(
            GatewayFile::parse("").unwrap().ipfix.collector,
            None,
            "off by default"
        );
        for ok in ["[2001:db8::10]:4739", "collector.lan:2055"] {
            let i = Ipfix {
                collector: Some(ok.into()),
                ..Ipfix::default()
            };
            assert_eq!(i.check(), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "2001:db8::10:4739",
            ":4739",
            "host:0",
            "host:70000",
        ] {
            let i = Ipfix {
                collector: Some(bad.into()),
                ..Ipfix::default()
            };
            let p = i.check().join("\n");
            assert!(
                p.contains("ipfix.collector") && p.contains(bad),
                "{bad}: {p}"
            );
        }
        let c = GatewayFile::parse(
            "bus_enabled = false\n[ipfix]\ntemplate_refresh_s = 0\nmax_message_bytes = 100\n",
        )
        .unwrap();
        let p = c.check().join("\n");
        assert!(p.contains("ipfix.template_refresh_s 0"), "{p}");
        assert!(p.contains("ipfix.max_message_bytes 100"), "{p}");
        let e = GatewayFile::parse("[ipfix]\ncolector = \"x:1\"\n").unwrap_err();
        assert!(e.contains("colector"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "instance = \"from-file\"\nbus_enabled = false\n[export]\npoll_interval_ms = 2000\npartitions = 3\n",
        )
        .unwrap();
        // SAFETY: no other test of this crate reads TAD_GATEWAY_* variables or
        // loads a file through `GatewayFile::load`; they are removed again below.
        unsafe {
            std::env::set_var("TAD_GATEWAY_EXPORT__POLL_INTERVAL_MS", "500");
            std::env::set_var("TAD_GATEWAY_INSTANCE", "from-env");
        }
        let loaded = GatewayFile::load(&path);
        // SAFETY: as above.
        unsafe {
            std::env::remove_var("TAD_GATEWAY_EXPORT__POLL_INTERVAL_MS");
            std::env::remove_var("TAD_GATEWAY_INSTANCE");
        }
        let c = loaded.unwrap();
        assert_eq!(
            c.export.poll_interval_ms, 500,
            "a section key from the environment"
        );
        assert_eq!(
            c.instance, "from-env",
            "a top-level key from the environment"
        );
        assert_eq!(
            c.export.partitions, 3,
            "keys not overridden come from the file"
        );
        assert!(!c.bus_enabled);
        assert_eq!(
            c.verdicts,
            Verdicts::default(),
            "absent keys are the defaults"
        );
    }

    #[test]
    fn load_reports_a_missing_file_and_check_problems() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let e = GatewayFile::load(&missing).unwrap_err();
        assert!(matches!(e, CtlError::File { .. }), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "bus_enabled = false\n[limits]\npps = 10\n").unwrap();
        let e = GatewayFile::load(&bad).unwrap_err();
        assert!(
            matches!(&e, CtlError::Config { why, .. } if why.contains("limits.burst")),
            "{e}"
        );
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "[export]\nidle_timeout = 3\n").unwrap();
        let e = GatewayFile::load(&unknown).unwrap_err();
        assert!(
            matches!(&e, CtlError::Config { why, .. } if why.contains("idle_timeout")),
            "{e}"
        );
    }

    #[test]
    fn own_addresses_include_loopback() {
        assert!(own_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}
