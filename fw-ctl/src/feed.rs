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

use fw_common::filter::BlockReason;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    cidr::parse_prefix,
    clock,
    control::Meta,
    error::{CtlError, Result},
    lists::{self, BlockRequest, Change, Lists, Merge, Origin, Strictness},
    state::{self, State},
};

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
}
