//! The kernel-evidence rules (`evidence.*`) on synthetic `EpochEvidence` built the
//! way the XDP program counts (`fw_common::evidence`'s bitmap hashes), published as
//! a gateway would (a batch every 250 ms carrying the current epoch's cumulative
//! record): scans and sweeps block within 100 probes whether unanswered or
//! refused, answered busy clients do not, windows expire, a provisional quarantine
//! is confirmed or lifted, a victim-side flood never blocks a source, and the flow
//! path and the evidence path do not report the same source twice.

use std::net::IpAddr;

use detector::{
    config::Config,
    engine::{Engine, Output},
};
use fw_common::{
    evidence::{host_bit, port_bit},
    filter::BlockReason,
};
use tad_wire::{
    Action, AlertKind, DirCounters, EndReason, EpochEvidence, EvidenceBatch, EvidenceEvent,
    EvidenceEventKind, EvidenceRole, FlowRecord, Mode, NodeId, SCHEMA_VERSION,
};

const T0: u64 = 1_700_000_000_000;
const ATTACKER: &str = "203.0.113.66";
const CLIENT: &str = "192.0.2.30";
const VICTIM: &str = "192.0.2.20";

fn gw() -> NodeId {
    "gateway-1".parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The address as the kernel hashes it: IPv4-mapped, network byte order.
fn key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Syn,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Silence,
    Reply,
    Refused,
    IcmpError,
}

/// One new flow a source opens.
#[derive(Clone, Copy)]
struct Probe {
    dst: IpAddr,
    dport: u16,
    kind: Kind,
    answer: Answer,
}

fn probe(dst: IpAddr, dport: u16, kind: Kind, answer: Answer) -> Probe {
    Probe {
        dst,
        dport,
        kind,
        answer,
    }
}

/// An empty record of `addr` in the epoch starting at `epoch_start_ms`.
fn empty(addr: IpAddr, role: EvidenceRole, epoch_start_ms: u64) -> EpochEvidence {
    EpochEvidence {
        addr,
        role,
        epoch_start_ms,
        hosts: [0; 4],
        ports: [0; 4],
        new_flows: 0,
        syn: 0,
        tcp_other: 0,
        udp: 0,
        icmp: 0,
        bytes: 0,
        replies: 0,
        refused: 0,
        icmp_errors: 0,
        unsolicited_rsts: 0,
    }
}

fn set(bits: &mut [u64; 4], bit: u32) {
    bits[(bit / 64) as usize] |= 1 << (bit % 64);
}

/// Counts `p` into the source record `r`, as `EvidenceSlot::count_opening` and
/// `count_answer` do.
fn count(r: &mut EpochEvidence, p: &Probe) {
    r.new_flows += 1;
    r.bytes += 44;
    set(&mut r.hosts, host_bit(&key(p.dst)));
    match p.kind {
        Kind::Syn => r.syn += 1,
        Kind::Udp => r.udp += 1,
        Kind::Icmp => r.icmp += 1,
    }
    if p.kind != Kind::Icmp {
        set(&mut r.ports, port_bit(p.dport));
    }
    match p.answer {
        Answer::Silence => {}
        Answer::Reply => r.replies += 1,
        Answer::Refused => r.refused += 1,
        Answer::IcmpError => r.icmp_errors += 1,
    }
}

fn batch(seq: u64, sent_at_ms: u64, records: Vec<EpochEvidence>) -> EvidenceBatch {
    EvidenceBatch {
        v: SCHEMA_VERSION,
        gateway_id: gw(),
        seq,
        partition: 0,
        sent_at_ms,
        records,
        events: Vec::new(),
    }
}

/// A gateway publishing `src`'s probes at `per_s` probes a second from
/// `start_ms`: a batch every 250 ms with the current epoch's cumulative record,
/// and one at once with a `report` event when the epoch's distinct hosts or ports
/// (set bits) reach `report_distinct` (the XDP program's default).
struct Gateway {
    seq: u64,
}

fn popcount(b: &[u64; 4]) -> u32 {
    b.iter().map(|w| w.count_ones()).sum()
}

impl Gateway {
    fn new() -> Self {
        Gateway { seq: 0 }
    }

    fn publish(
        &mut self,
        e: &mut Engine,
        rec: &Option<EpochEvidence>,
        at_ms: u64,
        events: Vec<EvidenceEvent>,
    ) -> Output {
        let mut b = batch(self.seq, at_ms, rec.iter().cloned().collect());
        b.events = events;
        self.seq += 1;
        e.evidence(&b, at_ms)
    }

    /// Every output, and how many probes had been sent when the first alert came.
    fn run(
        &mut self,
        e: &mut Engine,
        src: IpAddr,
        probes: &[Probe],
        per_s: u64,
        start_ms: u64,
    ) -> (Output, Option<usize>) {
        let report = fw_common::config::DEFAULT_REPORT_DISTINCT;
        let mut all = Output::default();
        let mut first = None;
        let mut rec: Option<EpochEvidence> = None;
        let mut reported = false;
        let mut next_poll = start_ms + 250;
        let mut note = |out: Output, sent: usize, all: &mut Output| {
            if first.is_none() && !out.alerts.is_empty() {
                first = Some(sent);
            }
            all.append(out);
        };
        for (i, p) in probes.iter().enumerate() {
            let at = start_ms + (i as u64 * 1000) / per_s;
            while next_poll <= at {
                let out = self.publish(e, &rec, next_poll, Vec::new());
                note(out, i, &mut all);
                next_poll += 250;
            }
            let epoch = at / 1000 * 1000;
            if rec.as_ref().is_none_or(|r| r.epoch_start_ms != epoch) {
                rec = Some(empty(src, EvidenceRole::Source, epoch));
                reported = false;
            }
            let r = rec.as_mut().unwrap();
            count(r, p);
            let (h, pt) = (popcount(&r.hosts), popcount(&r.ports));
            if !reported && (h >= report || pt >= report) {
                reported = true;
                let ev = event(
                    EvidenceEventKind::Report,
                    src,
                    h as u16,
                    pt as u16,
                    r.new_flows,
                    r.new_flows - r.replies,
                );
                let out = self.publish(e, &rec, at, vec![ev]);
                note(out, i + 1, &mut all);
            }
        }
        let out = self.publish(e, &rec, next_poll, Vec::new());
        note(out, probes.len(), &mut all);
        (all, first)
    }
}

fn engine() -> Engine {
    Engine::new(Config::default(), None)
}

fn rules_of(out: &Output) -> Vec<&str> {
    out.alerts
        .iter()
        .map(|a| a.explanation.rule.as_str())
        .collect()
}

fn hosts(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::from([198, 18, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect()
}

#[test]
fn vertical_scans_block_within_100_probes_unanswered_or_refused() {
    let limit = Config::default().portscan.vertical_ports as usize;
    for answer in [Answer::Silence, Answer::Refused] {
        let mut e = engine();
        let probes: Vec<_> = (0..1000)
            .map(|p| probe(ip(VICTIM), 1 + p, Kind::Syn, answer))
            .collect();
        // 400 probes/s: the demo's nmap rate.
        let (out, first) = Gateway::new().run(&mut e, ip(ATTACKER), &probes, 400, T0);
        let n = first.expect("the scan is reported");
        assert!((limit..=100).contains(&n), "reported after {n} probes");
        assert_eq!(rules_of(&out)[0], "evidence.vertical");
        let a = &out.alerts[0];
        assert_eq!(
            (a.kind, a.source, a.target),
            (AlertKind::PortScan, Some(ip(ATTACKER)), None)
        );
        assert!(a.explanation.observed["distinct_ports"] >= limit as f64);
        assert_eq!(out.verdicts.len(), 1, "one block, then it is quarantined");
        let v = &out.verdicts[0].verdict;
        assert_eq!(
            (v.action, v.target.addr(), v.reason, v.rule.as_str()),
            (
                Action::Quarantine,
                ip(ATTACKER),
                BlockReason::PortScan,
                "evidence.vertical"
            )
        );
        assert_eq!(a.verdict_id.as_deref(), Some(v.id.as_str()));
        assert_eq!(out.verdicts[0].gateway_id, gw());
    }
}

#[test]
fn horizontal_scans_and_sweeps_block_within_100_probes() {
    let cfg = Config::default();
    for (kind, answer, rule, limit) in [
        (
            Kind::Syn,
            Answer::Silence,
            "evidence.horizontal",
            cfg.portscan.horizontal_hosts,
        ),
        (
            Kind::Udp,
            Answer::IcmpError,
            "evidence.horizontal",
            cfg.portscan.horizontal_hosts,
        ),
        (
            Kind::Icmp,
            Answer::Silence,
            "evidence.sweep",
            cfg.portscan.sweep_hosts,
        ),
    ] {
        let mut e = engine();
        let probes: Vec<_> = hosts(500)
            .into_iter()
            .map(|h| probe(h, 23, kind, answer))
            .collect();
        let (out, first) = Gateway::new().run(&mut e, ip(ATTACKER), &probes, 400, T0);
        let n = first.unwrap_or_else(|| panic!("{rule}: not reported"));
        assert!((limit as usize..=100).contains(&n), "{rule}: after {n}");
        assert_eq!(rules_of(&out)[0], rule);
        assert_eq!(out.verdicts.len(), 1);
        assert_eq!(out.verdicts[0].verdict.rule, rule);
        assert_eq!(out.verdicts[0].verdict.action, Action::Quarantine);
    }
}

#[test]
fn an_answered_busy_client_is_not_a_scan() {
    let mut e = engine();
    // 60 new connections a second for 30 s to 300 distinct hosts on 443/80,
    // every one answered: replies = new flows.
    let dsts = hosts(300);
    let probes: Vec<_> = (0..1800)
        .map(|i| {
            probe(
                dsts[i % dsts.len()],
                if i % 3 == 0 { 80 } else { 443 },
                Kind::Syn,
                Answer::Reply,
            )
        })
        .collect();
    let (out, _) = Gateway::new().run(&mut e, ip(CLIENT), &probes, 60, T0);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
    assert!(out.verdicts.is_empty());
    // Passive FTP-like: 40 distinct ports on one server, answered.
    let probes: Vec<_> = (0..40)
        .map(|p| probe(ip(VICTIM), 30_000 + p, Kind::Syn, Answer::Reply))
        .collect();
    let (out, _) = Gateway::new().run(&mut e, ip(CLIENT), &probes, 50, T0 + 40_000);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
    // The same traffic unanswered is a scan: the answers made the difference.
    let probes: Vec<_> = (0..40)
        .map(|p| probe(ip(VICTIM), 30_000 + p, Kind::Syn, Answer::Refused))
        .collect();
    let (out, _) = Gateway::new().run(&mut engine(), ip(CLIENT), &probes, 50, T0);
    assert!(!out.alerts.is_empty());
    assert!(rules_of(&out).iter().all(|r| *r == "evidence.vertical"));
}

#[test]
fn a_peer_to_peer_client_with_one_port_per_host_is_not_a_scan() {
    // 200 hosts, each on its own port, half unanswered: many hosts and many ports,
    // but about one flow per host and per port.
    let dsts = hosts(200);
    let probes: Vec<_> = (0..200)
        .map(|i| {
            let answer = if i % 2 == 0 {
                Answer::Silence
            } else {
                Answer::Reply
            };
            probe(dsts[i], 20_000 + i as u16 * 7, Kind::Udp, answer)
        })
        .collect();
    let (out, _) = Gateway::new().run(&mut engine(), ip(CLIENT), &probes, 20, T0);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
}

#[test]
fn probes_outside_the_window_do_not_count() {
    let window_ms = (Config::default().portscan.window_s * 1000.0) as u64;
    let first: Vec<_> = (0..10)
        .map(|p| probe(ip(VICTIM), 100 + p, Kind::Syn, Answer::Refused))
        .collect();
    let second: Vec<_> = (0..10)
        .map(|p| probe(ip(VICTIM), 200 + p, Kind::Syn, Answer::Refused))
        .collect();
    for (gap_ms, reported) in [(window_ms + 2_000, false), (window_ms / 2, true)] {
        let mut e = engine();
        let mut g = Gateway::new();
        let (out, _) = g.run(&mut e, ip(ATTACKER), &first, 20, T0);
        assert!(out.alerts.is_empty(), "10 ports are below the threshold");
        let (out, _) = g.run(&mut e, ip(ATTACKER), &second, 20, T0 + gap_ms);
        assert_eq!(
            rules_of(&out) == ["evidence.vertical"],
            reported,
            "second half {gap_ms} ms later: {:?}",
            rules_of(&out)
        );
    }
}

fn event(
    kind: EvidenceEventKind,
    addr: IpAddr,
    hosts: u16,
    ports: u16,
    flows: u32,
    unreplied: u32,
) -> EvidenceEvent {
    EvidenceEvent {
        kind,
        addr,
        at_ms: T0,
        union_hosts: hosts,
        union_ports: ports,
        new_flows: flows,
        unreplied,
    }
}

fn with_events(mut b: EvidenceBatch, events: Vec<EvidenceEvent>) -> EvidenceBatch {
    b.events = events;
    b
}

/// One epoch's record of `src` opening `probes`.
fn record(src: IpAddr, probes: &[Probe]) -> EpochEvidence {
    let mut r = empty(src, EvidenceRole::Source, T0);
    for p in probes {
        count(&mut r, p);
    }
    r
}

#[test]
fn a_provisional_quarantine_of_a_scanner_is_confirmed_at_once() {
    use EvidenceEventKind::Quarantine;
    let probes: Vec<_> = hosts(60)
        .into_iter()
        .map(|h| probe(h, 22, Kind::Syn, Answer::Silence))
        .collect();
    // From this engine's view (the record in the same batch).
    let mut e = engine();
    let b = with_events(
        batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]),
        vec![event(Quarantine, ip(ATTACKER), 55, 1, 60, 60)],
    );
    let out = e.evidence(&b, T0 + 900);
    assert_eq!(rules_of(&out), ["evidence.horizontal"]);
    assert_eq!(out.verdicts.len(), 1);
    let v = &out.verdicts[0].verdict;
    assert_eq!(
        (v.action, v.reason, v.rule.as_str()),
        (
            Action::Quarantine,
            BlockReason::PortScan,
            "evidence.horizontal"
        )
    );
    assert_eq!(e.counters.quarantines_confirmed, 1);
    // From the event's own numbers alone (its records not yet seen).
    let mut e = engine();
    let b = with_events(
        batch(0, T0 + 900, Vec::new()),
        vec![event(Quarantine, ip(ATTACKER), 3, 50, 60, 58)],
    );
    let out = e.evidence(&b, T0 + 900);
    assert_eq!(rules_of(&out), ["evidence.vertical"]);
    assert_eq!(out.verdicts[0].verdict.action, Action::Quarantine);
    // A second quarantine event while blocked: neither a new block nor a lift.
    let out = e.evidence(&b, T0 + 1_100);
    assert!(out.verdicts.is_empty(), "{:?}", out.verdicts);
    assert_eq!(e.counters.quarantines_confirmed, 2);
}

#[test]
fn a_provisional_quarantine_of_a_benign_burst_is_lifted() {
    use EvidenceEventKind::Quarantine;
    // 60 hosts in one second, all answered.
    let probes: Vec<_> = hosts(60)
        .into_iter()
        .map(|h| probe(h, 443, Kind::Syn, Answer::Reply))
        .collect();
    let mut e = engine();
    let b = with_events(
        batch(0, T0 + 900, vec![record(ip(CLIENT), &probes)]),
        vec![event(Quarantine, ip(CLIENT), 55, 1, 60, 2)],
    );
    let out = e.evidence(&b, T0 + 900);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
    assert_eq!(out.verdicts.len(), 1);
    let v = &out.verdicts[0].verdict;
    assert_eq!(
        (
            v.action,
            v.target.addr(),
            v.reason,
            v.rule.as_str(),
            v.ttl_s
        ),
        (
            Action::Unblock,
            ip(CLIENT),
            BlockReason::Quarantine,
            "evidence.lift",
            None
        )
    );
    assert!(!v.observe_only);
    assert_eq!(e.counters.quarantines_lifted, 1);
    // An allowlisted scanner: the detector would not block it, so it is lifted.
    let mut cfg = Config::default();
    cfg.policy.allowlist = vec!["203.0.113.0/24".parse().unwrap()];
    let mut e = Engine::new(cfg, None);
    let b = with_events(
        batch(0, T0 + 900, Vec::new()),
        vec![event(Quarantine, ip(ATTACKER), 3, 50, 60, 58)],
    );
    let out = e.evidence(&b, T0 + 900);
    assert_eq!(rules_of(&out), ["evidence.vertical"], "still alerted");
    assert_eq!(
        out.verdicts
            .iter()
            .map(|v| v.verdict.action)
            .collect::<Vec<_>>(),
        [Action::Unblock]
    );
}

fn flow(
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    fwd: DirCounters,
    bwd: DirCounters,
) -> FlowRecord {
    FlowRecord {
        src: ip(src),
        dst: ip(dst),
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
        end_reason: EndReason::EndOfFlow,
    }
}

fn syn() -> DirCounters {
    DirCounters {
        packets: 1,
        bytes: 44,
        syn: 1,
        tcp_flags_or: 0x02,
        min_len: 44,
        max_len: 44,
        ..Default::default()
    }
}

fn rst_ack() -> DirCounters {
    DirCounters {
        packets: 1,
        bytes: 40,
        rst: 1,
        tcp_flags_or: 0x14,
        min_len: 40,
        max_len: 40,
        ..Default::default()
    }
}

#[test]
fn an_address_blocked_for_another_reason_is_never_lifted() {
    let mut e = engine();
    // Brute force on SSH (flow path): blocked.
    let n = Config::default().bruteforce.attempts as u16;
    let recs: Vec<_> = (0..n)
        .map(|i| flow(CLIENT, VICTIM, 50_000 + i, 22, syn(), rst_ack()))
        .collect();
    let out = e.records(&gw(), &recs, T0);
    assert_eq!(out.verdicts.len(), 1, "{:?}", rules_of(&out));
    assert_ne!(out.verdicts[0].verdict.rule, "evidence.lift");
    // Then the XDP program quarantines it during an answered burst.
    let b = with_events(
        batch(0, T0 + 900, Vec::new()),
        vec![event(
            EvidenceEventKind::Quarantine,
            ip(CLIENT),
            55,
            1,
            60,
            0,
        )],
    );
    let out = e.evidence(&b, T0 + 900);
    assert!(out.verdicts.is_empty(), "{:?}", out.verdicts);
    assert_eq!(e.counters.quarantines_lifted, 0);
}

#[test]
fn a_flood_on_a_victim_alerts_on_the_victim_and_blocks_no_source() {
    let cfg = Config::default();
    let mut e = engine();
    let sources = hosts(600);
    let mut dst = empty(ip(VICTIM), EvidenceRole::Destination, T0);
    let mut recs = Vec::new();
    for s in &sources {
        dst.new_flows += 1;
        dst.syn += 1;
        set(&mut dst.hosts, host_bit(&key(*s)));
        set(&mut dst.ports, port_bit(80));
        // Each spoofed source: one SYN, unanswered.
        recs.push(record(
            *s,
            &[probe(ip(VICTIM), 80, Kind::Syn, Answer::Silence)],
        ));
    }
    recs.push(dst);
    let out = e.evidence(&batch(0, T0 + 900, recs), T0 + 900);
    assert_eq!(rules_of(&out), ["evidence.synflood"]);
    let a = &out.alerts[0];
    assert_eq!(
        (a.kind, a.source, a.target),
        (AlertKind::SynFlood, None, Some(ip(VICTIM)))
    );
    assert!(a.explanation.observed["syn"] >= cfg.synflood.per_victim_half_open as f64);
    // No source is blocked; the victim gets SYN authentication at its gateway.
    assert_eq!(out.verdicts.len(), 1, "{:?}", out.verdicts);
    let v = &out.verdicts[0].verdict;
    assert_eq!(
        (v.action, v.target.addr(), v.port, v.ttl_s),
        (
            Action::ProtectSyn,
            ip(VICTIM),
            None,
            Some(cfg.synflood.syn_auth_ttl_s)
        )
    );
    // While the flood goes on (a sign every 250 ms poll): no new verdict until
    // the protection is half-way through its lifetime, then a renewal.
    let half = cfg.synflood.syn_auth_ttl_s * 1000 / 2;
    let mut renewals = 0;
    let mut t = T0 + 900;
    let mut seq = 1;
    while t < T0 + 900 + half + 1_000 {
        t += 250;
        let mut dst = dst_flood(&sources, t - t % 1000);
        dst.syn += (seq % 3) as u32;
        let out = e.evidence(&batch(seq, t, vec![dst]), t);
        seq += 1;
        for v in &out.verdicts {
            assert_eq!(v.verdict.action, Action::ProtectSyn, "{v:?}");
            renewals += 1;
        }
    }
    assert_eq!(renewals, 1, "one renewal at half its lifetime");
    // The flood stops: SYN authentication off after the quiet time (the window's
    // old epochs still count as signs until they leave it).
    let mut off = None;
    while t < T0 + 900 + half + 60_000 && off.is_none() {
        t += 250;
        let out = e.evidence(&batch(seq, t, Vec::new()), t);
        seq += 1;
        off = out
            .verdicts
            .iter()
            .find(|v| v.verdict.action == Action::UnprotectSyn)
            .map(|v| (t, v.verdict.target.addr()));
    }
    let (at, who) = off.expect("SYN authentication switched off after the flood");
    assert_eq!(who, ip(VICTIM));
    let quiet = (cfg.synflood.syn_auth_quiet_s * 1000.0) as u64;
    let window = (cfg.synflood.window_s * 1000.0) as u64;
    assert!(at <= t && at - (T0 + 900 + half + 1_000) <= window + quiet + 1_000);
    assert_eq!((e.counters.syn_auth_on, e.counters.syn_auth_off), (2, 1));
    // Below the per-victim threshold: nothing.
    let mut dst = empty(ip(VICTIM), EvidenceRole::Destination, T0);
    for s in sources
        .iter()
        .take(cfg.synflood.per_victim_half_open as usize - 1)
    {
        dst.new_flows += 1;
        dst.syn += 1;
        set(&mut dst.hosts, host_bit(&key(*s)));
    }
    let out = engine().evidence(&batch(0, T0 + 900, vec![dst]), T0 + 900);
    assert!(out.alerts.is_empty(), "{:?}", rules_of(&out));
}

/// One epoch's destination record of `victim` flooded by one SYN from each source.
fn dst_flood(sources: &[IpAddr], epoch_start_ms: u64) -> EpochEvidence {
    let mut dst = empty(ip(VICTIM), EvidenceRole::Destination, epoch_start_ms);
    for s in sources {
        dst.new_flows += 1;
        dst.syn += 1;
        set(&mut dst.hosts, host_bit(&key(*s)));
        set(&mut dst.ports, port_bit(80));
    }
    dst
}

/// The blocking port-scan alerts (the flow path's `portscan.low` and the
/// half-open handshakes' `synflood.source` left out).
fn scan_rules(out: &Output) -> Vec<&str> {
    out.alerts
        .iter()
        .filter(|a| a.kind == AlertKind::PortScan && a.explanation.rule != "portscan.low")
        .map(|a| a.explanation.rule.as_str())
        .collect()
}

#[test]
fn the_flow_path_and_the_evidence_path_report_a_scanner_once() {
    let limit = Config::default().portscan.vertical_ports as u16;
    let flows: Vec<_> = (0..limit + 5)
        .map(|p| flow(ATTACKER, VICTIM, 40_000 + p, 1000 + p, syn(), rst_ack()))
        .collect();
    let probes: Vec<_> = (0..limit + 5)
        .map(|p| probe(ip(VICTIM), 1000 + p, Kind::Syn, Answer::Refused))
        .collect();
    // Flow path first.
    let mut e = engine();
    let mut out = e.records(&gw(), &flows, T0);
    assert_eq!(scan_rules(&out), ["portscan.vertical"]);
    out.append(e.evidence(
        &batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]),
        T0 + 900,
    ));
    assert_eq!(scan_rules(&out), ["portscan.vertical"]);
    assert_eq!(out.verdicts.len(), 1);
    assert_eq!(e.counters.cross_path_suppressed, 1);
    // Evidence path first.
    let mut e = engine();
    let mut out = e.evidence(
        &batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]),
        T0 + 900,
    );
    assert_eq!(scan_rules(&out), ["evidence.vertical"]);
    out.append(e.records(&gw(), &flows, T0 + 1_000));
    assert_eq!(scan_rules(&out), ["evidence.vertical"]);
    assert_eq!(out.verdicts.len(), 1);
    // After the cooldown the other path may report again.
    let cool_ms = (Config::default().policy.alert_cooldown_s * 1000.0) as u64;
    let later: Vec<_> = flows
        .iter()
        .map(|r| FlowRecord {
            sport: r.sport + 1000,
            ..r.clone()
        })
        .collect();
    let out = e.records(&gw(), &later, T0 + 900 + cool_ms + 1_000);
    assert!(
        scan_rules(&out).contains(&"portscan.vertical"),
        "{:?}",
        scan_rules(&out)
    );
}

#[test]
fn an_idle_scan_zombie_blocked_by_evidence_is_lifted_on_spoofing_evidence() {
    let mut e = engine();
    let probes: Vec<_> = (0..30)
        .map(|p| probe(ip(VICTIM), 1000 + p, Kind::Syn, Answer::Refused))
        .collect();
    let out = e.evidence(
        &batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]),
        T0 + 900,
    );
    assert_eq!(out.verdicts[0].verdict.action, Action::Quarantine);
    // Its flow records then show an unanswered RST-only flow: spoofing evidence.
    let rst = DirCounters {
        packets: 4,
        bytes: 160,
        rst: 4,
        tcp_flags_or: 0x04,
        min_len: 40,
        max_len: 40,
        ..Default::default()
    };
    let out = e.records(
        &gw(),
        &[flow(
            ATTACKER,
            VICTIM,
            443,
            53592,
            rst,
            DirCounters::default(),
        )],
        T0 + 1_500,
    );
    let lifts: Vec<_> = out
        .verdicts
        .iter()
        .filter(|v| v.verdict.action == Action::Unblock)
        .collect();
    assert_eq!(lifts.len(), 1, "{:?}", out.verdicts);
    assert_eq!(lifts[0].verdict.rule, "evidence.lift");
    // And evidence of it no longer blocks while the spoofing evidence lasts.
    let out = e.evidence(
        &batch(1, T0 + 2_900, vec![record(ip(ATTACKER), &probes)]),
        T0 + 2_900,
    );
    assert!(out.verdicts.is_empty(), "{:?}", out.verdicts);
    assert!(e.counters.evidence_spoofed >= 1);
}

#[test]
fn observe_mode_foreign_partitions_and_disabled_evidence() {
    let probes: Vec<_> = (0..30)
        .map(|p| probe(ip(VICTIM), 1000 + p, Kind::Syn, Answer::Refused))
        .collect();
    let b = batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]);
    let mut cfg = Config::default();
    cfg.detector.mode = Mode::Observe;
    let out = Engine::new(cfg, None).evidence(&b, T0 + 900);
    assert_eq!(out.verdicts.len(), 1);
    assert!(out.verdicts[0].verdict.observe_only);
    // A partition this instance does not take.
    let mut cfg = Config::default();
    cfg.partitions.count = 2;
    cfg.partitions.take = vec![1 - tad_wire::partition_of(ip(ATTACKER), 2)];
    let mut e = Engine::new(cfg, None);
    assert!(e.evidence(&b, T0 + 900).alerts.is_empty());
    assert_eq!(e.counters.foreign_evidence, 1);
    let mut cfg = Config::default();
    cfg.evidence.enabled = false;
    let mut e = Engine::new(cfg, None);
    assert_eq!(e.evidence(&b, T0 + 900), Output::default());
    assert_eq!(e.counters.evidence_batches, 1);
}

#[test]
fn the_unreplied_share_is_a_runtime_threshold() {
    // A scan with a third of its probes answered: reported at the default share
    // (0.5), not once the share is raised to 0.9.
    let probes: Vec<_> = (0..30)
        .map(|p| {
            let a = if p % 3 == 0 {
                Answer::Reply
            } else {
                Answer::Refused
            };
            probe(ip(VICTIM), 1000 + p, Kind::Syn, a)
        })
        .collect();
    let b = batch(0, T0 + 900, vec![record(ip(ATTACKER), &probes)]);
    assert_eq!(
        rules_of(&engine().evidence(&b, T0 + 900)),
        ["evidence.vertical"]
    );
    let mut e = engine();
    e.apply_thresholds(&[("evidence.unreplied_share".to_string(), 0.9)].into())
        .unwrap();
    assert!(e.evidence(&b, T0 + 900).alerts.is_empty());
    let mut e = engine();
    assert!(
        e.apply_thresholds(&[("evidence.unreplied_share".to_string(), 1.5)].into())
            .is_err()
    );
}
