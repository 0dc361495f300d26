//! The gateway daemon's device task (`fw_ctl::daemon::devices::run`, what `fw-ctl
//! run` starts for a `[devices]` table) against a real Mosquitto with mutual TLS
//! and the generated ACL (`tad_bus::broker::render_acl_with_devices`): simulated
//! devices, each with its own certificate, publish signed telemetry (MQTT 3.1.1,
//! QoS 1, as an ESP32 would); every refusal reason of the guard is produced once
//! or more and reported on `tad/v1/gw/<gw>/devices/refusals` with device, reason
//! and count; valid telemetry arrives in `devices/telemetry` batches whose SHA-256
//! verifies (sent = accepted + refused, refused = exactly the attacks); the
//! broker keeps a device off another device's topic; signed command requests are
//! vetted (allowed and forwarded to the device's command topic, refused for low
//! trust and for a burst, refused when unsigned); after a gateway restart, replays
//! of messages accepted before it are still refused (the persisted window).
//! Needs the `mosquitto` package; no root, no XDP program.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use fw_ctl::daemon::devices::{self, DeviceStats, Devices};
use tad_bus::{
    BusClient, PublishOptions, QoS, Signer, Subscription,
    broker::render_acl_with_devices,
    testing::{DEFAULT_NODES, TestBroker},
};
use tad_devices::{
    DevicesConfig, Registry, TelemetryBatch,
    batch::BatchConfig,
    sim::SimDevice,
    telemetry::{seal, topic},
};
use tad_wire::{
    NodeId, SCHEMA_VERSION,
    devices::{
        CommandDecision, DeviceCommandDecision, DeviceCommandRequest, DeviceCommandSpec,
        DeviceRefusalReason as R, DeviceRefusals, DeviceTelemetryBatch, DeviceTrustChanges,
    },
    topic as wt,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A device's MQTT connection (rumqttc, MQTT 3.1.1) with its own certificate.
struct DeviceLink {
    client: rumqttc::AsyncClient,
    acked: watch::Receiver<u64>,
    incoming: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    /// SUBACK return codes, one entry per SUBACK: true = granted.
    subacks: mpsc::UnboundedReceiver<Vec<bool>>,
    sent: u64,
    task: JoinHandle<()>,
}

impl DeviceLink {
    async fn connect(broker: &TestBroker, id: &str) -> DeviceLink {
        let cfg = broker.config(id).unwrap();
        let tls = tad_bus::client::tls_config(&cfg).unwrap();
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 256);
        let (tx, acked) = watch::channel(0u64);
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let (sa_tx, subacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        n += 1;
                        tx.send_replace(n);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = in_tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(a))) => {
                        let _ = sa_tx.send(
                            a.return_codes
                                .iter()
                                .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                                .collect(),
                        );
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        DeviceLink {
            client,
            acked,
            incoming,
            subacks,
            sent: 0,
            task,
        }
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Waits until the broker acknowledged everything sent.
    async fn flush(&mut self) {
        let want = self.sent;
        tokio::time::timeout(Duration::from_secs(20), self.acked.wait_for(|n| *n >= want))
            .await
            .expect("broker acknowledges the device's publishes")
            .unwrap();
    }
}

impl Drop for DeviceLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway: its bus client with the device subscriptions, and the device
/// task as the daemon runs it.
struct Gateway {
    bus: BusClient,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: Arc<std::sync::Mutex<DeviceStats>>,
}

fn config(dir: &Path) -> DevicesConfig {
    let mut c = DevicesConfig {
        registry: dir.join("registry.toml"),
        batch: BatchConfig {
            max_records: 8,
            max_age_ms: 200,
        },
        anomaly: None,
        publish_interval_ms: 200,
        ..DevicesConfig::default()
    };
    c.guard.replay_state = dir.join("replay.json");
    c.trust.state_file = dir.join("trust.json");
    c
}

async fn gateway(broker: &TestBroker, dir: &Path) -> Gateway {
    let gw = NodeId::parse("gateway-1").unwrap();
    let mut cfg = broker.config("gateway-1").unwrap();
    cfg.subscription_capacity = 10_000;
    let verifier = tad_bus::Verifier::from_bus_config(&cfg).unwrap();
    let mut b = BusClient::builder(cfg).unwrap();
    let subs = devices::subscribe(&mut b, &gw);
    let bus = b.connect().await.expect("gateway connects");
    let d = Devices::open(config(dir), gw, vec!["dashboard".into()]).unwrap();
    let stats = Arc::new(std::sync::Mutex::new(DeviceStats::default()));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(devices::run(
        d,
        bus.clone(),
        subs,
        verifier,
        stats.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Gateway {
        bus,
        stop,
        task,
        stats,
    }
}

impl Gateway {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("device task stops")
            .unwrap();
        self.bus.shutdown(Duration::from_secs(5)).await.unwrap();
    }

    fn stats(&self) -> DeviceStats {
        self.stats.lock().unwrap().clone()
    }

    async fn wait_received(&self, n: u64) {
        let t0 = std::time::Instant::now();
        while self.stats().received < n {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "only {} of {n} messages reached the guard",
                self.stats().received
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The dashboard's view of what the gateway publishes about devices.
struct Dashboard {
    bus: BusClient,
    signer: Signer,
    refusals: Subscription<DeviceRefusals>,
    batches: Subscription<DeviceTelemetryBatch>,
    trust: Subscription<DeviceTrustChanges>,
    decisions: Subscription<DeviceCommandDecision>,
}

async fn dashboard(broker: &TestBroker) -> Dashboard {
    let cfg = broker.config("dashboard").unwrap();
    let signer = Signer::from_bus_config(&cfg).unwrap();
    let mut b = BusClient::builder(cfg).unwrap();
    let refusals = b.subscribe(&wt::devices_refusals("gateway-1"), QoS::AtLeastOnce);
    let batches = b.subscribe(&wt::devices_telemetry("gateway-1"), QoS::AtLeastOnce);
    let trust = b.subscribe(&wt::devices_trust("gateway-1"), QoS::AtLeastOnce);
    let decisions = b.subscribe(&wt::devices_decisions("gateway-1"), QoS::AtLeastOnce);
    let bus = b.connect().await.expect("dashboard connects");
    Dashboard {
        bus,
        signer,
        refusals,
        batches,
        trust,
        decisions,
    }
}

/// Receives until `done` says enough, or fails after 20 s.
async fn collect<M: tad_bus::Inbound>(sub: &mut Subscription<M>, mut done: impl FnMut(&M) -> bool) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .expect("the gateway publishes it")
            .expect("subscription open");
        if done(&m.message) {
            return;
        }
    }
}

fn request(device: &str, command: DeviceCommandSpec, n: u32) -> DeviceCommandRequest {
    DeviceCommandRequest {
        v: SCHEMA_VERSION,
        id: format!("req-{device}-{n}"),
        device_id: device.into(),
        command,
        issued_by: "alice".into(),
        issued_at_ms: now_ms(),
    }
}

async fn next_decision(d: &mut Dashboard) -> DeviceCommandDecision {
    tokio::time::timeout(Duration::from_secs(20), d.decisions.recv())
        .await
        .expect("a decision is published")
        .unwrap()
        .message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reason_through_the_daemon_commands_vetted_replays_refused_after_restart() {
    let mut broker = TestBroker::start().expect("mosquitto starts");
    let nodes: Vec<String> = DEFAULT_NODES.iter().map(|s| s.to_string()).collect();
    let devs: Vec<String> = ["esp32-1", "esp32-2", "esp32-9"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    std::fs::write(
        broker.dir().join("acl"),
        render_acl_with_devices(&nodes, &devs).unwrap(),
    )
    .unwrap();
    broker.restart().unwrap();

    let state = tempfile::tempdir().unwrap();
    let mut d1 = SimDevice::from_seed("esp32-1", 1);
    let mut d2 = SimDevice::from_seed("esp32-2", 2);
    let mut d9 = SimDevice::from_seed("esp32-9", 9); // has a certificate, not enrolled
    let mut reg = Registry::default();
    let mut e1 = d1.enrollment();
    e1.rate_per_min = 6000;
    e1.burst = 100;
    e1.commands = vec![tad_devices::CommandKind::Reboot];
    reg.enroll(d1.id.clone(), e1).unwrap();
    let mut e2 = d2.enrollment();
    e2.rate_per_min = 6; // one per 10 s: a burst of 5 loses 2
    e2.burst = 3;
    e2.commands = vec![tad_devices::CommandKind::Reboot];
    reg.enroll(d2.id.clone(), e2).unwrap();
    reg.save(&state.path().join("registry.toml")).unwrap();

    let mut dash = dashboard(&broker).await;
    let gw = gateway(&broker, state.path()).await;
    let mut l1 = DeviceLink::connect(&broker, "esp32-1").await;
    let mut l2 = DeviceLink::connect(&broker, "esp32-2").await;
    let mut l9 = DeviceLink::connect(&broker, "esp32-9").await;
    l2.client
        .subscribe(wt::device_commands("esp32-2"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    // The ACL lets a device read only its own command topic: esp32-1 asks for
    // esp32-2's too (mosquitto grants it and filters at delivery).
    l1.client
        .subscribe(wt::device_commands("esp32-2"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    l1.client
        .subscribe(wt::device_commands("esp32-1"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    for (link, n) in [(&mut l2, 1), (&mut l1, 2)] {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(20), link.subacks.recv())
                .await
                .expect("SUBACK")
                .unwrap();
        }
    }
    // Commands while both devices are trusted: a reboot to each is allowed and
    // forwarded, each device gets only its own (esp32-2's was published first,
    // so esp32-1 getting its own first means esp32-2's never reached it).
    let publish_req = |dash: &Dashboard, r: &DeviceCommandRequest| {
        dash.bus
            .try_publish_signed(
                &wt::device_requests("gateway-1", "dashboard"),
                &dash.signer,
                r,
                PublishOptions::reliable(),
            )
            .unwrap()
    };
    publish_req(&dash, &request("esp32-2", DeviceCommandSpec::Reboot {}, 0));
    let d = next_decision(&mut dash).await;
    assert_eq!(
        (d.device_id.as_str(), d.decision),
        ("esp32-2", CommandDecision::Allowed),
        "{d:?}"
    );
    let (t, p) = tokio::time::timeout(Duration::from_secs(20), l2.incoming.recv())
        .await
        .expect("the device gets its command")
        .unwrap();
    assert_eq!(t, wt::device_commands("esp32-2"));
    let m: tad_wire::devices::DeviceCommandMessage = tad_wire::decode(&p).unwrap();
    assert_eq!(
        (m.id.as_str(), m.command),
        ("req-esp32-2-0", DeviceCommandSpec::Reboot {})
    );
    publish_req(&dash, &request("esp32-1", DeviceCommandSpec::Reboot {}, 0));
    let d = next_decision(&mut dash).await;
    assert_eq!(
        (d.device_id.as_str(), d.decision),
        ("esp32-1", CommandDecision::Allowed),
        "{d:?}"
    );
    let (t, _) = tokio::time::timeout(Duration::from_secs(20), l1.incoming.recv())
        .await
        .expect("the device gets its command")
        .unwrap();
    assert_eq!(
        t,
        wt::device_commands("esp32-1"),
        "only its own command topic"
    );
    let t1 = topic(&d1.id);
    let forger = SimDevice::from_seed("esp32-1", 99);

    let mut valid = 0u64;
    let mut attacks: BTreeMap<R, u64> = BTreeMap::new();
    let mut add = |r| *attacks.entry(r).or_default() += 1;
    let mut accepted_before = vec![];
    for i in 0..20 {
        let (tp, bytes) = d1.publish(now_ms());
        if i < 3 {
            accepted_before.push(bytes.clone());
        }
        l1.publish(&tp, bytes).await;
        valid += 1;
    }
    l1.publish(&t1, accepted_before[1].clone()).await;
    add(R::Replay);
    let t = d1.reading(now_ms());
    l1.publish(&t1, seal(&t.to_bytes(), forger.key())).await;
    add(R::BadSignature);
    let mut t = d1.reading(now_ms());
    t.sensors.insert("temperature".into(), 150.0);
    l1.publish(&t1, t.sign(d1.key())).await;
    add(R::OutOfRange);
    let mut t = d1.reading(now_ms());
    t.sensors.insert("door_open".into(), 1.0);
    l1.publish(&t1, t.sign(d1.key())).await;
    add(R::UnexpectedSensor);
    let mut t = d1.reading(now_ms());
    t.timestamp -= 3_600_000;
    l1.publish(&t1, t.sign(d1.key())).await;
    add(R::Skew);
    let mut t = d1.reading(now_ms());
    t.device_id = d2.id.clone();
    l1.publish(&t1, t.sign(d1.key())).await;
    add(R::IdMismatch);
    l1.publish(&t1, b"\x00\x01 not json".to_vec()).await;
    add(R::Malformed);
    d1.next_seq += 100;
    let (tp, bytes) = d1.publish(now_ms());
    let last_accepted = bytes.clone();
    l1.publish(&tp, bytes).await;
    valid += 1;
    let mut t = d1.reading(now_ms());
    t.sequence_no -= 80;
    l1.publish(&t1, t.sign(d1.key())).await;
    add(R::Stale);
    for _ in 0..5 {
        let (tp, bytes) = d2.publish(now_ms());
        l2.publish(&tp, bytes).await;
    }
    valid += 3;
    add(R::RateLimited);
    add(R::RateLimited);
    for _ in 0..2 {
        let (tp, bytes) = d9.publish(now_ms());
        l9.publish(&tp, bytes).await;
    }
    add(R::Unenrolled);
    add(R::Unenrolled);
    // The broker keeps esp32-1 off esp32-2's topic: this never reaches the
    // gateway (MQTT 3.1.1 has no negative PUBACK: the broker acks and drops it).
    let (_, spoof) = d2.publish(now_ms());
    l1.publish(&topic(&d2.id), spoof).await;
    let denied = 1;
    for l in [&mut l1, &mut l2, &mut l9] {
        l.flush().await;
    }
    let sent = l1.sent + l2.sent + l9.sent - denied;
    gw.wait_received(sent).await;
    let st = gw.stats();
    assert_eq!(st.accepted, valid, "no valid message lost");
    assert_eq!(sent, st.accepted + st.refused.values().sum::<u64>());
    assert_eq!(
        st.refused
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
            .collect::<BTreeMap<_, _>>(),
        attacks,
        "refused = exactly the attacks"
    );
    assert!(
        !st.refused.contains_key(&R::Unavailable),
        "every reason but unavailable (a failing disk) produced"
    );

    // Published refusals: device, reason and running count.
    let mut seen: BTreeMap<R, u64> = BTreeMap::new();
    let want = attacks.clone();
    collect(&mut dash.refusals, |m| {
        for r in &m.refusals {
            let n = seen.entry(r.reason).or_default();
            *n += 1;
            assert!(
                ["esp32-1", "esp32-2", "esp32-9"].contains(&r.device_id.as_str()),
                "names the device: {r:?}"
            );
            assert_eq!(r.enrolled, r.device_id != "esp32-9", "{r:?}");
        }
        seen == want
    })
    .await;
    // Telemetry batches with verifiable SHA-256: every valid record, once.
    let mut batched = 0;
    collect(&mut dash.batches, |b| {
        let back: TelemetryBatch = serde_json::from_value(serde_json::json!({
            "v": 1, "batch_no": b.batch_no, "opened_ms": b.opened_ms,
            "closed_ms": b.closed_ms, "sha256": b.sha256, "records": b.records,
        }))
        .unwrap();
        assert!(back.verify_hash(), "batch {} hash verifies", b.batch_no);
        batched += b.records.len() as u64;
        batched >= valid
    })
    .await;
    assert_eq!(batched, valid);
    // Trust changes name their cause; esp32-1's strong alerts take it to critical.
    let mut lowest = 100.0f64;
    collect(&mut dash.trust, |m| {
        for c in &m.changes {
            if c.device_id == "esp32-1" {
                lowest = lowest.min(c.new);
            }
        }
        lowest < 20.0
    })
    .await;

    // A command burst: the default allows 3 per minute, the 4th is refused.
    for n in 1..=3 {
        publish_req(&dash, &request("esp32-2", DeviceCommandSpec::Reboot {}, n));
    }
    let mut reasons = vec![];
    for _ in 0..3 {
        reasons.push(next_decision(&mut dash).await.reason);
    }
    assert_eq!(reasons, vec![None, None, Some("burst".to_string())]);
    // Low trust: esp32-1 is critical now.
    publish_req(&dash, &request("esp32-1", DeviceCommandSpec::Reboot {}, 0));
    let d = next_decision(&mut dash).await;
    assert_eq!(d.reason.as_deref(), Some("low_trust"), "{d:?}");
    // Unsigned: refused.
    dash.bus
        .try_publish(
            &wt::device_requests("gateway-1", "dashboard"),
            &request("esp32-2", DeviceCommandSpec::Reboot {}, 9),
            PublishOptions::reliable(),
        )
        .unwrap();
    let d = next_decision(&mut dash).await;
    assert_eq!(d.reason.as_deref(), Some("bad_signature"), "{d:?}");

    // The counters as `/metrics` renders them: Prometheus's own parser and
    // linter accept them, and they say what the guard counted.
    let st = gw.stats();
    let text = fw_ctl::daemon::http::render(&fw_ctl::daemon::http::Exposition {
        devices: Some(st.clone()),
        ..Default::default()
    });
    if let Err(e) = tad_bus::testing::promtool_check(&text) {
        panic!("{e}\n{text}");
    }
    for (series, n) in [
        (
            "tad_gateway_device_telemetry_total{outcome=\"accepted\"}".to_string(),
            st.accepted,
        ),
        (
            "tad_gateway_device_telemetry_refused_total{reason=\"replay\"}".to_string(),
            st.refused.get(&R::Replay).copied().unwrap_or(0),
        ),
        (
            "tad_gateway_device_commands_total{decision=\"refused\",reason=\"low_trust\"}"
                .to_string(),
            st.commands_refused.get("low_trust").copied().unwrap_or(0),
        ),
    ] {
        assert!(n > 0, "{series}: the test produced none");
        assert!(
            text.contains(&format!("{series} {n}\n")),
            "{series} {n} not in:\n{text}"
        );
    }

    // Gateway restart: its session queues what devices send while it is down.
    gw.stop().await;
    for b in accepted_before.iter().chain([&last_accepted]) {
        l1.publish(&t1, b.clone()).await;
    }
    for _ in 0..4 {
        let (tp, bytes) = d1.publish(now_ms());
        l1.publish(&tp, bytes).await;
    }
    l1.flush().await;
    let gw = gateway(&broker, state.path()).await;
    gw.wait_received(8).await;
    let st = gw.stats();
    assert_eq!(st.accepted, 4);
    assert_eq!(
        st.refused
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
            .collect::<BTreeMap<_, _>>(),
        BTreeMap::from([(R::Replay, 1), (R::Stale, 3)]),
        "messages accepted before the restart are refused after it"
    );
    gw.stop().await;
    dash.bus.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The commented `[devices]` block of `gateway.toml.example`, uncommented, is a
/// valid gateway config whose values arrive in `DevicesConfig`; without it the
/// device guard is off.
#[test]
fn the_example_devices_table_parses_and_is_off_by_default() {
    let text = include_str!("../gateway.toml.example");
    let mut inside = false;
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with("# [devices]") {
            inside = true;
        }
        if inside && !l.starts_with("# ") {
            inside = false;
        }
        let body = l.strip_prefix("# ").unwrap_or(l);
        let key_or_table = body.starts_with('[') || body.contains(" = ");
        out.push_str(if inside && key_or_table { body } else { l });
        out.push('\n');
    }
    let c = fw_ctl::config::GatewayFile::parse(&out).unwrap();
    assert_eq!(c.check(), Vec::<String>::new());
    let d = c.devices.expect("[devices] present");
    assert_eq!(d.registry, Path::new("/etc/tad/devices/registry.toml"));
    assert!(d.scan.enabled);
    assert_eq!(d.scan.addresses.len(), 1);
    let off = fw_ctl::config::GatewayFile::parse(text).unwrap();
    assert!(off.devices.is_none());
}
