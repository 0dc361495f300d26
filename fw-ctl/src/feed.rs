//! Threat-intelligence feeds: one IP address or CIDR prefix per line, comments
//! starting with `#` (FireHOL netsets, <https://iplists.firehol.org/>) or `;`
//! (Spamhaus DROP/EDROP: `1.10.16.0/20 ; SBL256894`), anywhere on a line. Blank
//! lines are skipped; a line's first token is the prefix.
//!
//! Bad lines are reported with their 1-based line numbers and do not stop the good
//! ones from loading. Entries get origin `feed` and reason `threat_feed`; they never
//! shorten an existing block ([`Merge::Extend`]), and prefixes wholly inside the
//! allowlist are skipped (reported), since the allowlist always wins.

use std::{path::Path, time::Duration};

use fw_common::filter::{BlockEntry, BlockReason};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    cidr::parse_prefix,
    clock,
    control::Meta,
    error::{CtlError, Result},
    lists::{self, BlockRequest, Change, Lists, Merge, Origin, Strictness},
    state::{self, State},
};

/// Why a fetched feed text is refused as a whole ([`check_text`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedTextError {
    /// No prefix at all: applied, it would remove every block of the feed.
    #[error("no prefixes in the feed ({bad} bad lines); refusing to remove every block it made")]
    Empty { bad: usize },
    /// More than half of the lines are not prefixes (an HTML error page, the wrong
    /// file).
    #[error(
        "{bad} of {lines} lines are not IP prefixes (first: line {first_line}: {first_error}); not a feed"
    )]
    MostlyBad {
        bad: usize,
        lines: usize,
        first_line: usize,
        first_error: String,
    },
}

/// Parses a fetched feed text and refuses it as a whole when it cannot be a feed
/// (see [`FeedTextError`]); a few bad lines are skipped and counted.
///
/// # Errors
/// [`FeedTextError`].
pub fn check_text(text: &str) -> std::result::Result<Parsed, FeedTextError> {
    let p = parse(text);
    let lines = p.prefixes.len() + p.bad.len();
    if p.bad.len() * 2 > lines {
        let first = &p.bad[0];
        return Err(FeedTextError::MostlyBad {
            bad: p.bad.len(),
            lines,
            first_line: first.line,
            first_error: first.error.clone(),
        });
    }
    if p.prefixes.is_empty() {
        return Err(FeedTextError::Empty { bad: p.bad.len() });
    }
    Ok(p)
}

/// A line that is not a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub text: String,
    pub error: String,
}

/// A parsed feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Prefixes in file order, duplicates removed.
    pub prefixes: Vec<IpNet>,
    pub bad: Vec<BadLine>,
}

/// Parses feed text.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.split(['#', ';']).next().unwrap_or("").trim();
        let Some(tok) = body.split_whitespace().next() else {
            continue;
        };
        match parse_prefix(tok) {
            Ok(n) => {
                if seen.insert(n) {
                    out.prefixes.push(n);
                }
            }
            Err(e) => out.bad.push(BadLine {
                line: i + 1,
                text: raw.chars().take(120).collect(),
                error: match e {
                    CtlError::InvalidCidr { why, .. } => format!("{tok:?}: {why}"),
                    other => other.to_string(),
                },
            }),
        }
    }
    out
}

/// What `feed load` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedReport {
    pub file: String,
    /// Prefixes read.
    pub prefixes: usize,
    /// New blocks.
    pub inserted: usize,
    /// Existing blocks extended or changed.
    pub updated: usize,
    /// Already blocked at least as long.
    pub unchanged: usize,
    /// Prefixes skipped because they are wholly allowlisted.
    pub allowlisted: Vec<IpNet>,
    pub bad_lines: Vec<BadLine>,
}

/// Loads a feed file into the blocklist (see the module docs).
pub fn load<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: Option<&Path>,
    file: &Path,
    ttl: Option<Duration>,
) -> Result<FeedReport> {
    let text = std::fs::read_to_string(file).map_err(|e| CtlError::file(file, e))?;
    let parsed = parse(&text);
    let allows = lists.allows()?;
    let mut report = FeedReport {
        file: file.display().to_string(),
        prefixes: parsed.prefixes.len(),
        bad_lines: parsed.bad,
        ..Default::default()
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = Meta {
        text: Some(format!("feed {name}")),
        by: Some(format!("feed:{}", file.display())),
    };
    let mut apply = |st: &mut State| -> Result<((), bool)> {
        let now_mono = clock::mono_ns();
        let now_unix = clock::unix_ns();
        for net in &parsed.prefixes {
            if lists::check_not_allowlisted(&allows, net, Strictness::Covered).is_err() {
                report.allowlisted.push(*net);
                continue;
            }
            let req = BlockRequest {
                net: *net,
                ttl,
                reason: BlockReason::ThreatFeed,
                origin: Origin::Feed,
                rule_id: 0,
            };
            let (change, entry) = lists::apply_block(lists, &req, Merge::Extend, now_mono)?;
            match change {
                Change::Inserted => report.inserted += 1,
                Change::Updated => report.updated += 1,
                Change::Unchanged => {
                    report.unchanged += 1;
                    if st.blocks.contains_key(net) {
                        continue;
                    }
                }
            }
            st.blocks.insert(
                *net,
                State::record_for(
                    &entry,
                    meta.text.clone(),
                    meta.by.clone(),
                    now_unix,
                    now_mono,
                ),
            );
        }
        Ok(((), true))
    };
    match state_path {
        Some(p) => state::update(p, apply)?,
        None => apply(&mut State::default())?.0,
    }
    Ok(report)
}

/// The `by` tag of the state records a configured feed owns (`feed:<name>`):
/// a refresh removes only blocks carrying its own tag.
pub fn owner_tag(name: &str) -> String {
    format!("feed:{name}")
}

/// How a configured feed's blocks are made ([`refresh`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshOptions {
    /// The feed's name in the configuration (`[[feeds]] name`); its blocks carry
    /// [`owner_tag`] of it in the state file.
    pub name: String,
    /// Lifetime of the blocks it adds; `None` = until the prefix leaves the feed.
    pub ttl: Option<Duration>,
    /// With a `ttl`: every refresh that still lists a prefix extends its block to
    /// now + ttl. Without (default), a block the feed still lists is left exactly
    /// as it is (expiry, hit count).
    pub renew: bool,
}

/// What one [`refresh`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Prefixes in the feed (duplicates removed).
    pub prefixes: usize,
    /// Blocks added: new in the feed, or listed but missing from the map
    /// (expired, swept).
    pub added: usize,
    /// This feed's blocks removed because the feed no longer lists them.
    pub removed: usize,
    /// Blocks still listed and left untouched.
    pub unchanged: usize,
    /// Blocks still listed whose expiry was extended (`renew`).
    pub renewed: usize,
    /// Listed prefixes already blocked by someone else (operator, detector,
    /// dashboard, another feed, the XDP program): left to their owner.
    pub held_by_others: usize,
    /// Listed prefixes skipped because they are wholly allowlisted.
    pub allowlisted: usize,
    /// Lines that are not prefixes (skipped; the good lines still count).
    pub bad_lines: usize,
}

/// Applies a configured feed's current contents as a DIFF against the blocks it
/// put in the lists earlier (its [`owner_tag`] in the state file, origin `feed` in
/// the map), under the state lock:
///
/// - a listed prefix with no active block is blocked (origin `feed`, reason
///   `threat_feed`, `opts.ttl`), recorded with the feed's tag;
/// - a listed prefix this feed already blocks is left as it is (its expiry is not
///   reset), unless `opts.renew` with a TTL extends it;
/// - a listed prefix blocked by anyone else is never touched;
/// - a block of this feed whose prefix left the feed (or became wholly
///   allowlisted) is removed from the map and the state file; blocks of every other
///   origin, and of other feeds, are never removed.
///
/// The caller checks the feed's text first ([`parse`]); a refresh is never a
/// reload: nothing outside the diff is written.
///
/// # Errors
/// The state file cannot be read, locked or written, or a map refuses an entry
/// (full): what was applied before the error stays, and the state file is saved
/// only if the closure completes (the next refresh reconciles).
pub fn refresh<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: &Path,
    parsed: &Parsed,
    opts: &RefreshOptions,
) -> Result<RefreshReport> {
    let tag = owner_tag(&opts.name);
    let allows = lists.allows()?;
    let mut rep = RefreshReport {
        prefixes: parsed.prefixes.len(),
        bad_lines: parsed.bad.len(),
        ..Default::default()
    };
    let text = Some(format!("feed {}", opts.name));
    // One walk of the blocklist instead of a lookup per prefix: exact prefixes
    // (a trie lookup answers for the longest match, and a nested prefix with the
    // same entry as its cover cannot be told apart by lookups alone).
    let current: std::collections::HashMap<IpNet, BlockEntry> =
        lists.blocks()?.into_iter().collect();
    state::update(state_path, |st| {
        let now_mono = clock::mono_ns();
        let now_unix = clock::unix_ns();
        let owns = |st: &State, net: &IpNet| {
            st.blocks
                .get(net)
                .is_some_and(|r| r.origin == Origin::Feed && r.by.as_deref() == Some(tag.as_str()))
        };
        let mut listed = std::collections::HashSet::with_capacity(parsed.prefixes.len());
        let mut changed = false;
        for net in &parsed.prefixes {
            if lists::check_not_allowlisted(&allows, net, Strictness::Covered).is_err() {
                rep.allowlisted += 1;
                continue;
            }
            listed.insert(*net);
            let req = BlockRequest {
                net: *net,
                ttl: opts.ttl,
                reason: BlockReason::ThreatFeed,
                origin: Origin::Feed,
                rule_id: 0,
            };
            let active = current.get(net).filter(|e| e.active(now_mono));
            let entry = match active {
                Some(e) if Origin::from_code(e.origin) == Origin::Feed && owns(st, net) => {
                    if !(opts.renew && opts.ttl.is_some()) {
                        rep.unchanged += 1;
                        continue;
                    }
                    match lists::apply_block(lists, &req, Merge::Extend, now_mono)? {
                        (Change::Unchanged, _) => {
                            rep.unchanged += 1;
                            continue;
                        }
                        (_, e) => {
                            rep.renewed += 1;
                            e
                        }
                    }
                }
                Some(_) => {
                    rep.held_by_others += 1;
                    continue;
                }
                None => {
                    rep.added += 1;
                    lists::apply_block(lists, &req, Merge::Replace, now_mono)?.1
                }
            };
            st.blocks.insert(
                *net,
                State::record_for(&entry, text.clone(), Some(tag.clone()), now_unix, now_mono),
            );
            changed = true;
        }
        let gone: Vec<IpNet> = st
            .blocks
            .iter()
            .filter(|(n, r)| {
                r.origin == Origin::Feed
                    && r.by.as_deref() == Some(tag.as_str())
                    && !listed.contains(*n)
            })
            .map(|(n, _)| *n)
            .collect();
        for net in gone {
            // Only the feed's own map entry: someone may have blocked the prefix
            // since without the state file knowing.
            match current.get(&net) {
                Some(e) if Origin::from_code(e.origin) != Origin::Feed => {}
                Some(_) => {
                    lists.del_block(&net)?;
                }
                None => {}
            }
            st.blocks.remove(&net);
            rep.removed += 1;
            changed = true;
        }
        Ok(((), changed))
    })?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::MemLists;

    const FEED: &str = "\
# FireHOL-style header
192.0.2.0/24
198.51.100.7   # a host
; Spamhaus DROP comment
203.0.113.0/25 ; SBL000001

not-an-ip
198.18.0.0/15
192.0.2.0/24
203.0.113.200/25
2001:db8::/32
";

    #[test]
    fn parses_both_formats_and_numbers_bad_lines() {
        let p = parse(FEED);
        let s: Vec<String> = p.prefixes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            s,
            [
                "192.0.2.0/24",
                "198.51.100.7/32",
                "203.0.113.0/25",
                "198.18.0.0/15",
                "2001:db8::/32"
            ]
        );
        assert_eq!(
            p.bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![7, 10]
        );
        assert!(
            p.bad[1].error.contains("203.0.113.128/25"),
            "{}",
            p.bad[1].error
        );
    }

    #[test]
    fn loads_good_lines_and_skips_allowlisted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("drop.txt");
        std::fs::write(&f, FEED).unwrap();
        let sp = dir.path().join("state.json");
        let mut l = MemLists::default();
        l.put_allow(&"198.51.100.0/24".parse().unwrap(), &Default::default())
            .unwrap();
        let r = load(&mut l, Some(&sp), &f, Some(Duration::from_secs(3600))).unwrap();
        assert_eq!((r.prefixes, r.inserted, r.bad_lines.len()), (5, 4, 2));
        assert_eq!(
            r.allowlisted,
            vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(l.block.len(), 4);
        assert_eq!(State::load(&sp).unwrap().blocks.len(), 4);
        // Loading again changes nothing.
        let r = load(&mut l, Some(&sp), &f, Some(Duration::from_secs(60))).unwrap();
        assert_eq!((r.inserted, r.unchanged), (0, 4));
    }

    fn opts(ttl_s: Option<u64>, renew: bool) -> RefreshOptions {
        RefreshOptions {
            name: "drop".into(),
            ttl: ttl_s.map(Duration::from_secs),
            renew,
        }
    }

    #[test]
    fn refresh_applies_the_diff_and_keeps_other_origins() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("state.json");
        let mut l = MemLists::default();
        // An operator's block of a prefix the feed will list and later drop.
        crate::control::block(
            &mut l,
            Some(&sp),
            &[BlockRequest {
                net: "203.0.113.0/25".parse().unwrap(),
                ttl: None,
                reason: BlockReason::Manual,
                origin: Origin::Manual,
                rule_id: 0,
            }],
            &Meta::default(),
            Merge::Replace,
            Strictness::Covered,
        )
        .unwrap();
        let o = opts(Some(3600), false);
        let first = check_text("192.0.2.0/24\n198.51.100.7\n203.0.113.0/25\n").unwrap();
        let r = refresh(&mut l, &sp, &first, &o).unwrap();
        assert_eq!((r.added, r.held_by_others, r.removed), (2, 1, 0));
        let host: IpNet = "198.51.100.7/32".parse().unwrap();
        let before = l.block[&host];
        // Same feed again: nothing written, expiry not reset.
        let r = refresh(&mut l, &sp, &first, &o).unwrap();
        assert_eq!((r.added, r.unchanged, r.removed), (0, 2, 0));
        assert_eq!(l.block[&host].expires_ns, before.expires_ns);
        // 192.0.2.0/24 and the operator's prefix leave the feed, a v6 one arrives.
        let second = check_text("198.51.100.7\n2001:db8:bad::/48\n").unwrap();
        let r = refresh(&mut l, &sp, &second, &o).unwrap();
        assert_eq!((r.added, r.unchanged, r.removed), (1, 1, 1));
        let keys: Vec<String> = l.block.keys().map(|n| n.to_string()).collect();
        assert_eq!(
            keys,
            ["198.51.100.7/32", "203.0.113.0/25", "2001:db8:bad::/48"]
        );
        assert_eq!(
            Origin::from_code(l.block[&"203.0.113.0/25".parse().unwrap()].origin),
            Origin::Manual
        );
        let st = State::load(&sp).unwrap();
        assert_eq!(st.blocks.len(), 3);
        assert_eq!(st.blocks[&host].by.as_deref(), Some("feed:drop"));
    }

    #[test]
    fn renew_extends_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("state.json");
        let mut l = MemLists::default();
        let feed = check_text("198.51.100.9\n").unwrap();
        refresh(&mut l, &sp, &feed, &opts(Some(60), false)).unwrap();
        let host: IpNet = "198.51.100.9/32".parse().unwrap();
        let t0 = l.block[&host].expires_ns;
        let r = refresh(&mut l, &sp, &feed, &opts(Some(3600), false)).unwrap();
        assert_eq!((r.unchanged, l.block[&host].expires_ns), (1, t0));
        let r = refresh(&mut l, &sp, &feed, &opts(Some(3600), true)).unwrap();
        assert_eq!(r.renewed, 1);
        assert!(l.block[&host].expires_ns > t0 + 3000 * 1_000_000_000);
    }

    #[test]
    fn refused_texts_name_the_problem() {
        assert!(matches!(
            check_text("# only comments\n\n"),
            Err(FeedTextError::Empty { bad: 0 })
        ));
        let e = check_text("<html>\n<body>503</body>\n198.51.100.1\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("2 of 3 lines") && msg.contains("line 1"),
            "{msg}"
        );
        assert_eq!(check_text("198.51.100.1\nnope\n").unwrap().bad.len(), 1);
    }
}
