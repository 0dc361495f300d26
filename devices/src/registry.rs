//! The enrollment registry: which devices exist, their Ed25519 public keys, the
//! sensors each is expected to report with their allowed ranges, their telemetry
//! rate limit and the command kinds expected for them. One TOML file, replaced
//! atomically on every change ([`crate::fsutil::write_atomic`]), so an error in the
//! middle of `tad-device enroll` leaves every earlier enrollment in place.
//!
//! ```toml
//! v = 1
//!
//! [devices.esp32-1]
//! public_key = "3p1_...43 base64url chars..."   # 32-byte Ed25519 key (RFC 8032)
//! rate_per_min = 60                              # GCRA rate, messages per minute
//! burst = 10                                     # GCRA burst, messages
//! commands = ["set", "reboot"]                   # expected command kinds
//! enrolled_at_ms = 1764768000000
//!
//! [devices.esp32-1.sensors]
//! temperature = { min = -20.0, max = 60.0 }
//! humidity = { min = 0.0, max = 100.0 }
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{VerifyingKey, pkcs8::DecodePublicKey};
use serde::{Deserialize, Serialize};

use crate::{
    command::CommandKind,
    fsutil::{FileError, read_optional, write_atomic},
    ids::DeviceId,
};

/// Version of the registry file.
pub const REGISTRY_VERSION: u16 = 1;
/// Default telemetry rate limit, messages per minute.
pub const DEFAULT_RATE_PER_MIN: u32 = 60;
/// Default telemetry burst, messages.
pub const DEFAULT_BURST: u32 = 10;

/// Errors loading, changing or saving the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("registry {path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error(
        "registry {path}: version {found} is not supported (this build reads {REGISTRY_VERSION})"
    )]
    Version { path: PathBuf, found: u16 },
    #[error("device {id} is already enrolled")]
    Duplicate { id: DeviceId },
    #[error("device {id}: {what}")]
    Invalid { id: String, what: String },
    #[error("public key {path}: {why}")]
    PublicKeyFile { path: PathBuf, why: String },
}

/// Allowed range of one sensor, inclusive, in the sensor's unit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorRange {
    pub min: f64,
    pub max: f64,
}

impl SensorRange {
    /// True when `x` is within `[min, max]`.
    pub fn contains(&self, x: f64) -> bool {
        x >= self.min && x <= self.max
    }
}

/// One enrolled device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The device's Ed25519 public key: base64url (no padding) of its 32 bytes.
    pub public_key: String,
    /// Expected sensors and their allowed ranges. A message must report exactly
    /// these.
    #[serde(default)]
    pub sensors: BTreeMap<String, SensorRange>,
    /// Telemetry rate limit (GCRA), messages per minute; 0 = no limit.
    #[serde(default = "default_rate")]
    pub rate_per_min: u32,
    /// Telemetry burst (GCRA), messages back to back.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Command kinds expected for this device (others are "never seen" until one is
    /// accepted, see [`crate::command`]).
    #[serde(default)]
    pub commands: Vec<CommandKind>,
    /// When it was enrolled, Unix ms.
    #[serde(default)]
    pub enrolled_at_ms: u64,
}

fn default_rate() -> u32 {
    DEFAULT_RATE_PER_MIN
}
fn default_burst() -> u32 {
    DEFAULT_BURST
}

impl Enrollment {
    /// The decoded public key. Errors name what is wrong with it.
    pub fn verifying_key(&self) -> Result<VerifyingKey, String> {
        let raw = URL_SAFE_NO_PAD
            .decode(&self.public_key)
            .map_err(|e| format!("public_key is not base64url: {e}"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|r: Vec<u8>| format!("public_key is {} bytes, not 32", r.len()))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("public_key is not an Ed25519 point: {e}"))
    }

    /// Checks the key, the ranges (finite, `min <= max`) and sensor names.
    pub fn validate(&self, id: &str) -> Result<(), RegistryError> {
        let bad = |what: String| RegistryError::Invalid {
            id: id.to_owned(),
            what,
        };
        self.verifying_key().map_err(bad)?;
        for (name, r) in &self.sensors {
            check_sensor_name(name).map_err(bad)?;
            if !r.min.is_finite() || !r.max.is_finite() || r.min > r.max {
                return Err(bad(format!(
                    "sensor {name}: range {}..{} is not finite with min <= max",
                    r.min, r.max
                )));
            }
        }
        Ok(())
    }
}

/// The encoding of an Ed25519 public key in the registry.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Reads a public key file: SubjectPublicKeyInfo PEM (RFC 8410, what `keygen`
/// writes, also `openssl pkey -pubout`).
pub fn read_public_key_file(path: &Path) -> Result<VerifyingKey, RegistryError> {
    let bad = |why: String| RegistryError::PublicKeyFile {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| bad(format!("not an Ed25519 SubjectPublicKeyInfo PEM: {e}")))
}

fn check_sensor_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sensor name {name:?}: use 1 to 32 of a-z, 0-9, '_'"
        ))
    }
}

/// Parses a `name=min..max` sensor spec (the `--sensor` argument), e.g.
/// `temperature=-20..60`. Errors name the part that is wrong.
pub fn parse_sensor_spec(spec: &str) -> Result<(String, SensorRange), String> {
    let (name, range) = spec
        .split_once('=')
        .ok_or_else(|| format!("sensor {spec:?}: expected name=min..max"))?;
    check_sensor_name(name).map_err(|e| format!("sensor {spec:?}: {e}"))?;
    let (lo, hi) = range
        .split_once("..")
        .ok_or_else(|| format!("sensor {spec:?}: range {range:?} is not min..max"))?;
    let num = |s: &str, which: &str| -> Result<f64, String> {
        let x: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("sensor {spec:?}: {which} {s:?} is not a number"))?;
        if x.is_finite() {
            Ok(x)
        } else {
            Err(format!("sensor {spec:?}: {which} {s:?} is not finite"))
        }
    };
    let (min, max) = (num(lo, "min")?, num(hi, "max")?);
    if min > max {
        return Err(format!("sensor {spec:?}: min {min} is above max {max}"));
    }
    Ok((name.to_owned(), SensorRange { min, max }))
}

/// The registry file's contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// File version, [`REGISTRY_VERSION`].
    pub v: u16,
    #[serde(default)]
    pub devices: BTreeMap<DeviceId, Enrollment>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            v: REGISTRY_VERSION,
            devices: BTreeMap::new(),
        }
    }
}

impl Registry {
    /// Loads and validates `path`. A missing file is an error (see
    /// [`Registry::load_or_empty`]).
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        match read_optional(path)? {
            Some(b) => Self::parse(path, &b),
            None => Err(FileError::new(
                "read",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
            .into()),
        }
    }

    /// Like [`Registry::load`], an empty registry when `path` does not exist.
    pub fn load_or_empty(path: &Path) -> Result<Registry, RegistryError> {
        match read_optional(path)? {
            Some(b) => Self::parse(path, &b),
            None => Ok(Registry::default()),
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Registry, RegistryError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RegistryError::Parse {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        let r: Registry = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        if r.v != REGISTRY_VERSION {
            return Err(RegistryError::Version {
                path: path.to_owned(),
                found: r.v,
            });
        }
        for (id, e) in &r.devices {
            e.validate(id.as_str())?;
        }
        Ok(r)
    }

    /// Adds `id`. Errors: [`RegistryError::Duplicate`] when it is enrolled already,
    /// [`RegistryError::Invalid`] for a bad key or range. Nothing changes on error.
    pub fn enroll(&mut self, id: DeviceId, e: Enrollment) -> Result<(), RegistryError> {
        if self.devices.contains_key(&id) {
            return Err(RegistryError::Duplicate { id });
        }
        e.validate(id.as_str())?;
        self.devices.insert(id, e);
        Ok(())
    }

    /// Writes the registry to `path` atomically (mode 0644: public keys only).
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let text = toml::to_string_pretty(self).map_err(|e| RegistryError::Parse {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        write_atomic(path, text.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The enrollment of `id`.
    pub fn get(&self, id: &str) -> Option<&Enrollment> {
        self.devices.get(id)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn enrollment(seed: u8) -> Enrollment {
        Enrollment {
            public_key: encode_public_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key()),
            sensors: [(
                "temperature".into(),
                SensorRange {
                    min: -20.0,
                    max: 60.0,
                },
            )]
            .into(),
            rate_per_min: 60,
            burst: 5,
            commands: vec![CommandKind::Reboot],
            enrolled_at_ms: 1,
        }
    }

    #[test]
    fn sensor_specs_parse_and_errors_name_the_bad_part() {
        assert_eq!(
            parse_sensor_spec("temperature=-20..60").unwrap(),
            (
                "temperature".into(),
                SensorRange {
                    min: -20.0,
                    max: 60.0
                }
            )
        );
        assert_eq!(
            parse_sensor_spec("lux=0..1e5").unwrap().1,
            SensorRange {
                min: 0.0,
                max: 100_000.0
            }
        );
        for (spec, needle) in [
            ("temperature", "expected name=min..max"),
            ("Temp=0..1", "sensor name"),
            ("t=0-1", "is not min..max"),
            ("t=a..1", "min \"a\""),
            ("t=0..inf", "not finite"),
            ("t=5..1", "above max"),
        ] {
            let e = parse_sensor_spec(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn round_trips_through_the_file_and_refuses_duplicates_without_loss() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("registry.toml");
        let mut r = Registry::load_or_empty(&p).unwrap();
        r.enroll("esp32-1".parse().unwrap(), enrollment(1)).unwrap();
        r.save(&p).unwrap();
        let mut again = Registry::load(&p).unwrap();
        assert_eq!(again, r);
        let e = again
            .enroll("esp32-1".parse().unwrap(), enrollment(2))
            .unwrap_err();
        assert!(matches!(e, RegistryError::Duplicate { .. }), "{e}");
        assert_eq!(again, r, "a refused enroll changes nothing");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, "v = 1\nextra = 3\n").unwrap();
        let e = Registry::load(&p).unwrap_err().to_string();
        assert!(e.contains("extra"), "{e}");
        std::fs::write(&p, "v = 9\n").unwrap();
        assert!(matches!(
            Registry::load(&p),
            Err(RegistryError::Version { found: 9, .. })
        ));
        std::fs::write(&p, "v = 1\n[devices.a]\npublic_key = \"AAAA\"\n").unwrap();
        let e = Registry::load(&p).unwrap_err().to_string();
        assert!(e.contains("device a") && e.contains("not 32"), "{e}");
        assert!(Registry::load(&d.path().join("missing.toml")).is_err());
        assert_eq!(
            Registry::load_or_empty(&d.path().join("missing.toml")).unwrap(),
            Registry::default()
        );
    }
}
