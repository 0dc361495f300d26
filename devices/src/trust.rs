//! The device trust ledger: one trust score per device, moved only by evidence,
//! every change returned as a [`TrustEntry`] naming its cause (for the dashboard's
//! hash-chained audit log), persisted across restarts.
//!
//! # How seed 004 and seed 003 combine
//! Seed 003 scores trust as `0.5·behaviour + 0.3·vulnerability + 0.2·reputation`
//! with levels 75 / 50 / 20; seed 004 moves a device's trust by −20 per security
//! alert and +1 per valid heartbeat. Here seed 004's rule *is* the behaviour
//! component, reputation is the long memory of the same evidence, vulnerability
//! comes from the active scan, and the weighted sum may never rise above
//! behaviour:
//!
//! ```text
//! B  behaviour      0..100, starts 100: −20 per security alert (strong evidence),
//!                   −5 per weak alert but never below 50 by weak evidence alone,
//!                   +1 per valid heartbeat (at most one per heartbeat interval, 60 s)
//! V  vulnerability  0..100, starts 100: set by the scanner (100 = nothing dangerous open)
//! R  reputation     0..100, starts 100: −10 per security alert; its deficit (100 − R)
//!                   halves every 24 h (the seed's "decay/recovery")
//!
//! T = min( B, 0.5·B + 0.3·V + 0.2·R )
//! level: T >= 75 normal, 50 <= T < 75 warning, 20 <= T < 50 alert, T < 20 critical
//! ```
//!
//! Why the `min`: the weighted mean alone cannot go below `0.3·V + 0.2·R` (50 for a
//! device with a clean scan and record), so a device caught forging signatures
//! over and over would never reach "critical". With the `min`, direct evidence of
//! misbehaviour dominates the two priors, while a vulnerable but well-behaved
//! device is only lowered by the weighted sum (V = 0 with B = R = 100 gives T = 70,
//! warning): a scan result alone never makes a device critical.
//!
//! Worked arithmetic (events close together, so no reputation decay, V = 100):
//!
//! | security alerts | B | R | 0.5B+0.3V+0.2R | T | level |
//! |---|---|---|---|---|---|
//! | 0 | 100 | 100 | 100 | 100 | normal |
//! | 1 | 80 | 90 | 88 | 80 | normal |
//! | 2 | 60 | 80 | 76 | 60 | warning |
//! | 3 | 40 | 70 | 64 | 40 | alert |
//! | 4 | 20 | 60 | 52 | 20 | alert |
//! | 5 | 0 | 50 | 40 | 0 | critical |
//!
//! Recovery from there is by heartbeats only (+1 each to B; R only recovers by
//! its decay): 20 heartbeats give T = 20 (alert), 50 give T = 50 (warning), 75
//! give T = 75 (normal: the weighted sum is 0.5·75 + 30 + 0.2·50 = 77.5, so B is
//! the minimum); at one heartbeat a minute about 20 min to leave "critical" and
//! 75 min to be normal again. Weak evidence alone (skewed clock, rate limit, malformed, stale,
//! statistical anomaly) stops at B = 50, T = 50: warning, never alert or critical.
//!
//! A burst of refusals is one piece of evidence, not hundreds: per device and per
//! reason at most one penalty per hold-off (10 s); the alerts themselves are all
//! counted and raised by the guard.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    batch::TelemetryBatch,
    fsutil::{FileError, read_optional, write_atomic},
    guard::{DeviceAlert, Evidence},
    ids::DeviceId,
};

/// Version of the ledger file and of [`TrustEntry`].
pub const TRUST_VERSION: u16 = 1;

/// Trust levels (seed 003's action thresholds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    /// T < 20.
    Critical,
    /// 20 <= T < 50.
    Alert,
    /// 50 <= T < 75.
    Warning,
    /// T >= 75.
    Normal,
}

impl TrustLevel {
    /// The level of trust score `t`.
    pub fn of(t: f64) -> TrustLevel {
        if t >= 75.0 {
            TrustLevel::Normal
        } else if t >= 50.0 {
            TrustLevel::Warning
        } else if t >= 20.0 {
            TrustLevel::Alert
        } else {
            TrustLevel::Critical
        }
    }
}

/// The ledger's arithmetic (module docs); the defaults are the documented values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// The ledger file (JSON, written atomically).
    pub state_file: PathBuf,
    pub weight_behaviour: f64,
    pub weight_vulnerability: f64,
    pub weight_reputation: f64,
    /// Behaviour points lost per security alert (seed 004: 20).
    pub alert_penalty: f64,
    /// Behaviour points lost per weak alert.
    pub weak_penalty: f64,
    /// Weak evidence never takes behaviour below this.
    pub weak_floor: f64,
    /// Behaviour points gained per valid heartbeat (seed 004: 1).
    pub heartbeat_credit: f64,
    /// At most one heartbeat credited per device per this long, ms.
    pub heartbeat_interval_ms: u64,
    /// Reputation points lost per security alert.
    pub reputation_penalty: f64,
    /// Half-life of the reputation deficit, ms.
    pub reputation_half_life_ms: u64,
    /// At most one penalty per device and reason per this long, ms.
    pub holdoff_ms: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            state_file: "/var/lib/tad/devices/trust.json".into(),
            weight_behaviour: 0.5,
            weight_vulnerability: 0.3,
            weight_reputation: 0.2,
            alert_penalty: 20.0,
            weak_penalty: 5.0,
            weak_floor: 50.0,
            heartbeat_credit: 1.0,
            heartbeat_interval_ms: 60_000,
            reputation_penalty: 10.0,
            reputation_half_life_ms: 24 * 3600 * 1000,
            holdoff_ms: 10_000,
        }
    }
}

/// The three components, each 0..100.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Components {
    pub behaviour: f64,
    pub vulnerability: f64,
    pub reputation: f64,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            behaviour: 100.0,
            vulnerability: 100.0,
            reputation: 100.0,
        }
    }
}

/// Why trust changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrustCause {
    /// A refused telemetry message that is strong evidence (guard reason).
    SecurityAlert { reason: String, detail: String },
    /// A refused message that is weak evidence.
    WeakAlert { reason: String, detail: String },
    /// An accepted message scored anomalous by the device's model (weak evidence).
    Anomaly { score: f64, threshold: f64 },
    /// A valid message in a forwarded batch (batch hash in the entry).
    Heartbeat { sequence_no: u64 },
    /// A new vulnerability score from the active scan.
    Vulnerability { score: f64, findings: Vec<String> },
}

/// One trust change, for the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustEntry {
    pub v: u16,
    pub device_id: DeviceId,
    /// When the evidence arrived, Unix ms.
    pub at_ms: u64,
    pub cause: TrustCause,
    /// Trust before (as of the previous entry) and after, 0..100.
    pub old: f64,
    pub new: f64,
    pub old_level: TrustLevel,
    pub new_level: TrustLevel,
    /// Components after the change.
    pub components: Components,
    /// Reputation points regained by decay since the device's previous entry
    /// (part of `new − old`).
    pub reputation_recovered: f64,
    /// SHA-256 of the telemetry batch this change is about (heartbeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_sha256: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTrust {
    components: Components,
    /// Time the reputation decay was last applied, Unix ms.
    decayed_at_ms: u64,
    last_heartbeat_ms: Option<u64>,
    /// Reason → time of its last penalty, Unix ms.
    last_penalty_ms: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    v: u16,
    devices: BTreeMap<DeviceId, DeviceTrust>,
}

/// Errors of the ledger file.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("trust ledger {path}: {why}")]
    Parse { path: PathBuf, why: String },
}

/// The ledger (see the module docs).
#[derive(Debug)]
pub struct TrustLedger {
    cfg: TrustConfig,
    devices: BTreeMap<DeviceId, DeviceTrust>,
    dirty: bool,
}

impl TrustLedger {
    /// Opens the ledger at `cfg.state_file` (missing = every device at 100).
    pub fn open(cfg: TrustConfig) -> Result<TrustLedger, TrustError> {
        let devices = match read_optional(&cfg.state_file)? {
            None => BTreeMap::new(),
            Some(b) => {
                let f: LedgerFile = serde_json::from_slice(&b).map_err(|e| TrustError::Parse {
                    path: cfg.state_file.clone(),
                    why: e.to_string(),
                })?;
                if f.v != TRUST_VERSION {
                    return Err(TrustError::Parse {
                        path: cfg.state_file.clone(),
                        why: format!("version {} (this build reads {TRUST_VERSION})", f.v),
                    });
                }
                f.devices
            }
        };
        Ok(TrustLedger {
            cfg,
            devices,
            dirty: false,
        })
    }

    /// T for the given components (module docs).
    pub fn score_of(&self, c: &Components) -> f64 {
        let w = self.cfg.weight_behaviour * c.behaviour
            + self.cfg.weight_vulnerability * c.vulnerability
            + self.cfg.weight_reputation * c.reputation;
        c.behaviour.min(w).clamp(0.0, 100.0)
    }

    /// The components of `id` (defaults for a device with no evidence yet).
    pub fn components(&self, id: &str) -> Components {
        self.devices
            .get(id)
            .map(|d| d.components)
            .unwrap_or_default()
    }

    /// Trust of `id` now, 0..100 (100 for a device with no evidence yet); the
    /// reputation decay up to `now_ms` is included.
    pub fn trust(&self, id: &str, now_ms: u64) -> f64 {
        let mut d = self.devices.get(id).cloned().unwrap_or_default();
        if self.devices.contains_key(id) {
            self.decay(&mut d, now_ms);
        }
        self.score_of(&d.components)
    }

    fn decay(&self, d: &mut DeviceTrust, now_ms: u64) -> f64 {
        if now_ms <= d.decayed_at_ms {
            return 0.0;
        }
        let deficit = 100.0 - d.components.reputation;
        let halves =
            (now_ms - d.decayed_at_ms) as f64 / self.cfg.reputation_half_life_ms.max(1) as f64;
        let after = deficit * 0.5f64.powf(halves);
        d.components.reputation = 100.0 - after;
        d.decayed_at_ms = now_ms;
        deficit - after
    }

    fn change(
        &mut self,
        id: &DeviceId,
        at_ms: u64,
        cause: TrustCause,
        batch_sha256: Option<String>,
        f: impl FnOnce(&TrustConfig, &mut DeviceTrust),
    ) -> TrustEntry {
        let mut d = self
            .devices
            .get(id.as_str())
            .cloned()
            .unwrap_or(DeviceTrust {
                decayed_at_ms: at_ms,
                ..DeviceTrust::default()
            });
        let old = self.score_of(&d.components);
        let recovered = self.decay(&mut d, at_ms);
        f(&self.cfg, &mut d);
        let c = &mut d.components;
        for x in [&mut c.behaviour, &mut c.vulnerability, &mut c.reputation] {
            *x = x.clamp(0.0, 100.0);
        }
        let new = self.score_of(&d.components);
        let entry = TrustEntry {
            v: TRUST_VERSION,
            device_id: id.clone(),
            at_ms,
            cause,
            old,
            new,
            old_level: TrustLevel::of(old),
            new_level: TrustLevel::of(new),
            components: d.components,
            reputation_recovered: recovered,
            batch_sha256,
        };
        self.devices.insert(id.clone(), d);
        self.dirty = true;
        entry
    }

    fn held_off(&self, id: &str, reason: &str, at_ms: u64) -> bool {
        self.devices
            .get(id)
            .and_then(|d| d.last_penalty_ms.get(reason))
            .is_some_and(|t| at_ms < t.saturating_add(self.cfg.holdoff_ms))
    }

    /// Evidence from a guard alert: a penalty for an enrolled device (strong or
    /// weak by the reason's [`Evidence`]), unless the same reason was penalised
    /// within the hold-off. `None` when nothing changed.
    pub fn on_alert(&mut self, a: &DeviceAlert) -> Option<TrustEntry> {
        let strength = a.reason.evidence();
        if !a.enrolled || strength == Evidence::None {
            return None;
        }
        let id = DeviceId::parse(&a.device_id).ok()?;
        let reason = a.reason.as_str();
        if self.held_off(id.as_str(), reason, a.at_ms) {
            return None;
        }
        let cause = match strength {
            Evidence::Strong => TrustCause::SecurityAlert {
                reason: reason.into(),
                detail: a.detail.clone(),
            },
            _ => TrustCause::WeakAlert {
                reason: reason.into(),
                detail: a.detail.clone(),
            },
        };
        let at = a.at_ms;
        Some(self.change(&id, at, cause, None, |cfg, d| {
            d.last_penalty_ms.insert(reason.into(), at);
            if strength == Evidence::Strong {
                d.components.behaviour -= cfg.alert_penalty;
                d.components.reputation -= cfg.reputation_penalty;
            } else {
                weak(cfg, d);
            }
        }))
    }

    /// Evidence from the anomaly model: weak, with the same hold-off (reason
    /// `anomaly`).
    pub fn on_anomaly(
        &mut self,
        id: &DeviceId,
        score: f64,
        threshold: f64,
        at_ms: u64,
    ) -> Option<TrustEntry> {
        if self.held_off(id.as_str(), "anomaly", at_ms) {
            return None;
        }
        Some(self.change(
            id,
            at_ms,
            TrustCause::Anomaly { score, threshold },
            None,
            |cfg, d| {
                d.last_penalty_ms.insert("anomaly".into(), at_ms);
                weak(cfg, d);
            },
        ))
    }

    /// Heartbeats from a forwarded batch: per device, its first record credits
    /// `heartbeat_credit` when the last credit is at least `heartbeat_interval_ms`
    /// old. Records flagged anomalous do not count. Each entry carries the batch's
    /// hash.
    pub fn on_batch(&mut self, b: &TelemetryBatch) -> Vec<TrustEntry> {
        let mut out = Vec::new();
        for r in &b.records {
            if r.anomaly.is_some_and(|a| a.anomalous()) {
                continue;
            }
            let id = &r.telemetry.device_id;
            let at = r.arrival_ms;
            let due = self
                .devices
                .get(id.as_str())
                .and_then(|d| d.last_heartbeat_ms)
                .is_none_or(|t| at >= t.saturating_add(self.cfg.heartbeat_interval_ms));
            if !due {
                continue;
            }
            out.push(self.change(
                id,
                at,
                TrustCause::Heartbeat {
                    sequence_no: r.telemetry.sequence_no,
                },
                Some(b.sha256.clone()),
                |cfg, d| {
                    d.last_heartbeat_ms = Some(at);
                    d.components.behaviour += cfg.heartbeat_credit;
                },
            ));
        }
        out
    }

    /// A new vulnerability score (0..100, 100 = nothing dangerous) from the scanner,
    /// with its findings (e.g. `"23/tcp telnet"`).
    pub fn set_vulnerability(
        &mut self,
        id: &DeviceId,
        score: f64,
        findings: Vec<String>,
        at_ms: u64,
    ) -> TrustEntry {
        let score = score.clamp(0.0, 100.0);
        self.change(
            id,
            at_ms,
            TrustCause::Vulnerability { score, findings },
            None,
            |_, d| d.components.vulnerability = score,
        )
    }

    /// Writes the ledger (atomic) when something changed since the last save.
    pub fn save(&mut self) -> Result<(), TrustError> {
        if !self.dirty {
            return Ok(());
        }
        let f = LedgerFile {
            v: TRUST_VERSION,
            devices: self.devices.clone(),
        };
        write_atomic(
            &self.cfg.state_file,
            &serde_json::to_vec_pretty(&f).expect("ledger serialises"),
            0o600,
        )?;
        self.dirty = false;
        Ok(())
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.cfg.state_file
    }
}

fn weak(cfg: &TrustConfig, d: &mut DeviceTrust) {
    let b = &mut d.components.behaviour;
    if *b > cfg.weak_floor {
        *b = (*b - cfg.weak_penalty).max(cfg.weak_floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::RefusalReason;

    fn ledger(dir: &Path) -> TrustLedger {
        TrustLedger::open(TrustConfig {
            state_file: dir.join("trust.json"),
            ..TrustConfig::default()
        })
        .unwrap()
    }

    fn alert(reason: RefusalReason, at_ms: u64) -> DeviceAlert {
        DeviceAlert {
            device_id: "esp32-1".into(),
            enrolled: true,
            reason,
            at_ms,
            sequence_no: Some(1),
            detail: "test".into(),
        }
    }

    const T0: u64 = 1_764_768_000_000;

    #[test]
    fn levels_follow_seed_003_thresholds() {
        assert_eq!(TrustLevel::of(100.0), TrustLevel::Normal);
        assert_eq!(TrustLevel::of(75.0), TrustLevel::Normal);
        assert_eq!(TrustLevel::of(74.9), TrustLevel::Warning);
        assert_eq!(TrustLevel::of(50.0), TrustLevel::Warning);
        assert_eq!(TrustLevel::of(49.9), TrustLevel::Alert);
        assert_eq!(TrustLevel::of(20.0), TrustLevel::Alert);
        assert_eq!(TrustLevel::of(19.9), TrustLevel::Critical);
    }

    #[test]
    fn critical_only_after_five_separate_security_alerts() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        let id = "esp32-1";
        // A burst: only the first replay in the hold-off counts.
        let first = l.on_alert(&alert(RefusalReason::Replay, T0)).unwrap();
        for i in 1..50 {
            assert!(l.on_alert(&alert(RefusalReason::Replay, T0 + i)).is_none());
        }
        assert_eq!((first.old, first.new), (100.0, 80.0));
        assert_eq!(first.components.behaviour, 80.0);
        assert!(
            matches!(first.cause, TrustCause::SecurityAlert { ref reason, .. } if reason == "replay")
        );
        let mut levels = vec![first.new_level];
        let mut prev = first.new;
        for k in 1..5u64 {
            let e = l
                .on_alert(&alert(RefusalReason::BadSignature, T0 + k * 10_000))
                .unwrap();
            assert!(
                (e.old - prev).abs() < 1e-9,
                "entries chain: old = previous new"
            );
            prev = e.new;
            levels.push(e.new_level);
        }
        use TrustLevel::*;
        assert_eq!(levels, [Normal, Warning, Alert, Alert, Critical]);
        assert!(l.trust(id, T0 + 40_000) < 20.0);
    }

    #[test]
    fn weak_evidence_alone_stops_at_warning() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        let mut last = None;
        for k in 0..100u64 {
            for r in [
                RefusalReason::Skew,
                RefusalReason::RateLimited,
                RefusalReason::Malformed,
            ] {
                if let Some(e) = l.on_alert(&alert(r, T0 + k * 10_000)) {
                    last = Some(e);
                }
            }
        }
        let id: DeviceId = "esp32-1".parse().unwrap();
        for k in 0..100u64 {
            l.on_anomaly(&id, 0.9, 0.65, T0 + k * 10_000);
        }
        let e = last.unwrap();
        assert_eq!(e.components.behaviour, 50.0);
        assert_eq!(
            TrustLevel::of(l.trust("esp32-1", T0 + 1_000_000)),
            TrustLevel::Warning
        );
        // Unenrolled devices and our own failures are no evidence.
        let mut a = alert(RefusalReason::BadSignature, T0);
        a.enrolled = false;
        assert!(l.on_alert(&a).is_none());
        assert!(
            l.on_alert(&alert(RefusalReason::Unavailable, T0 + 5_000_000))
                .is_none()
        );
    }

    fn batch_of(at_ms: &[u64], hash: &str) -> TelemetryBatch {
        use crate::{batch::BatchRecord, telemetry::Telemetry};
        TelemetryBatch {
            v: 1,
            batch_no: 1,
            opened_ms: at_ms[0],
            closed_ms: *at_ms.last().unwrap(),
            sha256: hash.into(),
            records: at_ms
                .iter()
                .enumerate()
                .map(|(i, &at)| BatchRecord {
                    arrival_ms: at,
                    payload: String::new(),
                    sig: String::new(),
                    telemetry: Telemetry {
                        v: 1,
                        device_id: "esp32-1".parse().unwrap(),
                        sequence_no: i as u64,
                        timestamp: at,
                        cpu_usage: 1.0,
                        battery_level: 1.0,
                        sensors: Default::default(),
                    },
                    anomaly: None,
                })
                .collect(),
        }
    }

    #[test]
    fn heartbeats_recover_one_point_per_interval_and_carry_the_batch_hash() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        for k in 0..5u64 {
            l.on_alert(&alert(RefusalReason::OutOfRange, T0 + k * 10_000))
                .unwrap();
        }
        assert_eq!(
            TrustLevel::of(l.trust("esp32-1", T0 + 50_000)),
            TrustLevel::Critical
        );
        // 600 records one second apart: 10 heartbeat intervals -> 10 credits.
        let ats: Vec<u64> = (0..600).map(|i| T0 + 60_000 + i * 1000).collect();
        let entries = l.on_batch(&batch_of(&ats, "ab12"));
        assert_eq!(entries.len(), 10);
        assert!(
            entries
                .iter()
                .all(|e| e.batch_sha256.as_deref() == Some("ab12"))
        );
        assert!(
            entries
                .iter()
                .all(|e| matches!(e.cause, TrustCause::Heartbeat { .. }))
        );
        assert_eq!(l.components("esp32-1").behaviour, 10.0);
        // 20 credits in total leave "critical"; 75 reach "normal".
        let mut t = T0 + 60_000 + 600_000;
        let mut level_after = BTreeMap::new();
        for n in 11..=75 {
            let e = l.on_batch(&batch_of(&[t], "cd34"));
            assert_eq!(e.len(), 1);
            level_after.insert(n, e[0].new_level);
            t += 60_000;
        }
        assert_eq!(level_after[&19], TrustLevel::Critical);
        assert_eq!(level_after[&20], TrustLevel::Alert);
        assert_eq!(level_after[&50], TrustLevel::Warning);
        assert_eq!(level_after[&75], TrustLevel::Normal);
    }

    #[test]
    fn vulnerability_alone_lowers_to_warning_and_reputation_decays_back() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        let id: DeviceId = "esp32-1".parse().unwrap();
        let e = l.set_vulnerability(&id, 0.0, vec!["23/tcp telnet".into()], T0);
        assert!(
            (e.new - 70.0).abs() < 1e-9,
            "0.5*100 + 0.3*0 + 0.2*100 = 70"
        );
        assert_eq!(e.new_level, TrustLevel::Warning);
        l.on_alert(&alert(RefusalReason::Replay, T0)).unwrap();
        assert!((l.components("esp32-1").reputation - 90.0).abs() < 1e-9);
        // One half-life later the deficit of 10 is 5.
        let day = 24 * 3600 * 1000;
        let e = l.set_vulnerability(&id, 100.0, vec![], T0 + day);
        assert!((e.components.reputation - 95.0).abs() < 1e-9);
        assert!((e.reputation_recovered - 5.0).abs() < 1e-9);
    }

    #[test]
    fn survives_reopening() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        l.on_alert(&alert(RefusalReason::Replay, T0)).unwrap();
        l.save().unwrap();
        let l2 = ledger(d.path());
        assert_eq!(l2.components("esp32-1"), l.components("esp32-1"));
        // And the hold-off survives too.
        let mut l2 = l2;
        assert!(l2.on_alert(&alert(RefusalReason::Replay, T0 + 1)).is_none());
        std::fs::write(d.path().join("trust.json"), "[]").unwrap();
        assert!(
            TrustLedger::open(TrustConfig {
                state_file: d.path().join("trust.json"),
                ..TrustConfig::default()
            })
            .is_err()
        );
    }
}
