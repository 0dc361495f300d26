//! The embedded store: one SQLite database (WAL journal) holding what the
//! dashboard heard on the bus and what its operators did, with per-table
//! retention ([`crate::config::RetentionConfig`]).
//!
//! Tables: `samples` (one row per counters snapshot: the series the charts draw),
//! `flows` (flow record summaries), `alerts`, `verdicts`, `commands`, `acks`,
//! `devices` (trust scores and last seen), `nodes` (gateway/detector/dashboard
//! status, mode, map fill), `blocks` (blocks the dashboard knows of, from verdicts
//! and commands, updated by acks) and `settings` (the current threshold settings).
//!
//! Every write is one statement or one transaction, so a failed write leaves the
//! store as it was. The connection sits behind a mutex; queries are small (indexed
//! by time) and run inline on the caller's thread.

use std::{
    net::IpAddr,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tad_wire::{
    Ack, Action, Alert, Command, CountersSnapshot, FlowBatch, MapFill, Mode, NodeStatus, Outcome,
    Role, ThresholdSettings, TrustLevel, TrustUpdate, Verdict,
};

use crate::config::RetentionConfig;

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples (
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    mode TEXT NOT NULL,
    pass_pps REAL NOT NULL,
    drop_blocklist_pps REAL NOT NULL,
    drop_syn_rate_pps REAL NOT NULL,
    drop_pkt_rate_pps REAL NOT NULL,
    would_drop_pps REAL NOT NULL,
    flows_per_s REAL NOT NULL,
    alerts_per_min REAL NOT NULL,
    flows_exported INTEGER NOT NULL,
    records_dropped_total INTEGER NOT NULL,
    counters TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_at ON samples(at_ms);
CREATE INDEX IF NOT EXISTS samples_gw_at ON samples(gateway_id, at_ms);
CREATE TABLE IF NOT EXISTS flows (
    gateway_id TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    src TEXT NOT NULL, dst TEXT NOT NULL,
    sport INTEGER NOT NULL, dport INTEGER NOT NULL, proto INTEGER NOT NULL,
    packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_received ON flows(received_ms);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    gateway_id TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_at ON alerts(at_ms);
CREATE TABLE IF NOT EXISTS verdicts (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_at ON verdicts(at_ms);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_at ON commands(at_ms);
CREATE TABLE IF NOT EXISTS acks (
    id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS acks_at ON acks(at_ms);
CREATE TABLE IF NOT EXISTS devices (
    address TEXT PRIMARY KEY,
    name TEXT,
    detector_id TEXT,
    score REAL, level TEXT,
    behavioural REAL, vulnerability REAL, reputation REAL,
    reason TEXT,
    scored_ms INTEGER,
    last_seen_ms INTEGER
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    online INTEGER,
    status_at_ms INTEGER,
    version TEXT,
    mode TEXT,
    interfaces TEXT NOT NULL DEFAULT '[]',
    maps TEXT NOT NULL DEFAULT '[]',
    last_counters_ms INTEGER
);
CREATE TABLE IF NOT EXISTS blocks (
    gateway_id TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    origin TEXT NOT NULL,
    origin_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (gateway_id, target)
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

/// One point of the overview/history series: the traffic of one gateway (or the
/// sum over gateways) at one time. Rates are packets per second (pps) averaged
/// over the gateway's last counters interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Unix time, ms (for history: start of the bucket).
    pub at_ms: u64,
    /// Gateway, or `*` for the sum over gateways.
    pub gateway_id: String,
    /// Passed packets (every pass reason), pps.
    pub pass_pps: f64,
    /// Dropped because the source is blocklisted, pps.
    pub drop_blocklist_pps: f64,
    /// Dropped by the SYN rate limit, pps.
    pub drop_syn_rate_pps: f64,
    /// Dropped by the packet rate limit, pps.
    pub drop_pkt_rate_pps: f64,
    /// Would have been dropped (observe mode), every reason, pps.
    pub would_drop_pps: f64,
    /// Flow records exported per second.
    pub flows_per_s: f64,
    /// Alerts about this gateway's traffic in the minute up to `at_ms`.
    pub alerts_per_min: f64,
}

/// A stored alert with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub audit_hash: String,
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

/// A device: an address the detector scored or the config names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub address: IpAddr,
    pub name: Option<String>,
    pub detector_id: Option<String>,
    /// Trust score, 0-100 (none before the first score).
    pub score: Option<f64>,
    pub level: Option<TrustLevel>,
    pub behavioural: Option<f64>,
    pub vulnerability: Option<f64>,
    pub reputation: Option<f64>,
    /// Why the score last changed.
    pub reason: Option<String>,
    /// Last trust update or flow involving the address, Unix ms.
    pub last_seen_ms: Option<u64>,
    /// Whether an active block covers the address on any gateway.
    pub blocked: bool,
}

/// Who asked for a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOrigin {
    Detector,
    Operator,
}

/// State of a block as far as the dashboard knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockState {
    /// Sent, no ack yet.
    Pending,
    /// The gateway applied it.
    Applied,
    /// The gateway already had it.
    NoChange,
    /// Observe mode: recorded, not enforced.
    Observed,
    /// The gateway refused it (`error` says why).
    Rejected,
}

impl BlockState {
    fn as_str(self) -> &'static str {
        match self {
            BlockState::Pending => "pending",
            BlockState::Applied => "applied",
            BlockState::NoChange => "no_change",
            BlockState::Observed => "observed",
            BlockState::Rejected => "rejected",
        }
    }

    /// Whether the gateway drops the source's traffic (or is about to).
    pub fn enforced(self) -> bool {
        matches!(
            self,
            BlockState::Pending | BlockState::Applied | BlockState::NoChange
        )
    }
}

/// A block on one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    pub gateway_id: String,
    pub target: IpNet,
    pub action: Action,
    pub origin: BlockOrigin,
    /// Detector id or operator name.
    pub origin_id: String,
    /// Block reason (the verdict's reason code or the operator's text).
    pub reason: String,
    pub created_ms: u64,
    /// Expiry, Unix ms; none = permanent.
    pub expires_ms: Option<u64>,
    /// Seconds left at the time of the query; none = permanent.
    pub ttl_left_s: Option<u64>,
    /// Verdict or command id.
    pub request_id: String,
    pub state: BlockState,
    pub error: Option<String>,
}

/// A gateway, detector or dashboard node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: String,
    pub role: Role,
    /// From the retained status / Last Will; none if only counters were heard.
    pub online: Option<bool>,
    pub status_at_ms: Option<u64>,
    pub version: Option<String>,
    pub mode: Option<Mode>,
    pub interfaces: Vec<tad_wire::InterfaceStatus>,
    /// Latest map fill levels (from counters, else status).
    pub maps: Vec<MapFill>,
    pub last_counters_ms: Option<u64>,
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

fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => panic!("not a unit enum: {other:?}"),
    }
}

fn enum_from<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

fn json<T: for<'de> Deserialize<'de>>(table: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Json { table, source })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("wire types serialise infallibly")
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

    /// Adds friendly names for devices (from the config).
    pub fn name_devices(
        &self,
        names: &std::collections::BTreeMap<IpAddr, String>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (addr, name) in names {
            tx.execute(
                "INSERT INTO devices(address, name) VALUES (?1, ?2)
                 ON CONFLICT(address) DO UPDATE SET name = excluded.name",
                params![addr.to_string(), name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Time of the gateway's previous counters sample, Unix ms.
    pub fn last_sample_ms(&self, gateway_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MAX(at_ms) FROM samples WHERE gateway_id = ?1",
            [gateway_id],
            |r| r.get(0),
        )?)
    }

    /// Number of alerts about `gateway_id` with `from_ms < at_ms <= to_ms`.
    pub fn alerts_between(
        &self,
        gateway_id: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<u64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM alerts WHERE gateway_id = ?1 AND at_ms > ?2 AND at_ms <= ?3",
            params![gateway_id, from_ms, to_ms],
            |r| r.get(0),
        )?)
    }

    /// Stores a counters snapshot and its derived series point; updates the
    /// gateway's mode, map fill and last-heard time.
    pub fn insert_counters(
        &self,
        snap: &CountersSnapshot,
        point: &SeriesPoint,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO samples(gateway_id, at_ms, mode, pass_pps, drop_blocklist_pps,
                drop_syn_rate_pps, drop_pkt_rate_pps, would_drop_pps, flows_per_s,
                alerts_per_min, flows_exported, records_dropped_total, counters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                snap.gateway_id.as_str(),
                snap.at_ms,
                enum_str(&snap.mode),
                point.pass_pps,
                point.drop_blocklist_pps,
                point.drop_syn_rate_pps,
                point.drop_pkt_rate_pps,
                point.would_drop_pps,
                point.flows_per_s,
                point.alerts_per_min,
                snap.flows_exported,
                snap.records_dropped_total,
                to_json(&snap.counters),
            ],
        )?;
        tx.execute(
            "INSERT INTO nodes(node_id, role, mode, maps, last_counters_ms)
             VALUES (?1, 'gateway', ?2, ?3, ?4)
             ON CONFLICT(node_id) DO UPDATE SET mode = excluded.mode, maps = excluded.maps,
                last_counters_ms = excluded.last_counters_ms",
            params![
                snap.gateway_id.as_str(),
                enum_str(&snap.mode),
                to_json(&snap.maps),
                snap.at_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a batch's flow records (summaries) and refreshes the last-seen time
    /// of known devices involved.
    pub fn insert_flows(&self, batch: &FlowBatch, received_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO flows(gateway_id, received_ms, start_ms, src, dst, sport, dport,
                    proto, packets, bytes, duration_us, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut seen = tx.prepare_cached(
                "UPDATE devices SET last_seen_ms = MAX(COALESCE(last_seen_ms, 0), ?1)
                 WHERE address IN (?2, ?3)",
            )?;
            for r in &batch.records {
                let last_ms = r.start_ms + r.duration_us / 1000;
                ins.execute(params![
                    batch.gateway_id.as_str(),
                    received_ms,
                    r.start_ms,
                    r.src.to_string(),
                    r.dst.to_string(),
                    r.sport,
                    r.dport,
                    r.proto,
                    r.packets(),
                    r.fwd.bytes + r.bwd.bytes,
                    r.duration_us,
                    enum_str(&r.end_reason),
                ])?;
                seen.execute(params![last_ms, r.src.to_string(), r.dst.to_string()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether an alert with this id is stored.
    pub fn has_alert(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM alerts WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores an alert with the hash of its audit record.
    pub fn insert_alert(&self, alert: &Alert, audit_hash: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO alerts(id, at_ms, gateway_id, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
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
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM verdicts WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores a verdict sent to `gateway_id` and updates the block table.
    pub fn insert_verdict(
        &self,
        gateway_id: &str,
        v: &Verdict,
        audit_hash: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO verdicts(id, gateway_id, at_ms, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![v.id, gateway_id, v.issued_at_ms, to_json(v), audit_hash],
        )?;
        let state = if v.observe_only {
            BlockState::Observed
        } else {
            BlockState::Pending
        };
        apply_block(
            &tx,
            gateway_id,
            v.action,
            v.target.net(),
            BlockOrigin::Detector,
            &v.detector_id,
            &enum_str(&v.reason),
            v.issued_at_ms,
            v.ttl_s,
            &v.id,
            state,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a command with this id is stored.
    pub fn has_command(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM commands WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores an operator command sent to `gateway_id` and updates the block table.
    pub fn insert_command(
        &self,
        gateway_id: &str,
        c: &Command,
        audit_hash: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO commands(id, gateway_id, at_ms, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.id, gateway_id, c.issued_at_ms, to_json(c), audit_hash],
        )?;
        apply_block(
            &tx,
            gateway_id,
            c.action,
            c.target.net(),
            BlockOrigin::Operator,
            &c.operator,
            c.reason.as_deref().unwrap_or("manual"),
            c.issued_at_ms,
            c.ttl_s,
            &c.id,
            BlockState::Pending,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores an ack and moves the block it answers to the ack's outcome.
    pub fn insert_ack(&self, ack: &Ack) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO acks(id, gateway_id, at_ms, body) VALUES (?1, ?2, ?3, ?4)",
            params![ack.id, ack.gateway_id.as_str(), ack.at_ms, to_json(ack)],
        )?;
        let state = match ack.outcome {
            Outcome::Applied => BlockState::Applied,
            Outcome::NoChange => BlockState::NoChange,
            Outcome::Observed => BlockState::Observed,
            Outcome::Rejected => BlockState::Rejected,
        };
        tx.execute(
            "UPDATE blocks SET state = ?1, error = ?2 WHERE gateway_id = ?3 AND request_id = ?4",
            params![state.as_str(), ack.error, ack.gateway_id.as_str(), ack.id],
        )?;
        tx.commit()?;
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

    /// Stores a node's retained status (or Last Will). The last one received
    /// wins: the broker keeps per-topic order, and a Last Will carries the time it
    /// was registered (older than the online status it replaces).
    pub fn upsert_status(&self, s: &NodeStatus) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO nodes(node_id, role, online, status_at_ms, version, mode, interfaces, maps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(node_id) DO UPDATE SET role = excluded.role, online = excluded.online,
                status_at_ms = excluded.status_at_ms, version = excluded.version,
                mode = COALESCE(excluded.mode, nodes.mode),
                interfaces = excluded.interfaces,
                maps = CASE WHEN nodes.last_counters_ms IS NULL THEN excluded.maps ELSE nodes.maps END",
            params![
                s.node_id.as_str(),
                enum_str(&s.role),
                s.online,
                s.at_ms,
                s.version,
                s.mode.map(|m| enum_str(&m)),
                to_json(&s.interfaces),
                to_json(&s.maps)
            ],
        )?;
        Ok(())
    }

    /// Stores the current threshold settings.
    pub fn set_thresholds(&self, t: &ThresholdSettings) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings(name, body) VALUES ('thresholds', ?1)
             ON CONFLICT(name) DO UPDATE SET body = excluded.body",
            [to_json(t)],
        )?;
        Ok(())
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

    /// Whether the dashboard has heard of this gateway (status or counters).
    pub fn knows_gateway(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM nodes WHERE node_id = ?1 AND role = 'gateway'",
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Series points of each gateway (or the sum over all, `gateway_id = None`)
    /// with `from_ms <= at_ms < to_ms`, averaged into buckets of `step_ms`.
    pub fn series(
        &self,
        gateway_id: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let step_ms = step_ms.max(1);
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT bucket, SUM(p), SUM(db), SUM(ds), SUM(dp), SUM(w), SUM(f), SUM(a) FROM (
                SELECT (at_ms / ?1) * ?1 AS bucket, gateway_id,
                    AVG(pass_pps) AS p, AVG(drop_blocklist_pps) AS db,
                    AVG(drop_syn_rate_pps) AS ds, AVG(drop_pkt_rate_pps) AS dp,
                    AVG(would_drop_pps) AS w, AVG(flows_per_s) AS f, MAX(alerts_per_min) AS a
                FROM samples
                WHERE at_ms >= ?2 AND at_ms < ?3 AND (?4 IS NULL OR gateway_id = ?4)
                GROUP BY bucket, gateway_id)
             GROUP BY bucket ORDER BY bucket",
        )?;
        let gw = gateway_id.unwrap_or("*").to_owned();
        let rows = stmt.query_map(params![step_ms, from_ms, to_ms, gateway_id], |r| {
            Ok(SeriesPoint {
                at_ms: r.get(0)?,
                gateway_id: gw.clone(),
                pass_pps: r.get(1)?,
                drop_blocklist_pps: r.get(2)?,
                drop_syn_rate_pps: r.get(3)?,
                drop_pkt_rate_pps: r.get(4)?,
                would_drop_pps: r.get(5)?,
                flows_per_s: r.get(6)?,
                alerts_per_min: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Alerts, newest first: at most `limit`, optionally only `at_ms >= since_ms`.
    pub fn alerts(&self, limit: u32, since_ms: Option<u64>) -> Result<Vec<AlertView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT body, audit_hash FROM alerts WHERE at_ms >= ?1
             ORDER BY at_ms DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since_ms.unwrap_or(0), limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (body, audit_hash) = row?;
            Ok(AlertView {
                alert: json("alerts", &body)?,
                audit_hash,
            })
        })
        .collect()
    }

    /// Verdicts, newest first.
    pub fn verdicts(&self, limit: u32) -> Result<Vec<VerdictView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT gateway_id, body, audit_hash FROM verdicts
             ORDER BY at_ms DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        rows.map(|row| {
            let (gateway_id, body, audit_hash) = row?;
            Ok(VerdictView {
                gateway_id,
                verdict: json("verdicts", &body)?,
                audit_hash,
            })
        })
        .collect()
    }

    /// Operator commands, newest first.
    pub fn commands(&self, limit: u32) -> Result<Vec<CommandView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT gateway_id, body, audit_hash FROM commands
             ORDER BY at_ms DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        rows.map(|row| {
            let (gateway_id, body, audit_hash) = row?;
            Ok(CommandView {
                gateway_id,
                command: json("commands", &body)?,
                audit_hash,
            })
        })
        .collect()
    }

    /// Acks, newest first.
    pub fn acks(&self, limit: u32) -> Result<Vec<Ack>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT body FROM acks ORDER BY at_ms DESC, rowid DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
        rows.map(|b| json("acks", &b?)).collect()
    }

    /// Flow summaries, newest first.
    pub fn flows(&self, limit: u32) -> Result<Vec<FlowSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT gateway_id, start_ms, src, dst, sport, dport, proto, packets, bytes,
                duration_us, end_reason
             FROM flows ORDER BY received_ms DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(FlowSummary {
                gateway_id: r.get(0)?,
                start_ms: r.get(1)?,
                src: r
                    .get::<_, String>(2)?
                    .parse()
                    .unwrap_or(IpAddr::from([0, 0, 0, 0])),
                dst: r
                    .get::<_, String>(3)?
                    .parse()
                    .unwrap_or(IpAddr::from([0, 0, 0, 0])),
                sport: r.get(4)?,
                dport: r.get(5)?,
                proto: r.get(6)?,
                packets: r.get(7)?,
                bytes: r.get(8)?,
                duration_us: r.get(9)?,
                end_reason: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Blocks in force at `now_ms` (expired ones are left out), newest first.
    pub fn blocks(&self, now_ms: u64) -> Result<Vec<BlockView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT gateway_id, target, action, origin, origin_id, reason, created_ms,
                expires_ms, request_id, state, error
             FROM blocks WHERE expires_ms IS NULL OR expires_ms > ?1
             ORDER BY created_ms DESC",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            let target: String = r.get(1)?;
            let expires_ms: Option<u64> = r.get(7)?;
            Ok(BlockView {
                gateway_id: r.get(0)?,
                target: target.parse().unwrap_or_else(|_| IpNet::default()),
                action: enum_from(&r.get::<_, String>(2)?).unwrap_or(Action::Block),
                origin: enum_from(&r.get::<_, String>(3)?).unwrap_or(BlockOrigin::Operator),
                origin_id: r.get(4)?,
                reason: r.get(5)?,
                created_ms: r.get(6)?,
                expires_ms,
                ttl_left_s: expires_ms.map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
                request_id: r.get(8)?,
                state: enum_from(&r.get::<_, String>(9)?).unwrap_or(BlockState::Pending),
                error: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Devices with their scores; `blocked` is set from the blocks in force at
    /// `now_ms`.
    pub fn devices(&self, now_ms: u64) -> Result<Vec<DeviceView>, StoreError> {
        let blocks: Vec<BlockView> = self
            .blocks(now_ms)?
            .into_iter()
            .filter(|b| b.state.enforced())
            .collect();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT address, name, detector_id, score, level, behavioural, vulnerability,
                reputation, reason, last_seen_ms
             FROM devices ORDER BY COALESCE(score, 101) ASC, address",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                DeviceView {
                    address: IpAddr::from([0, 0, 0, 0]),
                    name: r.get(1)?,
                    detector_id: r.get(2)?,
                    score: r.get(3)?,
                    level: r.get::<_, Option<String>>(4)?.and_then(|l| enum_from(&l)),
                    behavioural: r.get(5)?,
                    vulnerability: r.get(6)?,
                    reputation: r.get(7)?,
                    reason: r.get(8)?,
                    last_seen_ms: r.get(9)?,
                    blocked: false,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (addr, mut d) = row?;
            let Ok(address) = addr.parse::<IpAddr>() else {
                continue;
            };
            d.address = address;
            d.blocked = blocks.iter().any(|b| b.target.contains(&address));
            out.push(d);
        }
        Ok(out)
    }

    /// Every node heard of.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT node_id, role, online, status_at_ms, version, mode, interfaces, maps,
                last_counters_ms
             FROM nodes ORDER BY role, node_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<bool>>(2)?,
                r.get::<_, Option<u64>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<u64>>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (node_id, role, online, status_at_ms, version, mode, ifs, maps, last) = row?;
            out.push(NodeView {
                node_id,
                role: enum_from(&role).unwrap_or(Role::Gateway),
                online,
                status_at_ms,
                version,
                mode: mode.and_then(|m| enum_from(&m)),
                interfaces: json("nodes", &ifs)?,
                maps: json("nodes", &maps)?,
                last_counters_ms: last,
            });
        }
        Ok(out)
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

/// A stored flow record summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSummary {
    pub gateway_id: String,
    pub start_ms: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Both directions.
    pub packets: u64,
    /// Both directions, bytes.
    pub bytes: u64,
    pub duration_us: u64,
    pub end_reason: String,
}

/// Records a block/quarantine (replacing any block of the same target on the
/// gateway) or removes it for an unblock.
#[allow(clippy::too_many_arguments)]
fn apply_block(
    tx: &rusqlite::Transaction<'_>,
    gateway_id: &str,
    action: Action,
    target: IpNet,
    origin: BlockOrigin,
    origin_id: &str,
    reason: &str,
    issued_at_ms: u64,
    ttl_s: Option<u64>,
    request_id: &str,
    state: BlockState,
) -> Result<(), StoreError> {
    if action == Action::Unblock {
        if state != BlockState::Observed {
            tx.execute(
                "DELETE FROM blocks WHERE gateway_id = ?1 AND target = ?2",
                params![gateway_id, target.to_string()],
            )?;
        }
        return Ok(());
    }
    tx.execute(
        "INSERT INTO blocks(gateway_id, target, action, origin, origin_id, reason, created_ms,
            expires_ms, request_id, state, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)
         ON CONFLICT(gateway_id, target) DO UPDATE SET action = excluded.action,
            origin = excluded.origin, origin_id = excluded.origin_id, reason = excluded.reason,
            created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,
            request_id = excluded.request_id, state = excluded.state, error = NULL",
        params![
            gateway_id,
            target.to_string(),
            enum_str(&action),
            enum_str(&origin),
            origin_id,
            reason,
            issued_at_ms,
            ttl_s.map(|t| issued_at_ms + t * 1000),
            request_id,
            state.as_str(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fw_common::filter::BlockReason;
    use tad_wire::SCHEMA_VERSION;

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
