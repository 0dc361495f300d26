//! A one-way view (issue 15 item 7): with XDP on the LAN side only, a device's
//! outbound connections show its own packets and never the answers routed back
//! to it. Such connections are not half-open handshakes nor scan probes; a SYN
//! flood seen the same way still is.

use detector::{
    config::Config,
    engine::{Engine, Output},
};
use fw_common::flow::tcp_flags::{ACK, FIN, PSH, SYN};
use tad_wire::{AlertKind, DirCounters, EndReason, FlowRecord, NodeId};

const T0: u64 = 1_700_000_000_000;
const DEVICE: &str = "192.0.2.50";

fn gw() -> NodeId {
    "gateway-1".parse().expect("a valid node id")
}

/// The opener's counters of a TCP connection as the meter counts them: one SYN,
/// then `acks` ACK-only and `data` ACK+PSH segments, then FIN+ACK if `fin`.
fn opener(acks: u32, data: u32, fin: bool) -> DirCounters {
    let packets = 1 + acks as u64 + data as u64 + fin as u64;
    let mut flags = SYN;
    if acks > 0 || data > 0 || fin {
        flags |= ACK;
    }
    if data > 0 {
        flags |= PSH;
    }
    if fin {
        flags |= FIN;
    }
    DirCounters {
        packets,
        bytes: 60 + 52 * acks as u64 + 300 * data as u64 + 52 * fin as u64,
        syn: 1,
        syn_ack: 0,
        fin: fin as u32,
        rst: 0,
        psh: data,
        ack_only: acks,
        urg: 0,
        no_flags: 0,
        min_len: 52,
        max_len: if data > 0 { 300 } else { 60 },
        tcp_flags_or: flags,
        icmp: None,
    }
}

fn conn(i: u32, dst: String, dport: u16, fwd: DirCounters) -> FlowRecord {
    FlowRecord {
        src: DEVICE.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40_000 + i as u16,
        dport,
        proto: 6,
        vlan: 0,
        start_ms: T0 + i as u64 * 100,
        duration_us: 80_000,
        fwd,
        // The answers never pass the LAN-side XDP program.
        bwd: DirCounters::default(),
        iat_mean_us: 20_000.0,
        iat_std_us: 5_000.0,
        end_reason: EndReason::EndOfFlow,
    }
}

/// Feeds one record per 100 ms (100 records: 10 s), then lets time run on.
fn run(recs: &[FlowRecord]) -> Output {
    let mut e = Engine::new(Config::default(), None);
    let mut out = Output::default();
    for (i, r) in recs.iter().enumerate() {
        out.append(e.records(&gw(), std::slice::from_ref(r), T0 + i as u64 * 100));
    }
    out.append(e.tick(T0 + 120_000));
    out
}

fn flagged(out: &Output) -> Vec<String> {
    out.alerts
        .iter()
        .filter(|a| a.kind != AlertKind::TrafficSpike)
        .map(|a| format!("{:?} {}", a.kind, a.explanation.rule))
        .collect()
}

#[test]
fn a_device_making_100_outbound_connections_in_10_s_is_never_flagged_nor_blocked() {
    // To its cloud API and update server (few hosts), shapes of HTTPS requests:
    // short (SYN, ACK, data, FIN: within the probe packet limit) and longer. (Not
    // MQTT: 50 sessions to a broker in 10 s is the brute-force rule's to judge.)
    let cloud: Vec<FlowRecord> = (0..100)
        .map(|i| {
            let fwd = match i % 3 {
                0 => opener(1, 1, true),
                1 => opener(3, 4, true),
                _ => opener(1, 2, false),
            };
            conn(
                i,
                format!("198.51.100.{}", 10 + i % 3),
                [443, 8443][i as usize % 2],
                fwd,
            )
        })
        .collect();
    // A hub fetching from many content hosts on one port (a horizontal shape).
    let many: Vec<FlowRecord> = (0..100)
        .map(|i| {
            conn(
                i,
                format!("203.0.113.{}", 1 + i % 60),
                443,
                opener(1, 1, true),
            )
        })
        .collect();
    for (what, recs) in [("cloud", cloud), ("many hosts", many)] {
        let out = run(&recs);
        assert!(flagged(&out).is_empty(), "{what}: {:?}", flagged(&out));
        assert!(out.verdicts.is_empty(), "{what}: {:?}", out.verdicts);
        assert!(
            out.trust.iter().all(|t| t.score >= 75.0),
            "{what}: trust {:?}",
            out.trust
        );
    }
}

#[test]
fn a_one_way_syn_flood_is_still_flagged_and_blocked() {
    // SYNs only (retransmitted, never followed by an ACK): half-open handshakes.
    let flood: Vec<FlowRecord> = (0..100)
        .map(|i| conn(i, "198.51.100.10".to_string(), 443, opener(0, 0, false)))
        .collect();
    let out = run(&flood);
    assert!(
        out.alerts
            .iter()
            .any(|a| a.kind == AlertKind::SynFlood && a.explanation.rule == "synflood.source"),
        "{:?}",
        flagged(&out)
    );
    assert!(!out.verdicts.is_empty());
}
