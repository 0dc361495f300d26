//! The evidence path through a real Mosquitto with mutual TLS (tad_bus's
//! TestBroker): a gateway publishes `EvidenceBatch`es on
//! `tad/v1/gw/<gw>/evidence/<p>`; the detector taking partition `p` answers a
//! scanner's evidence with an `evidence.*` alert to the dashboard and a signed
//! block verdict on its own verdict topic, and a provisional quarantine of an
//! answered burst with a signed `evidence.lift` unblock.

mod common;

use std::time::Duration;

use common::{GW, keep_publishing, next_verdict, record, within};
use detector::{
    config::Config,
    engine::Engine,
    service::{self, ServiceError, ServiceStats},
};
use tad_bus::{BusClient, QoS, RawPayload, Subscription, Verifier, testing::TestBroker};
use tad_wire::{
    Action, Alert, AlertKind, EvidenceBatch, EvidenceEvent, EvidenceEventKind, SCHEMA_VERSION,
    Verdict, now_ms, topic,
};

const DET: &str = "detector-1";

/// The next verdict, checked to be signed by this detector.
async fn signed_verdict(sub: &mut Subscription<RawPayload>, verifier: &Verifier) -> Verdict {
    let (v, signer) = next_verdict(sub, verifier).await;
    assert_eq!(signer, DET);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_over_mqtt_gives_alert_signed_block_and_signed_lift() {
    let broker = TestBroker::start_with(&[GW, DET, "dashboard"]).unwrap();
    let mut cfg = Config::default();
    cfg.detector.id = DET.parse().unwrap();
    cfg.bus = broker.config(DET).unwrap();
    let signer = service::signer(&cfg).unwrap();
    let mut b = BusClient::builder(cfg.bus_config()).unwrap();
    let inputs = service::subscribe(&mut b, &cfg);
    assert_eq!(inputs.evidence.len(), 1, "one evidence partition");
    let bus = b.connect().await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle: tokio::task::JoinHandle<Result<ServiceStats, ServiceError>> = tokio::spawn(
        service::serve(Engine::new(cfg, None), bus, signer, inputs, async {
            let _ = stop_rx.await;
        }),
    );

    let mut gw_b = BusClient::builder(broker.config(GW).unwrap()).unwrap();
    let mut verdicts = gw_b.subscribe::<RawPayload>(&topic::verdicts_filter(GW), QoS::AtLeastOnce);
    let verifier = Verifier::from_bus_config(&broker.config(GW).unwrap()).unwrap();
    let gw = gw_b.connect().await.unwrap();
    let mut dash_b = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut alerts = dash_b.subscribe::<Alert>(&topic::alerts(DET), QoS::AtLeastOnce);
    let dash = dash_b.connect().await.unwrap();

    // A scanner: 40 ports of one host refused, no flow record yet.
    let scanner = "203.0.113.66";
    let batch = EvidenceBatch {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        seq: 0,
        partition: 0,
        sent_at_ms: now_ms(),
        records: vec![record(scanner, "192.0.2.20", 1000..1040, 0)],
        events: Vec::new(),
    };
    let (stop_pub, publisher) = keep_publishing(gw.clone(), batch);
    let v = signed_verdict(&mut verdicts, &verifier).await;
    let _ = stop_pub.send(());
    publisher.await.unwrap();
    assert_eq!(
        (v.action, v.target.to_string(), v.rule.as_str()),
        (
            Action::Quarantine,
            format!("{scanner}/32"),
            "evidence.vertical"
        )
    );
    assert!(v.ttl_s.is_some());
    let a = within("alert", alerts.recv()).await.message;
    assert_eq!(
        (a.kind, a.explanation.rule.as_str(), a.source),
        (
            AlertKind::PortScan,
            "evidence.vertical",
            Some(scanner.parse().unwrap())
        )
    );
    assert_eq!(a.verdict_id.as_deref(), Some(v.id.as_str()));

    // A provisionally quarantined client whose 60 connections were all answered.
    let client = "192.0.2.30";
    let mut rec = record(client, "198.51.100.10", 443..444, 0);
    rec.new_flows = 60;
    rec.syn = 60;
    rec.replies = 60;
    rec.refused = 0;
    let batch = EvidenceBatch {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        seq: 1_000,
        partition: 0,
        sent_at_ms: now_ms(),
        records: vec![rec],
        events: vec![EvidenceEvent {
            kind: EvidenceEventKind::Quarantine,
            addr: client.parse().unwrap(),
            at_ms: now_ms(),
            union_hosts: 50,
            union_ports: 1,
            new_flows: 60,
            unreplied: 1,
        }],
    };
    let (stop_pub, publisher) = keep_publishing(gw.clone(), batch);
    let v = signed_verdict(&mut verdicts, &verifier).await;
    let _ = stop_pub.send(());
    publisher.await.unwrap();
    assert_eq!(
        (v.action, v.target.to_string(), v.rule.as_str(), v.ttl_s),
        (
            Action::Unblock,
            format!("{client}/32"),
            "evidence.lift",
            None
        )
    );

    let _ = stop_tx.send(());
    let stats = handle.await.unwrap().unwrap();
    assert!(stats.evidence_batches >= 2);
    assert!(stats.engine.quarantines_lifted >= 1);
    assert_eq!(stats.engine.verdicts, 1, "one block");
    gw.shutdown(Duration::from_secs(2)).await.unwrap();
    dash.shutdown(Duration::from_secs(2)).await.unwrap();
}
