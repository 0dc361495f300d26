//! Shared fixtures: an app with a temp audit log, a recording publisher and
//! signing keys from a test CA, and wire messages as gateways and detectors send
//! them (verdicts and commands signed, as on the bus).
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
};

use dashboard::{
    api::routes,
    app::App,
    audit::AuditLog,
    config::Config,
    metrics::Metrics,
    publish::{Keys, Publisher, RecordingPublisher},
    store::Store,
};
use fw_common::{counters::CounterSlot, filter::BlockReason};
use serde_json::Value;
use tad_bus::{
    BusConfig,
    pki::{CertificateAuthority, Validity},
    signing::{Signer, Verifier},
};
use tad_wire::{
    Action, Alert, AlertKind, BlockOrigin, CounterEntry, CountersSnapshot, EnforcedBlock,
    Explanation, GatewayState, GatewayStateDelta, LimitsView, MapFill, Message, Mode, NodeStatus,
    Role, SCHEMA_VERSION, Severity, TrustLevel, TrustUpdate, Verdict, topic,
};
use warp::{http::StatusCode, test::request};

/// GET `path` through the API routes, without a token: the status and the JSON
/// body (`Null` when there is none).
pub async fn get(app: &Arc<App>, path: &str) -> (StatusCode, Value) {
    let res = request()
        .method("GET")
        .path(path)
        .reply(&routes(app.clone()))
        .await;
    let body = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (res.status(), body)
}

/// `method path` through the API routes with the test token and `body` as JSON:
/// the status and the JSON body (`Null` when there is none).
pub async fn call(
    app: &Arc<App>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = request()
        .method(method)
        .path(path)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let res = req.reply(&routes(app.clone())).await;
    (
        res.status(),
        serde_json::from_slice(res.body()).unwrap_or(Value::Null),
    )
}

/// Waits until `cond` holds; panics naming `what` after 20 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

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

/// The test CA every fixture app trusts (one per test binary).
pub fn test_ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        CertificateAuthority::generate("tad dashboard test CA", Validity::days(2)).unwrap()
    })
}

/// A signer for node `id` with a certificate from [`test_ca`] (issued once).
pub fn signer(id: &str) -> Arc<Signer> {
    static SIGNERS: OnceLock<Mutex<BTreeMap<String, Arc<Signer>>>> = OnceLock::new();
    let mut m = SIGNERS.get_or_init(Default::default).lock().unwrap();
    m.entry(id.to_owned())
        .or_insert_with(|| {
            let c = test_ca().issue_client(id, Validity::days(2)).unwrap();
            Arc::new(Signer::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap())
        })
        .clone()
}

/// `msg` signed by node `id` (a JWS, as `publish_signed` sends it).
pub fn sign_as<M: Message>(id: &str, msg: &M) -> Vec<u8> {
    signer(id).sign(msg)
}

/// The dashboard's keys in the fixture: signer `dashboard`, verifier [`test_ca`].
pub fn keys() -> Keys {
    Keys {
        signer: signer("dashboard"),
        verifier: Verifier::from_ca_pem(test_ca().cert_pem().as_bytes()).unwrap(),
    }
}

/// An app publishing through `publisher` with the keys of a bus config (a
/// [`tad_bus::testing::TestBroker`] identity).
pub fn fixture_on_bus(publisher: Arc<dyn Publisher>, bus: &BusConfig) -> Fixture {
    let (app, dir) = app_keys(|_| {}, publisher, Keys::from_bus_config(bus).unwrap());
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
    app_keys(tweak, publisher, keys())
}

fn app_keys(
    tweak: impl FnOnce(&mut Config),
    publisher: Arc<dyn Publisher>,
    keys: Keys,
) -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let store = Store::open(&cfg.storage.db_path).unwrap();
    store.name_devices(&cfg.devices).unwrap();
    let audit = AuditLog::open(&cfg.storage.audit_log).unwrap();
    let app = Arc::new(
        App::new(
            cfg,
            store,
            audit,
            publisher,
            None,
            Arc::new(Metrics::default()),
        )
        .with_keys(keys),
    );
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
        partitions: None,
        taken: Vec::new(),
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
        first_seen_ms: None,
        count: 1,
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
        port: None,
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

/// A block entry as a gateway publishes it.
pub fn entry(
    prefix: &str,
    origin: BlockOrigin,
    by: &str,
    expires_at_ms: Option<u64>,
) -> EnforcedBlock {
    EnforcedBlock {
        prefix: prefix.parse().unwrap(),
        origin,
        provisional: false,
        reason: BlockReason::Manual,
        rule: (origin == BlockOrigin::Feed).then(|| "spamhaus-drop.txt".into()),
        by: Some(by.into()),
        created_ms: tad_wire::now_ms() - 1_000,
        expires_at_ms,
        hits: 42,
    }
}

/// A gateway state snapshot of [`GW`].
pub fn gw_state(rev: u64, at_ms: u64, blocks: Vec<EnforcedBlock>) -> GatewayState {
    GatewayState {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
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

/// An empty state delta of [`GW`].
pub fn gw_delta(rev: u64, at_ms: u64) -> GatewayStateDelta {
    GatewayStateDelta {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
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

/// The dashboard's bus task ([`dashboard::bus::run`]) on a test broker as
/// `dashboard`, with a fixture whose publisher feeds it; [`Self::stop`] ends it.
pub struct OnBus {
    pub f: Fixture,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tad_bus::BusError>>,
}

impl OnBus {
    /// Starts the bus task for a fresh fixture.
    pub fn start(broker: &tad_bus::testing::TestBroker) -> OnBus {
        let (publisher, outbound) = dashboard::publish::ChannelPublisher::new(8);
        let f = fixture_on_bus(Arc::new(publisher), &broker.config("dashboard").unwrap());
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(dashboard::bus::run(
            f.app.clone(),
            broker.config("dashboard").unwrap(),
            outbound,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        OnBus { f, stop, task }
    }

    /// Stops the bus task; panics unless it ends cleanly within 20 s.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(20), self.task)
            .await
            .expect("dashboard bus task ends")
            .unwrap()
            .unwrap();
    }
}
