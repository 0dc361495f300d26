//! The detection rules. Each keeps its own per-source (or per-victim, per-device)
//! state in sliding windows and returns [`Detection`]s the engine turns into alerts
//! and, through the policy, verdicts.
//!
//! | rule id | kind | counts | default threshold | blocks |
//! |---|---|---|---|---|
//! | `portscan.vertical` | port_scan | distinct ports probed on one host, 60 s | 15 | yes |
//! | `portscan.horizontal` | host_sweep | distinct hosts probed on one port, 60 s | 25 | yes |
//! | `portscan.sweep` | host_sweep | distinct hosts sent ICMP requests, 60 s | 25 | yes |
//! | `portscan.low` | port_scan | distinct ports probed on one host, 60 s | 5 | no |
//! | `portscan.spoofed` | port_scan | a scan whose source shows spoofing evidence (idle scan) | as above | no (reported on the victim) |
//! | `synflood.source` | syn_flood | half-open handshakes from one source to one host, 10 s | 20 | yes |
//! | `synflood.victim` | syn_flood | half-open handshakes to one host, 10 s | 200 | no (victim only) |
//! | `bruteforce.auth` | brute_force | short/failed connections to one auth service, 120 s | 10 | yes |
//! | `bruteforce.http` | brute_force | short/failed connections to one HTTP service, 120 s | 60 | no |
//! | `bruteforce.pattern` | brute_force | short answered connections of similar size to one service on any port, back to back, 120 s | 20 (auth ports: 10) | yes |
//! | `reflection.victim` | reflection | unsolicited answers from UDP service ports or SYN-ACKs to one host, 10 s | 20 reflectors and 200 packets, or 10 MB | no (victim only; reflectors never) |
//! | `reflection.amplifier` | amplifier | responses of a device to requesters outside, 10 s | 100 packets, 3x the request bytes | no |
//! | `access.policy` | unauthorized_access | connection to a port the device policy does not allow | 1 | if answered and the policy says so |
//! | `spike.rate` | traffic_spike | device send rate vs its EWMA baseline | z >= 6 and >= 5000 pps or 5 MB/s | no |
//! | `evidence.vertical` | port_scan | kernel evidence: distinct ports (bounded by flows per host), mostly unanswered, 60 s | 15, share 0.5 | yes |
//! | `evidence.horizontal` | host_sweep | kernel evidence: distinct hosts (bounded by flows per port), mostly unanswered, 60 s | 25, share 0.5 | yes |
//! | `evidence.sweep` | host_sweep | kernel evidence: hosts sent ICMP requests, mostly unanswered, 60 s | 25, share 0.5 | yes |
//! | `evidence.synflood` | syn_flood | kernel evidence: SYNs to one host from many sources, 10 s | 200 and 50 sources | no (victim only) |
//!
//! A sweep (`host_sweep`) is one alert naming no target, its host count in
//! `observed["targets"]`; the engine merges every alert of one source and kind
//! while the attack goes on.
//!
//! The `evidence.*` rules ([`evidence`]) judge the gateways' kernel evidence
//! batches instead of flow records (`crate::engine::Engine::evidence`); an address
//! the one path reports is not reported again by the other while it goes on (the
//! engine's cross-path dedupe).
//!
//! One file per rule family (`portscan.rs`, `synflood.rs`, `bruteforce.rs`,
//! `access.rs`, `spike.rs`); this module holds what they share: the per-source state
//! (the scan, source-side flood and brute-force rules of one source share one
//! [`SourceState`], its recent flows and its spoofing evidence), the bounded state
//! tables, the cooldown [`Gate`] and the dispatch of one record to every family
//! ([`Rules::record`]).
//!
//! Spoofing evidence: a source that sent unanswered RST-only flows to a host
//! ([`classify::unsolicited_rst`]) within `portscan.window_s` is resetting packets
//! that host never sent, so someone is forging addresses between the two (nmap's
//! idle scan tests its zombie this way). Scans and floods "from" such a source are
//! reported on the victim without a source and never block it. Known limit: an
//! attacker who sends such RSTs first is alerted on but not blocked.

mod access;
mod bruteforce;
pub mod evidence;
mod portscan;
pub mod reflection;
mod spike;
mod synflood;

use std::{
    collections::{BTreeMap, VecDeque},
    hash::Hash,
    net::IpAddr,
};

pub use spike::RateState;
pub use synflood::VictimState;
use tad_wire::{AlertKind, FlowRecord, FlowRef, Severity};

use crate::{HashMap, classify, config::Config, window::Distinct};

/// Most events kept per window.
pub const WINDOW_CAP: usize = 4096;
/// Flows attached to an alert.
pub const MAX_FLOWS: usize = 20;

/// Key of the alert cooldown: (rule id, source, target).
pub type CooldownKey = (&'static str, Option<IpAddr>, Option<IpAddr>);

/// What the cooldown remembers of one key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cool {
    /// Last detection that raised or renewed the alert (first, after the
    /// cooldown, or with its main number doubled), ms.
    pub at_ms: u64,
    /// That detection's main number.
    pub main: f64,
    /// The largest main number merged into the alert since.
    pub top: f64,
}

impl Cool {
    /// Whether a detection with main number `main` at `now_ms` renews the alert
    /// (penalises trust, may block): the cooldown passed or `main` doubled.
    pub fn renews(&self, now_ms: u64, cool_ms: u64, main: f64) -> bool {
        now_ms.saturating_sub(self.at_ms) >= cool_ms || main >= 2.0 * self.main
    }

    /// Whether `main` is news for the merged alert: above the largest merged so
    /// far by at least 1/32 (and 1), so the alert's numbers follow the attack
    /// (a sweep's host count) at a bounded cost (at most ~200 detections from 20
    /// to 65,536).
    pub fn grows(&self, main: f64) -> bool {
        main >= self.top + (self.top / 32.0).max(1.0)
    }
}

/// The engine's alert cooldown, consulted before a detection is built (building
/// one formats text and copies flows): the same rule on the same source/target
/// raises or renews its alert only after the cooldown, or once its main number
/// has doubled ([`Cool::renews`]); in between, a detection whose main number
/// grew ([`Cool::grows`]) only updates the merged alert (see `crate::engine`).
pub struct Gate<'a> {
    /// Per key: the last renewal and the largest number merged since.
    pub cooldown: &'a HashMap<CooldownKey, Cool>,
    /// Now, ms.
    pub now_ms: u64,
    /// The cooldown, ms.
    pub cool_ms: u64,
}

impl Gate<'_> {
    /// Whether `rule` on (`source`, `target`) may alert now with main number
    /// `main`: never alerted, it renews the alert, or `main` grew.
    pub fn open(
        &self,
        rule: &'static str,
        source: Option<IpAddr>,
        target: Option<IpAddr>,
        main: f64,
    ) -> bool {
        match self.cooldown.get(&(rule, source, target)) {
            Some(c) => c.renews(self.now_ms, self.cool_ms, main) || c.grows(main),
            None => true,
        }
    }
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

/// The 5-tuple and start of `r`, as attached to an alert.
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

/// Seconds to ms.
fn ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

/// Recent flows of one source (or victim), for the alert's flow list.
#[derive(Default)]
struct Recent(VecDeque<FlowRef>);

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

/// Spoofing evidence of one source: host -> last unsolicited RST flow to it, ms.
#[derive(Default)]
struct Spoof(HashMap<IpAddr, u64>);

impl Spoof {
    /// Records `r`'s evidence (if `unsolicited`), forgets evidence older than
    /// `window_ms`, and tells whether the source shows evidence towards `r.dst`.
    /// Whether any evidence is younger than `window_ms`.
    fn any(&self, now_ms: u64, window_ms: u64) -> bool {
        self.0
            .values()
            .any(|t| now_ms.saturating_sub(*t) <= window_ms)
    }

    fn observe(&mut self, r: &FlowRecord, unsolicited: bool, now_ms: u64, window_ms: u64) -> bool {
        if unsolicited {
            self.0.insert(r.dst, now_ms);
        }
        if !self.0.is_empty() {
            self.0.retain(|_, t| now_ms.saturating_sub(*t) <= window_ms);
        }
        self.0
            .get(&r.dst)
            .is_some_and(|t| now_ms.saturating_sub(*t) <= window_ms)
    }
}

/// Per-source state of the scan, flood and brute-force rules.
pub struct SourceState {
    /// Last record of this source, ms (idle state is dropped by [`Rules::gc`]).
    pub last_ms: u64,
    scan: portscan::ScanState,
    /// Half-open handshakes, by victim.
    half_open: Distinct<IpAddr>,
    auth: bruteforce::AuthState,
    spoof: Spoof,
    recent: Recent,
}

impl SourceState {
    fn new(now_ms: u64) -> Self {
        SourceState {
            last_ms: now_ms,
            scan: portscan::ScanState::new(now_ms),
            half_open: Distinct::new(WINDOW_CAP),
            auth: bruteforce::AuthState::new(now_ms),
            spoof: Spoof::default(),
            recent: Recent::default(),
        }
    }
}

/// What the per-source rules of one family see of the record being processed.
struct Seen<'a> {
    r: &'a FlowRecord,
    now_ms: u64,
    /// Whether the source shows spoofing evidence towards `r.dst`.
    spoofed: bool,
    gate: &'a Gate<'a>,
    recent: &'a Recent,
}

impl Seen<'_> {
    /// The source an alert names (and the cooldown keys on): none when spoofed.
    fn source(&self) -> Option<IpAddr> {
        (!self.spoofed).then_some(self.r.src)
    }
}

/// All rule state of one engine.
#[derive(Default)]
pub struct Rules {
    pub sources: HashMap<IpAddr, SourceState>,
    pub victims: HashMap<IpAddr, VictimState>,
    pub rates: HashMap<IpAddr, RateState>,
    /// Kernel evidence per (gateway, address, role).
    pub evidence: evidence::EvidenceBook,
    /// Reflection victims, amplifying devices and group queries.
    pub reflection: reflection::ReflectionBook,
    /// Records whose source, victim or device could not get state because its
    /// table held [`MAX_TRACKED`] entries (e.g. a flood from millions of spoofed
    /// addresses); the rule skipped them.
    pub state_full: u64,
}

/// Most entries per state table (sources, victims, devices). Bounds memory under
/// spoofed floods: about 100-300 bytes per entry.
pub const MAX_TRACKED: usize = 262_144;

/// The state of `key` in `table`, created with `new` if the table has room; when
/// it is full (and `key` not in it) counts the skip in `state_full` and gives none.
fn slot<'a, K: Hash + Eq, S>(
    table: &'a mut HashMap<K, S>,
    state_full: &mut u64,
    key: K,
    new: impl FnOnce() -> S,
) -> Option<&'a mut S> {
    if table.len() >= MAX_TRACKED && !table.contains_key(&key) {
        *state_full += 1;
        return None;
    }
    Some(table.entry(key).or_insert_with(new))
}

impl Rules {
    /// Runs every rule on one record at `now_ms`. `victim_share` scales the
    /// per-victim threshold to this instance's share of the partitions.
    ///
    /// Order of the detections: scan, source-side flood, brute force, victim-side
    /// flood, reflection (victim, amplifying device), access policy, spike of the
    /// sender, spike of the answerer.
    pub fn record(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        victim_share: f64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        self.per_source(cfg, r, now_ms, gate, out);
        self.victim(cfg, r, now_ms, victim_share, gate, out);
        self.reflection.record(
            cfg,
            r,
            now_ms,
            victim_share,
            gate,
            &mut self.state_full,
            out,
        );
        // A reflector's unsolicited answer names an innocent sender: no policy unit.
        if reflection::answer(&cfg.reflection, r).is_none() {
            access::check(cfg, r, out);
        }
        self.spike(cfg, r.src, r.fwd.packets, r.fwd.bytes, now_ms, gate, out);
        if r.bwd.packets > 0 {
            self.spike(cfg, r.dst, r.bwd.packets, r.bwd.bytes, now_ms, gate, out);
        }
    }

    /// The rules keyed on the record's source, sharing its [`SourceState`]: scans
    /// ([`portscan`]), source-side floods ([`synflood`]) and brute force
    /// ([`bruteforce`]), in that order. A record none of them counts (and that
    /// carries no spoofing evidence) creates no state.
    fn per_source(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        // A reflector's answers to a victim's ports are not its probes.
        let probe = match reflection::answer(&cfg.reflection, r) {
            Some(_) => None,
            None => classify::probe(r, cfg.portscan.max_probe_packets),
        };
        let half_open = classify::half_open(r);
        let unsolicited = classify::unsolicited_rst(r);
        let attempt = bruteforce::classify(&cfg.bruteforce, r);
        if probe.is_none() && !half_open && !unsolicited && attempt.is_none() {
            return;
        }
        let Some(st) = slot(&mut self.sources, &mut self.state_full, r.src, || {
            SourceState::new(now_ms)
        }) else {
            return;
        };
        st.last_ms = now_ms;
        st.recent.push(r);
        let spoofed = st
            .spoof
            .observe(r, unsolicited, now_ms, ms(cfg.portscan.window_s));
        let seen = Seen {
            r,
            now_ms,
            spoofed,
            gate,
            recent: &st.recent,
        };
        if let Some(kind) = probe {
            portscan::probe(&mut st.scan, &cfg.portscan, kind, &seen, out);
        }
        if half_open {
            synflood::source(&mut st.half_open, &cfg.synflood, &seen, out);
        }
        if let Some(a) = attempt {
            bruteforce::attempt(&mut st.auth, &cfg.bruteforce, a, &seen, out);
        }
    }

    /// Whether `src` showed spoofing evidence (an unanswered RST-only flow, see the
    /// module docs) towards any host within `window_ms` before `now_ms`.
    pub fn spoof_evidence(&self, src: IpAddr, now_ms: u64, window_ms: u64) -> bool {
        self.sources
            .get(&src)
            .is_some_and(|s| s.spoof.any(now_ms, window_ms))
    }

    /// Drops state untouched for `idle_ms` (device rate baselines: for at least
    /// an hour).
    pub fn gc(&mut self, now_ms: u64, idle_ms: u64) {
        self.evidence.gc(now_ms, idle_ms);
        self.reflection.gc(now_ms, idle_ms);
        self.sources
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.victims
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.rates
            .retain(|_, s| now_ms.saturating_sub(s.bucket_start_ms) <= idle_ms.max(3_600_000));
    }
}
