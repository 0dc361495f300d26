//! The bus against a real mosquitto (tad_bus::testing): mutual TLS, refusals, the
//! ACL, status/Last Will, and delivery across a broker restart.

mod common;

use std::{collections::BTreeSet, sync::Arc};

use common::{WAIT, batch, next, until, verdict, within};
use rumqttc::{
    TlsConfiguration, Transport,
    v5::{AsyncClient, Event, Incoming, MqttOptions},
};
use tad_bus::{
    AnyMessage, BusClient, BusError, PublishOptions, QoS, RawPayload, Signer, Verifier,
    pki::{CertificateAuthority, Validity},
    testing::{TestBroker, TestBrokerOptions},
};
use tad_wire::{
    self, Ack, FlowBatch, Mode, NodeStatus, Outcome, Role, SCHEMA_VERSION, Verdict, topic,
};

fn ack(id: &str, gw: &str) -> Ack {
    Ack {
        v: SCHEMA_VERSION,
        id: id.into(),
        gateway_id: gw.parse().unwrap(),
        outcome: Outcome::Applied,
        error: None,
        at_ms: 1,
        apply_us: 12,
    }
}

#[tokio::test]
async fn mutual_tls_round_trip_verdict_and_ack() {
    let broker = TestBroker::start().expect("test broker");
    let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw.subscribe::<RawPayload>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let gw = gw.connect().await.expect("gateway connects");
    let mut det = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let mut acks = det.subscribe::<Ack>("tad/v1/gw/+/acks", QoS::AtLeastOnce);
    let mut flows = det.subscribe::<FlowBatch>("tad/v1/gw/+/flows/#", QoS::AtLeastOnce);
    let det = det.connect().await.expect("detector connects");

    let v = verdict("v-1", "detector-1");
    let signer = Signer::from_bus_config(&broker.config("detector-1").unwrap()).unwrap();
    det.publish_signed(
        &topic::verdicts("gateway-1", "detector-1"),
        &signer,
        &v,
        PublishOptions::verdict(60),
    )
    .await
    .unwrap();
    let got = next(&mut verdicts).await;
    assert_eq!(got.topic, topic::verdicts("gateway-1", "detector-1"));
    assert_eq!(
        got.content_type.as_deref(),
        Some(tad_wire::SIGNED_CONTENT_TYPE)
    );
    assert!(!got.retained);
    // The gateway's check: the signature verifies against the bus CA and names the
    // certificate that published it.
    let verifier = Verifier::from_bus_config(&broker.config("gateway-1").unwrap()).unwrap();
    let signed = verifier.verify::<Verdict>(&got.message.0).unwrap();
    assert_eq!(signed.message, v);
    assert_eq!(signed.signer.as_str(), "detector-1");

    gw.publish(
        &topic::acks("gateway-1"),
        &ack("v-1", "gateway-1"),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let a = next(&mut acks).await;
    assert_eq!(a.message.id, "v-1");
    assert_eq!(a.topic, topic::acks("gateway-1"));

    // Batches far above rumqttc's default 10 KiB packet limit go through.
    let big = common::big_batch("gateway-1", 7, 400);
    assert!(tad_wire::encode(&big).len() > 100_000);
    gw.publish(&topic::flows("gateway-1", 0), &big, PublishOptions::flows())
        .await
        .unwrap();
    assert_eq!(next(&mut flows).await.message, big);

    let m = det.metrics();
    assert_eq!(
        (m.published, m.denied, m.malformed, m.dropped),
        (1, 0, 0, 0)
    );
    assert_eq!(gw.metrics().received, 1);
    assert_eq!(det.metrics().received, 2);
    gw.shutdown(WAIT).await.unwrap();
    det.shutdown(WAIT).await.unwrap();
}

/// `connect` returns only once the builder's subscriptions are in place at the
/// broker: a message another node publishes (QoS 0, not retained, so nothing
/// would bring it back) right after `connect` returns is delivered. Ten fresh
/// subscribers in a row: before `connect` waited for the SUBACK, about half of
/// such messages went nowhere (seen in detector/tests/evidence_service.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_right_after_connect_reaches_the_new_subscription() {
    let broker = TestBroker::start().expect("test broker");
    let det = BusClient::builder(broker.config("detector-1").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for i in 0..10 {
        let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
        let mut verdicts =
            gw.subscribe::<RawPayload>(&topic::verdicts_filter("gateway-1"), QoS::AtMostOnce);
        let gw = gw.connect().await.expect("gateway connects");
        let v = verdict(&format!("v-{i}"), "detector-1");
        det.publish(
            &topic::verdicts("gateway-1", "detector-1"),
            &v,
            PublishOptions::best_effort(),
        )
        .await
        .unwrap();
        let got = next(&mut verdicts).await;
        let signed: Verdict = tad_wire::decode(&got.message.0).unwrap();
        assert_eq!(signed.id, v.id, "subscriber {i}");
        gw.shutdown(WAIT).await.unwrap();
    }
    det.shutdown(WAIT).await.unwrap();
}

/// Tries an MQTT v5 connection with a TLS config of our own (no client
/// certificate); returns the CONNACK or the error.
async fn raw_connect(broker: &TestBroker, tls: rustls::ClientConfig) -> Result<(), String> {
    let mut o = MqttOptions::new("intruder", "127.0.0.1", broker.port());
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    o.set_connection_timeout(5);
    let (_c, mut el) = AsyncClient::new(o, 4);
    loop {
        match within("raw connect", el.poll()).await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let broker = TestBroker::start().expect("test broker");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(broker.ca_file()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let no_cert = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth()
    };
    let err = raw_connect(&broker, no_cert())
        .await
        .expect_err("a client without certificate got a CONNACK");
    assert!(
        err.contains("CertificateRequired"),
        "unexpected error: {err}"
    );
    // Control: the same broker accepts a node with a certificate.
    let ok = BusClient::connect(broker.config("gateway-1").unwrap()).await;
    assert!(ok.is_ok(), "valid client refused: {:?}", ok.err());
}

/// Connecting with `cfg` fails with a TLS alert naming `alert`.
async fn assert_refused(broker: &TestBroker, cfg: tad_bus::BusConfig, alert: &str) {
    match BusClient::connect(cfg).await {
        Err(BusError::Refused { reason, .. }) => {
            assert!(
                reason.contains(alert),
                "expected alert {alert}, got: {reason}"
            );
        }
        Err(e) => panic!("expected a refusal ({alert}), got {e}"),
        Ok(_) => panic!("connected despite {alert}\n{}", broker.log()),
    }
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let broker = TestBroker::start().expect("test broker");
    let other = CertificateAuthority::generate("some other CA", Validity::days(2)).unwrap();
    let cert = other.issue_client("gateway-1", Validity::days(2)).unwrap();
    assert_refused(
        &broker,
        broker.config_with_cert("gateway-1", &cert).unwrap(),
        "UnknownCA",
    )
    .await;
    let ok = BusClient::connect(broker.config("gateway-1").unwrap()).await;
    assert!(ok.is_ok(), "valid client refused: {:?}", ok.err());
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let broker = TestBroker::start().expect("test broker");
    let cert = broker
        .ca()
        .issue_client("gateway-1", Validity::expired())
        .unwrap();
    assert_refused(
        &broker,
        broker.config_with_cert("gateway-1", &cert).unwrap(),
        "CertificateExpired",
    )
    .await;
    let ok = BusClient::connect(broker.config("gateway-1").unwrap()).await;
    assert!(ok.is_ok(), "valid client refused: {:?}", ok.err());
}

#[tokio::test]
async fn acl_denies_a_gateway_publishing_a_verdict() {
    let broker = TestBroker::start().expect("test broker");
    let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw.subscribe::<Verdict>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let gw = gw.connect().await.unwrap();
    let det = BusClient::connect(broker.config("detector-1").unwrap())
        .await
        .unwrap();

    // The gateway may read its verdicts but not write them: neither as QoS 0
    // (dropped silently) nor as QoS 1 (PUBACK 0x87 not authorized).
    let forged = verdict("forged", "detector-1");
    let t = topic::verdicts("gateway-1", "detector-1");
    gw.publish(
        &t,
        &forged,
        PublishOptions {
            qos: QoS::AtMostOnce,
            ..PublishOptions::reliable()
        },
    )
    .await
    .unwrap();
    gw.publish(&t, &forged, PublishOptions::reliable())
        .await
        .unwrap();
    until("the broker's refusal of the QoS 1 verdict", || {
        gw.metrics().denied == 1
    })
    .await;

    // The broker handled both forged publishes before that PUBACK; a detector's
    // verdict sent now must be the first and only one the gateway gets.
    let real = verdict("real", "detector-1");
    det.publish(&t, &real, PublishOptions::verdict(60))
        .await
        .unwrap();
    assert_eq!(next(&mut verdicts).await.message.id, "real");
    assert!(
        verdicts.try_recv().is_none(),
        "a forged verdict got through"
    );
    assert_eq!(det.metrics().denied, 0);
}

/// A client can publish verdicts and commands only under its own identity level:
/// `detector-2` cannot write on `.../verdicts/detector-1`, `dashboard-2` cannot
/// write on `.../commands/dashboard` (PUBACK 0x87), and their own topics work.
#[tokio::test]
async fn acl_confines_verdicts_and_commands_to_the_publishers_own_topic() {
    let broker = TestBroker::start().expect("test broker");
    let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw.subscribe::<RawPayload>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let mut commands =
        gw.subscribe::<RawPayload>(&topic::commands_filter("gateway-1"), QoS::AtLeastOnce);
    let _gw = gw.connect().await.unwrap();
    let det2 = BusClient::connect(broker.config("detector-2").unwrap())
        .await
        .unwrap();
    let dash2 = BusClient::connect(broker.config("dashboard-2").unwrap())
        .await
        .unwrap();
    let s_det2 = Signer::from_bus_config(&broker.config("detector-2").unwrap()).unwrap();
    let s_dash2 = Signer::from_bus_config(&broker.config("dashboard-2").unwrap()).unwrap();

    // detector-2 writes a verdict in detector-1's name, on detector-1's topic.
    det2.publish_signed(
        &topic::verdicts("gateway-1", "detector-1"),
        &s_det2,
        &verdict("spoof", "detector-1"),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    until(
        "the broker's refusal of detector-2 on detector-1's topic",
        || det2.metrics().denied == 1,
    )
    .await;
    let cmd = tad_wire::Command {
        v: SCHEMA_VERSION,
        id: "c-spoof".into(),
        operator: "mallory".into(),
        issued_at_ms: 1,
        action: tad_wire::Action::Block,
        target: "192.0.2.9/32".parse().unwrap(),
        ttl_s: None,
        reason: None,
        port: None,
    };
    dash2
        .publish_signed(
            &topic::commands("gateway-1", "dashboard"),
            &s_dash2,
            &cmd,
            PublishOptions::reliable(),
        )
        .await
        .unwrap();
    until(
        "the broker's refusal of dashboard-2 on dashboard's topic",
        || dash2.metrics().denied == 1,
    )
    .await;

    // Under their own ids both go through, and are the first the gateway sees.
    det2.publish_signed(
        &topic::verdicts("gateway-1", "detector-2"),
        &s_det2,
        &verdict("own", "detector-2"),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let got = next(&mut verdicts).await;
    assert_eq!(got.topic, topic::verdicts("gateway-1", "detector-2"));
    dash2
        .publish_signed(
            &topic::commands("gateway-1", "dashboard-2"),
            &s_dash2,
            &tad_wire::Command {
                id: "c-own".into(),
                ..cmd
            },
            PublishOptions::reliable(),
        )
        .await
        .unwrap();
    let got = next(&mut commands).await;
    assert_eq!(got.topic, topic::commands("gateway-1", "dashboard-2"));
    assert!(
        verdicts.try_recv().is_none(),
        "a spoofed verdict got through"
    );
    assert!(
        commands.try_recv().is_none(),
        "a spoofed command got through"
    );
    assert_eq!((det2.metrics().denied, dash2.metrics().denied), (1, 1));
}

#[tokio::test]
async fn status_is_retained_and_last_will_reports_a_crash() {
    let broker = TestBroker::start().expect("test broker");
    let mut dash = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut status = dash.subscribe::<AnyMessage>("tad/v1/gw/+/status", QoS::AtLeastOnce);
    let _dash = dash.connect().await.unwrap();

    let gw = BusClient::connect(broker.config("gateway-1").unwrap())
        .await
        .unwrap();
    let online = next(&mut status).await;
    let AnyMessage::Status(NodeStatus {
        online: true,
        node_id,
        ..
    }) = online.message
    else {
        panic!("expected an online status, got {:?}", online.message);
    };
    assert_eq!(node_id, "gateway-1");

    drop(gw); // crash: no DISCONNECT, the broker publishes the Will
    let will = next(&mut status).await;
    assert!(
        matches!(&will.message, AnyMessage::Status(s) if !s.online && s.node_id == "gateway-1"),
        "{:?}",
        will.message
    );

    // Retained: a late subscriber learns the gateway is offline.
    let mut dash2 = BusClient::builder({
        let mut c = broker.config("dashboard").unwrap();
        c.client_id = "dashboard-late".into();
        c
    })
    .unwrap();
    let mut st2 =
        dash2.subscribe::<NodeStatus>(&topic::gateway_status("gateway-1"), QoS::AtLeastOnce);
    let _dash2 = dash2.connect().await.unwrap();
    let r = next(&mut st2).await;
    assert!(r.retained);
    assert!(!r.message.online);
}

#[tokio::test]
async fn status_updates_and_clean_shutdown_publishes_offline() {
    let broker = TestBroker::start().expect("test broker");
    let mut dash = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut status =
        dash.subscribe::<NodeStatus>(&topic::detector_status("detector-1"), QoS::AtLeastOnce);
    let _dash = dash.connect().await.unwrap();
    let mut det = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let mut initial = NodeStatus {
        v: SCHEMA_VERSION,
        node_id: "placeholder".parse().unwrap(),
        role: Role::Dashboard,
        online: false,
        at_ms: 0,
        mode: Some(Mode::Observe),
        interfaces: Vec::new(),
        maps: Vec::new(),
        version: "1.2.3".into(),
        partitions: None,
        taken: Vec::new(),
    };
    det.status(initial.clone());
    let det = det.connect().await.unwrap();
    let s = next(&mut status).await.message;
    // The client fills in who and when.
    assert_eq!(
        (
            s.node_id.as_str(),
            s.role,
            s.online,
            s.mode,
            s.version.as_str()
        ),
        (
            "detector-1",
            Role::Detector,
            true,
            Some(Mode::Observe),
            "1.2.3"
        )
    );
    assert!(s.at_ms > 0);
    initial.mode = Some(Mode::Enforce);
    det.update_status(initial).await.unwrap();
    let s = next(&mut status).await.message;
    assert_eq!((s.online, s.mode), (true, Some(Mode::Enforce)));
    det.shutdown(WAIT).await.unwrap();
    let s = next(&mut status).await.message;
    assert_eq!((s.online, s.mode), (false, Some(Mode::Enforce)));
    assert!(!broker.log().contains("protocol error"), "{}", broker.log());
}

/// Receives batches into `seen` until sequence numbers `0..n` have all arrived;
/// panics after 3 × [`WAIT`] naming the missing ones, with the broker's log.
async fn receive_all(
    flows: &mut tad_bus::Subscription<FlowBatch>,
    n: u64,
    seen: &mut BTreeSet<u64>,
    broker: &TestBroker,
) {
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    while (seen.len() as u64) < n {
        let missing: Vec<u64> = (0..n).filter(|s| !seen.contains(s)).take(20).collect();
        let r = tokio::time::timeout_at(deadline, flows.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {n} batches arrived; missing e.g. {missing:?}\n{}",
                    seen.len(),
                    broker.log()
                )
            })
            .expect("subscription ended");
        seen.insert(r.message.seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_no_qos1_message() {
    const N: u64 = 300;
    let mut broker = TestBroker::start().expect("test broker");
    // The detector comes back well after the gateway has resent everything: only
    // its session kept by the broker (subscription + queued messages) saves those.
    let mut det_cfg = broker.config("detector-1").unwrap();
    det_cfg.reconnect_min_ms = 1500;
    det_cfg.reconnect_max_ms = 3000;
    let mut det = BusClient::builder(det_cfg).unwrap();
    let mut flows = det.subscribe::<FlowBatch>("tad/v1/gw/+/flows/#", QoS::AtLeastOnce);
    let det = det.connect().await.unwrap();
    let gw = BusClient::connect(broker.config("gateway-1").unwrap())
        .await
        .unwrap();

    let t = topic::flows("gateway-1", 0);
    let mut seen = BTreeSet::new();
    for seq in 0..N / 3 {
        gw.publish(&t, &batch("gateway-1", seq), PublishOptions::reliable())
            .await
            .unwrap();
    }
    // Mid-stream: some delivered, some in flight.
    while seen.len() < 20 {
        seen.insert(next(&mut flows).await.message.seq);
    }
    tokio::task::block_in_place(|| broker.stop());
    for seq in N / 3..2 * N / 3 {
        gw.publish(&t, &batch("gateway-1", seq), PublishOptions::reliable())
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| broker.restart()).expect("broker restarts");
    for seq in 2 * N / 3..N {
        gw.publish(&t, &batch("gateway-1", seq), PublishOptions::reliable())
            .await
            .unwrap();
    }
    receive_all(&mut flows, N, &mut seen, &broker).await;
    assert!(gw.metrics().reconnects >= 1);
    assert!(det.metrics().reconnects >= 1);
    assert_eq!(gw.metrics().dropped, 0);
}

/// A burst cut by a broker restart: what rumqttc held unsent and in flight when
/// the connection dropped can exceed its in-flight window (20 at mosquitto's
/// default); resent through rumqttc's own queue it could reuse packet ids still
/// in flight and lose messages (bytebeamio/rumqtt#1056), so the client resends it
/// itself. Every batch arrives, none is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_cut_by_a_broker_restart_arrives_whole() {
    const N: u64 = 400;
    let mut broker = TestBroker::start().expect("test broker");
    let mut det = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let mut flows = det.subscribe::<FlowBatch>("tad/v1/gw/+/flows/#", QoS::AtLeastOnce);
    let _det = det.connect().await.unwrap();
    let gw = BusClient::connect(broker.config("gateway-1").unwrap())
        .await
        .unwrap();
    let t = topic::flows("gateway-1", 0);
    for seq in 0..N {
        gw.publish(&t, &batch("gateway-1", seq), PublishOptions::reliable())
            .await
            .unwrap();
    }
    // No wait: the burst is still leaving when the broker goes down.
    tokio::task::block_in_place(|| broker.stop());
    tokio::task::block_in_place(|| broker.restart()).expect("broker restarts");
    let mut seen = BTreeSet::new();
    receive_all(&mut flows, N, &mut seen, &broker).await;
    assert_eq!(gw.metrics().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_publishes_are_resent_when_the_broker_lost_the_session() {
    let mut broker = TestBroker::start_with_options(&TestBrokerOptions {
        persistence: false,
        ..TestBrokerOptions::default()
    })
    .expect("test broker");
    // The detector resubscribes quickly after the crash; the gateway comes back
    // later, finds no session (session_present = false) and must resend itself.
    let mut det = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let mut flows = det.subscribe::<FlowBatch>("tad/v1/gw/+/flows/#", QoS::AtLeastOnce);
    let det = det.connect().await.unwrap();
    let mut gw_cfg = broker.config("gateway-1").unwrap();
    // 4 s: far longer than the broker restart plus the detector's reconnect
    // (at most 1 s backoff), so the detector has subscribed again by then.
    gw_cfg.reconnect_min_ms = 4000;
    gw_cfg.reconnect_max_ms = 8000;
    let gw = BusClient::connect(gw_cfg).await.unwrap();

    // Frozen broker: the publishes leave the gateway but are never acknowledged.
    broker.pause().unwrap();
    let t = topic::flows("gateway-1", 0);
    for seq in 0..10 {
        gw.publish(&t, &batch("gateway-1", seq), PublishOptions::reliable())
            .await
            .unwrap();
    }
    // (+1: the retained online status sent on connect may also be unacked.)
    until("10 unacknowledged publishes", || gw.metrics().unacked >= 10).await;
    broker.crash();
    tokio::task::block_in_place(|| broker.restart()).expect("broker restarts");

    let mut seen = BTreeSet::new();
    while seen.len() < 10 {
        seen.insert(next(&mut flows).await.message.seq);
    }
    assert_eq!(seen, (0..10).collect());
    assert!(matches!(
        *gw.state().borrow(),
        tad_bus::ConnectionState::Connected {
            session_present: false
        }
    ));
    assert!(det.metrics().reconnects >= 1);
}

#[tokio::test]
async fn expired_verdicts_are_not_delivered_to_a_returning_gateway() {
    let broker = TestBroker::start().expect("test broker");
    let connect_gw = || async {
        let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
        let v = gw.subscribe::<Verdict>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
        (gw.connect().await.unwrap(), v)
    };
    // The gateway's session (with its subscription) outlives its connection.
    let (gw, _) = connect_gw().await;
    gw.shutdown(WAIT).await.unwrap();

    let det = BusClient::connect(broker.config("detector-1").unwrap())
        .await
        .unwrap();
    let t = topic::verdicts("gateway-1", "detector-1");
    det.publish(
        &t,
        &verdict("stale", "detector-1"),
        PublishOptions::verdict(1),
    )
    .await
    .unwrap();
    det.publish(
        &t,
        &verdict("fresh", "detector-1"),
        PublishOptions::verdict(600),
    )
    .await
    .unwrap();
    until("both verdicts acknowledged by the broker", || {
        let m = det.metrics();
        m.published == 2 && m.unacked == 0
    })
    .await;
    // Let the 1 s expiry pass while the gateway is away.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let (gw, mut verdicts) = connect_gw().await;
    let got = next(&mut verdicts).await;
    assert_eq!(got.message.id, "fresh");
    assert!(verdicts.try_recv().is_none());
    gw.shutdown(WAIT).await.unwrap();
}
