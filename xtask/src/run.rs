//! `cargo xtask run --iface IF`: build, load the XDP program on the LAN
//! interface(s) and run the gateway daemon in the foreground.
use std::process::Command;

use crate::{build, setup, util};

#[derive(clap::Args)]
pub struct RunArgs {
    /// LAN-facing interface to attach the XDP program to.
    #[arg(long)]
    iface: Vec<String>,
    /// Gateway configuration file.
    #[arg(long, default_value = "fw-ctl/gateway.toml.example")]
    config: String,
    /// XDP attach mode.
    #[arg(long, default_value = "native")]
    mode: String,
}

/// Builds, reloads the program (blocks and flows kept) and runs `fw-ctl run`.
///
/// # Errors
/// No `--iface`, the build, bpffs, or an fw-ctl step failing.
pub fn run(a: &RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.iface.is_empty(),
        "give the LAN interface with --iface IF"
    );
    build::run()?;
    setup::ensure_bpffs()?;
    let fw_ctl = util::workspace_root().join("target/release/fw-ctl");
    // Reload the freshly built program; `--keep-maps` keeps blocks and flows in force.
    let _ = Command::new(&fw_ctl)
        .args(["unload", "--keep-maps"])
        .status();
    let mut load = vec!["load".to_string(), "--mode".into(), a.mode.clone()];
    for i in &a.iface {
        load.push("--iface".into());
        load.push(i.clone());
    }
    util::run_cmd(Command::new(&fw_ctl).args(&load))?;
    util::run_cmd(Command::new(&fw_ctl).args(["--config", &a.config, "run"]))
}
