//! The telemetry guard (seed 004's base station, seed 002's "command and telemetry
//! validation"): every MQTT publish on `tad/v1/dev/+/telemetry` goes through
//! [`Guard::process`], which accepts it into a batch or refuses it with a
//! [`RefusalReason`], counted, and a [`DeviceAlert`] naming the device.
//!
//! Checks, in order (cheap ones first; the signature before anything that trusts
//! the payload):
//!
//! 1. the topic is a device telemetry topic, the payload at most
//!    `max_payload_bytes` → else `malformed`;
//! 2. the device is enrolled → else `unenrolled`;
//! 3. the device's rate limit (GCRA, ITU-T I.371 virtual scheduling, the same
//!    algorithm as `fw_common::rate`, at the enrolled `rate_per_min` / `burst`, on
//!    arrival time) → else `rate_limited` (before the signature check, so a flood
//!    costs no Ed25519 verifications);
//! 4. the envelope parses (JSON, no unknown fields, version 1, base64url, 64-byte
//!    signature) → else `malformed`;
//! 5. the Ed25519 signature over the payload bytes verifies with the enrolled key
//!    → else `bad_signature`;
//! 6. the payload parses as [`Telemetry`] (no unknown fields, version 1) → else
//!    `malformed`;
//! 7. its `device_id` is the topic's → else `id_mismatch`;
//! 8. `|timestamp − arrival| <= max_skew_ms` → else `skew`;
//! 9. the replay window ([`crate::replay`]): a sequence number already accepted →
//!    `replay`, one below the window → `stale`; an authentic fresh number is marked
//!    seen from here on, whatever the next checks say;
//! 10. `cpu_usage` and `battery_level` within 0..=100 and every enrolled sensor
//!     present within its range → else `out_of_range`; a sensor not enrolled →
//!     `unexpected_sensor`.
//!
//! After a round, the replay windows are written to disk ([`ReplayStore::commit`])
//! before any message of the round is reported accepted; if that write fails the
//! windows are rolled back and the round's would-be-accepted messages are refused
//! as `unavailable` (so `received = accepted + refused` always holds and nothing is
//! accepted that a restart could accept again).
//!
//! The guard is synchronous and owns no I/O except its state file: the gateway
//! daemon feeds it (topic, payload, arrival time) and forwards what it returns.

use std::{collections::HashMap, path::PathBuf};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::{
    batch::BatchRecord,
    ids::DeviceId,
    registry::{Enrollment, Registry},
    replay::{ReplayStore, ReplayStoreError, ReplayVerdict},
    telemetry::{ENVELOPE_VERSION, EnvelopeRef, TELEMETRY_VERSION, Telemetry, device_of_topic},
};

/// Why a telemetry message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not a device topic, not the envelope, not base64url, not the payload schema.
    Malformed,
    /// The topic's device is not in the registry.
    Unenrolled,
    /// Over the device's enrolled rate.
    RateLimited,
    /// The signature does not verify with the enrolled key.
    BadSignature,
    /// Signed payload names another device than its topic.
    IdMismatch,
    /// Timestamp further than `max_skew_ms` from the arrival time.
    Skew,
    /// Sequence number already accepted.
    Replay,
    /// Sequence number below the replay window.
    Stale,
    /// A value outside its allowed range, or an enrolled sensor missing.
    OutOfRange,
    /// A sensor the enrollment does not list.
    UnexpectedSensor,
    /// The replay state could not be written: refused rather than accepted unsafely.
    Unavailable,
}

/// How strongly a refusal says the device is compromised (used by the trust
/// ledger, [`crate::trust`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Authentic-looking misbehaviour or tampering: a security alert.
    Strong,
    /// Could be a fault (clock, reboot, bug, burst).
    Weak,
    /// Says nothing about an enrolled device.
    None,
}

impl RefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusalReason; 11] = [
        RefusalReason::Malformed,
        RefusalReason::Unenrolled,
        RefusalReason::RateLimited,
        RefusalReason::BadSignature,
        RefusalReason::IdMismatch,
        RefusalReason::Skew,
        RefusalReason::Replay,
        RefusalReason::Stale,
        RefusalReason::OutOfRange,
        RefusalReason::UnexpectedSensor,
        RefusalReason::Unavailable,
    ];

    /// The snake_case name (metrics label, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::Unenrolled => "unenrolled",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::BadSignature => "bad_signature",
            RefusalReason::IdMismatch => "id_mismatch",
            RefusalReason::Skew => "skew",
            RefusalReason::Replay => "replay",
            RefusalReason::Stale => "stale",
            RefusalReason::OutOfRange => "out_of_range",
            RefusalReason::UnexpectedSensor => "unexpected_sensor",
            RefusalReason::Unavailable => "unavailable",
        }
    }

    /// The evidence class of this reason.
    pub fn evidence(self) -> Evidence {
        match self {
            RefusalReason::BadSignature
            | RefusalReason::IdMismatch
            | RefusalReason::Replay
            | RefusalReason::OutOfRange
            | RefusalReason::UnexpectedSensor => Evidence::Strong,
            RefusalReason::Malformed
            | RefusalReason::RateLimited
            | RefusalReason::Skew
            | RefusalReason::Stale => Evidence::Weak,
            RefusalReason::Unenrolled | RefusalReason::Unavailable => Evidence::None,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refusals counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; RefusalReason::ALL.len()]);

impl RefusalCounts {
    /// Refusals for `r`.
    pub fn get(&self, r: RefusalReason) -> u64 {
        self.0[r.index()]
    }
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// `(reason, count)` for every reason, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (RefusalReason, u64)> + '_ {
        RefusalReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
    fn add(&mut self, r: RefusalReason) {
        self.0[r.index()] += 1;
    }
}

impl Serialize for RefusalCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(RefusalReason::ALL.len()))?;
        for (r, n) in self.iter() {
            m.serialize_entry(r.as_str(), &n)?;
        }
        m.end()
    }
}

/// The alert raised for one refused message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAlert {
    /// The device the topic names (as received, when it is not a valid id; the
    /// whole topic when it is not a device topic).
    pub device_id: String,
    /// Whether that device is enrolled.
    pub enrolled: bool,
    pub reason: RefusalReason,
    /// Arrival time of the refused message, Unix ms.
    pub at_ms: u64,
    /// The message's sequence number, when it got far enough to be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_no: Option<u64>,
    /// What exactly was wrong, for people.
    pub detail: String,
}

/// Settings of the guard (a `[devices]` table of the gateway config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Largest allowed |timestamp − arrival time|, ms.
    pub max_skew_ms: u64,
    /// Largest envelope accepted, bytes (larger ones are `malformed` before any
    /// parsing).
    pub max_payload_bytes: usize,
    /// The replay state file (JSON, written atomically).
    pub replay_state: PathBuf,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_skew_ms: 30_000,
            max_payload_bytes: 4096,
            replay_state: "/var/lib/tad/devices/replay.json".into(),
        }
    }
}

/// Errors opening the guard.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Replay(#[from] ReplayStoreError),
    #[error("registry: device {id}: {why}")]
    Key { id: DeviceId, why: String },
}

/// One received MQTT publish.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// When it was received, Unix ms.
    pub arrival_ms: u64,
}

/// An accepted message: its batch record plus the decoded payload bytes and
/// signature (for the batch hash, [`crate::batch::Batcher::push`]).
#[derive(Clone, Debug)]
pub struct Accepted {
    pub record: BatchRecord,
    pub payload: Vec<u8>,
    pub sig: [u8; 64],
}

/// What one [`Guard::process`] round produced.
#[derive(Debug, Default)]
pub struct Round {
    /// Accepted messages, in arrival order.
    pub accepted: Vec<Accepted>,
    /// One alert per refused message, in arrival order.
    pub alerts: Vec<DeviceAlert>,
}

struct Device {
    key: VerifyingKey,
    enrollment: Enrollment,
    /// GCRA theoretical arrival time, ns (Unix clock).
    tat_ns: u64,
    interval_ns: u64,
    tolerance_ns: u64,
}

impl Device {
    fn new(e: &Enrollment, key: VerifyingKey) -> Device {
        let interval_ns = if e.rate_per_min == 0 {
            0
        } else {
            60_000_000_000 / e.rate_per_min as u64
        };
        Device {
            key,
            enrollment: e.clone(),
            tat_ns: 0,
            interval_ns,
            tolerance_ns: interval_ns * (e.burst.max(1) as u64 - 1),
        }
    }

    /// GCRA (virtual scheduling): conforming when the bucket's theoretical arrival
    /// time is at most `tolerance` ahead of now; a refused message takes no token.
    fn admit(&mut self, now_ns: u64) -> bool {
        if self.interval_ns == 0 {
            return true;
        }
        let tat = self.tat_ns.max(now_ns);
        if tat - now_ns > self.tolerance_ns {
            return false;
        }
        self.tat_ns = tat + self.interval_ns;
        true
    }
}

/// The telemetry guard (see the module docs).
pub struct Guard {
    cfg: GuardConfig,
    devices: HashMap<DeviceId, Device>,
    replay: ReplayStore,
    counts: RefusalCounts,
    received: u64,
    accepted: u64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("devices", &self.devices.len())
            .field("received", &self.received)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

fn refuse(
    device_id: &str,
    enrolled: bool,
    reason: RefusalReason,
    at_ms: u64,
    seq: Option<u64>,
    detail: String,
) -> DeviceAlert {
    DeviceAlert {
        device_id: device_id.to_owned(),
        enrolled,
        reason,
        at_ms,
        sequence_no: seq,
        detail,
    }
}

impl Guard {
    /// A guard for the devices of `registry`, its replay windows loaded from
    /// `cfg.replay_state` (a missing file is a fresh start; a corrupt one an error).
    pub fn new(registry: &Registry, cfg: GuardConfig) -> Result<Guard, GuardError> {
        let replay = ReplayStore::open(&cfg.replay_state)?;
        let mut g = Guard {
            cfg,
            devices: HashMap::new(),
            replay,
            counts: RefusalCounts::default(),
            received: 0,
            accepted: 0,
        };
        g.reload_registry(registry)?;
        Ok(g)
    }

    /// Replaces the enrolled devices (after `tad-device enroll`); rate-limit state
    /// of devices that stay is kept, replay windows are never reset.
    pub fn reload_registry(&mut self, registry: &Registry) -> Result<(), GuardError> {
        let mut devices = HashMap::new();
        for (id, e) in &registry.devices {
            let key = e.verifying_key().map_err(|why| GuardError::Key {
                id: id.clone(),
                why,
            })?;
            let mut d = Device::new(e, key);
            if let Some(old) = self.devices.get(id) {
                d.tat_ns = old.tat_ns;
            }
            devices.insert(id.clone(), d);
        }
        self.devices = devices;
        Ok(())
    }

    /// Checks a round of messages (see the module docs), commits the replay
    /// windows once, and returns what was accepted and refused.
    pub fn process(&mut self, msgs: &[Arrival<'_>]) -> Round {
        let mut round = Round::default();
        let mut pending = Vec::new();
        let mut undo = Vec::new();
        for m in msgs {
            self.received += 1;
            match self.check(m, &mut undo) {
                Ok(p) => pending.push(p),
                Err(a) => {
                    self.counts.add(a.reason);
                    round.alerts.push(a);
                }
            }
        }
        if let Err(e) = self.replay.commit() {
            tracing::error!(error = %e, refused = pending.len(), "cannot persist the replay windows: refusing the round");
            for (id, before) in undo.into_iter().rev() {
                self.replay.undo(&id, before);
            }
            for p in pending {
                let t = &p.record.telemetry;
                self.counts.add(RefusalReason::Unavailable);
                round.alerts.push(refuse(
                    t.device_id.as_str(),
                    true,
                    RefusalReason::Unavailable,
                    p.record.arrival_ms,
                    Some(t.sequence_no),
                    format!("replay state not written: {e}"),
                ));
            }
            return round;
        }
        self.accepted += pending.len() as u64;
        round.accepted = pending;
        round
    }

    fn check(
        &mut self,
        m: &Arrival<'_>,
        undo: &mut Vec<(DeviceId, Option<crate::replay::ReplayWindow>)>,
    ) -> Result<Accepted, DeviceAlert> {
        use RefusalReason as R;
        let at = m.arrival_ms;
        let Some(raw_id) = device_of_topic(m.topic) else {
            return Err(refuse(
                m.topic,
                false,
                R::Malformed,
                at,
                None,
                format!(
                    "topic {:?} is not tad/v1/dev/<device_id>/telemetry",
                    m.topic
                ),
            ));
        };
        let Some(dev) = self.devices.get_mut(raw_id) else {
            return Err(refuse(
                raw_id,
                false,
                R::Unenrolled,
                at,
                None,
                format!("device {raw_id:?} is not enrolled"),
            ));
        };
        let id = raw_id;
        if m.payload.len() > self.cfg.max_payload_bytes {
            return Err(refuse(
                id,
                true,
                R::Malformed,
                at,
                None,
                format!(
                    "payload of {} bytes is over the limit of {} bytes",
                    m.payload.len(),
                    self.cfg.max_payload_bytes
                ),
            ));
        }
        if !dev.admit(at.saturating_mul(1_000_000)) {
            return Err(refuse(
                id,
                true,
                R::RateLimited,
                at,
                None,
                format!(
                    "over {} messages/min (burst {})",
                    dev.enrollment.rate_per_min, dev.enrollment.burst
                ),
            ));
        }
        let malformed = |what: String| refuse(id, true, R::Malformed, at, None, what);
        let env: EnvelopeRef<'_> =
            serde_json::from_slice(m.payload).map_err(|e| malformed(format!("envelope: {e}")))?;
        if env.v != ENVELOPE_VERSION {
            return Err(malformed(format!(
                "envelope version {} (expected {ENVELOPE_VERSION})",
                env.v
            )));
        }
        let payload = URL_SAFE_NO_PAD
            .decode(env.payload)
            .map_err(|e| malformed(format!("payload is not base64url: {e}")))?;
        let mut sig = [0u8; 64];
        match URL_SAFE_NO_PAD.decode_slice(env.sig, &mut sig) {
            Ok(64) => {}
            Ok(n) => return Err(malformed(format!("signature is {n} bytes, not 64"))),
            Err(e) => {
                return Err(malformed(format!(
                    "signature is not base64url (or too long): {e}"
                )));
            }
        }
        if !crate::telemetry::verify(&dev.key, &payload, &sig) {
            return Err(refuse(
                id,
                true,
                R::BadSignature,
                at,
                None,
                "Ed25519 signature does not verify with the enrolled key".into(),
            ));
        }
        let t: Telemetry =
            serde_json::from_slice(&payload).map_err(|e| malformed(format!("payload: {e}")))?;
        let seq = Some(t.sequence_no);
        if t.v != TELEMETRY_VERSION {
            return Err(malformed(format!(
                "payload version {} (expected {TELEMETRY_VERSION})",
                t.v
            )));
        }
        if t.device_id.as_str() != id {
            return Err(refuse(
                id,
                true,
                R::IdMismatch,
                at,
                seq,
                format!("signed payload names device {:?}", t.device_id.as_str()),
            ));
        }
        let skew = t.timestamp.abs_diff(at);
        if skew > self.cfg.max_skew_ms {
            return Err(refuse(
                id,
                true,
                R::Skew,
                at,
                seq,
                format!(
                    "timestamp {} is {skew} ms from arrival (limit {} ms)",
                    t.timestamp, self.cfg.max_skew_ms
                ),
            ));
        }
        match self.replay.check(id, t.sequence_no) {
            ReplayVerdict::Fresh => {
                let before = self.replay.accept(&t.device_id, t.sequence_no);
                undo.push((t.device_id.clone(), before));
            }
            ReplayVerdict::Replay => {
                return Err(refuse(
                    id,
                    true,
                    R::Replay,
                    at,
                    seq,
                    format!("sequence_no {} was already accepted", t.sequence_no),
                ));
            }
            ReplayVerdict::TooOld => {
                let hi = self.replay.window(id).map_or(0, |w| w.highest);
                return Err(refuse(
                    id,
                    true,
                    R::Stale,
                    at,
                    seq,
                    format!(
                        "sequence_no {} is below the replay window (highest {hi}, width {})",
                        t.sequence_no,
                        crate::replay::WINDOW
                    ),
                ));
            }
        }
        let e = &dev.enrollment;
        let range = |what: String| refuse(id, true, R::OutOfRange, at, seq, what);
        for (name, x) in [
            ("cpu_usage", t.cpu_usage),
            ("battery_level", t.battery_level),
        ] {
            if !(0.0..=100.0).contains(&x) {
                return Err(range(format!("{name} {x} outside 0..100")));
            }
        }
        for (name, x) in &t.sensors {
            match e.sensors.get(name) {
                None => {
                    return Err(refuse(
                        id,
                        true,
                        R::UnexpectedSensor,
                        at,
                        seq,
                        format!("sensor {name:?} is not enrolled"),
                    ));
                }
                Some(r) if !r.contains(*x) => {
                    return Err(range(format!(
                        "sensor {name} = {x} outside {}..{}",
                        r.min, r.max
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(missing) = e.sensors.keys().find(|k| !t.sensors.contains_key(*k)) {
            return Err(range(format!("enrolled sensor {missing:?} missing")));
        }
        Ok(Accepted {
            record: BatchRecord {
                arrival_ms: at,
                payload: env.payload.to_owned(),
                sig: env.sig.to_owned(),
                telemetry: t,
                anomaly: None,
            },
            payload,
            sig,
        })
    }

    /// Refusals so far, by reason.
    pub fn counts(&self) -> &RefusalCounts {
        &self.counts
    }

    /// Messages received so far (accepted + refused).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The enrollment of `id`, if enrolled.
    pub fn enrollment(&self, id: &str) -> Option<&Enrollment> {
        self.devices.get(id).map(|d| &d.enrollment)
    }
}
