//! Two real mosquitto brokers on loopback, a per-site one bridged to a central one
//! over mutual TLS with the bridge's own client certificate (tad_bus::bridge):
//! a gateway's messages on the site reach the central detector, a detector's
//! verdict on the central broker reaches the site's gateway, and the ACLs hold
//! across the bridge (a site client cannot get a topic it may not publish to the
//! central broker, nor a central client one to the site).

mod common;

use std::time::Duration;

use common::{WAIT, batch, next, until, verdict};
use tad_bus::{
    BusClient, PublishOptions, QoS, RawPayload,
    bridge::{BridgeConfig, central_acl},
    pki::{Validity, write_private, write_public},
    testing::TestBroker,
};
use tad_wire::{FlowBatch, Verdict, topic};

const BRIDGE: &str = "bridge-site-1";

/// Waits until the bridge's remote session exists: a probe published by the
/// site's gateway on its own counters topic arrives centrally.
async fn wait_bridge_up(site_gw: &BusClient, central_sub: &mut tad_bus::Subscription<RawPayload>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        site_gw
            .publish_bytes(
                &topic::counters("gateway-1"),
                b"{}".to_vec(),
                PublishOptions::reliable(),
            )
            .await
            .unwrap();
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(300), central_sub.recv()).await
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge did not come up within {WAIT:?}"
        );
    }
}

#[tokio::test]
async fn site_broker_bridged_to_central_keeps_acls_and_tls() {
    // Central: detectors and the dashboard; its ACL also lets the bridge relay
    // gateway-1's own topics (and nothing else).
    let mut central =
        TestBroker::start_with(&["detector-1", "detector-2", "dashboard"]).expect("central broker");
    let acl = central.dir().join("acl");
    let mut text = std::fs::read_to_string(&acl).unwrap();
    text.push_str(&central_acl(BRIDGE, &["gateway-1".into()]).unwrap());
    std::fs::write(&acl, text).unwrap();
    central
        .restart()
        .expect("central restarts with the bridge's ACL block");

    // Site: the gateways; the bridge connects to the central broker with a client
    // certificate of the central CA and verifies the central's server certificate.
    let mut site = TestBroker::start_with(&["gateway-1", "gateway-2"]).expect("site broker");
    let cert = central
        .ca()
        .issue_client(BRIDGE, Validity::days(2))
        .unwrap();
    let (cf, kf) = (site.dir().join("bridge.pem"), site.dir().join("bridge.key"));
    write_public(&cf, &cert.cert_pem).unwrap();
    write_private(&kf, &cert.key_pem).unwrap();
    let bridge = BridgeConfig {
        bridge_id: BRIDGE.into(),
        central: format!("127.0.0.1:{}", central.port()),
        cafile: central.ca_file(),
        certfile: cf,
        keyfile: kf,
        gateways: vec!["gateway-1".into()],
    };
    let conf = site.dir().join("mosquitto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&bridge.render().unwrap());
    std::fs::write(&conf, text).unwrap();
    site.restart().expect("site restarts with the bridge");

    // Central clients.
    let mut det = BusClient::builder(central.config("detector-1").unwrap()).unwrap();
    let mut flows = det.subscribe::<FlowBatch>("tad/v1/gw/+/flows/#", QoS::AtLeastOnce);
    let det = det.connect().await.expect("detector connects centrally");
    let mut dash = BusClient::builder(central.config("dashboard").unwrap()).unwrap();
    let mut everything = dash.subscribe::<RawPayload>("tad/v1/#", QoS::AtLeastOnce);
    let mut counters = dash.subscribe::<RawPayload>("tad/v1/gw/+/counters", QoS::AtLeastOnce);
    let _dash = dash.connect().await.expect("dashboard connects centrally");
    let det2 = BusClient::connect(central.config("detector-2").unwrap())
        .await
        .unwrap();

    // Site clients.
    let mut gw = BusClient::builder(site.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw.subscribe::<Verdict>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let gw = gw
        .connect()
        .await
        .expect("gateway connects to the site broker");
    let gw2 = BusClient::connect(site.config("gateway-2").unwrap())
        .await
        .unwrap();

    wait_bridge_up(&gw, &mut counters).await;
    while everything.try_recv().is_some() {}
    assert!(
        site.log().contains(BRIDGE) && !central.log().contains("OpenSSL Error"),
        "bridge connected over TLS:\n{}",
        central.log()
    );

    // 1. A gateway's flow batch on the site reaches the central detector.
    gw.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", 7),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let got = next(&mut flows).await;
    assert_eq!(got.topic, topic::flows("gateway-1", 0));
    assert_eq!(got.message.seq, 7);

    // 2. ACLs across the bridge. On the site, gateway-1 may not write a verdict
    // (refused there: PUBACK 0x87), and gateway-2 may not write gateway-1's flows.
    // gateway-2's own flows are allowed on the site but are not bridged.
    let forged = verdict("forged", "detector-1");
    gw.publish(
        &topic::verdicts("gateway-1", "detector-1"),
        &forged,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    until("the site broker's refusal of the forged verdict", || {
        gw.metrics().denied == 1
    })
    .await;
    gw2.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", 666),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    until("the site broker's refusal of gateway-2's forgery", || {
        gw2.metrics().denied == 1
    })
    .await;
    gw2.publish(
        &topic::flows("gateway-2", 0),
        &batch("gateway-2", 1),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    // Centrally, detector-2 may not publish detector-1's verdict: refused there,
    // so it never crosses to the site.
    det2.publish(
        &topic::verdicts("gateway-1", "detector-1"),
        &forged,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    until(
        "the central broker's refusal of detector-2's forgery",
        || det2.metrics().denied == 1,
    )
    .await;

    // 3. A verdict published centrally by detector-1 reaches the site's gateway,
    // and is the first and only one it gets.
    let real = verdict("real", "detector-1");
    det.publish(
        &topic::verdicts("gateway-1", "detector-1"),
        &real,
        PublishOptions::verdict(60),
    )
    .await
    .unwrap();
    let v = next(&mut verdicts).await;
    assert_eq!(
        (v.topic.as_str(), v.message.id.as_str()),
        (topic::verdicts("gateway-1", "detector-1").as_str(), "real")
    );
    assert!(
        verdicts.try_recv().is_none(),
        "a forged verdict reached the site"
    );

    // A marker through the bridge after everything above: the central dashboard
    // (which reads tad/v1/#) got, in order, flows seq 7, the verdict and the
    // marker, and none of the refused or unbridged messages.
    gw.publish(
        &topic::flows("gateway-1", 0),
        &batch("gateway-1", 8),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    loop {
        let r = next(&mut everything).await;
        let is_marker = r.topic == topic::flows("gateway-1", 0)
            && serde_json::from_slice::<FlowBatch>(&r.message.0).is_ok_and(|b| b.seq == 8);
        seen.push(r.topic.clone());
        if is_marker {
            break;
        }
        let body = String::from_utf8_lossy(&r.message.0).into_owned();
        assert!(
            !body.contains("forged") && !body.contains("666") && !r.topic.contains("gateway-2"),
            "a refused or unbridged message reached the central broker: {} {body}",
            r.topic
        );
    }
    assert!(
        seen.contains(&topic::verdicts("gateway-1", "detector-1")),
        "the central verdict seen centrally: {seen:?}"
    );
}
