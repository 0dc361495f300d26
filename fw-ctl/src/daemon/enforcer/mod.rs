//! Verdicts (from detectors) and commands (from dashboards): authenticating them,
//! applying them to the block map, and the [`Ack`] that answers each.
//!
//! The daemon subscribes `tad/v1/gw/<gw>/verdicts/+` and `.../commands/+`; the
//! topic's last level is the sender's identity, which the broker ACL guarantees
//! (a client may publish only under its own certificate's CN). Every payload is a
//! JWS signed with the sender's certificate key ([`tad_bus::signing`]). Checks, in
//! order; the first failure refuses the message, changes no map and counts the
//! reason in [`EnforcerStats::refusals`]:
//! 1. signature: a compact ES256 JWS whose `x5c` certificate chains to the bus CA
//!    and whose signature verifies, holding a valid message
//!    ([`Verifier::verify`]; not a JWS, a bad signature or an untrusted chain:
//!    `bad_signature`; a verified but invalid message: `malformed`);
//! 2. identity: the certificate's CN equals the topic's identity level, and a
//!    verdict's `detector_id` equals it too (`identity_mismatch`);
//! 3. trust: the signer is in `[trust] detectors` (verdicts) or
//!    `[trust] dashboards` (commands) (`untrusted_sender`);
//! 4. age: `issued_at_ms` within `verdicts.max_age_s` of this gateway's clock,
//!    either way (`stale`);
//! 5. replay: the id is not among the last `verdicts.replay_window` ids accepted
//!    from that sender (`replayed`);
//! 6. TTL at most `verdicts.max_ttl_s` (`ttl`; a detector's `block` without a TTL
//!    gets `verdicts.default_block_ttl_s`), target no wider than
//!    `verdicts.min_prefix_*` (`too_wide`), no address shared with the allowlist
//!    (own addresses, management network, manual allows) (`allowlisted`); the
//!    lists failing otherwise (map full, kernel error) is `other`.
//!
//! A refused message with a usable `id` (read from the JWS payload even when the
//! signature fails) gets a `rejected` [`Ack`] whose error starts with the reason
//! name (`bad_signature: ...`); one without is only counted and logged. A replay
//! is counted but not acked again: its first delivery was acked, and a second,
//! `rejected`, ack under the same id would contradict it.
//!
//! Blocks from verdicts have origin [`Origin::Detector`] and `by` = the detector
//! id; blocks from commands have origin [`Origin::Command`] and `by` =
//! `<operator>@<dashboard id>` (the operator name is the dashboard's word, the
//! dashboard id the certificate's).
//!
//! `protect_syn` / `unprotect_syn` ([`Action::is_syn_auth`]) go through the same
//! checks 1-6 (TTL bound included; the wire type already requires one host and,
//! for `protect_syn`, a TTL), then switch SYN authentication of the service
//! (`target` host, `port` or every TCP port) on or off in `SYN_AUTH`
//! ([`crate::lists::apply_protection`]: only ever extended, counters kept), with
//! the same origin, `by` and rule id as a block, recorded in the state file's
//! `protected` section. They never touch the blocklist: the sources of a spoofed
//! flood are random, so none is blocked. Acked `applied` / `no_change` like
//! blocks (`observed` in observe mode, nothing changed). A detector's
//! `unprotect_syn` lifts only a detector's protection (`not_owner` otherwise),
//! as its `unblock` lifts only detector entries. Each of them also frees the
//! slots of expired protections ([`crate::lists::sweep_protections`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    time::Instant,
};

use base64::Engine as _;
use fw_common::filter::{BlockReason, ORIGIN_DATAPATH, ORIGIN_DETECTOR};
use serde::Serialize;
use tad_bus::{SignError, Verifier};
use tad_wire::{
    Ack, Action, Command, NodeId, Outcome, RefusalCounts, RefusalReason, SCHEMA_VERSION, Target,
    Verdict, WidthPolicy,
};

use crate::{
    clock,
    config::GatewayFile,
    control::{self, Meta},
    error::CtlError,
    lists::{self, BlockRequest, Change, Lists, Merge, Origin, ProtectRequest, Strictness},
    state::{ProtectRecord, State},
};

/// What the gateway accepts.
#[derive(Clone, Debug)]
pub struct Policy {
    pub gateway_id: NodeId,
    pub trusted_detectors: Vec<String>,
    pub trusted_dashboards: Vec<String>,
    pub max_ttl_s: u64,
    /// 0 = permanent.
    pub default_block_ttl_s: u64,
    /// Narrowest prefix a verdict or command may block (`verdicts.min_prefix_*`).
    pub width: WidthPolicy,
    /// Largest |now - issued_at_ms| accepted, s (`verdicts.max_age_s`).
    pub max_age_s: u64,
    /// Ids remembered per sender (`verdicts.replay_window`, at least 1).
    pub replay_window: usize,
    /// Rate for SYNs a protected service's challenge cannot answer (IPv4 options,
    /// IPv6 extension headers), packets/s; 0 passes them
    /// (`fw_common::synauth::SynAuthEntry::fallback_pps`).
    pub syn_fallback_pps: u32,
    /// Burst of that rate, packets.
    pub syn_fallback_burst: u32,
}

impl Policy {
    /// The policy of a configuration.
    ///
    /// # Errors
    /// An invalid `gateway_id` ([`GatewayFile::node_id`]).
    pub fn from_config(c: &GatewayFile) -> crate::error::Result<Policy> {
        Ok(Policy {
            gateway_id: c.node_id()?,
            trusted_detectors: c.trust.detectors.clone(),
            trusted_dashboards: c.trust.dashboards.clone(),
            max_ttl_s: c.verdicts.max_ttl_s,
            default_block_ttl_s: c.verdicts.default_block_ttl_s,
            width: c.verdicts.width(),
            max_age_s: c.verdicts.max_age_s,
            replay_window: c.verdicts.replay_window,
            // No configuration key yet: unanswerable SYNs pass, as with
            // `fw-ctl protect`'s default.
            syn_fallback_pps: 0,
            syn_fallback_burst: 0,
        })
    }
}

/// Counts of what happened to verdicts and commands since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EnforcerStats {
    pub verdicts_applied: u64,
    pub verdicts_no_change: u64,
    pub verdicts_observed: u64,
    /// Verdicts refused, for any reason (also counted in `refusals`).
    pub verdicts_rejected: u64,
    pub commands_applied: u64,
    pub commands_no_change: u64,
    /// Commands refused, for any reason (also counted in `refusals`).
    pub commands_rejected: u64,
    /// Payloads that could not be decoded: not a JWS, or a message inside that is
    /// not valid JSON/schema (also counted as rejected).
    pub malformed: u64,
    /// Largest receipt-to-map-update time seen, µs.
    pub apply_us_max: u64,
    /// Refused verdicts and commands by reason (`bad_signature`, `stale`, ...).
    pub refusals: RefusalCounts,
}

/// The ids last accepted from one sender: at most `cap`, oldest forgotten first.
#[derive(Debug)]
struct ReplayWindow {
    order: VecDeque<String>,
    ids: HashSet<String>,
    cap: usize,
}

impl ReplayWindow {
    fn new(cap: usize) -> Self {
        ReplayWindow {
            order: VecDeque::new(),
            ids: HashSet::new(),
            cap: cap.max(1),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if !self.ids.insert(id.to_string()) {
            return;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Applies verdicts and commands to the lists.
#[derive(Debug)]
pub struct Enforcer {
    pub policy: Policy,
    pub stats: EnforcerStats,
    pub state_path: Option<PathBuf>,
    verifier: Verifier,
    /// Per sender (only senders that passed the trust check get one).
    seen: HashMap<String, ReplayWindow>,
}

struct Request<'a> {
    action: Action,
    target: Target,
    ttl_s: Option<u64>,
    reason: BlockReason,
    origin: Origin,
    text: Option<String>,
    by: &'a str,
    rule_id: u32,
    /// SYN authentication only: the TCP port (`None` = every port).
    port: Option<u16>,
}

/// Why one message was refused.
#[derive(Debug)]
struct Refusal {
    reason: RefusalReason,
    why: String,
    /// The message id, when one could be read (for the ack).
    id: Option<String>,
    /// The payload could not be decoded (counted in `malformed`).
    undecodable: bool,
}

impl Refusal {
    fn new(reason: RefusalReason, why: impl Into<String>) -> Self {
        Refusal {
            reason,
            why: why.into(),
            id: None,
            undecodable: false,
        }
    }
}

/// Which of the two signed message kinds a payload is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Verdict,
    Command,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Verdict => "verdict",
            Kind::Command => "command",
        }
    }
}

/// A refusal reason's name (`bad_signature`), as in the status file.
pub fn reason_name(r: RefusalReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Low 32 bits of FNV-1a of a verdict/command id: the `rule_id` stored in the map,
/// to correlate a map entry with the message that created it.
pub fn rule_id_of(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// What the checks need from a verdict or a command.
trait Signable: tad_wire::Message {
    fn id(&self) -> &str;
    fn issued_at_ms(&self) -> u64;
    /// The sender id the payload itself names, if it names one.
    fn named_sender(&self) -> Option<&str>;
}

impl Signable for Verdict {
    fn id(&self) -> &str {
        &self.id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn named_sender(&self) -> Option<&str> {
        Some(self.detector_id.as_str())
    }
}

impl Signable for Command {
    fn id(&self) -> &str {
        &self.id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn named_sender(&self) -> Option<&str> {
        None
    }
}

/// The `id` of a JSON object, when usable in an ack.
fn id_of_json(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let id = v.get("id")?.as_str()?;
    (!id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)).then(|| id.to_string())
}

/// The id of a payload that failed a check before it could be trusted: from the
/// payload of a compact JWS (its signature unchecked), or from plain JSON.
fn salvage_id(payload: &[u8]) -> Option<String> {
    if let Some(id) = id_of_json(payload) {
        return Some(id);
    }
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('.');
    let (_, body, _) = (parts.next()?, parts.next()?, parts.next()?);
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    id_of_json(&json)
}

impl Enforcer {
    /// An enforcer that verifies every message with `verifier` (the bus CA) and
    /// keeps the state file at `state_path` (`None`: maps only, tests).
    pub fn new(policy: Policy, verifier: Verifier, state_path: Option<PathBuf>) -> Self {
        Enforcer {
            policy,
            stats: EnforcerStats::default(),
            state_path,
            verifier,
            seen: HashMap::new(),
        }
    }

    fn ack(&mut self, id: &str, outcome: Outcome, error: Option<String>, received: Instant) -> Ack {
        let apply_us = received.elapsed().as_micros() as u64;
        self.stats.apply_us_max = self.stats.apply_us_max.max(apply_us);
        Ack {
            v: SCHEMA_VERSION,
            id: id.to_string(),
            gateway_id: self.policy.gateway_id.clone(),
            outcome,
            error,
            at_ms: clock::unix_ms(),
            apply_us,
        }
    }

    /// Checks 1-5 of the module docs; the verified message and its signer.
    fn admit<M: Signable>(
        &self,
        payload: &[u8],
        topic_identity: &str,
        trusted: &[String],
    ) -> Result<(M, NodeId), Refusal> {
        let signed = self.verifier.verify::<M>(payload).map_err(|e| Refusal {
            reason: e.refusal(),
            why: e.to_string(),
            id: salvage_id(payload),
            undecodable: matches!(e, SignError::NotJws { .. } | SignError::Payload(_)),
        })?;
        let (m, signer) = (signed.message, signed.signer);
        let with_id = |r: Refusal| Refusal {
            id: Some(m.id().to_string()),
            ..r
        };
        if signer.as_str() != topic_identity {
            return Err(with_id(Refusal::new(
                RefusalReason::IdentityMismatch,
                format!("signed by {signer:?} but published under {topic_identity:?}'s topic"),
            )));
        }
        if let Some(named) = m.named_sender()
            && named != signer.as_str()
        {
            return Err(with_id(Refusal::new(
                RefusalReason::IdentityMismatch,
                format!("signed by {signer:?} but names {named:?} as its sender"),
            )));
        }
        if !trusted.iter().any(|t| t == signer.as_str()) {
            return Err(with_id(Refusal::new(
                RefusalReason::UntrustedSender,
                format!("{signer:?} is not in this gateway's [trust] list"),
            )));
        }
        let now = clock::unix_ms();
        let age_ms = now.abs_diff(m.issued_at_ms());
        if age_ms > self.policy.max_age_s.saturating_mul(1000) {
            return Err(with_id(Refusal::new(
                RefusalReason::Stale,
                format!(
                    "issued_at_ms {} is {} s from this gateway's clock (verdicts.max_age_s = {})",
                    m.issued_at_ms(),
                    age_ms / 1000,
                    self.policy.max_age_s
                ),
            )));
        }
        if self
            .seen
            .get(signer.as_str())
            .is_some_and(|w| w.contains(m.id()))
        {
            return Err(with_id(Refusal::new(
                RefusalReason::Replayed,
                format!("id {:?} was already accepted from {signer:?}", m.id()),
            )));
        }
        Ok((m, signer))
    }

    /// Counts and logs a refusal; the ack to publish, if any.
    fn refuse(
        &mut self,
        kind: Kind,
        topic_identity: &str,
        r: Refusal,
        received: Instant,
    ) -> Option<Ack> {
        *self.stats.refusals.entry(r.reason).or_default() += 1;
        if r.undecodable {
            self.stats.malformed += 1;
        }
        let reason = reason_name(r.reason);
        tracing::warn!(kind = kind.name(), sender = topic_identity, reason = %reason, id = r.id.as_deref().unwrap_or(""),
            error = %r.why, "refused");
        if r.reason == RefusalReason::Replayed {
            return None;
        }
        let id = r.id?;
        Some(self.ack(
            &id,
            Outcome::Rejected,
            Some(format!("{reason}: {}", r.why)),
            received,
        ))
    }

    fn remember(&mut self, sender: &NodeId, id: &str) {
        let cap = self.policy.replay_window;
        self.seen
            .entry(sender.to_string())
            .or_insert_with(|| ReplayWindow::new(cap))
            .insert(id);
    }

    /// Handles a verdict payload (a JWS) received on the topic of detector
    /// `topic_identity` (see the module docs for the checks). Returns the ack to
    /// publish: none for a payload without a usable id, or a replay.
    pub fn on_verdict<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        payload: &[u8],
        topic_identity: &str,
        received: Instant,
    ) -> Option<Ack> {
        let admitted =
            self.admit::<Verdict>(payload, topic_identity, &self.policy.trusted_detectors);
        let (v, signer) = match admitted {
            Ok(x) => x,
            Err(r) => {
                self.count(Kind::Verdict, Outcome::Rejected);
                return self.refuse(Kind::Verdict, topic_identity, r, received);
            }
        };
        let result = if v.observe_only {
            Ok(Outcome::Observed)
        } else {
            let ttl_s = match (v.action, v.ttl_s) {
                (Action::Block, None) if self.policy.default_block_ttl_s > 0 => {
                    Some(self.policy.default_block_ttl_s)
                }
                (_, t) => t,
            };
            self.act(
                lists,
                Request {
                    action: v.action,
                    target: v.target,
                    ttl_s,
                    reason: v.reason,
                    origin: Origin::Detector,
                    text: Some(v.rule.clone()),
                    by: signer.as_str(),
                    rule_id: rule_id_of(&v.id),
                    port: v.port,
                },
            )
        };
        if let Ok(outcome) = &result {
            tracing::info!(id = %v.id, detector = %signer, action = ?v.action,
                target = %v.target, port = ?v.port, outcome = ?outcome, "verdict");
        }
        self.finish(
            Kind::Verdict,
            topic_identity,
            &v.id,
            &signer,
            result,
            received,
        )
    }

    /// Handles a command payload (a JWS) received on the topic of dashboard
    /// `topic_identity` (see [`Self::on_verdict`]).
    pub fn on_command<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        payload: &[u8],
        topic_identity: &str,
        received: Instant,
    ) -> Option<Ack> {
        let admitted =
            self.admit::<Command>(payload, topic_identity, &self.policy.trusted_dashboards);
        let (c, signer) = match admitted {
            Ok(x) => x,
            Err(r) => {
                self.count(Kind::Command, Outcome::Rejected);
                return self.refuse(Kind::Command, topic_identity, r, received);
            }
        };
        let reason = match c.action {
            Action::Quarantine => BlockReason::Quarantine,
            _ => BlockReason::Manual,
        };
        let by = format!("{}@{}", c.operator, signer);
        let result = self.act(
            lists,
            Request {
                action: c.action,
                target: c.target,
                ttl_s: c.ttl_s,
                reason,
                origin: Origin::Command,
                text: c.reason.clone(),
                by: &by,
                rule_id: rule_id_of(&c.id),
                port: c.port,
            },
        );
        if let Ok(outcome) = &result {
            tracing::info!(id = %c.id, by = %by, action = ?c.action, target = %c.target,
                port = ?c.port, outcome = ?outcome, "command");
        }
        self.finish(
            Kind::Command,
            topic_identity,
            &c.id,
            &signer,
            result,
            received,
        )
    }

    /// Counts `o` for a message of `kind` in [`EnforcerStats`].
    fn count(&mut self, kind: Kind, o: Outcome) {
        let s = &mut self.stats;
        match (kind, o) {
            (Kind::Verdict, Outcome::Applied) => s.verdicts_applied += 1,
            (Kind::Verdict, Outcome::NoChange) => s.verdicts_no_change += 1,
            (Kind::Verdict, Outcome::Observed) => s.verdicts_observed += 1,
            (Kind::Verdict, Outcome::Rejected) => s.verdicts_rejected += 1,
            (Kind::Command, Outcome::Applied) => s.commands_applied += 1,
            (Kind::Command, Outcome::Rejected) => s.commands_rejected += 1,
            (Kind::Command, _) => s.commands_no_change += 1,
        }
    }

    /// The end of an admitted message `id` from `signer`: a policy refusal
    /// (check 6) is counted and answered as one; otherwise the id goes into the
    /// replay window, the outcome is counted and acked.
    fn finish(
        &mut self,
        kind: Kind,
        topic_identity: &str,
        id: &str,
        signer: &NodeId,
        result: Result<Outcome, Refusal>,
        received: Instant,
    ) -> Option<Ack> {
        match result {
            Ok(outcome) => {
                self.remember(signer, id);
                self.count(kind, outcome);
                Some(self.ack(id, outcome, None, received))
            }
            Err(r) => {
                self.count(kind, Outcome::Rejected);
                let r = Refusal {
                    id: Some(id.to_string()),
                    ..r
                };
                self.refuse(kind, topic_identity, r, received)
            }
        }
    }

    fn act<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        r: Request<'_>,
    ) -> Result<Outcome, Refusal> {
        if let Some(t) = r.ttl_s
            && t > self.policy.max_ttl_s
        {
            return Err(Refusal::new(
                RefusalReason::Ttl,
                format!(
                    "ttl_s {t} exceeds this gateway's maximum of {} s",
                    self.policy.max_ttl_s
                ),
            ));
        }
        let target = r.target.net();
        let sp = self.state_path.as_deref();
        let other =
            |e: CtlError| Refusal::new(RefusalReason::Other, format!("applying failed: {e}"));
        match r.action {
            Action::ProtectSyn | Action::UnprotectSyn => self.syn_auth(lists, r),
            Action::Unblock => {
                if r.origin == Origin::Detector
                    && let Some(e) = lists.get_block(&target).map_err(other)?
                    && !matches!(e.origin, ORIGIN_DETECTOR | ORIGIN_DATAPATH)
                {
                    return Err(Refusal::new(
                        RefusalReason::NotOwner,
                        format!(
                            "{target} was blocked by {}; a detector lifts only detector and \
                             provisional (datapath) entries",
                            Origin::from_code(e.origin).as_str()
                        ),
                    ));
                }
                let done = control::unblock(lists, sp, &[target]).map_err(other)?;
                Ok(if done[0].1 {
                    Outcome::Applied
                } else {
                    Outcome::NoChange
                })
            }
            Action::Block | Action::Quarantine => {
                self.policy
                    .width
                    .check(&r.target)
                    .map_err(|e| Refusal::new(RefusalReason::TooWide, e.to_string()))?;
                let req = BlockRequest {
                    net: target,
                    ttl: r.ttl_s.map(std::time::Duration::from_secs),
                    reason: r.reason,
                    origin: r.origin,
                    rule_id: r.rule_id,
                };
                let meta = Meta {
                    text: r.text,
                    by: Some(r.by.to_string()),
                };
                match control::block(
                    lists,
                    sp,
                    &[req],
                    &meta,
                    Merge::Extend,
                    Strictness::NoOverlap,
                ) {
                    Ok(o) if o[0].change == Change::Unchanged => Ok(Outcome::NoChange),
                    Ok(_) => Ok(Outcome::Applied),
                    Err(e @ CtlError::Allowlisted { .. }) => {
                        Err(Refusal::new(RefusalReason::Allowlisted, e.to_string()))
                    }
                    Err(e) => Err(other(e)),
                }
            }
        }
    }

    /// `protect_syn` / `unprotect_syn` (TTL already checked; see the module docs).
    fn syn_auth<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        r: Request<'_>,
    ) -> Result<Outcome, Refusal> {
        let other =
            |e: CtlError| Refusal::new(RefusalReason::Other, format!("applying failed: {e}"));
        // The wire type guarantees one host; checked again rather than trusted.
        let net = r.target.net();
        if net.prefix_len() != net.max_prefix_len() {
            return Err(Refusal::new(
                RefusalReason::TooWide,
                format!("{:?} protects one host, not {net}", r.action),
            ));
        }
        let service = std::net::SocketAddr::new(net.addr(), r.port.unwrap_or(0));
        let now_mono = clock::mono_ns();
        if r.action == Action::UnprotectSyn
            && r.origin == Origin::Detector
            && let Some((_, e)) = lists
                .protections()
                .map_err(other)?
                .into_iter()
                .find(|(s, e)| *s == service && e.active(now_mono))
            && e.origin != ORIGIN_DETECTOR
        {
            return Err(Refusal::new(
                RefusalReason::NotOwner,
                format!(
                    "{service} was protected by {}; a detector lifts only its own protections",
                    Origin::from_code(e.origin).as_str()
                ),
            ));
        }
        let req = ProtectRequest {
            service,
            ttl: r.ttl_s.map(std::time::Duration::from_secs),
            fallback_pps: self.policy.syn_fallback_pps,
            fallback_burst: self.policy.syn_fallback_burst,
            origin: r.origin,
            rule_id: r.rule_id,
        };
        let (text, by, action) = (r.text, r.by.to_string(), r.action);
        with_state(self.state_path.as_deref(), |st| {
            let mut changed = false;
            for gone in lists::sweep_protections(lists, now_mono)? {
                changed |= st.protected.remove(&gone).is_some();
            }
            let outcome = if action == Action::ProtectSyn {
                let (change, _) = lists::apply_protection(lists, &req, now_mono)?;
                // Unchanged: the protection in force (maybe the operator's) keeps its
                // record, or its lack of one.
                if change != Change::Unchanged {
                    st.protected.insert(
                        service,
                        ProtectRecord {
                            origin: req.origin,
                            rule_id: req.rule_id,
                            text,
                            by: Some(by),
                            created_unix_ms: clock::unix_ms(),
                        },
                    );
                    changed = true;
                }
                if change == Change::Unchanged {
                    Outcome::NoChange
                } else {
                    Outcome::Applied
                }
            } else {
                let in_map = lists.del_protection(service)?;
                let in_file = st.protected.remove(&service).is_some();
                changed |= in_file;
                if in_map {
                    Outcome::Applied
                } else {
                    Outcome::NoChange
                }
            };
            Ok((outcome, changed))
        })
        .map_err(other)
    }
}

/// Runs `f` on the state file under its lock (saved when `f` reports a change),
/// or on a throwaway state without one.
fn with_state<T>(
    path: Option<&std::path::Path>,
    f: impl FnOnce(&mut State) -> crate::error::Result<(T, bool)>,
) -> crate::error::Result<T> {
    match path {
        Some(p) => crate::state::update(p, f),
        None => f(&mut State::default()).map(|(t, _)| t),
    }
}

#[cfg(test)]
mod tests;
