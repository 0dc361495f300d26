//! Runtime thresholds: the one table of the config keys a
//! [`tad_wire::ThresholdSettings`] may set, with their kind, inclusive range, unit
//! and help line.
//!
//! The table is the single source of three things, so they cannot drift apart:
//! - the range checks of [`Config::validate`] for these keys (a config file with
//!   `portscan.vertical_ports = 0` is refused with the same range the schema
//!   publishes);
//! - [`Config::apply_thresholds`]: a key not in the table is unknown, a value is
//!   checked with [`SettingKey::check`] (the very check the dashboard runs against the
//!   published schema), then the whole result is validated (cross-key rules such
//!   as the trust weights summing to 1);
//! - the [`SettingsSchema`] the service publishes (retained) on
//!   `tad/v1/det/<det>/settings/schema` ([`schema`]), whose defaults are the values
//!   of the loaded config file.
//!
//! Bounds: where the validation has none, the type's (`u32::MAX`; for `u64` fields
//! 2^53, up to which every whole number is an exact JSON number; `f64::MAX`).
//! Windows are at least 1 ms (the rules count whole milliseconds) and at most a
//! day; other durations at most a day; trust points are out of 100.
//!
//! Keys are the dotted config paths of the numeric fields of `portscan`,
//! `evidence`, `synflood`, `spike`, `bruteforce`, `ml`, `trust` and `policy`, plus one
//! `trust.risky_ports.<port>` per port of the loaded `[trust.risky_ports]` table.

use std::collections::BTreeMap;

use tad_wire::{MAX_TTL_S, NodeId, SCHEMA_VERSION, SettingKey, SettingKind, SettingsSchema};

use crate::config::{Config, ConfigError};

/// Shortest sliding window or interval, seconds (1 ms: the rules count whole ms).
pub const MIN_WINDOW_S: f64 = 0.001;
/// Longest sliding window, interval, cooldown or quiet time, seconds (a day).
pub const MAX_DURATION_S: f64 = 86_400.0;
/// Upper bound of `u64` keys: 2^53. Every whole number up to it is an exact `f64`
/// (the type of every JSON number here), and it parses back exactly (2^53 - 1 does
/// not with serde_json's default float parser).
pub const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;
/// A trust score component is out of this many points.
pub const MAX_POINTS: f64 = 100.0;
/// The trust weights: each in [0, 1], together exactly 1 (within 1e-6), so a
/// settings message changing one must change another too.
pub const TRUST_WEIGHTS: [&str; 3] = [
    "trust.weight_behavioural",
    "trust.weight_vulnerability",
    "trust.weight_reputation",
];

/// A numeric config field type a threshold can have.
trait Num: Copy {
    const KIND: SettingKind;
    /// The largest value the type holds (and a JSON number carries exactly).
    const TYPE_MAX: f64;
    fn to_f64(self) -> f64;
    /// From a value already checked to be whole and in range.
    fn from_f64(v: f64) -> Self;
}

impl Num for f64 {
    const KIND: SettingKind = SettingKind::Float;
    const TYPE_MAX: f64 = f64::MAX;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Num for u32 {
    const KIND: SettingKind = SettingKind::Integer;
    const TYPE_MAX: f64 = u32::MAX as f64;
    fn to_f64(self) -> f64 {
        self.into()
    }
    fn from_f64(v: f64) -> Self {
        v as u32
    }
}

impl Num for u64 {
    const KIND: SettingKind = SettingKind::Integer;
    const TYPE_MAX: f64 = MAX_EXACT_INTEGER;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as u64
    }
}

fn kind_of<T: Num>(_: fn(&Config) -> T) -> SettingKind {
    T::KIND
}

fn type_max<T: Num>(_: fn(&Config) -> T) -> f64 {
    T::TYPE_MAX
}

/// How a threshold reads and writes its config field.
#[derive(Clone, Copy)]
enum Access {
    Field {
        get: fn(&Config) -> f64,
        set: fn(&mut Config, f64),
    },
    /// `trust.risky_ports.<port>`.
    RiskyPort(u16),
}

/// One runtime-settable config key.
#[derive(Clone)]
pub struct Threshold {
    /// Dotted config path, e.g. `portscan.vertical_ports`.
    pub key: String,
    /// `Integer` for integer fields, `Float` otherwise.
    pub kind: SettingKind,
    /// Inclusive range the validation enforces.
    pub min: f64,
    pub max: f64,
    /// Unit of the value (`s`, `ports`, `points`...).
    pub unit: &'static str,
    /// One line for people.
    pub help: &'static str,
    /// The largest value the field's type holds (`f64::MAX`, `u32::MAX`, or
    /// [`MAX_EXACT_INTEGER`] for `u64`): out-of-range values up to it can sit in a
    /// config file, and [`Config::validate`] refuses them.
    pub type_max: f64,
    access: Access,
}

impl std::fmt::Debug for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threshold")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Threshold {
    /// The value of this key in `cfg`.
    pub fn get(&self, cfg: &Config) -> f64 {
        match self.access {
            Access::Field { get, .. } => get(cfg),
            Access::RiskyPort(p) => cfg.trust.risky_ports.get(&p).copied().unwrap_or(0.0),
        }
    }

    /// Sets this key in `cfg`. `value` must have passed [`Self::check`] (an integer
    /// out of its type's range would saturate).
    pub fn set(&self, cfg: &mut Config, value: f64) {
        match self.access {
            Access::Field { set, .. } => set(cfg, value),
            Access::RiskyPort(p) => {
                cfg.trust.risky_ports.insert(p, value);
            }
        }
    }

    /// The schema entry, with `default` as its default.
    pub fn setting_key(&self, default: f64) -> SettingKey {
        SettingKey {
            key: self.key.clone(),
            kind: self.kind,
            min: self.min,
            max: self.max,
            default,
            unit: self.unit.to_string(),
            help: self.help.to_string(),
        }
    }

    /// [`SettingKey::check`]: finite, whole for an integer, in `[min, max]`; the
    /// error starts with the key.
    pub fn check(&self, value: f64) -> Result<(), String> {
        self.setting_key(0.0).check(value)
    }
}

/// A threshold entry for field `$sec.$f`; `MAX` as the upper bound means the type's.
macro_rules! th {
    ($sec:ident . $f:ident, [$min:expr, MAX], $unit:literal, $help:literal) => {
        th!(@ $sec . $f, $min, type_max(|c: &Config| c.$sec.$f), $unit, $help)
    };
    ($sec:ident . $f:ident, [$min:expr, $max:expr], $unit:literal, $help:literal) => {
        th!(@ $sec . $f, $min, $max, $unit, $help)
    };
    (@ $sec:ident . $f:ident, $min:expr, $max:expr, $unit:literal, $help:literal) => {
        Threshold {
            key: concat!(stringify!($sec), ".", stringify!($f)).to_string(),
            kind: kind_of(|c: &Config| c.$sec.$f),
            min: $min as f64,
            max: $max as f64,
            unit: $unit,
            help: $help,
            type_max: type_max(|c: &Config| c.$sec.$f),
            access: Access::Field {
                get: |c| Num::to_f64(c.$sec.$f),
                set: |c, v| c.$sec.$f = Num::from_f64(v),
            },
        }
    };
}

const W: f64 = MIN_WINDOW_S;
const D: f64 = MAX_DURATION_S;
const P: f64 = MAX_POINTS;

/// Every runtime-settable key of `cfg`: the fixed fields, then one
/// `trust.risky_ports.<port>` per port of its `[trust.risky_ports]` table.
#[rustfmt::skip]
pub fn thresholds(cfg: &Config) -> Vec<Threshold> {
    let mut t = vec![
        th!(portscan.window_s, [W, D], "s", "Sliding window of the port-scan and sweep counts"),
        th!(portscan.vertical_ports, [1, MAX], "ports", "Distinct ports probed on one host that make a vertical scan (blocks)"),
        th!(portscan.horizontal_hosts, [1, MAX], "hosts", "Distinct hosts probed on one port that make a horizontal scan (blocks)"),
        th!(portscan.sweep_hosts, [1, MAX], "hosts", "Distinct hosts sent ICMP echo/timestamp/mask requests that make a sweep (blocks)"),
        th!(portscan.low_ports, [1, MAX], "ports", "Distinct ports probed on one host that raise a low-volume scan alert (no block)"),
        th!(portscan.max_probe_packets, [0, MAX], "packets", "A flow with more initiator packets than this is a connection, not a probe"),
        th!(evidence.unreplied_share, [0, 1], "", "Share of a source's new flows left unanswered at or above which many distinct ports/hosts in the kernel evidence make a scan (blocks)"),
        th!(synflood.window_s, [W, D], "s", "Sliding window of the half-open handshake counts"),
        th!(synflood.per_source_half_open, [1, MAX], "handshakes", "Half-open handshakes from one source to one host that make a SYN flood (blocks)"),
        th!(synflood.per_victim_half_open, [1, MAX], "handshakes", "Half-open handshakes to one host from any source that raise a victim-side alert (no block)"),
        th!(synflood.spoofed_min_sources, [0, MAX], "sources", "Distinct sources at which a victim-side flood counts as distributed or spoofed"),
        th!(spike.interval_s, [W, D], "s", "Rate interval of the traffic-spike rule"),
        th!(spike.alpha, [1e-6, 1], "", "EWMA weight of the newest interval in a device's baseline"),
        th!(spike.z, [0, MAX], "sigma", "z-score over the device's own baseline that counts as a spike"),
        th!(spike.min_pps, [0, MAX], "pps", "Minimum absolute packet rate of a spike"),
        th!(spike.min_bps, [0, MAX], "B/s", "Minimum absolute byte rate of a spike"),
        th!(spike.warmup_intervals, [0, MAX], "intervals", "Baseline intervals needed before spikes are reported"),
        th!(bruteforce.window_s, [W, D], "s", "Sliding window of the brute-force attempt counts"),
        th!(bruteforce.attempts, [1, MAX], "attempts", "Short or failed connections from one source to one auth service (blocks)"),
        th!(bruteforce.http_attempts, [1, MAX], "attempts", "Short HTTP logins from one source to one host (alert only)"),
        th!(bruteforce.max_duration_s, [0, D], "s", "A connection longer than this is a session, not a guess"),
        th!(bruteforce.max_bytes, [0, MAX], "bytes", "A connection carrying more than this (both directions) is a session, not a guess"),
        th!(ml.threshold_scale, [0, MAX], "", "Multiplier on the autoencoder's trained benign threshold"),
        th!(ml.min_flows, [1, MAX], "flows", "Anomalous flows of one source in ml.window_s before an anomaly alert"),
        th!(ml.window_s, [W, D], "s", "Window of the anomalous-flow count"),
        th!(ml.max_alerts_per_min, [0, MAX], "alerts/min", "At most this many anomaly alerts per minute in total"),
        th!(trust.weight_behavioural, [0, 1], "", "Weight of the behavioural component (the three weights sum to 1)"),
        th!(trust.weight_vulnerability, [0, 1], "", "Weight of the vulnerability component (the three weights sum to 1)"),
        th!(trust.weight_reputation, [0, 1], "", "Weight of the reputation component (the three weights sum to 1)"),
        th!(trust.penalty_low, [0, P], "points", "Behavioural points lost per low-severity alert"),
        th!(trust.penalty_medium, [0, P], "points", "Behavioural points lost per medium-severity alert"),
        th!(trust.penalty_high, [0, P], "points", "Behavioural points lost per high-severity alert"),
        th!(trust.penalty_critical, [0, P], "points", "Behavioural points lost per critical-severity alert"),
        th!(trust.recovery_per_min, [0, MAX], "points/min", "Points each component regains per minute while the device is quiet"),
        th!(trust.quiet_s, [0, D], "s", "Quiet time before trust recovery starts"),
        th!(trust.feed_penalty, [0, P], "points", "Reputation points lost per distinct threat-feed address contacted"),
        th!(policy.block_confidence, [0, 1], "", "Alerts at or above this confidence block their source (when the rule may block)"),
        th!(policy.base_ttl_s, [1, MAX_TTL_S], "s", "First quarantine; doubled on every repeat offence"),
        th!(policy.max_ttl_s, [1, MAX_TTL_S], "s", "Longest quarantine"),
        th!(policy.alert_cooldown_s, [0, D], "s", "The same rule on the same source/target alerts again only after this"),
    ];
    t.extend(cfg.trust.risky_ports.keys().map(|p| Threshold {
        key: format!("trust.risky_ports.{p}"),
        kind: SettingKind::Float,
        min: 0.0,
        max: MAX_POINTS,
        unit: "points",
        help: "Vulnerability points lost while a device offers this risky service",
        type_max: f64::MAX,
        access: Access::RiskyPort(*p),
    }));
    t
}

/// The schema of `cfg`'s keys, each with `cfg`'s value as its default (give the
/// config as loaded from the file, not one with runtime overrides).
pub fn schema(cfg: &Config, detector_id: &NodeId, at_ms: u64) -> SettingsSchema {
    SettingsSchema {
        v: SCHEMA_VERSION,
        detector_id: detector_id.clone(),
        at_ms,
        keys: thresholds(cfg)
            .iter()
            .map(|t| t.setting_key(t.get(cfg)))
            .collect(),
    }
}

/// The value of every key of `cfg` (a [`tad_wire::SettingsAck`]'s `effective`).
pub fn effective(cfg: &Config) -> BTreeMap<String, f64> {
    thresholds(cfg)
        .iter()
        .map(|t| (t.key.clone(), t.get(cfg)))
        .collect()
}

/// The range and cross-key checks of the threshold keys (part of
/// [`Config::validate`]). The error names the key.
pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    for t in thresholds(cfg) {
        let v = t.get(cfg);
        if !(v >= t.min && v <= t.max) {
            let unit = if t.unit.is_empty() { "" } else { " " };
            return Err(ConfigError::Invalid(format!(
                "{} = {v} must be in [{}, {}]{unit}{}",
                t.key, t.min, t.max, t.unit
            )));
        }
    }
    let tr = &cfg.trust;
    let sum = tr.weight_behavioural + tr.weight_vulnerability + tr.weight_reputation;
    if (sum - 1.0).abs() > 1e-6 {
        return Err(ConfigError::Invalid(format!(
            "{} = {sum} must be 1",
            TRUST_WEIGHTS.join(" + ")
        )));
    }
    Ok(())
}

impl Config {
    /// Applies runtime threshold values onto this config: each key must be in
    /// [`thresholds`] (else [`ConfigError::UnknownKey`]), each value must pass
    /// [`SettingKey::check`] and the result [`Config::validate`] (else
    /// [`ConfigError::Invalid`]; both messages start with the key). All or
    /// nothing: on any error the configuration is unchanged.
    ///
    /// The values change `self`; to make them the whole override set (an absent key
    /// keeps the file's value), apply them to a copy of the config as loaded, as
    /// `crate::engine::Engine::apply_thresholds` does.
    pub fn apply_thresholds(&mut self, values: &BTreeMap<String, f64>) -> Result<(), ConfigError> {
        let table = thresholds(self);
        let mut next = self.clone();
        for (key, value) in values {
            let t = table
                .iter()
                .find(|t| t.key == *key)
                .ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
            t.check(*value).map_err(ConfigError::Invalid)?;
            t.set(&mut next, *value);
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, value: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([(key.to_string(), value)])
    }

    /// `key = value`, plus the other trust weights adjusted to keep the sum at 1.
    fn set_of(key: &str, value: f64) -> BTreeMap<String, f64> {
        let mut m = one(key, value);
        if TRUST_WEIGHTS.contains(&key) {
            for w in TRUST_WEIGHTS.iter().filter(|w| **w != key) {
                m.insert(w.to_string(), (1.0 - value) / 2.0);
            }
        }
        m
    }

    fn below(t: &Threshold) -> f64 {
        match t.kind {
            SettingKind::Integer => t.min - 1.0,
            SettingKind::Float => t.min.next_down(),
        }
    }

    fn above(t: &Threshold) -> f64 {
        match t.kind {
            // The next whole f64 above (2^53 + 1 is not one).
            SettingKind::Integer => (t.max + 1.0).max(t.max.next_up()),
            SettingKind::Float => t.max.next_up(),
        }
    }

    #[test]
    fn every_key_is_accepted_at_its_bounds_and_refused_just_outside() {
        let base = Config::default();
        let table = thresholds(&base);
        assert!(table.len() > 40, "{} keys", table.len());
        for t in &table {
            for v in [t.min, t.max] {
                let mut c = base.clone();
                c.apply_thresholds(&set_of(&t.key, v))
                    .unwrap_or_else(|e| panic!("{} = {v} refused: {e}", t.key));
                assert_eq!(t.get(&c), v, "{} holds {v} exactly", t.key);
            }
            for v in [below(t), above(t)] {
                let mut c = base.clone();
                let e = c.apply_thresholds(&one(&t.key, v)).unwrap_err();
                assert!(e.to_string().starts_with(&t.key), "{} = {v}: {e}", t.key);
                assert_eq!(c, base, "a refused set changes nothing");
            }
            if t.kind == SettingKind::Integer && t.min < t.max {
                let mut c = base.clone();
                let e = c.apply_thresholds(&one(&t.key, t.min + 0.5)).unwrap_err();
                assert!(e.to_string().contains("whole number"), "{e}");
            }
        }
    }

    #[test]
    fn the_file_validation_enforces_the_same_ranges() {
        let base = Config::default();
        for t in &thresholds(&base) {
            for v in [t.min, t.max] {
                let mut c = base.clone();
                for (k, w) in set_of(&t.key, v) {
                    thresholds(&c)
                        .iter()
                        .find(|x| x.key == k)
                        .unwrap()
                        .set(&mut c, w);
                }
                c.validate()
                    .unwrap_or_else(|e| panic!("{} = {v} in a file refused: {e}", t.key));
            }
            // Out-of-range values a field can hold: the validation must refuse them.
            let holdable = |v: f64| match t.kind {
                SettingKind::Float => v.is_finite(),
                SettingKind::Integer => v >= 0.0 && v <= t.type_max,
            };
            for v in [below(t), above(t)].into_iter().filter(|v| holdable(*v)) {
                let mut c = base.clone();
                t.set(&mut c, v);
                let e = c.validate().unwrap_err().to_string();
                assert!(e.contains(&t.key), "{} = {v}: {e}", t.key);
            }
        }
        let mut c = base.clone();
        c.portscan.vertical_ports = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("portscan.vertical_ports")
        );
    }

    /// Every numeric leaf of the config tree, as the dotted path
    /// `apply_thresholds` could be given (array elements by index).
    fn numeric_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, f64)>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    numeric_paths(v, &join(k), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    numeric_paths(v, &join(&i.to_string()), out);
                }
            }
            serde_json::Value::Number(n) => out.push((prefix.to_string(), n.as_f64().unwrap())),
            _ => {}
        }
    }

    #[test]
    fn every_key_apply_thresholds_accepts_is_in_the_schema() {
        let mut base = Config::default();
        // Give the list-valued sections entries, so their numbers are tried too.
        base.access.devices.push(crate::config::DevicePolicy {
            prefix: "192.0.2.10/32".parse().unwrap(),
            allowed_ports: vec![1883],
            allowed_sources: Vec::new(),
            block: true,
        });
        base.partitions.take = vec![0];
        let id: NodeId = "detector-1".parse().unwrap();
        let s = schema(&base, &id, 0);
        let mut paths = Vec::new();
        numeric_paths(&serde_json::to_value(&base).unwrap(), "", &mut paths);
        assert!(
            paths.len() > s.keys.len(),
            "non-threshold numbers are tried too"
        );
        let mut accepted = 0;
        for (path, value) in &paths {
            let mut c = base.clone();
            match c.apply_thresholds(&one(path, *value)) {
                Ok(()) => {
                    accepted += 1;
                    let k = s
                        .key(path)
                        .unwrap_or_else(|| panic!("{path} accepted, not in the schema"));
                    assert_eq!(k.default, *value, "{path}: default = the config's value");
                }
                Err(e) => assert!(
                    s.key(path).is_none(),
                    "{path} in the schema but refused: {e}"
                ),
            }
        }
        assert_eq!(
            accepted,
            s.keys.len(),
            "every schema key is a config number"
        );
        for key in [
            "detector.id",
            "bus.port",
            "partitions.count",
            "service.queue",
            "portscan",
            "bruteforce.ports.0",
            "trust.risky_ports.22",
            "ml.enabled",
        ] {
            let e = base.clone().apply_thresholds(&one(key, 1.0)).unwrap_err();
            assert!(matches!(e, ConfigError::UnknownKey(_)), "{key}: {e}");
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }

    #[test]
    fn schema_defaults_come_from_the_config_and_kinds_from_the_field_types() {
        let mut c = Config::default();
        c.portscan.vertical_ports = 30;
        c.trust.risky_ports = BTreeMap::from([(22, 12.0)]);
        let s = schema(&c, &"detector-1".parse().unwrap(), 7);
        let k = s.key("portscan.vertical_ports").unwrap();
        assert_eq!(
            (k.kind, k.min, k.max, k.default),
            (SettingKind::Integer, 1.0, u32::MAX as f64, 30.0)
        );
        let k = s.key("portscan.window_s").unwrap();
        assert_eq!(
            (k.kind, k.min, k.max),
            (SettingKind::Float, MIN_WINDOW_S, MAX_DURATION_S)
        );
        assert_eq!(s.key("policy.max_ttl_s").unwrap().max, MAX_TTL_S as f64);
        assert_eq!(
            s.key("bruteforce.max_bytes").unwrap().max,
            MAX_EXACT_INTEGER
        );
        assert_eq!(s.key("trust.risky_ports.22").unwrap().default, 12.0);
        assert!(s.key("trust.risky_ports.21").is_none());
        assert!(s.keys.iter().all(|k| !k.help.is_empty()));
        assert_eq!(effective(&c)["portscan.vertical_ports"], 30.0);
        assert_eq!(effective(&c).len(), s.keys.len());
    }

    #[test]
    fn the_schema_crosses_the_wire_unchanged() {
        let s = schema(&Config::default(), &"detector-1".parse().unwrap(), 7);
        let back: SettingsSchema = tad_wire::decode(&tad_wire::encode(&s)).unwrap();
        assert_eq!(back, s, "every bound and default parses back exactly");
    }

    #[test]
    fn trust_weights_must_sum_to_one() {
        let mut c = Config::default();
        let e = c
            .apply_thresholds(&one("trust.weight_behavioural", 0.6))
            .unwrap_err();
        assert!(e.to_string().starts_with("trust.weight_behavioural"), "{e}");
        c.apply_thresholds(&BTreeMap::from([
            ("trust.weight_behavioural".to_string(), 0.6),
            ("trust.weight_reputation".to_string(), 0.1),
        ]))
        .unwrap();
        assert_eq!(c.trust.weight_behavioural, 0.6);
    }
}
