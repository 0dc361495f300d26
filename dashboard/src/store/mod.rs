//! The embedded store: one SQLite database (WAL journal) holding what the
//! dashboard heard on the bus and what its operators did, with per-table
//! retention ([`crate::config::RetentionConfig`]).
//!
//! Tables (schema in `store/schema.sql`): `samples` (one row per counters
//! snapshot: the series the charts draw), `flows` (flow record summaries),
//! `alerts`, `verdicts`, `commands`, `acks`, `devices` (trust scores and last
//! seen), `nodes` (gateway/detector/dashboard status, mode, map fill), `blocks`
//! (blocks the dashboard knows of, from verdicts and commands, updated by acks)
//! and `settings` (the current threshold settings).
//!
//! This module opens the database, applies the schema, counts and prunes rows,
//! and holds the one newest-first list query every list read goes through. The
//! reads and writes themselves are grouped by what they are about:
//! `series.rs` (counters samples, the series, flow summaries), `events.rs`
//! (alerts, verdicts, commands, acks, trust updates, threshold settings: the
//! audit-linked events) and `blocks.rs` (blocks, devices and nodes).
//!
//! Every write is one statement or one transaction, so a failed write leaves the
//! store as it was. The connection sits behind a mutex; queries are small (indexed
//! by time) and run inline on the caller's thread.

mod blocks;
mod events;
mod series;

use std::{
    path::Path,
    sync::{Mutex, MutexGuard},
};

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

pub use self::{
    blocks::{BlockOrigin, BlockState, BlockView, DeviceView, NodeView},
    events::{AlertView, CommandView, VerdictView},
    series::{FlowSummary, SeriesPoint},
};
use crate::config::RetentionConfig;

/// The schema, applied on every open (every statement is `IF NOT EXISTS`).
const SCHEMA: &str = include_str!("schema.sql");

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON in {table} is unreadable: {source}")]
    Json {
        table: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Counts of rows, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RowCounts {
    pub samples: u64,
    pub flows: u64,
    pub alerts: u64,
    pub verdicts: u64,
    pub commands: u64,
    pub acks: u64,
    pub devices: u64,
    pub blocks: u64,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// The text of a unit enum as serde writes it (`"port_scan"`).
fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => panic!("not a unit enum: {other:?}"),
    }
}

/// A unit enum back from its text; none for a text it does not know.
fn enum_from<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// A JSON column of `table` decoded.
fn json<T: for<'de> Deserialize<'de>>(table: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Json { table, source })
}

/// A wire type as a JSON column.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("wire types serialise infallibly")
}

/// A newest-first list read of one table: `SELECT columns FROM table
/// [WHERE time_col >= since_ms] ORDER BY time_col DESC, rowid DESC LIMIT limit`.
struct ListQuery {
    table: &'static str,
    /// Selected columns, in the order the row mapper reads them.
    columns: &'static str,
    /// The time column (Unix ms) the list is ordered and filtered by.
    time_col: &'static str,
}

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done write behind
        // (SQLite rolls back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The journal mode in force (`wal` for a file database).
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
    }

    /// Runs `q`: at most `limit` rows, newest first, only `time_col >= since_ms`
    /// when given; each row mapped to a view by `row`.
    fn list<T>(
        &self,
        q: &ListQuery,
        since_ms: Option<u64>,
        limit: u32,
        mut row: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let ListQuery {
            table,
            columns,
            time_col,
        } = q;
        let filter = if since_ms.is_some() {
            format!("WHERE {time_col} >= ?2")
        } else {
            String::new()
        };
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {columns} FROM {table} {filter}
             ORDER BY {time_col} DESC, rowid DESC LIMIT ?1"
        ))?;
        let mut rows = match since_ms {
            Some(since) => stmt.query(params![limit, since])?,
            None => stmt.query(params![limit])?,
        };
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(out)
    }

    /// Whether `sql` (with one parameter, `key`) finds a row.
    fn exists(&self, sql: &str, key: &str) -> Result<bool, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(sql, [key], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Row counts per table.
    pub fn row_counts(&self) -> Result<RowCounts, StoreError> {
        let conn = self.conn();
        let count = |t: &str| -> Result<u64, rusqlite::Error> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
        };
        Ok(RowCounts {
            samples: count("samples")?,
            flows: count("flows")?,
            alerts: count("alerts")?,
            verdicts: count("verdicts")?,
            commands: count("commands")?,
            acks: count("acks")?,
            devices: count("devices")?,
            blocks: count("blocks")?,
        })
    }

    /// Deletes rows older than their retention and expired blocks; returns the
    /// number of rows deleted.
    pub fn prune(&self, now_ms: u64, r: &RetentionConfig) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut deleted = 0;
        for (table, col, days) in [
            ("samples", "at_ms", r.counters_days),
            ("flows", "received_ms", r.flows_days),
            ("alerts", "at_ms", r.alerts_days),
            ("verdicts", "at_ms", r.verdicts_days),
            ("acks", "at_ms", r.acks_days),
            ("commands", "at_ms", r.commands_days),
        ] {
            if days == 0 {
                continue;
            }
            let cutoff = now_ms.saturating_sub(u64::from(days) * 86_400_000);
            deleted += tx.execute(&format!("DELETE FROM {table} WHERE {col} < ?1"), [cutoff])?;
        }
        deleted += tx.execute(
            "DELETE FROM blocks WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
            [now_ms],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use fw_common::filter::BlockReason;
    use tad_wire::{Ack, Action, Outcome, SCHEMA_VERSION, Verdict};

    use super::*;

    fn verdict(id: &str, at_ms: u64, ttl_s: Option<u64>) -> Verdict {
        Verdict {
            v: SCHEMA_VERSION,
            id: id.into(),
            detector_id: "detector-1".parse().unwrap(),
            issued_at_ms: at_ms,
            action: Action::Block,
            target: "192.0.2.7/32".parse().unwrap(),
            ttl_s,
            reason: BlockReason::BruteForce,
            rule: "bruteforce.ssh".into(),
            confidence: 0.8,
            alert_id: None,
            observe_only: false,
        }
    }

    #[test]
    fn file_database_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.sqlite")).unwrap();
        assert_eq!(s.journal_mode().unwrap(), "wal");
    }

    #[test]
    fn prune_drops_rows_past_retention_and_expired_blocks_only() {
        let s = Store::open_in_memory().unwrap();
        let day = 86_400_000;
        let now = 100 * day;
        s.insert_verdict("gw", &verdict("old", now - 91 * day, None), "h")
            .unwrap();
        s.insert_verdict("gw", &verdict("new", now - day, None), "h")
            .unwrap();
        let r = RetentionConfig::default(); // verdicts: 90 days
        assert_eq!(s.prune(now, &r).unwrap(), 1);
        let left: Vec<String> = s
            .verdicts(10)
            .unwrap()
            .into_iter()
            .map(|v| v.verdict.id)
            .collect();
        assert_eq!(left, ["new"]);
        // The permanent block (no TTL) survives; a TTL block expires.
        assert_eq!(s.blocks(now).unwrap().len(), 1);
        let mut v = verdict("ttl", now, Some(60));
        v.target = "192.0.2.8/32".parse().unwrap();
        s.insert_verdict("gw", &v, "h").unwrap();
        assert_eq!(s.blocks(now + 30_000).unwrap().len(), 2);
        assert_eq!(s.blocks(now + 30_000).unwrap()[0].ttl_left_s, Some(30));
        assert_eq!(s.blocks(now + 61_000).unwrap().len(), 1);
        s.prune(now + 61_000, &r).unwrap();
        assert_eq!(s.row_counts().unwrap().blocks, 1);
    }

    #[test]
    fn rejected_ack_marks_the_block_and_unblock_removes_it() {
        let s = Store::open_in_memory().unwrap();
        s.insert_verdict("gw", &verdict("v1", 1000, None), "h")
            .unwrap();
        s.insert_ack(&Ack {
            v: SCHEMA_VERSION,
            id: "v1".into(),
            gateway_id: "gw".parse().unwrap(),
            outcome: Outcome::Rejected,
            error: Some("allowlisted".into()),
            at_ms: 1001,
            apply_us: 5,
        })
        .unwrap();
        let b = &s.blocks(2000).unwrap()[0];
        assert_eq!(b.state, BlockState::Rejected);
        assert_eq!(b.error.as_deref(), Some("allowlisted"));
        let mut un = verdict("v2", 3000, None);
        un.action = Action::Unblock;
        s.insert_verdict("gw", &un, "h").unwrap();
        assert!(s.blocks(4000).unwrap().is_empty());
    }
}
