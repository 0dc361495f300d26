//! Versioned MQTT payloads: the one place where every message between the nodes is
//! defined. All payloads are JSON (content type [`CONTENT_TYPE`]) and carry the
//! schema version in `v`; a receiver rejects a version it does not know.
//!
//! # Topic scheme
//! Every topic starts with [`TOPIC_ROOT`] (`tad/v1`). `<gw>` is a gateway id and
//! `<det>` a detector id; both equal the CN of the node's client certificate, which
//! the broker uses as the username for its ACL.
//!
//! | topic | payload | from → to | QoS, retain |
//! |---|---|---|---|
//! | `tad/v1/gw/<gw>/flows/<p>` | [`FlowBatch`] | gateway → detectors (partition `p`) | 1 |
//! | `tad/v1/gw/<gw>/evidence/<p>` | [`EvidenceBatch`] | gateway → detectors (partition `p`) | 0 |
//! | `tad/v1/gw/<gw>/counters` | [`CountersSnapshot`] | gateway → dashboard | 0 |
//! | `tad/v1/gw/<gw>/status` | [`NodeStatus`] | gateway → all; Last Will | 1, retained |
//! | `tad/v1/gw/<gw>/acks` | [`Ack`] | gateway → detectors, dashboard | 1 |
//! | `tad/v1/gw/<gw>/verdicts/<det>` | [`Verdict`], signed (JWS) | detector `det` → gateway | 1, message expiry |
//! | `tad/v1/gw/<gw>/commands/<dash>` | [`Command`], signed (JWS) | dashboard `dash` → gateway | 1 |
//! | `tad/v1/gw/<gw>/state` | [`GatewayState`] | gateway → dashboard | 1, retained |
//! | `tad/v1/gw/<gw>/state/delta` | [`GatewayStateDelta`] | gateway → dashboard | 1 |
//! | `tad/v1/det/<det>/alerts` | [`Alert`] | detector → dashboard | 1 |
//! | `tad/v1/det/<det>/trust` | [`TrustUpdate`] | detector → dashboard | 0 |
//! | `tad/v1/det/<det>/status` | [`NodeStatus`] | detector → all; Last Will | 1, retained |
//! | `tad/v1/dash/<id>/status` | [`NodeStatus`] | dashboard → all; Last Will | 1, retained |
//! | `tad/v1/det/<det>/settings/schema` | [`SettingsSchema`] | detector → dashboard | 1, retained |
//! | `tad/v1/det/<det>/settings/acks` | [`SettingsAck`] | detector → dashboard | 1 |
//! | `tad/v1/settings/thresholds` | [`ThresholdSettings`] | dashboard → detectors | 1, retained |
//! | `tad/v1/gw/<gw>/devices/...`, `tad/v1/dev/<device>/...` | see [`devices`] | gateway ↔ devices, dashboard | 1 |
//!
//! The last level of a verdict or command topic is the publisher's certificate
//! identity: the broker lets a client publish only under its own id, and the
//! payload is a JWS signed with the key of that same certificate, so the gateway
//! can check the identity twice (topic, signature) and neither the payload's own
//! `detector_id` nor the broker alone is believed.
//!
//! Flow partitions: a gateway publishes each flow record to partition
//! `partition_of(initiator address, n)` ([`partition_of`]), so all flows of one
//! source reach the same detector instance and its per-source state is never split.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fw_common::counters::CounterSlot;
pub use fw_common::filter::BlockReason;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Schema version of every payload in this module.
pub const SCHEMA_VERSION: u16 = 1;
/// MQTT v5 content type of every payload.
pub const CONTENT_TYPE: &str = "application/json";
/// Prefix of every topic.
pub const TOPIC_ROOT: &str = "tad/v1";

pub mod ids;
pub mod topic;

pub use evidence::{EpochEvidence, EvidenceBatch, EvidenceEvent, EvidenceEventKind, EvidenceRole};
pub use ids::{IdError, NodeId, Target, WidthPolicy};
pub use settings::{SettingKey, SettingKind, SettingsAck, SettingsOutcome, SettingsSchema};
pub use state::{
    AllowEntry, BlockOrigin, EnforcedBlock, GatewayState, GatewayStateDelta, LimitsView,
    RefusalCounts, RefusalReason, RemovalCause, RemovedBlock,
};

/// MQTT v5 content type of a signed payload: a JWS in compact serialisation
/// (RFC 7515 §9.2.1), ES256 over the JSON of a [`Verdict`] or [`Command`], with
/// the signer's certificate in the `x5c` header (see `tad_bus::signing`).
pub const SIGNED_CONTENT_TYPE: &str = "application/jose";

/// Unix time now, ms: the clock of every `*_ms` timestamp in these payloads
/// (`issued_at_ms`, `at_ms`). 0 if the system clock is before 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Errors decoding a payload.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("payload is not valid JSON for {kind}: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} has schema version {got}, this node speaks {SCHEMA_VERSION}")]
    Version { kind: &'static str, got: u16 },
    #[error("{kind} is invalid: {what}")]
    Invalid { kind: &'static str, what: String },
}

/// A versioned payload.
pub trait Message: Serialize + DeserializeOwned {
    /// Name used in errors and logs.
    const KIND: &'static str;
    /// The payload's schema version.
    fn version(&self) -> u16;
    /// Field checks beyond the schema (ranges, non-empty ids).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Serialises a message to its JSON payload.
pub fn encode<M: Message>(m: &M) -> Vec<u8> {
    serde_json::to_vec(m).expect("wire types serialise infallibly")
}

/// Parses and checks a payload: JSON, schema version, then [`Message::validate`].
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, WireError> {
    let m: M = serde_json::from_slice(payload).map_err(|source| WireError::Json {
        kind: M::KIND,
        source,
    })?;
    if m.version() != SCHEMA_VERSION {
        return Err(WireError::Version {
            kind: M::KIND,
            got: m.version(),
        });
    }
    m.validate().map_err(|what| WireError::Invalid {
        kind: M::KIND,
        what,
    })?;
    Ok(m)
}

macro_rules! message {
    ($t:ty, $kind:literal) => {
        impl Message for $t {
            const KIND: &'static str = $kind;
            fn version(&self) -> u16 {
                self.v
            }
        }
    };
    ($t:ty, $kind:literal, validate) => {
        impl Message for $t {
            const KIND: &'static str = $kind;
            fn version(&self) -> u16 {
                self.v
            }
            fn validate(&self) -> Result<(), String> {
                <$t>::check(self)
            }
        }
    };
}

pub mod devices;
pub mod evidence;
pub mod settings;
pub mod state;

/// Partition of a source address among `n` partitions (FNV-1a over the address
/// bytes, IPv4 as 4 bytes). Stable across versions and architectures.
pub fn partition_of(addr: IpAddr, n: u16) -> u16 {
    let n = n.max(1);
    let mut h: u32 = 0x811c_9dc5;
    let bytes: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % n as u32) as u16
}

/// Why a flow record was exported (IPFIX flowEndReason, RFC 7012 IE 136).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// No packet for the idle timeout (IE 136 value 1).
    IdleTimeout,
    /// Flow outlived the active timeout; it goes on and is exported again (value 2).
    ActiveTimeout,
    /// TCP FIN or RST seen (value 3).
    EndOfFlow,
    /// Exporter shutting down (value 4, forced end).
    ForcedEnd,
}

/// Counters of one direction of a flow, as exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DirCounters {
    pub packets: u64,
    /// Sum of IP packet lengths, bytes.
    pub bytes: u64,
    pub syn: u32,
    pub syn_ack: u32,
    pub fin: u32,
    pub rst: u32,
    pub psh: u32,
    pub ack_only: u32,
    pub urg: u32,
    pub no_flags: u32,
    /// Smallest/largest IP packet length, bytes (0 when no packet).
    pub min_len: u16,
    pub max_len: u16,
    /// OR of all TCP flag bytes.
    pub tcp_flags_or: u8,
    /// Last ICMP (type, code) seen in this direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(u8, u8)>,
}

/// One exported flow, oriented from the initiator (the side that sent the first
/// packet) to the responder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Initiator address.
    pub src: IpAddr,
    /// Responder address.
    pub dst: IpAddr,
    /// Initiator port (0 for ICMP and non-first fragments).
    pub sport: u16,
    /// Responder port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// VLAN id, 0 when untagged.
    pub vlan: u16,
    /// First packet, Unix time, ms.
    pub start_ms: u64,
    /// Flow duration, first to last packet, µs.
    pub duration_us: u64,
    /// Initiator → responder.
    pub fwd: DirCounters,
    /// Responder → initiator.
    pub bwd: DirCounters,
    /// Mean gap between consecutive packets (both directions), µs; 0 with < 2 packets.
    pub iat_mean_us: f64,
    /// Standard deviation of those gaps, µs (see `fw_common::flow` for the scheme).
    pub iat_std_us: f64,
    pub end_reason: EndReason,
}

impl FlowRecord {
    /// Total packets, both directions.
    pub fn packets(&self) -> u64 {
        self.fwd.packets + self.bwd.packets
    }
}

/// A batch of flow records from one gateway, published to one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowBatch {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Sequence number of this batch from this gateway, starting at 0 and
    /// incremented per batch (gaps mean batches were dropped).
    pub seq: u64,
    pub partition: u16,
    /// Unix time of publication, ms.
    pub sent_at_ms: u64,
    /// Records dropped from the full outgoing queue since the previous batch.
    #[serde(default)]
    pub dropped_records: u64,
    pub records: Vec<FlowRecord>,
}
message!(FlowBatch, "flow batch");

/// One slot of the XDP verdict counters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterEntry {
    pub verdict: fw_common::counters::Verdict,
    pub reason: fw_common::counters::Reason,
    /// Packets since the program was loaded.
    pub packets: u64,
    /// Frame bytes since the program was loaded.
    pub bytes: u64,
    /// Packets per second over the last interval.
    pub pps: f64,
}

impl CounterEntry {
    /// The entry for a counter slot.
    pub fn new(slot: CounterSlot, packets: u64, bytes: u64, pps: f64) -> Self {
        Self {
            verdict: slot.verdict(),
            reason: slot.reason(),
            packets,
            bytes,
            pps,
        }
    }
}

/// Fill level of one BPF map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
}

/// The gateway's counters, published every second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountersSnapshot {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Unix time, ms.
    pub at_ms: u64,
    pub mode: Mode,
    pub counters: Vec<CounterEntry>,
    pub maps: Vec<MapFill>,
    /// Flow records exported since the previous snapshot.
    pub flows_exported: u64,
    /// Flow records dropped from the full outgoing queue since start.
    pub records_dropped_total: u64,
}
message!(CountersSnapshot, "counters snapshot");

/// Observe (IDS) or enforce (IPS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Observe,
    Enforce,
}

/// Which kind of node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Gateway,
    Detector,
    Dashboard,
}

/// One attached interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// `native` or `skb`.
    pub xdp_mode: String,
}

/// Retained online/offline status of a node; its Last Will is the same message
/// with `online: false`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub v: u16,
    pub node_id: NodeId,
    pub role: Role,
    pub online: bool,
    /// Unix time, ms (for a Last Will: when it was registered).
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapFill>,
    /// Software version.
    pub version: String,
    /// Flow/evidence partition count: a gateway's `[export] partitions` (it
    /// publishes to `flows/<p>` and `evidence/<p>` for `p < n`), a detector's
    /// `[partitions] count`. Detectors check a gateway's against their own
    /// (`detector::fleet::check_count`); absent from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u16>,
    /// A detector: the partitions it handles now, ascending (all of `0..n`
    /// unless it takes a static set or shares them with other live detectors);
    /// republished when they change. Empty for other roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<u16>,
}
message!(NodeStatus, "node status");

/// What a verdict or command asks the gateway to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Block the prefix (TTL optional: none = permanent).
    Block,
    /// Block with a TTL (required), the detector's response to a critical device.
    Quarantine,
    /// Remove a block.
    Unblock,
    /// Switch SYN authentication on for the target host's TCP services
    /// (`fw_common::synauth`): the answer to a spoofed SYN flood against it, which
    /// blocks no source. `port` narrows it to one service; TTL required.
    ProtectSyn,
    /// Switch it off again (the flood ended).
    UnprotectSyn,
}

impl Action {
    /// Whether the action is about SYN authentication of a victim, not a source.
    pub fn is_syn_auth(self) -> bool {
        matches!(self, Action::ProtectSyn | Action::UnprotectSyn)
    }
}

/// Alert categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    PortScan,
    SynFlood,
    TrafficSpike,
    BruteForce,
    UnauthorizedAccess,
    Anomaly,
    ThreatFeed,
    /// One source probing many hosts (a horizontal scan: one port on many hosts,
    /// an ICMP echo or TCP SYN ping sweep): one alert for the whole sweep, its
    /// `explanation.observed["targets"]` the number of hosts, no `target`.
    HostSweep,
    /// A reflection/amplification flood on its `target`, the victim: answers from
    /// service ports (DNS, NTP, SSDP, SNMP, ISAKMP, BACnet, memcached, CoAP...) or
    /// SYN-ACKs it never asked for, from many reflectors. No `source`: the
    /// reflectors are innocent and never blocked.
    Reflection,
    /// A device (the `target`) used as a reflector or amplifier: it answers many
    /// requests from outside (whose source is a spoofed victim) with larger
    /// responses. Never blocks.
    Amplifier,
}

impl AlertKind {
    /// The block reason code a verdict for this kind of alert carries.
    pub fn block_reason(self) -> BlockReason {
        match self {
            AlertKind::PortScan => BlockReason::PortScan,
            AlertKind::SynFlood => BlockReason::SynFlood,
            AlertKind::TrafficSpike => BlockReason::TrafficSpike,
            AlertKind::BruteForce => BlockReason::BruteForce,
            AlertKind::UnauthorizedAccess => BlockReason::UnauthorizedAccess,
            AlertKind::Anomaly => BlockReason::Anomaly,
            AlertKind::ThreatFeed => BlockReason::ThreatFeed,
            // A sweep is reconnaissance, as a port scan is.
            AlertKind::HostSweep => BlockReason::PortScan,
            // Never block (victim-side and abused-device reports); a flood it is.
            AlertKind::Reflection | AlertKind::Amplifier => BlockReason::TrafficSpike,
        }
    }
}

/// Longest TTL a verdict or command may carry, seconds (30 days).
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// A detector's decision about a source, sent to the gateway that saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub v: u16,
    /// Unique id (the ack refers to it).
    pub id: String,
    pub detector_id: NodeId,
    /// Unix time of issue, ms.
    pub issued_at_ms: u64,
    pub action: Action,
    /// Source prefix to act on.
    pub target: Target,
    /// Block lifetime, seconds; required for quarantine, at most [`MAX_TTL_S`].
    #[serde(default)]
    pub ttl_s: Option<u64>,
    pub reason: BlockReason,
    /// Rule that fired (e.g. `portscan.vertical`).
    pub rule: String,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// Alert this verdict answers.
    #[serde(default)]
    pub alert_id: Option<String>,
    /// True when the detector runs in observe mode: the gateway records and acks it
    /// but does not change its block map.
    #[serde(default)]
    pub observe_only: bool,
    /// [`Action::ProtectSyn`] / [`Action::UnprotectSyn`] only: the one TCP port
    /// to protect; `None` = every TCP port of the target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}
message!(Verdict, "verdict", validate);
impl Verdict {
    fn check(&self) -> Result<(), String> {
        check_id("id", &self.id)?;
        check_ttl(self.action, self.ttl_s)?;
        check_service(self.action, &self.target, self.port)?;
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(format!("confidence {} is outside [0, 1]", self.confidence));
        }
        Ok(())
    }
}

/// An operator's command from the dashboard to a gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub v: u16,
    pub id: String,
    /// Who issued it (dashboard user or API token name).
    pub operator: String,
    pub issued_at_ms: u64,
    pub action: Action,
    pub target: Target,
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// As [`Verdict::port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}
message!(Command, "command", validate);
impl Command {
    fn check(&self) -> Result<(), String> {
        check_id("id", &self.id)?;
        check_id("operator", &self.operator)?;
        check_ttl(self.action, self.ttl_s)?;
        check_service(self.action, &self.target, self.port)
    }
}

/// SYN authentication protects one host (all its TCP ports, or `port`, 1-65535);
/// a port means nothing for the other actions.
fn check_service(action: Action, target: &Target, port: Option<u16>) -> Result<(), String> {
    if action.is_syn_auth() {
        if !target.is_host() {
            return Err(format!(
                "{action:?} protects one host, not the prefix {target}"
            ));
        }
        if port == Some(0) {
            return Err("port must be 1-65535 (none = every TCP port)".into());
        }
    } else if port.is_some() {
        return Err(format!(
            "port is only for SYN authentication, not {action:?}"
        ));
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
        return Err(format!("{field} must be 1-128 printable characters"));
    }
    Ok(())
}

fn check_ttl(action: Action, ttl_s: Option<u64>) -> Result<(), String> {
    match (action, ttl_s) {
        (Action::Quarantine, None) => Err("quarantine needs ttl_s".into()),
        (Action::ProtectSyn, None) => Err("protect_syn needs ttl_s".into()),
        (_, Some(0)) => Err("ttl_s must be at least 1 s".into()),
        (_, Some(t)) if t > MAX_TTL_S => Err(format!("ttl_s {t} exceeds {MAX_TTL_S} s")),
        _ => Ok(()),
    }
}

/// Outcome of a verdict or command at the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The block map was changed.
    Applied,
    /// Valid, but nothing to change (already blocked with a later expiry, not blocked).
    NoChange,
    /// Recorded only: observe mode.
    Observed,
    /// Refused; `error` says why (allowlisted target, bad TTL, unknown sender...).
    Rejected,
}

/// A gateway's answer to a verdict or command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u16,
    /// Id of the verdict or command.
    pub id: String,
    pub gateway_id: NodeId,
    pub outcome: Outcome,
    #[serde(default)]
    pub error: Option<String>,
    /// Unix time the map was updated (or the refusal decided), ms.
    pub at_ms: u64,
    /// Time from receipt to map update, µs.
    pub apply_us: u64,
}
message!(Ack, "ack");

/// Why an alert fired: the rule, what was measured against which threshold, over
/// which window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Rule id, e.g. `portscan.vertical`.
    pub rule: String,
    /// Sliding window the numbers were counted in, seconds.
    pub window_s: f64,
    /// Measured values by name (e.g. `distinct_ports: 22`).
    pub observed: BTreeMap<String, f64>,
    /// Thresholds by the same names.
    pub thresholds: BTreeMap<String, f64>,
    /// One sentence for people.
    pub text: String,
}

/// A flow that contributed to an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRef {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub start_ms: u64,
}

/// Severity of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// A detection: one attack (a source and kind, or a victim and kind), however
/// many times its rules fire while it goes on.
///
/// Merging: while the attack goes on the detector publishes the alert again
/// under the same `id`, with a larger `count`, a later `at_ms` and the latest
/// explanation (an update, at most about once a second and less often as it
/// lasts); a receiver keeps the version with the largest (`count`, `at_ms`) and
/// treats an identical one as a redelivery. Both fields are optional on the wire
/// (an alert without them is a single detection), so receivers and detectors of
/// either age understand each other within schema version 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub v: u16,
    pub id: String,
    pub detector_id: NodeId,
    /// Gateway whose flows raised it.
    pub gateway_id: NodeId,
    /// When it was last seen (this version's latest detection), Unix ms.
    pub at_ms: u64,
    /// When the attack was first seen, Unix ms; none for a single detection
    /// (then `at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_ms: Option<u64>,
    /// Detections merged into this alert, at least 1.
    #[serde(default = "one")]
    pub count: u32,
    pub kind: AlertKind,
    pub severity: Severity,
    /// Offending source, when there is one to name (none for a spoofed flood).
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Victim, when there is one.
    #[serde(default)]
    pub target: Option<IpAddr>,
    pub explanation: Explanation,
    /// Up to 20 of the flows involved.
    #[serde(default)]
    pub flows: Vec<FlowRef>,
    /// Id of the verdict issued for it, if any.
    #[serde(default)]
    pub verdict_id: Option<String>,
}
message!(Alert, "alert", validate);

fn one() -> u32 {
    1
}

impl Alert {
    fn check(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("count is 0 (an alert is at least one detection)".into());
        }
        if let Some(f) = self.first_seen_ms
            && f > self.at_ms
        {
            return Err(format!("first_seen_ms {f} is after at_ms {}", self.at_ms));
        }
        Ok(())
    }

    /// When the attack was first seen, Unix ms (`first_seen_ms`, else `at_ms`).
    pub fn first_seen(&self) -> u64 {
        self.first_seen_ms.unwrap_or(self.at_ms).min(self.at_ms)
    }
}

/// Trust level bands: normal >= 75, warning >= 50, alert >= 20, critical < 20.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    Critical,
    Alert,
    Warning,
    Normal,
}

impl TrustLevel {
    /// The band of a score in [0, 100].
    pub fn of(score: f64) -> TrustLevel {
        if score >= 75.0 {
            TrustLevel::Normal
        } else if score >= 50.0 {
            TrustLevel::Warning
        } else if score >= 20.0 {
            TrustLevel::Alert
        } else {
            TrustLevel::Critical
        }
    }
}

/// A device's trust score changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustUpdate {
    pub v: u16,
    pub detector_id: NodeId,
    pub at_ms: u64,
    pub device: IpAddr,
    /// Weighted score, 0-100.
    pub score: f64,
    pub level: TrustLevel,
    /// Component scores, 0-100 each.
    pub behavioural: f64,
    pub vulnerability: f64,
    pub reputation: f64,
    /// Why it changed.
    pub reason: String,
}
message!(TrustUpdate, "trust update");

/// Detector thresholds set by an operator; keys are the detector's config paths
/// (e.g. `portscan.vertical_ports`). The detector rejects unknown keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSettings {
    pub v: u16,
    pub id: String,
    pub operator: String,
    pub issued_at_ms: u64,
    pub values: BTreeMap<String, f64>,
}
message!(ThresholdSettings, "threshold settings");

/// Converts an address from the map encoding (IPv4-mapped for `family == 4`).
pub fn addr_from_map(addr: [u8; 16], family: u8) -> IpAddr {
    if family == fw_common::flow::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(addr[12], addr[13], addr[14], addr[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    }
}

/// Converts an address to the map encoding: (bytes, family).
pub fn addr_to_map(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => (
            fw_common::flow::v4_mapped(a.octets()),
            fw_common::flow::FAMILY_V4,
        ),
        IpAddr::V6(a) => (a.octets(), fw_common::flow::FAMILY_V6),
    }
}

#[cfg(test)]
mod tests;
