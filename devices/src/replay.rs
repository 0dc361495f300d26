//! Replay protection by sequence number: the anti-replay sliding window of IPsec
//! ESP (RFC 4303 §3.4.3, the bitmap form of RFC 2401 Appendix C / RFC 6479), 64
//! messages wide, one per device, persisted so it survives a restart of the guard.
//!
//! The window remembers the highest sequence number accepted and, as a bitmap,
//! which of the 63 below it were accepted too. A message with a higher number
//! moves the window; one inside the window is accepted once (reordering within
//! 64 is fine); one below the window is refused as [`ReplayVerdict::TooOld`]
//! (the guard's `stale`); a number already marked is [`ReplayVerdict::Replay`].
//! As in RFC 4303 the window is only updated after the message's signature was
//! verified, so a forger cannot move it.
//!
//! [`ReplayStore`] keeps every device's window in one JSON file, written
//! atomically by [`ReplayStore::commit`] (group commit: the guard checks a round
//! of messages against the in-memory windows, commits once, and only then
//! reports them accepted, so nothing accepted can be replayed after a crash).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    fsutil::{FileError, read_optional, write_atomic},
    ids::DeviceId,
};

/// Width of the window, sequence numbers.
pub const WINDOW: u64 = 64;
/// Version of the replay state file.
pub const REPLAY_STATE_VERSION: u16 = 1;

/// What the window says about a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen and inside (or above) the window.
    Fresh,
    /// Already accepted.
    Replay,
    /// Below the window: it cannot be told apart from a replay.
    TooOld,
}

/// One device's window. Bit `i` of `bitmap` is set when `highest - i` was
/// accepted (bit 0 is `highest` itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayWindow {
    pub highest: u64,
    pub bitmap: u64,
}

impl ReplayWindow {
    /// A window that has accepted only `seq`.
    pub fn first(seq: u64) -> ReplayWindow {
        ReplayWindow {
            highest: seq,
            bitmap: 1,
        }
    }

    /// Checks `seq` without changing the window.
    pub fn check(&self, seq: u64) -> ReplayVerdict {
        if seq > self.highest {
            return ReplayVerdict::Fresh;
        }
        let diff = self.highest - seq;
        if diff >= WINDOW {
            ReplayVerdict::TooOld
        } else if self.bitmap & (1u64 << diff) != 0 {
            ReplayVerdict::Replay
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Marks `seq` accepted (call only after [`check`](Self::check) said
    /// [`ReplayVerdict::Fresh`]).
    pub fn accept(&mut self, seq: u64) {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.bitmap = if shift >= WINDOW {
                0
            } else {
                self.bitmap << shift
            };
            self.bitmap |= 1;
            self.highest = seq;
        } else {
            self.bitmap |= 1u64 << (self.highest - seq);
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    v: u16,
    devices: HashMap<DeviceId, ReplayWindow>,
}

/// Errors of the replay state file.
#[derive(Debug, thiserror::Error)]
pub enum ReplayStoreError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("replay state {path}: {why}")]
    Parse { path: PathBuf, why: String },
}

/// Every device's window, backed by one file (see the module docs).
#[derive(Debug)]
pub struct ReplayStore {
    path: PathBuf,
    windows: HashMap<DeviceId, ReplayWindow>,
    dirty: bool,
}

impl ReplayStore {
    /// Opens `path` (JSON); a missing file is an empty store. A file that does not
    /// parse is an error, never silently reset (that would reopen every window).
    pub fn open(path: &Path) -> Result<ReplayStore, ReplayStoreError> {
        let windows = match read_optional(path)? {
            None => HashMap::new(),
            Some(b) => {
                let f: StateFile =
                    serde_json::from_slice(&b).map_err(|e| ReplayStoreError::Parse {
                        path: path.to_owned(),
                        why: e.to_string(),
                    })?;
                if f.v != REPLAY_STATE_VERSION {
                    return Err(ReplayStoreError::Parse {
                        path: path.to_owned(),
                        why: format!("version {} (this build reads {REPLAY_STATE_VERSION})", f.v),
                    });
                }
                f.devices
            }
        };
        Ok(ReplayStore {
            path: path.to_owned(),
            windows,
            dirty: false,
        })
    }

    /// The window of `id` (none before its first accepted message).
    pub fn window(&self, id: &str) -> Option<&ReplayWindow> {
        self.windows.get(id)
    }

    /// Checks `seq` for `id`: a device without a window accepts anything.
    pub fn check(&self, id: &str, seq: u64) -> ReplayVerdict {
        self.windows
            .get(id)
            .map_or(ReplayVerdict::Fresh, |w| w.check(seq))
    }

    /// Marks `seq` accepted for `id` in memory (persisted by
    /// [`commit`](Self::commit)). Returns the window as it was before (`None`:
    /// the device had none), for [`undo`](Self::undo).
    pub fn accept(&mut self, id: &DeviceId, seq: u64) -> Option<ReplayWindow> {
        self.dirty = true;
        match self.windows.get_mut(id.as_str()) {
            Some(w) => {
                let before = *w;
                w.accept(seq);
                Some(before)
            }
            None => {
                self.windows.insert(id.clone(), ReplayWindow::first(seq));
                None
            }
        }
    }

    /// Puts back `id`'s window as [`accept`](Self::accept) returned it (undo in
    /// reverse order of the accepts when a commit fails).
    pub fn undo(&mut self, id: &DeviceId, before: Option<ReplayWindow>) {
        match before {
            Some(w) => {
                self.windows.insert(id.clone(), w);
            }
            None => {
                self.windows.remove(id.as_str());
            }
        }
    }

    /// Writes every window to the file (atomic, fsync'd) when something changed
    /// since the last commit.
    pub fn commit(&mut self) -> Result<(), ReplayStoreError> {
        if !self.dirty {
            return Ok(());
        }
        let f = StateFile {
            v: REPLAY_STATE_VERSION,
            devices: self.windows.clone(),
        };
        let bytes = serde_json::to_vec(&f).expect("replay state serialises");
        write_atomic(&self.path, &bytes, 0o600)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(w: &mut ReplayWindow, seq: u64) -> ReplayVerdict {
        let v = w.check(seq);
        if v == ReplayVerdict::Fresh {
            w.accept(seq);
        }
        v
    }

    #[test]
    fn replays_refused_reordering_within_the_window_allowed() {
        let mut w = ReplayWindow::first(100);
        assert_eq!(run(&mut w, 100), ReplayVerdict::Replay);
        assert_eq!(run(&mut w, 103), ReplayVerdict::Fresh);
        assert_eq!(run(&mut w, 101), ReplayVerdict::Fresh, "late but in window");
        assert_eq!(run(&mut w, 102), ReplayVerdict::Fresh);
        for s in 100..=103 {
            assert_eq!(run(&mut w, s), ReplayVerdict::Replay, "{s}");
        }
        // The lowest number inside the window (highest - 63) is still accepted once.
        assert_eq!(run(&mut w, 103 - 63), ReplayVerdict::Fresh);
        assert_eq!(run(&mut w, 103 - 63), ReplayVerdict::Replay);
        assert_eq!(run(&mut w, 103 - 64), ReplayVerdict::TooOld);
        assert_eq!(run(&mut w, 0), ReplayVerdict::TooOld);
    }

    #[test]
    fn a_jump_beyond_the_window_forgets_the_old_bits() {
        let mut w = ReplayWindow::first(5);
        assert_eq!(run(&mut w, 5 + 200), ReplayVerdict::Fresh);
        assert_eq!(w.bitmap, 1);
        assert_eq!(run(&mut w, 5 + 200 - 10), ReplayVerdict::Fresh);
        assert_eq!(run(&mut w, 5), ReplayVerdict::TooOld);
        // Shift by exactly 63 keeps the old highest as the last bit.
        let mut w = ReplayWindow::first(10);
        assert_eq!(run(&mut w, 73), ReplayVerdict::Fresh);
        assert_eq!(run(&mut w, 10), ReplayVerdict::Replay);
    }

    #[test]
    fn windows_survive_reopening_only_after_commit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("replay.json");
        let id: DeviceId = "esp32-1".parse().unwrap();
        let mut s = ReplayStore::open(&p).unwrap();
        assert_eq!(s.check("esp32-1", 9), ReplayVerdict::Fresh);
        s.accept(&id, 9);
        s.accept(&id, 7);
        s.commit().unwrap();
        s.accept(&id, 10); // not committed: lost by a crash
        drop(s);
        let s = ReplayStore::open(&p).unwrap();
        assert_eq!(s.check("esp32-1", 9), ReplayVerdict::Replay);
        assert_eq!(s.check("esp32-1", 7), ReplayVerdict::Replay);
        assert_eq!(s.check("esp32-1", 8), ReplayVerdict::Fresh);
        assert_eq!(s.check("esp32-1", 10), ReplayVerdict::Fresh);
        std::fs::write(&p, b"{not json").unwrap();
        let e = ReplayStore::open(&p).unwrap_err().to_string();
        assert!(e.contains("replay.json"), "{e}");
    }
}
