//! The detection rules. Each keeps its own per-source (or per-victim, per-device)
//! state in sliding windows and returns [`Detection`]s the engine turns into alerts
//! and, through the policy, verdicts.
//!
//! | rule id | kind | counts | default threshold | blocks |
//! |---|---|---|---|---|
//! | `portscan.vertical` | port_scan | distinct ports probed on one host, 60 s | 15 | yes |
//! | `portscan.horizontal` | port_scan | distinct hosts probed on one port, 60 s | 25 | yes |
//! | `portscan.sweep` | port_scan | distinct hosts sent ICMP requests, 60 s | 25 | yes |
//! | `portscan.low` | port_scan | distinct ports probed on one host, 60 s | 5 | no |
//! | `portscan.spoofed` | port_scan | a scan whose source shows spoofing evidence (idle scan) | as above | no (reported on the victim) |
//! | `synflood.source` | syn_flood | half-open handshakes from one source, 10 s | 20 | yes |
//! | `synflood.victim` | syn_flood | half-open handshakes to one host, 10 s | 200 | no (victim only) |
//! | `bruteforce.auth` | brute_force | short/failed connections to one auth service, 120 s | 10 | yes |
//! | `bruteforce.http` | brute_force | short/failed connections to one HTTP service, 120 s | 60 | no |
//! | `access.policy` | unauthorized_access | connection to a port the device policy does not allow | 1 | if answered and the policy says so |
//! | `spike.rate` | traffic_spike | device send rate vs its EWMA baseline | z >= 6 and >= 5000 pps or 5 MB/s | no |
//!
//! Spoofing evidence: a source that sent unanswered RST-only flows to a host
//! ([`classify::unsolicited_rst`]) within `portscan.window_s` is resetting packets
//! that host never sent, so someone is forging addresses between the two (nmap's
//! idle scan tests its zombie this way). Scans and floods "from" such a source are
//! reported on the victim without a source and never block it. Known limit: an
//! attacker who sends such RSTs first is alerted on but not blocked.

use std::{collections::BTreeMap, net::IpAddr};

use tad_wire::{AlertKind, FlowRecord, FlowRef, Severity};

use crate::{
    HashMap,
    classify::{self, AuthAttempt, ProbeKind},
    config::Config,
    window::Distinct,
};

/// Most events kept per window.
pub const WINDOW_CAP: usize = 4096;
/// Flows attached to an alert.
pub const MAX_FLOWS: usize = 20;

/// Key of the alert cooldown: (rule id, source, target).
pub type CooldownKey = (&'static str, Option<IpAddr>, Option<IpAddr>);

/// The engine's alert cooldown, consulted before a detection is built (building
/// one formats text and copies flows): the same rule on the same source/target
/// alerts again only after the cooldown, or once its main number has doubled.
pub struct Gate<'a> {
    pub cooldown: &'a HashMap<CooldownKey, (u64, f64)>,
    pub now_ms: u64,
    pub cool_ms: u64,
}

impl Gate<'_> {
    pub fn open(
        &self,
        rule: &'static str,
        source: Option<IpAddr>,
        target: Option<IpAddr>,
        main: f64,
    ) -> bool {
        match self.cooldown.get(&(rule, source, target)) {
            Some((t, last)) => self.now_ms.saturating_sub(*t) >= self.cool_ms || main >= 2.0 * last,
            None => true,
        }
    }
}

fn scan_rule(rule: &'static str, spoofed: bool) -> &'static str {
    if spoofed { "portscan.spoofed" } else { rule }
}

fn scan_src(r: &FlowRecord, spoofed: bool) -> Option<IpAddr> {
    (!spoofed).then_some(r.src)
}

/// One finding, before it becomes an [`tad_wire::Alert`].
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub kind: AlertKind,
    pub rule: &'static str,
    pub severity: Severity,
    /// In [0, 1].
    pub confidence: f32,
    pub source: Option<IpAddr>,
    pub target: Option<IpAddr>,
    pub window_s: f64,
    pub observed: BTreeMap<String, f64>,
    pub thresholds: BTreeMap<String, f64>,
    /// The number compared with the threshold (drives the cooldown's escalation).
    pub main: f64,
    pub text: String,
    pub flows: Vec<FlowRef>,
    /// Whether the policy may block the source for it.
    pub may_block: bool,
}

pub fn flow_ref(r: &FlowRecord) -> FlowRef {
    FlowRef {
        src: r.src,
        dst: r.dst,
        sport: r.sport,
        dport: r.dport,
        proto: r.proto,
        start_ms: r.start_ms,
    }
}

fn map(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
    kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

/// Recent flows of one source, for the alert's flow list.
#[derive(Default)]
struct Recent(std::collections::VecDeque<FlowRef>);

impl Recent {
    fn push(&mut self, r: &FlowRecord) {
        if self.0.len() >= MAX_FLOWS {
            self.0.pop_front();
        }
        self.0.push_back(flow_ref(r));
    }
    fn list(&self) -> Vec<FlowRef> {
        self.0.iter().cloned().collect()
    }
}

/// Per-source state of the scan, flood and brute-force rules.
pub struct SourceState {
    pub last_ms: u64,
    /// (dst, port) pairs probed.
    probes: Distinct<(IpAddr, u16)>,
    /// Per destination: ports probed.
    ports_by_host: HashMap<IpAddr, Distinct<u16>>,
    /// Per port: hosts probed.
    hosts_by_port: HashMap<u16, Distinct<IpAddr>>,
    /// Hosts sent ICMP requests.
    sweep: Distinct<IpAddr>,
    kinds: BTreeMap<ProbeKind, u32>,
    /// Half-open handshakes, by victim.
    half_open: Distinct<IpAddr>,
    /// Auth attempts by (dst, port).
    auth: HashMap<(IpAddr, u16), Distinct<u8>>,
    /// Spoofing evidence: host -> last unsolicited RST flow, ms.
    spoof: HashMap<IpAddr, u64>,
    recent: Recent,
    swept_ms: u64,
    auth_swept_ms: u64,
}

impl SourceState {
    fn new(now_ms: u64) -> Self {
        SourceState {
            last_ms: now_ms,
            probes: Distinct::new(WINDOW_CAP),
            ports_by_host: HashMap::default(),
            hosts_by_port: HashMap::default(),
            sweep: Distinct::new(WINDOW_CAP),
            kinds: BTreeMap::new(),
            half_open: Distinct::new(WINDOW_CAP),
            auth: HashMap::default(),
            spoof: HashMap::default(),
            recent: Recent::default(),
            swept_ms: now_ms,
            auth_swept_ms: now_ms,
        }
    }

    /// Whether this source shows spoofing evidence towards `dst`.
    fn spoofed_towards(&self, dst: IpAddr, now_ms: u64, window_ms: u64) -> bool {
        self.spoof
            .get(&dst)
            .is_some_and(|t| now_ms.saturating_sub(*t) <= window_ms)
    }
}

/// Per-victim SYN-flood state.
pub struct VictimState {
    pub last_ms: u64,
    half_open: Distinct<IpAddr>,
    recent: Recent,
}

/// Per-device traffic-rate baseline (EWMA mean and variance, after Welford /
/// Finch, "Incremental calculation of weighted mean and variance", 2009).
pub struct RateState {
    bucket_start_ms: u64,
    packets: u64,
    bytes: u64,
    mean_pps: f64,
    var_pps: f64,
    mean_bps: f64,
    var_bps: f64,
    intervals: u32,
    alerted_bucket: Option<u64>,
}

impl RateState {
    fn new(now_ms: u64) -> Self {
        RateState {
            bucket_start_ms: now_ms,
            packets: 0,
            bytes: 0,
            mean_pps: 0.0,
            var_pps: 0.0,
            mean_bps: 0.0,
            var_bps: 0.0,
            intervals: 0,
            alerted_bucket: None,
        }
    }

    fn learn(&mut self, pps: f64, bps: f64, alpha: f64) {
        let upd = |mean: &mut f64, var: &mut f64, x: f64| {
            let diff = x - *mean;
            let incr = alpha * diff;
            *mean += incr;
            *var = (1.0 - alpha) * (*var + diff * incr);
        };
        upd(&mut self.mean_pps, &mut self.var_pps, pps);
        upd(&mut self.mean_bps, &mut self.var_bps, bps);
        self.intervals = self.intervals.saturating_add(1);
    }
}

/// All rule state of one engine.
#[derive(Default)]
pub struct Rules {
    pub sources: HashMap<IpAddr, SourceState>,
    pub victims: HashMap<IpAddr, VictimState>,
    pub rates: HashMap<IpAddr, RateState>,
    /// Records whose source, victim or device could not get state because its
    /// table held [`MAX_TRACKED`] entries (e.g. a flood from millions of spoofed
    /// addresses); the rule skipped them.
    pub state_full: u64,
}

/// Most entries per state table (sources, victims, devices). Bounds memory under
/// spoofed floods: about 100-300 bytes per entry.
pub const MAX_TRACKED: usize = 262_144;

impl Rules {
    /// Runs every rule on one record at `now_ms`. `victim_share` scales the
    /// per-victim threshold to this instance's share of the partitions.
    pub fn record(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        victim_share: f64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        self.scan_flood_brute(cfg, r, now_ms, gate, out);
        self.victim(cfg, r, now_ms, victim_share, gate, out);
        access(cfg, r, out);
        self.spike(cfg, r.src, r.fwd.packets, r.fwd.bytes, now_ms, gate, out);
        if r.bwd.packets > 0 {
            self.spike(cfg, r.dst, r.bwd.packets, r.bwd.bytes, now_ms, gate, out);
        }
    }

    fn scan_flood_brute(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        let ps = &cfg.portscan;
        let probe = classify::probe(r, ps.max_probe_packets);
        let half_open = classify::half_open(r);
        let unsolicited = classify::unsolicited_rst(r);
        let bf = &cfg.bruteforce;
        let auth_port = bf.ports.contains(&r.dport);
        let http_port = bf.http_ports.contains(&r.dport);
        let attempt = if auth_port || http_port {
            classify::auth_attempt(r, ms(bf.max_duration_s) * 1000, bf.max_bytes)
        } else {
            None
        };
        if probe.is_none() && !half_open && !unsolicited && attempt.is_none() {
            return;
        }
        if self.sources.len() >= MAX_TRACKED && !self.sources.contains_key(&r.src) {
            self.state_full += 1;
            return;
        }
        let st = self
            .sources
            .entry(r.src)
            .or_insert_with(|| SourceState::new(now_ms));
        st.last_ms = now_ms;
        st.recent.push(r);
        let scan_w = ms(ps.window_s);
        if unsolicited {
            st.spoof.insert(r.dst, now_ms);
        }
        if !st.spoof.is_empty() {
            st.spoof.retain(|_, t| now_ms.saturating_sub(*t) <= scan_w);
        }
        let spoofed = st.spoofed_towards(r.dst, now_ms, scan_w);

        if let Some(kind) = probe {
            st.probes.evict(now_ms, scan_w);
            st.probes.insert(now_ms, (r.dst, r.dport));
            *st.kinds.entry(kind).or_insert(0) += 1;
            let kinds_of = |kinds: &BTreeMap<ProbeKind, u32>| {
                let k: Vec<String> = kinds
                    .iter()
                    .map(|(k, n)| format!("{}={n}", k.name()))
                    .collect();
                k.join(" ")
            };
            if kind == ProbeKind::IcmpSweep {
                st.sweep.evict(now_ms, scan_w);
                st.sweep.insert(now_ms, r.dst);
                let hosts = st.sweep.distinct() as f64;
                if hosts >= ps.sweep_hosts as f64
                    && gate.open(
                        scan_rule("portscan.sweep", spoofed),
                        scan_src(r, spoofed),
                        Some(r.dst),
                        hosts,
                    )
                {
                    out.push(scan_detection(
                        "portscan.sweep",
                        r,
                        spoofed,
                        0.9,
                        ps.window_s,
                        map(&[("distinct_hosts", hosts)]),
                        map(&[("distinct_hosts", ps.sweep_hosts as f64)]),
                        format!(
                            "{} sent ICMP requests to {hosts} hosts in {} s",
                            r.src, ps.window_s
                        ),
                        st.recent.list(),
                    ));
                }
            } else {
                let ports = {
                    let w = st
                        .ports_by_host
                        .entry(r.dst)
                        .or_insert_with(|| Distinct::new(WINDOW_CAP));
                    w.evict(now_ms, scan_w);
                    w.insert(now_ms, r.dport);
                    w.distinct() as f64
                };
                let hosts = {
                    let w = st
                        .hosts_by_port
                        .entry(r.dport)
                        .or_insert_with(|| Distinct::new(WINDOW_CAP));
                    w.evict(now_ms, scan_w);
                    w.insert(now_ms, r.dst);
                    w.distinct() as f64
                };
                // Forget emptied hosts/ports at most once a second per source.
                if now_ms >= st.swept_ms + 1000 {
                    st.swept_ms = now_ms;
                    st.ports_by_host.retain(|_, w| {
                        w.evict(now_ms, scan_w);
                        !w.is_empty()
                    });
                    st.hosts_by_port.retain(|_, w| {
                        w.evict(now_ms, scan_w);
                        !w.is_empty()
                    });
                }
                let (src, dst) = (scan_src(r, spoofed), Some(r.dst));
                if ports >= ps.vertical_ports as f64 {
                    if gate.open(scan_rule("portscan.vertical", spoofed), src, dst, ports) {
                        let kinds = kinds_of(&st.kinds);
                        out.push(scan_detection(
                            "portscan.vertical",
                            r,
                            spoofed,
                            0.9,
                            ps.window_s,
                            map(&[("distinct_ports", ports)]),
                            map(&[("distinct_ports", ps.vertical_ports as f64)]),
                            format!(
                                "{} probed {ports} ports of {} in {} s ({kinds})",
                                r.src, r.dst, ps.window_s
                            ),
                            st.recent.list(),
                        ));
                    }
                } else if ports >= ps.low_ports as f64
                    && gate.open(scan_rule("portscan.low", spoofed), src, dst, ports)
                {
                    let kinds = kinds_of(&st.kinds);
                    let mut d = scan_detection(
                        "portscan.low",
                        r,
                        spoofed,
                        0.5,
                        ps.window_s,
                        map(&[("distinct_ports", ports)]),
                        map(&[("distinct_ports", ps.low_ports as f64)]),
                        format!(
                            "{} probed {ports} ports of {} in {} s ({kinds}): low-volume scan",
                            r.src, r.dst, ps.window_s
                        ),
                        st.recent.list(),
                    );
                    d.severity = Severity::Medium;
                    d.may_block = false;
                    out.push(d);
                }
                if hosts >= ps.horizontal_hosts as f64
                    && gate.open(scan_rule("portscan.horizontal", spoofed), src, dst, hosts)
                {
                    let kinds = kinds_of(&st.kinds);
                    out.push(scan_detection(
                        "portscan.horizontal",
                        r,
                        spoofed,
                        0.9,
                        ps.window_s,
                        map(&[("distinct_hosts", hosts)]),
                        map(&[("distinct_hosts", ps.horizontal_hosts as f64)]),
                        format!(
                            "{} probed port {} on {hosts} hosts in {} s ({kinds})",
                            r.src, r.dport, ps.window_s
                        ),
                        st.recent.list(),
                    ));
                }
            }
        }

        if half_open {
            let sf = &cfg.synflood;
            st.half_open.evict(now_ms, ms(sf.window_s));
            st.half_open.insert(now_ms, r.dst);
            let n = st.half_open.len() as f64;
            let rule = if spoofed {
                "synflood.spoofed"
            } else {
                "synflood.source"
            };
            if n >= sf.per_source_half_open as f64
                && gate.open(rule, scan_src(r, spoofed), Some(r.dst), n)
            {
                let observed = map(&[
                    ("half_open", n),
                    ("distinct_targets", st.half_open.distinct() as f64),
                ]);
                let thresholds = map(&[("half_open", sf.per_source_half_open as f64)]);
                let d = if spoofed {
                    Detection {
                        kind: AlertKind::SynFlood,
                        rule: "synflood.spoofed",
                        severity: Severity::High,
                        confidence: 0.9,
                        source: None,
                        target: Some(r.dst),
                        window_s: sf.window_s,
                        observed,
                        thresholds,
                        main: n,
                        text: format!(
                            "{n} half-open handshakes to {} in {} s carry the address of {}, which shows spoofing evidence: not blocked",
                            r.dst, sf.window_s, r.src
                        ),
                        flows: st.recent.list(),
                        may_block: false,
                    }
                } else {
                    Detection {
                        kind: AlertKind::SynFlood,
                        rule: "synflood.source",
                        severity: Severity::High,
                        confidence: 0.9,
                        source: Some(r.src),
                        target: Some(r.dst),
                        window_s: sf.window_s,
                        observed,
                        thresholds,
                        main: n,
                        text: format!(
                            "{} left {n} handshakes half-open in {} s",
                            r.src, sf.window_s
                        ),
                        flows: st.recent.list(),
                        may_block: true,
                    }
                };
                out.push(d);
            }
        }

        if let Some(a) = attempt {
            let w_ms = ms(bf.window_s);
            let w = st
                .auth
                .entry((r.dst, r.dport))
                .or_insert_with(|| Distinct::new(WINDOW_CAP));
            w.evict(now_ms, w_ms);
            w.insert(now_ms, (a == AuthAttempt::Failed) as u8);
            let n = w.len() as f64;
            if now_ms >= st.auth_swept_ms + 1000 {
                st.auth_swept_ms = now_ms;
                st.auth.retain(|_, w| {
                    w.evict(now_ms, w_ms);
                    !w.is_empty()
                });
            }
            let (limit, http) = if auth_port {
                (bf.attempts, false)
            } else {
                (bf.http_attempts, true)
            };
            let rule = if http {
                "bruteforce.http"
            } else {
                "bruteforce.auth"
            };
            if n >= limit as f64 && gate.open(rule, scan_src(r, spoofed), Some(r.dst), n) {
                out.push(Detection {
                    main: n,
                    kind: AlertKind::BruteForce,
                    rule: if http {
                        "bruteforce.http"
                    } else {
                        "bruteforce.auth"
                    },
                    severity: if http {
                        Severity::Medium
                    } else {
                        Severity::High
                    },
                    confidence: if http { 0.6 } else { 0.9 },
                    source: (!spoofed).then_some(r.src),
                    target: Some(r.dst),
                    window_s: bf.window_s,
                    observed: map(&[("attempts", n)]),
                    thresholds: map(&[
                        ("attempts", limit as f64),
                        ("max_duration_s", bf.max_duration_s),
                        ("max_bytes", bf.max_bytes as f64),
                    ]),
                    text: format!(
                        "{} made {n} short or failed connections to {}:{} in {} s",
                        r.src, r.dst, r.dport, bf.window_s
                    ),
                    flows: st.recent.list(),
                    may_block: !http && !spoofed,
                });
            }
        }
    }

    fn victim(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        share: f64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        if !classify::half_open(r) {
            return;
        }
        let sf = &cfg.synflood;
        let limit = (sf.per_victim_half_open as f64 * share).ceil().max(1.0);
        if self.victims.len() >= MAX_TRACKED && !self.victims.contains_key(&r.dst) {
            self.state_full += 1;
            return;
        }
        let v = self.victims.entry(r.dst).or_insert_with(|| VictimState {
            last_ms: now_ms,
            half_open: Distinct::new(1 << 16),
            recent: Recent::default(),
        });
        v.last_ms = now_ms;
        v.recent.push(r);
        v.half_open.evict(now_ms, ms(sf.window_s));
        v.half_open.insert(now_ms, r.src);
        let n = v.half_open.len() as f64;
        if n >= limit && gate.open("synflood.victim", None, Some(r.dst), n) {
            let sources = v.half_open.distinct() as f64;
            let spoofed = sources >= sf.spoofed_min_sources as f64;
            out.push(Detection {
                main: n,
                kind: AlertKind::SynFlood,
                rule: "synflood.victim",
                severity: Severity::High,
                confidence: 0.8,
                source: None,
                target: Some(r.dst),
                window_s: sf.window_s,
                observed: map(&[("half_open", n), ("distinct_sources", sources)]),
                thresholds: map(&[
                    ("half_open", limit),
                    ("spoofed_min_sources", sf.spoofed_min_sources as f64),
                ]),
                text: if spoofed {
                    format!(
                        "{} received {n} half-open handshakes from {sources} sources in {} s: distributed or spoofed flood, left to the in-kernel SYN rate limits",
                        r.dst, sf.window_s
                    )
                } else {
                    format!(
                        "{} received {n} half-open handshakes from {sources} sources in {} s",
                        r.dst, sf.window_s
                    )
                },
                flows: v.recent.list(),
                may_block: false,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spike(
        &mut self,
        cfg: &Config,
        dev: IpAddr,
        packets: u64,
        bytes: u64,
        now_ms: u64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        let nets = &cfg.trust.device_networks;
        if packets == 0 || (!nets.is_empty() && !nets.iter().any(|n| n.contains(&dev))) {
            return;
        }
        let sp = &cfg.spike;
        let iv = ms(sp.interval_s).max(1);
        if self.rates.len() >= MAX_TRACKED && !self.rates.contains_key(&dev) {
            self.state_full += 1;
            return;
        }
        let st = self
            .rates
            .entry(dev)
            .or_insert_with(|| RateState::new(now_ms));
        if now_ms >= st.bucket_start_ms + iv {
            let secs = iv as f64 / 1000.0;
            st.learn(st.packets as f64 / secs, st.bytes as f64 / secs, sp.alpha);
            let elapsed = (now_ms - st.bucket_start_ms) / iv;
            for _ in 1..elapsed.min(1000) {
                st.learn(0.0, 0.0, sp.alpha);
            }
            st.bucket_start_ms += elapsed * iv;
            st.packets = 0;
            st.bytes = 0;
        }
        st.packets += packets;
        st.bytes += bytes;
        if st.intervals < sp.warmup_intervals || st.alerted_bucket == Some(st.bucket_start_ms) {
            return;
        }
        let secs = iv as f64 / 1000.0;
        let pps = st.packets as f64 / secs;
        let bps = st.bytes as f64 / secs;
        let z_pps = (pps - st.mean_pps) / st.var_pps.sqrt().max(1.0);
        let z_bps = (bps - st.mean_bps) / st.var_bps.sqrt().max(1.0);
        let hit_pps = z_pps >= sp.z && pps >= sp.min_pps;
        let hit_bps = z_bps >= sp.z && bps >= sp.min_bps;
        if (hit_pps || hit_bps) && gate.open("spike.rate", Some(dev), None, pps.max(1.0)) {
            st.alerted_bucket = Some(st.bucket_start_ms);
            out.push(Detection {
                kind: AlertKind::TrafficSpike,
                rule: "spike.rate",
                main: pps,
                severity: Severity::Medium,
                confidence: 0.6,
                source: Some(dev),
                target: None,
                window_s: sp.interval_s,
                observed: map(&[("pps", pps), ("bps", bps), ("z_pps", z_pps), ("z_bps", z_bps)]),
                thresholds: map(&[("z", sp.z), ("min_pps", sp.min_pps), ("min_bps", sp.min_bps)]),
                text: format!(
                    "{dev} sent {pps:.0} packets/s, {bps:.0} bytes/s against a baseline of {:.0} packets/s, {:.0} bytes/s",
                    st.mean_pps, st.mean_bps
                ),
                flows: Vec::new(),
                may_block: false,
            });
        }
    }

    /// Drops state untouched for `idle_ms`.
    pub fn gc(&mut self, now_ms: u64, idle_ms: u64) {
        self.sources
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.victims
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.rates
            .retain(|_, s| now_ms.saturating_sub(s.bucket_start_ms) <= idle_ms.max(3_600_000));
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_detection(
    rule: &'static str,
    r: &FlowRecord,
    spoofed: bool,
    confidence: f32,
    window_s: f64,
    observed: BTreeMap<String, f64>,
    thresholds: BTreeMap<String, f64>,
    text: String,
    flows: Vec<FlowRef>,
) -> Detection {
    let main = observed.values().next().copied().unwrap_or(0.0);
    if spoofed {
        return Detection {
            kind: AlertKind::PortScan,
            rule: "portscan.spoofed",
            severity: Severity::High,
            confidence,
            source: None,
            target: Some(r.dst),
            window_s,
            observed,
            thresholds,
            main,
            text: format!(
                "{text}; the probes carry the address of {}, which shows spoofing evidence towards {} (idle/zombie scan suspected): reported on the victim, not blocked",
                r.src, r.dst
            ),
            flows,
            may_block: false,
        };
    }
    Detection {
        kind: AlertKind::PortScan,
        rule,
        severity: Severity::High,
        confidence,
        source: Some(r.src),
        target: Some(r.dst),
        window_s,
        observed,
        thresholds,
        main,
        text,
        flows,
        may_block: true,
    }
}

/// Device access policy: a connection to a port the device's policy does not allow.
fn access(cfg: &Config, r: &FlowRecord, out: &mut Vec<Detection>) {
    if !matches!(r.proto, 6 | 17) || r.fwd.syn_ack > 0 {
        return;
    }
    for p in &cfg.access.devices {
        if !p.prefix.contains(&r.dst)
            || p.allowed_ports.contains(&r.dport)
            || p.allowed_sources.iter().any(|n| n.contains(&r.src))
        {
            continue;
        }
        let answered = if r.proto == 6 {
            r.bwd.syn_ack > 0
        } else {
            r.bwd.packets > 0
        };
        out.push(Detection {
            kind: AlertKind::UnauthorizedAccess,
            rule: "access.policy",
            main: 1.0,
            severity: if answered {
                Severity::High
            } else {
                Severity::Medium
            },
            confidence: if answered { 0.9 } else { 0.6 },
            source: Some(r.src),
            target: Some(r.dst),
            window_s: 0.0,
            observed: map(&[
                ("port", r.dport as f64),
                ("answered", answered as u8 as f64),
            ]),
            thresholds: BTreeMap::new(),
            text: format!(
                "{} connected to {}:{} ({}), which the policy for {} does not allow{}",
                r.src,
                r.dst,
                r.dport,
                if r.proto == 6 { "tcp" } else { "udp" },
                p.prefix,
                if answered {
                    " and the device answered"
                } else {
                    ""
                }
            ),
            flows: vec![flow_ref(r)],
            may_block: answered && p.block,
        });
        return;
    }
}
