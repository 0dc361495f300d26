//! The allowlist and blocklist, and the rules every change to them obeys, whoever
//! asks (operator CLI, detector verdict, dashboard command, threat feed):
//!
//! - the allowlist always wins: a block whose whole range is allowlisted is
//!   refused; for verdicts and commands ([`Strictness::NoOverlap`]) any overlap with
//!   the allowlist is refused, so a detector can never cut off the management
//!   network or the gateway itself;
//! - allowlist entries implied by the configuration (the gateway's own addresses,
//!   the management network; origin [`ORIGIN_CONFIG`]) cannot be removed by hand;
//! - an expired block counts as absent (the XDP program ignores it) and is swept.
//!
//! [`Lists`] abstracts the four LPM tries (and the protected services of SYN
//! authentication, `SYN_AUTH`) so the same rules run against the kernel maps
//! ([`crate::kernel::Pinned`]) and, in tests, against [`MemLists`].
//!
//! Protected services ([`apply_protection`]) follow the blocks' merge rule for
//! automatic sources: a protection is only ever extended, never shortened, and
//! keeps its counters when extended. They never touch the blocklist.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use fw_common::{
    filter::{
        AllowEntry, BlockEntry, BlockReason, ORIGIN_COMMAND, ORIGIN_CONFIG, ORIGIN_DATAPATH,
        ORIGIN_DETECTOR, ORIGIN_FEED, ORIGIN_MANUAL,
    },
    synauth::SynAuthEntry,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    cidr::overlaps,
    error::{CtlError, Result},
};

/// Who put an entry in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The operator on the router (`fw-ctl block`, `fw-ctl allow`).
    Manual,
    /// A detector's verdict.
    Detector,
    /// A threat-intelligence feed.
    Feed,
    /// Implied by the gateway configuration.
    Config,
    /// A dashboard operator's command (verified, from a trusted dashboard).
    Command,
    /// The XDP program's provisional quarantine (never made by userspace).
    Datapath,
}

impl Origin {
    /// The `ORIGIN_*` code stored in the map.
    pub fn code(self) -> u8 {
        match self {
            Origin::Manual => ORIGIN_MANUAL,
            Origin::Detector => ORIGIN_DETECTOR,
            Origin::Feed => ORIGIN_FEED,
            Origin::Config => ORIGIN_CONFIG,
            Origin::Command => ORIGIN_COMMAND,
            Origin::Datapath => ORIGIN_DATAPATH,
        }
    }

    /// The origin of a map code (unknown codes read as manual).
    pub fn from_code(code: u8) -> Origin {
        match code {
            ORIGIN_DETECTOR => Origin::Detector,
            ORIGIN_FEED => Origin::Feed,
            ORIGIN_CONFIG => Origin::Config,
            ORIGIN_COMMAND => Origin::Command,
            ORIGIN_DATAPATH => Origin::Datapath,
            _ => Origin::Manual,
        }
    }

    /// `manual`, `detector`, `feed`, `config`, `command` or `datapath`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Manual => "manual",
            Origin::Detector => "detector",
            Origin::Feed => "feed",
            Origin::Config => "config",
            Origin::Command => "command",
            Origin::Datapath => "datapath",
        }
    }

    /// The origin as the gateway publishes it ([`tad_wire::BlockOrigin`]):
    /// manual is `cli`, detector is `verdict`, the others keep their name.
    pub fn published(self) -> tad_wire::BlockOrigin {
        match self {
            Origin::Manual => tad_wire::BlockOrigin::Cli,
            Origin::Detector => tad_wire::BlockOrigin::Verdict,
            Origin::Feed => tad_wire::BlockOrigin::Feed,
            Origin::Config => tad_wire::BlockOrigin::Config,
            Origin::Command => tad_wire::BlockOrigin::Command,
            Origin::Datapath => tad_wire::BlockOrigin::Datapath,
        }
    }
}

/// The four LPM tries (IPv4/IPv6 allow and block) behind one interface. Prefixes
/// are canonical (no host bits). Implementations route by address family.
pub trait Lists {
    /// Every blocklist entry, expired ones included.
    fn blocks(&self) -> Result<Vec<(IpNet, BlockEntry)>>;
    /// Every allowlist entry.
    fn allows(&self) -> Result<Vec<(IpNet, AllowEntry)>>;
    /// The blocklist entry of exactly this prefix.
    fn get_block(&self, net: &IpNet) -> Result<Option<BlockEntry>>;
    /// Inserts or replaces a blocklist entry.
    fn put_block(&mut self, net: &IpNet, entry: &BlockEntry) -> Result<()>;
    /// Removes a blocklist entry; whether it existed.
    fn del_block(&mut self, net: &IpNet) -> Result<bool>;
    /// The allowlist entry of exactly this prefix.
    fn get_allow(&self, net: &IpNet) -> Result<Option<AllowEntry>>;
    /// Inserts or replaces an allowlist entry.
    fn put_allow(&mut self, net: &IpNet, entry: &AllowEntry) -> Result<()>;
    /// Removes an allowlist entry; whether it existed.
    fn del_allow(&mut self, net: &IpNet) -> Result<bool>;
    /// Every protected service (`SYN_AUTH`: `address:port`, port 0 = every TCP
    /// port of the host) with its entry, expired ones included.
    fn protections(&self) -> Result<Vec<(SocketAddr, SynAuthEntry)>>;
    /// Inserts or replaces the protection of a service.
    fn put_protection(&mut self, service: SocketAddr, entry: &SynAuthEntry) -> Result<()>;
    /// Ends the protection of a service; whether it existed.
    fn del_protection(&mut self, service: SocketAddr) -> Result<bool>;
}

/// How strictly a block is checked against the allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Refuse only when the whole target is allowlisted (operator: blocking a
    /// range with an allowlisted hole in it is legitimate; the hole keeps passing).
    Covered,
    /// Refuse when the target shares any address with the allowlist (verdicts and
    /// remote commands).
    NoOverlap,
}

/// Fails with [`CtlError::Allowlisted`] if blocking `net` would touch the allowlist.
pub fn check_not_allowlisted(
    allows: &[(IpNet, AllowEntry)],
    net: &IpNet,
    s: Strictness,
) -> Result<()> {
    for (a, e) in allows {
        let hit = match s {
            Strictness::Covered => a.contains(net),
            Strictness::NoOverlap => overlaps(a, net),
        };
        if hit {
            return Err(CtlError::Allowlisted {
                target: *net,
                by: *a,
                origin: Origin::from_code(e.origin).as_str().to_string(),
            });
        }
    }
    Ok(())
}

/// A request to block a prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRequest {
    pub net: IpNet,
    /// Lifetime; `None` = permanent.
    pub ttl: Option<Duration>,
    pub reason: BlockReason,
    pub origin: Origin,
    /// Verdict or rule id (0 = none).
    pub rule_id: u32,
}

/// What a block did to the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New entry.
    Inserted,
    /// Existing entry replaced (expiry, reason).
    Updated,
    /// Already blocked at least as long; nothing changed.
    Unchanged,
}

/// How a block treats an existing entry for the same prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Replace it (the operator's latest word wins); its hit count is kept.
    Replace,
    /// Only extend: keep an entry that is permanent or expires later (verdicts,
    /// feeds: an automatic source never shortens a block).
    Extend,
}

/// The map entry for a request made at `now_mono_ns`.
pub fn entry_for(req: &BlockRequest, now_mono_ns: u64) -> BlockEntry {
    BlockEntry {
        expires_ns: req
            .ttl
            .map(|t| now_mono_ns + t.as_nanos() as u64)
            .unwrap_or(0),
        hits: 0,
        rule_id: req.rule_id,
        reason: req.reason as u8,
        origin: req.origin.code(),
        flags: 0,
        lpm_tag: 0,
    }
}

/// Blocks one prefix (allowlist already checked by the caller). Returns what changed
/// and the entry now in force.
pub fn apply_block<L: Lists + ?Sized>(
    lists: &mut L,
    req: &BlockRequest,
    merge: Merge,
    now_mono_ns: u64,
) -> Result<(Change, BlockEntry)> {
    let mut new = entry_for(req, now_mono_ns);
    let old = lists.get_block(&req.net)?.filter(|o| o.active(now_mono_ns));
    let change = match old {
        None => Change::Inserted,
        Some(o) => {
            new.hits = o.hits;
            let outlives =
                o.expires_ns == 0 || (new.expires_ns != 0 && o.expires_ns >= new.expires_ns);
            // A provisional quarantine (new flows only) is always replaced: the
            // request confirms it as a full block.
            let provisional = o.new_flows_only();
            if merge == Merge::Extend && outlives && !provisional {
                return Ok((Change::Unchanged, o));
            }
            if !provisional
                && o.expires_ns == new.expires_ns
                && o.reason == new.reason
                && o.origin == new.origin
            {
                return Ok((Change::Unchanged, o));
            }
            Change::Updated
        }
    };
    lists.put_block(&req.net, &new)?;
    Ok((change, new))
}

/// A request to protect a service with SYN authentication (`fw_common::synauth`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProtectRequest {
    /// `address:port`; port 0 = every TCP port of the host.
    pub service: SocketAddr,
    /// Lifetime; `None` = until removed.
    pub ttl: Option<Duration>,
    /// Rate for SYNs that cannot be challenged, packets/s (0 = pass them).
    pub fallback_pps: u32,
    /// Their burst, packets.
    pub fallback_burst: u32,
    pub origin: Origin,
    /// Verdict or rule id (0 = none).
    pub rule_id: u32,
}

/// Protects one service at `now_mono_ns` ([`Merge::Extend`]): an active protection
/// that is permanent or outlives the request stays as it is
/// ([`Change::Unchanged`]); otherwise the entry is written, keeping the counters
/// and the fallback rate's state of an active one ([`Change::Updated`]). Returns
/// what changed and the entry now in force.
///
/// # Errors
/// The map refusing the entry (full, kernel error).
pub fn apply_protection<L: Lists + ?Sized>(
    lists: &mut L,
    req: &ProtectRequest,
    now_mono_ns: u64,
) -> Result<(Change, SynAuthEntry)> {
    let mut new = SynAuthEntry {
        expires_ns: req
            .ttl
            .map(|t| now_mono_ns + t.as_nanos().min(u64::MAX as u128 / 2) as u64)
            .unwrap_or(0),
        fallback_pps: req.fallback_pps,
        fallback_burst: req.fallback_burst,
        rule_id: req.rule_id,
        origin: req.origin.code(),
        ..Default::default()
    };
    let old = lists
        .protections()?
        .into_iter()
        .find(|(s, _)| *s == req.service)
        .map(|(_, e)| e)
        .filter(|e| e.active(now_mono_ns));
    let change = match old {
        None => Change::Inserted,
        Some(o) => {
            if o.expires_ns == 0 || (new.expires_ns != 0 && o.expires_ns >= new.expires_ns) {
                return Ok((Change::Unchanged, o));
            }
            new = SynAuthEntry {
                challenged: o.challenged,
                validated: o.validated,
                passed: o.passed,
                limited: o.limited,
                fallback_tat_ns: o.fallback_tat_ns,
                ..new
            };
            Change::Updated
        }
    };
    lists.put_protection(req.service, &new)?;
    Ok((change, new))
}

/// Removes the expired protections; returns their services. (The XDP program
/// already ignores them; this frees their `SYN_AUTH` slots.)
pub fn sweep_protections<L: Lists + ?Sized>(
    lists: &mut L,
    now_mono_ns: u64,
) -> Result<Vec<SocketAddr>> {
    let mut gone = Vec::new();
    for (s, e) in lists.protections()? {
        if !e.active(now_mono_ns) && lists.del_protection(s)? {
            gone.push(s);
        }
    }
    Ok(gone)
}

/// Removes the expired blocklist entries; returns their prefixes.
pub fn sweep<L: Lists + ?Sized>(lists: &mut L, now_mono_ns: u64) -> Result<Vec<IpNet>> {
    let mut gone = Vec::new();
    for (net, e) in lists.blocks()? {
        if !e.active(now_mono_ns) && lists.del_block(&net)? {
            gone.push(net);
        }
    }
    Ok(gone)
}

/// Removes an allowlist entry; refuses entries implied by the configuration.
pub fn disallow<L: Lists + ?Sized>(lists: &mut L, net: &IpNet) -> Result<bool> {
    // The allowlist is small: find the exact prefix by walking it rather than
    // with an LPM lookup, which could answer for a shorter prefix.
    match lists.allows()?.into_iter().find(|(n, _)| n == net) {
        Some((_, e)) if e.origin == ORIGIN_CONFIG => Err(CtlError::ConfigEntry { target: *net }),
        Some(_) => lists.del_allow(net),
        None => Ok(false),
    }
}

/// The lists in memory (tests, dry runs).
#[derive(Clone, Debug, Default)]
pub struct MemLists {
    pub block: BTreeMap<IpNet, BlockEntry>,
    pub allow: BTreeMap<IpNet, AllowEntry>,
    pub protected: BTreeMap<SocketAddr, SynAuthEntry>,
}

impl Lists for MemLists {
    fn blocks(&self) -> Result<Vec<(IpNet, BlockEntry)>> {
        Ok(self.block.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn allows(&self) -> Result<Vec<(IpNet, AllowEntry)>> {
        Ok(self.allow.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn get_block(&self, net: &IpNet) -> Result<Option<BlockEntry>> {
        Ok(self.block.get(net).copied())
    }
    fn put_block(&mut self, net: &IpNet, entry: &BlockEntry) -> Result<()> {
        self.block.insert(*net, *entry);
        Ok(())
    }
    fn del_block(&mut self, net: &IpNet) -> Result<bool> {
        Ok(self.block.remove(net).is_some())
    }
    fn get_allow(&self, net: &IpNet) -> Result<Option<AllowEntry>> {
        Ok(self.allow.get(net).copied())
    }
    fn put_allow(&mut self, net: &IpNet, entry: &AllowEntry) -> Result<()> {
        self.allow.insert(*net, *entry);
        Ok(())
    }
    fn del_allow(&mut self, net: &IpNet) -> Result<bool> {
        Ok(self.allow.remove(net).is_some())
    }
    fn protections(&self) -> Result<Vec<(SocketAddr, SynAuthEntry)>> {
        Ok(self.protected.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn put_protection(&mut self, service: SocketAddr, entry: &SynAuthEntry) -> Result<()> {
        self.protected.insert(service, *entry);
        Ok(())
    }
    fn del_protection(&mut self, service: SocketAddr) -> Result<bool> {
        Ok(self.protected.remove(&service).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn req(s: &str, ttl: Option<u64>) -> BlockRequest {
        BlockRequest {
            net: net(s),
            ttl: ttl.map(Duration::from_secs),
            reason: BlockReason::PortScan,
            origin: Origin::Detector,
            rule_id: 0,
        }
    }

    #[test]
    fn allowlist_covered_vs_overlap() {
        let allows = vec![(
            net("192.0.2.0/28"),
            AllowEntry {
                origin: ORIGIN_CONFIG,
                ..Default::default()
            },
        )];
        // A host inside the management network: refused both ways.
        for s in [Strictness::Covered, Strictness::NoOverlap] {
            let e = check_not_allowlisted(&allows, &net("192.0.2.5/32"), s).unwrap_err();
            assert!(e.to_string().contains("192.0.2.0/28"), "{e}");
        }
        // A wider range holding it: fine for the operator, refused for a verdict.
        assert!(check_not_allowlisted(&allows, &net("192.0.2.0/24"), Strictness::Covered).is_ok());
        assert!(
            check_not_allowlisted(&allows, &net("192.0.2.0/24"), Strictness::NoOverlap).is_err()
        );
        assert!(
            check_not_allowlisted(&allows, &net("198.51.100.1/32"), Strictness::NoOverlap).is_ok()
        );
    }

    #[test]
    fn extend_never_shortens_and_replace_keeps_hits() {
        let mut l = MemLists::default();
        let now = 1_000;
        let (c, _) = apply_block(
            &mut l,
            &req("198.51.100.7/32", Some(600)),
            Merge::Extend,
            now,
        )
        .unwrap();
        assert_eq!(c, Change::Inserted);
        l.block.get_mut(&net("198.51.100.7/32")).unwrap().hits = 42;
        let (c, e) = apply_block(
            &mut l,
            &req("198.51.100.7/32", Some(60)),
            Merge::Extend,
            now,
        )
        .unwrap();
        assert_eq!(c, Change::Unchanged);
        assert_eq!(e.expires_ns, now + 600_000_000_000);
        let (c, e) = apply_block(
            &mut l,
            &req("198.51.100.7/32", Some(60)),
            Merge::Replace,
            now,
        )
        .unwrap();
        assert_eq!(
            (c, e.hits, e.expires_ns),
            (Change::Updated, 42, now + 60_000_000_000)
        );
        let (c, e) =
            apply_block(&mut l, &req("198.51.100.7/32", None), Merge::Extend, now).unwrap();
        assert_eq!((c, e.expires_ns), (Change::Updated, 0));
    }

    fn protect(ttl_s: Option<u64>) -> ProtectRequest {
        ProtectRequest {
            service: "192.0.2.10:80".parse().unwrap(),
            ttl: ttl_s.map(Duration::from_secs),
            fallback_pps: 0,
            fallback_burst: 0,
            origin: Origin::Detector,
            rule_id: 9,
        }
    }

    #[test]
    fn protections_only_extend_and_keep_their_counters() {
        let mut l = MemLists::default();
        let now = 1_000;
        let (c, _) = apply_protection(&mut l, &protect(Some(600)), now).unwrap();
        assert_eq!(c, Change::Inserted);
        let svc: SocketAddr = "192.0.2.10:80".parse().unwrap();
        l.protected.get_mut(&svc).unwrap().challenged = 500;
        let (c, e) = apply_protection(&mut l, &protect(Some(60)), now).unwrap();
        assert_eq!(
            (c, e.expires_ns),
            (Change::Unchanged, now + 600 * 1_000_000_000)
        );
        let (c, e) = apply_protection(&mut l, &protect(Some(1200)), now).unwrap();
        assert_eq!((c, e.challenged), (Change::Updated, 500));
        assert!(
            l.block.is_empty(),
            "a protection never touches the blocklist"
        );
        // Expired: replaced as new (counters start again), then swept.
        let later = now + 3_000 * 1_000_000_000;
        let (c, e) = apply_protection(&mut l, &protect(Some(1)), later).unwrap();
        assert_eq!((c, e.challenged), (Change::Inserted, 0));
        assert!(sweep_protections(&mut l, later).unwrap().is_empty());
        assert_eq!(
            sweep_protections(&mut l, later + 2_000_000_000).unwrap(),
            [svc]
        );
        assert!(l.protected.is_empty());
    }

    #[test]
    fn sweep_removes_only_expired() {
        let mut l = MemLists::default();
        apply_block(&mut l, &req("198.51.100.1/32", Some(1)), Merge::Replace, 0).unwrap();
        apply_block(&mut l, &req("198.51.100.2/32", None), Merge::Replace, 0).unwrap();
        apply_block(
            &mut l,
            &req("198.51.100.3/32", Some(100)),
            Merge::Replace,
            0,
        )
        .unwrap();
        let gone = sweep(&mut l, 2_000_000_000).unwrap();
        assert_eq!(gone, vec![net("198.51.100.1/32")]);
        assert_eq!(l.block.len(), 2);
    }

    #[test]
    fn config_allow_entries_cannot_be_removed() {
        let mut l = MemLists::default();
        let cfg = AllowEntry {
            origin: ORIGIN_CONFIG,
            ..Default::default()
        };
        l.put_allow(&net("192.0.2.0/28"), &cfg).unwrap();
        l.put_allow(&net("203.0.113.9/32"), &AllowEntry::default())
            .unwrap();
        assert!(matches!(
            disallow(&mut l, &net("192.0.2.0/28")),
            Err(CtlError::ConfigEntry { .. })
        ));
        assert!(disallow(&mut l, &net("203.0.113.9/32")).unwrap());
        assert!(!disallow(&mut l, &net("203.0.113.9/32")).unwrap());
    }
}
