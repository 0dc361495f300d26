//! The evidence path through a real Mosquitto with mutual TLS (tad_bus's
//! TestBroker): a gateway publishes `EvidenceBatch`es on
//! `tad/v1/gw/<gw>/evidence/<p>`; the detector taking partition `p` answers a
//! scanner's evidence with an `evidence.*` alert to the dashboard and a signed
//! block verdict on its own verdict topic, and a provisional quarantine of an
//! answered burst with a signed `evidence.lift` unblock.

use std::{net::IpAddr, time::Duration};

use detector::{
    config::Config,
    engine::Engine,
    service::{self, ServiceError, ServiceStats},
};
use fw_common::evidence::{host_bit, port_bit};
use tad_bus::{
    BusClient, PublishOptions, QoS, RawPayload, Signed, Subscription, Verifier, testing::TestBroker,
};
use tad_wire::{
    Action, Alert, AlertKind, EpochEvidence, EvidenceBatch, EvidenceEvent, EvidenceEventKind,
    EvidenceRole, SCHEMA_VERSION, Verdict, now_ms, topic,
};

const GW: &str = "gateway-1";
const DET: &str = "detector-1";

async fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("{what}: subscription ended"))
}

fn set(bits: &mut [u64; 4], bit: u32) {
    bits[(bit / 64) as usize] |= 1 << (bit % 64);
}

fn key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// `src` opened one flow to each of `ports` on `dst` (this epoch), `replies` of
/// them answered, the rest refused.
fn record(src: &str, dst: &str, ports: std::ops::Range<u16>, replies: u32) -> EpochEvidence {
    let dst: IpAddr = dst.parse().unwrap();
    let mut r = EpochEvidence {
        addr: src.parse().unwrap(),
        role: EvidenceRole::Source,
        epoch_start_ms: now_ms() / 1000 * 1000,
        hosts: [0; 4],
        ports: [0; 4],
        new_flows: 0,
        syn: 0,
        tcp_other: 0,
        udp: 0,
        icmp: 0,
        bytes: 0,
        replies,
        refused: 0,
        icmp_errors: 0,
        unsolicited_rsts: 0,
    };
    set(&mut r.hosts, host_bit(&key(dst)));
    for p in ports {
        r.new_flows += 1;
        r.syn += 1;
        r.bytes += 44;
        set(&mut r.ports, port_bit(p));
    }
    r.refused = r.new_flows - replies;
    r
}

/// The next verdict on this detector's topic for the gateway, verified against the
/// bus CA as signed by this detector.
async fn signed_verdict(sub: &mut Subscription<RawPayload>, verifier: &Verifier) -> Verdict {
    let r = within("verdict", sub.recv()).await;
    assert_eq!(r.topic, topic::verdicts(GW, DET));
    let Signed { message, signer } = verifier
        .verify::<Verdict>(&r.message.0)
        .unwrap_or_else(|e| panic!("the verdict does not verify: {e}"));
    assert_eq!(signer.as_str(), DET);
    message
}

/// Publishes `b` (QoS 0, as a gateway does) every 200 ms, with a fresh sequence
/// number, until `stop` is dropped: the first copies may reach the broker before
/// the detector's subscription does.
fn keep_publishing(
    gw: BusClient,
    mut b: EvidenceBatch,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        loop {
            b.sent_at_ms = now_ms();
            gw.publish(
                &topic::evidence(GW, b.partition),
                &b,
                PublishOptions::best_effort(),
            )
            .await
            .unwrap();
            b.seq += 1;
            tokio::select! {
                _ = &mut rx => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    (tx, h)
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
