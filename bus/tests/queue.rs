//! The outgoing queue is bounded: drop-oldest for best-effort data (counted),
//! back-pressure / QueueFull for messages that must not be lost. No broker needed:
//! the client is pointed at a port nobody listens on, so nothing drains.

use std::net::TcpListener;

use tad_bus::{
    BusClient, BusConfig, BusError, PublishOptions,
    pki::{self, PkiOptions},
};
use tad_wire::{CountersSnapshot, Mode, SCHEMA_VERSION, topic};

fn snapshot(at_ms: u64) -> CountersSnapshot {
    CountersSnapshot {
        v: SCHEMA_VERSION,
        gateway_id: "gateway-1".parse().unwrap(),
        at_ms,
        mode: Mode::Enforce,
        counters: Vec::new(),
        maps: Vec::new(),
        flows_exported: 0,
        records_dropped_total: 0,
    }
}

#[tokio::test]
async fn full_queue_drops_oldest_best_effort_never_reliable() {
    let dir = tempfile::tempdir().unwrap();
    pki::generate(dir.path(), &PkiOptions::default()).unwrap();
    // A port that refuses connections.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = BusConfig {
        queue_capacity: 4,
        reconnect_min_ms: 1000,
        ..BusConfig::from_certs_dir("gateway-1", dir.path(), "127.0.0.1", port)
    };
    let bus = BusClient::builder(cfg).unwrap().start().unwrap();
    const N: u64 = 100;
    for i in 0..N {
        bus.publish(
            &topic::counters("gateway-1"),
            &snapshot(i),
            PublishOptions::best_effort(),
        )
        .await
        .unwrap();
    }
    let m = bus.metrics();
    assert_eq!(m.queued, 4);
    // Beyond the queue, at most the MQTT request channel (16) and one message in
    // hand are waiting; everything else was dropped and counted.
    assert!(m.dropped >= N - 4 - 16 - 1, "{m:?}");
    assert!(m.dropped + m.queued + m.published <= N, "{m:?}");

    // A message that must not be lost takes the place of the oldest best-effort one...
    let status = tad_wire::NodeStatus {
        v: SCHEMA_VERSION,
        node_id: "gateway-1".parse().unwrap(),
        role: tad_wire::Role::Gateway,
        online: true,
        at_ms: 0,
        mode: None,
        interfaces: Vec::new(),
        maps: Vec::new(),
        version: "t".into(),
        partitions: None,
        taken: Vec::new(),
    };
    let st = topic::gateway_status("gateway-1");
    for i in 1..=4 {
        let dropped = bus.metrics().dropped;
        bus.try_publish(&st, &status, PublishOptions::reliable())
            .unwrap();
        assert_eq!(bus.metrics().dropped, dropped + 1, "reliable #{i}");
        assert_eq!(bus.metrics().queued, 4);
    }
    // ...but is never dropped itself: with only such messages queued, another one
    // is refused (try_publish) and a best-effort one is the one dropped.
    let r = bus.try_publish(&st, &status, PublishOptions::reliable());
    assert!(
        matches!(r, Err(BusError::QueueFull { capacity: 4 })),
        "{r:?}"
    );
    let dropped = bus.metrics().dropped;
    bus.try_publish(
        &topic::counters("gateway-1"),
        &snapshot(N),
        PublishOptions::best_effort(),
    )
    .unwrap();
    assert_eq!(bus.metrics().dropped, dropped + 1);
    assert_eq!(bus.metrics().queued, 4);
}

#[tokio::test]
async fn oversized_message_is_refused_before_it_reaches_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    pki::generate(dir.path(), &PkiOptions::default()).unwrap();
    let cfg = BusConfig {
        max_packet_bytes: 4096,
        ..BusConfig::from_certs_dir("gateway-1", dir.path(), "127.0.0.1", 1)
    };
    let bus = BusClient::builder(cfg).unwrap().start().unwrap();
    let mut big = snapshot(0);
    big.maps.push(tad_wire::MapFill {
        name: "m".repeat(5000),
        entries: 0,
        max_entries: 0,
    });
    let r = bus
        .publish(
            &topic::counters("gateway-1"),
            &big,
            PublishOptions::reliable(),
        )
        .await;
    assert!(
        matches!(r, Err(BusError::TooLarge { max: 4096, .. })),
        "{r:?}"
    );
    assert_eq!(bus.metrics().queued, 0);
    bus.try_publish(
        &topic::counters("gateway-1"),
        &snapshot(1),
        PublishOptions::reliable(),
    )
    .unwrap();
}

#[test]
fn config_rejects_unknown_keys_and_bad_ids() {
    let err =
        serde_json::from_str::<BusConfig>(r#"{"node_id":"gateway-1","prot":8883}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `prot`"), "{err}");
    let cfg: BusConfig = serde_json::from_str(r#"{"node_id":"gateway-1"}"#).unwrap();
    assert_eq!(cfg.port, 8883);
    for bad in ["", "gw/1", "printer-1"] {
        let cfg = BusConfig {
            node_id: bad.into(),
            ..BusConfig::default()
        };
        assert!(
            matches!(BusClient::builder(cfg), Err(BusError::Config { .. })),
            "{bad:?}"
        );
    }
    let cfg = BusConfig {
        node_id: "gateway-1".parse().unwrap(),
        cert_file: "/nonexistent/gateway-1.pem".into(),
        ..BusConfig::default()
    };
    let err = BusClient::builder(cfg).unwrap_err();
    assert!(matches!(err, BusError::TlsFile { .. }), "{err}");
}

#[test]
fn shipped_example_config_parses_and_matches_the_defaults() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        bus: BusConfig,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bus.toml.example");
    let text = std::fs::read_to_string(path).unwrap();
    let f: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let d = BusConfig::default();
    // Everything but the node's own identity and files is the default.
    let tuning = |c: &BusConfig| {
        (
            c.port,
            c.keep_alive_s,
            c.session_expiry_s,
            c.connect_timeout_s,
            c.reconnect_min_ms,
            c.reconnect_max_ms,
            c.queue_capacity,
            c.subscription_capacity,
            c.malformed_log_interval_s,
            c.max_packet_bytes,
        )
    };
    assert_eq!(tuning(&f.bus), tuning(&d));
    assert_eq!(f.bus.node_id, "gateway-1");
}
