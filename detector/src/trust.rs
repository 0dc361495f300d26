//! Device trust scores, 0-100 (higher = more trusted).
//!
//! `score = min(wb * behavioural + wv * vulnerability + wr * reputation,
//! BEHAVIOUR_CAP * behavioural)` with default weights 0.5 / 0.3 / 0.2 (`[trust]` in
//! the config); levels from [`TrustLevel::of`]: normal >= 75, warning >= 50,
//! alert >= 20, critical < 20.
//!
//! The cap makes observed misbehaviour the weakest link: a device that attacked
//! again and again is not kept out of "critical" by its other components (the
//! weighted sum alone floors at 50 with the default weights, so the critical
//! level, which blocks, could never be reached). A device's score falls below 20
//! only once its behavioural score is below 10.
//!
//! * behavioural: starts at 100; every alert naming the device as its source costs
//!   `penalty_<severity>` points. Weak evidence has a floor: low-severity alerts
//!   never take it below [`FLOOR_LOW`] (score stays normal), medium ones never below
//!   [`FLOOR_MEDIUM`] (at worst warning); only high and critical alerts take it to
//!   0. With the default penalties (high 40, critical 70) one alert never makes a
//!   device critical: three high alerts (100 -> 60 -> 20 -> 0) or two critical ones
//!   within the recovery do, i.e. repeated strong evidence.
//! * vulnerability: 100 minus `risky_ports[p]` for each risky service the device was
//!   seen to offer (it answered a connection to port p); only with
//!   `vulnerability_check = true` and for devices in `device_networks`.
//! * reputation: 100 minus `feed_penalty` per distinct threat-feed address the
//!   device exchanged traffic with.
//!
//! While a device is quiet (no penalty for `quiet_s`), every component recovers
//! `recovery_per_min` points per minute towards 100 (an open risky service keeps
//! its vulnerability penalty for as long as it was seen within the last hour).
//! Every change is published with its reason; recovery is published once a whole
//! point has been regained, or when the level changes.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use tad_wire::{FlowRecord, Severity, TrustLevel};

use crate::config::Config;

/// The behavioural score times this caps the trust score (see the module docs).
pub const BEHAVIOUR_CAP: f64 = 2.0;
/// Lowest behavioural score low-severity alerts can cause.
pub const FLOOR_LOW: f64 = 50.0;
/// Lowest behavioural score medium-severity alerts can cause.
pub const FLOOR_MEDIUM: f64 = 25.0;

/// A trust change to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustChange {
    pub device: IpAddr,
    pub score: f64,
    pub level: TrustLevel,
    pub behavioural: f64,
    pub vulnerability: f64,
    pub reputation: f64,
    pub reason: String,
}

#[derive(Clone, Debug)]
struct Device {
    behavioural: f64,
    vulnerability: f64,
    reputation: f64,
    last_penalty_ms: u64,
    last_tick_ms: u64,
    published: f64,
    open_risky: BTreeSet<u16>,
    feed_hits: BTreeSet<IpAddr>,
}

impl Device {
    fn new(now_ms: u64) -> Self {
        Device {
            behavioural: 100.0,
            vulnerability: 100.0,
            reputation: 100.0,
            last_penalty_ms: now_ms,
            last_tick_ms: now_ms,
            published: 100.0,
            open_risky: BTreeSet::new(),
            feed_hits: BTreeSet::new(),
        }
    }
}

/// Moved to [`crate::feed`] (a prefix trie); re-exported for existing users.
pub use crate::feed::ThreatFeed;

/// Trust state of every device.
#[derive(Default)]
pub struct TrustBook {
    devices: HashMap<IpAddr, Device>,
    pub feed: ThreatFeed,
}

fn score(cfg: &Config, d: &Device) -> f64 {
    let t = &cfg.trust;
    (t.weight_behavioural * d.behavioural
        + t.weight_vulnerability * d.vulnerability
        + t.weight_reputation * d.reputation)
        .min(BEHAVIOUR_CAP * d.behavioural)
        .clamp(0.0, 100.0)
}

fn change(cfg: &Config, dev: IpAddr, d: &mut Device, reason: String) -> TrustChange {
    let s = score(cfg, d);
    d.published = s;
    TrustChange {
        device: dev,
        score: s,
        level: TrustLevel::of(s),
        behavioural: d.behavioural,
        vulnerability: d.vulnerability,
        reputation: d.reputation,
        reason,
    }
}

impl TrustBook {
    /// Current score and level of a device (100 / normal when unknown).
    pub fn score_of(&self, cfg: &Config, dev: IpAddr) -> (f64, TrustLevel) {
        let s = self.devices.get(&dev).map_or(100.0, |d| score(cfg, d));
        (s, TrustLevel::of(s))
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// An alert named `dev` as its source.
    pub fn penalise(
        &mut self,
        cfg: &Config,
        dev: IpAddr,
        severity: Severity,
        rule: &str,
        now_ms: u64,
    ) -> TrustChange {
        let t = &cfg.trust;
        let (p, floor) = match severity {
            Severity::Low => (t.penalty_low, FLOOR_LOW),
            Severity::Medium => (t.penalty_medium, FLOOR_MEDIUM),
            Severity::High => (t.penalty_high, 0.0),
            Severity::Critical => (t.penalty_critical, 0.0),
        };
        let d = self
            .devices
            .entry(dev)
            .or_insert_with(|| Device::new(now_ms));
        let before = d.behavioural;
        // Weak evidence never lowers it past its floor (nor raises it to it).
        d.behavioural = (d.behavioural - p).max(floor.min(d.behavioural)).max(0.0);
        d.last_penalty_ms = now_ms;
        d.last_tick_ms = now_ms;
        change(
            cfg,
            dev,
            d,
            format!(
                "behavioural {before:.0} -> {:.0}: {severity:?} alert {rule} (-{p})",
                d.behavioural
            ),
        )
    }

    /// Vulnerability and reputation evidence in one record.
    pub fn observe(&mut self, cfg: &Config, r: &FlowRecord, now_ms: u64) -> Vec<TrustChange> {
        let mut out = Vec::new();
        let t = &cfg.trust;
        if t.vulnerability_check
            && t.device_networks.iter().any(|n| n.contains(&r.dst))
            && let Some(pen) = t.risky_ports.get(&r.dport)
        {
            let answered = if r.proto == 6 {
                r.bwd.syn_ack > 0
            } else {
                r.proto == 17 && r.bwd.packets > 0
            };
            if answered {
                let d = self
                    .devices
                    .entry(r.dst)
                    .or_insert_with(|| Device::new(now_ms));
                if d.open_risky.insert(r.dport) {
                    let before = d.vulnerability;
                    d.vulnerability = (d.vulnerability - pen).max(0.0);
                    d.last_penalty_ms = now_ms;
                    d.last_tick_ms = now_ms;
                    out.push(change(
                        cfg,
                        r.dst,
                        d,
                        format!(
                            "vulnerability {before:.0} -> {:.0}: risky service on port {} is open (-{pen})",
                            d.vulnerability, r.dport
                        ),
                    ));
                }
            }
        }
        if !self.feed.is_empty() {
            for (dev, other) in [(r.src, r.dst), (r.dst, r.src)] {
                if self.feed.contains(other) && !self.feed.contains(dev) {
                    let d = self
                        .devices
                        .entry(dev)
                        .or_insert_with(|| Device::new(now_ms));
                    if d.feed_hits.insert(other) {
                        let before = d.reputation;
                        d.reputation = (d.reputation - t.feed_penalty).max(0.0);
                        d.last_penalty_ms = now_ms;
                        d.last_tick_ms = now_ms;
                        out.push(change(
                            cfg,
                            dev,
                            d,
                            format!(
                                "reputation {before:.0} -> {:.0}: traffic with {other}, listed in the threat feed (-{})",
                                d.reputation, t.feed_penalty
                            ),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Recovery of quiet devices up to `now_ms`.
    pub fn tick(&mut self, cfg: &Config, now_ms: u64) -> Vec<TrustChange> {
        let t = &cfg.trust;
        let quiet_ms = (t.quiet_s * 1000.0) as u64;
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (dev, d) in self.devices.iter_mut() {
            if now_ms.saturating_sub(d.last_penalty_ms) < quiet_ms {
                d.last_tick_ms = now_ms;
                continue;
            }
            let start = d.last_tick_ms.max(d.last_penalty_ms + quiet_ms);
            let gain = t.recovery_per_min * now_ms.saturating_sub(start) as f64 / 60_000.0;
            d.last_tick_ms = now_ms;
            if gain <= 0.0 {
                continue;
            }
            d.behavioural = (d.behavioural + gain).min(100.0);
            d.reputation = (d.reputation + gain).min(100.0);
            // An open risky service stays a risk: recover only what it does not explain.
            let floor_v = 100.0
                - d.open_risky
                    .iter()
                    .map(|p| t.risky_ports.get(p).copied().unwrap_or(0.0))
                    .sum::<f64>();
            if now_ms.saturating_sub(d.last_penalty_ms) > 3_600_000 {
                d.open_risky.clear();
            }
            d.vulnerability = (d.vulnerability + gain)
                .min(100.0)
                .min(floor_v.max(d.vulnerability));
            let s = score(cfg, d);
            let full = d.behavioural >= 100.0 && d.reputation >= 100.0 && d.vulnerability >= 100.0;
            if s - d.published >= 1.0
                || TrustLevel::of(s) != TrustLevel::of(d.published)
                || (full && d.published < 100.0)
            {
                out.push(change(
                    cfg,
                    *dev,
                    d,
                    format!(
                        "recovering while quiet (+{} points/min)",
                        t.recovery_per_min
                    ),
                ));
            }
            if full {
                done.push(*dev);
            }
        }
        for dev in done {
            self.devices.remove(&dev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_weights_levels_and_recovery() {
        let cfg = Config::default();
        let mut book = TrustBook::default();
        let dev: IpAddr = "192.0.2.9".parse().unwrap();
        let c = book.penalise(&cfg, dev, Severity::High, "portscan.vertical", 0);
        assert_eq!(c.behavioural, 60.0);
        assert!((c.score - (0.5 * 60.0 + 30.0 + 20.0)).abs() < 1e-9);
        assert_eq!(c.level, TrustLevel::Normal);
        assert!(c.reason.contains("portscan.vertical"));
        let c = book.penalise(&cfg, dev, Severity::Critical, "x", 1_000);
        // Repeated strong evidence: the behavioural cap makes it critical.
        assert_eq!(
            (c.behavioural, c.score, c.level),
            (0.0, 0.0, TrustLevel::Critical)
        );
        // Quiet for 60 s: nothing yet; then 5 points a minute.
        assert!(book.tick(&cfg, 61_000).is_empty());
        let up = book.tick(&cfg, 61_000 + 120_000);
        assert_eq!(up.len(), 1);
        assert!((up[0].behavioural - 10.0).abs() < 1e-9, "{up:?}");
        assert_eq!((up[0].score, up[0].level), (20.0, TrustLevel::Alert));
        // Long quiet: back to 100 and forgotten.
        let up = book.tick(&cfg, 10_000_000);
        assert_eq!(up.last().unwrap().score, 100.0);
        assert!(book.is_empty());
    }

    #[test]
    fn weak_or_one_off_evidence_never_makes_a_device_critical() {
        let cfg = Config::default();
        let dev: IpAddr = "192.0.2.9".parse().unwrap();
        for (sev, floor_level) in [
            (Severity::Low, TrustLevel::Normal),
            (Severity::Medium, TrustLevel::Warning),
        ] {
            let mut book = TrustBook::default();
            let mut last = None;
            for i in 0..100 {
                last = Some(book.penalise(&cfg, dev, sev, "weak", i * 1_000));
            }
            let c = last.unwrap();
            assert_eq!(c.level, floor_level, "100 {sev:?} alerts: {c:?}");
        }
        for sev in [Severity::High, Severity::Critical] {
            let mut book = TrustBook::default();
            let c = book.penalise(&cfg, dev, sev, "strong", 0);
            assert!(c.level > TrustLevel::Critical, "one {sev:?} alert: {c:?}");
        }
        // Strong evidence once, weak evidence after it: still not critical.
        let mut book = TrustBook::default();
        book.penalise(&cfg, dev, Severity::Critical, "strong", 0);
        let c = book.penalise(&cfg, dev, Severity::Medium, "weak", 1_000);
        assert_eq!((c.behavioural, c.level), (25.0, TrustLevel::Warning));
    }

    #[test]
    fn three_high_alerts_make_a_device_critical_and_quiet_brings_it_back() {
        let cfg = Config::default();
        let mut book = TrustBook::default();
        let dev: IpAddr = "192.0.2.9".parse().unwrap();
        let levels: Vec<TrustLevel> = (0..3)
            .map(|i| {
                book.penalise(&cfg, dev, Severity::High, "portscan.vertical", i * 1_000)
                    .level
            })
            .collect();
        assert_eq!(
            levels,
            [TrustLevel::Normal, TrustLevel::Alert, TrustLevel::Critical]
        );
        // 60 s quiet, then 5 points a minute: out of critical after 2 minutes,
        // back to normal (and forgotten) within the hour.
        let up = book.tick(&cfg, 2_000 + 60_000 + 120_000);
        assert_eq!(up.last().unwrap().level, TrustLevel::Alert, "{up:?}");
        let up = book.tick(&cfg, 3_600_000);
        assert_eq!(up.last().unwrap().level, TrustLevel::Normal, "{up:?}");
        assert!(book.is_empty());
    }

    #[test]
    fn feed_parsing_reports_bad_lines() {
        let (f, bad) =
            ThreatFeed::parse("# FireHOL\n192.0.2.0/24 ; SBL1\nnot-an-ip\n198.51.100.7\n\n");
        assert_eq!(f.len(), 2);
        assert_eq!(bad, vec![3]);
        assert!(f.contains("198.51.100.7".parse().unwrap()));
    }
}
