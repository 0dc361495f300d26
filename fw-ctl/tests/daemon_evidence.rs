//! Evidence at packet speed through a real Mosquitto (`tad_bus::testing`): the XDP
//! program's per-address counts, written by real packets between namespaces,
//! arrive on `tad/v1/gw/<gw>/evidence/<p>` as `EvidenceBatch`es, as a detector
//! subscribed with the broker's ACL sees them; a port scan raises ring buffer
//! events that are published without waiting for a poll, and its provisional
//! quarantine shows in `fw-ctl list`, `fw-ctl status --json`, the published
//! state and `/metrics`. Needs root, `mosquitto` and `nmap`.
//!
//! The program is loaded in the gateway namespace; the daemon (or the evidence
//! task, in-process) runs in the root namespace, where the broker listens.

mod ctl;

use std::{
    net::IpAddr,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use ctl::*;
use fw_ctl::{
    daemon::{
        DaemonStatus,
        evidence::{self, EvidenceConfig, EvidenceStats},
    },
    pin::PinDir,
};
use tad_bus::{BusClient, QoS, Subscription, testing::TestBroker};
use tad_wire::{BlockOrigin, EvidenceBatch, EvidenceEventKind, EvidenceRole, GatewayState, topic};

fn bus_table(broker: &TestBroker) -> String {
    let mut c = broker.config("gateway-1").unwrap();
    c.reconnect_min_ms = 200;
    c.reconnect_max_ms = 1000;
    c.keep_alive_s = 5;
    format!("[bus]\n{}", toml::to_string(&c).unwrap())
}

/// A detector subscribed to partition 0's evidence (1 partition: everything).
async fn detector(broker: &TestBroker) -> (BusClient, Subscription<EvidenceBatch>) {
    let mut b = BusClient::builder(broker.config("detector-1").unwrap()).unwrap();
    let s = b.subscribe::<EvidenceBatch>(&topic::evidence_partition_filter(0), QoS::AtMostOnce);
    (b.connect().await.expect("detector connects"), s)
}

/// Receives batches until `f` picks something out of one (up to 20 s).
async fn until<T>(
    s: &mut Subscription<EvidenceBatch>,
    mut f: impl FnMut(&EvidenceBatch) -> Option<T>,
) -> Option<T> {
    let wait = async {
        loop {
            let b = s.recv().await.expect("evidence subscription open").message;
            assert_eq!((b.gateway_id.as_str(), b.partition), ("gateway-1", 0));
            if let Some(t) = f(&b) {
                return t;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .ok()
}

/// A TCP connect scan of 300 ports of the gateway from the peer's primary
/// address (198.51.100.2): the gateway answers each SYN with a RST until the
/// program quarantines the scanner.
async fn scan(net: &Net) {
    let peer = net.peer.clone();
    tokio::task::spawn_blocking(move || {
        let ok = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{peer}"))
            .args([
                "nmap",
                "-sT",
                "-Pn",
                "-n",
                "-T5",
                "--max-retries",
                "0",
                "--host-timeout",
                "30s",
                "-p",
                "1-300",
                GW_ADDR,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run nmap")
            .success();
        assert!(ok, "nmap failed");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_packets_reach_the_detector_as_evidence_and_a_scan_is_quarantined() {
    let net = Net::new("evid");
    let ctl = Ctl::new("evid", &net.gw);
    let broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(&ctl, Some(&bus_table(&broker)), "");
    let cfg = cfg.to_str().unwrap();
    let (_det, mut ev) = detector(&broker).await;
    ctl.json(&["--config", cfg, "load"]);
    let _d = Proc(Some(ctl.spawn(&["--config", cfg, "run"], false)));
    let st = wait_for(Duration::from_secs(20), || {
        DaemonStatus::load(&ctl.status_path())
            .ok()
            .filter(|s| s.bus == "connected")
    })
    .unwrap_or_else(|| panic!("daemon did not connect: {}", ctl.log()));
    let http = st.http_listen.clone().expect("http listen");
    // The shipped defaults are loaded: provisional quarantine on.
    let status = ctl.json(&["--config", cfg, "status"]);
    assert_eq!(
        status["evidence"]["quarantine_distinct"].as_u64(),
        Some(u64::from(fw_common::config::DEFAULT_QUARANTINE_DISTINCT)),
        "{status}"
    );

    // Two pings open a flow from .3 (one new flow, two requests): the source's
    // record and the gateway's destination record arrive, no flow having ended.
    let [_, a3, _] = PEER_ADDRS;
    assert!(net.ping(a3, 2));
    let src: IpAddr = a3.parse().unwrap();
    let gw: IpAddr = GW_ADDR.parse().unwrap();
    let (mut seen_src, mut seen_dst) = (None, None);
    until(&mut ev, |b| {
        for r in &b.records {
            if r.addr == src && r.role == EvidenceRole::Source {
                seen_src = Some(r.clone());
            }
            if r.addr == gw && r.role == EvidenceRole::Destination {
                seen_dst = Some(r.clone());
            }
        }
        (seen_src.is_some() && seen_dst.is_some()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no evidence for {src} and {gw}: {}", ctl.log()));
    let (s, d) = (seen_src.unwrap(), seen_dst.unwrap());
    assert_eq!((s.new_flows, s.icmp, s.syn), (1, 1, 0), "{s:?}");
    assert_eq!(s.bytes, 84, "the echo request's IP bytes");
    assert_eq!(
        s.hosts.iter().map(|w| w.count_ones()).sum::<u32>(),
        1,
        "one peer"
    );
    assert_eq!(d.new_flows, 1, "{d:?}");
    let now = tad_wire::now_ms();
    assert!(
        s.epoch_start_ms <= now && s.epoch_start_ms + 60_000 > now,
        "epoch start {} is Unix ms (now {now})",
        s.epoch_start_ms
    );

    // A port scan from .2: report and quarantine events, then the provisional
    // quarantine everywhere the gateway shows its blocks.
    let [a2, _, _] = PEER_ADDRS;
    scan(&net).await;
    let scanner: IpAddr = a2.parse().unwrap();
    let e = until(&mut ev, |b| {
        b.events
            .iter()
            .find(|e| e.addr == scanner && e.kind == EvidenceEventKind::Quarantine)
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no quarantine event: {}", ctl.log()));
    assert!(e.unreplied >= 48 && e.union_ports >= 48, "{e:?}");
    let b = ctl
        .block_of(&format!("{a2}/32"))
        .expect("the scanner's provisional entry is listed");
    assert_eq!(
        (b["origin"].as_str(), b["reason"].as_str()),
        (Some("datapath"), Some("quarantine")),
        "{b}"
    );
    let left = b["expires_in_s"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 30.0, "the 30 s default TTL: {left}");
    let status = ctl.json(&["--config", cfg, "status"]);
    assert_eq!(
        status["provisional_quarantines"][0]["prefix"],
        format!("{a2}/32"),
        "{status}"
    );
    // Only the scanner is quarantined: another source still passes.
    assert!(net.ping(a3, 1));

    // The published state (retained snapshot) and /metrics.
    let mut b = BusClient::builder(broker.config("dashboard").unwrap()).unwrap();
    let mut state =
        b.subscribe::<GatewayState>(&topic::gateway_state("gateway-1"), QoS::AtLeastOnce);
    let _dash = b.connect().await.expect("dashboard connects");
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = state.recv().await.expect("state subscription").message;
            if let Some(b) = s
                .blocks
                .iter()
                .find(|b| b.prefix.to_string() == format!("{a2}/32"))
            {
                return b.clone();
            }
        }
    })
    .await
    .expect("the provisional quarantine in the retained state");
    assert_eq!(
        (found.origin, found.provisional),
        (BlockOrigin::Datapath, true)
    );
    let metrics = wait_for(Duration::from_secs(10), || {
        let (code, body) = http_get(&http, "/metrics");
        (code == 200
            && body.contains("tad_gateway_provisional_quarantines 1")
            && body.contains("tad_gateway_evidence_events_total{kind=\"quarantine\"} 1"))
        .then_some(body)
    })
    .unwrap_or_else(|| panic!("metrics: {}", http_get(&http, "/metrics").1));
    if let Err(e) = tad_bus::testing::promtool_check(&metrics) {
        panic!("promtool: {e}");
    }

    // The thresholds can be changed at run time, like the rate limits.
    let lim = ctl.json(&["limits", "--report-distinct", "20"]);
    assert_eq!(
        (lim["report_distinct"].as_u64(), lim["syn_pps"].as_u64()),
        (Some(20), Some(0)),
        "{lim}"
    );
    let status = ctl.json(&["status"]);
    assert_eq!(status["evidence"]["report_distinct"], 20, "{status}");
    assert_eq!(
        ctl.run(&["limits", "--quarantine-ttl-ms", "10"]).code,
        2,
        "a TTL below 1 s is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_published_without_waiting_for_the_poll() {
    let net = Net::new("evev");
    let ctl = Ctl::new("evev", &net.gw);
    let broker = TestBroker::start().expect("mosquitto (apt package `mosquitto`)");
    let cfg = gateway_toml(&ctl, None, "");
    ctl.json(&["--config", cfg.to_str().unwrap(), "load"]);
    let (_det, mut ev) = detector(&broker).await;
    let gw = BusClient::builder(broker.config("gateway-1").unwrap())
        .unwrap()
        .connect()
        .await
        .expect("gateway connects");
    // The task in-process with a poll interval no test waits for: after its
    // first read at start, only the ring buffer can make it read and publish.
    let stats = Arc::new(Mutex::new(EvidenceStats::default()));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(evidence::run(
        PinDir::new(&ctl.instance).unwrap(),
        EvidenceConfig {
            gateway_id: "gateway-1".parse().unwrap(),
            partitions: 1,
            poll_interval: Duration::from_secs(3600),
        },
        Some(gw.clone()),
        stats.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    // The first tick's read is done once the task counted it.
    wait_for(Duration::from_secs(10), || {
        (stats.lock().unwrap().polls >= 1).then_some(())
    })
    .expect("the task's first read");
    assert!(
        stats.lock().unwrap().mapped,
        "the arrays are read through mmap"
    );

    scan(&net).await;
    let scanner: IpAddr = PEER_ADDRS[0].parse().unwrap();
    let batch = until(&mut ev, |b| {
        b.events
            .iter()
            .any(|e| e.addr == scanner)
            .then(|| b.clone())
    })
    .await
    .expect("an event batch without a poll");
    // The event came with the scanner's evidence, read right after it.
    let kinds: Vec<EvidenceEventKind> = batch.events.iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EvidenceEventKind::Report)
            || kinds.contains(&EvidenceEventKind::Quarantine),
        "{kinds:?}"
    );
    assert!(
        batch
            .records
            .iter()
            .any(|r| r.addr == scanner && r.role == EvidenceRole::Source && r.syn > 0),
        "{batch:?}"
    );
    let s = stats.lock().unwrap().clone();
    assert!(s.events_report + s.events_quarantine >= 1, "{s:?}");
    assert!(s.batches_published >= 1, "{s:?}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = gw.shutdown(Duration::from_secs(2)).await;
}
