//! What a gateway publishes about its IoT devices (issue 17), for the detector and
//! the dashboard, and the device command requests it vets.
//!
//! The devices themselves speak on `tad/v1/dev/<device>/...` (the `tad-devices`
//! crate defines the signed telemetry envelope); the gateway's telemetry guard
//! checks every message there and publishes, under its own id:
//!
//! | topic | payload | from → to | QoS, retain |
//! |---|---|---|---|
//! | `tad/v1/gw/<gw>/devices/telemetry` | [`DeviceTelemetryBatch`] | gateway → detectors, dashboard | 1 |
//! | `tad/v1/gw/<gw>/devices/refusals` | [`DeviceRefusals`] | gateway → dashboard | 1 |
//! | `tad/v1/gw/<gw>/devices/trust` | [`DeviceTrustChanges`] | gateway → dashboard (audit log) | 1 |
//! | `tad/v1/gw/<gw>/devices/decisions` | [`DeviceCommandDecision`] | gateway → dashboard (audit log) | 1 |
//! | `tad/v1/gw/<gw>/devices/vulns` | [`DeviceVulnReport`] | gateway → dashboard | 1 |
//! | `tad/v1/gw/<gw>/devices/state` | [`DeviceStates`] | gateway → dashboard | 1, retained |
//! | `tad/v1/gw/<gw>/devices/requests/<dash>` | [`DeviceCommandRequest`], signed (JWS) | dashboard `dash` → gateway | 1 |
//! | `tad/v1/dev/<device>/telemetry` | signed telemetry envelope (`tad_devices::telemetry`) | device → gateway | 1 |
//! | `tad/v1/dev/<device>/commands` | [`DeviceCommandMessage`], forwarded after vetting | gateway → device | 1 |
//!
//! A device id ([`check_device_id`]) is 1 to 64 bytes of lowercase ASCII letters,
//! digits, `-`, `_`, `.`, starting with a letter or digit: the same rule as
//! `tad_devices::DeviceId`, so it is one topic level and a certificate CN.
//! Every payload carries `v` ([`crate::SCHEMA_VERSION`]) and is decoded with
//! [`crate::decode`], which also runs the field checks below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Message, NodeId};

/// Longest device id, bytes (as `tad_devices::ids::DEVICE_ID_MAX`).
pub const DEVICE_ID_MAX: usize = 64;

/// Checks a device id (module docs); the error names the id and what is wrong.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("device id is empty".into());
    }
    if id.len() > DEVICE_ID_MAX {
        return Err(format!(
            "device id {id:?} is longer than {DEVICE_ID_MAX} bytes"
        ));
    }
    for (i, ch) in id.chars().enumerate() {
        let ok = ch.is_ascii_lowercase()
            || ch.is_ascii_digit()
            || (i > 0 && matches!(ch, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "device id {id:?}: character {ch:?} not allowed (a-z, 0-9, '-', '_', '.'; starting with a letter or digit)"
            ));
        }
    }
    Ok(())
}

fn check_score(what: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && (0.0..=100.0).contains(&x) {
        Ok(())
    } else {
        Err(format!("{what} {x} is not within 0..=100"))
    }
}

/// One telemetry reading as the device signed it (seed 004's shape; the fields
/// of `tad_devices::Telemetry`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReading {
    /// The device's payload version.
    pub v: u16,
    pub device_id: String,
    /// Per-device counter, strictly increasing at the sender.
    pub sequence_no: u64,
    /// When the device took the reading, Unix ms (device clock).
    pub timestamp: u64,
    /// Percent, 0 to 100.
    pub cpu_usage: f64,
    /// Percent, 0 to 100.
    pub battery_level: f64,
    /// Sensor name → reading (units as enrolled).
    pub sensors: BTreeMap<String, f64>,
}

/// The score of the device's Isolation Forest for one reading.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceAnomalyScore {
    /// In (0, 1]; higher is more anomalous (Liu, Ting, Zhou 2008).
    pub score: f64,
    /// Flagged when `score >= threshold`.
    pub threshold: f64,
}

/// One accepted message of a forwarded batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// When the gateway's guard received it, Unix ms.
    pub arrival_ms: u64,
    /// The signed payload bytes as the device sent them, base64url without padding
    /// (RFC 4648 §5): with `sig` anyone can re-verify the device's signature.
    pub payload: String,
    /// The device's Ed25519 signature (RFC 8032) over those bytes, base64url.
    pub sig: String,
    /// The payload, decoded.
    pub telemetry: DeviceReading,
    /// Present once the device's model is trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<DeviceAnomalyScore>,
}

/// A batch of validated telemetry (`tad_devices::TelemetryBatch` plus the
/// gateway's id), on `tad/v1/gw/<gw>/devices/telemetry`.
///
/// `sha256` is lowercase hex of SHA-256 (FIPS 180-4) over
/// `"tad/v1/telemetry-batch\0" || batch_no (u64 BE) || opened_ms (u64 BE) ||` for
/// each record `len(payload) (u32 BE) || payload bytes || signature (64 bytes)`
/// (`tad_devices::batch`); the same hash is committed to the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceTelemetryBatch {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Counts up from 1 within one gateway run (gaps: batches dropped from the
    /// full outbox, counted in `dropped_batches`).
    pub batch_no: u64,
    /// Arrival time of the first record, Unix ms.
    pub opened_ms: u64,
    /// When the batch closed, Unix ms.
    pub closed_ms: u64,
    /// When it was published, Unix ms (later than `closed_ms` when it waited in the
    /// outbox for the broker).
    pub sent_at_ms: u64,
    /// 64 lowercase hex digits (see the type docs).
    pub sha256: String,
    /// Batches dropped from the full outbox since gateway start (oldest first).
    #[serde(default)]
    pub dropped_batches: u64,
    /// Records in those batches.
    #[serde(default)]
    pub dropped_records: u64,
    pub records: Vec<DeviceRecord>,
}
message!(DeviceTelemetryBatch, "device telemetry batch", validate);

impl DeviceTelemetryBatch {
    fn check(&self) -> Result<(), String> {
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            ));
        }
        for r in &self.records {
            check_device_id(&r.telemetry.device_id)?;
        }
        Ok(())
    }
}

/// Why the guard refused a telemetry message (`tad_devices::RefusalReason`, same
/// snake_case names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRefusalReason {
    /// Not a device topic, not the envelope, not the payload schema, too large.
    Malformed,
    /// The topic's device is not enrolled.
    Unenrolled,
    /// Over the device's enrolled rate.
    RateLimited,
    /// The Ed25519 signature does not verify with the enrolled key.
    BadSignature,
    /// The signed payload names another device than its topic.
    IdMismatch,
    /// Timestamp further than the allowed skew from the arrival time.
    Skew,
    /// Sequence number already accepted.
    Replay,
    /// Sequence number below the replay window.
    Stale,
    /// A value outside its range, or an enrolled sensor missing.
    OutOfRange,
    /// A sensor the enrollment does not list.
    UnexpectedSensor,
    /// The replay state could not be written.
    Unavailable,
}

impl DeviceRefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [DeviceRefusalReason; 11] = [
        DeviceRefusalReason::Malformed,
        DeviceRefusalReason::Unenrolled,
        DeviceRefusalReason::RateLimited,
        DeviceRefusalReason::BadSignature,
        DeviceRefusalReason::IdMismatch,
        DeviceRefusalReason::Skew,
        DeviceRefusalReason::Replay,
        DeviceRefusalReason::Stale,
        DeviceRefusalReason::OutOfRange,
        DeviceRefusalReason::UnexpectedSensor,
        DeviceRefusalReason::Unavailable,
    ];

    /// The snake_case name (metrics label, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRefusalReason::Malformed => "malformed",
            DeviceRefusalReason::Unenrolled => "unenrolled",
            DeviceRefusalReason::RateLimited => "rate_limited",
            DeviceRefusalReason::BadSignature => "bad_signature",
            DeviceRefusalReason::IdMismatch => "id_mismatch",
            DeviceRefusalReason::Skew => "skew",
            DeviceRefusalReason::Replay => "replay",
            DeviceRefusalReason::Stale => "stale",
            DeviceRefusalReason::OutOfRange => "out_of_range",
            DeviceRefusalReason::UnexpectedSensor => "unexpected_sensor",
            DeviceRefusalReason::Unavailable => "unavailable",
        }
    }

    /// The reason named `s` (its snake_case name).
    pub fn from_name(s: &str) -> Option<DeviceRefusalReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One refused telemetry message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRefusal {
    /// The device the topic names (as received when not a valid id, the whole topic
    /// when it is not a device topic): not validated, it may be an attacker's string.
    pub device_id: String,
    /// Whether that device is enrolled.
    pub enrolled: bool,
    pub reason: DeviceRefusalReason,
    /// Refusals of this device for this reason since gateway start, this one included.
    pub count: u64,
    /// Arrival time of the refused message, Unix ms.
    pub at_ms: u64,
    /// Its sequence number, when the guard got far enough to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_no: Option<u64>,
    /// What exactly was wrong, for people.
    pub detail: String,
}

/// The refusals of one interval (the gateway's device tick), on
/// `tad/v1/gw/<gw>/devices/refusals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRefusals {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Unix ms.
    pub sent_at_ms: u64,
    /// At most a bounded number per message; the rest are only counted in
    /// `suppressed` and `totals`.
    pub refusals: Vec<DeviceRefusal>,
    /// Refusals in this interval not listed in `refusals`.
    #[serde(default)]
    pub suppressed: u64,
    /// All refusals since gateway start, by reason (every reason, zeros included).
    pub totals: BTreeMap<DeviceRefusalReason, u64>,
}
message!(DeviceRefusals, "device refusals");

/// Trust levels (seed 003: normal ≥ 75, warning ≥ 50, alert ≥ 20, critical < 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTrustLevel {
    Critical,
    Alert,
    Warning,
    Normal,
}

/// The three trust components, each 0..100 (`tad_devices::trust`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceTrustComponents {
    pub behaviour: f64,
    pub vulnerability: f64,
    pub reputation: f64,
}

/// Why a device's trust changed (`tad_devices::trust::TrustCause`, same JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceTrustCause {
    /// A refused message that is strong evidence (guard reason name).
    SecurityAlert { reason: String, detail: String },
    /// A refused message that is weak evidence.
    WeakAlert { reason: String, detail: String },
    /// An accepted reading scored anomalous.
    Anomaly { score: f64, threshold: f64 },
    /// A valid message in a forwarded batch.
    Heartbeat { sequence_no: u64 },
    /// A new vulnerability score from the active scan (findings as
    /// `"<port>/<service>: <why>"`).
    Vulnerability { score: f64, findings: Vec<String> },
    /// A command refused by vetting (reserved for command-based evidence).
    CommandRefused { reason: String },
}

/// One trust change, an entry for the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceTrustChange {
    pub device_id: String,
    /// When the evidence arrived, Unix ms.
    pub at_ms: u64,
    pub cause: DeviceTrustCause,
    /// Trust before and after, 0..100.
    pub old: f64,
    pub new: f64,
    pub old_level: DeviceTrustLevel,
    pub new_level: DeviceTrustLevel,
    /// Components after the change.
    pub components: DeviceTrustComponents,
    /// SHA-256 of the forwarded batch this change is about (heartbeats), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_sha256: Option<String>,
}

/// Trust changes of one interval, on `tad/v1/gw/<gw>/devices/trust`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceTrustChanges {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Unix ms.
    pub sent_at_ms: u64,
    pub changes: Vec<DeviceTrustChange>,
}
message!(DeviceTrustChanges, "device trust changes", validate);

impl DeviceTrustChanges {
    fn check(&self) -> Result<(), String> {
        for c in &self.changes {
            check_device_id(&c.device_id)?;
            check_score("old trust", c.old)?;
            check_score("new trust", c.new)?;
        }
        Ok(())
    }
}

/// A device control command (`tad_devices::DeviceCommand`, same JSON), also the
/// payload forwarded to `tad/v1/dev/<device>/commands` after vetting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceCommandSpec {
    /// Set configuration key `key` (1 to 32 of a-z, 0-9, `_`) to `value`.
    Set { key: String, value: f64 },
    /// Restart the device.
    Reboot {},
    /// Install the image at `url` (https) whose SHA-256 is `sha256` (64 hex digits).
    Firmware { url: String, sha256: String },
}

impl DeviceCommandSpec {
    /// `set`, `reboot` or `firmware`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceCommandSpec::Set { .. } => "set",
            DeviceCommandSpec::Reboot {} => "reboot",
            DeviceCommandSpec::Firmware { .. } => "firmware",
        }
    }
}

/// An operator's request to send a command to a device, on
/// `tad/v1/gw/<gw>/devices/requests/<dash>`, signed like a `Command` (a JWS,
/// ES256, with the dashboard certificate in `x5c`; `tad_bus::signing`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceCommandRequest {
    pub v: u16,
    /// Unique id (e.g. a UUID), echoed in the decision.
    pub id: String,
    pub device_id: String,
    pub command: DeviceCommandSpec,
    /// Who asked (operator name), for the audit log.
    pub issued_by: String,
    /// Unix ms.
    pub issued_at_ms: u64,
}
message!(DeviceCommandRequest, "device command request", validate);

impl DeviceCommandRequest {
    fn check(&self) -> Result<(), String> {
        check_device_id(&self.device_id)?;
        if self.id.is_empty() || self.id.len() > 128 {
            return Err(format!("request id {:?} must be 1 to 128 bytes", self.id));
        }
        Ok(())
    }
}

/// A vetted command as the gateway forwards it to the device, on
/// `tad/v1/dev/<device>/commands` (only the gateway may write there; the device
/// reads only its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceCommandMessage {
    pub v: u16,
    /// The request's id.
    pub id: String,
    pub command: DeviceCommandSpec,
    /// When the gateway allowed it, Unix ms.
    pub at_ms: u64,
}
message!(DeviceCommandMessage, "device command");

/// Allowed (forwarded to the device) or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandDecision {
    Allowed,
    Refused,
}

/// The gateway's decision on one device command, on
/// `tad/v1/gw/<gw>/devices/decisions` (an audit entry; a refusal is also an alert).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceCommandDecision {
    pub v: u16,
    pub gateway_id: NodeId,
    /// The request's id (empty for a command that came without one).
    pub request_id: String,
    pub device_id: String,
    /// `set`, `reboot` or `firmware`.
    pub command: String,
    /// The command's arguments as requested.
    pub spec: DeviceCommandSpec,
    pub decision: CommandDecision,
    /// For a refusal: `bad_argument`, `low_trust`, `burst`, `novel_kind`,
    /// `unapproved_firmware` (`tad_devices::CommandRefusal::reason`), `unenrolled`,
    /// `bad_signature`, `not_trusted` (the requester).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What exactly was wrong, for people (empty when allowed).
    #[serde(default)]
    pub detail: String,
    /// The device's trust when it was vetted, 0..100.
    pub trust: f64,
    /// Requester (the dashboard id from the topic, and the operator).
    pub requested_by: String,
    /// Unix ms.
    pub at_ms: u64,
}
message!(DeviceCommandDecision, "device command decision", validate);

impl DeviceCommandDecision {
    fn check(&self) -> Result<(), String> {
        check_score("trust", self.trust)?;
        match (self.decision, &self.reason) {
            (CommandDecision::Refused, None) => Err("a refusal needs a reason".into()),
            (CommandDecision::Allowed, Some(r)) => {
                Err(format!("an allowed command has a refusal reason {r:?}"))
            }
            _ => Ok(()),
        }
    }
}

/// How dangerous an open service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// One open service found on a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VulnFinding {
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Service name (nmap's, or the well-known name of the port), e.g. `telnet`.
    pub service: String,
    pub severity: Severity,
    /// Why it is dangerous, for people.
    pub why: String,
}

/// The result of one active scan of a device, on `tad/v1/gw/<gw>/devices/vulns`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceVulnReport {
    pub v: u16,
    pub gateway_id: NodeId,
    pub device_id: String,
    /// The scanned address.
    pub addr: std::net::IpAddr,
    /// When the scan finished, Unix ms.
    pub at_ms: u64,
    /// Every open port seen (dangerous or not).
    pub open_ports: Vec<u16>,
    /// The dangerous ones.
    pub findings: Vec<VulnFinding>,
    /// The vulnerability component fed into trust, 0..100 (100 = nothing dangerous).
    pub score: f64,
    /// `nmap` or `connect` (the Rust TCP connect scanner).
    pub scanner: String,
}
message!(DeviceVulnReport, "device vulnerability report", validate);

impl DeviceVulnReport {
    fn check(&self) -> Result<(), String> {
        check_device_id(&self.device_id)?;
        check_score("vulnerability score", self.score)
    }
}

/// One device as the gateway sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub device_id: String,
    /// 0..100.
    pub trust: f64,
    pub level: DeviceTrustLevel,
    pub components: DeviceTrustComponents,
    /// Telemetry messages accepted / refused since gateway start.
    pub accepted: u64,
    pub refused: u64,
    /// Last accepted message, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Enrolled sensor names.
    #[serde(default)]
    pub sensors: Vec<String>,
}

/// Retained snapshot of every enrolled device, on `tad/v1/gw/<gw>/devices/state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStates {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Unix ms.
    pub at_ms: u64,
    pub devices: Vec<DeviceView>,
    /// Telemetry messages received / accepted since gateway start.
    pub received: u64,
    pub accepted: u64,
    /// Refusals since start, by reason.
    pub refused: BTreeMap<DeviceRefusalReason, u64>,
    /// Outbox: batches waiting for the broker, dropped since start.
    pub outbox_queued: u64,
    pub outbox_dropped_batches: u64,
}
message!(DeviceStates, "device states");

/// What a device topic (either side) carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceTopicKind {
    /// `tad/v1/gw/<gw>/devices/telemetry`.
    Telemetry { gateway: String },
    /// `tad/v1/gw/<gw>/devices/refusals`.
    Refusals { gateway: String },
    /// `tad/v1/gw/<gw>/devices/trust`.
    Trust { gateway: String },
    /// `tad/v1/gw/<gw>/devices/decisions`.
    Decisions { gateway: String },
    /// `tad/v1/gw/<gw>/devices/vulns`.
    Vulns { gateway: String },
    /// `tad/v1/gw/<gw>/devices/state`.
    State { gateway: String },
    /// `tad/v1/gw/<gw>/devices/requests/<dash>`.
    Requests { gateway: String, dashboard: String },
    /// `tad/v1/dev/<device>/telemetry`.
    DeviceTelemetry { device: String },
    /// `tad/v1/dev/<device>/commands`.
    DeviceCommands { device: String },
}

impl DeviceTopicKind {
    /// Parses a concrete topic; `None` outside the device topics (or with an empty
    /// or invalid id level).
    pub fn parse(topic: &str) -> Option<DeviceTopicKind> {
        let rest = topic.strip_prefix(crate::TOPIC_ROOT)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let dev = |s: &str| check_device_id(s).is_ok().then(|| s.to_owned());
        Some(match parts.as_slice() {
            ["gw", g, "devices", "telemetry"] => DeviceTopicKind::Telemetry { gateway: id(g)? },
            ["gw", g, "devices", "refusals"] => DeviceTopicKind::Refusals { gateway: id(g)? },
            ["gw", g, "devices", "trust"] => DeviceTopicKind::Trust { gateway: id(g)? },
            ["gw", g, "devices", "decisions"] => DeviceTopicKind::Decisions { gateway: id(g)? },
            ["gw", g, "devices", "vulns"] => DeviceTopicKind::Vulns { gateway: id(g)? },
            ["gw", g, "devices", "state"] => DeviceTopicKind::State { gateway: id(g)? },
            ["gw", g, "devices", "requests", d] => DeviceTopicKind::Requests {
                gateway: id(g)?,
                dashboard: id(d)?,
            },
            ["dev", d, "telemetry"] => DeviceTopicKind::DeviceTelemetry { device: dev(d)? },
            ["dev", d, "commands"] => DeviceTopicKind::DeviceCommands { device: dev(d)? },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SCHEMA_VERSION, decode, encode, topic};

    fn gw() -> NodeId {
        NodeId::parse("gateway-1").unwrap()
    }

    #[test]
    fn device_topics_parse_back() {
        let g = "gateway-1";
        for (t, k) in [
            (
                topic::devices_telemetry(g),
                DeviceTopicKind::Telemetry { gateway: g.into() },
            ),
            (
                topic::devices_refusals(g),
                DeviceTopicKind::Refusals { gateway: g.into() },
            ),
            (
                topic::devices_trust(g),
                DeviceTopicKind::Trust { gateway: g.into() },
            ),
            (
                topic::devices_decisions(g),
                DeviceTopicKind::Decisions { gateway: g.into() },
            ),
            (
                topic::devices_vulns(g),
                DeviceTopicKind::Vulns { gateway: g.into() },
            ),
            (
                topic::devices_state(g),
                DeviceTopicKind::State { gateway: g.into() },
            ),
            (
                topic::device_requests(g, "dashboard"),
                DeviceTopicKind::Requests {
                    gateway: g.into(),
                    dashboard: "dashboard".into(),
                },
            ),
            (
                topic::device_telemetry("esp32-1"),
                DeviceTopicKind::DeviceTelemetry {
                    device: "esp32-1".into(),
                },
            ),
            (
                topic::device_commands("esp32-1"),
                DeviceTopicKind::DeviceCommands {
                    device: "esp32-1".into(),
                },
            ),
        ] {
            assert_eq!(DeviceTopicKind::parse(&t), Some(k), "{t}");
        }
        assert!(crate::topic::topic_matches(
            &topic::device_requests_filter(g),
            &topic::device_requests(g, "dashboard")
        ));
        assert!(crate::topic::topic_matches(
            topic::DEVICE_TELEMETRY_FILTER,
            &topic::device_telemetry("esp32-1")
        ));
        for bad in [
            "tad/v1/dev/Esp/telemetry",
            "tad/v1/dev//telemetry",
            "tad/v1/gw//devices/trust",
            "tad/v1/gw/g/devices/other",
        ] {
            assert_eq!(DeviceTopicKind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn device_ids_follow_the_devices_crate_rule() {
        for ok in ["esp32-1", "a", "k.t_2"] {
            assert!(check_device_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-x", "a/b", "a+", &"a".repeat(65)] {
            assert!(check_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batch_round_trips_and_refuses_a_bad_hash_or_version() {
        let b = DeviceTelemetryBatch {
            v: SCHEMA_VERSION,
            gateway_id: gw(),
            batch_no: 1,
            opened_ms: 10,
            closed_ms: 20,
            sent_at_ms: 21,
            sha256: "ab".repeat(32),
            dropped_batches: 0,
            dropped_records: 0,
            records: vec![DeviceRecord {
                arrival_ms: 10,
                payload: "e30".into(),
                sig: "AA".into(),
                telemetry: DeviceReading {
                    v: 1,
                    device_id: "esp32-1".into(),
                    sequence_no: 1,
                    timestamp: 9,
                    cpu_usage: 1.0,
                    battery_level: 99.0,
                    sensors: [("temperature".to_string(), 21.0)].into(),
                },
                anomaly: None,
            }],
        };
        assert_eq!(decode::<DeviceTelemetryBatch>(&encode(&b)).unwrap(), b);
        let mut bad = b.clone();
        bad.sha256 = "AB".repeat(32);
        let e = decode::<DeviceTelemetryBatch>(&encode(&bad)).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        let mut bad = b.clone();
        bad.v = 2;
        assert!(decode::<DeviceTelemetryBatch>(&encode(&bad)).is_err());
    }

    #[test]
    fn decision_needs_a_reason_exactly_when_refused() {
        let mut d = DeviceCommandDecision {
            v: SCHEMA_VERSION,
            gateway_id: gw(),
            request_id: "r1".into(),
            device_id: "esp32-1".into(),
            command: "reboot".into(),
            spec: DeviceCommandSpec::Reboot {},
            decision: CommandDecision::Refused,
            reason: Some("low_trust".into()),
            detail: "trust 10.0 is below 50.0".into(),
            trust: 10.0,
            requested_by: "dashboard/alice".into(),
            at_ms: 5,
        };
        assert_eq!(decode::<DeviceCommandDecision>(&encode(&d)).unwrap(), d);
        d.reason = None;
        assert!(decode::<DeviceCommandDecision>(&encode(&d)).is_err());
        d.decision = CommandDecision::Allowed;
        assert!(decode::<DeviceCommandDecision>(&encode(&d)).is_ok());
    }

    #[test]
    fn command_spec_has_the_devices_crate_json() {
        let j = serde_json::to_value(DeviceCommandSpec::Set {
            key: "interval".into(),
            value: 5.0,
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"kind":"set","key":"interval","value":5.0})
        );
        let r: DeviceCommandSpec = serde_json::from_str(r#"{"kind":"reboot"}"#).unwrap();
        assert_eq!(r, DeviceCommandSpec::Reboot {});
        assert!(serde_json::from_str::<DeviceCommandSpec>(r#"{"kind":"reboot","x":1}"#).is_err());
    }

    #[test]
    fn refusal_reason_names_round_trip() {
        for r in DeviceRefusalReason::ALL {
            assert_eq!(DeviceRefusalReason::from_name(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.as_str().into())
            );
        }
    }
}
