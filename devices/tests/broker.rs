//! The telemetry guard behind a real Mosquitto with mutual TLS
//! (`tad_bus::testing::TestBroker`): simulated devices, each with its own client
//! certificate, publish signed telemetry (MQTT 3.1.1, QoS 1, as an ESP32 would) on
//! `tad/v1/dev/<id>/telemetry`; the gateway's bus client receives it and runs the
//! [`Station`]. Every attack is refused with its reason, every valid message is
//! accepted (sent = accepted + refused, refused = exactly the attacks), and after a
//! restart of the gateway (its session queues what devices sent meanwhile) replays
//! of messages accepted before the restart are still refused. Needs the
//! `mosquitto` package (`cargo xtask setup`).
//!
//! The test broker's ACL knows no devices yet, so the test adds the rules a
//! device-aware ACL needs (`pattern write tad/v1/dev/%u/telemetry`: a device may
//! publish only under its own certificate's CN; `topic read tad/v1/dev/+/telemetry`
//! for the gateway) and restarts the broker with them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use tad_bus::{
    BusClient, QoS, RawPayload, Subscription,
    broker::render_acl,
    testing::{DEFAULT_NODES, TestBroker},
};
use tad_devices::{
    Arrival, DeviceAlert, GuardConfig, RefusalReason as R, Registry, Station, StationConfig,
    batch::BatchConfig,
    sim::SimDevice,
    telemetry::{TELEMETRY_FILTER, seal, topic},
    trust::TrustConfig,
};
use tokio::{sync::watch, task::JoinHandle};

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
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        n += 1;
                        tx.send_replace(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        DeviceLink {
            client,
            acked,
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

async fn gateway(broker: &TestBroker) -> (BusClient, Subscription<RawPayload>) {
    let mut cfg = broker.config("gateway-1").unwrap();
    cfg.subscription_capacity = 10_000;
    let mut b = BusClient::builder(cfg).unwrap();
    let sub = b.subscribe::<RawPayload>(TELEMETRY_FILTER, QoS::AtLeastOnce);
    let bus = b.connect().await.expect("gateway connects");
    (bus, sub)
}

/// The gateway daemon's loop, reduced: receive, hand rounds to the station, until
/// it has seen `total` messages since it was opened.
async fn run_guard(
    station: &mut Station,
    sub: &mut Subscription<RawPayload>,
    total: u64,
) -> Vec<DeviceAlert> {
    let mut alerts = vec![];
    while station.guard().received() < total {
        let first = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {total} messages arrived",
                    station.guard().received()
                )
            })
            .expect("subscription open");
        let mut got = vec![first];
        while got.len() < 256 {
            match sub.try_recv() {
                Some(m) => got.push(m),
                None => break,
            }
        }
        let at = now_ms();
        let arrivals: Vec<Arrival<'_>> = got
            .iter()
            .map(|m| Arrival {
                topic: &m.topic,
                payload: &m.message.0,
                arrival_ms: at,
            })
            .collect();
        let out = station.handle(&arrivals);
        alerts.extend(out.alerts);
    }
    alerts
}

fn station(dir: &std::path::Path, reg: &Registry) -> Station {
    Station::open(
        reg,
        StationConfig {
            guard: GuardConfig {
                replay_state: dir.join("replay.json"),
                ..GuardConfig::default()
            },
            batch: BatchConfig {
                max_records: 8,
                max_age_ms: 1000,
            },
            outbox_batches: 100,
            trust: TrustConfig {
                state_file: dir.join("trust.json"),
                ..TrustConfig::default()
            },
            anomaly: None,
        },
    )
    .unwrap()
}

fn by_reason(alerts: &[DeviceAlert]) -> BTreeMap<R, usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry(a.reason).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_refused_no_valid_message_lost_replays_refused_after_restart() {
    let mut broker = TestBroker::start().expect("mosquitto starts");
    let nodes: Vec<String> = DEFAULT_NODES.iter().map(|s| s.to_string()).collect();
    let acl = format!(
        "# devices: each may publish telemetry only under its own certificate CN\n\
         pattern write tad/v1/dev/%u/telemetry\n\n{}\nuser gateway-1\ntopic read {TELEMETRY_FILTER}\n",
        render_acl(&nodes).unwrap()
    );
    std::fs::write(broker.dir().join("acl"), acl).unwrap();
    broker.restart().unwrap();

    let state = tempfile::tempdir().unwrap();
    let mut d1 = SimDevice::from_seed("esp32-1", 1);
    let mut d2 = SimDevice::from_seed("esp32-2", 2);
    let mut d9 = SimDevice::from_seed("esp32-9", 9); // has a certificate, not enrolled
    let mut reg = Registry::default();
    let mut e1 = d1.enrollment();
    e1.rate_per_min = 6000;
    e1.burst = 100;
    reg.enroll(d1.id.clone(), e1).unwrap();
    let mut e2 = d2.enrollment();
    e2.rate_per_min = 6; // one per 10 s: a burst of 5 within seconds loses 2
    e2.burst = 3;
    reg.enroll(d2.id.clone(), e2).unwrap();

    let (gw, mut sub) = gateway(&broker).await;
    let mut st = station(state.path(), &reg);
    let mut l1 = DeviceLink::connect(&broker, "esp32-1").await;
    let mut l2 = DeviceLink::connect(&broker, "esp32-2").await;
    let mut l9 = DeviceLink::connect(&broker, "esp32-9").await;
    let t1 = topic(&d1.id);

    let mut valid = 0u64;
    let mut attacks: BTreeMap<R, usize> = BTreeMap::new();
    let mut accepted_before = vec![];
    for i in 0..20 {
        let (tp, bytes) = d1.publish(now_ms());
        if i < 3 {
            accepted_before.push(bytes.clone());
        }
        l1.publish(&tp, bytes).await;
        valid += 1;
    }
    // A replay of an accepted message.
    l1.publish(&t1, accepted_before[1].clone()).await;
    *attacks.entry(R::Replay).or_default() += 1;
    // A forged signature.
    let t = d1.reading(now_ms());
    l1.publish(
        &t1,
        seal(&t.to_bytes(), &SigningKey::from_bytes(&[0x66; 32])),
    )
    .await;
    *attacks.entry(R::BadSignature).or_default() += 1;
    // Out-of-range values from a compromised device (validly signed).
    let mut t = d1.reading(now_ms());
    t.sensors.insert("temperature".into(), 150.0);
    l1.publish(&t1, t.sign(d1.key())).await;
    *attacks.entry(R::OutOfRange).or_default() += 1;
    // A sensor nobody enrolled.
    let mut t = d1.reading(now_ms());
    t.sensors.insert("door_open".into(), 1.0);
    l1.publish(&t1, t.sign(d1.key())).await;
    *attacks.entry(R::UnexpectedSensor).or_default() += 1;
    // A timestamp an hour old.
    let mut t = d1.reading(now_ms());
    t.timestamp -= 3_600_000;
    l1.publish(&t1, t.sign(d1.key())).await;
    *attacks.entry(R::Skew).or_default() += 1;
    // Signed by esp32-1 but claiming to be esp32-2.
    let mut t = d1.reading(now_ms());
    t.device_id = d2.id.clone();
    l1.publish(&t1, t.sign(d1.key())).await;
    *attacks.entry(R::IdMismatch).or_default() += 1;
    // Garbage.
    l1.publish(&t1, b"\x00\x01 not json".to_vec()).await;
    *attacks.entry(R::Malformed).or_default() += 1;
    // A jump ahead, then a sequence number below the window.
    d1.next_seq += 100;
    let (tp, bytes) = d1.publish(now_ms());
    let last_accepted = bytes.clone();
    l1.publish(&tp, bytes).await;
    valid += 1;
    let mut t = d1.reading(now_ms());
    t.sequence_no -= 80;
    l1.publish(&t1, t.sign(d1.key())).await;
    *attacks.entry(R::Stale).or_default() += 1;
    // A burst over esp32-2's rate.
    for _ in 0..5 {
        let (tp, bytes) = d2.publish(now_ms());
        l2.publish(&tp, bytes).await;
    }
    valid += 3;
    *attacks.entry(R::RateLimited).or_default() += 2;
    // An unenrolled device with a valid certificate and a valid signature.
    for _ in 0..2 {
        let (tp, bytes) = d9.publish(now_ms());
        l9.publish(&tp, bytes).await;
    }
    *attacks.entry(R::Unenrolled).or_default() += 2;
    for l in [&mut l1, &mut l2, &mut l9] {
        l.flush().await;
    }
    let sent = l1.sent + l2.sent + l9.sent;
    let alerts = run_guard(&mut st, &mut sub, sent).await;
    assert_eq!(by_reason(&alerts), attacks, "refused = exactly the attacks");
    assert_eq!(st.guard().accepted(), valid, "no valid message lost");
    assert_eq!(sent, st.guard().accepted() + st.guard().counts().total());
    for a in &alerts {
        assert!(
            ["esp32-1", "esp32-2", "esp32-9"].contains(&a.device_id.as_str()),
            "alert names the device: {a:?}"
        );
    }
    // Closed batches carry a verifiable hash.
    st.flush(now_ms());
    let mut batched = 0;
    while let Some(b) = st.outbox().delivered() {
        assert!(b.verify_hash());
        batched += b.records.len() as u64;
    }
    assert_eq!(batched, valid);

    // Gateway restart: its session queues what devices send while it is down.
    gw.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(sub);
    drop(st);
    // The first three are below the window by now (stale), the last one inside
    // it (replay): both refused, from the persisted window.
    for b in accepted_before.iter().chain([&last_accepted]) {
        l1.publish(&t1, b.clone()).await;
    }
    for _ in 0..4 {
        let (tp, bytes) = d1.publish(now_ms());
        l1.publish(&tp, bytes).await;
    }
    l1.flush().await;
    let (gw, mut sub) = gateway(&broker).await;
    let mut st = station(state.path(), &reg);
    let alerts = run_guard(&mut st, &mut sub, 4 + 4).await;
    assert_eq!(
        by_reason(&alerts),
        BTreeMap::from([(R::Replay, 1), (R::Stale, 3)]),
        "messages accepted before the restart are replays after it"
    );
    assert_eq!(st.guard().accepted(), 4);
    // Trust moved for esp32-1 (strong evidence) and survived the restart.
    assert!(st.ledger().trust("esp32-1", now_ms()) < 100.0);
    assert_eq!(
        st.ledger().trust("esp32-9", now_ms()),
        100.0,
        "unenrolled: no ledger"
    );
    gw.shutdown(Duration::from_secs(5)).await.unwrap();
}
