//! The testbed's state file ([`STATE_FILE`]): what `up` created (namespaces, root
//! links) and what the demo and the benchmarks started in it (processes, pinned BPF
//! objects), so `down` removes exactly that, even after xtask itself crashed.
use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Directory of the state file.
pub const STATE_DIR: &str = "/run/tad-testbed";
/// What `up` created and what the demo started, as JSON ([`State`]).
pub const STATE_FILE: &str = "/run/tad-testbed/state.json";

/// A process started inside the testbed, recorded so `down` can stop it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ProcRecord {
    pub pid: i32,
    pub name: String,
    /// `/proc/PID/stat` start time (clock ticks), so a reused PID is never killed.
    pub start_ticks: u64,
}

/// What exists because of us, in creation order.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct State {
    /// Number of device hosts.
    pub devices: u8,
    /// Network namespaces created.
    pub namespaces: Vec<String>,
    /// Links created in the root namespace.
    pub root_links: Vec<String>,
    /// Processes started in the namespaces.
    pub processes: Vec<ProcRecord>,
    /// BPF filesystem directories pinned for the testbed (removed on `down`).
    pub bpf_pins: Vec<String>,
    /// Dashboard URL, once the demo serves one.
    pub dashboard_url: Option<String>,
}

impl State {
    /// Loads the state file, `None` when there is none.
    pub fn load() -> anyhow::Result<Option<State>> {
        match std::fs::read_to_string(STATE_FILE) {
            Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| {
                format!("{STATE_FILE} is not a testbed state file")
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {STATE_FILE}")),
        }
    }

    /// Writes the state file atomically (temp file + rename).
    pub fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let tmp = format!("{STATE_FILE}.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {tmp}"))?;
        std::fs::rename(&tmp, STATE_FILE).with_context(|| format!("cannot write {STATE_FILE}"))
    }

    /// Applies `f` to the stored state and saves it.
    pub fn update(f: impl FnOnce(&mut State)) -> anyhow::Result<()> {
        let mut s = State::load()?.context("the testbed is not up (no state file)")?;
        f(&mut s);
        s.save()
    }
}

/// Records a process started in the testbed so `down` stops it.
pub fn record_process(pid: i32, name: &str) -> anyhow::Result<()> {
    let start_ticks = proc_start_ticks(pid).unwrap_or(0);
    State::update(|s| {
        s.processes.push(ProcRecord {
            pid,
            name: name.into(),
            start_ticks,
        })
    })
}

/// Forgets a process that was stopped.
pub fn forget_process(pid: i32) -> anyhow::Result<()> {
    State::update(|s| s.processes.retain(|p| p.pid != pid))
}

/// Records a BPF pin directory (under /sys/fs/bpf) that `down` removes.
pub fn record_bpf_pin(dir: &str) -> anyhow::Result<()> {
    State::update(|s| {
        if !s.bpf_pins.iter().any(|d| d == dir) {
            s.bpf_pins.push(dir.into());
        }
    })
}

pub(super) fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the ")" that ends the command name.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}
