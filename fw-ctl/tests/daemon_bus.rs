//! The daemon against a real Mosquitto with mutual TLS (`tad_bus::testing`):
//! flow records exported with short IPFIX timeouts from real traffic between
//! namespaces; verdicts applied to the block map and acked; malformed, untrusted
//! and allowlisted verdicts rejected and counted while the daemon keeps running;
//! the broker stopped mid-stream and restarted: enforcement goes on, no block is
//! lost, queued records are delivered. Needs root and the `mosquitto` package.
//!
//! The program is loaded in the gateway namespace; the daemon runs in the root
//! namespace, where the test broker listens on 127.0.0.1 (it only needs the pins).

mod ctl;

use std::time::Duration;

use bytes::Bytes;
use ctl::*;
use fw_common::{counters::Reason, filter::BlockReason};
use fw_ctl::{daemon::DaemonStatus, lists::Origin, state::State};
use tad_bus::{BusClient, PublishOptions, QoS, Subscription, testing::TestBroker};
use tad_wire::{
    Ack, Action, Command, CountersSnapshot, EndReason, FlowBatch, FlowRecord, NodeStatus, Outcome,
    SCHEMA_VERSION, Verdict, topic,
};

struct Detector {
    bus: BusClient,
    flows: Subscription<FlowBatch>,
    acks: Subscription<Ack>,
}

async fn detector(broker: &TestBroker) -> Detector {
    let mut b = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let flows = b.subscribe::<FlowBatch>(&topic::flows("gateway-1", 0), QoS::AtLeastOnce);
    let acks = b.subscribe::<Ack>(&topic::acks("gateway-1"), QoS::AtLeastOnce);
    let bus = b.connect().await.expect("detector connects");
    Detector { bus, flows, acks }
}

fn verdict(id: &str, target: &str) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: "detector-1".parse().unwrap(),
        issued_at_ms: 0,
        action: Action::Quarantine,
        target: target.parse().unwrap(),
        ttl_s: Some(600),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.95,
        alert_id: None,
        observe_only: false,
    }
}

impl Detector {
    async fn send(&self, v: &Verdict) {
        self.bus
            .publish(
                &topic::verdicts("gateway-1"),
                v,
                PublishOptions::verdict(60),
            )
            .await
            .unwrap();
    }

    async fn ack(&mut self, id: &str) -> Ack {
        let wait = async {
            loop {
                let a = self
                    .acks
                    .recv()
                    .await
                    .expect("ack subscription open")
                    .message;
                if a.id == id {
                    return a;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .unwrap_or_else(|_| panic!("no ack for {id}"))
    }

    /// The first exported record from `src` (ICMP), waiting up to `limit`.
    async fn record_from(&mut self, src: &str, limit: Duration) -> (FlowBatch, FlowRecord) {
        let wait = async {
            loop {
                let b = self
                    .flows
                    .recv()
                    .await
                    .expect("flow subscription open")
                    .message;
                if let Some(r) = b
                    .records
                    .iter()
                    .find(|r| r.src.to_string() == src && r.proto == 1)
                {
                    let r = r.clone();
                    return (b, r);
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| panic!("no flow record from {src}"))
    }
}

fn bus_table(broker: &TestBroker) -> String {
    let mut c = broker.config("gateway-1").unwrap();
    c.reconnect_min_ms = 200;
    c.reconnect_max_ms = 1000;
    c.keep_alive_s = 5;
    format!("[bus]\n{}", toml::to_string(&c).unwrap())
}

fn status(ctl: &Ctl) -> Option<DaemonStatus> {
    DaemonStatus::load(&ctl.status_path()).ok()
}

fn start(ctl: &Ctl, cfg: &str) -> Proc {
    ctl.json(&["--config", cfg, "load"]);
    let d = Proc(Some(ctl.spawn(&["--config", cfg, "run"], false)));
    wait_for(Duration::from_secs(20), || {
        status(ctl).filter(|s| s.bus == "connected")
    })
    .unwrap_or_else(|| panic!("daemon did not connect: {}", ctl.log()));
    d
}

async fn ping(net: &Net, src: &'static str, n: u32) -> bool {
    let peer = net.peer.clone();
    tokio::task::spawn_blocking(move || ping_from(&peer, src, n))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_verdicts_and_acks_through_a_real_broker() {
    let net = Net::new("bus");
    let ctl = Ctl::new("bus", &net.gw);
    let broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(&ctl, Some(&bus_table(&broker)), "");
    let cfg = cfg.to_str().unwrap();
    let mut det = detector(&broker).await;
    let mut d = start(&ctl, cfg);
    let [a2, a3, a4] = PEER_ADDRS;
    // The dashboard reads counters and status (the ACL keeps detectors off them).
    let mut db = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut counters =
        db.subscribe::<CountersSnapshot>(&topic::counters("gateway-1"), QoS::AtMostOnce);
    let mut gw_status =
        db.subscribe::<NodeStatus>(&topic::gateway_status("gateway-1"), QoS::AtLeastOnce);
    let dash = db.connect().await.expect("dashboard connects");

    // Flow export: three pings, then the flow idles out (1 s) and is exported.
    assert!(ping(&net, a2, 3).await);
    let (batch, r) = det.record_from(a2, Duration::from_secs(20)).await;
    assert_eq!(batch.gateway_id, "gateway-1");
    assert_eq!(batch.partition, 0);
    assert_eq!(r.dst.to_string(), GW_ADDR);
    assert_eq!(r.end_reason, EndReason::IdleTimeout);
    assert_eq!(r.fwd.packets, 3, "every echo request counted: {r:?}");
    assert_eq!(r.fwd.bytes, 3 * 84);
    assert!(r.duration_us >= 300_000, "three pings 0.2 s apart: {r:?}");

    // A verdict: map updated, acked.
    det.send(&verdict("v-1", &format!("{a3}/32"))).await;
    let ack = det.ack("v-1").await;
    assert_eq!(
        (ack.outcome, ack.gateway_id.as_str()),
        (Outcome::Applied, "gateway-1"),
        "{ack:?}"
    );
    assert!(ack.error.is_none());
    eprintln!(
        "verdict v-1: receipt to map update (state file written) {} µs",
        ack.apply_us
    );
    let b = ctl
        .block_of(&format!("{a3}/32"))
        .expect("verdict in the block map");
    assert_eq!(
        (b["origin"].as_str(), b["reason"].as_str()),
        (Some("detector"), Some("port_scan"))
    );
    assert_eq!(
        (b["text"].as_str(), b["by"].as_str()),
        (Some("portscan.vertical"), Some("detector-1"))
    );
    assert!(
        !ping(&net, a3, 1).await,
        "the quarantined source is dropped"
    );

    // Rejections: each acked as rejected (when it has an id), nothing changes.
    det.bus
        .publish_bytes(
            &topic::verdicts("gateway-1"),
            Bytes::from_static(b"{not json"),
            PublishOptions::reliable(),
        )
        .await
        .unwrap();
    let mut bad_version = verdict("v-bad-version", &format!("{a4}/32"));
    bad_version.v = 9;
    det.send(&bad_version).await;
    let mut untrusted = verdict("v-untrusted", &format!("{a4}/32"));
    untrusted.detector_id = "detector-2".parse().unwrap();
    det.send(&untrusted).await;
    det.send(&verdict("v-mgmt", "192.0.2.5/32")).await;
    let mut too_long = verdict("v-ttl", &format!("{a4}/32"));
    too_long.ttl_s = Some(7200);
    det.send(&too_long).await;
    for id in ["v-bad-version", "v-untrusted", "v-mgmt", "v-ttl"] {
        let a = det.ack(id).await;
        assert_eq!(a.outcome, Outcome::Rejected, "{a:?}");
        assert!(a.error.is_some());
    }
    assert!(ctl.block_of(&format!("{a4}/32")).is_none());
    assert!(ctl.block_of("192.0.2.5/32").is_none());
    assert!(d.running(), "the daemon keeps running");

    // ...and still applies a good one afterwards.
    let mut ok = verdict("v-2", &format!("{a4}/32"));
    ok.action = Action::Block;
    ok.ttl_s = None;
    det.send(&ok).await;
    assert_eq!(det.ack("v-2").await.outcome, Outcome::Applied);
    let left = ctl.block_of(&format!("{a4}/32")).unwrap()["expires_in_s"]
        .as_f64()
        .unwrap();
    assert!(
        left > 3000.0 && left <= 3600.0,
        "default block TTL applied: {left}"
    );

    let st = wait_for(Duration::from_secs(5), || {
        status(&ctl)
            .filter(|s| s.verdicts.verdicts_applied >= 2 && s.verdicts.verdicts_rejected >= 5)
    })
    .unwrap_or_else(|| panic!("rejections counted: {:?}", status(&ctl)));
    assert!(st.verdicts.malformed >= 2, "{:?}", st.verdicts);
    assert!(st.records_published_total >= 1);

    // A dashboard command: unblock, acked, gone from the map.
    let cmd = Command {
        v: SCHEMA_VERSION,
        id: "c-1".into(),
        operator: "alice".into(),
        issued_at_ms: 0,
        action: Action::Unblock,
        target: format!("{a4}/32").parse().unwrap(),
        ttl_s: None,
        reason: Some("false positive".into()),
    };
    dash.publish(
        &topic::commands("gateway-1"),
        &cmd,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    assert_eq!(det.ack("c-1").await.outcome, Outcome::Applied);
    assert!(ctl.block_of(&format!("{a4}/32")).is_none());
    let mut block_again = cmd.clone();
    block_again.id = "c-2".into();
    block_again.action = Action::Block;
    block_again.ttl_s = Some(120);
    dash.publish(
        &topic::commands("gateway-1"),
        &block_again,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    assert_eq!(det.ack("c-2").await.outcome, Outcome::Applied);
    let b = ctl
        .block_of(&format!("{a4}/32"))
        .expect("blocked by the command");
    assert_eq!(
        (b["origin"].as_str(), b["text"].as_str()),
        (Some("manual"), Some("false positive"))
    );

    // Counters every second and the retained online status.
    // Snapshots queued since the start come first; wait for one with the drops.
    let snap = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = counters
                .recv()
                .await
                .expect("counters subscription open")
                .message;
            if s.counters
                .iter()
                .any(|c| c.reason == Reason::Blocklist && c.packets > 0)
            {
                return s;
            }
        }
    })
    .await
    .expect("a counters snapshot counting the dropped pings");
    assert_eq!(snap.counters.len(), 10);
    assert_eq!(snap.mode, tad_wire::Mode::Enforce);
    assert!(
        snap.maps
            .iter()
            .any(|m| m.name == "BLOCK_V4" && m.max_entries > 0)
    );
    let ns = tokio::time::timeout(Duration::from_secs(10), gw_status.recv())
        .await
        .expect("a gateway status")
        .unwrap();
    assert!(ns.retained || ns.message.online);
    assert!(ns.message.online);
    assert_eq!(ns.message.interfaces[0].name, "gw0");

    // kill -9 right after the acks: the blocks are in the state file already.
    d.signal(libc::SIGKILL);
    d.wait(Duration::from_secs(5));
    let state = State::load(&ctl.state_path()).unwrap();
    for (a, origin) in [(a3, Origin::Detector), (a4, Origin::Manual)] {
        let rec = &state.blocks[&format!("{a}/32").parse().unwrap()];
        assert_eq!(rec.origin, origin);
    }
    assert!(!ping(&net, a3, 1).await, "still filtering after kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_block_and_delivers_queued_records() {
    let net = Net::new("outage");
    let ctl = Ctl::new("outage", &net.gw);
    let mut broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(&ctl, Some(&bus_table(&broker)), "");
    let cfg = cfg.to_str().unwrap();
    let mut det = detector(&broker).await;
    let mut d = start(&ctl, cfg);
    let [a2, a3, _] = PEER_ADDRS;

    det.send(&verdict("v-1", &format!("{a3}/32"))).await;
    assert_eq!(det.ack("v-1").await.outcome, Outcome::Applied);

    broker.stop();
    wait_for(Duration::from_secs(15), || {
        status(&ctl).filter(|s| s.bus != "connected")
    })
    .expect("the daemon notices the broker is gone");
    assert!(
        !ping(&net, a3, 1).await,
        "enforcement goes on without the broker"
    );

    // Traffic while the broker is down: its record waits in the queue.
    assert!(ping(&net, a2, 2).await);
    let st = wait_for(Duration::from_secs(15), || {
        status(&ctl).filter(|s| s.flow_queue_len >= 1)
    })
    .unwrap_or_else(|| {
        panic!(
            "record queued while disconnected: {:?}\n{}",
            status(&ctl),
            ctl.log()
        )
    });
    assert_eq!(st.records_dropped_total, 0);
    assert!(d.running());

    broker.restart().expect("broker restarts");
    let (_, r) = det.record_from(a2, Duration::from_secs(30)).await;
    assert_eq!(r.fwd.packets, 2);
    wait_for(Duration::from_secs(10), || {
        status(&ctl).filter(|s| s.flow_queue_len == 0 && s.bus == "connected")
    })
    .expect("queue drained after reconnecting");
    assert!(ctl.block_of(&format!("{a3}/32")).is_some(), "no block lost");
    assert!(!ping(&net, a3, 1).await);

    // Verdicts work again after the reconnect.
    det.send(&verdict("v-2", &format!("{a2}/32"))).await;
    assert_eq!(det.ack("v-2").await.outcome, Outcome::Applied);

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", ctl.log());
    assert!(
        ctl.pin_dir().join("fw").exists(),
        "program left pinned after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_oldest_records_and_reports_them() {
    let net = Net::new("dropq");
    let ctl = Ctl::new("dropq", &net.gw);
    let mut broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(&ctl, Some(&bus_table(&broker)), "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "poll_interval_ms = 200",
            "poll_interval_ms = 200\nqueue_capacity = 1",
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut det = detector(&broker).await;
    let _d = start(&ctl, cfg);
    let [a2, _, a4] = PEER_ADDRS;

    broker.stop();
    wait_for(Duration::from_secs(15), || {
        status(&ctl).filter(|s| s.bus != "connected")
    })
    .expect("the daemon notices the broker is gone");
    // Two flows end while the broker is down; the queue holds one record.
    assert!(ping(&net, a2, 1).await);
    wait_for(Duration::from_secs(15), || {
        status(&ctl).filter(|s| s.flow_queue_len == 1)
    })
    .expect("first record queued");
    assert!(ping(&net, a4, 1).await);
    let st = wait_for(Duration::from_secs(15), || {
        status(&ctl).filter(|s| s.records_dropped_total == 1)
    })
    .unwrap_or_else(|| panic!("the older record dropped and counted: {:?}", status(&ctl)));
    assert_eq!(st.flow_queue_len, 1);

    broker.restart().expect("broker restarts");
    let (batch, r) = det.record_from(a4, Duration::from_secs(30)).await;
    assert_eq!(r.fwd.packets, 1);
    assert_eq!(
        batch.dropped_records, 1,
        "the batch reports the dropped record"
    );
    assert!(
        !batch.records.iter().any(|r| r.src.to_string() == a2),
        "the oldest record was the one dropped"
    );
}
