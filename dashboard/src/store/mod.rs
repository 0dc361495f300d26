//! The embedded store: one SQLite database (WAL journal) holding what the
//! dashboard heard on the bus and what its operators did, with per-table
//! retention ([`crate::config::RetentionConfig`]).
//!
//! Tables (schema in `store/schema.sql`): `samples` (one row per counters
//! snapshot: the series the charts draw), `flows` (flow record summaries),
//! `alerts`, `verdicts`, `commands`, `acks`, `devices` (trust scores and last
//! seen), `nodes` (gateway/detector/dashboard status, mode, map fill),
//! `gateway_state` (what each gateway enforces, from its published state: the
//! only source of the Blocks page), `settings` (the current threshold
//! settings), `settings_schemas` (each detector's last settings schema) and
//! `settings_acks` (each detector's last ack per settings id).
//!
//! This module opens the database, applies the schema, counts and prunes rows,
//! and holds the one newest-first list query every list read goes through. The
//! reads and writes themselves are grouped by what they are about:
//! `series.rs` (counters samples, the series, flow summaries), `events.rs`
//! (alerts, verdicts, commands, acks, trust updates, threshold settings: the
//! audit-linked events), `settings.rs` (detector settings schemas and acks:
//! tables `settings_schemas`, `settings_acks`), `blocks.rs` (gateway state,
//! the blocks and pending commands derived from it, devices and nodes) and
//! `devices.rs` (the IoT device reports of issue 17: tables `iot_*`, created by
//! its own schema).
//!
//! Every write is one statement or one transaction, so a failed write leaves the
//! store as it was. The connection sits behind a mutex; queries are small (indexed
//! by time) and run inline on the caller's thread.

mod blocks;
mod devices;
mod events;
mod series;
mod settings;

use std::{
    path::Path,
    sync::{Mutex, MutexGuard},
};

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

pub use self::{
    blocks::{
        BlockView, DeltaOutcome, DeviceView, HeldState, MAX_PENDING, NodeView, PENDING_WINDOW_MS,
        PendingCommand, PendingStatus, ProtectedView,
    },
    devices::{
        BatchView, DecisionView, DeviceQuery, IotDevice, IotGateway, IotReport, RefusalView,
        TelemetryPoint, TrustChangeView, VulnView,
    },
    events::{AlertView, CommandView, MAX_SETTINGS_HISTORY, VerdictView, alert_is_newer},
    series::{FlowSummary, SeriesPoint},
    settings::{MAX_ACKS_PER_DETECTOR, SettingsAckView},
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
    /// Gateways with a held state.
    pub gateway_state: u64,
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
        // The IoT device tables (`devices.rs`).
        conn.execute_batch(devices::SCHEMA)?;
        // A state held from an earlier run takes deltas only after a snapshot: the
        // gateway may have restarted (revision 0 again) meanwhile.
        conn.execute("UPDATE gateway_state SET synced = 0", [])?;
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
            gateway_state: count("gateway_state")?,
        })
    }

    /// Deletes rows older than their retention; returns the number of rows
    /// deleted. (Expired block entries are hidden at read time and leave with the
    /// gateway's next delta or snapshot.)
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
        // IoT device reports: telemetry samples as counters, the rest as alerts.
        for (table, col, samples) in devices::PRUNED {
            let days = if samples {
                r.counters_days
            } else {
                r.alerts_days
            };
            if days == 0 {
                continue;
            }
            let cutoff = now_ms.saturating_sub(u64::from(days) * 86_400_000);
            deleted += tx.execute(&format!("DELETE FROM {table} WHERE {col} < ?1"), [cutoff])?;
        }
        tx.commit()?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use fw_common::filter::BlockReason;
    use tad_wire::{
        Ack, Action, BlockOrigin, Command, EnforcedBlock, GatewayState, GatewayStateDelta,
        LimitsView, Mode, Outcome, RefusalReason, RemovalCause, RemovedBlock, SCHEMA_VERSION,
        Verdict,
    };

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
            port: None,
        }
    }

    fn entry(prefix: &str, origin: BlockOrigin, expires_at_ms: Option<u64>) -> EnforcedBlock {
        EnforcedBlock {
            prefix: prefix.parse().unwrap(),
            origin,
            provisional: false,
            reason: BlockReason::Manual,
            rule: None,
            by: Some("root".into()),
            created_ms: 1_000,
            expires_at_ms,
            hits: 3,
        }
    }

    fn state(rev: u64, at_ms: u64, blocks: Vec<EnforcedBlock>) -> GatewayState {
        GatewayState {
            v: SCHEMA_VERSION,
            gateway_id: "gateway-1".parse().unwrap(),
            rev,
            at_ms,
            mode: Mode::Enforce,
            blocks,
            allow: vec![],
            limits: LimitsView::default(),
            refusals: Default::default(),
            protected: vec![],
        }
    }

    fn delta(rev: u64, at_ms: u64) -> GatewayStateDelta {
        GatewayStateDelta {
            v: SCHEMA_VERSION,
            gateway_id: "gateway-1".parse().unwrap(),
            rev,
            at_ms,
            upserted: vec![],
            removed: vec![],
            mode: None,
            allow: None,
            refusals: None,
            limits: None,
            protected: None,
        }
    }

    fn prefixes(s: &Store, now_ms: u64) -> Vec<String> {
        let mut p: Vec<String> = s
            .blocks(now_ms)
            .unwrap()
            .iter()
            .map(|b| b.prefix.to_string())
            .collect();
        p.sort();
        p
    }

    #[test]
    fn file_database_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.sqlite")).unwrap();
        assert_eq!(s.journal_mode().unwrap(), "wal");
    }

    #[test]
    fn prune_drops_rows_past_retention_only() {
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
        // A verdict is not a block: only gateway state makes blocks.
        assert!(s.blocks(now).unwrap().is_empty());
    }

    #[test]
    fn blocks_are_the_held_state_with_expired_entries_hidden() {
        let s = Store::open_in_memory().unwrap();
        let snap = state(
            4,
            5_000,
            vec![
                entry("192.0.2.7/32", BlockOrigin::Cli, None),
                entry("198.51.100.0/24", BlockOrigin::Feed, Some(60_000)),
            ],
        );
        assert_eq!(s.put_gateway_state(&snap, 5_001).unwrap(), None);
        assert_eq!(prefixes(&s, 10_000), ["192.0.2.7/32", "198.51.100.0/24"]);
        let feed = s
            .blocks(30_000)
            .unwrap()
            .into_iter()
            .find(|b| b.origin == BlockOrigin::Feed)
            .unwrap();
        assert_eq!(feed.ttl_left_s, Some(30));
        assert_eq!(feed.gateway_id, "gateway-1");
        assert_eq!(feed.state_at_ms, 5_000);
        // Past its expiry the entry is hidden even before the gateway says so.
        assert_eq!(prefixes(&s, 60_000), ["192.0.2.7/32"]);
        assert_eq!(s.row_counts().unwrap().gateway_state, 1);
    }

    #[test]
    fn deltas_apply_in_order_and_a_gap_waits_for_the_next_snapshot() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(
            s.apply_gateway_delta(&delta(1, 1), 1).unwrap(),
            DeltaOutcome::Gap { held_rev: None }
        );
        s.put_gateway_state(
            &state(
                4,
                5_000,
                vec![entry("192.0.2.7/32", BlockOrigin::Cli, None)],
            ),
            1,
        )
        .unwrap();
        let mut d = delta(5, 6_000);
        d.upserted = vec![entry("203.0.113.9/32", BlockOrigin::Command, None)];
        d.removed = vec![RemovedBlock {
            prefix: "192.0.2.7/32".parse().unwrap(),
            cause: RemovalCause::Expired,
        }];
        d.refusals = Some([(RefusalReason::BadSignature, 2)].into());
        assert_eq!(
            s.apply_gateway_delta(&d, 2).unwrap(),
            DeltaOutcome::Applied {
                refusals_before: Default::default(),
                protected_before: vec![],
            }
        );
        assert_eq!(prefixes(&s, 7_000), ["203.0.113.9/32"]);
        let h = s.gateway_state("gateway-1").unwrap().unwrap();
        assert_eq!((h.state.rev, h.state.at_ms, h.synced), (5, 6_000, true));
        assert_eq!(h.state.refusals[&RefusalReason::BadSignature], 2);
        assert_eq!(s.apply_gateway_delta(&d, 3).unwrap(), DeltaOutcome::Old);
        // rev 7 after 5: a gap. Then even rev 6 waits for a snapshot.
        let mut gap = delta(7, 8_000);
        gap.removed = vec![RemovedBlock {
            prefix: "203.0.113.9/32".parse().unwrap(),
            cause: RemovalCause::Removed,
        }];
        assert_eq!(
            s.apply_gateway_delta(&gap, 4).unwrap(),
            DeltaOutcome::Gap { held_rev: Some(5) }
        );
        assert!(!s.gateway_state("gateway-1").unwrap().unwrap().synced);
        assert_eq!(
            s.apply_gateway_delta(&delta(6, 7_000), 5).unwrap(),
            DeltaOutcome::Gap { held_rev: Some(5) }
        );
        assert_eq!(prefixes(&s, 9_000), ["203.0.113.9/32"]);
        // A restarted gateway's snapshot at rev 0 replaces everything.
        s.put_gateway_state(&state(0, 9_000, vec![]), 6).unwrap();
        assert!(prefixes(&s, 9_500).is_empty());
        assert_eq!(
            s.apply_gateway_delta(&delta(1, 9_100), 7).unwrap(),
            DeltaOutcome::Applied {
                refusals_before: Default::default(),
                protected_before: vec![],
            }
        );
    }

    #[test]
    fn held_state_survives_a_reopen_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        {
            let s = Store::open(&path).unwrap();
            s.put_gateway_state(
                &state(
                    3,
                    5_000,
                    vec![entry("192.0.2.7/32", BlockOrigin::Cli, None)],
                ),
                1,
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(prefixes(&s, 6_000), ["192.0.2.7/32"]);
        let h = s.gateway_state("gateway-1").unwrap().unwrap();
        assert_eq!((h.state.rev, h.state.at_ms, h.synced), (3, 5_000, false));
        assert_eq!(
            s.apply_gateway_delta(&delta(4, 6_000), 2).unwrap(),
            DeltaOutcome::Gap { held_rev: Some(3) }
        );
    }

    fn command(id: &str, action: Action, target: &str, at_ms: u64) -> Command {
        Command {
            v: SCHEMA_VERSION,
            id: id.into(),
            operator: "alice".into(),
            issued_at_ms: at_ms,
            action,
            target: target.parse().unwrap(),
            ttl_s: None,
            reason: None,
            port: None,
        }
    }

    fn ack(id: &str, outcome: Outcome, at_ms: u64) -> Ack {
        Ack {
            v: SCHEMA_VERSION,
            id: id.into(),
            gateway_id: "gateway-1".parse().unwrap(),
            outcome,
            error: (outcome == Outcome::Rejected).then(|| "allowlisted".into()),
            at_ms,
            apply_us: 5,
        }
    }

    #[test]
    fn protect_commands_are_pending_until_the_state_lists_the_service() {
        let s = Store::open_in_memory().unwrap();
        let now = 10_000_000;
        let mut c = command("p1", Action::ProtectSyn, "192.0.2.10", now - 3_000);
        c.port = Some(80);
        c.ttl_s = Some(600);
        s.insert_command("gateway-1", &c, "h1").unwrap();
        let pending = s.pending_commands(now).unwrap();
        assert_eq!(
            (pending[0].action, pending[0].port),
            (Action::ProtectSyn, Some(80))
        );
        let svc = |port| tad_wire::state::ProtectedService {
            addr: "192.0.2.10".parse().unwrap(),
            port,
            origin: BlockOrigin::Command,
            rule: None,
            by: Some("alice@dashboard".into()),
            created_ms: now - 2_000,
            expires_at_ms: Some(now + 600_000),
            challenged: 7,
            validated: 0,
            passed: 0,
            limited: 0,
        };
        // The host protected on every port is not the service asked for.
        let mut st = state(1, now - 1_000, vec![]);
        st.protected = vec![svc(None)];
        s.put_gateway_state(&st, now).unwrap();
        assert_eq!(s.pending_commands(now).unwrap().len(), 1);
        st.protected = vec![svc(None), svc(Some(80))];
        s.put_gateway_state(&st, now).unwrap();
        assert!(s.pending_commands(now).unwrap().is_empty());
        let p = s.protected(now).unwrap();
        let services: Vec<&str> = p.iter().map(|p| p.service.as_str()).collect();
        assert_eq!(services.len(), 2);
        assert!(services.contains(&"192.0.2.10:80") && services.contains(&"192.0.2.10:*"));
        assert!(
            s.blocks(now).unwrap().is_empty(),
            "a protection is no block"
        );
        // Expired protections are hidden before the gateway's delta removes them.
        assert!(s.protected(now + 600_000).unwrap().is_empty());
    }

    #[test]
    fn commands_are_pending_until_the_state_shows_them_and_refused_ones_never_are_blocks() {
        let s = Store::open_in_memory().unwrap();
        let now = 10_000_000;
        let ids = |s: &Store| -> Vec<(String, PendingStatus)> {
            s.pending_commands(now)
                .unwrap()
                .into_iter()
                .map(|p| (p.command_id, p.status))
                .collect()
        };
        s.insert_command(
            "gateway-1",
            &command("c1", Action::Block, "192.0.2.7", now - 3_000),
            "h1",
        )
        .unwrap();
        s.insert_command(
            "gateway-1",
            &command("c2", Action::Block, "192.0.2.8", now - 2_000),
            "h2",
        )
        .unwrap();
        s.insert_command(
            "gateway-1",
            &command(
                "old",
                Action::Block,
                "192.0.2.9",
                now - PENDING_WINDOW_MS - 1,
            ),
            "h3",
        )
        .unwrap();
        assert_eq!(
            ids(&s),
            [
                ("c2".to_string(), PendingStatus::Sent),
                ("c1".to_string(), PendingStatus::Sent)
            ]
        );
        s.insert_ack(&ack("c1", Outcome::Applied, now - 2_500))
            .unwrap();
        s.insert_ack(&ack("c2", Outcome::Rejected, now - 1_500))
            .unwrap();
        let p = s.pending_commands(now).unwrap();
        assert_eq!(p[0].status, PendingStatus::Refused);
        assert_eq!(p[0].outcome, Some(Outcome::Rejected));
        assert_eq!(p[0].error.as_deref(), Some("allowlisted"));
        assert_eq!(p[1].status, PendingStatus::Acked);
        // The state (read before the ack) does not show c1 yet: still pending.
        s.put_gateway_state(&state(1, now - 2_600, vec![]), now)
            .unwrap();
        assert_eq!(ids(&s)[1], ("c1".to_string(), PendingStatus::Acked));
        // Now it does; the refused command still is no block.
        s.put_gateway_state(
            &state(
                2,
                now - 1_000,
                vec![entry("192.0.2.7/32", BlockOrigin::Command, None)],
            ),
            now,
        )
        .unwrap();
        assert_eq!(ids(&s), [("c2".to_string(), PendingStatus::Refused)]);
        assert_eq!(prefixes(&s, now), ["192.0.2.7/32"]);
    }
}
