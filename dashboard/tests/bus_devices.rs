//! The dashboard on a real Mosquitto with mutual TLS (`tad_bus::testing`): what
//! a gateway publishes about its IoT devices (its retained device state, a
//! telemetry batch, trust changes) reaches the device API through the broker's
//! ACL, and the batch's SHA-256 and the trust change are in the audit log.

mod common;
mod iot;

use common::{OnBus, eventually, get};
use iot::*;
use tad_bus::{BusClient, PublishOptions, testing::TestBroker};
use tad_wire::{devices::DeviceTrustCause, now_ms, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reports_arrive_over_the_bus() {
    let broker =
        TestBroker::start().expect("mosquitto test broker (cargo xtask setup installs it)");
    let dash = OnBus::start(&broker);
    let app = dash.f.app.clone();
    let gw = BusClient::connect(broker.config(GW).unwrap())
        .await
        .unwrap();
    let now = now_ms();
    let b = batch(1, &[("esp32-1", 1, now - 200, 10.0, 90.0, 21.0)]);

    // Until the dashboard's subscription is up, a retained message is the only
    // kind that cannot be missed: publish the state first and wait for it.
    gw.publish(
        &topic::devices_state(GW),
        &states(now, &[("esp32-1", 81.0)]),
        PublishOptions::retained(),
    )
    .await
    .unwrap();
    eventually("the device state", || {
        app.store.iot_devices().unwrap().len() == 1
    })
    .await;
    gw.publish(
        &topic::devices_telemetry(GW),
        &b,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let heartbeat = {
        let mut c = change(
            "esp32-1",
            now,
            80.0,
            81.0,
            DeviceTrustCause::Heartbeat { sequence_no: 1 },
        );
        c.batch_sha256 = Some(b.sha256.clone());
        c
    };
    gw.publish(
        &topic::devices_trust(GW),
        &trust(now, vec![heartbeat]),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();

    let q = dashboard::store::DeviceQuery {
        device_id: "esp32-1",
        gateway_id: None,
        since_ms: None,
        limit: 10,
    };
    eventually("the batch and the trust change", || {
        app.store.iot_batches(&q).unwrap().len() == 1 && app.store.iot_trust(&q).unwrap().len() == 1
    })
    .await;
    let (_, d) = get(&app, "/api/v1/iot/devices/esp32-1").await;
    assert_eq!(d["state"][0]["trust"], 81.0);
    assert_eq!(d["batches"][0]["sha256"], b.sha256.as_str());
    assert_eq!(d["trust"][0]["cause"]["kind"], "heartbeat");
    assert_eq!(d["trust"][0]["batch_sha256"], b.sha256.as_str());
    let log = std::fs::read_to_string(dash.f.dir.path().join("audit.jsonl")).unwrap();
    assert!(log.contains(&format!("\"sha256\":\"{}\"", b.sha256)));
    assert!(log.contains("\"kind\":\"device_trust\""));
    gw.shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    dash.stop().await;
}
