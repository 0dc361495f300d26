//! Detector settings as heard on the bus: the schema each detector accepts (its
//! last retained [`SettingsSchema`], table `settings_schemas`) and its answers to
//! threshold settings (table `settings_acks`: the last [`SettingsAck`] per
//! detector and settings id, with the hash of its audit record). The thresholds
//! API validates changes against the schemas and shows, per detector, the ack of
//! the settings in force.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tad_wire::{SettingsAck, SettingsSchema};

use super::{Store, StoreError, enum_str, json, to_json};

/// Acks kept per detector: those of its newest this many settings ids (by the
/// ack's `at_ms`); older ones are deleted when a new one is stored.
pub const MAX_ACKS_PER_DETECTOR: u32 = 100;

/// A stored settings ack with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingsAckView {
    #[serde(flatten)]
    pub ack: SettingsAck,
    pub audit_hash: String,
}

impl Store {
    /// Stores `schema` as its detector's current one; returns the one it replaced
    /// (none for a detector not heard from before).
    pub fn put_settings_schema(
        &self,
        schema: &SettingsSchema,
    ) -> Result<Option<SettingsSchema>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let prev: Option<String> = tx
            .query_row(
                "SELECT body FROM settings_schemas WHERE detector_id = ?1",
                [schema.detector_id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO settings_schemas(detector_id, at_ms, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(detector_id) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body",
            params![schema.detector_id.as_str(), schema.at_ms, to_json(schema)],
        )?;
        tx.commit()?;
        prev.map(|b| json("settings_schemas", &b)).transpose()
    }

    /// Forgets the schema of `detector_id` (its retained schema was cleared);
    /// returns whether one was held.
    pub fn remove_settings_schema(&self, detector_id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM settings_schemas WHERE detector_id = ?1",
            [detector_id],
        )? > 0)
    }

    /// The schema of every detector heard from, by detector id.
    pub fn settings_schemas(&self) -> Result<Vec<SettingsSchema>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT body FROM settings_schemas ORDER BY detector_id")?;
        let bodies = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        bodies.iter().map(|b| json("settings_schemas", b)).collect()
    }

    /// The ack `detector_id` sent for settings `settings_id` (its last one).
    pub fn settings_ack(
        &self,
        detector_id: &str,
        settings_id: &str,
    ) -> Result<Option<SettingsAckView>, StoreError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT body, audit_hash FROM settings_acks
                 WHERE detector_id = ?1 AND settings_id = ?2",
                [detector_id, settings_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(body, audit_hash)| {
            Ok(SettingsAckView {
                ack: json("settings_acks", &body)?,
                audit_hash,
            })
        })
        .transpose()
    }

    /// Stores `ack` as its detector's answer to its settings id (replacing an
    /// earlier ack of the same id), then keeps only the detector's newest
    /// [`MAX_ACKS_PER_DETECTOR`] acks. One transaction.
    pub fn put_settings_ack(&self, ack: &SettingsAck, audit_hash: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO settings_acks(detector_id, settings_id, at_ms, outcome, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(detector_id, settings_id) DO UPDATE SET at_ms = excluded.at_ms,
                outcome = excluded.outcome, body = excluded.body,
                audit_hash = excluded.audit_hash",
            params![
                ack.detector_id.as_str(),
                ack.id,
                ack.at_ms,
                enum_str(&ack.outcome),
                to_json(ack),
                audit_hash
            ],
        )?;
        tx.execute(
            "DELETE FROM settings_acks WHERE detector_id = ?1 AND rowid NOT IN (
                SELECT rowid FROM settings_acks WHERE detector_id = ?1
                ORDER BY at_ms DESC, rowid DESC LIMIT ?2)",
            params![ack.detector_id.as_str(), MAX_ACKS_PER_DETECTOR],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every detector's ack of settings `settings_id`, by detector id.
    pub fn settings_acks_for(&self, settings_id: &str) -> Result<Vec<SettingsAckView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT body, audit_hash FROM settings_acks WHERE settings_id = ?1
             ORDER BY detector_id",
        )?;
        let rows = stmt
            .query_map([settings_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(body, audit_hash)| {
                Ok(SettingsAckView {
                    ack: json("settings_acks", &body)?,
                    audit_hash,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tad_wire::{SCHEMA_VERSION, SettingKey, SettingKind, SettingsOutcome};

    use super::*;

    fn schema(det: &str, max: f64) -> SettingsSchema {
        SettingsSchema {
            v: SCHEMA_VERSION,
            detector_id: det.parse().unwrap(),
            at_ms: 1,
            keys: vec![SettingKey {
                key: "portscan.vertical_ports".into(),
                kind: SettingKind::Integer,
                min: 1.0,
                max,
                default: 15.0,
                unit: "ports".into(),
                help: "h".into(),
            }],
        }
    }

    fn ack(det: &str, id: &str, at_ms: u64, outcome: SettingsOutcome) -> SettingsAck {
        SettingsAck {
            v: SCHEMA_VERSION,
            id: id.into(),
            detector_id: det.parse().unwrap(),
            at_ms,
            outcome,
            error: None,
            effective: BTreeMap::from([("portscan.vertical_ports".into(), 15.0)]),
        }
    }

    #[test]
    fn schemas_are_replaced_per_detector_and_removable() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(
            s.put_settings_schema(&schema("detector-2", 9.0)).unwrap(),
            None
        );
        assert_eq!(
            s.put_settings_schema(&schema("detector-1", 9.0)).unwrap(),
            None
        );
        let prev = s.put_settings_schema(&schema("detector-1", 99.0)).unwrap();
        assert_eq!(prev, Some(schema("detector-1", 9.0)));
        let all = s.settings_schemas().unwrap();
        assert_eq!(all, [schema("detector-1", 99.0), schema("detector-2", 9.0)]);
        assert!(s.remove_settings_schema("detector-2").unwrap());
        assert!(!s.remove_settings_schema("detector-2").unwrap());
        assert_eq!(s.settings_schemas().unwrap().len(), 1);
    }

    #[test]
    fn the_last_ack_per_settings_id_is_kept_and_old_ids_pruned() {
        let s = Store::open_in_memory().unwrap();
        s.put_settings_ack(&ack("detector-1", "t1", 5, SettingsOutcome::Refused), "h1")
            .unwrap();
        s.put_settings_ack(&ack("detector-1", "t1", 6, SettingsOutcome::Applied), "h2")
            .unwrap();
        s.put_settings_ack(&ack("detector-2", "t1", 7, SettingsOutcome::Refused), "h3")
            .unwrap();
        let got = s.settings_ack("detector-1", "t1").unwrap().unwrap();
        assert_eq!(
            (got.ack.outcome, got.audit_hash.as_str()),
            (SettingsOutcome::Applied, "h2")
        );
        assert!(s.settings_ack("detector-1", "t2").unwrap().is_none());
        let both = s.settings_acks_for("t1").unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].ack.detector_id.as_str(), "detector-2");
        for i in 0..u64::from(MAX_ACKS_PER_DETECTOR) {
            s.put_settings_ack(
                &ack(
                    "detector-1",
                    &format!("n{i}"),
                    100 + i,
                    SettingsOutcome::Applied,
                ),
                "h",
            )
            .unwrap();
        }
        assert!(
            s.settings_ack("detector-1", "t1").unwrap().is_none(),
            "oldest pruned"
        );
        assert!(s.settings_ack("detector-1", "n0").unwrap().is_some());
        assert!(
            s.settings_ack("detector-2", "t1").unwrap().is_some(),
            "per detector"
        );
    }
}
