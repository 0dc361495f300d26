//! The dashboard's own counters, served at `/metrics` in the Prometheus text
//! exposition format (version 0.0.4), and the block gauges built from what the
//! gateways enforce ([`render_blocks`]).

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tad_wire::{BlockOrigin, RefusalReason};

use crate::store::{BlockView, HeldState, PendingCommand, PendingStatus, RowCounts};

/// Message kinds counted on ingestion.
pub const KINDS: [&str; 20] = [
    "counters",
    "flows",
    "status",
    "ack",
    "verdict",
    "command",
    "alert",
    "trust",
    "thresholds",
    "state",
    "state_delta",
    "settings_schema",
    "settings_ack",
    "device_batch",
    "device_trust",
    "device_refusals",
    "device_decision",
    "device_vulns",
    "device_state",
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
    /// Signed messages refused, by (kind, reason).
    refused: Mutex<BTreeMap<(&'static str, RefusalReason), u64>>,
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

    /// Counts one refused signed message of `kind` (`verdict`, `command`).
    pub fn refused(&self, kind: &'static str, reason: RefusalReason) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, reason))
            .or_default() += 1;
    }

    /// Signed messages of `kind` refused for `reason` so far.
    pub fn refusals(&self, kind: &str, reason: RefusalReason) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((k, r), _)| *k == kind && *r == reason)
            .map(|(_, n)| *n)
            .sum()
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
        out.push_str(
            "# HELP tad_dashboard_refused_total Signed verdicts/commands refused, by kind and reason.\n",
        );
        out.push_str("# TYPE tad_dashboard_refused_total counter\n");
        for ((kind, reason), n) in self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tad_dashboard_refused_total{{kind=\"{kind}\",reason=\"{}\"}} {n}",
                label(reason)
            );
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
                ("gateway_state", r.gateway_state),
            ] {
                let _ = writeln!(out, "tad_dashboard_rows{{table=\"{t}\"}} {n}");
            }
        }
        out
    }
}

/// A unit enum's serde name (`bad_signature`), for a label value.
fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The block gauges, from what the gateways enforce (the held states, their
/// unexpired entries) and the commands not shown yet:
/// `tad_dashboard_blocks{gateway,origin}`, `tad_dashboard_pending_commands{status}`,
/// `tad_dashboard_protected_services{gateway}` (SYN authentication),
/// `tad_dashboard_gateway_state_rev{gateway}`, `tad_dashboard_gateway_state_timestamp_seconds{gateway}`
/// and `tad_dashboard_gateway_refusals{gateway,reason}` (the gateway's own counters).
pub fn render_blocks(
    states: &[HeldState],
    blocks: &[BlockView],
    pending: &[PendingCommand],
) -> String {
    let mut out = String::new();
    let mut by: BTreeMap<(&str, BlockOrigin), u64> = BTreeMap::new();
    for h in states {
        for o in [
            BlockOrigin::Cli,
            BlockOrigin::Feed,
            BlockOrigin::Verdict,
            BlockOrigin::Command,
            BlockOrigin::Config,
            BlockOrigin::Datapath,
        ] {
            by.insert((h.state.gateway_id.as_str(), o), 0);
        }
    }
    for b in blocks {
        *by.entry((b.gateway_id.as_str(), b.origin)).or_default() += 1;
    }
    out.push_str("# HELP tad_dashboard_blocks Blocklist entries a gateway enforces (from its published state), by origin.\n");
    out.push_str("# TYPE tad_dashboard_blocks gauge\n");
    for ((gw, origin), n) in &by {
        let _ = writeln!(
            out,
            "tad_dashboard_blocks{{gateway=\"{gw}\",origin=\"{}\"}} {n}",
            label(origin)
        );
    }
    out.push_str("# HELP tad_dashboard_pending_commands Commands sent that the gateway state does not show, by status.\n");
    out.push_str("# TYPE tad_dashboard_pending_commands gauge\n");
    for st in [
        PendingStatus::Sent,
        PendingStatus::Acked,
        PendingStatus::Refused,
    ] {
        let n = pending.iter().filter(|p| p.status == st).count();
        let _ = writeln!(
            out,
            "tad_dashboard_pending_commands{{status=\"{}\"}} {n}",
            label(&st)
        );
    }
    out.push_str("# HELP tad_dashboard_protected_services TCP services a gateway protects with SYN authentication (from its published state).\n");
    out.push_str("# TYPE tad_dashboard_protected_services gauge\n");
    let now = tad_wire::now_ms();
    for h in states {
        let n = h
            .state
            .protected
            .iter()
            .filter(|p| p.expires_at_ms.is_none_or(|e| e > now))
            .count();
        let _ = writeln!(
            out,
            "tad_dashboard_protected_services{{gateway=\"{}\"}} {n}",
            h.state.gateway_id
        );
    }
    out.push_str(
        "# HELP tad_dashboard_gateway_state_rev Revision of the state held per gateway.\n",
    );
    out.push_str("# TYPE tad_dashboard_gateway_state_rev gauge\n");
    for h in states {
        let _ = writeln!(
            out,
            "tad_dashboard_gateway_state_rev{{gateway=\"{}\"}} {}",
            h.state.gateway_id, h.state.rev
        );
    }
    out.push_str(
        "# HELP tad_dashboard_gateway_state_timestamp_seconds When the gateway read the held state, Unix time, s.\n",
    );
    out.push_str("# TYPE tad_dashboard_gateway_state_timestamp_seconds gauge\n");
    for h in states {
        let _ = writeln!(
            out,
            "tad_dashboard_gateway_state_timestamp_seconds{{gateway=\"{}\"}} {:.3}",
            h.state.gateway_id,
            h.state.at_ms as f64 / 1e3
        );
    }
    out.push_str("# HELP tad_dashboard_gateway_refusals Verdicts/commands the gateway refused since it started, by reason.\n");
    out.push_str("# TYPE tad_dashboard_gateway_refusals gauge\n");
    for h in states {
        for (r, n) in &h.state.refusals {
            let _ = writeln!(
                out,
                "tad_dashboard_gateway_refusals{{gateway=\"{}\",reason=\"{}\"}} {n}",
                h.state.gateway_id,
                label(r)
            );
        }
    }
    out
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
        m.refused("verdict", RefusalReason::IdentityMismatch);
        let text = m.render(None, 7);
        assert!(text.contains(
            "tad_dashboard_refused_total{kind=\"verdict\",reason=\"identity_mismatch\"} 1\n"
        ));
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
