//! The detector service through a real Mosquitto with mutual TLS (tad_bus's
//! TestBroker): flow batches from a gateway on two partitions reach two detector
//! instances, each taking one; the scanner's verdict reaches the gateway that saw
//! the flows and the alert reaches the dashboard; bad threshold settings are
//! rejected while the service keeps running.

use std::{collections::BTreeMap, time::Duration};

use detector::{config::Config, engine::Engine, service};
use tad_bus::{BusClient, PublishOptions, QoS, testing::TestBroker};
use tad_wire::{
    Alert, DirCounters, EndReason, FlowBatch, FlowRecord, SCHEMA_VERSION, ThresholdSettings,
    Verdict, partition_of, topic,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_over_mqtt_gives_verdict_alert_and_settings_are_checked() {
    let broker =
        TestBroker::start_with(&["gateway-1", "detector-1", "detector-2", "dashboard"]).unwrap();

    // Two detector instances, partitions {0} and {1} of 2.
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for (id, part) in [("detector-1", 0u16), ("detector-2", 1)] {
        let mut cfg = Config::default();
        cfg.detector.id = id.parse().unwrap();
        cfg.partitions.count = 2;
        cfg.partitions.take = vec![part];
        let mut b = BusClient::builder(broker.config(id).unwrap()).unwrap();
        let inputs = service::subscribe(&mut b, &cfg);
        let bus = b.connect().await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        handles.push(tokio::spawn(service::serve(
            Engine::new(cfg, None),
            bus,
            inputs,
            async {
                let _ = stop_rx.await;
            },
        )));
    }

    let mut gw_b = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts = gw_b.subscribe::<Verdict>(&topic::verdicts("gateway-1"), QoS::AtLeastOnce);
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

    let v = within("verdict", verdicts.recv()).await.message;
    assert_eq!(v.target.to_string(), format!("{scanner}/32"));
    assert_eq!(
        v.rule, "portscan.vertical",
        "threshold 12 applied at runtime"
    );
    let expect_det = if p == 0 { "detector-1" } else { "detector-2" };
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
    let mut total_rejected = 0;
    let mut total_records = 0;
    for h in handles {
        let stats = h.await.unwrap().unwrap();
        total_rejected += stats.settings_rejected;
        total_records += stats.engine.records;
    }
    assert_eq!(total_rejected, 2, "each instance rejected the unknown key");
    assert_eq!(total_records, 12, "the batch went to exactly one instance");
    gw.shutdown(Duration::from_secs(2)).await.unwrap();
    dash.shutdown(Duration::from_secs(2)).await.unwrap();
}
