//! Small helpers shared by the xtask verbs: running commands with their command
//! line printed, locating the workspace.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The package set of every cargo build, test and bench xtask runs: the whole
/// workspace but the eBPF crate (built for bpfel by fw-ctl's build script).
///
/// Cargo unifies features over the packages it is asked to build, so `-p fw-ctl
/// -p detector` and `--workspace` compile the shared dependencies with different
/// feature sets and each rebuilds them. Selecting the same set everywhere
/// (`cargo xtask build/test/bench` as much as a plain `cargo test --workspace
/// --exclude fw-ebpf`) lets one build of the dependencies serve all of them.
pub const WORKSPACE: &[&str] = &["--workspace", "--exclude", "fw-ebpf"];

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints and runs a command, failing when it exits non-zero.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout when it succeeds, `None` otherwise.
pub fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cargo ARGS` in the workspace root with the same cargo that runs xtask.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(Command::new(cargo).args(args).current_dir(workspace_root()))
}

/// The command line of `cmd`, for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
