//! Detector settings: the schema a detector accepts (retained on
//! `tad/v1/det/<det>/settings/schema`), the operator's [`ThresholdSettings`]
//! (retained on `tad/v1/settings/thresholds`) and each detector's
//! [`SettingsAck`] (`tad/v1/det/<det>/settings/acks`).
//!
//! `ThresholdSettings::values` is the whole set of overrides: a key that is absent
//! takes the detector's configured default again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::ThresholdSettings;
use crate::{Message, NodeId};

/// The type of a setting's value (all travel as JSON numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingKind {
    /// A whole number (counts, ports, ms).
    Integer,
    /// A real number (rates, ratios, seconds).
    Float,
}

/// One key a detector accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingKey {
    /// Config path, e.g. `portscan.vertical_ports`.
    pub key: String,
    pub kind: SettingKind,
    /// Inclusive range.
    pub min: f64,
    pub max: f64,
    /// The value the detector uses when the key is not set (its config file's).
    pub default: f64,
    /// Unit, e.g. `ports`, `s`, `pps`.
    #[serde(default)]
    pub unit: String,
    /// One line for people.
    #[serde(default)]
    pub help: String,
}

impl SettingKey {
    /// Checks one value against this key: finite, in range, whole for an integer.
    /// The error names the key, the value and the range.
    pub fn check(&self, value: f64) -> Result<(), String> {
        let k = &self.key;
        if !value.is_finite() {
            return Err(format!("{k}: {value} is not a finite number"));
        }
        if self.kind == SettingKind::Integer && value.fract() != 0.0 {
            return Err(format!("{k}: {value} is not a whole number"));
        }
        if value < self.min || value > self.max {
            return Err(format!(
                "{k}: {value} is outside [{}, {}]",
                self.min, self.max
            ));
        }
        Ok(())
    }
}

/// Every key a detector accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingsSchema {
    pub v: u16,
    pub detector_id: NodeId,
    pub at_ms: u64,
    pub keys: Vec<SettingKey>,
}
message!(SettingsSchema, "settings schema");

impl SettingsSchema {
    /// The key named `key`.
    pub fn key(&self, key: &str) -> Option<&SettingKey> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// Checks a whole set of values: every key known and every value valid. The
    /// error names the first offending key.
    pub fn check(&self, values: &BTreeMap<String, f64>) -> Result<(), String> {
        for (k, v) in values {
            match self.key(k) {
                None => {
                    return Err(format!(
                        "{k}: unknown setting (detector {} does not have it)",
                        self.detector_id
                    ));
                }
                Some(s) => s.check(*v)?,
            }
        }
        Ok(())
    }
}

/// Whether a detector applied a settings message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingsOutcome {
    /// In force from now on.
    Applied,
    /// Nothing changed; `error` says why.
    Refused,
}

/// A detector's answer to a [`ThresholdSettings`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingsAck {
    pub v: u16,
    /// Id of the `ThresholdSettings` answered.
    pub id: String,
    pub detector_id: NodeId,
    pub at_ms: u64,
    pub outcome: SettingsOutcome,
    #[serde(default)]
    pub error: Option<String>,
    /// The value of every schema key in force after this message (overrides and
    /// defaults alike).
    #[serde(default)]
    pub effective: BTreeMap<String, f64>,
}
message!(SettingsAck, "settings ack");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SCHEMA_VERSION;

    fn schema() -> SettingsSchema {
        SettingsSchema {
            v: SCHEMA_VERSION,
            detector_id: "detector-1".parse().unwrap(),
            at_ms: 0,
            keys: vec![SettingKey {
                key: "portscan.vertical_ports".into(),
                kind: SettingKind::Integer,
                min: 2.0,
                max: 65535.0,
                default: 20.0,
                unit: "ports".into(),
                help: String::new(),
            }],
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let s = schema();
        let set = |k: &str, v: f64| BTreeMap::from([(k.to_string(), v)]);
        assert!(s.check(&set("portscan.vertical_ports", 30.0)).is_ok());
        let e = s.check(&set("synflood.syn_rate_pps", 1.0)).unwrap_err();
        assert!(e.starts_with("synflood.syn_rate_pps: unknown"), "{e}");
        let e = s.check(&set("portscan.vertical_ports", 1.0)).unwrap_err();
        assert!(e.contains("outside [2, 65535]"), "{e}");
        let e = s.check(&set("portscan.vertical_ports", 2.5)).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        assert!(s.check(&set("portscan.vertical_ports", f64::NAN)).is_err());
    }
}
