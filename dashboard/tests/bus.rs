//! The dashboard on a real Mosquitto with mutual TLS (`tad_bus::testing`): what
//! a gateway and a detector publish is stored; the gateway's state snapshot and
//! deltas are the block list; a verdict signed by detector-1 is stored, one by
//! detector-2 naming detector-1 is refused and counted; an operator's block
//! reaches the gateway as a command signed by the dashboard; a gateway's Last
//! Will marks it offline.

mod common;

use std::time::Duration;

use common::*;
use dashboard::api::routes;
use tad_bus::{BusClient, PublishOptions, QoS, RawPayload, signing::Verifier, testing::TestBroker};
use tad_wire::{
    Action, BlockOrigin, Command, RefusalReason, RemovalCause, RemovedBlock, now_ms, topic,
};
use warp::{http::StatusCode, test::request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_ingests_from_and_publishes_to_the_bus() {
    let broker =
        TestBroker::start().expect("mosquitto test broker (cargo xtask setup installs it)");
    let dash = OnBus::start(&broker);
    let app = dash.f.app.clone();

    // A gateway (retained online status on connect, Last Will offline) listening
    // for commands, and a detector.
    let mut gw_builder = BusClient::builder(broker.config(GW).unwrap()).unwrap();
    let mut commands =
        gw_builder.subscribe::<RawPayload>(&topic::commands_filter(GW), QoS::AtLeastOnce);
    let gw = gw_builder.connect().await.unwrap();
    let det_cfg = broker.config(DET).unwrap();
    let det_signer = tad_bus::signing::Signer::from_bus_config(&det_cfg).unwrap();
    let det = BusClient::connect(det_cfg).await.unwrap();
    let det2_cfg = broker.config("detector-2").unwrap();
    let det2_signer = tad_bus::signing::Signer::from_bus_config(&det2_cfg).unwrap();
    let det2 = BusClient::connect(det2_cfg).await.unwrap();

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

    // The gateway's retained state: a CLI block and a feed entry are the blocks.
    let state = gw_state(
        0,
        now_ms(),
        vec![
            entry("192.0.2.7/32", BlockOrigin::Cli, "root", None),
            entry(
                "198.51.100.0/24",
                BlockOrigin::Feed,
                "feed:spamhaus-drop.txt",
                Some(now_ms() + 3_600_000),
            ),
        ],
    );
    gw.publish(
        &topic::gateway_state(GW),
        &state,
        PublishOptions::retained(),
    )
    .await
    .unwrap();
    let blocks_api = || {
        let app = app.clone();
        async move {
            let res = request().path("/api/v1/blocks").reply(&routes(app)).await;
            serde_json::from_slice::<serde_json::Value>(res.body()).unwrap()
        }
    };
    eventually("the gateway state", || {
        app.store.blocks(now_ms()).unwrap().len() == 2
    })
    .await;
    let b = blocks_api().await;
    let origins: Vec<&str> = b["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["origin"].as_str().unwrap())
        .collect();
    assert!(origins.contains(&"cli") && origins.contains(&"feed"), "{b}");
    // The feed entry expires: the delta removes it.
    let mut d = gw_delta(1, now_ms());
    d.removed = vec![RemovedBlock {
        prefix: "198.51.100.0/24".parse().unwrap(),
        cause: RemovalCause::Expired,
    }];
    gw.publish(
        &topic::gateway_state_delta(GW),
        &d,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    eventually("the delta", || {
        app.store.blocks(now_ms()).unwrap().len() == 1
    })
    .await;
    assert_eq!(blocks_api().await["blocks"][0]["prefix"], "192.0.2.7/32");

    // A verdict signed by detector-1 is stored; detector-2 writing one in
    // detector-1's name (on its own topic level, which the broker lets it) is
    // refused and counted, and never shown.
    let v = verdict("v-bus", now_ms(), "192.0.2.99/32");
    det2.publish_signed(
        &topic::verdicts(GW, "detector-2"),
        &det2_signer,
        &v,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    eventually("the forged verdict's refusal", || {
        app.metrics
            .refusals("verdict", RefusalReason::IdentityMismatch)
            == 1
    })
    .await;
    assert!(app.store.verdicts(10).unwrap().is_empty());
    det.publish_signed(
        &topic::verdicts(GW, DET),
        &det_signer,
        &v,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    eventually("the verdict", || {
        !app.store.verdicts(10).unwrap().is_empty()
    })
    .await;
    assert_eq!(app.store.verdicts(10).unwrap()[0].verdict, v);

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
    // On the dashboard's own topic level, signed by its certificate.
    assert_eq!(got.topic, topic::commands(GW, "dashboard"));
    assert_eq!(
        got.content_type.as_deref(),
        Some(tad_wire::SIGNED_CONTENT_TYPE)
    );
    let verifier = Verifier::from_bus_config(&broker.config(GW).unwrap()).unwrap();
    let signed = verifier.verify::<Command>(&got.message.0).unwrap();
    assert_eq!(signed.signer.as_str(), "dashboard");
    assert_eq!(signed.message.action, Action::Block);
    assert_eq!(signed.message.target.to_string(), "192.0.2.99/32");
    assert_eq!(signed.message.ttl_s, Some(300));
    // The echo of its own command is not a second record.
    eventually("the command echo", || app.metrics.messages("command") >= 1).await;
    assert_eq!(app.store.commands(10).unwrap().len(), 1);

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
    det2.shutdown(Duration::from_secs(2)).await.unwrap();
    dash.stop().await;
}
