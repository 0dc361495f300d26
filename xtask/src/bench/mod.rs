//! `cargo xtask bench [NAME...] [--json FILE]`: benchmarks, never part of the tests.
//! Each writes `bench/results/<name>.json` (and `--json FILE` when one is named)
//! and prints its table. See BENCHMARKS.md for the method of each.
//!
//! - `xdp`: ns per packet by path through BPF_PROG_TEST_RUN (fw-ctl/benches/xdp.rs).
//! - `filters`: the XDP program against iptables+ipset and nftables on veth with
//!   trafgen (fw-ctl/benches/filters.rs; about 8 minutes).
//! - `flowmap`: one export pass over the flow map at 64k, 256k and 1M entries
//!   (fw-ctl/benches/flowmap.rs).
//! - `flood`: a random-source SYN flood (trafgen) against a device behind the XDP
//!   interface: softirq per packet, legitimate flows kept in the flow map and in
//!   the exporter's records, a client's connects (fw-ctl/benches/flood.rs; about
//!   2 minutes, `--quick` about 30 s).
//! - `pipeline`: flow records per second end to end, gateway daemon to detector
//!   over MQTT/TLS ([`pipeline`]); `footprint`: RSS and CPU of the daemon, detector
//!   and dashboard with 1k and 10k active flows ([`footprint`]). Both run on the
//!   two-namespace bed of [`flows`].
//! - `detector`: flow records per second through partitioning, model and rules on
//!   one core (`detector bench`).
//! - `reaction`: nmap scan to first XDP drop, and verdict published to block-map
//!   entry, on the testbed with the whole stack ([`reaction`]).
//! - `feed`: `fw-ctl feed load` of a 100,000-prefix feed, end to end through the
//!   CLI ([`feed`]; target < 1 s).
//! - `devices`: telemetry messages per second through the device guard with
//!   Ed25519 signature checks on one core ([`devices`]; target ≥ 20,000/s).
use std::{path::PathBuf, process::Command};

use anyhow::bail;

use crate::{build, setup, testbed::daemons, util};

mod devices;
mod feed;
mod flows;
mod footprint;
mod pipeline;
mod reaction;

/// Every benchmark this xtask knows, in the order `bench` runs them.
const ALL: &[&str] = &[
    "xdp",
    "filters",
    "flowmap",
    "flood",
    "detector",
    "pipeline",
    "footprint",
    "reaction",
    "feed",
    "devices",
];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Benchmarks to run (default: all): xdp, filters, flowmap, flood, detector,
    /// pipeline, footprint, reaction, feed, devices.
    names: Vec<String>,
    /// Also write the JSON result here (only with a single benchmark).
    #[arg(long)]
    json: Option<PathBuf>,
    /// flood: one run with a 5 s window instead of 3 runs of 10 s.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    reaction: reaction::ReactionArgs,
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = if a.names.is_empty() {
        ALL.to_vec()
    } else {
        a.names.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = names.iter().find(|n| !ALL.contains(n)) {
        bail!("unknown benchmark {unknown:?}; known: {}", ALL.join(", "));
    }
    if a.json.is_some() && names.len() != 1 {
        bail!("--json takes one benchmark; results of all are in bench/results/");
    }
    let results = util::workspace_root().join("bench/results");
    std::fs::create_dir_all(&results)?;
    for name in names {
        let out = results.join(format!("{name}.json"));
        let out_s = out.to_string_lossy().into_owned();
        match name {
            "xdp" | "filters" | "flowmap" | "flood" => {
                setup::ensure_ebpf_toolchain()?;
                anyhow::ensure!(
                    util::is_root(),
                    "the {name} benchmark loads an XDP program: run as root"
                );
                // The workspace package set (util::WORKSPACE), so features
                // unify as in every other build; only fw-ctl has these benches.
                let mut args = vec!["bench"];
                args.extend_from_slice(util::WORKSPACE);
                args.extend_from_slice(&["--bench", name, "--", "--json", &out_s]);
                if name == "flood" && a.quick {
                    args.push("--quick");
                }
                util::cargo(&args)?;
            }
            "detector" => {
                build::release(&["--bin", "detector"])?;
                // From the workspace root, as `cargo run` ran it (the model's
                // default path is relative to it).
                util::run_cmd(
                    Command::new(daemons::bin("detector"))
                        .args(["bench", "--json", &out_s])
                        .current_dir(util::workspace_root()),
                )?;
            }
            "pipeline" => {
                anyhow::ensure!(
                    util::is_root(),
                    "the pipeline benchmark creates namespaces: run as root"
                );
                pipeline::run(&out)?;
            }
            "footprint" => {
                anyhow::ensure!(
                    util::is_root(),
                    "the footprint benchmark loads XDP and creates namespaces: run as root"
                );
                footprint::run(&out)?;
            }
            "reaction" => reaction::run(&out, &a.reaction)?,
            "feed" => feed::run(&out)?,
            "devices" => devices::run(&out)?,
            _ => unreachable!("checked above"),
        }
        if let Some(extra) = &a.json {
            std::fs::copy(&out, extra)?;
        }
    }
    Ok(())
}
