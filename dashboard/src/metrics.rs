//! The dashboard's own counters, served at `/metrics` in the Prometheus text
//! exposition format (version 0.0.4).

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::store::RowCounts;

/// Message kinds counted on ingestion.
pub const KINDS: [&str; 10] = [
    "counters",
    "flows",
    "status",
    "ack",
    "verdict",
    "command",
    "alert",
    "trust",
    "thresholds",
    "unknown",
];

/// Counters; all monotonic except `sse_clients`.
#[derive(Debug, Default)]
pub struct Metrics {
    messages: [AtomicU64; KINDS.len()],
    pub decode_errors: AtomicU64,
    pub topic_mismatches: AtomicU64,
    pub store_errors: AtomicU64,
    pub audit_records: AtomicU64,
    pub audit_errors: AtomicU64,
    pub sse_clients: AtomicU64,
    pub sse_lagged_events: AtomicU64,
    pub published: AtomicU64,
    pub publish_refused: AtomicU64,
    pub api_rejected: AtomicU64,
    pub influx_lines: AtomicU64,
    pub influx_dropped: AtomicU64,
    pub influx_errors: AtomicU64,
    pub pruned_rows: AtomicU64,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts one ingested message of `kind` (one of [`KINDS`]).
    pub fn message(&self, kind: &str) {
        let i = KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(KINDS.len() - 1);
        inc(&self.messages[i]);
    }

    /// Messages ingested of `kind`.
    pub fn messages(&self, kind: &str) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.messages[i].load(Ordering::Relaxed))
    }

    /// The exposition text; `rows` adds the store's row counts as gauges.
    pub fn render(&self, rows: Option<&RowCounts>, audit_records: u64) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP tad_dashboard_messages_total Bus messages ingested, by kind.\n");
        out.push_str("# TYPE tad_dashboard_messages_total counter\n");
        for (k, c) in KINDS.iter().zip(&self.messages) {
            let _ = writeln!(
                out,
                "tad_dashboard_messages_total{{kind=\"{k}\"}} {}",
                get(c)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "decode_errors_total",
                "Bus payloads that failed to decode or validate.",
                &self.decode_errors,
            ),
            (
                "topic_mismatch_total",
                "Payloads whose id did not match their topic.",
                &self.topic_mismatches,
            ),
            (
                "store_errors_total",
                "Failed database writes.",
                &self.store_errors,
            ),
            (
                "audit_errors_total",
                "Failed audit log appends.",
                &self.audit_errors,
            ),
            (
                "sse_lagged_events_total",
                "Live events skipped for slow SSE clients.",
                &self.sse_lagged_events,
            ),
            (
                "published_total",
                "Messages handed to the bus.",
                &self.published,
            ),
            (
                "publish_refused_total",
                "Messages the bus queue refused (request answered 503).",
                &self.publish_refused,
            ),
            (
                "api_rejected_total",
                "Mutating API requests rejected (auth, origin, validation).",
                &self.api_rejected,
            ),
            (
                "influx_lines_total",
                "Line-protocol lines exported.",
                &self.influx_lines,
            ),
            (
                "influx_dropped_total",
                "Line-protocol lines dropped (export queue full).",
                &self.influx_dropped,
            ),
            (
                "influx_errors_total",
                "Failed line-protocol writes.",
                &self.influx_errors,
            ),
            (
                "pruned_rows_total",
                "Rows deleted by retention.",
                &self.pruned_rows,
            ),
            (
                "audit_appends_total",
                "Audit records appended since start.",
                &self.audit_records,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP tad_dashboard_{name} {help}");
            let _ = writeln!(out, "# TYPE tad_dashboard_{name} counter");
            let _ = writeln!(out, "tad_dashboard_{name} {}", get(c));
        }
        out.push_str("# HELP tad_dashboard_sse_clients Connected live-event clients.\n");
        out.push_str("# TYPE tad_dashboard_sse_clients gauge\n");
        let _ = writeln!(out, "tad_dashboard_sse_clients {}", get(&self.sse_clients));
        out.push_str("# HELP tad_dashboard_audit_records Records in the audit log.\n");
        out.push_str("# TYPE tad_dashboard_audit_records gauge\n");
        let _ = writeln!(out, "tad_dashboard_audit_records {audit_records}");
        if let Some(r) = rows {
            out.push_str("# HELP tad_dashboard_rows Rows stored, by table.\n");
            out.push_str("# TYPE tad_dashboard_rows gauge\n");
            for (t, n) in [
                ("samples", r.samples),
                ("flows", r.flows),
                ("alerts", r.alerts),
                ("verdicts", r.verdicts),
                ("commands", r.commands),
                ("acks", r.acks),
                ("devices", r.devices),
                ("blocks", r.blocks),
            ] {
                let _ = writeln!(out, "tad_dashboard_rows{{table=\"{t}\"}} {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_in_exposition_format() {
        let m = Metrics::default();
        m.message("alert");
        m.message("alert");
        m.message("nonsense");
        let text = m.render(None, 7);
        assert!(text.contains("tad_dashboard_messages_total{kind=\"alert\"} 2\n"));
        assert!(text.contains("tad_dashboard_messages_total{kind=\"unknown\"} 1\n"));
        assert!(text.contains("tad_dashboard_audit_records 7\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
