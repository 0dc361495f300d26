//! Shared fixtures: an app with a temp audit log and a recording publisher, and
//! wire messages as gateways and detectors send them.
#![allow(dead_code)]

use std::{collections::BTreeMap, sync::Arc};

use dashboard::{
    app::App,
    audit::AuditLog,
    config::Config,
    metrics::Metrics,
    publish::{Publisher, RecordingPublisher},
    store::Store,
};
use fw_common::{counters::CounterSlot, filter::BlockReason};
use tad_wire::{
    Action, Alert, AlertKind, CounterEntry, CountersSnapshot, Explanation, MapFill, Mode,
    NodeStatus, Role, SCHEMA_VERSION, Severity, TrustLevel, TrustUpdate, Verdict, topic,
};

pub const TOKEN: &str = "test-token-0123456789";
pub const GW: &str = "gateway-1";
pub const DET: &str = "detector-1";

pub struct Fixture {
    pub app: Arc<App>,
    pub publisher: Arc<RecordingPublisher>,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.api_token = TOKEN.into();
    c.storage.db_path = dir.join("db.sqlite");
    c.storage.audit_log = dir.join("audit.jsonl");
    c.devices
        .insert("192.0.2.10".parse().unwrap(), "thermostat".into());
    c
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

pub fn fixture_with(tweak: impl FnOnce(&mut Config)) -> Fixture {
    let publisher = Arc::new(RecordingPublisher::default());
    let (app, dir) = app_with(tweak, publisher.clone());
    Fixture {
        app,
        publisher,
        dir,
    }
}

/// An app publishing through `publisher` (the fixture's recorder stays empty).
pub fn fixture_with_publisher(publisher: Arc<dyn Publisher>) -> Fixture {
    let (app, dir) = app_with(|_| {}, publisher);
    Fixture {
        app,
        publisher: Arc::new(RecordingPublisher::default()),
        dir,
    }
}

fn app_with(
    tweak: impl FnOnce(&mut Config),
    publisher: Arc<dyn Publisher>,
) -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let store = Store::open(&cfg.storage.db_path).unwrap();
    store.name_devices(&cfg.devices).unwrap();
    let audit = AuditLog::open(&cfg.storage.audit_log).unwrap();
    let app = Arc::new(App::new(
        cfg,
        store,
        audit,
        publisher,
        None,
        Arc::new(Metrics::default()),
    ));
    (app, dir)
}

pub fn status(gw: &str, online: bool, at_ms: u64) -> NodeStatus {
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: gw.parse().unwrap(),
        role: Role::Gateway,
        online,
        at_ms,
        mode: Some(Mode::Enforce),
        interfaces: vec![],
        maps: vec![MapFill {
            name: "BLOCKLIST_V4".into(),
            entries: 3,
            max_entries: 65536,
        }],
        version: "0.1.0".into(),
    }
}

pub fn counters(
    gw: &str,
    at_ms: u64,
    pass_pps: f64,
    drop_pps: f64,
    flows: u64,
) -> CountersSnapshot {
    CountersSnapshot {
        v: SCHEMA_VERSION,
        gateway_id: gw.parse().unwrap(),
        at_ms,
        mode: Mode::Enforce,
        counters: vec![
            CounterEntry::new(CounterSlot::PassNoMatch, 1000, 64000, pass_pps),
            CounterEntry::new(CounterSlot::DropSynRate, 10, 600, drop_pps),
            CounterEntry::new(CounterSlot::DropBlocklist, 5, 300, drop_pps / 2.0),
        ],
        maps: vec![MapFill {
            name: "FLOWS".into(),
            entries: 120,
            max_entries: 65536,
        }],
        flows_exported: flows,
        records_dropped_total: 0,
    }
}

pub fn alert(id: &str, at_ms: u64, source: &str) -> Alert {
    Alert {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: DET.parse().unwrap(),
        gateway_id: GW.parse().unwrap(),
        at_ms,
        kind: AlertKind::PortScan,
        severity: Severity::High,
        source: Some(source.parse().unwrap()),
        target: Some("198.51.100.20".parse().unwrap()),
        explanation: Explanation {
            rule: "portscan.vertical".into(),
            window_s: 10.0,
            observed: BTreeMap::from([("distinct_ports".into(), 22.0)]),
            thresholds: BTreeMap::from([("distinct_ports".into(), 15.0)]),
            text: format!("{source} probed 22 ports of 198.51.100.20 in 10 s (threshold 15)"),
        },
        flows: vec![],
        verdict_id: None,
    }
}

pub fn verdict(id: &str, at_ms: u64, target: &str) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: DET.parse().unwrap(),
        issued_at_ms: at_ms,
        action: Action::Quarantine,
        target: target.parse().unwrap(),
        ttl_s: Some(600),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.9,
        alert_id: None,
        observe_only: false,
    }
}

pub fn trust(device: &str, at_ms: u64, score: f64) -> TrustUpdate {
    TrustUpdate {
        v: SCHEMA_VERSION,
        detector_id: DET.parse().unwrap(),
        at_ms,
        device: device.parse().unwrap(),
        score,
        level: TrustLevel::of(score),
        behavioural: score,
        vulnerability: 80.0,
        reputation: 90.0,
        reason: "port scan".into(),
    }
}

/// Feeds a gateway status so the gateway is known.
pub fn known_gateway(app: &App) {
    let now = tad_wire::now_ms();
    app.ingest(
        &topic::gateway_status(GW),
        &tad_wire::encode(&status(GW, true, now)),
    )
    .unwrap();
}
