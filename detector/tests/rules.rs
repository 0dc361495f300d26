//! Each rule on synthetic flow sequences just below, at and just above its
//! threshold (default config, no model), and the verdict policy around them.

use std::{collections::BTreeMap, net::IpAddr};

use detector::{
    config::Config,
    engine::{Engine, Output},
};
use fw_common::flow::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
use tad_wire::{Action, AlertKind, DirCounters, EndReason, FlowRecord, Mode, TrustLevel};

const T0: u64 = 1_700_000_000_000;
const ATTACKER: &str = "203.0.113.66";
const VICTIM: &str = "192.0.2.20";

fn dir(packets: u64, flags: u8) -> DirCounters {
    let n = packets as u32;
    let has = |f: u8| if flags & f != 0 { n } else { 0 };
    DirCounters {
        packets,
        bytes: 44 * packets,
        syn: if flags & SYN != 0 && flags & ACK == 0 {
            n
        } else {
            0
        },
        syn_ack: if flags & (SYN | ACK) == SYN | ACK {
            n
        } else {
            0
        },
        fin: has(FIN),
        rst: has(RST),
        psh: has(PSH),
        ack_only: if flags & 0x3f == ACK { n } else { 0 },
        urg: has(URG),
        no_flags: if flags & 0x3f == 0 && packets > 0 {
            n
        } else {
            0
        },
        min_len: 40,
        max_len: 44,
        tcp_flags_or: if packets > 0 { flags } else { 0 },
        icmp: None,
    }
}

fn rec(
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    proto: u8,
    fwd: DirCounters,
    bwd: DirCounters,
) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
        proto,
        vlan: 0,
        start_ms: T0,
        duration_us: 500,
        fwd,
        bwd,
        iat_mean_us: 500.0,
        iat_std_us: 0.0,
        end_reason: EndReason::EndOfFlow,
    }
}

fn syn_probe(src: &str, dst: &str, sport: u16, dport: u16) -> FlowRecord {
    rec(src, dst, sport, dport, 6, dir(1, SYN), dir(1, RST | ACK))
}

/// Feeds records one per 10 ms; returns every output.
fn feed(engine: &mut Engine, recs: &[FlowRecord]) -> Output {
    let mut all = Output::default();
    for (i, r) in recs.iter().enumerate() {
        all.append(engine.records(&gw1(), std::slice::from_ref(r), T0 + i as u64 * 10));
    }
    all
}

fn rules_of(out: &Output) -> Vec<&str> {
    out.alerts
        .iter()
        .map(|a| a.explanation.rule.as_str())
        .collect()
}

fn engine() -> Engine {
    Engine::new(Config::default(), None)
}

fn blocked(out: &Output) -> Vec<IpAddr> {
    out.verdicts
        .iter()
        .map(|v| v.verdict.target.addr())
        .collect()
}

#[test]
fn vertical_scan_below_at_and_above_threshold() {
    let limit = Config::default().portscan.vertical_ports as u16;
    for (n, expect_block) in [(limit - 1, false), (limit, true), (limit + 1, true)] {
        let mut e = engine();
        let recs: Vec<_> = (0..n)
            .map(|p| syn_probe(ATTACKER, VICTIM, 40000 + p, 1000 + p))
            .collect();
        let out = feed(&mut e, &recs);
        assert_eq!(
            rules_of(&out).contains(&"portscan.vertical"),
            expect_block,
            "{n} ports: {:?}",
            rules_of(&out)
        );
        assert_eq!(!blocked(&out).is_empty(), expect_block, "{n} ports");
        if expect_block {
            let a = out
                .alerts
                .iter()
                .find(|a| a.explanation.rule == "portscan.vertical")
                .unwrap();
            assert_eq!(
                a.explanation.observed["distinct_ports"], limit as f64,
                "alert fires on the crossing record"
            );
            assert_eq!(a.explanation.thresholds["distinct_ports"], limit as f64);
            assert_eq!(a.source, Some(ATTACKER.parse().unwrap()));
            assert!(!a.flows.is_empty() && a.verdict_id.is_some());
            let v = &out.verdicts[0].verdict;
            assert_eq!(
                (v.action, v.ttl_s, v.observe_only),
                (Action::Quarantine, Some(600), false)
            );
            assert_eq!(out.verdicts[0].gateway_id, "gw-1");
        }
    }
}

#[test]
fn low_volume_scan_alerts_without_blocking() {
    let low = Config::default().portscan.low_ports as u16;
    let mut e = engine();
    let out = feed(
        &mut e,
        &(0..low - 1)
            .map(|p| syn_probe(ATTACKER, VICTIM, 40000, 20 + p))
            .collect::<Vec<_>>(),
    );
    assert!(out.alerts.is_empty());
    let out = feed(&mut e, &[syn_probe(ATTACKER, VICTIM, 40000, 999)]);
    assert_eq!(rules_of(&out), ["portscan.low"]);
    assert!(out.verdicts.is_empty());
}

#[test]
fn stealth_and_udp_probe_kinds_count_as_scans() {
    let limit = Config::default().portscan.vertical_ports as u16;
    let kinds: [(u8, DirCounters, DirCounters); 6] = [
        (6, dir(1, 0), dir(1, RST | ACK)),         // NULL
        (6, dir(1, FIN), DirCounters::default()),  // FIN, unanswered
        (6, dir(1, FIN | PSH | URG), dir(1, RST)), // XMAS
        (6, dir(1, FIN | ACK), dir(1, RST)),       // Maimon
        (17, dir(1, 0), DirCounters::default()),   // UDP, unanswered
        (6, dir(2, SYN), DirCounters::default()),  // SYN, unanswered with a retry
    ];
    for (i, (proto, f, b)) in kinds.into_iter().enumerate() {
        let mut e = engine();
        let recs: Vec<_> = (0..limit)
            .map(|p| rec(ATTACKER, VICTIM, 50000, 2000 + p, proto, f, b))
            .collect();
        let out = feed(&mut e, &recs);
        assert!(
            rules_of(&out).contains(&"portscan.vertical"),
            "kind {i}: {:?}",
            rules_of(&out)
        );
    }
}

#[test]
fn horizontal_scan_and_icmp_sweep() {
    let c = Config::default();
    let hosts = c.portscan.horizontal_hosts as u8;
    for (n, hit) in [(hosts - 1, false), (hosts, true)] {
        let mut e = engine();
        let recs: Vec<_> = (0..n)
            .map(|h| syn_probe(ATTACKER, &format!("198.51.100.{}", h + 1), 40000, 23))
            .collect();
        let out = feed(&mut e, &recs);
        assert_eq!(
            rules_of(&out).contains(&"portscan.horizontal"),
            hit,
            "{n} hosts"
        );
    }
    let sweep = c.portscan.sweep_hosts as u8;
    for (n, hit) in [(sweep - 1, false), (sweep, true)] {
        let mut e = engine();
        let mut echo = dir(1, 0);
        echo.icmp = Some((8, 0));
        let recs: Vec<_> = (0..n)
            .map(|h| {
                rec(
                    ATTACKER,
                    &format!("198.51.100.{}", h + 1),
                    0,
                    0,
                    1,
                    echo,
                    DirCounters::default(),
                )
            })
            .collect();
        let out = feed(&mut e, &recs);
        assert_eq!(rules_of(&out).contains(&"portscan.sweep"), hit, "{n} hosts");
    }
}

#[test]
fn probes_outside_the_window_do_not_count() {
    let c = Config::default();
    let mut e = engine();
    let n = c.portscan.vertical_ports as u16;
    let w_ms = (c.portscan.window_s * 1000.0) as u64;
    // Half the probes, then the other half after the window has passed.
    for p in 0..n {
        let at = if p < n / 2 { T0 } else { T0 + w_ms + 1 };
        let out = e.records(&gw1(), &[syn_probe(ATTACKER, VICTIM, 40000, 3000 + p)], at);
        assert!(!rules_of(&out).contains(&"portscan.vertical"));
    }
}

#[test]
fn benign_traffic_and_backscatter_are_not_scans() {
    let mut e = engine();
    // Completed sessions with data to many ports of one host.
    let mut f = dir(6, SYN);
    f.ack_only = 3;
    f.psh = 2;
    f.tcp_flags_or = SYN | ACK | PSH;
    let mut b = dir(5, SYN | ACK);
    b.syn_ack = 1;
    b.psh = 3;
    let mut recs: Vec<_> = (0..40)
        .map(|p| rec(ATTACKER, VICTIM, 40000 + p, 8000 + p, 6, f, b))
        .collect();
    // A victim's SYN-ACKs arriving after the probe's flow ended (backscatter).
    recs.extend((0..40).map(|p| {
        rec(
            VICTIM,
            ATTACKER,
            80,
            1000 + p,
            6,
            dir(2, SYN | ACK),
            DirCounters::default(),
        )
    }));
    // Unanswered discovery broadcasts from one device to many ports.
    recs.extend((0..40).map(|p| {
        rec(
            "192.0.2.50",
            "255.255.255.255",
            6667,
            6000 + p,
            17,
            dir(1, 0),
            DirCounters::default(),
        )
    }));
    let out = feed(&mut e, &recs);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
}

#[test]
fn syn_flood_per_source_blocks_and_spoofed_flood_reports_the_victim_only() {
    let c = Config::default();
    let limit = c.synflood.per_source_half_open as u16;
    for (n, hit) in [(limit - 1, false), (limit, true), (limit + 1, true)] {
        let mut e = engine();
        // Same port (no scan), unanswered SYNs from fresh source ports.
        let recs: Vec<_> = (0..n)
            .map(|i| {
                rec(
                    ATTACKER,
                    VICTIM,
                    10000 + i,
                    443,
                    6,
                    dir(1, SYN),
                    DirCounters::default(),
                )
            })
            .collect();
        let out = feed(&mut e, &recs);
        assert_eq!(
            rules_of(&out).contains(&"synflood.source"),
            hit,
            "{n} half-open"
        );
        assert_eq!(blocked(&out).contains(&ATTACKER.parse().unwrap()), hit);
    }
    // Spoofed: every SYN from a different address.
    let victim_limit = c.synflood.per_victim_half_open;
    let mut e = engine();
    let recs: Vec<_> = (0..victim_limit)
        .map(|i| {
            let src = format!("198.18.{}.{}", i / 250, i % 250 + 1);
            rec(
                &src,
                VICTIM,
                1024 + i as u16,
                25565,
                6,
                dir(1, SYN),
                DirCounters::default(),
            )
        })
        .collect();
    let out = feed(&mut e, &recs[..recs.len() - 1]);
    assert!(out.alerts.is_empty());
    let out = feed(&mut e, &recs[recs.len() - 1..]);
    assert_eq!(rules_of(&out), ["synflood.victim"]);
    let a = &out.alerts[0];
    assert_eq!(
        (a.kind, a.source, a.target),
        (AlertKind::SynFlood, None, Some(VICTIM.parse().unwrap()))
    );
    assert!(a.explanation.text.contains("spoofed"));
    // Spoofed sources are never blocked; the victim gets SYN authentication.
    let actions: Vec<_> = out
        .verdicts
        .iter()
        .map(|v| (v.verdict.action, v.verdict.target.addr()))
        .collect();
    assert_eq!(
        actions,
        [(tad_wire::Action::ProtectSyn, VICTIM.parse().unwrap())],
        "spoofed sources are never blocked"
    );
}

#[test]
fn idle_scan_zombie_is_not_blocked() {
    let zombie = "192.0.2.3";
    let mut e = engine();
    // The zombie resets SYN-ACKs the victim never sent (someone spoofs the victim).
    let mut recs = vec![rec(
        zombie,
        VICTIM,
        443,
        53592,
        6,
        dir(4, RST),
        DirCounters::default(),
    )];
    recs.extend((0..30).map(|p| syn_probe(zombie, VICTIM, 443, 100 + p)));
    let out = feed(&mut e, &recs);
    assert!(
        out.verdicts.is_empty(),
        "zombie blocked: {:?}",
        out.verdicts
    );
    let a = out
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::PortScan)
        .expect("scan reported");
    assert_eq!((a.source, a.target), (None, Some(VICTIM.parse().unwrap())));
    assert_eq!(a.explanation.rule, "portscan.spoofed");
}

#[test]
fn brute_force_below_at_and_above() {
    let c = Config::default();
    let limit = c.bruteforce.attempts as u16;
    let login = || {
        let mut f = dir(11, SYN);
        f.ack_only = 6;
        f.psh = 3;
        f.fin = 1;
        f.bytes = 600;
        let mut b = dir(9, SYN | ACK);
        b.syn_ack = 1;
        b.psh = 4;
        b.fin = 1;
        b.bytes = 600;
        (f, b)
    };
    for port in [22u16, 21, 23, 2323, 1883, 8883] {
        for (n, hit) in [(limit - 1, false), (limit, true), (limit + 1, true)] {
            let mut e = engine();
            let (f, b) = login();
            let mut recs: Vec<_> = (0..n)
                .map(|i| rec(ATTACKER, VICTIM, 50000 + i, port, 6, f, b))
                .collect();
            for r in &mut recs {
                r.duration_us = 2_000_000;
            }
            let out = feed(&mut e, &recs);
            assert_eq!(
                rules_of(&out).contains(&"bruteforce.auth"),
                hit,
                "port {port}, {n} attempts"
            );
            assert_eq!(!out.verdicts.is_empty(), hit);
        }
    }
    // Long sessions are not guesses.
    let mut e = engine();
    let (f, mut b) = login();
    b.bytes = 50_000;
    let recs: Vec<_> = (0..2 * limit)
        .map(|i| rec(ATTACKER, VICTIM, 50000 + i, 22, 6, f, b))
        .collect();
    assert!(feed(&mut e, &recs).alerts.is_empty());
}

#[test]
fn unauthorized_access_follows_the_device_policy() {
    let cfg = Config::from_toml(
        r#"
        [[access.devices]]
        prefix = "192.0.2.20/32"
        allowed_ports = [1883]
        allowed_sources = ["192.0.2.1/32"]
        block = true
        "#,
    )
    .unwrap();
    let mut e = Engine::new(cfg, None);
    let mut answered = dir(3, SYN | ACK);
    answered.syn_ack = 1;
    let mut f = dir(4, SYN);
    f.syn = 1;
    f.psh = 1;
    f.ack_only = 2;
    let ok = rec(ATTACKER, VICTIM, 40000, 1883, 6, f, answered);
    let mgmt = rec("192.0.2.1", VICTIM, 40000, 22, 6, f, answered);
    assert!(feed(&mut e, &[ok, mgmt]).alerts.is_empty());
    let bad = rec(ATTACKER, VICTIM, 40001, 23, 6, f, answered);
    let out = feed(&mut e, &[bad]);
    assert_eq!(rules_of(&out), ["access.policy"]);
    assert_eq!(out.alerts[0].kind, AlertKind::UnauthorizedAccess);
    assert_eq!(blocked(&out), [ATTACKER.parse::<IpAddr>().unwrap()]);
}

#[test]
fn traffic_spike_needs_baseline_z_score_and_absolute_rate() {
    let c = Config::default();
    let dev = "192.0.2.77";
    let mut e = engine();
    let steady = |t: u64, pk: u64| {
        let mut f = dir(pk, ACK);
        f.bytes = pk * 100;
        let mut r = rec(dev, VICTIM, 40000, 443, 6, f, DirCounters::default());
        r.start_ms = t;
        r
    };
    // Baseline: 100 packets/s for warmup + 10 intervals.
    let intervals = c.spike.warmup_intervals as u64 + 10;
    for s in 0..intervals {
        let out = e.records(&gw1(), &[steady(T0 + s * 1000, 100)], T0 + s * 1000);
        assert!(out.alerts.is_empty());
    }
    let t = T0 + intervals * 1000;
    // Far above the baseline but under the absolute minimum: no alert.
    let below = c.spike.min_pps as u64 - 100;
    assert!(e.records(&gw1(), &[steady(t, below)], t).alerts.is_empty());
    // Next interval: above both.
    let t = t + 1000;
    let out = e.records(&gw1(), &[steady(t, c.spike.min_pps as u64 * 2)], t);
    assert_eq!(rules_of(&out), ["spike.rate"]);
    assert!(out.verdicts.is_empty(), "spikes alert only");
}

#[test]
fn allowlist_observe_mode_and_growing_ttl() {
    let scan = |e: &mut Engine, at: u64| {
        let recs: Vec<_> = (0..20)
            .map(|p| syn_probe(ATTACKER, VICTIM, 40000, 1 + p))
            .collect();
        e.records(&gw1(), &recs, at)
    };
    let mut cfg = Config::default();
    cfg.policy.allowlist = vec!["203.0.113.0/24".parse().unwrap()];
    let mut e = Engine::new(cfg, None);
    let out = scan(&mut e, T0);
    assert!(!out.alerts.is_empty() && out.verdicts.is_empty());
    assert!(e.counters.allowlisted >= 1);

    let mut cfg = Config::default();
    cfg.detector.mode = Mode::Observe;
    let mut e = Engine::new(cfg, None);
    let out = scan(&mut e, T0);
    assert!(out.verdicts.iter().all(|v| v.verdict.observe_only) && !out.verdicts.is_empty());
    assert_eq!(e.counters.would_block, 1);

    let mut e = engine();
    let first = scan(&mut e, T0).verdicts[0].verdict.ttl_s.unwrap();
    // While quarantined: no second verdict.
    assert!(scan(&mut e, T0 + 120_000).verdicts.is_empty());
    let second = scan(&mut e, T0 + first * 1000 + 200_000).verdicts[0]
        .verdict
        .ttl_s
        .unwrap();
    assert_eq!(second, 2 * first, "repeat offence doubles the TTL");
}

#[test]
fn trust_drops_with_alerts_and_every_change_is_explained() {
    let mut e = engine();
    let recs: Vec<_> = (0..20)
        .map(|p| syn_probe(ATTACKER, VICTIM, 40000, 1 + p))
        .collect();
    let out = e.records(&gw1(), &recs, T0);
    assert!(!out.trust.is_empty());
    for t in &out.trust {
        assert_eq!(t.device, ATTACKER.parse::<IpAddr>().unwrap());
        assert!(!t.reason.is_empty());
        assert_eq!(t.level, TrustLevel::of(t.score));
    }
    let (score, _) = e.trust_of(ATTACKER.parse().unwrap());
    assert!(score < 100.0);
    // Quiet for an hour: back to full trust.
    let out = e.tick(T0 + 3_600_000);
    assert_eq!(out.trust.last().unwrap().score, 100.0);
}

#[test]
fn runtime_thresholds_take_effect_and_unknown_keys_are_rejected() {
    let mut e = engine();
    let bad = BTreeMap::from([("portscan.vertical_prots".to_string(), 5.0)]);
    assert!(e.apply_thresholds(&bad).is_err());
    e.apply_thresholds(&BTreeMap::from([(
        "portscan.vertical_ports".to_string(),
        3.0,
    )]))
    .unwrap();
    let recs: Vec<_> = (0..3)
        .map(|p| syn_probe(ATTACKER, VICTIM, 40000, 1 + p))
        .collect();
    assert!(rules_of(&feed(&mut e, &recs)).contains(&"portscan.vertical"));
}

#[test]
fn vulnerability_reputation_and_behaviour_combine_to_a_critical_block() {
    let cfg = Config::from_toml(
        r#"
        [trust]
        device_networks = ["192.0.2.0/24"]
        vulnerability_check = true
        "#,
    )
    .unwrap();
    let mut e = Engine::new(cfg, None);
    let (list, bad) = detector::trust::ThreatFeed::parse("198.51.100.0/28\n");
    assert!(bad.is_empty());
    e.trust_mut().feed = list;
    let dev = "192.0.2.30";
    // The device answers Telnet on 23 and 2323 (40 + 40 vulnerability points).
    let mut answered = dir(2, SYN | ACK);
    answered.syn_ack = 1;
    let mut f = dir(3, SYN);
    f.ack_only = 2;
    let mut recs: Vec<_> = [23u16, 2323]
        .iter()
        .map(|p| rec("192.0.2.1", dev, 40000, *p, 6, f, answered))
        .collect();
    // It talks to four listed addresses (4 x 25 reputation points).
    recs.extend((1..=4).map(|i| rec(dev, &format!("198.51.100.{i}"), 40000, 443, 6, f, answered)));
    let out = feed(&mut e, &recs);
    assert!(out.alerts.iter().any(|a| a.kind == AlertKind::ThreatFeed));
    assert!(
        out.verdicts.is_empty(),
        "evidence about a device alone does not block it"
    );
    let (score, level) = e.trust_of(dev.parse().unwrap());
    assert!((score - (50.0 + 0.3 * 20.0)).abs() < 1e-9, "{score}");
    assert_eq!(level, TrustLevel::Warning);
    // Then low-volume scans (alert-only) against five hosts: behavioural 100 -> 25.
    let mut blocked_by = None;
    for h in 1..=5u8 {
        let target = format!("192.0.2.{}", 100 + h);
        // FIN probes: not half-open handshakes, so no SYN-flood rule either.
        let scans: Vec<_> = (0..5)
            .map(|p| {
                rec(
                    dev,
                    &target,
                    40000,
                    10 + p,
                    6,
                    dir(1, FIN),
                    DirCounters::default(),
                )
            })
            .collect();
        let out = feed(&mut e, &scans);
        if let Some(v) = out.verdicts.first() {
            blocked_by = Some((h, v.verdict.rule.clone()));
            break;
        }
    }
    let (h, rule) = blocked_by.expect("a critical trust score blocks");
    assert_eq!((h, rule.as_str()), (5, "trust.critical"));
    assert_eq!(e.trust_of(dev.parse().unwrap()).1, TrustLevel::Critical);
}

fn gw1() -> tad_wire::NodeId {
    "gw-1".parse().expect("a valid node id")
}
