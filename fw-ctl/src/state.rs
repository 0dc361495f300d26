//! The state file: every block and manual allowlist entry with what the kernel map
//! cannot hold (the operator's reason text, who asked, when), written atomically
//! (temporary file, fsync, rename, fsync of the directory) so a crash leaves either
//! the old or the new file, never a torn one.
//!
//! Expiries are stored as Unix time in ms, because the kernel's monotonic clock
//! restarts at boot; [`restore`] converts them back (see [`crate::clock`]). The CLI
//! and the daemon both change the file; they serialise on an `flock` of
//! `<file>.lock` ([`StateLock`]) around read-modify-write.
//!
//! JSON layout (version 1):
//! ```json
//! {"v":1,"blocks":{"198.51.100.7/32":{"expires_unix_ms":1767225600000,"reason":"port_scan",
//!   "origin":"detector","rule_id":3,"text":"portscan.vertical","by":"detector-1",
//!   "created_unix_ms":1767225000000}},"allows":{"203.0.113.9/32":{"origin":"manual"}}}
//! ```

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use fw_common::filter::{AllowEntry, BlockEntry, BlockReason, ORIGIN_CONFIG};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    error::{CtlError, Result},
    lists::{Lists, Origin},
};

/// State file schema version.
pub const STATE_VERSION: u32 = 1;

/// One block as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRecord {
    /// Expiry, Unix time in ms; 0 = permanent.
    pub expires_unix_ms: u64,
    pub reason: BlockReason,
    pub origin: Origin,
    #[serde(default)]
    pub rule_id: u32,
    /// Free-text reason (operator's `--reason`, the detector's rule, the feed file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Who asked: detector id, operator name, feed path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the block was (last) set, Unix ms.
    #[serde(default)]
    pub created_unix_ms: u64,
}

/// One manual allowlist entry as persisted (config entries are re-derived at load).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRecord {
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One protected service (SYN authentication) switched on by a verdict or a
/// command, as persisted: what the `SYN_AUTH` map cannot hold. Only joined with a
/// map entry of the same service; a record without one means nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectRecord {
    pub origin: Origin,
    #[serde(default)]
    pub rule_id: u32,
    /// The verdict's rule or the command's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Detector id or `operator@dashboard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When it was (last) switched on, Unix ms.
    #[serde(default)]
    pub created_unix_ms: u64,
}

/// The whole state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub v: u32,
    #[serde(default)]
    pub blocks: BTreeMap<IpNet, BlockRecord>,
    #[serde(default)]
    pub allows: BTreeMap<IpNet, AllowRecord>,
    /// Protected services by `address:port` (port 0: every port).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protected: BTreeMap<std::net::SocketAddr, ProtectRecord>,
}

impl Default for State {
    fn default() -> Self {
        State {
            v: STATE_VERSION,
            blocks: BTreeMap::new(),
            allows: BTreeMap::new(),
            protected: BTreeMap::new(),
        }
    }
}

impl State {
    /// Reads the file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(CtlError::file(path, e)),
        };
        let st: State = serde_json::from_slice(&bytes).map_err(|e| CtlError::Parse {
            path: path.to_path_buf(),
            why: format!("not a valid state file: {e}"),
        })?;
        if st.v != STATE_VERSION {
            return Err(CtlError::Parse {
                path: path.to_path_buf(),
                why: format!(
                    "state file version {} (this fw-ctl writes {STATE_VERSION})",
                    st.v
                ),
            });
        }
        Ok(st)
    }

    /// Writes the file atomically: `<path>.tmp`, fsync, rename, fsync the directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| CtlError::file(dir, e))?;
        let tmp = tmp_path(path);
        let body = serde_json::to_vec(self).expect("state serialises");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CtlError::file(path, e)
        })
    }

    /// The record of a block put in the map at `now` (both clocks).
    pub fn record_for(
        entry: &BlockEntry,
        text: Option<String>,
        by: Option<String>,
        now_unix_ns: u64,
        now_mono_ns: u64,
    ) -> BlockRecord {
        BlockRecord {
            expires_unix_ms: clock::expiry_to_unix_ms(entry.expires_ns, now_unix_ns, now_mono_ns),
            reason: BlockReason::from_code(entry.reason),
            origin: Origin::from_code(entry.origin),
            rule_id: entry.rule_id,
            text,
            by,
            created_unix_ms: now_unix_ns / 1_000_000,
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// An exclusive `flock` on `<state>.lock`, held while alive.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Blocks until the lock is held.
    pub fn acquire(state_path: &Path) -> Result<StateLock> {
        let mut p = state_path.as_os_str().to_owned();
        p.push(".lock");
        let p = PathBuf::from(p);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| CtlError::file(dir, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| CtlError::file(&p, e))?;
        // SAFETY: valid open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(CtlError::file(&p, std::io::Error::last_os_error()));
        }
        Ok(StateLock { _file: f })
    }
}

/// Runs `f` on the state under the lock and saves it afterwards when `f` returns
/// `Ok(true)` (changed).
pub fn update<T>(path: &Path, f: impl FnOnce(&mut State) -> Result<(T, bool)>) -> Result<T> {
    let _lock = StateLock::acquire(path)?;
    let mut st = State::load(path)?;
    let (out, changed) = f(&mut st)?;
    if changed {
        st.save(path)?;
    }
    Ok(out)
}

/// What [`restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Blocks put back into the map.
    pub blocks_restored: usize,
    /// Blocks already in the map.
    pub blocks_present: usize,
    /// Blocks whose expiry passed while nothing ran; dropped from the file.
    pub blocks_expired: usize,
    /// Blocks found in the map but not in the file (written after the last save),
    /// adopted into the file.
    pub blocks_adopted: usize,
    /// Manual allowlist entries put back.
    pub allows_restored: usize,
}

/// Reconciles the map with the state file both ways: entries in the file and not in
/// the map are inserted (expiry converted from Unix to monotonic time), expired ones
/// dropped; map entries missing from the file are added to it. Saves the file.
pub fn restore<L: Lists + ?Sized>(lists: &mut L, path: &Path) -> Result<RestoreReport> {
    let now_unix = clock::unix_ns();
    let now_mono = clock::mono_ns();
    update(path, |st| {
        let mut rep = RestoreReport::default();
        let mut expired = Vec::new();
        for (net, rec) in &st.blocks {
            let exp = clock::expiry_to_mono(rec.expires_unix_ms, now_unix, now_mono);
            if matches!(exp, Some(e) if e <= now_mono) {
                expired.push(*net);
                continue;
            }
            match lists.get_block(net)? {
                Some(e) if e.active(now_mono) => rep.blocks_present += 1,
                _ => {
                    let entry = BlockEntry {
                        expires_ns: exp.unwrap_or(0),
                        hits: 0,
                        rule_id: rec.rule_id,
                        reason: rec.reason as u8,
                        origin: rec.origin.code(),
                        flags: 0,
                        lpm_tag: 0,
                    };
                    lists.put_block(net, &entry)?;
                    rep.blocks_restored += 1;
                }
            }
        }
        rep.blocks_expired = expired.len();
        for n in expired {
            st.blocks.remove(&n);
        }
        for (net, e) in lists.blocks()? {
            // A provisional quarantine is the program's, not a record to restore
            // (restoring it would make it a full block).
            if e.active(now_mono) && !e.new_flows_only() && !st.blocks.contains_key(&net) {
                st.blocks
                    .insert(net, State::record_for(&e, None, None, now_unix, now_mono));
                rep.blocks_adopted += 1;
            }
        }
        for (net, rec) in &st.allows {
            if rec.origin != Origin::Config && lists.get_allow(net)?.is_none() {
                let entry = AllowEntry {
                    origin: rec.origin.code(),
                    ..Default::default()
                };
                lists.put_allow(net, &entry)?;
                rep.allows_restored += 1;
            }
        }
        for (net, e) in lists.allows()? {
            if e.origin != ORIGIN_CONFIG && !st.allows.contains_key(&net) {
                st.allows.insert(
                    net,
                    AllowRecord {
                        origin: Origin::from_code(e.origin),
                        text: None,
                    },
                );
            }
        }
        Ok((rep, true))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lists::{BlockRequest, MemLists, Merge, apply_block};

    #[test]
    fn save_load_round_trip_and_no_tmp_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        let mut st = State::default();
        st.blocks.insert(
            "198.51.100.0/24".parse().unwrap(),
            BlockRecord {
                expires_unix_ms: 0,
                reason: BlockReason::ThreatFeed,
                origin: Origin::Feed,
                rule_id: 0,
                text: Some("drop.txt".into()),
                by: None,
                created_unix_ms: 5,
            },
        );
        st.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), st);
        assert!(!tmp_path(&p).exists());
        assert_eq!(
            State::load(&dir.path().join("none.json")).unwrap(),
            State::default()
        );
        fs::write(&p, b"{\"v\":1,\"bogus\":1}").unwrap();
        assert!(
            State::load(&p)
                .unwrap_err()
                .to_string()
                .contains("state.json")
        );
    }

    #[test]
    fn restore_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let now_unix_ms = clock::unix_ms();
        let mut st = State::default();
        let rec = |exp| BlockRecord {
            expires_unix_ms: exp,
            reason: BlockReason::Manual,
            origin: Origin::Manual,
            rule_id: 0,
            text: Some("t".into()),
            by: None,
            created_unix_ms: 0,
        };
        st.blocks.insert(
            "198.51.100.1/32".parse().unwrap(),
            rec(now_unix_ms + 600_000),
        );
        st.blocks
            .insert("198.51.100.2/32".parse().unwrap(), rec(now_unix_ms - 1_000));
        st.blocks.insert("198.51.100.3/32".parse().unwrap(), rec(0));
        st.save(&p).unwrap();

        let mut l = MemLists::default();
        // Present in the map only: written after the last save, then a crash.
        let r = BlockRequest {
            net: "203.0.113.5/32".parse().unwrap(),
            ttl: Some(Duration::from_secs(60)),
            reason: BlockReason::PortScan,
            origin: Origin::Detector,
            rule_id: 9,
        };
        apply_block(&mut l, &r, Merge::Extend, clock::mono_ns()).unwrap();

        let rep = restore(&mut l, &p).unwrap();
        assert_eq!(
            (rep.blocks_restored, rep.blocks_expired, rep.blocks_adopted),
            (2, 1, 1)
        );
        let e1 = l.block[&"198.51.100.1/32".parse().unwrap()];
        let left_ns = e1.expires_ns - clock::mono_ns();
        assert!(
            left_ns > 590_000_000_000 && left_ns <= 600_000_000_000,
            "{left_ns}"
        );
        assert_eq!(l.block[&"198.51.100.3/32".parse().unwrap()].expires_ns, 0);
        let st = State::load(&p).unwrap();
        assert_eq!(st.blocks.len(), 3);
        assert_eq!(
            st.blocks[&"203.0.113.5/32".parse().unwrap()].origin,
            Origin::Detector
        );
        // Idempotent.
        let rep = restore(&mut l, &p).unwrap();
        assert_eq!((rep.blocks_restored, rep.blocks_present), (0, 3));
    }
}
