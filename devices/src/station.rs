//! The base station (seed 004): the guard, the per-device anomaly models, the
//! batcher, the bounded outbox and the trust ledger wired together, as one value
//! the gateway daemon runs in a task:
//!
//! ```text
//! MQTT publish (topic, payload, arrival ms) ──► Station::handle ──► StationOutput
//!     Guard::process ── refused ──► alerts ──► TrustLedger::on_alert ──► trust entries
//!            │ accepted
//!            ▼
//!     DeviceModels::observe (score; ≥ threshold: anomaly flag + weak trust evidence)
//!            ▼
//!     Batcher ── closed batch ──► Outbox (bounded, drop-oldest, counted)
//!                         └──► TrustLedger::on_batch (heartbeats, with the batch hash)
//! ```
//!
//! The daemon sends `outbox().front()` downstream and calls `outbox().delivered()`
//! once the broker took it; it calls [`Station::tick`] periodically (closes aged
//! batches) and appends every [`TrustEntry`] and batch hash to the audit log. The
//! replay windows are committed inside [`Station::handle`] (guard); the trust
//! ledger is saved at the end of each `handle`/`tick` that changed it.

use serde::{Deserialize, Serialize};

use crate::{
    anomaly::{DeviceModels, ForestConfig},
    batch::{BatchConfig, Batcher, DroppedBatch, Outbox, TelemetryBatch},
    guard::{Arrival, DeviceAlert, Guard, GuardConfig, GuardError},
    ids::DeviceId,
    registry::Registry,
    trust::{TrustConfig, TrustEntry, TrustError, TrustLedger},
};

/// Settings of the station (the gateway's `[devices]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StationConfig {
    pub guard: GuardConfig,
    pub batch: BatchConfig,
    /// Closed batches held while the downstream is unavailable.
    pub outbox_batches: usize,
    pub trust: TrustConfig,
    /// Per-device Isolation Forest; `None` disables scoring.
    pub anomaly: Option<ForestConfig>,
}

impl Default for StationConfig {
    fn default() -> Self {
        StationConfig {
            guard: GuardConfig::default(),
            batch: BatchConfig::default(),
            outbox_batches: 1024,
            trust: TrustConfig::default(),
            anomaly: Some(ForestConfig::default()),
        }
    }
}

/// Errors opening or saving the station's state.
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// An accepted message whose score reached the device's threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyFlag {
    pub device_id: DeviceId,
    pub sequence_no: u64,
    pub at_ms: u64,
    pub score: f64,
    pub threshold: f64,
}

/// What a [`Station::handle`] or [`Station::tick`] produced.
#[derive(Debug, Default)]
pub struct StationOutput {
    /// Messages accepted in this call.
    pub accepted: usize,
    /// One per refused message.
    pub alerts: Vec<DeviceAlert>,
    /// Accepted but anomalous messages.
    pub anomalies: Vec<AnomalyFlag>,
    /// Trust changes, in order.
    pub trust: Vec<TrustEntry>,
    /// Hashes of batches that closed and went into the outbox (for the ledger).
    pub closed: Vec<(u64, String)>,
    /// Batches the full outbox dropped (oldest first).
    pub dropped: Vec<DroppedBatch>,
    /// The trust ledger could not be saved (changes stay in memory; retried).
    pub save_error: Option<String>,
}

/// Counters of the station, for `/metrics` and `status --json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StationMetrics {
    /// Telemetry messages received (= accepted + refused).
    pub received: u64,
    pub accepted: u64,
    /// Refusals by reason (every reason, zeros included).
    pub refused: crate::guard::RefusalCounts,
    pub outbox: crate::batch::OutboxMetrics,
    /// Records in the open (not yet closed) batch.
    pub pending_records: usize,
}

/// The station (module docs).
#[derive(Debug)]
pub struct Station {
    guard: Guard,
    models: Option<DeviceModels>,
    batcher: Batcher,
    outbox: Outbox,
    ledger: TrustLedger,
}

impl Station {
    /// Opens the guard's replay state and the trust ledger of `cfg`.
    pub fn open(registry: &Registry, cfg: StationConfig) -> Result<Station, StationError> {
        Ok(Station {
            guard: Guard::new(registry, cfg.guard)?,
            models: cfg.anomaly.map(DeviceModels::new),
            batcher: Batcher::new(cfg.batch),
            outbox: Outbox::new(cfg.outbox_batches),
            ledger: TrustLedger::open(cfg.trust)?,
        })
    }

    /// Runs a round of received messages through the pipeline (module docs).
    pub fn handle(&mut self, msgs: &[Arrival<'_>]) -> StationOutput {
        let round = self.guard.process(msgs);
        let mut out = StationOutput {
            accepted: round.accepted.len(),
            ..StationOutput::default()
        };
        for a in round.alerts {
            out.trust.extend(self.ledger.on_alert(&a));
            out.alerts.push(a);
        }
        for mut acc in round.accepted {
            let t = &acc.record.telemetry;
            if let (Some(models), Some(e)) = (
                self.models.as_mut(),
                self.guard.enrollment(t.device_id.as_str()),
            ) {
                let score = models.observe(t, e);
                acc.record.anomaly = score;
                if let Some(a) = score.filter(|a| a.anomalous()) {
                    let flag = AnomalyFlag {
                        device_id: t.device_id.clone(),
                        sequence_no: t.sequence_no,
                        at_ms: acc.record.arrival_ms,
                        score: a.score,
                        threshold: a.threshold,
                    };
                    out.trust.extend(self.ledger.on_anomaly(
                        &flag.device_id,
                        flag.score,
                        flag.threshold,
                        flag.at_ms,
                    ));
                    out.anomalies.push(flag);
                }
            }
            if let Some(b) = self.batcher.push(acc.record, &acc.payload, &acc.sig) {
                self.close(b, &mut out);
            }
        }
        self.save(&mut out);
        out
    }

    /// Closes the open batch when it is old enough.
    pub fn tick(&mut self, now_ms: u64) -> StationOutput {
        let mut out = StationOutput::default();
        if let Some(b) = self.batcher.tick(now_ms) {
            self.close(b, &mut out);
        }
        self.save(&mut out);
        out
    }

    /// Closes the open batch now, whatever its age (before shutdown).
    pub fn flush(&mut self, now_ms: u64) -> StationOutput {
        let mut out = StationOutput::default();
        if let Some(b) = self.batcher.close(now_ms) {
            self.close(b, &mut out);
        }
        self.save(&mut out);
        out
    }

    fn close(&mut self, b: TelemetryBatch, out: &mut StationOutput) {
        out.trust.extend(self.ledger.on_batch(&b));
        out.closed.push((b.batch_no, b.sha256.clone()));
        out.dropped.extend(self.outbox.push(b));
    }

    fn save(&mut self, out: &mut StationOutput) {
        if let Err(e) = self.ledger.save() {
            tracing::error!(error = %e, "cannot save the trust ledger");
            out.save_error = Some(e.to_string());
        }
    }

    /// Counters.
    pub fn metrics(&self) -> StationMetrics {
        StationMetrics {
            received: self.guard.received(),
            accepted: self.guard.accepted(),
            refused: *self.guard.counts(),
            outbox: self.outbox.metrics(),
            pending_records: self.batcher.pending(),
        }
    }

    /// The guard (counters, enrollments).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Replaces the enrolled devices.
    pub fn reload_registry(&mut self, r: &Registry) -> Result<(), GuardError> {
        self.guard.reload_registry(r)
    }

    /// The outbox of closed batches.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The trust ledger (for command vetting and the scanner).
    pub fn ledger(&mut self) -> &mut TrustLedger {
        &mut self.ledger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_the_defaults() {
        let text = include_str!("../devices.example.toml");
        let cfg: StationConfig = toml::from_str(text).expect("example parses");
        assert_eq!(cfg, StationConfig::default());
        let e = toml::from_str::<StationConfig>("[guard]\nmax_skew = 1\n").unwrap_err();
        assert!(e.to_string().contains("max_skew"), "{e}");
    }
}
