//! Tamper-evident audit log: an append-only JSON Lines file holding every alert,
//! verdict, operator command (block, unblock, threshold change), gateway and
//! detector ack, refusal and gateway state change the dashboard saw or issued,
//! chained with SHA-256 (FIPS 180-4).
//!
//! # Record format
//! One JSON object per line, fields in this order:
//!
//! ```text
//! {"seq":0,"at_ms":1700000000000,"kind":"alert","prev":"000…0","data":{…},"hash":"<64 hex>"}
//! ```
//!
//! - `seq`: position in the log, starting at 0 and incremented by one per record;
//! - `at_ms`: Unix time the record was written, ms;
//! - `kind`: one of [`RecordKind`] in snake_case (`alert`, `verdict`, `command`,
//!   `thresholds`, `ack`, `settings_ack`, `settings_schema`, `refusal`,
//!   `gateway_state`, and for IoT devices `device_trust`, `telemetry_batch`,
//!   `device_command`, `device_refusals`, `device_vulns`);
//! - `prev`: the `hash` of the previous record (64 zeros for the first);
//! - `data`: the message as received or sent (the `tad_wire` JSON), or for a
//!   `thresholds` change the operator with the old and new value sets;
//! - `hash`: lowercase hex SHA-256 of the line's bytes up to (not including)
//!   `,"hash":` followed by a closing `}`, i.e. of the record without its hash.
//!
//! The hash covers the exact bytes written, so verification does not depend on
//! JSON re-serialisation. Editing a record breaks its own hash; removing,
//! inserting or reordering records breaks `seq` and `prev`; [`verify_file`] names
//! the first line where either happens. A rewrite of the tail with recomputed
//! hashes is only detectable against a copy of an earlier head hash, which the
//! dashboard shows (`GET /api/v1/audit/head`) for operators to note elsewhere.
//!
//! One record is found by its hash with [`locate`] (`GET /api/v1/audit/{hash}`):
//! its position in the chain and a verification of every record from the first
//! up to it.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the `,"hash":"<64 hex>"}` suffix every line ends with, bytes.
const HASH_SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();

/// What kind of event a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Alert,
    Verdict,
    Command,
    /// A threshold change: who, the old and the new value set (issued here), or
    /// a `ThresholdSettings` heard on the bus from another dashboard.
    Thresholds,
    /// A gateway's `Ack` of a verdict or command.
    Ack,
    /// A detector's `SettingsAck` (applied / refused and why).
    SettingsAck,
    /// A detector's settings schema, when it is new or its keys changed.
    SettingsSchema,
    /// A verdict or command heard on the bus and refused (signature, identity).
    Refusal,
    /// A change of what a gateway enforces (state snapshot or delta: entries
    /// added/changed/removed, refusal counters that went up).
    GatewayState,
    /// One IoT device trust change as its gateway published it: device, old and
    /// new trust and level, the cause, the components (`crate::devices`).
    DeviceTrust,
    /// A forwarded telemetry batch's SHA-256 (seed 004's ledger), recomputed
    /// from its records before it is committed (`crate::devices`).
    TelemetryBatch,
    /// A gateway's decision on a device command (allowed / refused and why).
    DeviceCommand,
    /// Telemetry messages a gateway's guard refused (one record per report).
    DeviceRefusals,
    /// An active vulnerability scan of a device (open ports, findings, score).
    DeviceVulns,
}

/// Errors opening or appending to the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path} is broken, refusing to append: {fault}")]
    Broken { path: PathBuf, fault: ChainFault },
}

/// The first place where a log stops being a valid chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ChainFault {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

/// Outcome of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub hash: String,
}

/// Errors verifying a file.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {fault}")]
    Fault { path: PathBuf, fault: ChainFault },
}

#[derive(Serialize)]
struct Body<'a, T: Serialize> {
    seq: u64,
    at_ms: u64,
    kind: RecordKind,
    prev: &'a str,
    data: &'a T,
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An open audit log, positioned at its end. Not shared: the owner serialises
/// appends (the dashboard keeps it behind a mutex).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    head: ChainHead,
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, verifying the existing chain first.
    ///
    /// # Errors
    /// [`AuditError::Broken`] if the existing file fails verification: the
    /// dashboard refuses to extend a tampered log (move it aside to start anew).
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let head = if path.exists() {
            match verify_file(path) {
                Ok(head) => head,
                Err(VerifyError::Io { source, .. }) => return Err(io(source)),
                Err(VerifyError::Fault { fault, .. }) => {
                    return Err(AuditError::Broken {
                        path: path.to_owned(),
                        fault,
                    });
                }
            }
        } else {
            ChainHead {
                records: 0,
                hash: GENESIS_HASH.to_owned(),
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            head,
        })
    }

    /// The current head (record count and last hash).
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The file the log is written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and syncs it to disk; returns its hash (hex).
    ///
    /// # Errors
    /// [`AuditError::Io`] if the write or sync fails; the head is then unchanged.
    pub fn append<T: Serialize>(
        &mut self,
        kind: RecordKind,
        at_ms: u64,
        data: &T,
    ) -> Result<String, AuditError> {
        let body = serde_json::to_string(&Body {
            seq: self.head.records,
            at_ms,
            kind,
            prev: &self.head.hash,
            data,
        })
        .expect("audit records serialise infallibly");
        let hash = sha256_hex(body.as_bytes());
        let mut line = body;
        line.pop(); // the closing brace
        line.push_str(&format!(",\"hash\":\"{hash}\"}}\n"));
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.head.records += 1;
        self.head.hash = hash.clone();
        Ok(hash)
    }
}

/// Checks one line against the expected `seq` and `prev`; returns its hash.
fn check_line(line: &str, seq: u64, prev: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let stored = obj
        .get("hash")
        .and_then(|h| h.as_str())
        .ok_or("no \"hash\" field")?;
    let hex_ok = stored.len() == 64 && stored.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok
        || line.len() < HASH_SUFFIX_LEN
        || !line.ends_with(&format!(",\"hash\":\"{stored}\"}}"))
    {
        return Err("\"hash\" is not the last field with 64 hex digits".into());
    }
    let body = format!("{}}}", &line[..line.len() - HASH_SUFFIX_LEN]);
    let computed = sha256_hex(body.as_bytes());
    if computed != stored {
        return Err(format!(
            "record was modified: its SHA-256 is {computed}, the stored hash is {stored}"
        ));
    }
    let got_seq = obj
        .get("seq")
        .and_then(|s| s.as_u64())
        .ok_or("no \"seq\" field")?;
    if got_seq != seq {
        return Err(format!(
            "seq is {got_seq}, expected {seq} (a record was removed, inserted or moved)"
        ));
    }
    let got_prev = obj
        .get("prev")
        .and_then(|p| p.as_str())
        .ok_or("no \"prev\" field")?;
    if got_prev != prev {
        return Err(format!(
            "prev is {got_prev}, but the previous record's hash is {prev} (a record was \
             removed, inserted or moved)"
        ));
    }
    for field in ["at_ms", "kind", "data"] {
        if !obj.contains_key(field) {
            return Err(format!("no \"{field}\" field"));
        }
    }
    Ok(computed)
}

/// Length of a record hash: 64 lowercase hex digits (SHA-256).
pub const HASH_HEX_LEN: usize = 64;

/// Checks that `s` is a record hash: exactly [`HASH_HEX_LEN`] hex digits (either
/// case); returns it in lowercase, as the log writes it.
///
/// # Errors
/// A message saying what is wrong: the length, or the first non-hex character
/// and its position.
pub fn parse_hash(s: &str) -> Result<String, String> {
    if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "audit hash {s:?} is not hex: {c:?} at position {i} (expected {HASH_HEX_LEN} hex digits)"
        ));
    }
    if s.len() != HASH_HEX_LEN {
        return Err(format!(
            "audit hash {s:?} has {} hex digits, expected {HASH_HEX_LEN} (SHA-256)",
            s.len()
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// Whether the chain holds from the first record up to a located one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    /// Every record from index 0 up to and including the located one verifies
    /// (its hash, `seq` and `prev`).
    pub ok: bool,
    /// Records checked: the located index + 1.
    pub checked: u64,
    /// 0-based index of the first record that fails, when one at or before the
    /// located one does.
    pub first_broken: Option<u64>,
    /// Why that record fails.
    pub error: Option<String>,
}

/// One record found by its hash ([`locate`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Located {
    /// Position in the chain: 0-based line index (equal to the record's `seq`
    /// while the chain is intact).
    pub index: u64,
    /// The record as written: `seq`, `at_ms`, `kind`, `prev`, `data`, `hash`.
    pub entry: serde_json::Value,
    /// The chain from the first record up to this one.
    pub verification: ChainCheck,
}

/// Finds the record whose stored `hash` is `hash` (lowercase hex, see
/// [`parse_hash`]) among the first `max_records` lines of the log at `path`, and
/// verifies the chain from the first line up to it (stopping at the first fault,
/// which [`ChainCheck::first_broken`] names). Lines past `max_records` are not
/// read: give the head's record count, so a line being appended is never seen
/// half-written. A line that is not a record cannot be found, but still counts
/// as a fault for the records after it.
///
/// # Errors
/// [`VerifyError::Io`] if the file cannot be read; `Ok(None)` when no record
/// within `max_records` has that hash.
pub fn locate(path: &Path, hash: &str, max_records: u64) -> Result<Option<Located>, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut prev = GENESIS_HASH.to_owned();
    let mut fault: Option<(u64, String)> = None;
    for (i, line) in (0..max_records).zip(reader.lines()) {
        let line = line.map_err(io)?;
        if fault.is_none() {
            match check_line(&line, i, &prev) {
                Ok(h) => prev = h,
                Err(what) => fault = Some((i, what)),
            }
        }
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry.get("hash").and_then(|h| h.as_str()) == Some(hash) {
            let (first_broken, error) = fault.map_or((None, None), |(i, e)| (Some(i), Some(e)));
            return Ok(Some(Located {
                index: i,
                entry,
                verification: ChainCheck {
                    ok: first_broken.is_none(),
                    checked: i + 1,
                    first_broken,
                    error,
                },
            }));
        }
    }
    Ok(None)
}

/// Verifies a whole log from its first line.
///
/// # Errors
/// [`VerifyError::Fault`] names the first bad line (1-based) and why: a record
/// edited (hash mismatch), removed, inserted or reordered (`seq`/`prev` mismatch),
/// or a line that is not a record. [`VerifyError::Io`] if the file cannot be read.
pub fn verify_file(path: &Path) -> Result<ChainHead, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut head = ChainHead {
        records: 0,
        hash: GENESIS_HASH.to_owned(),
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        head.hash =
            check_line(&line, head.records, &head.hash).map_err(|what| VerifyError::Fault {
                path: path.to_owned(),
                fault: ChainFault { line: i + 1, what },
            })?;
        head.records += 1;
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn log_with(n: u64) -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(
                RecordKind::Alert,
                1000 + i,
                &json!({"id": format!("a-{i}"), "score": 0.5}),
            )
            .unwrap();
        }
        let lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        (dir, path, lines)
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn fault(path: &Path) -> ChainFault {
        match verify_file(path) {
            Err(VerifyError::Fault { fault, .. }) => fault,
            other => panic!("expected a chain fault, got {other:?}"),
        }
    }

    #[test]
    fn intact_log_verifies_and_reopens_at_its_head() {
        let (_dir, path, lines) = log_with(5);
        let head = verify_file(&path).unwrap();
        assert_eq!(head.records, 5);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head(), &head);
        let h = log
            .append(RecordKind::Command, 9, &json!({"x": 1}))
            .unwrap();
        assert_eq!(verify_file(&path).unwrap().hash, h);
        assert!(lines[1].contains(&format!(
            "\"prev\":\"{}\"",
            sha256_hex(format!("{}}}", &lines[0][..lines[0].len() - HASH_SUFFIX_LEN]).as_bytes())
        )));
    }

    #[test]
    fn edited_record_is_named() {
        let (_dir, path, mut lines) = log_with(5);
        lines[2] = lines[2].replace("0.5", "0.1");
        rewrite(&path, &lines);
        let f = fault(&path);
        assert_eq!(f.line, 3, "{f}");
        assert!(f.what.contains("modified"), "{f}");
    }

    #[test]
    fn removed_record_is_named() {
        let (_dir, path, mut lines) = log_with(5);
        lines.remove(1);
        rewrite(&path, &lines);
        assert_eq!(fault(&path).line, 2);
    }

    #[test]
    fn removed_first_record_is_named() {
        let (_dir, path, mut lines) = log_with(3);
        lines.remove(0);
        rewrite(&path, &lines);
        assert_eq!(fault(&path).line, 1);
    }

    #[test]
    fn inserted_record_is_named() {
        let (_dir, path, mut lines) = log_with(5);
        // A copy of a genuine record: its own hash is fine, its place is not.
        let copy = lines[0].clone();
        lines.insert(3, copy);
        rewrite(&path, &lines);
        assert_eq!(fault(&path).line, 4);
    }

    #[test]
    fn inserted_forged_record_breaks_the_chain_after_it() {
        // A forger who computes a fitting hash for the inserted record is caught
        // at the next genuine record, whose seq no longer fits.
        let (dir, path, lines) = log_with(3);
        let other = dir.path().join("forge.jsonl");
        let mut forge = AuditLog::open(&other).unwrap();
        for i in 0..2 {
            forge
                .append(
                    RecordKind::Alert,
                    1000 + i,
                    &json!({"id": format!("a-{i}"), "score": 0.5}),
                )
                .unwrap();
        }
        forge
            .append(RecordKind::Alert, 5, &json!({"id": "forged"}))
            .unwrap();
        let forged = std::fs::read_to_string(&other)
            .unwrap()
            .lines()
            .nth(2)
            .unwrap()
            .to_owned();
        let tampered = vec![lines[0].clone(), lines[1].clone(), forged, lines[2].clone()];
        rewrite(&path, &tampered);
        assert_eq!(fault(&path).line, 4);
    }

    #[test]
    fn reordered_records_are_named() {
        let (_dir, path, mut lines) = log_with(5);
        lines.swap(2, 3);
        rewrite(&path, &lines);
        assert_eq!(fault(&path).line, 3);
    }

    #[test]
    fn hashes_are_parsed_naming_the_problem() {
        let good = "ab".repeat(32);
        assert_eq!(parse_hash(&good.to_uppercase()).unwrap(), good);
        let e = parse_hash("abc").unwrap_err();
        assert!(e.contains("3 hex digits, expected 64"), "{e}");
        let e = parse_hash(&format!("{}zz", "a".repeat(62))).unwrap_err();
        assert!(e.contains("not hex: 'z' at position 62"), "{e}");
        assert!(parse_hash("").unwrap_err().contains("0 hex digits"));
    }

    fn hash_of(line: &str) -> String {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_record_is_located_with_its_position_and_a_verified_chain() {
        let (_dir, path, lines) = log_with(5);
        let found = locate(&path, &hash_of(&lines[3]), 5).unwrap().unwrap();
        assert_eq!(found.index, 3);
        assert_eq!(found.entry["seq"], 3);
        assert_eq!(found.entry["data"]["id"], "a-3");
        assert_eq!(
            found.verification,
            ChainCheck {
                ok: true,
                checked: 4,
                first_broken: None,
                error: None
            }
        );
        assert!(locate(&path, &"0".repeat(64), 5).unwrap().is_none());
        // Only the first `max_records` lines are searched.
        assert!(locate(&path, &hash_of(&lines[3]), 3).unwrap().is_none());
    }

    #[test]
    fn a_tampered_record_before_or_at_the_located_one_is_named() {
        let (_dir, path, mut lines) = log_with(5);
        let target = hash_of(&lines[4]);
        lines[1] = lines[1].replace("0.5", "0.9");
        rewrite(&path, &lines);
        let v = locate(&path, &target, 5).unwrap().unwrap().verification;
        assert!(!v.ok);
        assert_eq!(v.first_broken, Some(1));
        assert!(v.error.unwrap().contains("modified"));
        // The edited record itself is found by its (stored) hash and named.
        let own = locate(&path, &hash_of(&lines[1]), 5).unwrap().unwrap();
        assert_eq!((own.index, own.verification.first_broken), (1, Some(1)));
        // A record before the edit still verifies.
        let before = locate(&path, &hash_of(&lines[0]), 5).unwrap().unwrap();
        assert!(before.verification.ok);
    }

    #[test]
    fn garbage_line_is_named_and_blocks_appending() {
        let (_dir, path, mut lines) = log_with(2);
        lines.push("not json".into());
        rewrite(&path, &lines);
        assert_eq!(fault(&path).line, 3);
        assert!(matches!(
            AuditLog::open(&path),
            Err(AuditError::Broken { .. })
        ));
        // Nothing was appended to the broken file.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
