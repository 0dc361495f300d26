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

use std::{collections::BTreeMap, net::IpAddr};

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
    /// The gateway's XDP program itself: a provisional quarantine of a source over
    /// its evidence budget (`[evidence] quarantine_distinct`), which drops only the
    /// source's new flows until a detector confirms it (block) or lifts it
    /// (unblock), or it expires (`[evidence] quarantine_ttl_ms`).
    Datapath,
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
    /// A provisional quarantine (origin [`BlockOrigin::Datapath`]): only the
    /// source's new flows are dropped, its established flows pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
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

/// One TCP service under SYN authentication (`fw_common::synauth`): the answer to
/// a spoofed SYN flood against it, switched on by a `protect_syn` verdict or
/// command (or `fw-ctl protect`) and off by `unprotect_syn` or its expiry. No
/// source is blocked for it. Read from the gateway's `SYN_AUTH` map (expiry,
/// counters, origin) joined with its state file (rule, who, when).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedService {
    /// The protected server's address.
    pub addr: IpAddr,
    /// Its TCP port; `None` = every TCP port of `addr`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Who switched it on ([`BlockOrigin::Verdict`], [`BlockOrigin::Command`],
    /// [`BlockOrigin::Cli`]).
    pub origin: BlockOrigin,
    /// The verdict's rule (e.g. `synflood.spoofed`) or the command's reason text,
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who asked: a detector id, `operator@dashboard`; when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When it was switched on, Unix ms (0 when unknown: no state-file record).
    pub created_ms: u64,
    /// When it ends, Unix ms; `None` = until removed.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// SYN-ACK challenges the XDP program sent (one per unproven SYN).
    pub challenged: u64,
    /// Sources that proved themselves (valid cookie in their RST).
    pub validated: u64,
    /// SYNs of validated sources passed to the server.
    pub passed: u64,
    /// SYNs that could not be challenged and were over the fallback rate (dropped).
    pub limited: u64,
}

impl ProtectedService {
    /// `addr:port`, or `addr:*` for every port (`[v6]:port` for IPv6).
    pub fn service(&self) -> String {
        let port = self.port.map_or("*".to_string(), |p| p.to_string());
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        }
    }

    /// The same protection with the counters left out (what a delta is made for).
    pub fn same_but_counters(&self, other: &ProtectedService) -> bool {
        ProtectedService {
            challenged: 0,
            validated: 0,
            passed: 0,
            limited: 0,
            ..self.clone()
        } == ProtectedService {
            challenged: 0,
            validated: 0,
            passed: 0,
            limited: 0,
            ..other.clone()
        }
    }
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
    /// A detector's unblock of an entry another authority made (the operator, a
    /// feed, a dashboard command, the configuration): detectors lift only their own
    /// and the XDP program's provisional entries.
    NotOwner,
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
    /// Services under SYN authentication, in force (unexpired), sorted by address
    /// and port, with their counters as of `at_ms`.
    #[serde(default)]
    pub protected: Vec<ProtectedService>,
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
    /// Present when a protected service appeared, went, or its protection changed
    /// (expiry, origin, rule): the whole new list ([`GatewayState::protected`]).
    /// Counters moving alone make no delta; they travel with the snapshots (and
    /// with any delta that carries the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<Vec<ProtectedService>>,
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
        if let Some(p) = &d.protected {
            self.protected = p.clone();
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
            provisional: false,
        }
    }

    #[test]
    fn provisional_is_written_only_when_set_and_read_as_false_when_absent() {
        let b = block("198.51.100.7/32");
        let j = serde_json::to_value(&b).unwrap();
        assert!(j.get("provisional").is_none(), "{j}");
        let q = EnforcedBlock {
            origin: BlockOrigin::Datapath,
            reason: BlockReason::Quarantine,
            provisional: true,
            ..b
        };
        let j = serde_json::to_value(&q).unwrap();
        assert_eq!(
            (&j["provisional"], &j["origin"]),
            (&true.into(), &"datapath".into())
        );
        let back: EnforcedBlock = serde_json::from_value(j).unwrap();
        assert_eq!(back, q);
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
            protected: vec![],
        }
    }

    fn protected(addr: &str, port: Option<u16>) -> ProtectedService {
        ProtectedService {
            addr: addr.parse().unwrap(),
            port,
            origin: BlockOrigin::Verdict,
            rule: Some("synflood.spoofed".into()),
            by: Some("detector-1".into()),
            created_ms: 1,
            expires_at_ms: Some(600_001),
            challenged: 40,
            validated: 1,
            passed: 3,
            limited: 0,
        }
    }

    #[test]
    fn a_state_without_protected_services_still_decodes() {
        let mut j = serde_json::to_value(state()).unwrap();
        j.as_object_mut().unwrap().remove("protected");
        let s: GatewayState = serde_json::from_value(j).unwrap();
        assert!(s.protected.is_empty());
    }

    #[test]
    fn protected_services_round_trip_and_name_their_service() {
        let mut s = state();
        s.protected = vec![
            protected("192.0.2.10", Some(80)),
            protected("2001:db8::1", None),
        ];
        let json = String::from_utf8(encode(&s)).unwrap();
        assert!(json.contains(r#""port":null"#), "{json}");
        assert_eq!(decode::<GatewayState>(json.as_bytes()).unwrap(), s);
        let names: Vec<String> = s.protected.iter().map(|p| p.service()).collect();
        assert_eq!(names, ["192.0.2.10:80", "[2001:db8::1]:*"]);
        let mut more = s.protected[0].clone();
        more.challenged += 1000;
        assert!(more.same_but_counters(&s.protected[0]));
        more.expires_at_ms = Some(1);
        assert!(!more.same_but_counters(&s.protected[0]));
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
            protected: Some(vec![protected("192.0.2.10", Some(80))]),
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
        assert_eq!(
            s.protected.len(),
            1,
            "the delta's list replaces the state's"
        );
        assert!(!s.apply(&d), "a delta is applied once");
    }
}
