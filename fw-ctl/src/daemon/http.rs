//! The daemon's local HTTP server (`[http] listen`, default 127.0.0.1:9102):
//!
//! - `GET /metrics`: the gateway's counters in the Prometheus text exposition
//!   format, version 0.0.4 (every sample `tad_gateway_<name>{labels} value`);
//! - `GET /health`: `200` with `{"status":"ok","gateway_id","bus","xdp_attached":
//!   [{"name","xdp_mode"}]}` while the XDP program is attached to at least one
//!   interface, `503` with `"status":"unavailable"` otherwise.
//!
//! The main task refreshes one [`Exposition`] (counters snapshot, enforcer
//! counters, the published state's block counts, bus state, attachments) every
//! second and whenever the collector reports; requests only read it, so they never
//! touch a map or wait for the event loop.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tad_wire::{BlockOrigin, CounterEntry, InterfaceStatus, Mode, RefusalReason};
use tokio::net::TcpListener;
use warp::{
    Filter as _, Reply as _,
    http::{HeaderValue, StatusCode, header},
};

use super::{
    enforcer::{EnforcerStats, reason_name},
    evidence::EvidenceStats,
};

/// Everything `/metrics` and `/health` show, as last refreshed by the daemon.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub gateway_id: String,
    /// Per counter slot, since the program was loaded (from the collector).
    pub counters: Vec<CounterEntry>,
    /// `None` until the collector first read the config map.
    pub mode: Option<Mode>,
    /// Enforced blocklist entries by origin (from the published state).
    pub blocks: BTreeMap<BlockOrigin, u64>,
    pub allow_entries: u64,
    pub enforcer: EnforcerStats,
    pub records_exported_total: u64,
    pub records_dropped_total: u64,
    /// The IPFIX exporter's counters; `None` without `[ipfix] collector`.
    pub ipfix: Option<super::ipfix::IpfixStats>,
    /// The bus state text of the status file (`connected`, `disabled`, ...).
    pub bus: String,
    pub bus_connected: bool,
    /// Interfaces the program is attached to (link pins).
    pub attached: Vec<InterfaceStatus>,
    /// Enforced provisional quarantines (the program's own entries, from the
    /// published state).
    pub provisional_quarantines: u64,
    /// The evidence task's counters.
    pub evidence: EvidenceStats,
    /// Flow admission counts (admitted, pended, replaced live), from the
    /// collector; `None` before the first reading or without the map.
    pub admission: Option<[u64; 3]>,
    /// Services under SYN authentication in force (from the published state).
    pub protected_services: u64,
    /// SYN-ACK challenges sent, summed over the services in force (their
    /// `SYN_AUTH` counters).
    pub syn_auth_challenges: u64,
    /// The device task's counters; `None` without `[devices]` (no device
    /// families are rendered then).
    pub devices: Option<super::devices::DeviceStats>,
}

impl Exposition {
    /// Takes the protected services of a state view.
    pub fn set_protected(&mut self, p: &[tad_wire::state::ProtectedService]) {
        self.protected_services = p.len() as u64;
        self.syn_auth_challenges = p.iter().map(|s| s.challenged).sum();
    }
}

/// The exposition shared between the daemon (writer) and the server (reader).
pub type Shared = Arc<Mutex<Exposition>>;

/// A unit enum's serde name (`port_scan`), for a label value.
fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP tad_gateway_{name} {help}");
    let _ = writeln!(out, "# TYPE tad_gateway_{name} {kind}");
}

const ORIGINS: [BlockOrigin; 6] = [
    BlockOrigin::Cli,
    BlockOrigin::Feed,
    BlockOrigin::Verdict,
    BlockOrigin::Command,
    BlockOrigin::Config,
    BlockOrigin::Datapath,
];

const REASONS: [RefusalReason; 11] = [
    RefusalReason::Malformed,
    RefusalReason::BadSignature,
    RefusalReason::IdentityMismatch,
    RefusalReason::UntrustedSender,
    RefusalReason::Stale,
    RefusalReason::Replayed,
    RefusalReason::Ttl,
    RefusalReason::TooWide,
    RefusalReason::Allowlisted,
    RefusalReason::NotOwner,
    RefusalReason::Other,
];

/// The exposition text of `e` (Prometheus text format 0.0.4).
pub fn render(e: &Exposition) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "xdp_packets_total",
        "counter",
        "Packets the XDP program handled since it was loaded, by verdict and reason.",
    );
    for c in &e.counters {
        let _ = writeln!(
            out,
            "tad_gateway_xdp_packets_total{{verdict=\"{}\",reason=\"{}\"}} {}",
            label(&c.verdict),
            label(&c.reason),
            c.packets
        );
    }
    family(
        &mut out,
        "xdp_bytes_total",
        "counter",
        "Frame bytes the XDP program handled since it was loaded, by verdict and reason.",
    );
    for c in &e.counters {
        let _ = writeln!(
            out,
            "tad_gateway_xdp_bytes_total{{verdict=\"{}\",reason=\"{}\"}} {}",
            label(&c.verdict),
            label(&c.reason),
            c.bytes
        );
    }
    family(
        &mut out,
        "blocks",
        "gauge",
        "Blocklist entries enforced (unexpired), by origin.",
    );
    for o in ORIGINS {
        let _ = writeln!(
            out,
            "tad_gateway_blocks{{origin=\"{}\"}} {}",
            label(&o),
            e.blocks.get(&o).copied().unwrap_or(0)
        );
    }
    family(
        &mut out,
        "provisional_quarantines",
        "gauge",
        "Provisional quarantines in force (the XDP program's own entries: new flows dropped).",
    );
    let _ = writeln!(
        out,
        "tad_gateway_provisional_quarantines {}",
        e.provisional_quarantines
    );
    if let Some(a) = e.admission {
        family(
            &mut out,
            "flow_admission_total",
            "counter",
            "Flow admission in XDP (fw_common::admission): flows admitted to the flow map on their second packet, first packets made pending, and live pending one-packet flows replaced by a colliding one (their packet is in no flow record).",
        );
        for (event, n) in ["admitted", "pended", "replaced_live"].iter().zip(a) {
            let _ = writeln!(
                out,
                "tad_gateway_flow_admission_total{{event=\"{event}\"}} {n}"
            );
        }
    }
    let ev = &e.evidence;
    family(
        &mut out,
        "evidence_events_total",
        "counter",
        "Events read from the XDP program's ring buffer since the daemon started, by kind.",
    );
    for (kind, n) in [
        ("report", ev.events_report),
        ("quarantine", ev.events_quarantine),
    ] {
        let _ = writeln!(
            out,
            "tad_gateway_evidence_events_total{{kind=\"{kind}\"}} {n}"
        );
    }
    family(
        &mut out,
        "evidence_batches_total",
        "counter",
        "Evidence batches published since the daemon started.",
    );
    let _ = writeln!(
        out,
        "tad_gateway_evidence_batches_total {}",
        ev.batches_published
    );
    family(
        &mut out,
        "evidence_records_total",
        "counter",
        "Per-address epoch records published since the daemon started (changed ones only).",
    );
    let _ = writeln!(
        out,
        "tad_gateway_evidence_records_total {}",
        ev.records_published
    );
    family(
        &mut out,
        "protected_services",
        "gauge",
        "TCP services under SYN authentication (spoofed SYN flood mitigation) in force.",
    );
    let _ = writeln!(
        out,
        "tad_gateway_protected_services {}",
        e.protected_services
    );
    family(
        &mut out,
        "syn_auth_challenges_total",
        "counter",
        "SYN-ACK challenges sent for the protected services in force (sum of their map \
         counters; falls when a service's protection ends, read as a counter reset).",
    );
    let _ = writeln!(
        out,
        "tad_gateway_syn_auth_challenges_total {}",
        e.syn_auth_challenges
    );
    if let Some(d) = &e.devices {
        render_devices(&mut out, d);
    }
    family(&mut out, "allow_entries", "gauge", "Allowlist entries.");
    let _ = writeln!(out, "tad_gateway_allow_entries {}", e.allow_entries);
    family(
        &mut out,
        "refusals_total",
        "counter",
        "Verdicts and commands refused since the daemon started, by reason.",
    );
    for r in REASONS {
        let _ = writeln!(
            out,
            "tad_gateway_refusals_total{{reason=\"{}\"}} {}",
            reason_name(r),
            e.enforcer.refusals.get(&r).copied().unwrap_or(0)
        );
    }
    let s = &e.enforcer;
    family(
        &mut out,
        "messages_total",
        "counter",
        "Verdicts and commands handled since the daemon started, by kind and outcome.",
    );
    for (kind, outcome, n) in [
        ("verdict", "applied", s.verdicts_applied),
        ("verdict", "no_change", s.verdicts_no_change),
        ("verdict", "observed", s.verdicts_observed),
        ("verdict", "rejected", s.verdicts_rejected),
        ("command", "applied", s.commands_applied),
        ("command", "no_change", s.commands_no_change),
        ("command", "rejected", s.commands_rejected),
    ] {
        let _ = writeln!(
            out,
            "tad_gateway_messages_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut out,
        "flow_records_exported_total",
        "counter",
        "Flow records read from the flow map since the daemon started.",
    );
    let _ = writeln!(
        out,
        "tad_gateway_flow_records_exported_total {}",
        e.records_exported_total
    );
    family(
        &mut out,
        "flow_records_dropped_total",
        "counter",
        "Flow records dropped from the full queue (oldest first) since the daemon started.",
    );
    let _ = writeln!(
        out,
        "tad_gateway_flow_records_dropped_total {}",
        e.records_dropped_total
    );
    if let Some(x) = &e.ipfix {
        for (name, help, n) in [
            (
                "ipfix_messages_sent_total",
                "IPFIX messages sent to the collector since the daemon started.",
                x.messages_sent_total,
            ),
            (
                "ipfix_records_sent_total",
                "IPFIX data records (one per flow direction with packets) sent since the daemon started.",
                x.records_sent_total,
            ),
            (
                "ipfix_send_errors_total",
                "IPFIX messages that could not be sent (their records lost) since the daemon started.",
                x.send_errors_total,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "tad_gateway_{name} {n}");
        }
    }
    family(
        &mut out,
        "bus_connected",
        "gauge",
        "1 while connected to the MQTT broker, else 0.",
    );
    let _ = writeln!(
        out,
        "tad_gateway_bus_connected {}",
        u8::from(e.bus_connected)
    );
    family(
        &mut out,
        "mode",
        "gauge",
        "1 for the filtering mode in force (observe or enforce), 0 for the other.",
    );
    for m in [Mode::Observe, Mode::Enforce] {
        let _ = writeln!(
            out,
            "tad_gateway_mode{{mode=\"{}\"}} {}",
            label(&m),
            u8::from(e.mode == Some(m))
        );
    }
    family(
        &mut out,
        "xdp_attached",
        "gauge",
        "Interfaces the XDP program is attached to.",
    );
    let _ = writeln!(out, "tad_gateway_xdp_attached {}", e.attached.len());
    out
}

/// The device task's families (`[devices]`, issue 17): telemetry received,
/// accepted and refused by reason (every reason, zeros included), forwarded
/// batches and outbox drops, command decisions by outcome and refusal reason
/// (the reasons seen so far), scans and trust changes.
fn render_devices(out: &mut String, d: &super::devices::DeviceStats) {
    family(
        out,
        "device_telemetry_total",
        "counter",
        "Device telemetry messages the guard received since the daemon started, by outcome.",
    );
    let refused: u64 = d.refused.values().sum();
    for (outcome, n) in [("accepted", d.accepted), ("refused", refused)] {
        let _ = writeln!(
            out,
            "tad_gateway_device_telemetry_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        out,
        "device_telemetry_refused_total",
        "counter",
        "Device telemetry messages refused since the daemon started, by reason.",
    );
    for r in tad_wire::devices::DeviceRefusalReason::ALL {
        let _ = writeln!(
            out,
            "tad_gateway_device_telemetry_refused_total{{reason=\"{}\"}} {}",
            r.as_str(),
            d.refused.get(&r).copied().unwrap_or(0)
        );
    }
    for (name, kind, help, n) in [
        (
            "device_batches_total",
            "counter",
            "Batches of valid device telemetry published to the detector since the daemon started.",
            d.batches_published,
        ),
        (
            "device_batches_dropped_total",
            "counter",
            "Device telemetry batches the full outbox dropped (oldest first) since the daemon started.",
            d.batches_dropped,
        ),
        (
            "device_records_dropped_total",
            "counter",
            "Device telemetry records in the dropped batches since the daemon started.",
            d.records_dropped,
        ),
        (
            "device_outbox_batches",
            "gauge",
            "Device telemetry batches waiting for the bus.",
            d.outbox_queued,
        ),
        (
            "device_scans_total",
            "counter",
            "Vulnerability scans of devices run since the daemon started.",
            d.scans,
        ),
        (
            "device_trust_changes_total",
            "counter",
            "Device trust score changes (each an audit entry) since the daemon started.",
            d.trust_changes,
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "tad_gateway_{name} {n}");
    }
    family(
        out,
        "device_commands_total",
        "counter",
        "Device command requests vetted since the daemon started, by decision and refusal \
         reason (reason=\"\" for allowed ones).",
    );
    let _ = writeln!(
        out,
        "tad_gateway_device_commands_total{{decision=\"allowed\",reason=\"\"}} {}",
        d.commands_allowed
    );
    for (reason, n) in &d.commands_refused {
        let reason: String = reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let _ = writeln!(
            out,
            "tad_gateway_device_commands_total{{decision=\"refused\",reason=\"{reason}\"}} {n}"
        );
    }
}

/// The `/health` answer: status code and JSON body.
pub fn health(e: &Exposition) -> (StatusCode, serde_json::Value) {
    let ok = !e.attached.is_empty();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "gateway_id": e.gateway_id,
        "bus": e.bus,
        "xdp_attached": e.attached,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn read(shared: &Shared) -> Exposition {
    shared.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let m = shared.clone();
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        let mut res = render(&read(&m)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    });
    let h = shared;
    let health = warp::path!("health").and(warp::get()).map(move || {
        let (code, body) = health(&read(&h));
        warp::reply::with_status(warp::reply::json(&body), code)
    });
    warp::serve(metrics.or(health))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use fw_common::counters::CounterSlot;

    use super::*;

    fn exposition() -> Exposition {
        let mut e = Exposition {
            gateway_id: "gateway-1".into(),
            counters: (0..3)
                .map(|i| CounterEntry::new(CounterSlot::ALL[i], 10 * i as u64, 100 * i as u64, 0.0))
                .collect(),
            mode: Some(Mode::Enforce),
            blocks: [(BlockOrigin::Feed, 2), (BlockOrigin::Cli, 1)].into(),
            allow_entries: 3,
            records_exported_total: 7,
            provisional_quarantines: 2,
            protected_services: 1,
            syn_auth_challenges: 4_096,
            evidence: EvidenceStats {
                events_quarantine: 3,
                batches_published: 5,
                ..Default::default()
            },
            bus: "connected".into(),
            bus_connected: true,
            admission: Some([11, 40, 3]),
            ..Default::default()
        };
        e.enforcer.verdicts_applied = 4;
        e.enforcer.refusals = [(RefusalReason::IdentityMismatch, 2)].into();
        e
    }

    /// Parses an exposition: every line is a `# HELP`/`# TYPE` comment or a
    /// sample `name{labels} value` / `name value` with a number; every sample's
    /// family has a TYPE line before it. Returns sample name+labels -> value.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut typed = std::collections::HashSet::new();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                typed.insert(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            out.insert(series.to_string(), value.parse::<f64>().unwrap());
        }
        out
    }

    #[test]
    fn renders_every_family_in_exposition_format() {
        let m = parse(&render(&exposition()));
        let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:?}"));
        let slot = CounterSlot::ALL[2];
        assert_eq!(
            v(&format!(
                "tad_gateway_xdp_packets_total{{verdict=\"{}\",reason=\"{}\"}}",
                label(&slot.verdict()),
                label(&slot.reason())
            )),
            20.0
        );
        assert_eq!(v("tad_gateway_blocks{origin=\"feed\"}"), 2.0);
        assert_eq!(v("tad_gateway_blocks{origin=\"verdict\"}"), 0.0);
        assert_eq!(v("tad_gateway_allow_entries"), 3.0);
        assert_eq!(
            v("tad_gateway_refusals_total{reason=\"identity_mismatch\"}"),
            2.0
        );
        assert_eq!(v("tad_gateway_refusals_total{reason=\"stale\"}"), 0.0);
        assert_eq!(
            v("tad_gateway_messages_total{kind=\"verdict\",outcome=\"applied\"}"),
            4.0
        );
        assert_eq!(v("tad_gateway_flow_records_exported_total"), 7.0);
        assert_eq!(v("tad_gateway_bus_connected"), 1.0);
        assert_eq!(v("tad_gateway_mode{mode=\"enforce\"}"), 1.0);
        assert_eq!(v("tad_gateway_mode{mode=\"observe\"}"), 0.0);
        assert_eq!(v("tad_gateway_xdp_attached"), 0.0);
        assert_eq!(v("tad_gateway_blocks{origin=\"datapath\"}"), 0.0);
        assert_eq!(v("tad_gateway_provisional_quarantines"), 2.0);
        assert_eq!(
            v("tad_gateway_evidence_events_total{kind=\"quarantine\"}"),
            3.0
        );
        assert_eq!(v("tad_gateway_evidence_events_total{kind=\"report\"}"), 0.0);
        assert_eq!(v("tad_gateway_evidence_batches_total"), 5.0);
        assert_eq!(v("tad_gateway_protected_services"), 1.0);
        assert_eq!(v("tad_gateway_syn_auth_challenges_total"), 4096.0);
        assert_eq!(
            v("tad_gateway_flow_admission_total{event=\"replaced_live\"}"),
            3.0
        );
        assert_eq!(
            v("tad_gateway_flow_admission_total{event=\"pended\"}"),
            40.0
        );
        let none = render(&Exposition::default());
        assert!(!none.contains("flow_admission"), "no map, no family");
        assert!(!none.contains("device_"), "no [devices], no device family");
    }

    #[test]
    fn device_counters_render_by_outcome_and_reason() {
        use tad_wire::devices::DeviceRefusalReason as R;
        let mut e = exposition();
        e.devices = Some(super::super::devices::DeviceStats {
            received: 12,
            accepted: 9,
            refused: [(R::Replay, 2), (R::BadSignature, 1)].into(),
            batches_published: 3,
            commands_allowed: 1,
            commands_refused: [("low_trust".to_string(), 5)].into(),
            scans: 4,
            trust_changes: 6,
            ..Default::default()
        });
        let m = parse(&render(&e));
        let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:?}"));
        assert_eq!(
            v("tad_gateway_device_telemetry_total{outcome=\"accepted\"}"),
            9.0
        );
        assert_eq!(
            v("tad_gateway_device_telemetry_total{outcome=\"refused\"}"),
            3.0
        );
        assert_eq!(
            v("tad_gateway_device_telemetry_refused_total{reason=\"replay\"}"),
            2.0
        );
        assert_eq!(
            v("tad_gateway_device_telemetry_refused_total{reason=\"skew\"}"),
            0.0
        );
        assert_eq!(v("tad_gateway_device_batches_total"), 3.0);
        assert_eq!(
            v("tad_gateway_device_commands_total{decision=\"refused\",reason=\"low_trust\"}"),
            5.0
        );
        assert_eq!(
            v("tad_gateway_device_commands_total{decision=\"allowed\",reason=\"\"}"),
            1.0
        );
        assert_eq!(v("tad_gateway_device_trust_changes_total"), 6.0);
    }

    #[test]
    fn protected_services_sum_their_challenges() {
        let svc = |challenged| tad_wire::state::ProtectedService {
            addr: "192.0.2.10".parse().unwrap(),
            port: Some(80),
            origin: BlockOrigin::Verdict,
            rule: None,
            by: None,
            created_ms: 0,
            expires_at_ms: None,
            challenged,
            validated: 0,
            passed: 0,
            limited: 0,
        };
        let mut e = Exposition::default();
        e.set_protected(&[svc(10), svc(32)]);
        assert_eq!((e.protected_services, e.syn_auth_challenges), (2, 42));
        e.set_protected(&[]);
        assert_eq!((e.protected_services, e.syn_auth_challenges), (0, 0));
    }

    #[test]
    fn health_follows_the_attachment() {
        let mut e = exposition();
        let (code, body) = health(&e);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        e.attached.push(InterfaceStatus {
            name: "eth0".into(),
            xdp_mode: "native".into(),
        });
        let (code, body) = health(&e);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            (
                body["status"].as_str(),
                body["gateway_id"].as_str(),
                body["bus"].as_str()
            ),
            (Some("ok"), Some("gateway-1"), Some("connected"))
        );
        assert_eq!(body["xdp_attached"][0]["name"], "eth0");
    }
}
