//! Settings end to end on a real Mosquitto with mutual TLS (`tad_bus::testing`)
//! with the real detector service (`detector::service`, as in the detector's own
//! tests): the dashboard learns the detector's schema from its retained message;
//! an unknown key gets 400 and the detector never hears of it; a valid change is
//! applied by the detector, acked and shown; removing the key restores the
//! detector's default at once; the acks are in the audit log.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use detector::{config::Config as DetectorConfig, engine::Engine, service};
use serde_json::{Value, json};
use tad_bus::{BusClient, testing::TestBroker};
use warp::http::StatusCode;

const VP: &str = "portscan.vertical_ports";

/// The view's entry for `det`, once its ack of the current settings arrived.
async fn acked(app: &Arc<dashboard::app::App>, det: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, view) = call(app, "GET", "/api/v1/thresholds", None).await;
        if let Some(d) = view["detectors"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["detector_id"] == det))
            && d["status"] != "pending"
        {
            assert_eq!(
                d["ack"]["id"], view["id"],
                "the ack answers the settings in force"
            );
            return d.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ack from {det} within 20 s: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_checked_applied_acked_shown_and_removable_with_the_real_detector() {
    let broker =
        TestBroker::start().expect("mosquitto test broker (cargo xtask setup installs it)");
    let dash = OnBus::start(&broker);
    let app = dash.f.app.clone();

    // Before any detector: nothing can be checked.
    let (s, b) = call(
        &app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {VP: 30}})),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");

    // The detector, its "file" config saying 14 ports.
    let mut cfg = DetectorConfig::default();
    cfg.portscan.vertical_ports = 14;
    cfg.detector.id = DET.parse().unwrap();
    cfg.bus = broker.config(DET).unwrap();
    let signer = service::signer(&cfg).unwrap();
    let mut b = BusClient::builder(cfg.bus_config()).unwrap();
    let inputs = service::subscribe(&mut b, &cfg);
    let det_bus = b.connect().await.unwrap();
    let (det_stop, det_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let detector = tokio::spawn(service::serve(
        Engine::new(cfg, None),
        det_bus,
        signer,
        inputs,
        async {
            let _ = det_stop_rx.await;
        },
    ));

    eventually("the detector's settings schema", || {
        !app.store.settings_schemas().unwrap().is_empty()
    })
    .await;
    let (_, view) = call(&app, "GET", "/api/v1/thresholds", None).await;
    let vp = view["schemas"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == VP)
        .unwrap()
        .clone();
    assert_eq!(
        (&vp["default"], &vp["kind"]),
        (&json!(14.0), &json!("integer"))
    );

    // The key the old example config allowed: 400 naming it; nothing stored, so
    // the detector never receives it.
    let (s, b) = call(
        &app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {"synflood.syn_rate_pps": 500}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("synflood.syn_rate_pps"),
        "{b}"
    );
    assert_eq!(app.store.thresholds().unwrap(), None);

    // A valid change: the detector applies it and says so.
    let (s, b) = call(
        &app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {VP: 30}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["awaiting"], json!([DET]));
    let d = acked(&app, DET).await;
    assert_eq!(d["status"], "applied", "{d}");
    assert_eq!(d["ack"]["effective"][VP], 30.0);
    let hash = d["ack"]["audit_hash"].as_str().unwrap().to_owned();
    let (s, rec) = call(&app, "GET", &format!("/api/v1/audit/{hash}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec["entry"]["kind"], "settings_ack");
    assert_eq!(rec["entry"]["data"]["outcome"], "applied");
    assert_eq!(rec["verification"]["ok"], true);

    // A set the schema allows but the detector's cross-key rule refuses (the trust
    // weights must sum to 1): acked as refused with the reason; 30 stays in force.
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {"trust.weight_behavioural": 0.9}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let d = acked(&app, DET).await;
    assert_eq!(d["status"], "refused", "{d}");
    assert!(
        d["ack"]["error"].as_str().unwrap().contains("trust.weight"),
        "{d}"
    );
    assert_eq!(d["ack"]["effective"][VP], 30.0);

    // Removing keys: the detector's default (the file's 14) is back at once.
    let (s, _) = call(
        &app,
        "DELETE",
        "/api/v1/thresholds/trust.weight_behavioural",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, b) = call(&app, "DELETE", &format!("/api/v1/thresholds/{VP}"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["settings"]["values"], json!({}));
    let d = acked(&app, DET).await;
    assert_eq!(d["status"], "applied", "{d}");
    assert_eq!(d["ack"]["effective"][VP], 14.0, "the default is restored");

    let _ = det_stop.send(());
    let stats = detector.await.unwrap().unwrap();
    assert_eq!(
        (stats.settings_applied, stats.settings_refused),
        (3, 1),
        "30; 30 again without the weight; {{}}: applied. The weight: refused. The \
         unknown key never reached the detector"
    );
    dash.stop().await;
}
