//! `cargo bench -p fw-ctl --bench feed [-- --json FILE]` (root): how long
//! `fw-ctl feed load` takes for 100,000 prefixes (FireHOL/Spamhaus syntax) into the
//! kernel blocklist, state file included. Target: under one second. Loads the
//! program on `lo` (skb mode) of a scratch network namespace and removes it after.
//! A measurement, never a test.

use std::{fs::File, os::fd::AsRawFd, process::Command, time::Instant};

use fw_ctl::{
    config::{Limits, MapSizes},
    feed,
    kernel::Pinned,
    loader::{self, LoadOptions},
    pin::{AttachMode, PinDir},
};

const N: u32 = 100_000;

struct Scratch {
    netns: String,
    dir: PinDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = loader::unload(&self.dir, false);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the feed bench needs root (kernel maps)"
    );
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    let id = std::process::id();
    let netns = format!("tad-feedbench-{id}");
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &netns])
            .status()?
            .success(),
        "ip netns add"
    );
    let scratch = Scratch {
        netns: netns.clone(),
        dir: PinDir::new(&format!("feedbench-{id}"))?,
    };
    Command::new("ip")
        .args(["-n", &netns, "link", "set", "lo", "up"])
        .status()?;
    let ns = File::open(format!("/run/netns/{netns}"))?;
    // SAFETY: a valid namespace fd; the process is single-threaded here.
    anyhow::ensure!(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
        "setns"
    );

    let tmp = tempfile::tempdir()?;
    loader::load_in(
        &scratch.dir,
        &LoadOptions {
            instance: scratch.dir.instance.clone(),
            interfaces: vec!["lo".into()],
            mode: AttachMode::Skb,
            observe: false,
            limits: Limits::default(),
            evidence: Default::default(),
            sizes: MapSizes::default(),
            allow: Vec::new(),
            allow_own_addresses: false,
            state_file: None,
        },
    )?;
    let mut text = String::with_capacity(N as usize * 32);
    for i in 0..N {
        text.push_str(&format!(
            "198.{}.{}.{} ; SBL{i}\n",
            18 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        ));
    }
    let file = tmp.path().join("drop.txt");
    std::fs::write(&file, text)?;
    let state = tmp.path().join("state.json");

    let mut maps = Pinned::open(&scratch.dir)?;
    let t = Instant::now();
    let first = feed::load(&mut maps, Some(&state), &file, None)?;
    let new_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let again = feed::load(&mut maps, Some(&state), &file, None)?;
    let again_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        first.inserted == N as usize && again.unchanged == N as usize,
        "feed not fully loaded"
    );

    println!("feed load, {N} prefixes (kernel LPM trie + state file):");
    println!(
        "  {:<28} {:>8.3} s  ({:.0} prefixes/s)",
        "new prefixes",
        new_s,
        N as f64 / new_s
    );
    println!("  {:<28} {:>8.3} s", "reload (all unchanged)", again_s);
    println!(
        "  target: < 1 s -> {}",
        if new_s < 1.0 { "met" } else { "NOT met" }
    );
    if let Some(p) = json_out {
        let v =
            serde_json::json!({ "prefixes": N, "seconds": { "new": new_s, "reload": again_s } });
        std::fs::write(p, serde_json::to_vec_pretty(&v)?)?;
    }
    Ok(())
}
