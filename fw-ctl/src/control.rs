//! The list operations shared by the CLI verbs and the daemon: block, unblock,
//! allow, disallow, list and sweep. Each one changes the kernel maps and the state
//! file together, under the state file's lock, and checks every argument before
//! changing anything: a batch with one refused prefix changes nothing.

use std::path::Path;

use fw_common::filter::{AllowEntry, BlockReason};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    clock,
    error::{CtlError, Result},
    lists::{self, BlockRequest, Change, Lists, Merge, Origin, Strictness},
    state::{self, AllowRecord, State},
};

/// Free-text metadata of a change, kept in the state file.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// Reason text.
    pub text: Option<String>,
    /// Who asked (detector id, operator, feed file).
    pub by: Option<String>,
}

/// What happened to one prefix of a block.
#[derive(Clone, Debug, Serialize)]
pub struct BlockOutcome {
    pub prefix: IpNet,
    pub change: Change,
    /// Expiry of the entry now in force, Unix ms; 0 = permanent.
    pub expires_unix_ms: u64,
}

/// Runs `f` under the state lock with the state loaded (or on a throwaway state
/// when there is no state file), saving it when `f` reports a change.
fn with_state<T>(
    path: Option<&Path>,
    f: impl FnOnce(&mut State) -> Result<(T, bool)>,
) -> Result<T> {
    match path {
        Some(p) => state::update(p, f),
        None => f(&mut State::default()).map(|(t, _)| t),
    }
}

/// Blocks every request's prefix, after checking them all against the allowlist.
pub fn block<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: Option<&Path>,
    reqs: &[BlockRequest],
    meta: &Meta,
    merge: Merge,
    strictness: Strictness,
) -> Result<Vec<BlockOutcome>> {
    let allows = lists.allows()?;
    for r in reqs {
        lists::check_not_allowlisted(&allows, &r.net, strictness)?;
    }
    with_state(state_path, |st| {
        let now_mono = clock::mono_ns();
        let now_unix = clock::unix_ns();
        let mut out = Vec::with_capacity(reqs.len());
        let mut changed = false;
        for r in reqs {
            let (change, entry) = lists::apply_block(lists, r, merge, now_mono)?;
            if change != Change::Unchanged || !st.blocks.contains_key(&r.net) {
                st.blocks.insert(
                    r.net,
                    State::record_for(
                        &entry,
                        meta.text.clone(),
                        meta.by.clone(),
                        now_unix,
                        now_mono,
                    ),
                );
                changed = true;
            }
            out.push(BlockOutcome {
                prefix: r.net,
                change,
                expires_unix_ms: clock::expiry_to_unix_ms(entry.expires_ns, now_unix, now_mono),
            });
        }
        Ok((out, changed))
    })
}

/// Removes blocks; returns per prefix whether one existed.
pub fn unblock<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: Option<&Path>,
    nets: &[IpNet],
) -> Result<Vec<(IpNet, bool)>> {
    with_state(state_path, |st| {
        let mut out = Vec::new();
        let mut changed = false;
        for n in nets {
            let in_map = lists.del_block(n)?;
            let in_file = st.blocks.remove(n).is_some();
            changed |= in_file;
            out.push((*n, in_map || in_file));
        }
        Ok((out, changed))
    })
}

/// Adds manual allowlist entries. Existing blocks of the same prefixes stay in the
/// blocklist but no longer match (the allowlist always wins).
pub fn allow<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: Option<&Path>,
    nets: &[IpNet],
    meta: &Meta,
) -> Result<Vec<(IpNet, bool)>> {
    let existing = lists.allows()?;
    with_state(state_path, |st| {
        let mut out = Vec::new();
        for n in nets {
            let had = existing.iter().find(|(e, _)| e == n);
            let new = had.is_none();
            if new {
                let entry = AllowEntry {
                    origin: Origin::Manual.code(),
                    ..Default::default()
                };
                lists.put_allow(n, &entry)?;
            }
            if had.is_none_or(|(_, e)| Origin::from_code(e.origin) != Origin::Config) {
                st.allows.insert(
                    *n,
                    AllowRecord {
                        origin: Origin::Manual,
                        text: meta.text.clone(),
                    },
                );
            }
            out.push((*n, new));
        }
        Ok((out, true))
    })
}

/// Removes manual allowlist entries; configuration entries are refused (checked
/// for every prefix before any is removed).
pub fn disallow<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: Option<&Path>,
    nets: &[IpNet],
) -> Result<Vec<(IpNet, bool)>> {
    let existing = lists.allows()?;
    for n in nets {
        if existing
            .iter()
            .any(|(e, a)| e == n && Origin::from_code(a.origin) == Origin::Config)
        {
            return Err(CtlError::ConfigEntry { target: *n });
        }
    }
    with_state(state_path, |st| {
        let mut out = Vec::new();
        for n in nets {
            let in_map = lists::disallow(lists, n)?;
            let in_file = st.allows.remove(n).is_some();
            out.push((*n, in_map || in_file));
        }
        Ok((out, true))
    })
}

/// Removes expired blocks from the map and the state file.
pub fn sweep<L: Lists + ?Sized>(lists: &mut L, state_path: Option<&Path>) -> Result<Vec<IpNet>> {
    let now = clock::mono_ns();
    let expired: Vec<IpNet> = lists
        .blocks()?
        .into_iter()
        .filter(|(_, e)| !e.active(now))
        .map(|(n, _)| n)
        .collect();
    if expired.is_empty() {
        return Ok(expired);
    }
    with_state(state_path, |st| {
        let mut gone = Vec::new();
        for n in expired {
            // Re-check under the lock: a block may have been renewed meanwhile.
            match lists.get_block(&n)? {
                Some(e) if e.active(clock::mono_ns()) => continue,
                _ => {}
            }
            lists.del_block(&n)?;
            st.blocks.remove(&n);
            gone.push(n);
        }
        let changed = !gone.is_empty();
        Ok((gone, changed))
    })
}

/// One blocklist entry as `list blocks` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BlockView {
    pub prefix: IpNet,
    /// Seconds left; `None` = permanent.
    pub expires_in_s: Option<f64>,
    /// Expiry, Unix ms; 0 = permanent.
    pub expires_unix_ms: u64,
    pub reason: BlockReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Packets that matched (dropped or would-drop).
    pub hits: u64,
    pub rule_id: u32,
}

/// Active blocks, joined with the state file's metadata, sorted by prefix.
pub fn list_blocks<L: Lists + ?Sized>(
    lists: &L,
    state_path: Option<&Path>,
) -> Result<Vec<BlockView>> {
    let st = match state_path {
        Some(p) => State::load(p)?,
        None => State::default(),
    };
    let now_mono = clock::mono_ns();
    let now_unix = clock::unix_ns();
    let mut out: Vec<BlockView> = lists
        .blocks()?
        .into_iter()
        .filter(|(_, e)| e.active(now_mono))
        .map(|(net, e)| {
            let rec = st.blocks.get(&net);
            BlockView {
                prefix: net,
                expires_in_s: (e.expires_ns != 0)
                    .then(|| (e.expires_ns.saturating_sub(now_mono)) as f64 / 1e9),
                expires_unix_ms: clock::expiry_to_unix_ms(e.expires_ns, now_unix, now_mono),
                reason: BlockReason::from_code(e.reason),
                text: rec.and_then(|r| r.text.clone()),
                origin: Origin::from_code(e.origin),
                by: rec.and_then(|r| r.by.clone()),
                hits: e.hits,
                rule_id: e.rule_id,
            }
        })
        .collect();
    out.sort_by_key(|v| v.prefix);
    Ok(out)
}

/// One allowlist entry as `list allows` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AllowView {
    pub prefix: IpNet,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Packets that matched.
    pub hits: u64,
}

/// Allowlist entries, sorted by prefix.
pub fn list_allows<L: Lists + ?Sized>(
    lists: &L,
    state_path: Option<&Path>,
) -> Result<Vec<AllowView>> {
    let st = match state_path {
        Some(p) => State::load(p)?,
        None => State::default(),
    };
    let mut out: Vec<AllowView> = lists
        .allows()?
        .into_iter()
        .map(|(net, e)| AllowView {
            prefix: net,
            origin: Origin::from_code(e.origin),
            text: st.allows.get(&net).and_then(|r| r.text.clone()),
            hits: e.hits,
        })
        .collect();
    out.sort_by_key(|v| v.prefix);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fw_common::filter::ORIGIN_CONFIG;

    use super::*;
    use crate::lists::MemLists;

    fn req(s: &str) -> BlockRequest {
        BlockRequest {
            net: s.parse().unwrap(),
            ttl: Some(Duration::from_secs(600)),
            reason: BlockReason::Manual,
            origin: Origin::Manual,
            rule_id: 0,
        }
    }

    #[test]
    fn a_refused_prefix_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("s.json");
        let mut l = MemLists::default();
        l.put_allow(
            &"192.0.2.0/28".parse().unwrap(),
            &AllowEntry {
                origin: ORIGIN_CONFIG,
                ..Default::default()
            },
        )
        .unwrap();
        let e = block(
            &mut l,
            Some(&sp),
            &[req("198.51.100.1/32"), req("192.0.2.3/32")],
            &Meta::default(),
            Merge::Replace,
            Strictness::Covered,
        )
        .unwrap_err();
        assert!(matches!(e, CtlError::Allowlisted { .. }));
        assert!(l.block.is_empty());
        assert!(!sp.exists());
    }

    #[test]
    fn block_list_unblock_keep_state_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("s.json");
        let mut l = MemLists::default();
        let meta = Meta {
            text: Some("scanner".into()),
            by: Some("ops".into()),
        };
        block(
            &mut l,
            Some(&sp),
            &[req("198.51.100.1/32")],
            &meta,
            Merge::Replace,
            Strictness::Covered,
        )
        .unwrap();
        let v = list_blocks(&l, Some(&sp)).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].text.as_deref(), Some("scanner"));
        let left = v[0].expires_in_s.unwrap();
        assert!(left > 590.0 && left <= 600.0);
        assert_eq!(State::load(&sp).unwrap().blocks.len(), 1);
        let r = unblock(&mut l, Some(&sp), &["198.51.100.1/32".parse().unwrap()]).unwrap();
        assert!(r[0].1);
        assert!(State::load(&sp).unwrap().blocks.is_empty());
        assert!(l.block.is_empty());
    }

    #[test]
    fn disallow_refuses_config_entries_before_removing_any() {
        let mut l = MemLists::default();
        let cfg = AllowEntry {
            origin: ORIGIN_CONFIG,
            ..Default::default()
        };
        l.put_allow(&"192.0.2.0/28".parse().unwrap(), &cfg).unwrap();
        allow(
            &mut l,
            None,
            &["203.0.113.1/32".parse().unwrap()],
            &Meta::default(),
        )
        .unwrap();
        let e = disallow(
            &mut l,
            None,
            &[
                "203.0.113.1/32".parse().unwrap(),
                "192.0.2.0/28".parse().unwrap(),
            ],
        );
        assert!(matches!(e, Err(CtlError::ConfigEntry { .. })));
        assert_eq!(l.allow.len(), 2);
    }
}
