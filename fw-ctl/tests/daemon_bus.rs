//! The daemon against a real Mosquitto with mutual TLS (`tad_bus::testing`):
//! flow records exported with short IPFIX timeouts from real traffic between
//! namespaces; signed verdicts and commands applied to the block map and acked;
//! malformed, unsigned, tampered, spoofed, untrusted and allowlisted ones refused,
//! counted by reason and changing no map while the daemon keeps running; the
//! broker's ACL keeping one detector off another's topic; the enforced state
//! (blocks from the CLI, a feed, expiry) published as a retained snapshot plus
//! deltas; `/metrics` and `/health`; the broker stopped mid-stream and restarted:
//! enforcement goes on, no block is lost, queued records are delivered. Needs root
//! and the `mosquitto` package.
//!
//! The program is loaded in the gateway namespace; the daemon runs in the root
//! namespace, where the test broker listens on 127.0.0.1 (it only needs the pins).

mod ctl;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use ctl::*;
use fw_common::{counters::Reason, filter::BlockReason};
use fw_ctl::{daemon::DaemonStatus, lists::Origin, state::State};
use tad_bus::{BusClient, PublishOptions, QoS, Signer, Subscription, testing::TestBroker};
use tad_wire::{
    Ack, Action, BlockOrigin, Command, CountersSnapshot, EndReason, FlowBatch, FlowRecord,
    GatewayState, GatewayStateDelta, NodeStatus, Outcome, RefusalReason, RemovalCause,
    SCHEMA_VERSION, Verdict, topic,
};

struct Detector {
    bus: BusClient,
    signer: Signer,
    flows: Subscription<FlowBatch>,
    acks: Subscription<Ack>,
}

async fn detector(broker: &TestBroker) -> Detector {
    let cfg = broker.config("detector-1").unwrap();
    let signer = Signer::from_bus_config(&cfg).unwrap();
    let mut b = BusClient::builder(cfg).unwrap();
    let flows = b.subscribe::<FlowBatch>(&topic::flows("gateway-1", 0), QoS::AtLeastOnce);
    let acks = b.subscribe::<Ack>(&topic::acks("gateway-1"), QoS::AtLeastOnce);
    let bus = b.connect().await.expect("detector connects");
    Detector {
        bus,
        signer,
        flows,
        acks,
    }
}

/// A client that only publishes (detector-2, dashboard-2, ...), with its signer.
async fn publisher(broker: &TestBroker, id: &str) -> (BusClient, Signer) {
    let cfg = broker.config(id).unwrap();
    let signer = Signer::from_bus_config(&cfg).unwrap();
    let bus = BusClient::builder(cfg)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{id} connects: {e}"));
    (bus, signer)
}

fn now_ms() -> u64 {
    tad_wire::now_ms()
}

fn verdict(id: &str, target: &str) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: "detector-1".parse().unwrap(),
        issued_at_ms: now_ms(),
        action: Action::Quarantine,
        target: target.parse().unwrap(),
        ttl_s: Some(600),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.95,
        alert_id: None,
        observe_only: false,
        port: None,
    }
}

fn command(id: &str, action: Action, target: &str) -> Command {
    Command {
        v: SCHEMA_VERSION,
        id: id.into(),
        operator: "alice".into(),
        issued_at_ms: now_ms(),
        action,
        target: target.parse().unwrap(),
        ttl_s: None,
        reason: Some("false positive".into()),
        port: None,
    }
}

/// Replaces the JWS payload with `f` of it, keeping header and signature.
fn tamper(jws: &[u8], f: impl Fn(String) -> String) -> Bytes {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8(jws.to_vec()).unwrap();
    let parts: Vec<&str> = text.split('.').collect();
    let body = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    Bytes::from(format!("{}.{}.{}", parts[0], b64.encode(f(body)), parts[2]))
}

impl Detector {
    /// Publishes a verdict signed by detector-1 on detector-1's verdict topic.
    async fn send(&self, v: &Verdict) {
        self.bus
            .publish_signed(
                &topic::verdicts("gateway-1", "detector-1"),
                &self.signer,
                v,
                PublishOptions::verdict(60),
            )
            .await
            .unwrap();
    }

    /// Publishes raw bytes on detector-1's verdict topic.
    async fn send_raw(&self, payload: Bytes) {
        self.bus
            .publish_bytes(
                &topic::verdicts("gateway-1", "detector-1"),
                payload,
                PublishOptions::reliable(),
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

    /// Every ack up to and including the one for `id`.
    async fn acks_until(&mut self, id: &str) -> Vec<Ack> {
        let wait = async {
            let mut seen = Vec::new();
            loop {
                let a = self
                    .acks
                    .recv()
                    .await
                    .expect("ack subscription open")
                    .message;
                let last = a.id == id;
                seen.push(a);
                if last {
                    return seen;
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

fn refusals(st: &DaemonStatus) -> BTreeMap<RefusalReason, u64> {
    st.verdicts.refusals.clone()
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
    let dash_cfg = broker.config("dashboard").unwrap();
    let dash_signer = Signer::from_bus_config(&dash_cfg).unwrap();
    let mut db = BusClient::builder(dash_cfg).unwrap();
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

    // A signed verdict: map updated, acked.
    det.send(&verdict("v-1", &format!("{a3}/32"))).await;
    let ack = det.ack("v-1").await;
    assert_eq!(
        (ack.outcome, ack.gateway_id.as_str()),
        (Outcome::Applied, "gateway-1"),
        "{ack:?}"
    );
    assert!(ack.error.is_none());
    eprintln!(
        "verdict v-1: receipt to map update (signature verified, state file written) {} µs",
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

    // Refusals: each acked as rejected (when it has an id) naming the reason,
    // counted by reason, nothing changes.
    let target = format!("{a4}/32");
    det.send_raw(Bytes::from_static(b"{not json")).await;
    let mut bad_version = verdict("v-bad-version", &target);
    bad_version.v = 9;
    det.send(&bad_version).await;
    // detector-1 signs a verdict in detector-2's name.
    let mut names_other = verdict("v-names-other", &target);
    names_other.detector_id = "detector-2".parse().unwrap();
    det.send(&names_other).await;
    det.send(&verdict("v-mgmt", "192.0.2.5/32")).await;
    let mut too_long = verdict("v-ttl", &target);
    too_long.ttl_s = Some(7200);
    det.send(&too_long).await;
    // With detector-1's valid client certificate: a tampered signature (the
    // target changed after signing) and an unsigned verdict.
    let signed = det.signer.sign(&verdict("v-tampered", "198.51.100.99/32"));
    det.send_raw(tamper(&signed, |b| b.replace("198.51.100.99", a4)))
        .await;
    det.send_raw(Bytes::from(tad_wire::encode(&verdict(
        "v-unsigned",
        &target,
    ))))
    .await;
    // detector-2 (not trusted) on its own topic, naming detector-1.
    let (det2, det2_signer) = publisher(&broker, "detector-2").await;
    det2.publish_signed(
        &topic::verdicts("gateway-1", "detector-2"),
        &det2_signer,
        &verdict("v-spoof", &target),
        PublishOptions::verdict(60),
    )
    .await
    .unwrap();
    for (id, reason) in [
        ("v-bad-version", "malformed"),
        ("v-names-other", "identity_mismatch"),
        ("v-mgmt", "allowlisted"),
        ("v-ttl", "ttl"),
        ("v-tampered", "bad_signature"),
        ("v-unsigned", "bad_signature"),
        ("v-spoof", "identity_mismatch"),
    ] {
        let a = det.ack(id).await;
        assert_eq!(a.outcome, Outcome::Rejected, "{a:?}");
        let err = a.error.unwrap_or_default();
        assert!(err.starts_with(&format!("{reason}: ")), "{id}: {err}");
    }
    // detector-2 on detector-1's topic: the broker drops it, the gateway never
    // sees it (no ack before the marker that follows it, no refusal counted).
    det2.publish_signed(
        &topic::verdicts("gateway-1", "detector-1"),
        &det2_signer,
        &verdict("v-foreign-topic", &target),
        PublishOptions::verdict(60),
    )
    .await
    .unwrap();
    det.send(&verdict("v-marker", "198.51.100.77/32")).await;
    let acks = det.acks_until("v-marker").await;
    assert!(
        !acks.iter().any(|a| a.id == "v-foreign-topic"),
        "detector-2's publish on detector-1's topic arrived: {acks:?}"
    );
    assert_eq!(acks.last().unwrap().outcome, Outcome::Applied);
    assert!(
        ctl.block_of(&target).is_none(),
        "no refused verdict blocked"
    );
    assert!(ctl.block_of("192.0.2.5/32").is_none());
    assert!(d.running(), "the daemon keeps running");

    // ...and still applies a good one afterwards.
    let mut ok = verdict("v-2", &target);
    ok.action = Action::Block;
    ok.ttl_s = None;
    det.send(&ok).await;
    assert_eq!(det.ack("v-2").await.outcome, Outcome::Applied);
    let left = ctl.block_of(&target).unwrap()["expires_in_s"]
        .as_f64()
        .unwrap();
    assert!(
        left > 3000.0 && left <= 3600.0,
        "default block TTL applied: {left}"
    );

    let st = wait_for(Duration::from_secs(5), || {
        status(&ctl)
            .filter(|s| s.verdicts.verdicts_applied >= 3 && s.verdicts.verdicts_rejected >= 8)
    })
    .unwrap_or_else(|| panic!("rejections counted: {:?}", status(&ctl)));
    assert!(st.verdicts.malformed >= 2, "{:?}", st.verdicts);
    assert!(st.records_published_total >= 1);
    assert_eq!(
        refusals(&st),
        BTreeMap::from([
            (RefusalReason::Malformed, 1),
            // `{not json`, the tampered and the unsigned verdict.
            (RefusalReason::BadSignature, 3),
            (RefusalReason::IdentityMismatch, 2),
            (RefusalReason::Ttl, 1),
            (RefusalReason::Allowlisted, 1),
        ]),
        "{:?}",
        st.verdicts
    );

    // Dashboard commands, signed: unblock, acked, gone from the map.
    let cmd = command("c-1", Action::Unblock, &target);
    dash.publish_signed(
        &topic::commands("gateway-1", "dashboard"),
        &dash_signer,
        &cmd,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    assert_eq!(det.ack("c-1").await.outcome, Outcome::Applied);
    assert!(ctl.block_of(&target).is_none());
    let mut block_again = command("c-2", Action::Block, &target);
    block_again.ttl_s = Some(120);
    // dashboard-2 is not trusted: refused, while the same command from
    // `dashboard` works.
    let (dash2, dash2_signer) = publisher(&broker, "dashboard-2").await;
    let mut from_dash2 = block_again.clone();
    from_dash2.id = "c-dash2".into();
    dash2
        .publish_signed(
            &topic::commands("gateway-1", "dashboard-2"),
            &dash2_signer,
            &from_dash2,
            PublishOptions::reliable(),
        )
        .await
        .unwrap();
    let a = det.ack("c-dash2").await;
    assert_eq!(a.outcome, Outcome::Rejected, "{a:?}");
    assert!(
        a.error
            .as_deref()
            .unwrap_or("")
            .starts_with("untrusted_sender: "),
        "{a:?}"
    );
    assert!(
        ctl.block_of(&target).is_none(),
        "dashboard-2 blocked nothing"
    );
    // An unsigned command on the trusted dashboard's own topic.
    let mut unsigned = block_again.clone();
    unsigned.id = "c-unsigned".into();
    dash.publish(
        &topic::commands("gateway-1", "dashboard"),
        &unsigned,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    let a = det.ack("c-unsigned").await;
    assert!(
        a.error
            .as_deref()
            .unwrap_or("")
            .starts_with("bad_signature: "),
        "{a:?}"
    );
    assert!(ctl.block_of(&target).is_none());
    dash.publish_signed(
        &topic::commands("gateway-1", "dashboard"),
        &dash_signer,
        &block_again,
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    assert_eq!(det.ack("c-2").await.outcome, Outcome::Applied);
    let b = ctl.block_of(&target).expect("blocked by the command");
    assert_eq!(
        (b["origin"].as_str(), b["text"].as_str(), b["by"].as_str()),
        (
            Some("command"),
            Some("false positive"),
            Some("alice@dashboard")
        )
    );
    let st = wait_for(Duration::from_secs(5), || {
        status(&ctl).filter(|s| s.verdicts.commands_rejected >= 2)
    })
    .unwrap_or_else(|| panic!("command refusals counted: {:?}", status(&ctl)));
    assert_eq!(st.verdicts.commands_applied, 2);
    assert_eq!(
        st.verdicts.refusals.get(&RefusalReason::UntrustedSender),
        Some(&1)
    );
    assert_eq!(
        st.verdicts.refusals.get(&RefusalReason::BadSignature),
        Some(&4)
    );
    // `fw-ctl status --json` and its text show the refusals.
    let js = ctl.json(&["--config", cfg, "status"]);
    assert_eq!(
        js["daemon"]["verdicts"]["refusals"]["identity_mismatch"].as_u64(),
        Some(2),
        "{js}"
    );
    let text = ctl.run(&["--config", cfg, "status"]);
    assert!(
        text.stdout.contains("refusals: ") && text.stdout.contains("untrusted_sender 1"),
        "{}",
        text.stdout
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
    assert_eq!(
        snap.counters.len(),
        fw_common::counters::COUNTER_SLOTS as usize
    );
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
    for (a, origin) in [(a3, Origin::Detector), (a4, Origin::Command)] {
        let rec = &state.blocks[&format!("{a}/32").parse().unwrap()];
        assert_eq!(rec.origin, origin);
    }
    assert!(!ping(&net, a3, 1).await, "still filtering after kill -9");
}

/// A viewer's copy of the gateway state: the last snapshot with the deltas that
/// follow it applied (deltas arriving early are held until they fit).
struct Replica {
    snaps: Subscription<GatewayState>,
    deltas: Subscription<GatewayStateDelta>,
    state: Option<GatewayState>,
    early: BTreeMap<u64, GatewayStateDelta>,
    /// Every removal announced by a delta, in order of arrival.
    removed: Vec<(String, RemovalCause)>,
    /// Revision of the last snapshot received.
    snap_rev: u64,
}

impl Replica {
    fn settle(&mut self) {
        let Some(s) = &mut self.state else { return };
        self.early.retain(|rev, _| *rev > s.rev);
        while let Some(d) = self.early.remove(&(s.rev + 1)) {
            assert!(s.apply(&d));
        }
    }

    /// Handles one message (waits up to `limit`); false on timeout.
    async fn pump(&mut self, limit: Duration) -> bool {
        let got = tokio::time::timeout(limit, async {
            // Deltas first: a snapshot published after a delta must not overtake it.
            tokio::select! {
                biased;
                d = self.deltas.recv() => {
                    let d = d.expect("delta subscription open").message;
                    self.removed.extend(
                        d.removed
                            .iter()
                            .map(|r| (r.prefix.to_string(), r.cause)),
                    );
                    self.early.insert(d.rev, d);
                }
                s = self.snaps.recv() => {
                    let s = s.expect("state subscription open").message;
                    self.snap_rev = self.snap_rev.max(s.rev);
                    if self.state.as_ref().is_none_or(|cur| s.rev >= cur.rev) {
                        self.state = Some(s);
                    }
                }
            }
        })
        .await
        .is_ok();
        self.settle();
        got
    }

    /// Pumps until `f` holds for the state, up to `limit`; the time it took.
    async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        f: impl Fn(&GatewayState, &[(String, RemovalCause)]) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            if let Some(s) = &self.state
                && f(s, &self.removed)
            {
                return t0.elapsed();
            }
            let left = limit.saturating_sub(t0.elapsed());
            if left.is_zero() {
                panic!("{what}: not within {limit:?}; replica: {:#?}", self.state);
            }
            self.pump(left).await;
        }
    }
}

fn block_in<'a>(s: &'a GatewayState, prefix: &str) -> Option<&'a tad_wire::EnforcedBlock> {
    s.blocks.iter().find(|b| b.prefix.to_string() == prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_publishes_what_it_enforces() {
    let net = Net::new("pub");
    let ctl = Ctl::new("pub", &net.gw);
    let broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(
        &ctl,
        Some(&bus_table(&broker)),
        // Polled at the default 500 ms; snapshots every 1.5 s keep the test short.
        "[state]\nsnapshot_interval_ms = 1500\n",
    );
    let cfg = cfg.to_str().unwrap();
    let det = detector(&broker).await;
    let mut db = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let snaps = db.subscribe::<GatewayState>(&topic::gateway_state("gateway-1"), QoS::AtLeastOnce);
    let deltas = db
        .subscribe::<GatewayStateDelta>(&topic::gateway_state_delta("gateway-1"), QoS::AtLeastOnce);
    let _dash = db.connect().await.expect("dashboard connects");
    let mut d = start(&ctl, cfg);
    let mut r = Replica {
        snaps,
        deltas,
        state: None,
        early: BTreeMap::new(),
        removed: Vec::new(),
        snap_rev: 0,
    };
    let [a2, a3, _] = PEER_ADDRS;
    r.until("the first snapshot", Duration::from_secs(10), |s, _| {
        s.gateway_id == "gateway-1"
    })
    .await;
    {
        let s = r.state.as_ref().unwrap();
        assert!(s.blocks.is_empty(), "{s:?}");
        assert_eq!(s.mode, tad_wire::Mode::Enforce);
        assert!(
            s.allow
                .iter()
                .any(|a| a.prefix.to_string() == MGMT && a.origin == BlockOrigin::Config),
            "the management network is allowlisted: {:?}",
            s.allow
        );
    }

    // `fw-ctl block` on the router (maps + state file, no bus).
    let before = now_ms();
    ctl.json(&[
        "--config",
        cfg,
        "block",
        a2,
        "--ttl",
        "10m",
        "--reason",
        "ssh brute force",
    ]);
    let took = r
        .until("the CLI block", Duration::from_secs(2), |s, _| {
            block_in(s, &format!("{a2}/32")).is_some()
        })
        .await;
    eprintln!("fw-ctl block visible in the published state after {took:?}");
    let b = block_in(r.state.as_ref().unwrap(), &format!("{a2}/32"))
        .unwrap()
        .clone();
    assert_eq!(b.origin, BlockOrigin::Cli);
    assert_eq!(b.reason, BlockReason::Manual);
    assert_eq!(b.rule.as_deref(), Some("ssh brute force"));
    assert!(b.created_ms >= before.saturating_sub(1000), "{b:?}");
    let exp = b.expires_at_ms.expect("a 10 min TTL");
    assert!(
        exp > before + 590_000 && exp < now_ms() + 601_000,
        "expires in 10 min: {b:?}"
    );

    // A feed load, also on the router.
    let feed = ctl.dir.path().join("drop.txt");
    std::fs::write(&feed, "203.0.113.64/27 ; SBL1\n198.18.0.0/15\n").unwrap();
    ctl.json(&[
        "--config",
        cfg,
        "feed",
        "load",
        feed.to_str().unwrap(),
        "--ttl",
        "1h",
    ]);
    let took = r
        .until("the feed entries", Duration::from_secs(2), |s, _| {
            ["203.0.113.64/27", "198.18.0.0/15"]
                .iter()
                .all(|p| block_in(s, p).is_some_and(|b| b.origin == BlockOrigin::Feed))
        })
        .await;
    eprintln!("feed load visible in the published state after {took:?}");
    let fb = block_in(r.state.as_ref().unwrap(), "198.18.0.0/15").unwrap();
    assert_eq!(fb.reason, BlockReason::ThreatFeed);
    assert_eq!(
        fb.by.as_deref(),
        Some(format!("feed:{}", feed.display()).as_str())
    );

    // An unblock on the router: gone, with cause `removed`.
    ctl.json(&["--config", cfg, "unblock", "198.18.0.0/15"]);
    r.until("the unblock", Duration::from_secs(2), |s, removed| {
        block_in(s, "198.18.0.0/15").is_none()
            && removed.contains(&("198.18.0.0/15".to_string(), RemovalCause::Removed))
    })
    .await;

    // A verdict, and a refusal: both show (origin verdict, refusal counters).
    det.send(&verdict("v-pub", "198.51.100.50/32")).await;
    det.send_raw(Bytes::from_static(b"not signed")).await;
    r.until(
        "the verdict and the refusal",
        Duration::from_secs(5),
        |s, _| {
            block_in(s, "198.51.100.50/32").is_some_and(|b| {
                b.origin == BlockOrigin::Verdict && b.by.as_deref() == Some("detector-1")
            }) && s.refusals.get(&RefusalReason::BadSignature) == Some(&1)
        },
    )
    .await;

    // A 1 s block appears, then leaves with cause `expired`.
    ctl.json(&["--config", cfg, "block", a3, "--ttl", "1s"]);
    let p3 = format!("{a3}/32");
    r.until("the 1 s block", Duration::from_secs(2), |s, _| {
        block_in(s, &p3).is_some()
    })
    .await;
    let took = r
        .until(
            "the 1 s block's expiry",
            Duration::from_secs(4),
            |s, removed| {
                block_in(s, &p3).is_none() && removed.contains(&(p3.clone(), RemovalCause::Expired))
            },
        )
        .await;
    eprintln!("1 s block gone from the published state {took:?} after it was seen");

    // /metrics and /health from the running daemon.
    let http = status(&ctl)
        .and_then(|s| s.http_listen)
        .expect("the status file names the HTTP address");
    let (code, body) = http_get(&http, "/health");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            h["status"].as_str(),
            h["gateway_id"].as_str(),
            h["bus"].as_str()
        ),
        (Some("ok"), Some("gateway-1"), Some("connected")),
        "{h}"
    );
    assert_eq!(h["xdp_attached"][0]["name"], "gw0", "{h}");
    let (code, text) = http_get(&http, "/metrics");
    assert_eq!(code, 200);
    // Prometheus's own parser and linter accept it.
    if let Err(e) = tad_bus::testing::promtool_check(&text) {
        panic!("{e}\n{text}");
    }
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    };
    assert_eq!(sample("tad_gateway_blocks{origin=\"cli\"}"), 1.0);
    assert_eq!(sample("tad_gateway_blocks{origin=\"feed\"}"), 1.0);
    assert_eq!(sample("tad_gateway_blocks{origin=\"verdict\"}"), 1.0);
    assert_eq!(
        sample("tad_gateway_refusals_total{reason=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(
        sample("tad_gateway_messages_total{kind=\"verdict\",outcome=\"applied\"}"),
        1.0
    );
    assert_eq!(sample("tad_gateway_bus_connected"), 1.0);
    assert_eq!(sample("tad_gateway_mode{mode=\"enforce\"}"), 1.0);
    assert_eq!(sample("tad_gateway_xdp_attached"), 1.0);
    assert!(sample("tad_gateway_allow_entries") >= 1.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("not a sample: {line}"));
    }

    // Quiet now: the periodic snapshot catches up with the replica, and a fresh
    // viewer's retained snapshot equals the replica.
    let wait = Instant::now();
    while r.snap_rev < r.state.as_ref().unwrap().rev {
        let left = Duration::from_secs(10).saturating_sub(wait.elapsed());
        assert!(
            !left.is_zero(),
            "no snapshot at rev {}",
            r.state.as_ref().unwrap().rev
        );
        r.pump(left).await;
    }
    let mut fresh = BusClient::builder(broker.config("dashboard-2").unwrap()).unwrap();
    let mut retained =
        fresh.subscribe::<GatewayState>(&topic::gateway_state("gateway-1"), QoS::AtLeastOnce);
    let _fresh = fresh.connect().await.expect("second viewer connects");
    let snap = tokio::time::timeout(Duration::from_secs(5), retained.recv())
        .await
        .expect("a retained snapshot")
        .unwrap();
    assert!(snap.retained);
    assert_eq!(&snap.message, r.state.as_ref().unwrap());

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", ctl.log());
}

#[test]
fn a_bad_ca_file_is_a_start_up_error() {
    setup();
    let ctl = Ctl::new("badca", "none");
    let dir = ctl.dir.path();
    for f in ["gw.pem", "gw.key"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let missing = dir.join("no-such-ca.pem");
    let bus = format!(
        "[bus]\nhost = \"127.0.0.1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        missing.display(),
        dir.join("gw.pem").display(),
        dir.join("gw.key").display()
    );
    let cfg = gateway_toml(&ctl, Some(&bus), "");
    let mut d = Proc(Some(
        ctl.spawn(&["--config", cfg.to_str().unwrap(), "run"], false),
    ));
    assert_eq!(d.wait(Duration::from_secs(20)), Some(1), "{}", ctl.log());
    let log = ctl.log();
    assert!(
        log.contains("bus.ca_file") && log.contains(&missing.display().to_string()),
        "{log}"
    );
    assert!(!ctl.pin_dir().exists(), "nothing was loaded");
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
