//! Batches of accepted telemetry and the bounded outbox that holds them while the
//! downstream (broker, detector) is unavailable.
//!
//! A batch closes when it holds [`BatchConfig::max_records`] records or its first
//! record is [`BatchConfig::max_age_ms`] old ([`Batcher::tick`]). Each closed batch
//! carries a SHA-256 (FIPS 180-4) over the exact signed payload bytes and
//! signatures of its records, for the ledger (seed 004: "SHA-256 hashes of
//! validated batches"):
//!
//! ```text
//! sha256 = SHA-256( "tad/v1/telemetry-batch\0"
//!                   || batch_no (u64, big-endian) || opened_ms (u64, big-endian)
//!                   || for each record, in order:
//!                        len(payload) (u32, big-endian) || payload bytes || signature (64 bytes) )
//! ```
//!
//! Anyone holding the batch can recompute it ([`TelemetryBatch::verify_hash`]) and
//! re-verify each record's device signature, since records keep the payload and
//! signature as the device sent them.
//!
//! [`Outbox`] is a bounded FIFO of closed batches: when it is full the oldest batch
//! is dropped and returned to the caller as a [`DroppedBatch`] (to count, alert and
//! audit), never silently.

use std::collections::VecDeque;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::telemetry::Telemetry;

/// Version of [`TelemetryBatch`].
pub const BATCH_VERSION: u16 = 1;
const DOMAIN: &[u8] = b"tad/v1/telemetry-batch\0";

/// One accepted message inside a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// When the guard received it, Unix ms.
    pub arrival_ms: u64,
    /// The signed payload as the device sent it (base64url, no padding).
    pub payload: String,
    /// The device's Ed25519 signature (base64url, no padding).
    pub sig: String,
    /// The payload, decoded.
    pub telemetry: Telemetry,
    /// The anomaly score when the device's model is trained ([`crate::anomaly`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyScore>,
}

/// A score of the device's model and that model's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyScore {
    /// In (0, 1]; higher is more anomalous.
    pub score: f64,
    /// Flagged when `score >= threshold`.
    pub threshold: f64,
}

impl AnomalyScore {
    /// True when flagged.
    pub fn anomalous(&self) -> bool {
        self.score >= self.threshold
    }
}

/// A closed batch, ready to forward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatch {
    /// Version, [`BATCH_VERSION`].
    pub v: u16,
    /// Counts up from 1 within one guard run.
    pub batch_no: u64,
    /// Arrival time of the first record, Unix ms.
    pub opened_ms: u64,
    /// When it was closed, Unix ms.
    pub closed_ms: u64,
    /// SHA-256 of the batch (module docs), lowercase hex.
    pub sha256: String,
    pub records: Vec<BatchRecord>,
}

fn hash_start(batch_no: u64, opened_ms: u64) -> Sha256 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(batch_no.to_be_bytes());
    h.update(opened_ms.to_be_bytes());
    h
}

fn hash_record(h: &mut Sha256, payload: &[u8], sig: &[u8; 64]) {
    h.update((payload.len() as u32).to_be_bytes());
    h.update(payload);
    h.update(sig);
}

impl TelemetryBatch {
    /// Recomputes the hash from the records (module docs) and compares it with
    /// [`sha256`](Self::sha256). False also when a record's payload or signature
    /// is not valid base64url.
    pub fn verify_hash(&self) -> bool {
        let mut h = hash_start(self.batch_no, self.opened_ms);
        for r in &self.records {
            let (Ok(p), Ok(s)) = (
                URL_SAFE_NO_PAD.decode(&r.payload),
                URL_SAFE_NO_PAD.decode(&r.sig),
            ) else {
                return false;
            };
            let Ok(s): Result<[u8; 64], _> = s.try_into() else {
                return false;
            };
            hash_record(&mut h, &p, &s);
        }
        hex::encode(h.finalize()) == self.sha256
    }
}

/// When a batch closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Records per batch at most.
    pub max_records: usize,
    /// Age of the first record at which a batch closes, ms.
    pub max_age_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 256,
            max_age_ms: 1000,
        }
    }
}

/// Collects accepted records into batches (see the module docs).
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    next_no: u64,
    open: Option<(TelemetryBatch, Sha256)>,
}

impl Batcher {
    /// A batcher; `max_records` 0 is taken as 1.
    pub fn new(cfg: BatchConfig) -> Batcher {
        Batcher {
            cfg: BatchConfig {
                max_records: cfg.max_records.max(1),
                ..cfg
            },
            next_no: 1,
            open: None,
        }
    }

    /// Adds a record whose decoded payload bytes and signature are `payload` and
    /// `sig`; returns the batch when this record filled it.
    pub fn push(
        &mut self,
        record: BatchRecord,
        payload: &[u8],
        sig: &[u8; 64],
    ) -> Option<TelemetryBatch> {
        let (b, h) = self.open.get_or_insert_with(|| {
            let no = self.next_no;
            self.next_no += 1;
            let b = TelemetryBatch {
                v: BATCH_VERSION,
                batch_no: no,
                opened_ms: record.arrival_ms,
                closed_ms: 0,
                sha256: String::new(),
                records: Vec::with_capacity(self.cfg.max_records),
            };
            let h = hash_start(no, record.arrival_ms);
            (b, h)
        });
        hash_record(h, payload, sig);
        let at = record.arrival_ms;
        b.records.push(record);
        if b.records.len() >= self.cfg.max_records {
            self.close(at)
        } else {
            None
        }
    }

    /// Closes the open batch when its first record is at least `max_age_ms` old.
    pub fn tick(&mut self, now_ms: u64) -> Option<TelemetryBatch> {
        let due = self
            .open
            .as_ref()
            .is_some_and(|(b, _)| now_ms.saturating_sub(b.opened_ms) >= self.cfg.max_age_ms);
        if due { self.close(now_ms) } else { None }
    }

    /// Closes the open batch now, whatever its size (at shutdown).
    pub fn close(&mut self, now_ms: u64) -> Option<TelemetryBatch> {
        let (mut b, h) = self.open.take()?;
        b.closed_ms = now_ms.max(b.opened_ms);
        b.sha256 = hex::encode(h.finalize());
        Some(b)
    }

    /// Records in the open batch.
    pub fn pending(&self) -> usize {
        self.open.as_ref().map_or(0, |(b, _)| b.records.len())
    }
}

/// A batch the [`Outbox`] had to drop to make room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedBatch {
    pub batch_no: u64,
    pub records: usize,
    pub sha256: String,
}

/// Counters of an [`Outbox`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMetrics {
    /// Batches waiting.
    pub queued_batches: usize,
    /// Batches pushed in total.
    pub pushed_batches: u64,
    /// Batches taken out after delivery.
    pub delivered_batches: u64,
    /// Batches dropped because the outbox was full (oldest first).
    pub dropped_batches: u64,
    /// Records inside the dropped batches.
    pub dropped_records: u64,
}

/// Bounded FIFO of closed batches (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    queue: VecDeque<TelemetryBatch>,
    m: OutboxMetrics,
}

impl Outbox {
    /// An outbox holding at most `capacity` batches (0 is taken as 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            capacity: capacity.max(1),
            queue: VecDeque::new(),
            m: OutboxMetrics::default(),
        }
    }

    /// Queues `b`; when full, first drops the oldest batch and returns what it was.
    pub fn push(&mut self, b: TelemetryBatch) -> Option<DroppedBatch> {
        let dropped = if self.queue.len() >= self.capacity {
            self.queue.pop_front().map(|old| {
                self.m.dropped_batches += 1;
                self.m.dropped_records += old.records.len() as u64;
                tracing::warn!(
                    batch_no = old.batch_no,
                    records = old.records.len(),
                    "telemetry outbox full: dropped the oldest batch"
                );
                DroppedBatch {
                    batch_no: old.batch_no,
                    records: old.records.len(),
                    sha256: old.sha256,
                }
            })
        } else {
            None
        };
        self.queue.push_back(b);
        self.m.pushed_batches += 1;
        dropped
    }

    /// The oldest batch, to send; it stays queued until [`delivered`](Self::delivered).
    pub fn front(&self) -> Option<&TelemetryBatch> {
        self.queue.front()
    }

    /// Removes the oldest batch after the downstream took it.
    pub fn delivered(&mut self) -> Option<TelemetryBatch> {
        let b = self.queue.pop_front()?;
        self.m.delivered_batches += 1;
        Some(b)
    }

    /// Counters.
    pub fn metrics(&self) -> OutboxMetrics {
        OutboxMetrics {
            queued_batches: self.queue.len(),
            ..self.m
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::telemetry::TELEMETRY_VERSION;

    fn record(seq: u64, at: u64) -> (BatchRecord, Vec<u8>, [u8; 64]) {
        let t = Telemetry {
            v: TELEMETRY_VERSION,
            device_id: "d1".parse().unwrap(),
            sequence_no: seq,
            timestamp: at,
            cpu_usage: 1.0,
            battery_level: 50.0,
            sensors: Default::default(),
        };
        let p = t.to_bytes();
        let sig = SigningKey::from_bytes(&[3; 32]).sign(&p).to_bytes();
        (
            BatchRecord {
                arrival_ms: at,
                payload: URL_SAFE_NO_PAD.encode(&p),
                sig: URL_SAFE_NO_PAD.encode(sig),
                telemetry: t,
                anomaly: None,
            },
            p,
            sig,
        )
    }

    #[test]
    fn closes_by_size_and_by_age_with_a_verifiable_hash() {
        let mut b = Batcher::new(BatchConfig {
            max_records: 3,
            max_age_ms: 500,
        });
        let mut closed = vec![];
        for s in 1..=4 {
            let (r, p, sig) = record(s, 1000 + s);
            closed.extend(b.push(r, &p, &sig));
        }
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].records.len(), 3);
        assert!(closed[0].verify_hash());
        assert_eq!(b.pending(), 1);
        assert!(b.tick(1004 + 499).is_none());
        let aged = b.tick(1004 + 500).unwrap();
        assert_eq!((aged.batch_no, aged.records.len()), (2, 1));
        assert!(aged.verify_hash());
        assert_ne!(aged.sha256, closed[0].sha256);
        // Any change to a record breaks the hash.
        let mut bad = closed[0].clone();
        bad.records.swap(0, 1);
        assert!(!bad.verify_hash());
        let mut bad = closed[0].clone();
        bad.records.pop();
        assert!(!bad.verify_hash());
    }

    #[test]
    fn outbox_drops_oldest_first_and_counts_it() {
        let mut o = Outbox::new(2);
        let mut b = Batcher::new(BatchConfig {
            max_records: 2,
            max_age_ms: 10,
        });
        let mut batches = vec![];
        for s in 1..=6 {
            let (r, p, sig) = record(s, s);
            batches.extend(b.push(r, &p, &sig));
        }
        assert_eq!(batches.len(), 3);
        assert_eq!(o.push(batches[0].clone()), None);
        assert_eq!(o.push(batches[1].clone()), None);
        let d = o.push(batches[2].clone()).unwrap();
        assert_eq!((d.batch_no, d.records), (1, 2));
        let m = o.metrics();
        assert_eq!(
            (m.queued_batches, m.dropped_batches, m.dropped_records),
            (2, 1, 2)
        );
        assert_eq!(o.front().unwrap().batch_no, 2);
        assert_eq!(o.delivered().unwrap().batch_no, 2);
        assert_eq!(o.delivered().unwrap().batch_no, 3);
        assert!(o.delivered().is_none());
        assert_eq!(o.metrics().delivered_batches, 2);
    }
}
