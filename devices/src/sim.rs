//! A simulated ESP32-class device: an Ed25519 key, a sequence counter, and normal
//! readings inside its enrolled ranges. For tests, the benchmark and the testbed's
//! device simulators (deterministic from a seed: [`SimDevice::from_seed`]).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use crate::{
    ids::DeviceId,
    registry::{DEFAULT_BURST, DEFAULT_RATE_PER_MIN, Enrollment, SensorRange, encode_public_key},
    rng::SplitMix64,
    telemetry::{TELEMETRY_VERSION, Telemetry, topic},
};

/// A simulated device (module docs).
#[derive(Debug)]
pub struct SimDevice {
    pub id: DeviceId,
    key: SigningKey,
    /// Sequence number of the next reading.
    pub next_seq: u64,
    sensors: BTreeMap<String, SensorRange>,
    battery: f64,
    rng: SplitMix64,
}

impl SimDevice {
    /// A device with key `key` reporting `sensors` (readings in the middle fifth of
    /// each range).
    pub fn new(
        id: DeviceId,
        key: SigningKey,
        sensors: BTreeMap<String, SensorRange>,
        seed: u64,
    ) -> SimDevice {
        SimDevice {
            id,
            key,
            next_seq: 1,
            sensors,
            battery: 90.0,
            rng: SplitMix64(seed),
        }
    }

    /// A device whose key and readings follow from `seed` (a test key: anyone with
    /// the seed has it; real devices get theirs from `tad-device keygen`), with sensors
    /// `temperature` (−20..60 °C) and `humidity` (0..100 %).
    pub fn from_seed(id: &str, seed: u64) -> SimDevice {
        let mut rng = SplitMix64(seed);
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let sensors = [
            (
                "temperature".to_string(),
                SensorRange {
                    min: -20.0,
                    max: 60.0,
                },
            ),
            (
                "humidity".to_string(),
                SensorRange {
                    min: 0.0,
                    max: 100.0,
                },
            ),
        ]
        .into();
        SimDevice::new(
            DeviceId::parse(id).expect("valid simulated device id"),
            SigningKey::from_bytes(&k),
            sensors,
            rng.next_u64(),
        )
    }

    /// The device's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Its enrollment (defaults for rate and burst, no command kinds).
    pub fn enrollment(&self) -> Enrollment {
        Enrollment {
            public_key: encode_public_key(&self.key.verifying_key()),
            sensors: self.sensors.clone(),
            rate_per_min: DEFAULT_RATE_PER_MIN,
            burst: DEFAULT_BURST,
            commands: Vec::new(),
            enrolled_at_ms: 0,
        }
    }

    /// The next normal reading, taken at `now_ms` (takes a sequence number).
    pub fn reading(&mut self, now_ms: u64) -> Telemetry {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.battery = (self.battery - 0.001).max(5.0);
        let mut sensors = BTreeMap::new();
        for (name, r) in &self.sensors {
            let mid = (r.min + r.max) / 2.0;
            let w = (r.max - r.min) / 10.0;
            sensors.insert(name.clone(), mid + w * (self.rng.next_f64() - 0.5) * 2.0);
        }
        Telemetry {
            v: TELEMETRY_VERSION,
            device_id: self.id.clone(),
            sequence_no: seq,
            timestamp: now_ms,
            cpu_usage: 10.0 + 10.0 * self.rng.next_f64(),
            battery_level: self.battery,
            sensors,
        }
    }

    /// The topic and signed envelope bytes of `t` (any reading, also a tampered one).
    pub fn seal(&self, t: &Telemetry) -> (String, Vec<u8>) {
        (topic(&self.id), t.sign(&self.key))
    }

    /// The next normal reading at `now_ms`, signed: (topic, envelope bytes).
    pub fn publish(&mut self, now_ms: u64) -> (String, Vec<u8>) {
        let t = self.reading(now_ms);
        self.seal(&t)
    }
}
