//! The gateway publishes what it enforces ([`tad_wire::GatewayState`] and
//! [`tad_wire::GatewayStateDelta`], see `tad_wire::state`).
//!
//! ```text
//!  collector thread, every state.poll_interval_ms        main task
//!  ├─ block + allow maps, config map (mode, limits)      StatePublisher::update
//!  ├─ state file (re-read when it changed on disk)  ──►  ├─ + the enforcer's refusal counters
//!  └─ read_enforced: one Enforced view                   ├─ diff with the last publication
//!                                                        ├─ GatewayStateDelta (rev + 1) ─► state/delta
//!                                                        └─ GatewayState (retained) ──────► state
//! ```
//!
//! Because the view is read from the maps and the state file, every change shows
//! up whatever made it: a verdict or command through the enforcer, `fw-ctl block`
//! or `fw-ctl feed load` run on the router (no bus needed: they write the maps and
//! the state file), the expiry sweep, a restore. An entry whose expiry has passed
//! is left out at once, before the sweep removes it, and leaves with cause
//! `expired`; one removed earlier leaves with cause `removed`. The XDP program's
//! own provisional quarantines (origin `datapath`, no state-file record) show up
//! the same way, with `provisional: true`, and leave when they expire, when a
//! detector's block replaces them (upserted as a full block) or its unblock lifts
//! them. An entry is
//! upserted when anything about it changed, its hit count included, so a replica
//! that applies every delta equals the next snapshot. Each poll walks the whole
//! block map (one syscall per entry) on the collector thread; the state file is
//! re-parsed only when it changed on disk.
//!
//! Protected services (SYN authentication, `SYN_AUTH`) are read the same way:
//! the map's entries in force (expiry, origin, counters) joined with the state
//! file's `protected` records (rule, who, when), left out once expired. A delta
//! carries the whole list (`protected`) when a service appears or goes or its
//! protection changes; the counters (challenged, validated, passed, limited) move
//! on every poll under a flood, so they alone make no delta: they are kept in the
//! current state and published with the next snapshot, which they make due (at
//! most one per `state.snapshot_interval_ms`).
//!
//! Revisions start at the daemon's start time in Unix ms, so the revisions of two
//! runs never collide, and grow by one per delta; a snapshot carries the revision
//! it includes. Snapshots go out at start, after every reconnect and every
//! `state.snapshot_interval_ms` while something changed since the last one.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use tad_wire::{
    AllowEntry, EnforcedBlock, GatewayState, GatewayStateDelta, LimitsView, Mode, NodeId,
    RefusalCounts, RemovalCause, RemovedBlock, SCHEMA_VERSION, Target, state::ProtectedService,
};

use crate::{
    clock,
    error::Result,
    kernel::Pinned,
    lists::{Lists, Origin},
    state::State,
};

/// What the maps and the state file say is enforced (no refusal counters yet).
#[derive(Clone, Debug, PartialEq)]
pub struct Enforced {
    pub mode: Mode,
    /// Unexpired blocklist entries, sorted by prefix.
    pub blocks: Vec<EnforcedBlock>,
    /// Allowlist entries, sorted by prefix.
    pub allow: Vec<AllowEntry>,
    pub limits: LimitsView,
    /// Protected services in force, sorted by address and port.
    pub protected: Vec<ProtectedService>,
}

/// A map key as a target (map keys carry no host bits; truncated to be sure).
fn target(net: IpNet) -> Target {
    Target::new(net.trunc()).expect("a truncated prefix has no host bits")
}

/// Converts a monotonic expiry (ns, 0 = permanent) to Unix ms with a fixed clock
/// offset (Unix minus monotonic, ns), so that an entry reads the same on every poll.
fn unix_ms_of(expires_ns: u64, offset_ns: i128) -> Option<u64> {
    (expires_ns != 0).then(|| ((expires_ns as i128 + offset_ns).max(0) / 1_000_000) as u64)
}

/// The blocklist and allowlist of `lists`, joined with the state file's records
/// (who made each block, why, when), at monotonic time `now_mono_ns`. Entries
/// expired at `now_mono_ns` are left out. `offset_ns` converts expiries to Unix
/// time ([`clock::unix_offset_ns`], read once per daemon run).
///
/// # Errors
/// A map that cannot be read.
pub fn read_lists<L: Lists + ?Sized>(
    lists: &L,
    records: &State,
    now_mono_ns: u64,
    offset_ns: i128,
) -> Result<(Vec<EnforcedBlock>, Vec<AllowEntry>)> {
    let mut blocks: Vec<EnforcedBlock> = lists
        .blocks()?
        .into_iter()
        .filter(|(_, e)| e.active(now_mono_ns))
        .map(|(net, e)| {
            let rec = records.blocks.get(&net);
            EnforcedBlock {
                prefix: target(net),
                origin: Origin::from_code(e.origin).published(),
                reason: fw_common::filter::BlockReason::from_code(e.reason),
                rule: rec.and_then(|r| r.text.clone()),
                by: rec.and_then(|r| r.by.clone()),
                created_ms: rec.map_or(0, |r| r.created_unix_ms),
                expires_at_ms: unix_ms_of(e.expires_ns, offset_ns),
                hits: e.hits,
                provisional: e.new_flows_only(),
            }
        })
        .collect();
    blocks.sort_by_key(|b| b.prefix.net());
    let mut allow: Vec<AllowEntry> = lists
        .allows()?
        .into_iter()
        .map(|(net, e)| AllowEntry {
            prefix: target(net),
            origin: Origin::from_code(e.origin).published(),
        })
        .collect();
    allow.sort_by_key(|a| a.prefix.net());
    Ok((blocks, allow))
}

/// The protected services of `lists` in force at `now_mono_ns`, joined with the
/// state file's records, sorted by address and port (every-port entries first).
/// `offset_ns` as in [`read_lists`].
///
/// # Errors
/// A map that cannot be read.
pub fn read_protected<L: Lists + ?Sized>(
    lists: &L,
    records: &State,
    now_mono_ns: u64,
    offset_ns: i128,
) -> Result<Vec<ProtectedService>> {
    let mut out: Vec<ProtectedService> = lists
        .protections()?
        .into_iter()
        .filter(|(_, e)| e.active(now_mono_ns))
        .map(|(svc, e)| {
            // A record describes the entry only if it was made for it (same rule id).
            let rec = records
                .protected
                .get(&svc)
                .filter(|r| r.rule_id == e.rule_id && r.origin.code() == e.origin);
            ProtectedService {
                addr: svc.ip(),
                port: (svc.port() != 0).then_some(svc.port()),
                origin: Origin::from_code(e.origin).published(),
                rule: rec.and_then(|r| r.text.clone()),
                by: rec.and_then(|r| r.by.clone()),
                created_ms: rec.map_or(0, |r| r.created_unix_ms),
                expires_at_ms: unix_ms_of(e.expires_ns, offset_ns),
                challenged: e.challenged,
                validated: e.validated,
                passed: e.passed,
                limited: e.limited,
            }
        })
        .collect();
    out.sort_by_key(|p| (p.addr, p.port));
    Ok(out)
}

/// Reads [`Enforced`] from the pinned maps and the state file, re-reading the file
/// only when it changed on disk (inode, size or mtime).
#[derive(Debug)]
pub struct StateReader {
    state_path: PathBuf,
    records: State,
    stamp: Option<(u64, u64, std::time::SystemTime)>,
    offset_ns: i128,
}

fn stamp_of(path: &Path) -> Option<(u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

impl StateReader {
    /// A reader of the state file at `state_path`.
    pub fn new(state_path: PathBuf) -> Self {
        StateReader {
            state_path,
            records: State::default(),
            stamp: None,
            offset_ns: clock::unix_offset_ns(),
        }
    }

    /// One view of the maps and the state file.
    ///
    /// # Errors
    /// A map that cannot be read. An unreadable state file is logged and its last
    /// good content used (blocks then lack their metadata, never vanish).
    pub fn read(&mut self, maps: &Pinned) -> Result<Enforced> {
        let stamp = stamp_of(&self.state_path);
        if stamp != self.stamp {
            match State::load(&self.state_path) {
                Ok(st) => {
                    self.records = st;
                    self.stamp = stamp;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "state publication: cannot read the state file")
                }
            }
        }
        let cfg = maps.config()?;
        let now_mono = clock::mono_ns();
        let (blocks, allow) = read_lists(maps, &self.records, now_mono, self.offset_ns)?;
        let protected = read_protected(maps, &self.records, now_mono, self.offset_ns)?;
        Ok(Enforced {
            mode: if cfg.observe() {
                Mode::Observe
            } else {
                Mode::Enforce
            },
            blocks,
            allow,
            limits: LimitsView {
                syn_pps: cfg.syn_rate_pps,
                syn_burst: cfg.syn_burst,
                pps: cfg.pkt_rate_pps,
                burst: cfg.pkt_burst,
            },
            protected,
        })
    }
}

/// Keeps the last published state and turns each new view into a delta.
#[derive(Debug)]
pub struct StatePublisher {
    /// The state as last published (or about to be): `None` before the first view.
    current: Option<GatewayState>,
    gateway_id: NodeId,
    snapshot_every: Duration,
    last_snapshot: Option<Instant>,
    /// A delta went out since the last snapshot.
    dirty: bool,
    /// Protected services' counters moved since the last snapshot (no delta).
    counters_moved: bool,
    first_rev: u64,
}

impl StatePublisher {
    /// A publisher for `gateway_id` whose revisions start at `first_rev` (the
    /// daemon passes its start time, Unix ms).
    pub fn new(gateway_id: NodeId, first_rev: u64, snapshot_every: Duration) -> Self {
        StatePublisher {
            current: None,
            gateway_id,
            snapshot_every,
            last_snapshot: None,
            dirty: false,
            counters_moved: false,
            first_rev,
        }
    }

    /// The current state (what the last delta or snapshot describes).
    pub fn current(&self) -> Option<&GatewayState> {
        self.current.as_ref()
    }

    /// Takes a new view (and the current refusal counters) read at `at_ms`
    /// (Unix). Returns the delta to publish when something changed; the first
    /// view only sets the state (publish a [`Self::snapshot`] then).
    pub fn update(
        &mut self,
        view: Enforced,
        refusals: &RefusalCounts,
        at_ms: u64,
    ) -> Option<GatewayStateDelta> {
        let Some(cur) = &mut self.current else {
            self.current = Some(GatewayState {
                v: SCHEMA_VERSION,
                gateway_id: self.gateway_id.clone(),
                rev: self.first_rev,
                at_ms,
                mode: view.mode,
                blocks: view.blocks,
                allow: view.allow,
                limits: view.limits,
                refusals: refusals.clone(),
                protected: view.protected,
            });
            return None;
        };
        let old: BTreeMap<IpNet, &EnforcedBlock> =
            cur.blocks.iter().map(|b| (b.prefix.net(), b)).collect();
        let new: BTreeMap<IpNet, &EnforcedBlock> =
            view.blocks.iter().map(|b| (b.prefix.net(), b)).collect();
        let upserted: Vec<EnforcedBlock> = view
            .blocks
            .iter()
            .filter(|b| old.get(&b.prefix.net()) != Some(b))
            .cloned()
            .collect();
        let removed: Vec<RemovedBlock> = cur
            .blocks
            .iter()
            .filter(|b| !new.contains_key(&b.prefix.net()))
            .map(|b| RemovedBlock {
                prefix: b.prefix,
                cause: if b.expires_at_ms.is_some_and(|e| e <= at_ms) {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Removed
                },
            })
            .collect();
        let mode = (view.mode != cur.mode).then_some(view.mode);
        let allow = (view.allow != cur.allow).then(|| view.allow.clone());
        let refusals = (*refusals != cur.refusals).then(|| refusals.clone());
        let limits = (view.limits != cur.limits).then_some(view.limits);
        let same_services = view.protected.len() == cur.protected.len()
            && view
                .protected
                .iter()
                .zip(&cur.protected)
                .all(|(a, b)| a.same_but_counters(b));
        let protected = (!same_services).then(|| view.protected.clone());
        if upserted.is_empty()
            && removed.is_empty()
            && mode.is_none()
            && allow.is_none()
            && refusals.is_none()
            && limits.is_none()
            && protected.is_none()
        {
            if view.protected != cur.protected {
                // Counters only: into the current state, out with the next snapshot.
                cur.protected = view.protected;
                cur.at_ms = at_ms;
                self.counters_moved = true;
            }
            return None;
        }
        let delta = GatewayStateDelta {
            v: SCHEMA_VERSION,
            gateway_id: self.gateway_id.clone(),
            rev: cur.rev + 1,
            at_ms,
            upserted,
            removed,
            mode,
            allow,
            refusals,
            limits,
            protected,
        };
        let applied = cur.apply(&delta);
        debug_assert!(applied, "a delta made from the current state applies to it");
        // Keep the order of a fresh read (apply appends new entries).
        cur.blocks = view.blocks;
        if cur.protected != view.protected {
            cur.protected = view.protected;
            self.counters_moved = true;
        }
        self.dirty = true;
        Some(delta)
    }

    /// The snapshot to publish now (the current state), marking it published.
    /// `None` before the first view.
    pub fn snapshot(&mut self, now: Instant) -> Option<GatewayState> {
        let s = self.current.clone()?;
        self.last_snapshot = Some(now);
        self.dirty = false;
        self.counters_moved = false;
        Some(s)
    }

    /// Whether the periodic snapshot is due at `now`: something changed since
    /// the last one (a delta, or protected services' counters) and
    /// `snapshot_interval_ms` has passed.
    pub fn snapshot_due(&self, now: Instant) -> bool {
        (self.dirty || self.counters_moved)
            && self
                .last_snapshot
                .is_none_or(|t| now.duration_since(t) >= self.snapshot_every)
    }
}

#[cfg(test)]
mod tests {
    use fw_common::filter::{AllowEntry as MapAllow, BlockEntry, BlockReason, ORIGIN_CONFIG};
    use tad_wire::{BlockOrigin, RefusalReason};

    use super::*;
    use crate::{
        lists::MemLists,
        state::{BlockRecord, State},
    };

    const S: u64 = 1_000_000_000;

    fn entry(expires_ns: u64, origin: Origin, hits: u64) -> BlockEntry {
        BlockEntry {
            expires_ns,
            hits,
            rule_id: 0,
            reason: BlockReason::Manual as u8,
            origin: origin.code(),
            flags: 0,
            lpm_tag: 0,
        }
    }

    fn view(l: &MemLists, st: &State, now_mono: u64) -> Enforced {
        let (blocks, allow) = read_lists(l, st, now_mono, 0).unwrap();
        Enforced {
            mode: Mode::Enforce,
            blocks,
            allow,
            limits: LimitsView::default(),
            protected: read_protected(l, st, now_mono, 0).unwrap(),
        }
    }

    #[test]
    fn the_view_joins_maps_and_records_and_leaves_out_expired_entries() {
        let mut l = MemLists::default();
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        l.block
            .insert(net("198.51.100.7/32"), entry(100 * S, Origin::Manual, 3));
        l.block
            .insert(net("198.51.100.8/32"), entry(5 * S, Origin::Feed, 0));
        l.block
            .insert(net("203.0.113.0/24"), entry(0, Origin::Command, 0));
        l.allow.insert(
            net("192.0.2.0/28"),
            MapAllow {
                origin: ORIGIN_CONFIG,
                ..Default::default()
            },
        );
        let mut st = State::default();
        st.blocks.insert(
            net("198.51.100.7/32"),
            BlockRecord {
                expires_unix_ms: 100_000,
                reason: BlockReason::Manual,
                origin: Origin::Manual,
                rule_id: 0,
                text: Some("ssh brute force".into()),
                by: Some("root".into()),
                created_unix_ms: 42,
            },
        );
        let (blocks, allow) = read_lists(&l, &st, 10 * S, 1_000 * S as i128).unwrap();
        let b: Vec<(String, BlockOrigin, Option<u64>)> = blocks
            .iter()
            .map(|b| (b.prefix.to_string(), b.origin, b.expires_at_ms))
            .collect();
        assert_eq!(
            b,
            [
                ("198.51.100.7/32".into(), BlockOrigin::Cli, Some(1_100_000)),
                ("203.0.113.0/24".into(), BlockOrigin::Command, None),
            ],
            "the expired feed entry is left out before any sweep"
        );
        assert_eq!(
            (blocks[0].rule.as_deref(), blocks[0].by.as_deref()),
            (Some("ssh brute force"), Some("root"))
        );
        assert_eq!((blocks[0].created_ms, blocks[0].hits), (42, 3));
        assert_eq!((blocks[1].created_ms, blocks[1].by.as_deref()), (0, None));
        assert_eq!(allow.len(), 1);
        assert_eq!(allow[0].origin, BlockOrigin::Config);
    }

    #[test]
    fn the_programs_provisional_quarantines_show_without_a_record_and_expire() {
        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut p = StatePublisher::new(gw, 1, Duration::from_secs(5));
        let mut l = MemLists::default();
        let st = State::default();
        let net: IpNet = "198.51.100.7/32".parse().unwrap();
        p.update(view(&l, &st, S), &RefusalCounts::new(), 1);
        // The program inserts an entry by itself: no state-file record.
        l.block.insert(
            net,
            BlockEntry {
                reason: BlockReason::Quarantine as u8,
                origin: fw_common::filter::ORIGIN_DATAPATH,
                flags: fw_common::filter::BLOCK_FLAG_NEW_FLOWS_ONLY,
                ..entry(31 * S, Origin::Manual, 0)
            },
        );
        let d = p
            .update(view(&l, &st, 2 * S), &RefusalCounts::new(), 2_000)
            .expect("the new entry is a change");
        let b = &d.upserted[0];
        assert_eq!(
            (b.origin, b.reason, b.provisional, b.by.as_deref()),
            (BlockOrigin::Datapath, BlockReason::Quarantine, true, None)
        );
        assert_eq!(b.expires_at_ms, Some(31_000));
        // Past its expiry it leaves as expired (before any sweep).
        let d = p
            .update(view(&l, &st, 32 * S), &RefusalCounts::new(), 32_000)
            .unwrap();
        assert_eq!(d.removed[0].cause, RemovalCause::Expired);
        // A full entry of the same prefix is not provisional.
        l.block.insert(net, entry(0, Origin::Detector, 0));
        let d = p
            .update(view(&l, &st, 33 * S), &RefusalCounts::new(), 33_000)
            .unwrap();
        assert!(!d.upserted[0].provisional);
    }

    #[test]
    fn deltas_carry_changes_and_the_replica_follows() {
        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut p = StatePublisher::new(gw, 1_000, Duration::from_secs(5));
        let mut l = MemLists::default();
        let st = State::default();
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        l.block
            .insert(net("198.51.100.7/32"), entry(0, Origin::Manual, 0));
        let refusals = RefusalCounts::new();
        assert!(p.update(view(&l, &st, S), &refusals, 1).is_none());
        let t0 = Instant::now();
        let mut replica = p.snapshot(t0).unwrap();
        assert_eq!(replica.rev, 1_000);
        assert!(!p.snapshot_due(t0), "nothing changed since the snapshot");
        // Nothing changed: no delta.
        assert!(p.update(view(&l, &st, S), &refusals, 2).is_none());

        // A new entry, a hit count, a refusal.
        l.block
            .insert(net("198.51.100.8/32"), entry(10 * S, Origin::Feed, 0));
        l.block.get_mut(&net("198.51.100.7/32")).unwrap().hits = 5;
        let refusals: RefusalCounts = [(RefusalReason::Stale, 1)].into();
        let d = p.update(view(&l, &st, 2 * S), &refusals, 3).unwrap();
        assert_eq!(d.rev, 1_001);
        assert_eq!(d.upserted.len(), 2);
        assert!(d.removed.is_empty() && d.mode.is_none() && d.allow.is_none());
        assert_eq!(d.refusals.as_ref(), Some(&refusals));
        assert!(replica.apply(&d));

        // The feed entry expires (left out before the sweep), the CLI one is removed.
        l.block.remove(&net("198.51.100.7/32"));
        let d = p.update(view(&l, &st, 11 * S), &refusals, 20_000).unwrap();
        let causes: Vec<(String, RemovalCause)> = d
            .removed
            .iter()
            .map(|r| (r.prefix.to_string(), r.cause))
            .collect();
        assert_eq!(
            causes,
            [
                ("198.51.100.7/32".into(), RemovalCause::Removed),
                ("198.51.100.8/32".into(), RemovalCause::Expired),
            ]
        );
        assert!(replica.apply(&d));
        assert_eq!(&replica, p.current().unwrap());
        assert!(replica.blocks.is_empty());
        let snap = p.snapshot(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!((snap.rev, &snap), (1_002, &replica));
    }

    #[test]
    fn protected_services_appear_and_go_in_deltas_and_their_counters_in_snapshots() {
        use std::net::SocketAddr;

        use fw_common::synauth::SynAuthEntry;

        use crate::state::ProtectRecord;

        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut p = StatePublisher::new(gw, 10, Duration::from_secs(5));
        let mut l = MemLists::default();
        let mut st = State::default();
        let t0 = Instant::now();
        p.update(view(&l, &st, S), &RefusalCounts::new(), 1);
        let mut replica = p.snapshot(t0).unwrap();
        assert!(replica.protected.is_empty());

        let web: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let host: SocketAddr = "[2001:db8::1]:0".parse().unwrap();
        let entry = |expires_ns, rule_id| SynAuthEntry {
            expires_ns,
            rule_id,
            origin: Origin::Detector.code(),
            ..Default::default()
        };
        l.protected.insert(web, entry(600 * S, 7));
        l.protected.insert(host, entry(0, 8));
        st.protected.insert(
            web,
            ProtectRecord {
                origin: Origin::Detector,
                rule_id: 7,
                text: Some("synflood.spoofed".into()),
                by: Some("detector-1".into()),
                created_unix_ms: 1_500,
            },
        );
        // A stale record of an earlier protection (another rule id) is not joined.
        st.protected.insert(
            host,
            ProtectRecord {
                origin: Origin::Command,
                rule_id: 99,
                text: Some("old".into()),
                by: Some("alice@dashboard".into()),
                created_unix_ms: 1,
            },
        );
        let d = p
            .update(view(&l, &st, 2 * S), &RefusalCounts::new(), 2_000)
            .expect("two services appeared");
        let list = d.protected.as_ref().unwrap();
        type Row<'a> = (String, BlockOrigin, Option<&'a str>, u64, Option<u64>);
        let got: Vec<Row<'_>> = list
            .iter()
            .map(|s| {
                (
                    s.service(),
                    s.origin,
                    s.by.as_deref(),
                    s.created_ms,
                    s.expires_at_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "192.0.2.10:80".into(),
                    BlockOrigin::Verdict,
                    Some("detector-1"),
                    1_500,
                    Some(600_000)
                ),
                (
                    "[2001:db8::1]:*".into(),
                    BlockOrigin::Verdict,
                    None,
                    0,
                    None
                ),
            ]
        );
        assert!(
            d.upserted.is_empty() && d.removed.is_empty(),
            "no block moved"
        );
        assert!(replica.apply(&d));
        let t1 = t0 + Duration::from_secs(6);
        p.snapshot(t1).unwrap();

        // Under a flood the counters move on every poll: no delta, but the next
        // snapshot (due after the interval) carries them.
        l.protected.get_mut(&web).unwrap().challenged = 12_345;
        l.protected.get_mut(&web).unwrap().validated = 2;
        assert!(
            p.update(view(&l, &st, 3 * S), &RefusalCounts::new(), 3_000)
                .is_none()
        );
        assert!(!p.snapshot_due(t1 + Duration::from_secs(1)));
        assert!(p.snapshot_due(t1 + Duration::from_secs(5)));
        let snap = p.snapshot(t1 + Duration::from_secs(5)).unwrap();
        assert_eq!(
            (snap.protected[0].challenged, snap.protected[0].validated),
            (12_345, 2)
        );
        assert_eq!(snap.rev, d.rev, "no revision without a delta");

        // The web service's protection expires: it goes, in a delta.
        let d = p
            .update(view(&l, &st, 601 * S), &RefusalCounts::new(), 601_000)
            .unwrap();
        let left: Vec<String> = d.protected.unwrap().iter().map(|s| s.service()).collect();
        assert_eq!(left, ["[2001:db8::1]:*"]);
    }

    #[test]
    fn snapshots_are_due_only_after_the_interval_and_a_change() {
        let gw: NodeId = "gateway-1".parse().unwrap();
        let mut p = StatePublisher::new(gw, 0, Duration::from_secs(5));
        let mut l = MemLists::default();
        let st = State::default();
        let t0 = Instant::now();
        assert!(p.snapshot(t0).is_none(), "no view yet");
        p.update(view(&l, &st, S), &RefusalCounts::new(), 1);
        p.snapshot(t0).unwrap();
        l.block.insert(
            "198.51.100.9/32".parse().unwrap(),
            entry(0, Origin::Detector, 0),
        );
        assert!(
            p.update(view(&l, &st, S), &RefusalCounts::new(), 2)
                .is_some()
        );
        assert!(!p.snapshot_due(t0 + Duration::from_secs(4)));
        assert!(p.snapshot_due(t0 + Duration::from_secs(5)));
        p.snapshot(t0 + Duration::from_secs(5)).unwrap();
        assert!(
            !p.snapshot_due(t0 + Duration::from_secs(20)),
            "no change since"
        );
    }
}
