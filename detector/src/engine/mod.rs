//! The detection engine: flow records in, alerts, verdicts and trust updates out.
//! Pure and synchronous (no I/O, time passed in), so one engine per detector
//! instance is driven by the MQTT service, the pcap replay and the tests alike.
//!
//! Per record: partition check ([`crate::partition`]), the rules
//! ([`crate::rules`]), the autoencoder ([`crate::model`], batched per call), trust
//! evidence ([`crate::trust`]). Each detection passes the alert cooldown (the same
//! rule on the same source/target raises or renews an alert again only after
//! `policy.alert_cooldown_s`, or when its number doubled; in between a detection
//! whose number grew only updates the alert), joins the one [`Alert`] of its
//! attack (same source and kind, or victim and kind, while it goes on:
//! `incident`, published at the end of the call and updated under the same id),
//! and, when it raises or renews it, lowers its source's trust and goes through
//! the verdict policy:
//!
//! * a rule that may block, at confidence >= `policy.block_confidence`, with a
//!   source, or a device whose trust level falls to critical -> `Action::Quarantine`
//!   of the source's /32 (/128) with TTL `base_ttl_s * 2^(offences - 1)` capped at
//!   `max_ttl_s`;
//! * never for an allowlisted or management address, a victim-side report or a
//!   source showing spoofing evidence; no new verdict while a quarantine is active;
//! * everything else alerts only;
//! * in observe mode verdicts carry `observe_only: true` and are counted.
//!
//! Submodules: `flows` (the per-record path, feed detections), `evidence` (the
//! kernel evidence path), `decide` (cooldown, dedupe, trust, verdicts),
//! `incident` (one alert per attack), `synauth` (SYN authentication of victims).
//!
//! Kernel evidence ([`Engine::evidence`], [`EvidenceBatch`]es): the records update
//! the per-address evidence ([`crate::rules::evidence`]), every address a batch
//! touches is judged at once (scans of its sources, floods on its destinations),
//! and its XDP events are answered:
//!
//! * `report`: the source is judged now (on this engine's view and on the event's
//!   own numbers);
//! * `quarantine` (the XDP program already drops the source's new flows for
//!   `quarantine_ttl_ms`): when a scan rule fires and the policy blocks, the block
//!   verdict goes out at once (`evidence.*`, reason `port_scan`); when no rule fires
//!   (or the policy would not block, e.g. an allowlisted address) an
//!   `Action::Unblock` verdict (`evidence.lift`, reason `quarantine`) releases the
//!   benign burst, unless this engine has the address quarantined itself (for any
//!   reason), which is never lifted;
//! * a source the evidence path quarantined that later shows spoofing evidence in
//!   its flow records (an idle scan's zombie) is lifted the same way.
//!
//! One report per attack across the two paths: a scan source (or flood victim) an
//! alert of one path (`portscan.{vertical,horizontal,sweep}` /
//! `evidence.{vertical,horizontal,sweep}`, `synflood.victim` /
//! `evidence.synflood`) named is not alerted on by the other path until
//! `policy.alert_cooldown_s` after that path's last such alert (`portscan.low` is
//! suppressed too, but claims nothing); counted in `cross_path_suppressed`.

mod decide;
mod evidence;
mod flows;
mod incident;
mod synauth;

use std::{collections::HashSet, net::IpAddr};

use tad_wire::{Alert, AlertKind, NodeId, SCHEMA_VERSION, TrustLevel, TrustUpdate, Verdict};

use crate::{
    HashMap,
    config::{Config, ConfigError},
    model::Autoencoder,
    partition::Partitioner,
    rules::{Cool, CooldownKey, Rules},
    trust::{TrustBook, TrustChange},
    window::Distinct,
};

/// Confidence an `evidence.lift` unblock carries: no scan rule fired on the
/// source's evidence.
pub const LIFT_CONFIDENCE: f32 = 0.8;

/// A verdict and the gateway it goes to.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutedVerdict {
    pub gateway_id: NodeId,
    pub verdict: Verdict,
}

/// What one call produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub alerts: Vec<Alert>,
    pub verdicts: Vec<RoutedVerdict>,
    pub trust: Vec<TrustUpdate>,
}

impl Output {
    pub fn append(&mut self, o: Output) {
        self.alerts.extend(o.alerts);
        self.verdicts.extend(o.verdicts);
        self.trust.extend(o.trust);
    }
}

/// Engine counters (published in the detector's status and by `bench`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub records: u64,
    /// `ProtectSyn` verdicts sent (SYN authentication switched on or renewed).
    pub syn_auth_on: u64,
    /// `UnprotectSyn` verdicts sent (the flood ended).
    pub syn_auth_off: u64,
    /// Records of partitions this instance does not take (ignored).
    pub foreign_records: u64,
    /// Alerts raised (first publications; see `incident`).
    pub alerts: u64,
    /// Updates of raised alerts published (same id, see `incident`).
    pub alert_updates: u64,
    /// Detections merged into an alert already raised.
    pub alerts_merged: u64,
    /// Detections suppressed by the cooldown.
    pub alerts_suppressed: u64,
    pub verdicts: u64,
    /// Verdicts published with `observe_only` (observe mode).
    pub would_block: u64,
    /// Blocks refused: allowlisted or management address.
    pub allowlisted: u64,
    /// Blocks skipped because a quarantine of that source is active.
    pub already_quarantined: u64,
    pub scored: u64,
    pub anomalous: u64,
    /// Anomaly alerts dropped by `ml.max_alerts_per_min`.
    pub anomaly_rate_limited: u64,
    pub model_errors: u64,
    pub batch_gaps: u64,
    pub records_dropped_upstream: u64,
    /// Records a rule skipped because its state table was full (`rules::MAX_TRACKED`).
    pub state_full: u64,
    /// Evidence batches processed (also those ignored with `evidence.enabled = false`).
    pub evidence_batches: u64,
    /// Evidence records of this instance's partitions.
    pub evidence_records: u64,
    /// Evidence records and events of partitions this instance does not take.
    pub foreign_evidence: u64,
    /// Evidence batches whose sequence number skipped (per gateway and partition).
    pub evidence_gaps: u64,
    /// Evidence records not kept: the evidence book was full.
    pub evidence_state_full: u64,
    /// XDP events received (`report` and `quarantine`).
    pub evidence_events: u64,
    /// Provisional quarantines confirmed (a block verdict sent, or already
    /// quarantined by this engine).
    pub quarantines_confirmed: u64,
    /// `evidence.lift` unblock verdicts sent.
    pub quarantines_lifted: u64,
    /// Evidence scans not reported because the source shows spoofing evidence.
    pub evidence_spoofed: u64,
    /// Alerts of one path suppressed because the other path reported the same
    /// source (victim) within the cooldown.
    pub cross_path_suppressed: u64,
}

struct Quarantine {
    until_ms: u64,
    offences: u32,
    /// Whether the active quarantine came from an `evidence.*` rule.
    by_evidence: bool,
}

/// Key of the cross-path dedupe: (kind, source) for scans, (kind, victim) for
/// victim-side floods.
type OwnerKey = (AlertKind, Option<IpAddr>, Option<IpAddr>);

/// One detector instance's engine.
pub struct Engine {
    /// The configuration in force: `base` plus the runtime threshold overrides.
    cfg: Config,
    /// The configuration the engine was made with (the loaded file), kept
    /// unchanged: runtime overrides always apply to it.
    base: Config,
    model: Option<Autoencoder>,
    part: Partitioner,
    rules: Rules,
    trust: TrustBook,
    /// (rule, source, target) -> its last renewal and largest number since.
    cooldown: HashMap<CooldownKey, Cool>,
    /// One alert per attack (see `incident`).
    incidents: incident::Incidents,
    quarantines: HashMap<IpAddr, Quarantine>,
    /// Victims under SYN authentication at a gateway: (gateway, victim) ->
    /// (last flood sign ms, protection renewed until ms).
    syn_auth: HashMap<(NodeId, IpAddr), (u64, u64)>,
    /// Cross-path dedupe: key -> (claimed by the evidence path, last alert ms).
    scan_owner: HashMap<OwnerKey, (bool, u64)>,
    /// Last evidence sequence number per (gateway, partition).
    last_evidence_seq: HashMap<(NodeId, u16), u64>,
    anomalies: HashMap<IpAddr, Distinct<u8>>,
    anomaly_budget: (u64, u32),
    last_seq: HashMap<String, u64>,
    seq: u64,
    last_gc_ms: u64,
    pub counters: Counters,
}

impl Engine {
    /// An engine with the given config and (optional) model.
    pub fn new(cfg: Config, model: Option<Autoencoder>) -> Engine {
        let part = Partitioner::new(&cfg.partitions);
        Engine {
            base: cfg.clone(),
            cfg,
            model,
            part,
            rules: Rules::default(),
            trust: TrustBook::default(),
            cooldown: HashMap::default(),
            incidents: incident::Incidents::default(),
            quarantines: HashMap::default(),
            syn_auth: HashMap::default(),
            scan_owner: HashMap::default(),
            last_evidence_seq: HashMap::default(),
            anomalies: HashMap::default(),
            anomaly_budget: (0, 0),
            last_seq: HashMap::default(),
            seq: 0,
            last_gc_ms: 0,
            counters: Counters::default(),
        }
    }

    /// The configuration in force (the base config plus the runtime overrides).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The trust book (to install a threat feed, query scores).
    pub fn trust_mut(&mut self) -> &mut TrustBook {
        &mut self.trust
    }

    pub fn trust_of(&self, dev: IpAddr) -> (f64, TrustLevel) {
        self.trust.score_of(&self.cfg, dev)
    }

    /// The configuration the engine was made with (the loaded file), which the
    /// runtime overrides apply to.
    pub fn base_config(&self) -> &Config {
        &self.base
    }

    /// Takes the partitions in `owned` from now on (the fleet's live assignment,
    /// `crate::fleet::owned`, recomputed by the service when a detector comes or
    /// goes): records and evidence of other partitions are counted as foreign
    /// and ignored, and victim-keyed thresholds scale with the new share. State
    /// of sources in partitions that moved away is left to expire.
    pub fn set_partitions(&mut self, owned: &std::collections::BTreeSet<u16>) {
        self.part.set_owned(owned);
    }

    /// The partitions taken now.
    pub fn partitions(&self) -> Vec<u16> {
        self.part.partitions()
    }

    /// Makes `values` the whole set of runtime threshold overrides: the config in
    /// force becomes the base config ([`Self::base_config`]) plus `values`, so a key
    /// absent from `values` is back at its file value at once. All or nothing: on
    /// an error (unknown key, value out of range, see
    /// [`Config::apply_thresholds`]) the config in force is unchanged.
    pub fn apply_thresholds(
        &mut self,
        values: &std::collections::BTreeMap<String, f64>,
    ) -> Result<(), ConfigError> {
        let mut cfg = self.base.clone();
        cfg.apply_thresholds(values)?;
        self.cfg = cfg;
        Ok(())
    }

    /// Advances time without records (trust recovery, quarantine expiry).
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        for c in self.trust.tick(&self.cfg, now_ms) {
            self.push_trust(c, now_ms, &mut out);
        }
        self.publish_alerts(now_ms, &mut out);
        out
    }

    fn gc(&mut self, now_ms: u64) {
        self.last_gc_ms = now_ms;
        self.gc_incidents(now_ms);
        let c = &self.cfg;
        let longest = [
            c.portscan.window_s,
            c.synflood.window_s,
            c.bruteforce.window_s,
            c.ml.window_s,
        ]
        .into_iter()
        .fold(0.0, f64::max);
        let idle_ms = (longest * 1000.0) as u64 + 1_000;
        self.rules.gc(now_ms, idle_ms);
        let cool_ms = (c.policy.alert_cooldown_s * 1000.0) as u64;
        self.cooldown
            .retain(|_, c| now_ms.saturating_sub(c.at_ms) <= cool_ms);
        self.scan_owner
            .retain(|_, (_, t)| now_ms.saturating_sub(*t) <= cool_ms);
        let ml_ms = (c.ml.window_s * 1000.0) as u64;
        self.anomalies.retain(|_, w| {
            w.evict(now_ms, ml_ms);
            !w.is_empty()
        });
        // Offence counts are kept a day after the quarantine ends.
        self.quarantines
            .retain(|_, q| now_ms.saturating_sub(q.until_ms) <= 86_400_000);
    }

    fn next_id(&mut self, tag: char) -> String {
        self.seq += 1;
        format!("{}-{tag}{}", self.cfg.detector.id, self.seq)
    }

    fn push_trust(&self, c: TrustChange, now_ms: u64, out: &mut Output) {
        out.trust.push(TrustUpdate {
            v: SCHEMA_VERSION,
            detector_id: self.cfg.detector.id.clone(),
            at_ms: now_ms,
            device: c.device,
            score: c.score,
            level: c.level,
            behavioural: c.behavioural,
            vulnerability: c.vulnerability,
            reputation: c.reputation,
            reason: c.reason,
        });
    }

    /// Sources currently quarantined by this engine.
    pub fn quarantined(&self, now_ms: u64) -> HashSet<IpAddr> {
        self.quarantines
            .iter()
            .filter(|(_, q)| q.until_ms > now_ms)
            .map(|(a, _)| *a)
            .collect()
    }
}
