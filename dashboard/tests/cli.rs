//! The `dashboard` binary: `audit verify` exit codes and messages, config errors.

use std::process::Command;

use dashboard::audit::{AuditLog, RecordKind};

fn dashboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dashboard"))
}

fn write_log(path: &std::path::Path, n: u64) {
    let mut log = AuditLog::open(path).unwrap();
    for i in 0..n {
        log.append(
            RecordKind::Command,
            i,
            &serde_json::json!({"id": format!("c-{i}")}),
        )
        .unwrap();
    }
}

#[test]
fn audit_verify_passes_an_intact_log_and_names_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 4);

    let out = dashboard()
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK, 4 records"));

    // Reorder two records.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = dashboard()
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");

    let out = dashboard()
        .args(["audit", "verify", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["line"], 2);
}

#[test]
fn missing_files_and_bad_usage_fail_clearly() {
    let out = dashboard()
        .args(["audit", "verify", "/nonexistent/audit.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/audit.jsonl"));

    let out = dashboard()
        .args(["serve", "--config", "/nonexistent/dashboard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = dashboard().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
