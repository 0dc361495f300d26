//! Detector settings on the dashboard's side: the schemas detectors publish
//! (retained `SettingsSchema` on `tad/v1/det/<det>/settings/schema`), their acks
//! (`SettingsAck` on `tad/v1/det/<det>/settings/acks`), the check of a threshold
//! change against every known schema, the audit record of a change, and the
//! view `GET /api/v1/thresholds` answers with.
//!
//! Data flow: detector → schema/ack → [`App::on_settings_schema`] /
//! [`App::on_settings_ack`] (called by [`App::ingest`]) → store (+ audit for acks
//! and schema changes). Operator → `api/thresholds.rs` → [`check_values`] →
//! publish `ThresholdSettings` → [`App::record_thresholds`] (audit `old → new`,
//! store) → detectors ack → [`App::thresholds_view`] shows applied / refused /
//! pending per detector.
//!
//! A `ThresholdSettings`' `values` is the whole override set: a key left out
//! returns to the detector's default at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard},
};

use serde::Serialize;
use tad_wire::{SettingsAck, SettingsOutcome, SettingsSchema, ThresholdSettings};

use crate::{
    app::App,
    audit::RecordKind,
    ingest::{IngestError, Ingested, decode, same},
    store::{SettingsAckView, StoreError},
};

/// Why a threshold change is refused before anything is stored or sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsRefusal {
    /// No detector has published its settings schema yet, so nothing can be
    /// checked (API: 503).
    #[error(
        "no detector settings schema is known yet (detectors publish it retained on \
         tad/v1/det/<det>/settings/schema when they connect): nothing stored or sent"
    )]
    NoSchema,
    /// A key unknown to, or a value out of the range of, one detector's schema
    /// (API: 400). The message starts with the key.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a whole override set against every known schema: each must accept
/// every key and value ([`SettingsSchema::check`]). An empty set (every override
/// removed: defaults everywhere) needs no schema.
///
/// # Errors
/// [`SettingsRefusal::NoSchema`] for a non-empty set when `schemas` is empty;
/// [`SettingsRefusal::Invalid`] naming the first offending key (and the detector
/// whose schema refuses it).
pub fn check_values(
    schemas: &[SettingsSchema],
    values: &BTreeMap<String, f64>,
) -> Result<(), SettingsRefusal> {
    if values.is_empty() {
        return Ok(());
    }
    if schemas.is_empty() {
        return Err(SettingsRefusal::NoSchema);
    }
    for s in schemas {
        s.check(values).map_err(|e| {
            if e.contains(s.detector_id.as_str()) {
                SettingsRefusal::Invalid(e)
            } else {
                SettingsRefusal::Invalid(format!("{e} (schema of {})", s.detector_id))
            }
        })?;
    }
    Ok(())
}

/// The audit record of a threshold change (`kind: thresholds`).
#[derive(Debug, Serialize)]
pub struct SettingsChange<'a> {
    /// `api` (issued by this dashboard) or `bus` (heard: another dashboard's, or
    /// the retained one at start).
    pub via: &'static str,
    /// Who: the `operator` of the settings.
    pub operator: &'a str,
    /// The settings id the detectors ack.
    pub id: &'a str,
    pub issued_at_ms: u64,
    /// The override set before (empty: none).
    pub old: &'a BTreeMap<String, f64>,
    /// The override set after (the whole set sent).
    pub new: &'a BTreeMap<String, f64>,
}

/// Where a detector is with the settings in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// It applied them (its ack's `effective` holds the values in force).
    Applied,
    /// It refused them (`error` says why); its previous settings stay in force.
    Refused,
    /// No ack for the current settings id yet.
    Pending,
    /// No settings were ever set: the detector runs its defaults.
    None,
}

/// One detector's state with respect to the settings in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectorSettings {
    pub detector_id: String,
    pub status: AckStatus,
    /// Whether its schema is known (changes are checked against it).
    pub has_schema: bool,
    /// Its ack of the current settings id, with the ack's audit hash.
    pub ack: Option<SettingsAckView>,
}

/// `GET /api/v1/thresholds`: the settings in force, the known schemas and each
/// detector's ack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdsView {
    /// Id of the settings in force; none before the first change.
    pub id: Option<String>,
    pub operator: Option<String>,
    pub issued_at_ms: Option<u64>,
    /// The override set in force (empty: detector defaults everywhere).
    pub values: BTreeMap<String, f64>,
    /// The schema of every detector heard from (keys with kind, min, max,
    /// default, unit, help), by detector id.
    pub schemas: Vec<SettingsSchema>,
    /// Every detector with a schema or an ack of the current id, by id.
    pub detectors: Vec<DetectorSettings>,
}

/// Held by an API change from reading the current set until the new one is
/// published and stored (two concurrent changes cannot both merge into the same
/// old set: the second would silently drop the first's keys), and by the
/// ingest of a bus settings message from its staleness check until it is
/// stored (the echo of a change published but not yet stored would otherwise
/// be taken for a new set and could overwrite a newer one).
static CHANGING: Mutex<()> = Mutex::new(());

/// Takes [`CHANGING`] (a poisoned lock is still a lock: the guarded data is in
/// the store, not in the mutex).
pub fn changing_thresholds() -> MutexGuard<'static, ()> {
    CHANGING.lock().unwrap_or_else(|p| p.into_inner())
}

impl App {
    /// Ingests a detector's settings schema (retained): stores it as the
    /// detector's current one, audited (`settings_schema`) when it is new or its
    /// keys changed. An empty payload (the retained message cleared) forgets it.
    ///
    /// # Errors
    /// [`IngestError::Decode`], [`IngestError::IdMismatch`] (payload's detector is
    /// not the topic's), store and audit errors.
    pub fn on_settings_schema(
        &self,
        topic: &str,
        detector: &str,
        payload: &[u8],
    ) -> Result<Ingested, IngestError> {
        if payload.is_empty() {
            if self.store.remove_settings_schema(detector)? {
                tracing::info!(detector, "settings schema cleared; forgotten");
            }
            return Ok(Ingested::Stored("settings_schema"));
        }
        let s: SettingsSchema = decode(topic, payload)?;
        same(topic, detector, s.detector_id.as_str())?;
        let prev = self.store.put_settings_schema(&s)?;
        if prev.as_ref().is_none_or(|p| p.keys != s.keys) {
            let hash = self.audit(RecordKind::SettingsSchema, &s)?;
            tracing::info!(detector, keys = s.keys.len(), audit_hash = %hash,
                "settings schema stored");
            Ok(Ingested::Stored("settings_schema"))
        } else {
            Ok(Ingested::Duplicate("settings_schema"))
        }
    }

    /// Ingests a detector's settings ack: audited (`settings_ack`: detector,
    /// settings id, outcome, error, effective values), then stored as the
    /// detector's last answer to that id. A redelivery (same ack already stored)
    /// is neither audited nor stored again.
    ///
    /// # Errors
    /// As [`App::on_settings_schema`].
    pub fn on_settings_ack(
        &self,
        topic: &str,
        detector: &str,
        payload: &[u8],
    ) -> Result<Ingested, IngestError> {
        let a: SettingsAck = decode(topic, payload)?;
        same(topic, detector, a.detector_id.as_str())?;
        if self
            .store
            .settings_ack(detector, &a.id)?
            .is_some_and(|held| held.ack == a)
        {
            return Ok(Ingested::Duplicate("settings_ack"));
        }
        let hash = self.audit(RecordKind::SettingsAck, &a)?;
        self.store.put_settings_ack(&a, &hash)?;
        match a.outcome {
            SettingsOutcome::Applied => {
                tracing::info!(detector, settings = %a.id, audit_hash = %hash, "settings applied")
            }
            SettingsOutcome::Refused => {
                tracing::warn!(detector, settings = %a.id, error = ?a.error, audit_hash = %hash,
                    "settings refused")
            }
        }
        Ok(Ingested::Stored("settings_ack"))
    }

    /// Audits a threshold change (`thresholds`: who, old → new set, `via`) and
    /// stores `t` as the settings in force; returns the audit hash.
    ///
    /// # Errors
    /// Store and audit errors (nothing is stored when the audit fails).
    pub fn record_thresholds(
        &self,
        t: &ThresholdSettings,
        via: &'static str,
    ) -> Result<String, IngestError> {
        let old = self
            .store
            .thresholds()?
            .map(|c| c.values)
            .unwrap_or_default();
        let hash = self.audit(
            RecordKind::Thresholds,
            &SettingsChange {
                via,
                operator: &t.operator,
                id: &t.id,
                issued_at_ms: t.issued_at_ms,
                old: &old,
                new: &t.values,
            },
        )?;
        self.store.set_thresholds(t)?;
        Ok(hash)
    }

    /// The settings in force, the known schemas and each detector's ack of the
    /// current settings id.
    ///
    /// # Errors
    /// Store errors.
    pub fn thresholds_view(&self) -> Result<ThresholdsView, StoreError> {
        let current = self.store.thresholds()?;
        let schemas = self.store.settings_schemas()?;
        let acks = match &current {
            Some(t) => self.store.settings_acks_for(&t.id)?,
            None => Vec::new(),
        };
        let with_schema: BTreeSet<&str> = schemas.iter().map(|s| s.detector_id.as_str()).collect();
        let ids: BTreeSet<String> = with_schema
            .iter()
            .map(|d| d.to_string())
            .chain(acks.iter().map(|a| a.ack.detector_id.to_string()))
            .collect();
        let detectors = ids
            .into_iter()
            .map(|d| {
                let ack = acks
                    .iter()
                    .find(|a| a.ack.detector_id.as_str() == d)
                    .cloned();
                let status = match (&current, &ack) {
                    (None, _) => AckStatus::None,
                    (Some(_), None) => AckStatus::Pending,
                    (Some(_), Some(a)) => match a.ack.outcome {
                        SettingsOutcome::Applied => AckStatus::Applied,
                        SettingsOutcome::Refused => AckStatus::Refused,
                    },
                };
                DetectorSettings {
                    has_schema: with_schema.contains(d.as_str()),
                    detector_id: d,
                    status,
                    ack,
                }
            })
            .collect();
        Ok(match current {
            Some(t) => ThresholdsView {
                id: Some(t.id),
                operator: Some(t.operator),
                issued_at_ms: Some(t.issued_at_ms),
                values: t.values,
                schemas,
                detectors,
            },
            None => ThresholdsView {
                id: None,
                operator: None,
                issued_at_ms: None,
                values: BTreeMap::new(),
                schemas,
                detectors,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use tad_wire::{SCHEMA_VERSION, SettingKey, SettingKind};

    use super::*;

    fn schema(det: &str, keys: &[(&str, f64, f64)]) -> SettingsSchema {
        SettingsSchema {
            v: SCHEMA_VERSION,
            detector_id: det.parse().unwrap(),
            at_ms: 0,
            keys: keys
                .iter()
                .map(|(k, min, max)| SettingKey {
                    key: (*k).into(),
                    kind: SettingKind::Integer,
                    min: *min,
                    max: *max,
                    default: *min,
                    unit: String::new(),
                    help: String::new(),
                })
                .collect(),
        }
    }

    fn set(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
        kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn every_schema_must_accept_every_key_and_value() {
        let one = schema("detector-1", &[("a.x", 1.0, 10.0), ("a.y", 0.0, 5.0)]);
        let two = schema("detector-2", &[("a.x", 1.0, 4.0)]);
        let both = [one.clone(), two];
        assert_eq!(check_values(&both, &set(&[("a.x", 3.0)])), Ok(()));
        let SettingsRefusal::Invalid(e) = check_values(&both, &set(&[("a.x", 7.0)])).unwrap_err()
        else {
            panic!("not invalid")
        };
        assert!(e.starts_with("a.x: 7 is outside [1, 4]"), "{e}");
        assert!(e.ends_with("(schema of detector-2)"), "{e}");
        let SettingsRefusal::Invalid(e) = check_values(&both, &set(&[("a.y", 1.0)])).unwrap_err()
        else {
            panic!("not invalid")
        };
        assert!(
            e.starts_with("a.y: unknown setting (detector detector-2"),
            "{e}"
        );
        assert_eq!(check_values(&[one], &set(&[("a.y", 1.0)])), Ok(()));
    }

    #[test]
    fn no_schema_refuses_a_set_but_not_the_empty_one() {
        assert_eq!(
            check_values(&[], &set(&[("a.x", 3.0)])),
            Err(SettingsRefusal::NoSchema)
        );
        assert!(
            SettingsRefusal::NoSchema
                .to_string()
                .contains("no detector settings schema")
        );
        assert_eq!(check_values(&[], &BTreeMap::new()), Ok(()));
    }
}
