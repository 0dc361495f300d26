//! The audit-linked events: alerts, verdicts and operator commands (each stored
//! with the hash of its audit record, and each stored once: a redelivery with a
//! known id is recognised; an alert's later version, a merged alert's update,
//! replaces the stored one), the gateways' acks, the detector's trust updates and
//! the current threshold settings. None of them is a block: blocks are what the
//! gateways publish as their state (see `blocks.rs`).

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tad_wire::{Ack, Alert, Command, ThresholdSettings, TrustUpdate, Verdict};

use super::{ListQuery, Store, StoreError, enum_str, json, to_json};

/// A stored alert with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub audit_hash: String,
}

/// Whether `new` is a later version of the merged alert `old` (same id): more
/// detections merged, or as many and seen later. A version that is not (a
/// redelivery, or an older update arriving late) is not stored.
pub fn alert_is_newer(new: &Alert, old: &Alert) -> bool {
    (new.count, new.at_ms) > (old.count, old.at_ms)
}

/// A stored verdict with the gateway it was sent to and its audit hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictView {
    pub gateway_id: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub audit_hash: String,
}

/// A stored operator command with its gateway and audit hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandView {
    pub gateway_id: String,
    #[serde(flatten)]
    pub command: Command,
    pub audit_hash: String,
}

/// The newest-first reads of the event tables.
/// Threshold settings ids kept in the settings history (table
/// `settings_history`), newest by recording order.
pub const MAX_SETTINGS_HISTORY: u32 = 1000;

const ALERTS: ListQuery = ListQuery {
    table: "alerts",
    columns: "body, audit_hash",
    time_col: "at_ms",
};
const VERDICTS: ListQuery = ListQuery {
    table: "verdicts",
    columns: "gateway_id, body, audit_hash",
    time_col: "at_ms",
};
const COMMANDS: ListQuery = ListQuery {
    table: "commands",
    columns: "gateway_id, body, audit_hash",
    time_col: "at_ms",
};
const ACKS: ListQuery = ListQuery {
    table: "acks",
    columns: "body",
    time_col: "at_ms",
};

impl Store {
    /// Whether an alert with this id is stored.
    pub fn has_alert(&self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM alerts WHERE id = ?1", id)
    }

    /// The stored version of the alert with this id, if any.
    pub fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        body.map(|b| json("alerts", &b)).transpose()
    }

    /// Stores an alert with the hash of its audit record; an alert already stored
    /// under this id (a merged alert, [`Alert`]: one attack, one id) is replaced
    /// by this version, which moves to its `at_ms` (last seen) in the lists.
    /// The caller decides which version is newer ([`alert_is_newer`]).
    pub fn insert_alert(&self, alert: &Alert, audit_hash: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO alerts(id, at_ms, gateway_id, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms,
                body = excluded.body, audit_hash = excluded.audit_hash",
            params![
                alert.id,
                alert.at_ms,
                alert.gateway_id.as_str(),
                to_json(alert),
                audit_hash
            ],
        )?;
        Ok(())
    }

    /// Whether a verdict with this id is stored.
    pub fn has_verdict(&self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM verdicts WHERE id = ?1", id)
    }

    /// Stores a (verified) verdict sent to `gateway_id`.
    pub fn insert_verdict(
        &self,
        gateway_id: &str,
        v: &Verdict,
        audit_hash: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO verdicts(id, gateway_id, at_ms, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![v.id, gateway_id, v.issued_at_ms, to_json(v), audit_hash],
        )?;
        Ok(())
    }

    /// Whether a command with this id is stored.
    pub fn has_command(&self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM commands WHERE id = ?1", id)
    }

    /// Stores an operator command sent to `gateway_id`.
    pub fn insert_command(
        &self,
        gateway_id: &str,
        c: &Command,
        audit_hash: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO commands(id, gateway_id, at_ms, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.id, gateway_id, c.issued_at_ms, to_json(c), audit_hash],
        )?;
        Ok(())
    }

    /// Whether this very ack (same gateway, request id, time and outcome) is
    /// stored: a QoS 1 redelivery.
    pub fn has_ack(&self, ack: &Ack) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM acks WHERE id = ?1 AND gateway_id = ?2 AND at_ms = ?3 AND body = ?4",
                params![ack.id, ack.gateway_id.as_str(), ack.at_ms, to_json(ack)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Stores a gateway's ack of a verdict or command.
    pub fn insert_ack(&self, ack: &Ack) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO acks(id, gateway_id, at_ms, body) VALUES (?1, ?2, ?3, ?4)",
            params![ack.id, ack.gateway_id.as_str(), ack.at_ms, to_json(ack)],
        )?;
        Ok(())
    }

    /// Stores a device's new trust score.
    pub fn upsert_trust(&self, t: &TrustUpdate) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO devices(address, detector_id, score, level, behavioural, vulnerability,
                reputation, reason, scored_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT(address) DO UPDATE SET detector_id = excluded.detector_id,
                score = excluded.score, level = excluded.level,
                behavioural = excluded.behavioural, vulnerability = excluded.vulnerability,
                reputation = excluded.reputation, reason = excluded.reason,
                scored_ms = excluded.scored_ms,
                last_seen_ms = MAX(COALESCE(last_seen_ms, 0), excluded.last_seen_ms)",
            params![
                t.device.to_string(),
                t.detector_id.as_str(),
                t.score,
                enum_str(&t.level),
                t.behavioural,
                t.vulnerability,
                t.reputation,
                t.reason,
                t.at_ms
            ],
        )?;
        Ok(())
    }

    /// Stores `t` as the current threshold settings and adds its id to the
    /// settings history (the newest [`MAX_SETTINGS_HISTORY`] ids are kept).
    pub fn set_thresholds(&self, t: &ThresholdSettings) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO settings(name, body) VALUES ('thresholds', ?1)
             ON CONFLICT(name) DO UPDATE SET body = excluded.body",
            [to_json(t)],
        )?;
        tx.execute(
            "INSERT INTO settings_history(id, issued_at_ms, seq)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM settings_history))
             ON CONFLICT(id) DO NOTHING",
            params![t.id, t.issued_at_ms],
        )?;
        tx.execute(
            "DELETE FROM settings_history WHERE seq <= (SELECT MAX(seq) FROM settings_history) - ?1",
            [MAX_SETTINGS_HISTORY],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether settings id `id` was ever recorded as in force here (within the
    /// kept history): a bus message carrying it is an echo, not a change.
    pub fn thresholds_recorded(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM settings_history WHERE id = ?1", [id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// The current threshold settings, if any were set.
    pub fn thresholds(&self) -> Result<Option<ThresholdSettings>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM settings WHERE name = 'thresholds'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| json("settings", &b)).transpose()
    }

    /// Alerts, newest first: at most `limit`, optionally only `at_ms >= since_ms`.
    pub fn alerts(&self, limit: u32, since_ms: Option<u64>) -> Result<Vec<AlertView>, StoreError> {
        // Always filtered (from 0 when no `since_ms`), as the API has always read it.
        self.list(&ALERTS, Some(since_ms.unwrap_or(0)), limit, |r| {
            Ok(AlertView {
                alert: json("alerts", &r.get::<_, String>(0)?)?,
                audit_hash: r.get(1)?,
            })
        })
    }

    /// Verdicts, newest first.
    pub fn verdicts(&self, limit: u32) -> Result<Vec<VerdictView>, StoreError> {
        self.list(&VERDICTS, None, limit, |r| {
            Ok(VerdictView {
                gateway_id: r.get(0)?,
                verdict: json("verdicts", &r.get::<_, String>(1)?)?,
                audit_hash: r.get(2)?,
            })
        })
    }

    /// Operator commands, newest first.
    pub fn commands(&self, limit: u32) -> Result<Vec<CommandView>, StoreError> {
        self.list(&COMMANDS, None, limit, |r| {
            Ok(CommandView {
                gateway_id: r.get(0)?,
                command: json("commands", &r.get::<_, String>(1)?)?,
                audit_hash: r.get(2)?,
            })
        })
    }

    /// Acks, newest first.
    pub fn acks(&self, limit: u32) -> Result<Vec<Ack>, StoreError> {
        self.list(&ACKS, None, limit, |r| {
            json("acks", &r.get::<_, String>(0)?)
        })
    }
}
