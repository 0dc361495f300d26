//! Password guessing from the connection pattern (`rules::bruteforce`): TCP
//! sessions shaped as the flow meter exports them (one record per connection,
//! handshake included, exported at its FIN), through a default engine without a
//! model. Guessing is recognised on any port; a device's periodic reconnects
//! with data are not guessing, however regular their sizes.

use std::net::IpAddr;

use detector::{
    config::Config,
    engine::{Engine, Output},
};
use fw_common::flow::tcp_flags::{ACK, FIN, PSH, SYN};
use tad_wire::{Action, DirCounters, EndReason, FlowRecord, NodeId};

const T0: u64 = 1_700_000_000_000;
const ATTACKER: &str = "203.0.113.66";
const SERVER: &str = "192.0.2.22";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One side of a TCP session of `packets` segments and `bytes` IP bytes: the
/// opener's SYN (or the answerer's SYN-ACK), data, ACKs and a FIN.
fn side(opener: bool, packets: u64, bytes: u64) -> DirCounters {
    let data = (packets.saturating_sub(3) as u32).max(1);
    DirCounters {
        packets,
        bytes,
        syn: opener as u32,
        syn_ack: !opener as u32,
        fin: 1,
        psh: data,
        ack_only: (packets as u32).saturating_sub(2 + data),
        min_len: 40,
        max_len: (bytes / packets).clamp(40, 1500) as u16,
        tcp_flags_or: SYN | ACK | PSH | FIN,
        ..Default::default()
    }
}

/// A completed session `src:sport -> dst:dport` from `start_ms` lasting `dur_ms`,
/// with `fwd`/`bwd` bytes.
#[allow(clippy::too_many_arguments)]
fn session(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    start_ms: u64,
    dur_ms: u64,
    fwd_bytes: u64,
    bwd_bytes: u64,
) -> FlowRecord {
    let pk = |b: u64| (b / 300).clamp(4, 40);
    FlowRecord {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        proto: 6,
        vlan: 0,
        start_ms,
        duration_us: dur_ms * 1000,
        fwd: side(true, pk(fwd_bytes), fwd_bytes),
        bwd: side(false, pk(bwd_bytes), bwd_bytes),
        iat_mean_us: 1000.0,
        iat_std_us: 0.0,
        end_reason: EndReason::EndOfFlow,
    }
}

/// Feeds each record when its flow ends (as the meter exports a FIN-closed flow).
fn feed(e: &mut Engine, mut recs: Vec<FlowRecord>) -> Output {
    recs.sort_by_key(|r| r.start_ms + r.duration_us / 1000);
    let gw: NodeId = "gw-1".parse().unwrap();
    let mut all = Output::default();
    for r in recs {
        let end = r.start_ms + r.duration_us / 1000;
        all.append(e.records(&gw, &[r], end));
    }
    all
}

fn rules_of(out: &Output) -> Vec<String> {
    out.alerts
        .iter()
        .map(|a| a.explanation.rule.clone())
        .collect()
}

fn blocks(out: &Output, who: &str) -> bool {
    out.verdicts.iter().any(|v| {
        matches!(v.verdict.action, Action::Block | Action::Quarantine)
            && v.verdict.target.addr() == ip(who)
    })
}

/// SSH guessing: 67 connections in 13 s, 40 of them full authentication
/// exchanges of similar size (key exchange, a few failed passwords), the others
/// cut short after the banner (the server's MaxStartups) of varied sizes.
fn ssh_guessing(port: u16) -> Vec<FlowRecord> {
    (0..67u64)
        .map(|i| {
            let start = T0 + i * 13_000 / 67;
            if i % 5 < 3 {
                // 40 attempts: 2.9-3.3 KB out, 3.6-4.0 KB back, 150-400 ms.
                session(
                    ATTACKER,
                    40_000 + i as u16,
                    SERVER,
                    port,
                    start,
                    150 + (i * 37) % 250,
                    2_900 + (i * 53) % 400,
                    3_600 + (i * 71) % 400,
                )
            } else {
                session(
                    ATTACKER,
                    40_000 + i as u16,
                    SERVER,
                    port,
                    start,
                    20 + i % 30,
                    300 + (i * 97) % 900,
                    200 + (i * 31) % 500,
                )
            }
        })
        .collect()
}

#[test]
fn ssh_guessing_on_a_non_standard_port_is_blocked() {
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, ssh_guessing(2222));
    assert!(
        rules_of(&out).contains(&"bruteforce.pattern".to_string()),
        "{:?}",
        rules_of(&out)
    );
    assert!(blocks(&out, ATTACKER), "{:?}", out.verdicts);
    let a = out
        .alerts
        .iter()
        .find(|a| a.explanation.rule == "bruteforce.pattern")
        .unwrap();
    assert_eq!(a.target, Some(ip(SERVER)));
    assert!(a.explanation.observed["attempts"] >= 20.0);
}

#[test]
fn the_auth_port_list_only_lowers_the_count() {
    // On port 22 the same guessing is `bruteforce.auth`, and 12 attempts do.
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, ssh_guessing(22));
    assert!(rules_of(&out).contains(&"bruteforce.auth".to_string()));
    assert!(blocks(&out, ATTACKER));
    let twelve: Vec<_> = (0..12u64)
        .map(|i| {
            session(
                ATTACKER,
                40_000 + i as u16,
                SERVER,
                22,
                T0 + i * 300,
                250,
                3_000,
                3_800,
            )
        })
        .collect();
    let mut e = Engine::new(Config::default(), None);
    assert!(blocks(&feed(&mut e, twelve.clone()), ATTACKER), "port 22");
    let mut moved = twelve;
    for r in &mut moved {
        r.dport = 2222;
    }
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, moved);
    assert!(
        out.alerts.is_empty(),
        "12 on port 2222: {:?}",
        rules_of(&out)
    );
}

#[test]
fn slow_guessing_that_keeps_the_service_busy_is_guessing() {
    // One guesser, one connection after the other, each 5 s of tries (Zeek's
    // sshguess trace has this shape): the gaps are long, the service never idle.
    let recs: Vec<_> = (0..12u64)
        .map(|i| {
            session(
                ATTACKER,
                40_000 + i as u16,
                SERVER,
                22,
                T0 + i * 5_600,
                5_000,
                3_400,
                3_500,
            )
        })
        .collect();
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, recs);
    assert!(blocks(&out, ATTACKER), "{:?}", rules_of(&out));
}

#[test]
fn periodic_reconnects_with_data_are_not_guessing() {
    let device = "192.0.2.77";
    let broker = "198.51.100.9";
    // (port, period ms, session ms, bytes out, bytes back): MQTT every 5 s and
    // every 1 s (an aggressive firmware), MQTT over TLS, HTTP polling, and MQTT on
    // a non-standard port every 2 s; 10 minutes each, sizes nearly identical.
    for (port, period, dur, out_b, back_b) in [
        (1883, 5_000, 80, 420, 60),
        (1883, 1_000, 60, 380, 60),
        (8883, 5_000, 300, 4_100, 3_900),
        (80, 3_000, 120, 700, 900),
        (18_830, 2_000, 90, 420, 60),
    ] {
        let n = 600_000 / period;
        let recs: Vec<_> = (0..n)
            .map(|i| {
                session(
                    device,
                    30_000 + (i % 30_000) as u16,
                    broker,
                    port,
                    T0 + i * period + (i * 7) % 50,
                    dur,
                    out_b + (i * 13) % 20,
                    back_b,
                )
            })
            .collect();
        let mut e = Engine::new(Config::default(), None);
        let out = feed(&mut e, recs);
        assert!(
            out.alerts.is_empty() && out.verdicts.is_empty(),
            "port {port} every {period} ms: {:?}",
            rules_of(&out)
        );
    }
}

#[test]
fn many_short_connections_of_varied_size_are_not_guessing() {
    // A client fetching 60 objects of different sizes from one service in 10 s.
    let recs: Vec<_> = (0..60u64)
        .map(|i| {
            session(
                "192.0.2.30",
                41_000 + i as u16,
                SERVER,
                9000,
                T0 + i * 160,
                120,
                400 + (i * 211) % 3_000,
                500 + (i * i * 389) % 15_000,
            )
        })
        .collect();
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, recs);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
}

#[test]
fn fast_mqtt_guessing_is_blocked() {
    // CONNECT with a guessed password, CONNACK "not authorized", closed: 30 in 6 s.
    let recs: Vec<_> = (0..30u64)
        .map(|i| {
            session(
                ATTACKER,
                42_000 + i as u16,
                SERVER,
                1883,
                T0 + i * 200,
                15,
                260 + i % 9,
                210,
            )
        })
        .collect();
    let mut e = Engine::new(Config::default(), None);
    let out = feed(&mut e, recs);
    assert!(
        rules_of(&out).contains(&"bruteforce.auth".to_string()),
        "{:?}",
        rules_of(&out)
    );
    assert!(blocks(&out, ATTACKER));
}

#[test]
fn unanswered_handshakes_off_the_auth_ports_are_no_guessing() {
    // 200 SYNs to an HTTPS port and to port 2222, never answered: the SYN-flood
    // and scan rules' business, not password guessing.
    for port in [443u16, 2222] {
        let recs: Vec<_> = (0..200u64)
            .map(|i| {
                let mut r = session(ATTACKER, 40_000 + i as u16, SERVER, port, T0 + i, 0, 60, 0);
                r.fwd = DirCounters {
                    packets: 1,
                    bytes: 60,
                    syn: 1,
                    tcp_flags_or: SYN,
                    min_len: 60,
                    max_len: 60,
                    ..Default::default()
                };
                r.bwd = DirCounters::default();
                r
            })
            .collect();
        let mut e = Engine::new(Config::default(), None);
        let out = feed(&mut e, recs);
        assert!(
            !rules_of(&out).iter().any(|r| r.starts_with("bruteforce")),
            "port {port}: {:?}",
            rules_of(&out)
        );
    }
}
