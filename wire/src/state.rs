//! What a gateway enforces, as it publishes it: a retained [`GatewayState`]
//! snapshot on `tad/v1/gw/<gw>/state` and [`GatewayStateDelta`]s on
//! `tad/v1/gw/<gw>/state/delta` between snapshots.
//!
//! Both are read from the gateway's pinned BPF maps (the block entries, their hit
//! counters and expiry) joined with its state file (who made each entry and why),
//! so every change shows up whatever made it: a verdict, a dashboard command,
//! `fw-ctl block` on the router, a feed load, the expiry sweep. A viewer keeps the
//! last snapshot and applies deltas whose `rev` follows the one it holds; on a gap
//! it waits for the next snapshot (the gateway republishes one at least every
//! `state.snapshot_interval_ms`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BlockReason, Message, Mode, NodeId, Target};

/// Who put an entry into the gateway's lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOrigin {
    /// `fw-ctl block` / `fw-ctl allow` on the router.
    Cli,
    /// A threat-intelligence feed (`fw-ctl feed load`).
    Feed,
    /// A detector's verdict.
    Verdict,
    /// A dashboard operator's command.
    Command,
    /// The gateway configuration (management networks, `allow`, own addresses).
    Config,
}

/// One blocklist entry as enforced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnforcedBlock {
    /// The blocked prefix (a /32 or /128 for a host).
    pub prefix: Target,
    pub origin: BlockOrigin,
    pub reason: BlockReason,
    /// Rule or free text the entry was made with (a verdict's rule id, a command's
    /// reason, a feed's file name), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who made it: a detector id, `operator@dashboard`, the CLI's user, `feed:<file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the entry was made, Unix ms (0 when unknown: entry found in the map
    /// without a state-file record).
    pub created_ms: u64,
    /// When it expires, Unix ms; `None` = permanent.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Packets dropped by this entry since it was made (XDP hit counter).
    pub hits: u64,
}

/// One allowlist entry as enforced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowEntry {
    pub prefix: Target,
    pub origin: BlockOrigin,
}

/// The per-source rate limits loaded in the XDP program (0 = off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    /// TCP SYN-without-ACK per source, packets/s.
    pub syn_pps: u32,
    /// SYN burst, packets.
    pub syn_burst: u32,
    /// All packets per source, packets/s.
    pub pps: u32,
    /// Packet burst, packets.
    pub burst: u32,
}

/// Why the gateway refused a verdict or a command (the keys of
/// [`GatewayState::refusals`] and of `fw-ctl status --json`'s `refusals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not a JWS, not JSON, wrong schema version or a field check failed.
    Malformed,
    /// No signature, a signature that does not verify, or a signing certificate
    /// that does not chain to the bus CA.
    BadSignature,
    /// The signer's certificate identity differs from the topic's identity level
    /// or from the id written in the payload.
    IdentityMismatch,
    /// The identity is valid but not listed in `[trust]`.
    UntrustedSender,
    /// Issued too long ago (or too far in the future) for `verdicts.max_age_s`.
    Stale,
    /// A message id already seen within the replay window.
    Replayed,
    /// TTL beyond `verdicts.max_ttl_s`.
    Ttl,
    /// Prefix wider than the width policy allows.
    TooWide,
    /// Target shares addresses with the allowlist or management networks.
    Allowlisted,
    /// The lists refused it for another reason (map full, kernel error).
    Other,
}

/// Counts of refusals by reason since the gateway daemon started.
pub type RefusalCounts = BTreeMap<RefusalReason, u64>;

/// The retained snapshot of everything a gateway enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayState {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Revision: +1 per delta; a snapshot carries the revision it includes.
    pub rev: u64,
    /// Unix time the maps were read, ms.
    pub at_ms: u64,
    pub mode: Mode,
    pub blocks: Vec<EnforcedBlock>,
    pub allow: Vec<AllowEntry>,
    pub limits: LimitsView,
    pub refusals: RefusalCounts,
}
message!(GatewayState, "gateway state");

/// Why an entry left the blocklist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// Its expiry passed (swept, or not matched any more by XDP).
    Expired,
    /// Removed before expiry: an unblock (CLI, command, verdict) or a merge.
    Removed,
}

/// A blocklist entry that is gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemovedBlock {
    pub prefix: Target,
    pub cause: RemovalCause,
}

/// Changes since revision `rev - 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayStateDelta {
    pub v: u16,
    pub gateway_id: NodeId,
    /// This delta's revision; it applies to a state at `rev - 1`.
    pub rev: u64,
    pub at_ms: u64,
    /// New entries, and entries whose expiry, reason, origin or hit count changed
    /// (so a replica applying every delta equals the next snapshot).
    #[serde(default)]
    pub upserted: Vec<EnforcedBlock>,
    #[serde(default)]
    pub removed: Vec<RemovedBlock>,
    /// Present when the mode changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Present when the allowlist changed: the whole new allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<AllowEntry>>,
    /// Present when a refusal counter moved: all counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<RefusalCounts>,
    /// Present when the rate limits changed: the limits now loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsView>,
}
message!(GatewayStateDelta, "gateway state delta");

impl GatewayState {
    /// Applies `d` when it follows this state (`d.rev == self.rev + 1`, same
    /// gateway). Returns false, changing nothing, otherwise: the caller then waits
    /// for the next snapshot.
    pub fn apply(&mut self, d: &GatewayStateDelta) -> bool {
        if d.gateway_id != self.gateway_id || d.rev != self.rev + 1 {
            return false;
        }
        for r in &d.removed {
            self.blocks.retain(|b| b.prefix != r.prefix);
        }
        for u in &d.upserted {
            match self.blocks.iter_mut().find(|b| b.prefix == u.prefix) {
                Some(b) => *b = u.clone(),
                None => self.blocks.push(u.clone()),
            }
        }
        if let Some(m) = d.mode {
            self.mode = m;
        }
        if let Some(a) = &d.allow {
            self.allow = a.clone();
        }
        if let Some(r) = &d.refusals {
            self.refusals = r.clone();
        }
        if let Some(l) = d.limits {
            self.limits = l;
        }
        self.rev = d.rev;
        self.at_ms = d.at_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SCHEMA_VERSION, decode, encode};

    fn block(p: &str) -> EnforcedBlock {
        EnforcedBlock {
            prefix: p.parse().unwrap(),
            origin: BlockOrigin::Cli,
            reason: BlockReason::Manual,
            rule: None,
            by: Some("root".into()),
            created_ms: 1,
            expires_at_ms: None,
            hits: 0,
        }
    }

    fn state() -> GatewayState {
        GatewayState {
            v: SCHEMA_VERSION,
            gateway_id: "gateway-1".parse().unwrap(),
            rev: 7,
            at_ms: 1,
            mode: Mode::Enforce,
            blocks: vec![block("192.0.2.7/32")],
            allow: vec![],
            limits: LimitsView::default(),
            refusals: [(RefusalReason::BadSignature, 2)].into(),
        }
    }

    #[test]
    fn snapshot_round_trips_with_refusal_keys_as_names() {
        let s = state();
        let json = String::from_utf8(encode(&s)).unwrap();
        assert!(json.contains(r#""bad_signature":2"#), "{json}");
        assert_eq!(decode::<GatewayState>(json.as_bytes()).unwrap(), s);
    }

    #[test]
    fn deltas_apply_in_order_only() {
        let mut s = state();
        let d = GatewayStateDelta {
            v: SCHEMA_VERSION,
            gateway_id: s.gateway_id.clone(),
            rev: 8,
            at_ms: 2,
            upserted: vec![block("198.51.100.0/24")],
            removed: vec![RemovedBlock {
                prefix: "192.0.2.7/32".parse().unwrap(),
                cause: RemovalCause::Expired,
            }],
            mode: Some(Mode::Observe),
            allow: None,
            refusals: None,
            limits: Some(LimitsView {
                syn_pps: 100,
                syn_burst: 20,
                pps: 0,
                burst: 0,
            }),
        };
        let mut gap = d.clone();
        gap.rev = 9;
        assert!(!s.apply(&gap));
        assert_eq!(s.rev, 7);
        assert!(s.apply(&d));
        assert_eq!(s.rev, 8);
        assert_eq!(s.mode, Mode::Observe);
        assert_eq!(s.limits.syn_pps, 100);
        let prefixes: Vec<String> = s.blocks.iter().map(|b| b.prefix.to_string()).collect();
        assert_eq!(prefixes, ["198.51.100.0/24"]);
        assert!(!s.apply(&d), "a delta is applied once");
    }
}
