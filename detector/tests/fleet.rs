//! Fleet behaviour through a real Mosquitto with mutual TLS (tad_bus's
//! TestBroker): two detectors with `[partitions] live = true` share the
//! partitions by rendezvous hashing over their retained statuses, a scanner in
//! one detector's partition is blocked by that detector alone, and when it stops
//! the other takes its partitions over and blocks the next scanner there; a
//! gateway that publishes to another partition count stops a detector at start.

mod common;

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use common::{GW, keep_publishing, next_verdict, record, within};
use detector::{
    config::Config,
    engine::Engine,
    fleet,
    service::{self, ServiceError, ServiceStats},
};
use tad_bus::{BusClient, QoS, RawPayload, Subscription, Verifier, testing::TestBroker};
use tad_wire::{
    Action, EvidenceBatch, NodeStatus, Role, SCHEMA_VERSION, now_ms, partition_of, topic,
};
use tokio::{sync::oneshot, task::JoinHandle};

const COUNT: u16 = 4;
const DETS: [&str; 2] = ["detector-1", "detector-2"];

type Running = (
    oneshot::Sender<()>,
    JoinHandle<Result<ServiceStats, ServiceError>>,
);

fn config(broker: &TestBroker, id: &str, count: u16, live: bool) -> Config {
    let mut cfg = Config::default();
    cfg.detector.id = id.parse().unwrap();
    cfg.bus = broker.config(id).unwrap();
    cfg.partitions.count = count;
    cfg.partitions.live = live;
    cfg.validate().unwrap();
    cfg
}

/// Connects and serves detector `cfg` until the returned sender fires (or is
/// dropped).
async fn start(cfg: Config) -> Running {
    let signer = service::signer(&cfg).unwrap();
    let mut b = BusClient::builder(cfg.bus_config()).unwrap();
    let inputs = service::subscribe(&mut b, &cfg);
    let bus = b.connect().await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let h = tokio::spawn(service::serve(
        Engine::new(cfg, None),
        bus,
        signer,
        inputs,
        async {
            let _ = rx.await;
        },
    ));
    (tx, h)
}

/// Reads detector statuses until `want` holds for the last one of each id.
async fn statuses_until(
    sub: &mut Subscription<NodeStatus>,
    seen: &mut BTreeMap<String, NodeStatus>,
    what: &str,
    want: impl Fn(&BTreeMap<String, NodeStatus>) -> bool,
) {
    while !want(seen) {
        let r = within(what, sub.recv()).await;
        seen.insert(r.message.node_id.to_string(), r.message);
    }
}

fn taken(seen: &BTreeMap<String, NodeStatus>, id: &str) -> Option<Vec<u16>> {
    seen.get(id).filter(|s| s.online).map(|s| s.taken.clone())
}

/// A scanner address in 203.0.113.0/24 whose partition (of `COUNT`) is `p`,
/// skipping `not`.
fn scanner_in(p: u16, not: &[IpAddr]) -> IpAddr {
    (1..=254u8)
        .map(|i| IpAddr::from([203, 0, 113, i]))
        .find(|a| partition_of(*a, COUNT) == p && !not.contains(a))
        .expect("an address of the partition in 203.0.113.0/24")
}

fn scan(src: IpAddr, seq: u64) -> EvidenceBatch {
    EvidenceBatch {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        seq,
        partition: partition_of(src, COUNT),
        sent_at_ms: now_ms(),
        records: vec![record(&src.to_string(), "192.0.2.20", 1000..1040, 0)],
        events: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_detectors_share_partitions_and_take_over_a_stopped_ones() {
    let broker = TestBroker::start_with(&[GW, DETS[0], DETS[1], "dashboard"]).unwrap();
    let mut watch_b = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut statuses =
        watch_b.subscribe::<NodeStatus>(&topic::detector_status_filter(), QoS::AtLeastOnce);
    let watch = watch_b.connect().await.unwrap();
    let mut gw_b = BusClient::builder(broker.config(GW).unwrap()).unwrap();
    let mut verdicts = gw_b.subscribe::<RawPayload>(&topic::verdicts_filter(GW), QoS::AtLeastOnce);
    let verifier = Verifier::from_bus_config(&broker.config(GW).unwrap()).unwrap();
    let gw = gw_b.connect().await.unwrap();

    let (stop1, det1) = start(config(&broker, DETS[0], COUNT, true)).await;
    let (stop2, det2) = start(config(&broker, DETS[1], COUNT, true)).await;

    // Both advertise the share rendezvous hashing gives them, and together
    // they take every partition once.
    let share = |me: &str| -> Vec<u16> {
        let other: Vec<&str> = DETS.iter().copied().filter(|d| *d != me).collect();
        fleet::owned(me, &other, COUNT).into_iter().collect()
    };
    let mut seen = BTreeMap::new();
    statuses_until(&mut statuses, &mut seen, "shared partitions", |s| {
        DETS.iter().all(|d| taken(s, d) == Some(share(d)))
    })
    .await;
    let (mine1, mine2) = (share(DETS[0]), share(DETS[1]));
    assert!(
        !mine1.is_empty() && !mine2.is_empty(),
        "{mine1:?} / {mine2:?}"
    );
    let mut all: Vec<u16> = mine1.iter().chain(&mine2).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..COUNT).collect::<Vec<_>>());

    // A scanner in one of detector-2's partitions: detector-2 alone blocks it.
    let p = mine2[0];
    let a = scanner_in(p, &[]);
    let (stop_pub, publisher) = keep_publishing(gw.clone(), scan(a, 0));
    let (v, signer) = next_verdict(&mut verdicts, &verifier).await;
    let _ = stop_pub.send(());
    publisher.await.unwrap();
    assert_eq!(
        (signer.as_str(), v.action, v.target.to_string()),
        (DETS[1], Action::Quarantine, format!("{a}/32"))
    );

    // detector-2 stops cleanly (its retained status goes offline): detector-1
    // takes every partition and blocks the next scanner of partition `p`.
    let _ = stop2.send(());
    let stats2 = det2.await.unwrap().unwrap();
    statuses_until(&mut statuses, &mut seen, "takeover", |s| {
        taken(s, DETS[0]) == Some((0..COUNT).collect())
    })
    .await;
    let b = scanner_in(p, &[a]);
    let (stop_pub, publisher) = keep_publishing(gw.clone(), scan(b, 1_000));
    let (v, signer) = next_verdict(&mut verdicts, &verifier).await;
    let _ = stop_pub.send(());
    publisher.await.unwrap();
    assert_eq!(
        (signer.as_str(), v.action, v.target.to_string()),
        (DETS[0], Action::Quarantine, format!("{b}/32"))
    );

    let _ = stop1.send(());
    let stats1 = det1.await.unwrap().unwrap();
    assert_eq!(stats2.engine.verdicts, 1, "detector-2: scanner {a}");
    assert_eq!(stats1.engine.verdicts, 1, "detector-1: scanner {b} only");
    assert!(
        stats1.engine.foreign_evidence > 0,
        "detector-1 ignored {a}'s evidence while detector-2 owned partition {p}"
    );
    assert!(stats1.partition_changes >= 2, "{stats1:?}");
    tokio::time::timeout(Duration::from_millis(500), verdicts.recv())
        .await
        .map(|r| panic!("a second verdict: {:?}", r.map(|r| r.topic)))
        .unwrap_or(());
    gw.shutdown(Duration::from_secs(2)).await.unwrap();
    watch.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_another_partition_count_stops_the_detector() {
    let broker = TestBroker::start_with(&[GW, DETS[0]]).unwrap();
    let mut gw_b = BusClient::builder(broker.config(GW).unwrap()).unwrap();
    gw_b.status(gateway_status(GW, 8));
    let gw = gw_b.connect().await.unwrap();

    let (_stop, det) = start(config(&broker, DETS[0], COUNT, false)).await;
    let r = tokio::time::timeout(Duration::from_secs(20), det)
        .await
        .expect("the detector stops on the gateway's retained status")
        .unwrap();
    match r {
        Err(ServiceError::PartitionCount(e)) => assert_eq!(
            (e.gateway.as_str(), e.gateway_count, e.detector_count),
            (GW, 8, COUNT)
        ),
        other => panic!("expected a partition count error, got {other:?}"),
    }
    gw.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A gateway's retained online status, as fw-ctl's daemon publishes it.
fn gateway_status(id: &str, partitions: u16) -> NodeStatus {
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: id.parse().unwrap(),
        role: Role::Gateway,
        online: true,
        at_ms: now_ms(),
        mode: None,
        interfaces: Vec::new(),
        maps: Vec::new(),
        version: "test".into(),
        partitions: Some(partitions),
        taken: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_on_all_sends_a_block_seen_at_one_gateway_to_every_online_one() {
    const GW2: &str = "gateway-2";
    let broker = TestBroker::start_with(&[GW, GW2, DETS[0]]).unwrap();
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for id in [GW, GW2] {
        let mut b = BusClient::builder(broker.config(id).unwrap()).unwrap();
        b.status(gateway_status(id, 1));
        subs.push(b.subscribe::<RawPayload>(&topic::verdicts_filter(id), QoS::AtLeastOnce));
        clients.push(b.connect().await.unwrap());
    }
    let mut cfg = config(&broker, DETS[0], 1, false);
    cfg.fleet.block_on = detector::fleet::BlockOn::All;
    let (stop, det) = start(cfg).await;

    // Evidence of a scanner reaches the detector from gateway-1 only.
    let a: IpAddr = "203.0.113.77".parse().unwrap();
    let mut batch = scan(a, 0);
    batch.partition = 0;
    let (stop_pub, publisher) = keep_publishing(clients[0].clone(), batch);
    let mut got = Vec::new();
    for (id, sub) in [GW, GW2].into_iter().zip(subs.iter_mut()) {
        let r = within("verdict", sub.recv()).await;
        assert_eq!(r.topic, topic::verdicts(id, DETS[0]));
        let v = Verifier::from_bus_config(&broker.config(id).unwrap())
            .unwrap()
            .verify::<tad_wire::Verdict>(&r.message.0)
            .unwrap_or_else(|e| panic!("{id}: the verdict does not verify: {e}"));
        assert_eq!(v.signer.as_str(), DETS[0]);
        got.push((v.message.action, v.message.target.to_string(), v.message.id));
    }
    let _ = stop_pub.send(());
    publisher.await.unwrap();
    assert_eq!(got[0], got[1], "the same verdict at both gateways");
    assert_eq!(
        (got[0].0, got[0].1.as_str()),
        (Action::Quarantine, format!("{a}/32").as_str())
    );
    let _ = stop.send(());
    let stats = det.await.unwrap().unwrap();
    assert_eq!(stats.engine.verdicts, 1, "one verdict, published twice");
    for c in clients {
        c.shutdown(Duration::from_secs(2)).await.unwrap();
    }
}
