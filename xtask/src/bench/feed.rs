//! `cargo xtask bench feed` (root): how long `fw-ctl feed load FILE` takes, end to
//! end through the real CLI binary (process start, pinned-map open, parse,
//! allowlist check, one map update per prefix, the state file written under its
//! lock), for a 100,000-prefix feed. Target: under 1 s.
//!
//! The feed mixes what real lists hold: 80,000 single IPv4 addresses (in
//! 198.18.0.0/15, RFC 2544 benchmarking space), 15,000 shorter IPv4 prefixes
//! (/16../31, pseudo-random public-looking networks from a fixed seed, private
//! and reserved space skipped) and 5,000 IPv6 prefixes (/32../64 and hosts, in
//! 2001:db8::/32), FireHOL/Spamhaus syntax with comments. The program is loaded
//! on `lo` (skb mode) of a scratch namespace only so its maps exist; it is
//! unloaded (maps removed) after, and between runs, so every timed run inserts
//! all 100k prefixes into empty maps. Three such runs (median reported), then one
//! more load of the same file onto the filled maps (its inserted/updated/unchanged
//! counts recorded).
//! Writes `bench/results/feed.json`.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use super::flows::{build_bin, write_json};
use crate::{testbed::daemons, util};

/// Prefixes in the benchmark feed.
const N: usize = 100_000;
const HOSTS_V4: usize = 80_000;
const NETS_V4: usize = 15_000;
const RUNS: usize = 3;
/// The target: under one second for 100k prefixes.
const TARGET_S: f64 = 1.0;

/// SplitMix64 (a fixed seed: the same feed on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Not private, loopback, link-local, multicast, reserved, documentation or the
/// hosts' 198.18.0.0/15 (first octet test is enough at /16 and longer).
fn public_looking(a: u32) -> bool {
    let o = a.to_be_bytes();
    !matches!(
        o[0],
        0 | 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203 | 224..=255
    )
}

/// The benchmark feed text and its prefix count by kind.
fn feed_text() -> (String, serde_json::Value) {
    let mut s = String::with_capacity(N * 28);
    s.push_str("# tad benchmark feed (FireHOL / Spamhaus DROP syntax)\n");
    let mut seen = std::collections::HashSet::new();
    for i in 0..HOSTS_V4 {
        let a = (198u32 << 24) | (18 << 16) | i as u32;
        let o = a.to_be_bytes();
        s.push_str(&format!("{}.{}.{}.{}\n", o[0], o[1], o[2], o[3]));
    }
    let mut rng = Rng(0x7ad_feed);
    let mut nets = 0;
    while nets < NETS_V4 {
        let r = rng.next();
        let len = 16 + (r % 16) as u32; // /16../31
        let a = ((r >> 32) as u32) & (u32::MAX << (32 - len));
        if !public_looking(a) || !seen.insert((a, len)) {
            continue;
        }
        let o = a.to_be_bytes();
        s.push_str(&format!(
            "{}.{}.{}.{}/{len} ; SBL{nets}\n",
            o[0], o[1], o[2], o[3]
        ));
        nets += 1;
    }
    let v6 = N - HOSTS_V4 - NETS_V4;
    for i in 0..v6 {
        let r = rng.next();
        let (b, c, d) = ((r & 0xffff) as u16, ((r >> 16) & 0xffff) as u16, i as u16);
        match i % 3 {
            0 => s.push_str(&format!("2001:db8:{b:x}:{d:x}::/64 # v6 net\n")),
            1 => s.push_str(&format!("2001:db8:{b:x}:{c:x}:{d:x}::/80\n")),
            _ => s.push_str(&format!("2001:db8:{b:x}:{c:x}::{d:x}\n")),
        }
    }
    let kinds = serde_json::json!({ "v4_hosts": HOSTS_V4, "v4_prefixes": NETS_V4, "v6": v6 });
    (s, kinds)
}

/// The scratch namespace and instance; removed when dropped.
struct Scratch {
    ns: String,
    instance: String,
    state: std::path::PathBuf,
}

impl Scratch {
    fn ctl(&self) -> Command {
        let mut c = Command::new(daemons::bin("fw-ctl"));
        c.args(["--instance", &self.instance, "--state"])
            .arg(&self.state)
            .arg("--json");
        c
    }

    fn load(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.state);
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(daemons::bin("fw-ctl"))
            .args(["--instance", &self.instance, "--state"])
            .arg(&self.state)
            .args(["--json", "load", "--iface", "lo", "--mode", "skb"])
            .stdout(std::process::Stdio::null());
        util::run_cmd(&mut c)
    }

    fn unload(&self) {
        let _ = self
            .ctl()
            .arg("unload")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// One timed `fw-ctl feed load`; its JSON report.
    fn feed_load(&self, file: &Path) -> anyhow::Result<(Duration, serde_json::Value)> {
        let mut c = self.ctl();
        c.args(["feed", "load"]).arg(file);
        let t = Instant::now();
        let out = c.output().context("running fw-ctl feed load")?;
        let took = t.elapsed();
        ensure!(
            out.status.success(),
            "fw-ctl feed load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rep: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("fw-ctl feed load --json output")?;
        Ok((took, rep))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.unload();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Runs the benchmark (see the module docs) and writes `json_out`.
///
/// # Errors
/// Not root, the build failing, the namespace or the load failing, a run not
/// inserting every prefix.
pub fn run(json_out: &Path) -> anyhow::Result<()> {
    ensure!(
        util::is_root(),
        "the feed benchmark loads an XDP program: run as root"
    );
    ensure!(build_bin("feed", "fw-ctl"), "fw-ctl does not build");
    let id = std::process::id();
    let tmp = std::env::temp_dir().join(format!("tad-feedbench-{id}"));
    std::fs::create_dir_all(&tmp)?;
    let scratch = Scratch {
        ns: format!("tad-feedbench-{id}"),
        instance: format!("feedbench-{id}"),
        state: tmp.join("state.json"),
    };
    util::run_cmd(Command::new("ip").args(["netns", "add", &scratch.ns]))?;
    util::run_cmd(Command::new("ip").args(["-n", &scratch.ns, "link", "set", "lo", "up"]))?;

    let (text, kinds) = feed_text();
    let file = tmp.join("feed.txt");
    std::fs::write(&file, &text)?;
    let bytes = text.len();

    let mut fresh = Vec::new();
    for _ in 0..RUNS {
        scratch.unload();
        scratch.load()?;
        let (t, rep) = scratch.feed_load(&file)?;
        ensure!(
            rep["inserted"].as_u64() == Some(N as u64),
            "a fresh load inserted {} of {N} prefixes: {}",
            rep["inserted"],
            serde_json::to_string(&rep["bad_lines"]).unwrap_or_default()
        );
        fresh.push(t.as_secs_f64());
    }
    let (again, rep) = scratch.feed_load(&file)?;
    let count = |k: &str| rep[k].as_u64().unwrap_or(0);
    let reload = serde_json::json!({
        "inserted": count("inserted"), "updated": count("updated"), "unchanged": count("unchanged"),
    });
    ensure!(
        count("inserted") + count("updated") + count("unchanged") == N as u64,
        "loading the same feed again did not account for every prefix: {reload}"
    );
    let state_bytes = std::fs::metadata(&scratch.state)
        .map(|m| m.len())
        .unwrap_or(0);
    drop(scratch);
    let _ = std::fs::remove_dir_all(&tmp);

    let mut sorted = fresh.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[RUNS / 2];
    let again_s = again.as_secs_f64();
    let met = median < TARGET_S;
    println!("feed load through `fw-ctl feed load` ({N} prefixes, {bytes} bytes of feed):");
    println!(
        "  {:<34} {:>7.3} s median of {RUNS} ({:.0} prefixes/s); runs {}",
        "into empty maps",
        median,
        N as f64 / median,
        fresh
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  {:<34} {:>7.3} s  ({reload})", "same feed again", again_s);
    println!(
        "  target < {TARGET_S} s: {}",
        if met { "met" } else { "NOT met" }
    );
    write_json(
        json_out,
        &serde_json::json!({
            "bench": "feed",
            "machine": fw_ctl::bench_env::machine(),
            "method": "fw-ctl feed load FILE (release CLI binary, end to end: process, parse, allowlist check, one map update per prefix, state file) into empty maps of the program loaded on lo (skb) of a scratch namespace; median of 3 fresh runs, then one reload of the same file",
            "prefixes": N,
            "kinds": kinds,
            "feed_bytes": bytes,
            "state_file_bytes": state_bytes,
            "seconds": { "fresh_runs": fresh, "fresh_median": median, "reload": again_s },
            "reload": reload,
            "target_s": TARGET_S,
            "target_met": met,
        }),
    )
}
