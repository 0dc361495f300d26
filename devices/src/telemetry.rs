//! The telemetry message a device publishes (seed 004's shape) and its signed
//! envelope.
//!
//! # Topic
//! `tad/v1/dev/<device_id>/telemetry` ([`topic`], [`device_of_topic`]). The broker
//! ACL lets a client write only under the topic level equal to its certificate's CN
//! (`pattern write tad/v1/dev/%u/telemetry`), so the topic names the authenticated
//! device; the guard also requires the signed payload's `device_id` to be the same.
//!
//! # Payload ([`Telemetry`], version [`TELEMETRY_VERSION`])
//! ```json
//! {"v":1,"device_id":"esp32-1","sequence_no":42,"timestamp":1764768000000,
//!  "cpu_usage":12.5,"battery_level":87.0,"sensors":{"temperature":21.4,"humidity":40.0}}
//! ```
//! `sequence_no` counts up from any start (the device keeps it across its own
//! reboots, e.g. in NVS; the guard tolerates reordering within 64, see
//! [`crate::replay`]); `timestamp` is Unix time in ms; `cpu_usage` and
//! `battery_level` are percent (0 to 100); `sensors` maps a sensor name to its
//! reading in the unit the enrollment's range uses. Unknown fields are an error.
//!
//! # Envelope ([`SignedTelemetry`], version [`ENVELOPE_VERSION`])
//! ```json
//! {"v":1,"payload":"<base64url of the payload's JSON bytes>","sig":"<base64url of the 64-byte Ed25519 signature>"}
//! ```
//! base64url without padding (RFC 4648 §5); the signature is Ed25519 (RFC 8032
//! §5.1, "pure" Ed25519, no prehash, no context) over exactly the payload bytes the
//! device wrote, checked with `verify_strict` (rejects non-canonical signatures and
//! small-order keys). Why not a JWS (RFC 7515 with EdDSA, RFC 8037): it signs
//! `base64url(header).base64url(payload)`, which means a JOSE library (or hand-built
//! header) on an ESP32-class device and a header whose `alg` the verifier must pin
//! anyway; here the device needs only one Ed25519 call over the bytes it sends
//! (libsodium `crypto_sign_detached`, Monocypher, or mbedTLS), nothing is
//! canonicalised, and the verifier has no algorithm choice to get wrong. The
//! envelope is versioned so a JWS form can be added as `v: 2`. A device key signs
//! telemetry only (no other message type uses it), so no domain-separation prefix
//! is needed.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;

/// Version of the [`Telemetry`] payload.
pub const TELEMETRY_VERSION: u16 = 1;
/// Version of the [`SignedTelemetry`] envelope.
pub const ENVELOPE_VERSION: u16 = 1;
/// Topic prefix of device topics.
pub const DEVICE_TOPIC_PREFIX: &str = "tad/v1/dev/";
/// Subscription filter covering every device's telemetry.
pub const TELEMETRY_FILTER: &str = "tad/v1/dev/+/telemetry";

/// One telemetry reading (see the module docs for the JSON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Payload version, [`TELEMETRY_VERSION`].
    pub v: u16,
    pub device_id: DeviceId,
    /// Per-device message counter, strictly increasing at the sender.
    pub sequence_no: u64,
    /// When the device took the reading: Unix time, ms.
    pub timestamp: u64,
    /// CPU load, percent (0 to 100).
    pub cpu_usage: f64,
    /// Battery charge, percent (0 to 100).
    pub battery_level: f64,
    /// Sensor name → reading (units as enrolled).
    pub sensors: BTreeMap<String, f64>,
}

/// The signed envelope as published on the device's topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTelemetry {
    /// Envelope version, [`ENVELOPE_VERSION`].
    pub v: u16,
    /// base64url (no padding) of the payload's JSON bytes.
    pub payload: String,
    /// base64url (no padding) of the 64-byte Ed25519 signature over those bytes.
    pub sig: String,
}

/// The envelope, borrowed from the received bytes (the guard's fast path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvelopeRef<'a> {
    pub v: u16,
    #[serde(borrow)]
    pub payload: &'a str,
    #[serde(borrow)]
    pub sig: &'a str,
}

/// The topic device `id` publishes telemetry on.
pub fn topic(id: &DeviceId) -> String {
    format!("{DEVICE_TOPIC_PREFIX}{id}/telemetry")
}

/// The device id level of a telemetry topic (`tad/v1/dev/<id>/telemetry`), not
/// validated; `None` for any other topic.
pub fn device_of_topic(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(DEVICE_TOPIC_PREFIX)?;
    let id = rest.strip_suffix("/telemetry")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

impl Telemetry {
    /// The payload bytes a device signs (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("telemetry serialises")
    }

    /// Signs the payload with `key` and returns the envelope's JSON bytes, ready to
    /// publish (what a device does for each reading).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        seal(&self.to_bytes(), key)
    }
}

/// Wraps already-encoded payload bytes in a signed envelope (JSON bytes). For
/// devices and tests that build the payload themselves.
pub fn seal(payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig: Signature = key.sign(payload);
    serde_json::to_vec(&SignedTelemetry {
        v: ENVELOPE_VERSION,
        payload: URL_SAFE_NO_PAD.encode(payload),
        sig: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
    })
    .expect("envelope serialises")
}

/// Verifies the Ed25519 signature `sig` (64 bytes) over `payload` with `key`
/// (RFC 8032 §5.1.7, strict: `verify_strict`).
pub fn verify(key: &VerifyingKey, payload: &[u8], sig: &[u8; 64]) -> bool {
    key.verify_strict(payload, &Signature::from_bytes(sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Telemetry {
        Telemetry {
            v: TELEMETRY_VERSION,
            device_id: "esp32-1".parse().unwrap(),
            sequence_no: 7,
            timestamp: 1_764_768_000_000,
            cpu_usage: 12.5,
            battery_level: 87.0,
            sensors: [("temperature".to_string(), 21.5)].into(),
        }
    }

    #[test]
    fn topic_round_trips_and_other_topics_are_not_device_topics() {
        let id: DeviceId = "esp32-1".parse().unwrap();
        assert_eq!(topic(&id), "tad/v1/dev/esp32-1/telemetry");
        assert_eq!(device_of_topic(&topic(&id)), Some("esp32-1"));
        for t in [
            "tad/v1/dev//telemetry",
            "tad/v1/dev/a/b/telemetry",
            "tad/v1/gw/gateway-1/flows/0",
            "tad/v1/dev/a/status",
        ] {
            assert_eq!(device_of_topic(t), None, "{t}");
        }
    }

    #[test]
    fn envelope_carries_the_exact_payload_bytes_and_a_valid_signature() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let t = sample();
        let env: SignedTelemetry = serde_json::from_slice(&t.sign(&key)).unwrap();
        let payload = URL_SAFE_NO_PAD.decode(&env.payload).unwrap();
        assert_eq!(payload, t.to_bytes());
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(&env.sig)
            .unwrap()
            .try_into()
            .unwrap();
        assert!(verify(&key.verifying_key(), &payload, &sig));
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        assert!(!verify(&key.verifying_key(), &tampered, &sig));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(!verify(&other.verifying_key(), &payload, &sig));
    }

    #[test]
    fn payload_json_has_seed_004_field_names_and_refuses_unknown_fields() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        for k in [
            "v",
            "device_id",
            "sequence_no",
            "timestamp",
            "cpu_usage",
            "battery_level",
            "sensors",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        let mut extra = v.clone();
        extra["admin"] = true.into();
        let e = serde_json::from_value::<Telemetry>(extra).unwrap_err();
        assert!(e.to_string().contains("admin"), "{e}");
    }
}
