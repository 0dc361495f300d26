//! What the gateways measured: one row per counters snapshot (`samples`, with
//! the derived [`SeriesPoint`] the charts draw), the bucketed series the overview
//! and history read, and flow record summaries (`flows`).

use std::net::IpAddr;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use tad_wire::{CountersSnapshot, FlowBatch};

use super::{ListQuery, Store, StoreError, enum_str, to_json};

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
    /// Dropped for any other reason (blocklist, provisional quarantine, a consumed
    /// SYN-authentication RST), pps.
    pub drop_blocklist_pps: f64,
    /// SYNs kept from their server: dropped by the per-source SYN rate limit or a
    /// protected service's fallback rate, or answered by SYN authentication
    /// (`XDP_TX`), pps.
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

/// The newest-first read of `flows`.
const FLOWS: ListQuery = ListQuery {
    table: "flows",
    columns: "gateway_id, start_ms, src, dst, sport, dport, proto, packets, bytes,
                duration_us, end_reason",
    time_col: "received_ms",
};

impl Store {
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

    /// Flow summaries, newest first.
    pub fn flows(&self, limit: u32) -> Result<Vec<FlowSummary>, StoreError> {
        self.list(&FLOWS, None, limit, |r| {
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
        })
    }
}
