//! The detector service through a real Mosquitto with mutual TLS (tad_bus's
//! TestBroker): flow batches from a gateway on two partitions reach two detector
//! instances, each taking one; the scanner's verdict reaches the gateway that saw
//! the flows, signed by the deciding detector on its own verdict topic, and the
//! alert reaches the dashboard; bad threshold settings are refused while the
//! service keeps running. The settings schema is published retained (again after
//! a broker restart that lost it); every settings message is acked, a refused one
//! changes nothing, and a key left out returns to the config file's value.

use std::{collections::BTreeMap, time::Duration};

use detector::{
    config::Config,
    engine::Engine,
    service::{self, ServiceError, ServiceStats},
    settings,
};
use tad_bus::{
    BusClient, BusConfig, PublishOptions, QoS, RawPayload, Signed, Subscription, Verifier,
    testing::{TestBroker, TestBrokerOptions},
};
use tad_wire::{
    Alert, DirCounters, EndReason, FlowBatch, FlowRecord, SCHEMA_VERSION, SIGNED_CONTENT_TYPE,
    SettingsAck, SettingsOutcome, SettingsSchema, ThresholdSettings, Verdict, partition_of,
    topic::{self, TopicKind},
};

fn probe(src: &str, dport: u16) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: "192.0.2.20".parse().unwrap(),
        sport: 40000,
        dport,
        proto: 6,
        vlan: 0,
        start_ms: 1,
        duration_us: 100,
        fwd: DirCounters {
            packets: 1,
            bytes: 44,
            syn: 1,
            tcp_flags_or: 2,
            min_len: 44,
            max_len: 44,
            ..Default::default()
        },
        bwd: DirCounters {
            packets: 1,
            bytes: 40,
            rst: 1,
            tcp_flags_or: 0x14,
            min_len: 40,
            max_len: 40,
            ..Default::default()
        },
        iat_mean_us: 0.0,
        iat_std_us: 0.0,
        end_reason: EndReason::EndOfFlow,
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("{what}: subscription ended"))
}

type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ServiceStats, ServiceError>>,
);

/// Starts detector `id` with `cfg` (its thresholds are the "file" config) on the
/// test broker, signing with `id`'s certificate.
async fn start_detector(broker: &TestBroker, id: &str, mut cfg: Config) -> Running {
    cfg.detector.id = id.parse().unwrap();
    cfg.bus = broker.config(id).unwrap();
    let signer = service::signer(&cfg).unwrap();
    let mut b = BusClient::builder(cfg.bus_config()).unwrap();
    let inputs = service::subscribe(&mut b, &cfg);
    let bus = b.connect().await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(service::serve(
        Engine::new(cfg, None),
        bus,
        signer,
        inputs,
        async {
            let _ = stop_rx.await;
        },
    ));
    (stop_tx, handle)
}

/// The next verdict: on `det`'s own verdict topic for `gw`, a JWS that verifies
/// against the bus CA as signed by `det`.
async fn signed_verdict(
    sub: &mut Subscription<RawPayload>,
    verifier: &Verifier,
    gw: &str,
    det: &str,
) -> Verdict {
    let r = within("verdict", sub.recv()).await;
    assert_eq!(
        r.topic,
        topic::verdicts(gw, det),
        "the deciding detector's topic"
    );
    assert!(matches!(
        TopicKind::parse(&r.topic),
        Some(TopicKind::Verdicts { ref detector, .. }) if detector == det
    ));
    assert_eq!(r.content_type.as_deref(), Some(SIGNED_CONTENT_TYPE));
    let Signed { message, signer } = verifier
        .verify::<Verdict>(&r.message.0)
        .unwrap_or_else(|e| panic!("the verdict does not verify: {e}"));
    assert_eq!(
        signer.as_str(),
        det,
        "signed with the detector's own certificate"
    );
    message
}

fn batch(gw: &str, src: &str, ports: u16) -> FlowBatch {
    FlowBatch {
        v: SCHEMA_VERSION,
        gateway_id: gw.parse().unwrap(),
        seq: 0,
        partition: 0,
        sent_at_ms: 1,
        dropped_records: 0,
        records: (0..ports).map(|i| probe(src, 1000 + i)).collect(),
    }
}

fn settings(id: &str, values: &[(&str, f64)]) -> ThresholdSettings {
    ThresholdSettings {
        v: SCHEMA_VERSION,
        id: id.into(),
        operator: "test".into(),
        issued_at_ms: 1,
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

/// The first `portscan.vertical` alert about `src` (other alerts skipped).
async fn vertical_alert(alerts: &mut Subscription<Alert>, src: &str) -> Alert {
    loop {
        let a = within("alert", alerts.recv()).await.message;
        if a.explanation.rule == "portscan.vertical" && a.source == Some(src.parse().unwrap()) {
            return a;
        }
    }
}

/// The first copy of `det`'s schema that `sub` gets as the retained message.
async fn retained_schema(sub: &mut Subscription<SettingsSchema>) -> SettingsSchema {
    loop {
        let r = within("retained settings schema", sub.recv()).await;
        if r.retained {
            return r.message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_over_mqtt_gives_verdict_alert_and_settings_are_checked() {
    let broker =
        TestBroker::start_with(&["gateway-1", "detector-1", "detector-2", "dashboard"]).unwrap();

    // Two detector instances, partitions {0} and {1} of 2.
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for (id, part) in [("detector-1", 0u16), ("detector-2", 1)] {
        let mut cfg = Config::default();
        cfg.partitions.count = 2;
        cfg.partitions.take = vec![part];
        let (stop, handle) = start_detector(&broker, id, cfg).await;
        stops.push(stop);
        handles.push(handle);
    }

    let mut gw_b = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw_b.subscribe::<RawPayload>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let verifier = Verifier::from_bus_config(&broker.config("gateway-1").unwrap()).unwrap();
    let gw = gw_b.connect().await.unwrap();
    let mut dash_b = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut alerts = dash_b.subscribe::<Alert>(&topic::alerts("+"), QoS::AtLeastOnce);
    let dash = dash_b.connect().await.unwrap();
    // Let the detectors' subscriptions settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An unknown threshold key is rejected; a valid one applies.
    for (i, key) in ["portscan.no_such_key", "portscan.vertical_ports"]
        .iter()
        .enumerate()
    {
        let s = ThresholdSettings {
            v: SCHEMA_VERSION,
            id: format!("s-{i}"),
            operator: "test".into(),
            issued_at_ms: 1,
            values: BTreeMap::from([(key.to_string(), 12.0)]),
        };
        dash.publish(&topic::thresholds(), &s, PublishOptions::reliable())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A scanner and a quiet host, published to their partitions.
    let scanner = "203.0.113.66";
    let p = partition_of(scanner.parse().unwrap(), 2);
    let batch = FlowBatch {
        v: SCHEMA_VERSION,
        gateway_id: "gateway-1".parse().unwrap(),
        seq: 0,
        partition: p,
        sent_at_ms: 1,
        dropped_records: 0,
        records: (0..12).map(|i| probe(scanner, 1000 + i)).collect(),
    };
    gw.publish(
        &topic::flows("gateway-1", p),
        &batch,
        PublishOptions::flows(),
    )
    .await
    .unwrap();

    let expect_det = if p == 0 { "detector-1" } else { "detector-2" };
    let v = signed_verdict(&mut verdicts, &verifier, "gateway-1", expect_det).await;
    assert_eq!(v.target.to_string(), format!("{scanner}/32"));
    assert_eq!(
        v.rule, "portscan.vertical",
        "threshold 12 applied at runtime"
    );
    assert_eq!(
        v.detector_id, expect_det,
        "the instance owning the partition decides"
    );
    let mut a = within("alert", alerts.recv()).await.message;
    while a.explanation.rule != "portscan.vertical" {
        assert_eq!(a.explanation.rule, "portscan.low", "{a:?}");
        a = within("alert", alerts.recv()).await.message;
    }
    assert_eq!(a.verdict_id.as_deref(), Some(v.id.as_str()));
    assert_eq!(a.source, Some(scanner.parse().unwrap()));
    assert_eq!(a.explanation.thresholds["distinct_ports"], 12.0);

    for s in stops {
        let _ = s.send(());
    }
    let mut total_refused = 0;
    let mut total_applied = 0;
    let mut total_records = 0;
    for h in handles {
        let stats = h.await.unwrap().unwrap();
        total_refused += stats.settings_refused;
        total_applied += stats.settings_applied;
        total_records += stats.engine.records;
    }
    assert_eq!(total_refused, 2, "each instance refused the unknown key");
    assert_eq!(total_applied, 2, "each instance applied the valid set");
    assert_eq!(total_records, 12, "the batch went to exactly one instance");
    gw.shutdown(Duration::from_secs(2)).await.unwrap();
    dash.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_schema_is_retained_and_every_set_is_acked() {
    let broker =
        TestBroker::start_with(&["gateway-1", "detector-1", "dashboard", "dashboard-2"]).unwrap();
    let det = "detector-1";
    // The "file" config: vertical scans at 14 ports (the built-in default is 15).
    let mut file = Config::default();
    file.portscan.vertical_ports = 14;

    let mut dash_b = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut schemas =
        dash_b.subscribe::<SettingsSchema>(&topic::settings_schema(det), QoS::AtLeastOnce);
    let mut acks = dash_b.subscribe::<SettingsAck>(&topic::settings_acks(det), QoS::AtLeastOnce);
    let mut alerts = dash_b.subscribe::<Alert>(&topic::alerts(det), QoS::AtLeastOnce);
    let dash = dash_b.connect().await.unwrap();
    let mut gw_b = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw_b.subscribe::<RawPayload>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let gw = gw_b.connect().await.unwrap();
    let verifier = Verifier::from_bus_config(&broker.config("gateway-1").unwrap()).unwrap();
    let (stop, handle) = start_detector(&broker, det, file.clone()).await;

    // Published at start ...
    let live = within("settings schema", schemas.recv()).await.message;
    // ... and retained: a client subscribing afterwards gets it from the broker.
    let late = BusClient::connect(broker.config("dashboard-2").unwrap())
        .await
        .unwrap();
    let mut late_schemas = late
        .subscribe::<SettingsSchema>(&topic::settings_schema(det), QoS::AtLeastOnce)
        .await
        .unwrap();
    let schema = retained_schema(&mut late_schemas).await;
    assert_eq!(schema.keys, live.keys);
    assert_eq!(schema.detector_id.as_str(), det);
    let expected = settings::schema(&file, &det.parse().unwrap(), schema.at_ms);
    assert_eq!(
        schema, expected,
        "the schema is the table with the file's values"
    );
    let vp = schema.key("portscan.vertical_ports").unwrap();
    assert_eq!(
        (vp.default, vp.min),
        (14.0, 1.0),
        "default = the file's value"
    );
    assert!(schema.key("portscan.no_such_key").is_none());
    let file_effective = settings::effective(&file);

    let set = |s: ThresholdSettings| {
        let dash = dash.clone();
        async move {
            dash.publish(&topic::thresholds(), &s, PublishOptions::retained())
                .await
                .unwrap();
        }
    };

    // 1. An unknown key (beside a valid one) refuses the whole set; nothing changes.
    set(settings(
        "s-1",
        &[
            ("portscan.no_such_key", 3.0),
            ("portscan.vertical_ports", 3.0),
        ],
    ))
    .await;
    let ack = within("settings ack", acks.recv()).await.message;
    assert_eq!(
        (ack.id.as_str(), ack.outcome),
        ("s-1", SettingsOutcome::Refused)
    );
    assert_eq!(ack.detector_id.as_str(), det);
    let err = ack.error.unwrap();
    assert!(err.contains("portscan.no_such_key"), "{err}");
    assert_eq!(
        ack.effective, file_effective,
        "the thresholds in force are untouched"
    );
    // Behaviour: the vertical scan is still reported at the 14th port, not the 3rd.
    gw.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", "203.0.113.10", 14),
        PublishOptions::flows(),
    )
    .await
    .unwrap();
    let a = vertical_alert(&mut alerts, "203.0.113.10").await;
    assert_eq!(a.explanation.thresholds["distinct_ports"], 14.0);
    let v = signed_verdict(&mut verdicts, &verifier, "gateway-1", det).await;
    assert_eq!(v.target.to_string(), "203.0.113.10/32");

    // 2. A valid change is applied, acked with the values in force, and takes effect.
    set(settings("s-2", &[("portscan.vertical_ports", 4.0)])).await;
    let ack = within("settings ack", acks.recv()).await.message;
    assert_eq!(
        (ack.id.as_str(), ack.outcome),
        ("s-2", SettingsOutcome::Applied)
    );
    assert_eq!(ack.error, None);
    let mut want = file_effective.clone();
    want.insert("portscan.vertical_ports".into(), 4.0);
    assert_eq!(ack.effective, want);
    gw.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", "203.0.113.11", 4),
        PublishOptions::flows(),
    )
    .await
    .unwrap();
    let a = vertical_alert(&mut alerts, "203.0.113.11").await;
    assert_eq!(a.explanation.thresholds["distinct_ports"], 4.0);
    let v = signed_verdict(&mut verdicts, &verifier, "gateway-1", det).await;
    assert_eq!(v.target.to_string(), "203.0.113.11/32");
    assert_eq!(a.verdict_id.as_deref(), Some(v.id.as_str()));

    // 3. A later set without that key: back to the file's 14 at once.
    set(settings("s-3", &[("synflood.window_s", 5.0)])).await;
    let ack = within("settings ack", acks.recv()).await.message;
    assert_eq!(
        (ack.id.as_str(), ack.outcome),
        ("s-3", SettingsOutcome::Applied)
    );
    let mut want = file_effective.clone();
    want.insert("synflood.window_s".into(), 5.0);
    assert_eq!(ack.effective, want);
    assert_eq!(ack.effective["portscan.vertical_ports"], 14.0);
    gw.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", "203.0.113.12", 14),
        PublishOptions::flows(),
    )
    .await
    .unwrap();
    let a = vertical_alert(&mut alerts, "203.0.113.12").await;
    assert_eq!(
        a.explanation.thresholds["distinct_ports"], 14.0,
        "no scan reported at 4 ports any more"
    );
    signed_verdict(&mut verdicts, &verifier, "gateway-1", det).await;

    // 4. An out-of-range value is refused naming the key.
    set(settings("s-4", &[("policy.block_confidence", 1.5)])).await;
    let ack = within("settings ack", acks.recv()).await.message;
    assert_eq!(
        (ack.id.as_str(), ack.outcome),
        ("s-4", SettingsOutcome::Refused)
    );
    assert!(
        ack.error
            .as_deref()
            .unwrap()
            .starts_with("policy.block_confidence"),
        "{ack:?}"
    );
    assert_eq!(ack.effective, want, "the refused set left s-3 in force");

    let _ = stop.send(());
    let stats = handle.await.unwrap().unwrap();
    assert_eq!((stats.settings_applied, stats.settings_refused), (2, 2));
    assert!(stats.schemas_published >= 1);
    assert_eq!(stats.publish_errors, 0);
    for c in [dash, gw, late] {
        c.shutdown(Duration::from_secs(2)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_published_again_after_a_reconnect() {
    // Without persistence a broker restart loses every retained message.
    let mut broker = TestBroker::start_with_options(&TestBrokerOptions {
        nodes: ["detector-1", "dashboard", "dashboard-2"]
            .map(String::from)
            .to_vec(),
        persistence: false,
    })
    .unwrap();
    let det = "detector-1";
    let (stop, handle) = start_detector(&broker, det, Config::default()).await;
    let dash = BusClient::connect(broker.config("dashboard").unwrap())
        .await
        .unwrap();
    let mut sub = dash
        .subscribe::<SettingsSchema>(&topic::settings_schema(det), QoS::AtLeastOnce)
        .await
        .unwrap();
    let before = retained_schema(&mut sub).await;
    drop(sub);

    broker.restart().unwrap();
    // Any copy a new client gets now was published after the restart.
    let late = BusClient::connect(broker.config("dashboard-2").unwrap())
        .await
        .unwrap();
    let mut sub = late
        .subscribe::<SettingsSchema>(&topic::settings_schema(det), QoS::AtLeastOnce)
        .await
        .unwrap();
    let after = within("schema after the restart", sub.recv()).await.message;
    assert_eq!(after.keys, before.keys);
    // And it is retained again.
    dash.wait_connected().await.unwrap();
    let mut again = dash
        .subscribe::<SettingsSchema>(&topic::settings_schema(det), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(retained_schema(&mut again).await.keys, before.keys);

    let _ = stop.send(());
    let stats = handle.await.unwrap().unwrap();
    assert!(stats.schemas_published >= 2, "{stats:?}");
    for c in [dash, late] {
        c.shutdown(Duration::from_secs(2)).await.unwrap();
    }
}

#[test]
fn the_signer_needs_the_detectors_own_certificate_and_key() {
    // The broker only provides a CA and certificates here.
    let broker = TestBroker::start_with(&["detector-1", "detector-2"]).unwrap();
    let own: BusConfig = broker.config("detector-1").unwrap();
    let other: BusConfig = broker.config("detector-2").unwrap();
    let mut cfg = Config {
        bus: own.clone(),
        ..Config::default()
    };
    assert_eq!(service::signer(&cfg).unwrap().id().as_str(), "detector-1");

    cfg.bus.key_file = broker.dir().join("missing.key");
    let e = service::signer(&cfg).unwrap_err();
    assert!(matches!(e, ServiceError::Signing { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&own.cert_file.display().to_string()),
        "{text}"
    );
    assert!(text.contains("missing.key"), "{text}");

    // A key that is not the certificate's.
    cfg.bus.key_file = other.key_file.clone();
    let text = service::signer(&cfg).unwrap_err().to_string();
    assert!(
        text.contains(&other.key_file.display().to_string()),
        "{text}"
    );

    // Another detector's certificate and key: the verdicts would name the wrong id.
    cfg.bus = BusConfig {
        node_id: String::new(),
        ..other
    };
    let e = service::signer(&cfg).unwrap_err();
    assert!(matches!(e, ServiceError::Identity { .. }), "{e}");
    assert!(e.to_string().contains("detector-2"), "{e}");
}
