//! [`DeviceId`]: the name of an enrolled device, as it appears in its MQTT topic
//! (`tad/v1/dev/<device_id>/telemetry`), in the CN of its client certificate (the
//! broker ACL confines a device to its own topic by that CN), in the registry and in
//! the file names `keygen` writes. Hence a strict alphabet.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize};

/// Longest device id, bytes.
pub const DEVICE_ID_MAX: usize = 64;

/// A validated device id: 1 to [`DEVICE_ID_MAX`] bytes of lowercase ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit. No MQTT wildcard
/// (`+`, `#`), no `/`, no path component like `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

/// Why a string is not a [`DeviceId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id {id:?} is longer than {DEVICE_ID_MAX} bytes")]
    TooLong { id: String },
    #[error(
        "device id {id:?}: character {ch:?} not allowed (use a-z, 0-9, '-', '_', '.'; start with a letter or digit)"
    )]
    BadChar { id: String, ch: char },
}

impl DeviceId {
    /// Validates `s` (see the type docs).
    pub fn parse(s: &str) -> Result<DeviceId, DeviceIdError> {
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if s.len() > DEVICE_ID_MAX {
            return Err(DeviceIdError::TooLong { id: s.to_owned() });
        }
        for (i, ch) in s.chars().enumerate() {
            let ok = ch.is_ascii_lowercase()
                || ch.is_ascii_digit()
                || (i > 0 && matches!(ch, '-' | '_' | '.'));
            if !ok {
                return Err(DeviceIdError::BadChar {
                    id: s.to_owned(),
                    ch,
                });
            }
        }
        Ok(DeviceId(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::parse(s)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_topic_safe_names_and_refuses_the_rest() {
        for ok in ["esp32-1", "a", "kitchen.temp_2", "0x1f"] {
            assert_eq!(DeviceId::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(DeviceId::parse(""), Err(DeviceIdError::Empty));
        for (bad, ch) in [
            ("dev/1", '/'),
            ("dev+", '+'),
            ("#", '#'),
            ("Dev", 'D'),
            ("-x", '-'),
            ("..", '.'),
            ("a b", ' '),
        ] {
            match DeviceId::parse(bad) {
                Err(DeviceIdError::BadChar { ch: c, .. }) => assert_eq!(c, ch, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            DeviceId::parse(&"a".repeat(65)),
            Err(DeviceIdError::TooLong { .. })
        ));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<DeviceId>("\"esp32-1\"").is_ok());
        let e = serde_json::from_str::<DeviceId>("\"a/b\"").unwrap_err();
        assert!(e.to_string().contains("'/'"), "{e}");
    }
}
