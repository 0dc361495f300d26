//! What the gateways publish about their IoT devices (issue 17,
//! `tad_wire::devices`), as the device page reads it: the telemetry samples of
//! every forwarded batch (the per-device charts), the batches themselves with the
//! hash of their audit record, every trust change with its cause, the command
//! decisions, the vulnerability scans, the guard's refusals, and each gateway's
//! last retained `DeviceStates` snapshot, the only source of the device list
//! (trust, level, components, counters: read from the gateway, never
//! recomputed here).
//!
//! Tables (created by [`SCHEMA`] at every open): `iot_state`, `iot_batches`,
//! `iot_telemetry`, `iot_trust`, `iot_refusals`, `iot_decisions`, `iot_vulns`,
//! and `iot_seen` (digests of the report messages already stored, so a QoS 1
//! redelivery is recognised; a batch is recognised by its SHA-256).

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use tad_wire::devices::{
    DeviceAnomalyScore, DeviceCommandDecision, DeviceRefusal, DeviceRefusalReason, DeviceRefusals,
    DeviceStates, DeviceTelemetryBatch, DeviceTrustChange, DeviceView, DeviceVulnReport,
};

use super::{Store, StoreError, enum_str, json, to_json};

/// The device tables; every statement is idempotent.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS iot_state (
    gateway_id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS iot_batches (
    gateway_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    batch_no INTEGER NOT NULL,
    opened_ms INTEGER NOT NULL,
    closed_ms INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    dropped_batches INTEGER NOT NULL,
    dropped_records INTEGER NOT NULL,
    audit_hash TEXT NOT NULL,
    PRIMARY KEY (gateway_id, sha256)
);
CREATE INDEX IF NOT EXISTS iot_batches_closed ON iot_batches(closed_ms);
CREATE TABLE IF NOT EXISTS iot_telemetry (
    gateway_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sequence_no INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    arrival_ms INTEGER NOT NULL,
    cpu_usage REAL NOT NULL,
    battery_level REAL NOT NULL,
    sensors TEXT NOT NULL,
    anomaly_score REAL,
    anomaly_threshold REAL,
    batch_sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS iot_telemetry_dev ON iot_telemetry(device_id, arrival_ms);
CREATE INDEX IF NOT EXISTS iot_telemetry_at ON iot_telemetry(arrival_ms);
CREATE TABLE IF NOT EXISTS iot_trust (
    gateway_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS iot_trust_dev ON iot_trust(device_id, at_ms);
CREATE INDEX IF NOT EXISTS iot_trust_at ON iot_trust(at_ms);
CREATE TABLE IF NOT EXISTS iot_refusals (
    gateway_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS iot_refusals_dev ON iot_refusals(device_id, at_ms);
CREATE INDEX IF NOT EXISTS iot_refusals_at ON iot_refusals(at_ms);
CREATE TABLE IF NOT EXISTS iot_decisions (
    gateway_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    decision TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS iot_decisions_dev ON iot_decisions(device_id, at_ms);
CREATE INDEX IF NOT EXISTS iot_decisions_at ON iot_decisions(at_ms);
CREATE TABLE IF NOT EXISTS iot_vulns (
    gateway_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS iot_vulns_dev ON iot_vulns(device_id, at_ms);
CREATE TABLE IF NOT EXISTS iot_seen (
    kind TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, gateway_id, digest)
);
";

/// The tables pruned by retention, each with its time column (Unix ms); the
/// telemetry samples go with the counters retention, the rest with the alerts'.
pub(super) const PRUNED: [(&str, &str, bool); 7] = [
    ("iot_telemetry", "arrival_ms", true),
    ("iot_batches", "closed_ms", false),
    ("iot_trust", "at_ms", false),
    ("iot_refusals", "at_ms", false),
    ("iot_decisions", "at_ms", false),
    ("iot_vulns", "at_ms", false),
    ("iot_seen", "received_ms", false),
];

/// A report kind whose redeliveries [`Store::iot_seen`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotReport {
    Trust,
    Refusals,
    Decision,
    Vulns,
}

impl IotReport {
    fn as_str(self) -> &'static str {
        match self {
            IotReport::Trust => "trust",
            IotReport::Refusals => "refusals",
            IotReport::Decision => "decision",
            IotReport::Vulns => "vulns",
        }
    }
}

/// One gateway's device counters, from its last `DeviceStates` snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IotGateway {
    pub gateway_id: String,
    /// When the gateway made the snapshot, Unix ms.
    pub at_ms: u64,
    /// When the dashboard received it, Unix ms.
    pub received_ms: u64,
    /// Telemetry messages received / accepted since gateway start.
    pub received: u64,
    pub accepted: u64,
    /// Refusals since gateway start, by reason.
    pub refused: BTreeMap<DeviceRefusalReason, u64>,
    /// Batches waiting for the broker; dropped from the full outbox since start.
    pub outbox_queued: u64,
    pub outbox_dropped_batches: u64,
}

/// One device of a gateway's last `DeviceStates` snapshot, as the list shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IotDevice {
    pub gateway_id: String,
    /// The snapshot's time, Unix ms.
    pub state_at_ms: u64,
    /// The gateway's view of the device (trust 0..100, level, components,
    /// accepted / refused, last seen, enrolled sensors).
    #[serde(flatten)]
    pub view: DeviceView,
    /// Dangerous services found by the latest scan (none before the first scan).
    pub findings: Option<usize>,
    /// When that scan finished, Unix ms.
    pub scanned_ms: Option<u64>,
}

/// One telemetry reading of a forwarded batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelemetryPoint {
    pub gateway_id: String,
    pub device_id: String,
    pub sequence_no: u64,
    /// Device clock, Unix ms.
    pub timestamp_ms: u64,
    /// When the gateway's guard received it, Unix ms.
    pub arrival_ms: u64,
    /// Percent.
    pub cpu_usage: f64,
    /// Percent.
    pub battery_level: f64,
    /// Sensor name → reading (units as enrolled).
    pub sensors: BTreeMap<String, f64>,
    /// The Isolation Forest score, once the device's model is trained.
    pub anomaly: Option<DeviceAnomalyScore>,
    /// SHA-256 of the batch that carried it (hex), committed to the audit log.
    pub batch_sha256: String,
}

/// A forwarded telemetry batch with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    pub gateway_id: String,
    pub batch_no: u64,
    /// The batch's SHA-256 (hex), recomputed by the dashboard before it was stored.
    pub sha256: String,
    pub opened_ms: u64,
    pub closed_ms: u64,
    pub sent_at_ms: u64,
    /// Records in the batch (all devices).
    pub records: u64,
    pub audit_hash: String,
}

/// One trust change with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustChangeView {
    pub gateway_id: String,
    #[serde(flatten)]
    pub change: DeviceTrustChange,
    pub audit_hash: String,
}

/// One refused telemetry message with the hash of its report's audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusalView {
    pub gateway_id: String,
    #[serde(flatten)]
    pub refusal: DeviceRefusal,
    pub audit_hash: String,
}

/// One command decision with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    #[serde(flatten)]
    pub decision: DeviceCommandDecision,
    pub audit_hash: String,
}

/// One vulnerability scan with the hash of its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VulnView {
    #[serde(flatten)]
    pub report: DeviceVulnReport,
    pub audit_hash: String,
}

/// Which rows a per-device read returns: the device, optionally one gateway,
/// optionally only from `since_ms`, at most `limit` (the newest).
#[derive(Clone, Copy, Debug)]
pub struct DeviceQuery<'a> {
    pub device_id: &'a str,
    pub gateway_id: Option<&'a str>,
    pub since_ms: Option<u64>,
    pub limit: u32,
}

fn mark_seen(
    tx: &Transaction<'_>,
    kind: IotReport,
    gateway_id: &str,
    digest: &str,
    received_ms: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO iot_seen(kind, gateway_id, digest, received_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![kind.as_str(), gateway_id, digest, received_ms],
    )?;
    Ok(())
}

impl Store {
    /// Whether a report of `kind` from `gateway_id` whose payload has SHA-256
    /// `digest` was stored already (a QoS 1 redelivery).
    pub fn iot_seen(
        &self,
        kind: IotReport,
        gateway_id: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM iot_seen WHERE kind = ?1 AND gateway_id = ?2 AND digest = ?3",
                params![kind.as_str(), gateway_id, digest],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Whether this gateway's batch with this SHA-256 is stored.
    pub fn has_iot_batch(&self, gateway_id: &str, sha256: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM iot_batches WHERE gateway_id = ?1 AND sha256 = ?2",
                params![gateway_id, sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Stores a batch (its hash already checked and audited as `audit_hash`) and
    /// one telemetry row per record, in one transaction.
    pub fn insert_iot_batch(
        &self,
        b: &DeviceTelemetryBatch,
        audit_hash: &str,
        received_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gw = b.gateway_id.as_str();
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO iot_batches(gateway_id, sha256, batch_no, opened_ms, closed_ms,
                sent_at_ms, received_ms, records, dropped_batches, dropped_records, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                gw,
                b.sha256,
                b.batch_no,
                b.opened_ms,
                b.closed_ms,
                b.sent_at_ms,
                received_ms,
                b.records.len() as u64,
                b.dropped_batches,
                b.dropped_records,
                audit_hash
            ],
        )?;
        if fresh == 1 {
            // Scoped: the statement borrows the transaction until it commits.
            let mut ins = tx.prepare_cached(
                "INSERT INTO iot_telemetry(gateway_id, device_id, sequence_no, timestamp_ms,
                    arrival_ms, cpu_usage, battery_level, sensors, anomaly_score,
                    anomaly_threshold, batch_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for r in &b.records {
                let t = &r.telemetry;
                ins.execute(params![
                    gw,
                    t.device_id,
                    t.sequence_no,
                    t.timestamp,
                    r.arrival_ms,
                    t.cpu_usage,
                    t.battery_level,
                    to_json(&t.sensors),
                    r.anomaly.map(|a| a.score),
                    r.anomaly.map(|a| a.threshold),
                    b.sha256
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores trust changes, each with the hash of its own audit record, and
    /// marks their report (`digest`) seen.
    pub fn insert_iot_trust(
        &self,
        gateway_id: &str,
        changes: &[(&DeviceTrustChange, String)],
        digest: &str,
        received_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (c, hash) in changes {
            tx.execute(
                "INSERT INTO iot_trust(gateway_id, device_id, at_ms, body, audit_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![gateway_id, c.device_id, c.at_ms, to_json(c), hash],
            )?;
        }
        mark_seen(&tx, IotReport::Trust, gateway_id, digest, received_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores the refusals of one report (audited together as `audit_hash`).
    pub fn insert_iot_refusals(
        &self,
        r: &DeviceRefusals,
        audit_hash: &str,
        digest: &str,
        received_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gw = r.gateway_id.as_str();
        for x in &r.refusals {
            tx.execute(
                "INSERT INTO iot_refusals(gateway_id, device_id, at_ms, reason, body, audit_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    gw,
                    x.device_id,
                    x.at_ms,
                    x.reason.as_str(),
                    to_json(x),
                    audit_hash
                ],
            )?;
        }
        mark_seen(&tx, IotReport::Refusals, gw, digest, received_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a command decision.
    pub fn insert_iot_decision(
        &self,
        d: &DeviceCommandDecision,
        audit_hash: &str,
        digest: &str,
        received_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gw = d.gateway_id.as_str();
        tx.execute(
            "INSERT INTO iot_decisions(gateway_id, device_id, at_ms, decision, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                gw,
                d.device_id,
                d.at_ms,
                enum_str(&d.decision),
                to_json(d),
                audit_hash
            ],
        )?;
        mark_seen(&tx, IotReport::Decision, gw, digest, received_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a vulnerability scan report.
    pub fn insert_iot_vulns(
        &self,
        v: &DeviceVulnReport,
        audit_hash: &str,
        digest: &str,
        received_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gw = v.gateway_id.as_str();
        tx.execute(
            "INSERT INTO iot_vulns(gateway_id, device_id, at_ms, body, audit_hash)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![gw, v.device_id, v.at_ms, to_json(v), audit_hash],
        )?;
        mark_seen(&tx, IotReport::Vulns, gw, digest, received_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Holds a gateway's `DeviceStates` snapshot unless the one held is newer
    /// (`at_ms`); returns whether it replaced the held one.
    pub fn put_iot_state(&self, s: &DeviceStates, received_ms: u64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT INTO iot_state(gateway_id, at_ms, received_ms, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(gateway_id) DO UPDATE SET at_ms = excluded.at_ms,
                received_ms = excluded.received_ms, body = excluded.body
             WHERE excluded.at_ms >= iot_state.at_ms",
            params![s.gateway_id.as_str(), s.at_ms, received_ms, to_json(s)],
        )?;
        Ok(n == 1)
    }

    /// Every held `DeviceStates` snapshot with its receive time, by gateway id.
    fn iot_states(&self) -> Result<Vec<(DeviceStates, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT body, received_ms FROM iot_state ORDER BY gateway_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (body, received) = row?;
            out.push((json("iot_state", &body)?, received));
        }
        Ok(out)
    }

    /// Each gateway's device counters (its last snapshot).
    pub fn iot_gateways(&self) -> Result<Vec<IotGateway>, StoreError> {
        Ok(self
            .iot_states()?
            .into_iter()
            .map(|(s, received_ms)| IotGateway {
                gateway_id: s.gateway_id.to_string(),
                at_ms: s.at_ms,
                received_ms,
                received: s.received,
                accepted: s.accepted,
                refused: s.refused,
                outbox_queued: s.outbox_queued,
                outbox_dropped_batches: s.outbox_dropped_batches,
            })
            .collect())
    }

    /// Every device of every gateway's last snapshot, lowest trust first, with
    /// its latest scan's finding count.
    pub fn iot_devices(&self) -> Result<Vec<IotDevice>, StoreError> {
        let states = self.iot_states()?;
        let mut out = Vec::new();
        for (s, _) in states {
            for view in s.devices {
                let scan = self.latest_scan(s.gateway_id.as_str(), &view.device_id)?;
                out.push(IotDevice {
                    gateway_id: s.gateway_id.to_string(),
                    state_at_ms: s.at_ms,
                    findings: scan.as_ref().map(|v| v.findings.len()),
                    scanned_ms: scan.map(|v| v.at_ms),
                    view,
                });
            }
        }
        out.sort_by(|a, b| {
            a.view
                .trust
                .total_cmp(&b.view.trust)
                .then_with(|| a.view.device_id.cmp(&b.view.device_id))
        });
        Ok(out)
    }

    fn latest_scan(&self, gw: &str, device: &str) -> Result<Option<DeviceVulnReport>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM iot_vulns WHERE gateway_id = ?1 AND device_id = ?2
                 ORDER BY at_ms DESC, rowid DESC LIMIT 1",
                params![gw, device],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| json("iot_vulns", &b)).transpose()
    }

    /// Newest-first rows of `table` about `q.device_id` (`device_col`), or of
    /// every device when `q.device_id` is empty, mapped by `row`.
    fn device_rows<T>(
        &self,
        table: &str,
        columns: &str,
        time_col: &str,
        q: &DeviceQuery<'_>,
        mut row: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {columns} FROM {table}
             WHERE (?1 = '' OR device_id = ?1) AND (?2 IS NULL OR gateway_id = ?2)
                AND {time_col} >= ?3
             ORDER BY {time_col} DESC, rowid DESC LIMIT ?4"
        ))?;
        let mut rows = stmt.query(params![
            q.device_id,
            q.gateway_id,
            q.since_ms.unwrap_or(0),
            q.limit
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(out)
    }

    /// The device's telemetry readings, oldest first (the newest `q.limit`).
    pub fn iot_telemetry(&self, q: &DeviceQuery<'_>) -> Result<Vec<TelemetryPoint>, StoreError> {
        let mut v = self.device_rows(
            "iot_telemetry",
            "gateway_id, device_id, sequence_no, timestamp_ms, arrival_ms, cpu_usage,
                battery_level, sensors, anomaly_score, anomaly_threshold, batch_sha256",
            "arrival_ms",
            q,
            |r| {
                let score: Option<f64> = r.get(8)?;
                let threshold: Option<f64> = r.get(9)?;
                Ok(TelemetryPoint {
                    gateway_id: r.get(0)?,
                    device_id: r.get(1)?,
                    sequence_no: r.get(2)?,
                    timestamp_ms: r.get(3)?,
                    arrival_ms: r.get(4)?,
                    cpu_usage: r.get(5)?,
                    battery_level: r.get(6)?,
                    sensors: json("iot_telemetry", &r.get::<_, String>(7)?)?,
                    anomaly: score
                        .zip(threshold)
                        .map(|(score, threshold)| DeviceAnomalyScore { score, threshold }),
                    batch_sha256: r.get(10)?,
                })
            },
        )?;
        v.reverse();
        Ok(v)
    }

    /// The device's trust changes, oldest first (the newest `q.limit`).
    pub fn iot_trust(&self, q: &DeviceQuery<'_>) -> Result<Vec<TrustChangeView>, StoreError> {
        let mut v = self.device_rows(
            "iot_trust",
            "gateway_id, body, audit_hash",
            "at_ms",
            q,
            |r| {
                Ok(TrustChangeView {
                    gateway_id: r.get(0)?,
                    change: json("iot_trust", &r.get::<_, String>(1)?)?,
                    audit_hash: r.get(2)?,
                })
            },
        )?;
        v.reverse();
        Ok(v)
    }

    /// Refused telemetry messages naming the device (every device when
    /// `q.device_id` is empty), newest first.
    pub fn iot_refusals(&self, q: &DeviceQuery<'_>) -> Result<Vec<RefusalView>, StoreError> {
        self.device_rows(
            "iot_refusals",
            "gateway_id, body, audit_hash",
            "at_ms",
            q,
            |r| {
                Ok(RefusalView {
                    gateway_id: r.get(0)?,
                    refusal: json("iot_refusals", &r.get::<_, String>(1)?)?,
                    audit_hash: r.get(2)?,
                })
            },
        )
    }

    /// Command decisions about the device (every device when empty), newest first.
    pub fn iot_decisions(&self, q: &DeviceQuery<'_>) -> Result<Vec<DecisionView>, StoreError> {
        self.device_rows("iot_decisions", "body, audit_hash", "at_ms", q, |r| {
            Ok(DecisionView {
                decision: json("iot_decisions", &r.get::<_, String>(0)?)?,
                audit_hash: r.get(1)?,
            })
        })
    }

    /// Vulnerability scans of the device, newest first.
    pub fn iot_vulns(&self, q: &DeviceQuery<'_>) -> Result<Vec<VulnView>, StoreError> {
        self.device_rows("iot_vulns", "body, audit_hash", "at_ms", q, |r| {
            Ok(VulnView {
                report: json("iot_vulns", &r.get::<_, String>(0)?)?,
                audit_hash: r.get(1)?,
            })
        })
    }

    /// The batches that carried the device's readings, newest first.
    pub fn iot_batches(&self, q: &DeviceQuery<'_>) -> Result<Vec<BatchView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT b.gateway_id, b.batch_no, b.sha256, b.opened_ms, b.closed_ms, b.sent_at_ms,
                b.records, b.audit_hash
             FROM iot_batches b
             WHERE EXISTS (SELECT 1 FROM iot_telemetry t
                    WHERE t.gateway_id = b.gateway_id AND t.batch_sha256 = b.sha256
                        AND t.device_id = ?1)
                AND (?2 IS NULL OR b.gateway_id = ?2) AND b.closed_ms >= ?3
             ORDER BY b.closed_ms DESC, b.rowid DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![q.device_id, q.gateway_id, q.since_ms.unwrap_or(0), q.limit],
            |r| {
                Ok(BatchView {
                    gateway_id: r.get(0)?,
                    batch_no: r.get(1)?,
                    sha256: r.get(2)?,
                    opened_ms: r.get(3)?,
                    closed_ms: r.get(4)?,
                    sent_at_ms: r.get(5)?,
                    records: r.get(6)?,
                    audit_hash: r.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
