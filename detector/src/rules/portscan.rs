//! Port scans and sweeps (`[portscan]`): `portscan.vertical` (distinct ports of one
//! host), `portscan.low` (the same, below the vertical threshold: low-volume scan,
//! no block), `portscan.horizontal` (distinct hosts on one port) and `portscan.sweep`
//! (distinct hosts sent ICMP requests), both one `host_sweep` alert per source
//! (no target, the host count in `observed["targets"]`), and `portscan.spoofed`, any of them from a
//! source with spoofing evidence (see [`super`]), reported on the victim.
//! Counts probes ([`crate::classify::probe`]) of one source in `portscan.window_s`.

use std::{collections::BTreeMap, net::IpAddr};

use tad_wire::{AlertKind, FlowRef, Severity};

use super::{Detection, Seen, WINDOW_CAP, map, ms};
use crate::{HashMap, classify::ProbeKind, config::PortScan, window::Distinct};

/// Per-source scan state.
pub(super) struct ScanState {
    /// (dst, port) pairs probed.
    probes: Distinct<(IpAddr, u16)>,
    /// Per destination: ports probed.
    ports_by_host: HashMap<IpAddr, Distinct<u16>>,
    /// Per port: hosts probed.
    hosts_by_port: HashMap<u16, Distinct<IpAddr>>,
    /// Hosts sent ICMP requests.
    sweep: Distinct<IpAddr>,
    kinds: BTreeMap<ProbeKind, u32>,
    /// Last sweep of emptied hosts/ports, ms.
    swept_ms: u64,
}

impl ScanState {
    pub(super) fn new(now_ms: u64) -> Self {
        ScanState {
            probes: Distinct::new(WINDOW_CAP),
            ports_by_host: HashMap::default(),
            hosts_by_port: HashMap::default(),
            sweep: Distinct::new(WINDOW_CAP),
            kinds: BTreeMap::new(),
            swept_ms: now_ms,
        }
    }

    /// Probes so far by kind, `syn=3 fin=1`.
    fn kinds(&self) -> String {
        let k: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect();
        k.join(" ")
    }
}

/// The rule id of a scan: `portscan.spoofed` when the source shows spoofing
/// evidence.
fn rule_of(rule: &'static str, spoofed: bool) -> &'static str {
    if spoofed { "portscan.spoofed" } else { rule }
}

/// Counts one probe of kind `kind` and reports the scans it completes: a sweep,
/// or a vertical (else low-volume) and a horizontal scan, in that order.
pub(super) fn probe(
    st: &mut ScanState,
    ps: &PortScan,
    kind: ProbeKind,
    seen: &Seen,
    out: &mut Vec<Detection>,
) {
    let (r, now_ms, spoofed, gate) = (seen.r, seen.now_ms, seen.spoofed, seen.gate);
    let scan_w = ms(ps.window_s);
    st.probes.evict(now_ms, scan_w);
    st.probes.insert(now_ms, (r.dst, r.dport));
    *st.kinds.entry(kind).or_insert(0) += 1;
    if kind == ProbeKind::IcmpSweep {
        st.sweep.evict(now_ms, scan_w);
        st.sweep.insert(now_ms, r.dst);
        let hosts = st.sweep.distinct() as f64;
        if hosts >= ps.sweep_hosts as f64
            && gate.open(
                rule_of("portscan.sweep", spoofed),
                seen.source(),
                sweep_target(seen),
                hosts,
            )
        {
            out.push(sweep(detection(
                "portscan.sweep",
                seen,
                0.9,
                ps.window_s,
                map(&[("distinct_hosts", hosts)]),
                map(&[("distinct_hosts", ps.sweep_hosts as f64)]),
                format!(
                    "{} sent ICMP requests to {hosts} hosts in {} s",
                    r.src, ps.window_s
                ),
            )));
        }
        return;
    }
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
    let (src, dst) = (seen.source(), Some(r.dst));
    if ports >= ps.vertical_ports as f64 {
        if gate.open(rule_of("portscan.vertical", spoofed), src, dst, ports) {
            let kinds = st.kinds();
            out.push(detection(
                "portscan.vertical",
                seen,
                0.9,
                ps.window_s,
                map(&[("distinct_ports", ports)]),
                map(&[("distinct_ports", ps.vertical_ports as f64)]),
                format!(
                    "{} probed {ports} ports of {} in {} s ({kinds})",
                    r.src, r.dst, ps.window_s
                ),
            ));
        }
    } else if ports >= ps.low_ports as f64
        && gate.open(rule_of("portscan.low", spoofed), src, dst, ports)
    {
        let kinds = st.kinds();
        let mut d = detection(
            "portscan.low",
            seen,
            0.5,
            ps.window_s,
            map(&[("distinct_ports", ports)]),
            map(&[("distinct_ports", ps.low_ports as f64)]),
            format!(
                "{} probed {ports} ports of {} in {} s ({kinds}): low-volume scan",
                r.src, r.dst, ps.window_s
            ),
        );
        d.severity = Severity::Medium;
        d.may_block = false;
        out.push(d);
    }
    if hosts >= ps.horizontal_hosts as f64
        && gate.open(
            rule_of("portscan.horizontal", spoofed),
            src,
            sweep_target(seen),
            hosts,
        )
    {
        let kinds = st.kinds();
        out.push(sweep(detection(
            "portscan.horizontal",
            seen,
            0.9,
            ps.window_s,
            map(&[("distinct_hosts", hosts)]),
            map(&[("distinct_hosts", ps.horizontal_hosts as f64)]),
            format!(
                "{} probed port {} on {hosts} hosts in {} s ({kinds})",
                r.src, r.dport, ps.window_s
            ),
        )));
    }
}

/// The target a sweep's cooldown keys on: none (one alert for all its hosts),
/// unless it is reported on the victim (spoofing evidence).
fn sweep_target(seen: &Seen) -> Option<IpAddr> {
    seen.spoofed.then_some(seen.r.dst)
}

/// A sweep detection as one `host_sweep` alert of its source: no target, the
/// host count as `observed["targets"]` (a victim-side `portscan.spoofed` report
/// stays as it is).
fn sweep(mut d: Detection) -> Detection {
    if d.source.is_some() {
        d.kind = AlertKind::HostSweep;
        d.target = None;
        d.observed.insert("targets".to_string(), d.main);
    }
    d
}

/// A scan detection of `rule` (high severity, blocks), or, when the source shows
/// spoofing evidence, `portscan.spoofed` on the victim (no source, no block).
fn detection(
    rule: &'static str,
    seen: &Seen,
    confidence: f32,
    window_s: f64,
    observed: BTreeMap<String, f64>,
    thresholds: BTreeMap<String, f64>,
    text: String,
) -> Detection {
    let r = seen.r;
    let flows: Vec<FlowRef> = seen.recent.list();
    let main = observed.values().next().copied().unwrap_or(0.0);
    if seen.spoofed {
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
