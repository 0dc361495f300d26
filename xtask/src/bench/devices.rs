//! `cargo xtask bench devices`: telemetry messages per second through the device
//! guard with Ed25519 signature checks on one core (issue 17; target ≥ 20,000/s).
//!
//! Runs the `tad-devices` bench `devices/benches/guard.rs` (64 simulated devices,
//! 51,200 signed messages, rounds of 256 with one fsync'd replay-state commit per
//! round; the guard alone, the whole station, and the station with the per-device
//! Isolation Forest; best of 3 runs) under `taskset -c <cpu>` so it and everything
//! it starts stay on one CPU (the last one, away from CPU 0's interrupts), and
//! writes its JSON line to `bench/results/devices.json` with the CPU added.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::util;

/// Runs the bench and writes `out`.
pub fn run(out: &Path) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = (cpus - 1).to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Build first (all cores), then time on one.
    util::cargo(&["bench", "-p", "tad-devices", "--bench", "guard", "--no-run"])?;
    let out_s = out.to_string_lossy().into_owned();
    util::run_cmd(
        Command::new("taskset")
            .args([
                "-c",
                &cpu,
                &cargo,
                "bench",
                "-p",
                "tad-devices",
                "--bench",
                "guard",
            ])
            .args(["--", "--json", &out_s])
            .current_dir(util::workspace_root()),
    )?;
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", out.display()))?;
    v["cpu"] = serde_json::json!(cpu.parse::<u32>().unwrap_or(0));
    std::fs::write(out, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "devices: guard {} msg/s (target {}), station {} msg/s, with Isolation Forest {} msg/s, on CPU {cpu}",
        v["guard_per_s"], v["target_guard_per_s"], v["station_per_s"], v["station_iforest_per_s"]
    );
    Ok(())
}
