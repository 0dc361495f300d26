//! The dashboard on a real Mosquitto with mutual TLS (`tad_bus::testing`): what
//! a gateway and a detector publish is stored; an operator's block reaches the
//! gateway as a command; a gateway's Last Will marks it offline.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use dashboard::{api::routes, bus, publish::ChannelPublisher};
use tad_bus::{BusClient, PublishOptions, QoS, testing::TestBroker};
use tad_wire::{Action, Command, now_ms, topic};
use warp::{http::StatusCode, test::request};

/// Waits until `cond` holds; panics naming `what` after 20 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_ingests_from_and_publishes_to_the_bus() {
    let broker =
        TestBroker::start().expect("mosquitto test broker (cargo xtask setup installs it)");
    let (publisher, outbound) = ChannelPublisher::new(8);
    let f = fixture_with_publisher(Arc::new(publisher));
    let app = f.app.clone();

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let dash = tokio::spawn(bus::run(
        app.clone(),
        broker.config("dashboard").unwrap(),
        outbound,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));

    // A gateway (retained online status on connect, Last Will offline) listening
    // for commands, and a detector.
    let mut gw_builder = BusClient::builder(broker.config(GW).unwrap()).unwrap();
    let mut commands = gw_builder.subscribe::<Command>(&topic::commands(GW), QoS::AtLeastOnce);
    let gw = gw_builder.connect().await.unwrap();
    let det = BusClient::connect(broker.config(DET).unwrap())
        .await
        .unwrap();

    eventually("the gateway's online status", || {
        app.store
            .nodes()
            .unwrap()
            .iter()
            .any(|n| n.node_id == GW && n.online == Some(true))
    })
    .await;

    // Counters and an alert flow in.
    let snap = counters(GW, now_ms(), 500.0, 5.0, 3);
    gw.publish(&topic::counters(GW), &snap, PublishOptions::reliable())
        .await
        .unwrap();
    let a = alert("a-bus", now_ms(), "192.0.2.99");
    det.publish(&topic::alerts(DET), &a, PublishOptions::reliable())
        .await
        .unwrap();
    eventually("the alert", || {
        !app.store.alerts(10, None).unwrap().is_empty()
    })
    .await;
    eventually("the counters sample", || {
        app.store.row_counts().unwrap().samples == 1
    })
    .await;
    let stored = &app.store.alerts(10, None).unwrap()[0];
    assert_eq!(stored.alert, a);
    assert_eq!(stored.audit_hash.len(), 64);

    // An operator blocks a source: the gateway receives the command.
    let res = request()
        .method("POST")
        .path("/api/v1/blocks")
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!({"gateway_id": GW, "target": "192.0.2.99", "ttl_s": 300}))
        .reply(&routes(app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let got = tokio::time::timeout(Duration::from_secs(20), commands.recv())
        .await
        .expect("command within 20 s")
        .expect("subscription open");
    assert_eq!(got.message.action, Action::Block);
    assert_eq!(got.message.target.to_string(), "192.0.2.99/32");
    assert_eq!(got.message.ttl_s, Some(300));

    // The gateway dies without a clean disconnect: its Last Will turns it offline.
    drop(gw);
    eventually("the gateway's Last Will", || {
        app.store
            .nodes()
            .unwrap()
            .iter()
            .any(|n| n.node_id == GW && n.online == Some(false))
    })
    .await;

    det.shutdown(Duration::from_secs(2)).await.unwrap();
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(20), dash)
        .await
        .expect("dashboard bus task ends")
        .unwrap()
        .unwrap();
}
