//! Verdicts (from detectors) and commands (from dashboards): validation, applying
//! them to the block map, and the [`Ack`] that answers each.
//!
//! Checks, in order; the first failure rejects the message and changes nothing:
//! 1. schema: JSON, schema version, field checks ([`tad_wire::decode`]);
//! 2. sender identity: a verdict's `detector_id` must be a trusted detector and a
//!    command's sender a trusted dashboard; when the bus reports the publishing
//!    client's identity it must match too (the broker authenticates clients by
//!    certificate, `use_identity_as_username`);
//! 3. TTL: at most `verdicts.max_ttl_s`; a detector's `block` without a TTL gets
//!    `verdicts.default_block_ttl_s`;
//! 4. target width: no verdict may block a prefix wider than `verdicts.min_prefix_*`;
//! 5. allowlist: a target sharing any address with the allowlist (own addresses,
//!    management network, manual allows) is refused.
//!
//! A payload too broken to carry an `id` cannot be acked; it is counted and logged.

use std::{path::PathBuf, time::Instant};

use fw_common::filter::BlockReason;
use serde::Serialize;
use tad_wire::{
    Ack, Action, Command, NodeId, Outcome, SCHEMA_VERSION, Target, Verdict, WidthPolicy,
};

use crate::{
    clock,
    config::GatewayFile,
    control::{self, Meta},
    error::CtlError,
    lists::{BlockRequest, Change, Lists, Merge, Origin, Strictness},
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
    pub verdicts_rejected: u64,
    pub commands_applied: u64,
    pub commands_no_change: u64,
    pub commands_rejected: u64,
    /// Payloads that were not valid JSON/schema (also counted as rejected).
    pub malformed: u64,
    /// Largest receipt-to-map-update time seen, µs.
    pub apply_us_max: u64,
}

/// Applies verdicts and commands to the lists.
#[derive(Debug)]
pub struct Enforcer {
    pub policy: Policy,
    pub stats: EnforcerStats,
    pub state_path: Option<PathBuf>,
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

impl Enforcer {
    pub fn new(policy: Policy, state_path: Option<PathBuf>) -> Self {
        Enforcer {
            policy,
            stats: EnforcerStats::default(),
            state_path,
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

    /// The id of a payload that failed to decode, when it has a usable one.
    fn salvage_id(payload: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let id = v.get("id")?.as_str()?;
        (!id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control))
            .then(|| id.to_string())
    }

    fn malformed(
        &mut self,
        kind: &str,
        payload: &[u8],
        e: tad_wire::WireError,
        received: Instant,
    ) -> Option<Ack> {
        self.stats.malformed += 1;
        tracing::warn!(kind, error = %e, bytes = payload.len(), "rejected malformed message");
        Self::salvage_id(payload)
            .map(|id| self.ack(&id, Outcome::Rejected, Some(e.to_string()), received))
    }

    /// Handles a verdict payload. `sender` is the publishing client's identity
    /// when the bus knows it. Returns the ack to publish (none for a payload
    /// without a usable id).
    pub fn on_verdict<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        payload: &[u8],
        sender: Option<&str>,
        received: Instant,
    ) -> Option<Ack> {
        let v: Verdict = match tad_wire::decode(payload) {
            Ok(v) => v,
            Err(e) => {
                self.stats.verdicts_rejected += 1;
                return self.malformed("verdict", payload, e, received);
            }
        };
        let trusted = self
            .policy
            .trusted_detectors
            .iter()
            .any(|d| d == v.detector_id.as_str())
            && sender.is_none_or(|s| s == v.detector_id.as_str());
        let result = if !trusted {
            Err(format!(
                "sender {:?} (detector_id {:?}) is not a trusted detector",
                sender.unwrap_or("?"),
                v.detector_id
            ))
        } else if v.observe_only {
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
                    by: v.detector_id.as_str(),
                    rule_id: rule_id_of(&v.id),
                },
            )
        };
        let (outcome, error) = match result {
            Ok(o) => (o, None),
            Err(e) => (Outcome::Rejected, Some(e)),
        };
        match outcome {
            Outcome::Applied => self.stats.verdicts_applied += 1,
            Outcome::NoChange => self.stats.verdicts_no_change += 1,
            Outcome::Observed => self.stats.verdicts_observed += 1,
            Outcome::Rejected => {
                self.stats.verdicts_rejected += 1;
                tracing::warn!(id = %v.id, detector = %v.detector_id, target = %v.target,
                    error = error.as_deref().unwrap_or(""), "verdict rejected");
            }
        }
        if outcome != Outcome::Rejected {
            tracing::info!(id = %v.id, detector = %v.detector_id, action = ?v.action,
                target = %v.target, outcome = ?outcome, "verdict");
        }
        Some(self.ack(&v.id, outcome, error, received))
    }

    /// Handles a command payload (see [`Self::on_verdict`]). `sender` is the
    /// publishing dashboard's id when the bus knows it; without it the broker's ACL
    /// (only dashboards may publish commands) is what vouches for the sender, and
    /// at least one dashboard must be trusted.
    pub fn on_command<L: Lists + ?Sized>(
        &mut self,
        lists: &mut L,
        payload: &[u8],
        sender: Option<&str>,
        received: Instant,
    ) -> Option<Ack> {
        let c: Command = match tad_wire::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                self.stats.commands_rejected += 1;
                return self.malformed("command", payload, e, received);
            }
        };
        let trusted = match sender {
            Some(s) => self.policy.trusted_dashboards.iter().any(|d| d == s),
            None => !self.policy.trusted_dashboards.is_empty(),
        };
        let result = if !trusted {
            Err(format!(
                "sender {:?} is not a trusted dashboard",
                sender.unwrap_or("?")
            ))
        } else {
            let reason = match c.action {
                Action::Quarantine => BlockReason::Quarantine,
                _ => BlockReason::Manual,
            };
            let by = format!("{}@{}", c.operator, sender.unwrap_or("dashboard"));
            self.act(
                lists,
                Request {
                    action: c.action,
                    target: c.target,
                    ttl_s: c.ttl_s,
                    reason,
                    origin: Origin::Manual,
                    text: c.reason.clone(),
                    by: &by,
                    rule_id: rule_id_of(&c.id),
                },
            )
        };
        let (outcome, error) = match result {
            Ok(o) => (o, None),
            Err(e) => (Outcome::Rejected, Some(e)),
        };
        match outcome {
            Outcome::Applied => self.stats.commands_applied += 1,
            Outcome::Rejected => {
                self.stats.commands_rejected += 1;
                tracing::warn!(id = %c.id, operator = %c.operator, target = %c.target,
                    error = error.as_deref().unwrap_or(""), "command rejected");
            }
            _ => self.stats.commands_no_change += 1,
        }
        Some(self.ack(&c.id, outcome, error, received))
    }

    fn act<L: Lists + ?Sized>(&mut self, lists: &mut L, r: Request<'_>) -> Result<Outcome, String> {
        if let Some(t) = r.ttl_s
            && t > self.policy.max_ttl_s
        {
            return Err(format!(
                "ttl_s {t} exceeds this gateway's maximum of {} s",
                self.policy.max_ttl_s
            ));
        }
        let target = r.target.net();
        let sp = self.state_path.as_deref();
        match r.action {
            Action::Unblock => {
                let done = control::unblock(lists, sp, &[target]).map_err(|e| e.to_string())?;
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
                    .map_err(|e| e.to_string())?;
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
                    Err(e @ CtlError::Allowlisted { .. }) => Err(e.to_string()),
                    Err(e) => Err(format!("applying failed: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fw_common::filter::{AllowEntry, ORIGIN_CONFIG};

    use super::*;
    use crate::lists::MemLists;

    fn policy() -> Policy {
        Policy {
            gateway_id: "gw-1".parse().unwrap(),
            trusted_detectors: vec!["det-1".into()],
            trusted_dashboards: vec!["dash-1".into()],
            max_ttl_s: 3600,
            default_block_ttl_s: 600,
            width: WidthPolicy::default(),
        }
    }

    fn verdict(id: &str, target: &str) -> Verdict {
        Verdict {
            v: SCHEMA_VERSION,
            id: id.into(),
            detector_id: "det-1".parse().unwrap(),
            issued_at_ms: 1,
            action: Action::Quarantine,
            target: target.parse().unwrap(),
            ttl_s: Some(300),
            reason: BlockReason::PortScan,
            rule: "portscan.vertical".into(),
            confidence: 0.9,
            alert_id: None,
            observe_only: false,
        }
    }

    fn lists() -> MemLists {
        let mut l = MemLists::default();
        l.put_allow(
            &"192.0.2.0/28".parse().unwrap(),
            &AllowEntry {
                origin: ORIGIN_CONFIG,
                ..Default::default()
            },
        )
        .unwrap();
        l
    }

    #[test]
    fn a_valid_verdict_blocks_and_acks() {
        let mut l = lists();
        let mut e = Enforcer::new(policy(), None);
        let ack = e
            .on_verdict(
                &mut l,
                &tad_wire::encode(&verdict("v1", "198.51.100.7/32")),
                Some("det-1"),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(
            (ack.id.as_str(), ack.outcome, ack.gateway_id.as_str()),
            ("v1", Outcome::Applied, "gw-1")
        );
        let entry = l.block[&"198.51.100.7/32".parse().unwrap()];
        assert_eq!(entry.reason, BlockReason::PortScan as u8);
        assert_eq!(entry.origin, Origin::Detector.code());
        assert_eq!(entry.rule_id, rule_id_of("v1"));
        // A shorter quarantine of the same source: the longer one stays.
        let mut v2 = verdict("v2", "198.51.100.7/32");
        v2.ttl_s = Some(60);
        let ack = e
            .on_verdict(&mut l, &tad_wire::encode(&v2), None, Instant::now())
            .unwrap();
        assert_eq!(ack.outcome, Outcome::NoChange);
    }

    #[test]
    fn rejections_change_nothing_and_are_counted() {
        let mut l = lists();
        let mut e = Enforcer::new(policy(), None);
        let mut cases: Vec<(Vec<u8>, Option<&str>)> = Vec::new();
        let mut v = verdict("a", "192.0.2.5/32"); // management network
        cases.push((tad_wire::encode(&v), None));
        v = verdict("b", "192.0.2.0/24"); // holds the management network
        cases.push((tad_wire::encode(&v), None));
        v = verdict("c", "198.51.100.7/32");
        v.detector_id = "mallory".parse().unwrap();
        cases.push((tad_wire::encode(&v), None));
        v = verdict("d", "198.51.100.7/32");
        cases.push((tad_wire::encode(&v), Some("det-2"))); // spoofed detector_id
        v = verdict("e", "198.51.100.7/32");
        v.ttl_s = Some(7200); // over this gateway's maximum
        cases.push((tad_wire::encode(&v), None));
        v = verdict("f", "198.0.0.0/8"); // too wide
        cases.push((tad_wire::encode(&v), None));
        v = verdict("g", "198.51.100.7/32");
        v.v = 9;
        cases.push((tad_wire::encode(&v), None));
        for (payload, sender) in &cases {
            let ack = e
                .on_verdict(&mut l, payload, *sender, Instant::now())
                .unwrap();
            assert_eq!(
                ack.outcome,
                Outcome::Rejected,
                "{:?}",
                String::from_utf8_lossy(payload)
            );
            assert!(ack.error.is_some());
        }
        assert!(
            e.on_verdict(&mut l, b"\x00garbage", None, Instant::now())
                .is_none()
        );
        assert!(l.block.is_empty());
        assert_eq!(e.stats.verdicts_rejected, cases.len() as u64 + 1);
        assert_eq!(e.stats.malformed, 2);
    }

    #[test]
    fn commands_need_a_trusted_dashboard() {
        let mut l = lists();
        let mut e = Enforcer::new(policy(), None);
        let c = Command {
            v: SCHEMA_VERSION,
            id: "c1".into(),
            operator: "alice".into(),
            issued_at_ms: 1,
            action: Action::Block,
            target: "203.0.113.9/32".parse().unwrap(),
            ttl_s: Some(60),
            reason: Some("noisy".into()),
        };
        let ack = e
            .on_command(
                &mut l,
                &tad_wire::encode(&c),
                Some("dash-x"),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(ack.outcome, Outcome::Rejected);
        let ack = e
            .on_command(
                &mut l,
                &tad_wire::encode(&c),
                Some("dash-1"),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(ack.outcome, Outcome::Applied);
        let mut un = c.clone();
        un.id = "c2".into();
        un.action = Action::Unblock;
        un.ttl_s = None;
        let ack = e
            .on_command(
                &mut l,
                &tad_wire::encode(&un),
                Some("dash-1"),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(ack.outcome, Outcome::Applied);
        assert!(l.block.is_empty());
    }
}
