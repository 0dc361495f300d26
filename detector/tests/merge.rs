//! One attack, one alert (issue 15 item 2) and trust that reaches critical only
//! on repeated strong evidence (item 6), through the engine.

use std::collections::{BTreeMap, BTreeSet};

use detector::{
    config::Config,
    engine::{Engine, Output},
};
use fw_common::flow::tcp_flags::{ACK, RST, SYN};
use tad_wire::{
    Action, Alert, AlertKind, DirCounters, EndReason, FlowRecord, NodeId, Severity, TrustLevel,
};

const T0: u64 = 1_700_000_000_000;
const SCANNER: &str = "203.0.113.66";

fn gw() -> NodeId {
    "gw-1".parse().expect("a valid node id")
}

fn dir(packets: u64, syn: u32, syn_ack: u32, rst: u32, flags: u8) -> DirCounters {
    DirCounters {
        packets,
        bytes: 44 * packets,
        syn,
        syn_ack,
        rst,
        min_len: 40,
        max_len: 44,
        tcp_flags_or: flags,
        ..DirCounters::default()
    }
}

fn tcp(
    src: &str,
    dst: String,
    sport: u16,
    dport: u16,
    fwd: DirCounters,
    bwd: DirCounters,
) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
        proto: 6,
        vlan: 0,
        start_ms: T0,
        duration_us: 500,
        fwd,
        bwd,
        iat_mean_us: 0.0,
        iat_std_us: 0.0,
        end_reason: EndReason::IdleTimeout,
    }
}

/// nmap `-sn -PS80` over a /24: a SYN to port 80 of every address (retransmitted
/// once where nothing answers); absent hosts stay silent, some hosts refuse
/// (RST), a few answer (SYN-ACK; nmap resets).
fn syn_ping_sweep() -> Vec<FlowRecord> {
    (0..=255u16)
        .map(|h| {
            let dst = format!("192.0.2.{h}");
            let (fwd, bwd) = match h % 10 {
                0 => (dir(2, 1, 0, 1, SYN | RST), dir(1, 0, 1, 0, SYN | ACK)),
                1 | 2 => (dir(1, 1, 0, 0, SYN), dir(1, 0, 0, 1, RST | ACK)),
                _ => (dir(2, 2, 0, 0, SYN), DirCounters::default()),
            };
            tcp(SCANNER, dst, 50_000 + h, 80, fwd, bwd)
        })
        .collect()
}

/// Feeds `recs` in batches of `per_batch` records, one batch every `gap_ms`,
/// then lets the cooldown pass.
fn feed(e: &mut Engine, recs: &[FlowRecord], per_batch: usize, gap_ms: u64) -> (Output, u64) {
    let mut out = Output::default();
    let mut now = T0;
    for chunk in recs.chunks(per_batch) {
        out.append(e.records(&gw(), chunk, now));
        now += gap_ms;
    }
    let end = now + 120_000;
    out.append(e.tick(now + 2_000));
    out.append(e.tick(end));
    (out, end)
}

/// The latest version of every alert id (an update replaces the earlier).
fn latest(out: &Output) -> BTreeMap<String, Alert> {
    let mut m: BTreeMap<String, Alert> = BTreeMap::new();
    for a in &out.alerts {
        if m.get(&a.id)
            .is_none_or(|b| (a.count, a.at_ms) >= (b.count, b.at_ms))
        {
            m.insert(a.id.clone(), a.clone());
        }
    }
    m
}

#[test]
fn a_syn_ping_sweep_of_a_24_is_one_host_sweep_alert_with_its_target_count() {
    // Records as they come out of the meter: in batches (idle timeouts of a
    // sweep end together), or one at a time.
    for (per_batch, gap_ms) in [(64, 250), (1, 10)] {
        let mut e = Engine::new(Config::default(), None);
        let (out, _) = feed(&mut e, &syn_ping_sweep(), per_batch, gap_ms);
        let alerts = latest(&out);
        let kinds: Vec<_> = alerts
            .values()
            .map(|a| (a.kind, a.explanation.rule.clone()))
            .collect();
        assert_eq!(alerts.len(), 1, "batches of {per_batch}: {kinds:?}");
        let a = alerts.values().next().unwrap();
        assert_eq!(a.kind, AlertKind::HostSweep);
        assert_eq!(a.source, Some(SCANNER.parse().unwrap()));
        assert_eq!(a.target, None, "a sweep names no single target");
        let targets = a.explanation.observed["targets"];
        assert!(
            (240.0..=256.0).contains(&targets),
            "batches of {per_batch}: {targets} targets"
        );
        assert!(a.count > 1, "later detections merged: {a:?}");
        assert!(a.first_seen_ms.unwrap() <= a.at_ms);
        // Updates are bounded: a handful of publications, not one per host.
        assert!(
            out.alerts.len() <= 8,
            "batches of {per_batch}: {} publications",
            out.alerts.len()
        );
        assert!(
            !out.alerts
                .iter()
                .any(|a| matches!(a.kind, AlertKind::SynFlood | AlertKind::PortScan)),
            "no per-host flood or scan alerts"
        );
        // Blocked once, the verdict named by the alert.
        let blocks: Vec<_> = out
            .verdicts
            .iter()
            .filter(|v| v.verdict.action == Action::Quarantine)
            .collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(a.verdict_id.as_deref(), Some(blocks[0].verdict.id.as_str()));
        assert_eq!(e.counters.alerts, 1);
    }
}

#[test]
fn an_icmp_echo_sweep_is_one_host_sweep_alert() {
    let recs: Vec<FlowRecord> = (1..=200u16)
        .map(|h| {
            let mut f = dir(1, 0, 0, 0, 0);
            f.icmp = Some((8, 0));
            let dst = format!("198.18.{}.{}", h / 100, h % 100);
            let mut r = tcp(SCANNER, dst, 0, 0, f, DirCounters::default());
            r.proto = 1;
            r
        })
        .collect();
    let mut e = Engine::new(Config::default(), None);
    let (out, _) = feed(&mut e, &recs, 20, 100);
    let alerts = latest(&out);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = alerts.values().next().unwrap();
    assert_eq!(
        (a.kind, a.explanation.rule.as_str()),
        (AlertKind::HostSweep, "portscan.sweep")
    );
    assert!(a.explanation.observed["targets"] >= 190.0, "{a:?}");
}

#[test]
fn alerts_of_one_source_and_kind_merge_while_the_attack_goes_on_and_not_after() {
    // Vertical scans of three hosts, one after the other: one port_scan alert
    // (each host's low-volume and vertical scan merged) naming the three
    // targets; the same an hour later is a new alert.
    let scan = |host: u8, base_port: u16| -> Vec<FlowRecord> {
        (0..20u16)
            .map(|p| {
                tcp(
                    SCANNER,
                    format!("192.0.2.{host}"),
                    40_000 + p,
                    base_port + p,
                    dir(1, 1, 0, 0, SYN),
                    dir(1, 0, 0, 1, RST | ACK),
                )
            })
            .collect()
    };
    let mut e = Engine::new(Config::default(), None);
    let mut out = Output::default();
    for (i, host) in [10u8, 11, 12].into_iter().enumerate() {
        out.append(e.records(&gw(), &scan(host, 1000), T0 + i as u64 * 5_000));
    }
    out.append(e.tick(T0 + 120_000));
    let first = latest(&out);
    assert_eq!(first.len(), 1, "{first:?}");
    let a = first.values().next().unwrap();
    assert_eq!(a.kind, AlertKind::PortScan);
    assert!(a.count >= 3, "{a:?}");
    assert_eq!(a.explanation.rule, "portscan.vertical");
    assert_eq!(a.target, None);
    assert_eq!(a.explanation.observed["targets"], 3.0);
    assert_eq!((a.first_seen_ms, a.at_ms), (Some(T0), T0 + 10_000));

    let later = T0 + 3_600_000;
    let out2 = e.records(&gw(), &scan(13, 2000), later);
    let out2 = {
        let mut o = out2;
        o.append(e.tick(later + 120_000));
        o
    };
    let second = latest(&out2);
    assert_eq!(second.len(), 1);
    let b = second.values().next().unwrap();
    assert_ne!(b.id, a.id, "a new attack is a new alert");
    assert_eq!(b.target, Some("192.0.2.13".parse().unwrap()));
    assert_eq!(b.first_seen_ms, Some(later));
}

#[test]
fn repeated_strong_evidence_reaches_critical_trust_and_blocks() {
    // Rules that never block on their own: only the trust policy can.
    let mut cfg = Config::default();
    cfg.policy.block_confidence = 1.0;
    let mut e = Engine::new(cfg, None);
    let mut out = Output::default();
    // A high-severity scan of a new host every 5 s (each one raises or renews
    // the source's alert and costs trust).
    let mut now = T0;
    for host in 10..14u8 {
        let recs: Vec<FlowRecord> = (0..20u16)
            .map(|p| {
                tcp(
                    SCANNER,
                    format!("192.0.2.{host}"),
                    40_000 + p,
                    1000 + p,
                    dir(1, 1, 0, 0, SYN),
                    DirCounters::default(),
                )
            })
            .collect();
        out.append(e.records(&gw(), &recs, now));
        now += 5_000;
    }
    let levels: Vec<TrustLevel> = out.trust.iter().map(|t| t.level).collect();
    assert!(levels.contains(&TrustLevel::Critical), "{levels:?}");
    let v: Vec<_> = out
        .verdicts
        .iter()
        .filter(|v| v.verdict.action == Action::Quarantine)
        .collect();
    assert_eq!(v.len(), 1, "{:?}", out.verdicts);
    assert_eq!(v[0].verdict.rule, "trust.critical");
    // Quiet: recovers out of critical.
    let up = e.tick(now + 3_600_000);
    assert_eq!(up.trust.last().unwrap().level, TrustLevel::Normal);
}

#[test]
fn weak_evidence_however_repeated_never_reaches_critical() {
    let mut cfg = Config::default();
    cfg.policy.block_confidence = 1.0;
    let mut e = Engine::new(cfg, None);
    let mut out = Output::default();
    // Low-volume scans (portscan.low, medium severity) of a new host every 61 s,
    // each a new alert, for an hour.
    let mut now = T0;
    for host in 0..60u8 {
        let recs: Vec<FlowRecord> = (0..6u16)
            .map(|p| {
                tcp(
                    SCANNER,
                    format!("192.0.2.{host}"),
                    40_000 + p,
                    1000 + p,
                    dir(1, 1, 0, 0, SYN),
                    DirCounters::default(),
                )
            })
            .collect();
        out.append(e.records(&gw(), &recs, now));
        now += 61_000;
    }
    let sev: BTreeSet<Severity> = out.alerts.iter().map(|a| a.severity).collect();
    assert_eq!(
        sev,
        BTreeSet::from([Severity::Medium]),
        "only weak evidence"
    );
    assert!(out.trust.len() >= 30, "{} trust updates", out.trust.len());
    assert!(
        out.trust.iter().all(|t| t.level >= TrustLevel::Warning),
        "{:?}",
        out.trust.iter().map(|t| t.score).collect::<Vec<_>>()
    );
    assert!(out.verdicts.is_empty());
}
