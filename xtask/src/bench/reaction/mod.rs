//! `cargo xtask bench reaction` (issue 8, item 3): how fast the whole system stops a
//! port scan, and how fast the gateway applies a verdict. Writes
//! `bench/results/reaction.json` and prints a table. Root only.
//!
//! # Setup
//! The testbed ([`Testbed::up`], 3 device hosts) and the whole pipeline as `demo`
//! runs it ([`Stack`]): Mosquitto with mutual TLS and the ACL on the monitor node,
//! the release `fw-ctl` with the XDP program in native mode on `tad-router/lan0`
//! and its daemon in enforce mode, the detector in enforce mode. No dashboard and no
//! benign traffic (less load on the 2-CPU machine; neither is on the measured
//! path). One extra detector identity, [`BENCH_DETECTOR_ID`], gets its own client
//! certificate, the detector role in the broker ACL and a place in the gateway's
//! `[trust] detectors`, so this benchmark publishes verdicts under its own MQTT
//! client id next to the running detector.
//!
//! # Verdict to map (3 runs of `--verdicts N` at each of two paces, default 100)
//! The benchmark itself is the publisher. For each verdict (action `block`, a /32 in
//! 198.19.200.0/21 that no traffic uses, TTL 600 s): a monotonic timestamp right
//! before the publish call (`BusClient::try_publish`, which only queues; the
//! client's event loop runs on its own thread), then the block map is read every
//! ~100 µs until the entry is there: `verdict_to_map` = that delay. It covers the
//! bench client's TLS write, the broker, the daemon's receive and checks, its state
//! file lock and read, and the map update; not the state-file save (the daemon
//! fsyncs it after the map update) nor the ack. Verdicts go one at a time:
//! - isolated (the headline `verdict_to_map_ms_p50/p99`): `--verdict-gap-ms`
//!   (default 100 ms) after the previous one was seen in the map;
//! - burst (`verdict_to_map_burst_ms_*`): 20 ms apart, 50 verdicts/s, each of
//!   which also makes the daemon fsync its state file.
//!
//! Afterwards each target is removed by an `unblock` verdict, timed the same way
//! (`unblock_to_map_ms`). The gateway's own receipt-to-ack time (`apply_us` in its
//! acks: checks, map update and state-file save) is reported as `daemon_apply_ms`.
//! Samples over 5 ms are listed with their phase against the daemon's once-a-second
//! status tick (from the `at_unix_ms` of its status file).
//!
//! # Scan to drop (`--rounds N` answered and N unanswered, default 20 each)
//! Two sets of rounds, alternating (answered, unanswered, answered, ...), so drift
//! on the machine touches both alike:
//! - **answered**: the target rotates over the 3 devices, which answer every probe
//!   (RST for a closed port, SYN-ACK and then nmap's RST for an open one);
//! - **unanswered**: the target is an absent host in [`testbed::EMPTY_SPACE`],
//!   198.19.254.10 + round ([`unanswered_target`]); the attacker namespace routes
//!   that space through the router, which blackholes it: no probe gets any answer,
//!   not even an ICMP error.
//!
//! Each round uses a fresh attacker source ([`round_source`]: 192.0.2.150 + round
//! for answered, 192.0.2.175 + round for unanswered rounds), added to
//! `tad-attacker/eth0` for the round, so no detector or datapath state (alert
//! cooldown, trust, evidence slot, rate limits) from an earlier round applies.
//! Per round:
//! - `tcpdump -w FILE --time-stamp-precision=nano` in the attacker namespace,
//!   started and confirmed listening before nmap, captures every SYN without ACK
//!   from the round's source as it leaves the attacker's interface (the scan's
//!   probes; with `-s 96`, `-U`): their kernel timestamps (CLOCK_REALTIME, ns) are
//!   read back from the file after the round. `t_first` is the earliest;
//! - `nmap -sS -n -Pn -e eth0 -S <source> -T4 --max-retries 1 -p 1-65535
//!   --max-rate 10000 <target>` (`--scan-ports`, `--scan-rate`): the demo's scan,
//!   but over every port at at most 10,000 probes/s, so it lasts ~6.5 s and is
//!   still running when its block lands. The demo's `-p 1-1000` at full speed is
//!   over in ~0.1 s on the testbed (nmap -T4 sends ~90,000 probes/s on veth),
//!   half a second before detection, and leaves no packet to drop; so is an
//!   uncapped full-range scan in ~0.7 s in about half the rounds. Unanswered
//!   rounds add `--min-rate` equal to the cap: nmap -T4 against a host that never
//!   answers otherwise slows down to ~20 probes/s (measured), unlike any scanner
//!   that is worth stopping (masscan, zmap);
//! - the pinned block map is read every ~1 ms ([`BlockReader`], fw-ctl's own
//!   pinned-map code, which sees the XDP program's own provisional quarantine
//!   entries in `BLOCK_HOST_V4` as it sees a detector's): `t_block` = the first
//!   read that finds an entry in force for the source's /32, `t_drop` = the first
//!   read that finds its hit counter above 0 (the XDP program counts every packet
//!   it drops for that entry), both CLOCK_REALTIME taken right after the read.
//!   `scan_to_drop` = `t_drop - t_first` (resolution: the time since the previous
//!   read, per round `drop_resolution_ms`, ~1.1 ms); `scan_to_block` likewise.
//!   The entry's origin when first seen is recorded (`datapath`: the XDP
//!   program's provisional quarantine, flag `BLOCK_FLAG_NEW_FLOWS_ONLY`;
//!   `detector`: a verdict), and its origin when the round stops (a detector's
//!   verdict replaces a provisional entry);
//! - **probes passed before the block**: `probes_before_block` = the captured SYNs
//!   of the source with a timestamp before `t_block`, i.e. probes the source had
//!   put on the wire before the block entry was seen in the map. The entry
//!   appeared between the previous read and that one, so the count is an upper
//!   bound; `probes_before_block_min` counts those before the previous read
//!   (`t_block - block_resolution`), which certainly met no block (the attacker's
//!   veth to the router's XDP hook is microseconds). `probes_before_drop` counts
//!   those before `t_drop`; `probes_sent` all SYNs of the round, and tcpdump's own
//!   kernel-drop count is kept (`capture_dropped`, 0 when nothing was lost).
//!   Exact where the bounds are wide (nmap sends its first probes in bursts of
//!   ~50-100 per ms): `probes_passed` = the flows with the source at one end in
//!   the pinned flow map right after nmap is stopped ([`BlockReader::flows_of`]):
//!   every probe that passed the XDP program opened a flow of its own (a new
//!   destination port), every dropped one none;
//! - where the time goes, from the bus recorder and the messages' own clocks (all
//!   processes run on this one machine, one wall clock): the detector stamps alert
//!   and verdict with the time the triggering flow batch arrived (`at_ms`,
//!   `issued_at_ms`), the gateway's ack carries the time it finished the verdict
//!   (map updated, state file saved) and its receipt-to-ack time:
//!   `first_to_detector` = alert `at_ms` - `t_first` (flow export interval and end
//!   grace, batching, the bus), `detector_to_map` = ack `at_ms` - verdict
//!   `issued_at_ms` (detection, verdict over the bus, apply; ms resolution),
//!   `block_to_drop` = `t_drop - t_block` (the next scan packet after the block);
//! - then nmap and tcpdump are stopped (and waited for), the source is unblocked
//!   with `fw-ctl unblock` and its address removed.
//!
//! A scan that ends before its block leaves no packet to drop: such a round is
//! reported with `scan_to_drop_ms: null` and counted in `rounds_without_drop`; the
//! percentiles are over the rounds with a drop (and `scan_to_block` and the probe
//! counts over the rounds with a block).
//!
//! # Percentiles
//! Nearest rank ([`percentile`]): the p-th percentile of n values is the
//! ⌈p·n/100⌉-th smallest. With 20 rounds of a set p99 is its largest round; of the 300
//! pooled verdicts it is the 297th smallest. The headline `verdict_to_map_ms_p50/p99`
//! are over all verdicts of the 3 isolated runs pooled; each run's own figures are
//! in `verdict_to_map_ms.runs` and the medians of the runs' p50/p99 in
//! `verdict_to_map_ms.median_of_run_p50/p99`.
//!
//! Everything (processes by PID, the extra address, the stack, the testbed) is
//! removed on every exit path by Drop guards; Ctrl-C is handled like `demo`; the
//! whole benchmark has a time limit (`--time-limit`, default 20 min).
//!
//! Files: this module (options, the run, the block-map reader, percentiles),
//! [`verdict`] (verdict to map), [`scan`] (scan to drop), [`report`] (JSON and
//! table).
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use fw_common::filter::BlockEntry;
use fw_ctl::{kernel::Pinned, lists::Lists as _, pin::PinDir};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::testbed::{
    self, Testbed,
    daemons::in_ns_bin,
    netns,
    stack::{self, Stack, StackOptions},
};

mod report;
mod scan;
mod verdict;

/// Node id (certificate CN and MQTT client id) the benchmark publishes verdicts as.
pub const BENCH_DETECTOR_ID: &str = "detector-bench";
/// First scan source of the answered rounds: 192.0.2.150 (the testbed uses .1,
/// .11-.19, .66-.73, .99); the unanswered rounds' follow at .175.
const SOURCE_FIRST: u8 = 150;
/// Rounds per set: sources 192.0.2.150-174 (answered) and .175-199 (unanswered).
pub const MAX_ROUNDS: usize = 25;
/// First absent host the unanswered rounds scan: 198.19.254.10 (in
/// [`testbed::EMPTY_SPACE`]).
const UNANSWERED_FIRST: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 10);
/// Verdict targets: 198.19.200.1 onwards (in 198.18.0.0/15, away from the slices
/// replays use at its bottom), at most this many.
const VERDICT_TARGETS: u32 = 2046;
/// Verdict-to-map runs (per pace).
const VERDICT_RUNS: usize = 3;
/// Pause between verdicts of the burst runs (50 verdicts/s).
const BURST_GAP: Duration = Duration::from_millis(20);
/// Device hosts on the testbed; scan targets rotate over them.
const DEVICES: u8 = 3;
/// Block-map read interval during a scan round.
const SCAN_POLL: Duration = Duration::from_millis(1);
/// Block-map read interval after a verdict.
const VERDICT_POLL: Duration = Duration::from_micros(100);

/// Options of the `reaction` benchmark (flattened into `cargo xtask bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct ReactionArgs {
    /// reaction: nmap scan rounds per set (answered, unanswered), each from a
    /// fresh source address (1-25).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// reaction: verdicts per verdict-to-map run (3 runs).
    #[arg(long, default_value_t = 100)]
    pub verdicts: usize,
    /// reaction: pause after each verdict-to-map sample of the headline
    /// (isolated) runs, ms; the burst runs use 20 ms.
    #[arg(long, default_value_t = 100)]
    pub verdict_gap_ms: u64,
    /// reaction: time limit of the whole benchmark (e.g. 20m).
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub time_limit: Duration,
    /// reaction: ports each scan probes (nmap -p). With the default scan rate,
    /// every port keeps the scan running for ~6.5 s, well past its block; the
    /// demo's 1-1000 at full speed is over in ~0.1 s on the testbed, before any
    /// block, and leaves no packet to drop.
    #[arg(long, default_value = "1-65535", value_parser = parse_ports)]
    pub scan_ports: String,
    /// reaction: nmap --max-rate, probes per second (0 = no cap: nmap -T4 then
    /// sends ~90,000/s on veth and all 65,535 ports take ~0.7 s).
    #[arg(long, default_value_t = 10_000)]
    pub scan_rate: u32,
    /// reaction: skip the Debian package check and the release build.
    #[arg(long)]
    pub no_build: bool,
}

/// Checks an nmap port list (`1-1000`, `22,80,1000-2000`): digits, `,` and `-` only.
fn parse_ports(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a port list like 1-1000 or 22,80,443 (ports 1-65535)"
        ))
    }
}

/// Attacker source of scan round `i` (0-based) of a set: 192.0.2.150 + i
/// (answered), 192.0.2.175 + i (unanswered). Errors for `i >= MAX_ROUNDS`,
/// which would reuse the other set's sources or leave the block kept free of
/// testbed hosts.
pub fn round_source(kind: scan::Kind, i: usize) -> anyhow::Result<Ipv4Addr> {
    ensure!(
        i < MAX_ROUNDS,
        "scan round {i}: only {MAX_ROUNDS} fresh source addresses per set (192.0.2.150-199 for both); use --rounds {MAX_ROUNDS} or fewer"
    );
    let set = match kind {
        scan::Kind::Answered => 0,
        scan::Kind::Unanswered => MAX_ROUNDS as u8,
    };
    Ok(Ipv4Addr::new(192, 0, 2, SOURCE_FIRST + set + i as u8))
}

/// Target of unanswered round `i` (0-based): the absent host 198.19.254.10 + i,
/// in [`testbed::EMPTY_SPACE`]. Errors for `i >= MAX_ROUNDS`.
pub fn unanswered_target(i: usize) -> anyhow::Result<Ipv4Addr> {
    ensure!(i < MAX_ROUNDS, "unanswered round {i}: at most {MAX_ROUNDS}");
    Ok(Ipv4Addr::from(u32::from(UNANSWERED_FIRST) + i as u32))
}

/// Target of verdict `i` (0-based): 198.19.200.1 + i, inside 198.18.0.0/15.
pub fn verdict_target(i: usize) -> anyhow::Result<Ipv4Addr> {
    ensure!(
        (i as u64) < VERDICT_TARGETS as u64,
        "verdict {i}: at most {VERDICT_TARGETS} distinct targets"
    );
    Ok(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(198, 19, 200, 1)) + i as u32,
    ))
}

/// Nearest-rank percentile: the ⌈p·n/100⌉-th smallest of the n `values`
/// (p in (0, 100]); `None` for no values or p out of range. NaNs sort last.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64 / 100.0).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Median (the mean of the two middle values for an even count); `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// n, min, max, mean, p50, p90, p99 of `values` (ms), rounded to µs.
fn summary(values: &[f64]) -> Value {
    let r = |x: Option<f64>| x.map(|v| (v * 1000.0).round() / 1000.0);
    let mean = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    json!({
        "n": values.len(),
        "min": r(values.iter().copied().reduce(f64::min)),
        "max": r(values.iter().copied().reduce(f64::max)),
        "mean": r(mean),
        "p50": r(percentile(values, 50.0)),
        "p90": r(percentile(values, 90.0)),
        "p99": r(percentile(values, 99.0)),
    })
}

/// Now on CLOCK_MONOTONIC, ns: the clock of `bpf_ktime_get_ns` and of
/// [`BlockEntry::expires_ns`].
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the valid timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Unix time now, ns (CLOCK_REALTIME).
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// Reads single-address (/32) blocklist entries of a loaded instance through
/// fw-ctl's own pinned-map code ([`fw_ctl::kernel::Pinned`], which knows the map
/// layout: the exact-match host map, then the LPM trie for entries an older
/// version left there). The host map is also where the XDP program puts its
/// provisional quarantine (origin `ORIGIN_DATAPATH`, flag
/// `BLOCK_FLAG_NEW_FLOWS_ONLY`), so those are read like any other block.
pub struct BlockReader(Pinned);

impl BlockReader {
    /// Opens the maps pinned for `instance` (`/sys/fs/bpf/<instance>/maps/`).
    ///
    /// # Errors
    /// The instance is not loaded or a map cannot be opened.
    pub fn open(instance: &str) -> anyhow::Result<BlockReader> {
        let dir = PinDir::new(instance)?;
        Ok(BlockReader(Pinned::open(&dir).with_context(|| {
            format!("opening the pinned maps of {instance}")
        })?))
    }

    /// Flows in the flow map with `a` at either end. A scan probe that passes the
    /// XDP program opens a flow of its own (a new destination port); one it drops
    /// opens none, so right after a scan this is the number of its probes that
    /// passed.
    ///
    /// # Errors
    /// A map read failing.
    pub fn flows_of(&self, a: Ipv4Addr) -> anyhow::Result<u64> {
        let m = fw_common::flow::v4_mapped(a.octets());
        Ok(self
            .0
            .flows()?
            .iter()
            .filter(|f| f.key.addr_a == m || f.key.addr_b == m)
            .count() as u64)
    }

    /// The entry blocking exactly `a`/32, if any is in force: an entry whose
    /// expiry (`expires_ns`, CLOCK_MONOTONIC) has passed counts as absent, as it
    /// does for the XDP program.
    ///
    /// # Errors
    /// A map read failing.
    pub fn get(&self, a: Ipv4Addr) -> anyhow::Result<Option<BlockEntry>> {
        Ok(self
            .0
            .get_block(&IpNet::from(IpAddr::V4(a)))?
            .filter(|e| e.active_at(monotonic_ns)))
    }
}

pub fn run(out: &Path, a: &ReactionArgs) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    ensure!(
        crate::util::is_root(),
        "the reaction benchmark creates namespaces and loads XDP: run as root"
    );
    ensure!(
        (1..=MAX_ROUNDS).contains(&a.rounds),
        "--rounds must be 1..={MAX_ROUNDS} (one fresh source address per round), got {}",
        a.rounds
    );
    ensure!(
        (1..=VERDICT_TARGETS as usize / (2 * VERDICT_RUNS)).contains(&a.verdicts),
        "--verdicts must be 1..={}, got {}",
        VERDICT_TARGETS as usize / (2 * VERDICT_RUNS),
        a.verdicts
    );
    let t0 = Instant::now();
    let deadline = t0 + a.time_limit;
    if !a.no_build {
        crate::setup::ensure_apt_packages(&["mosquitto", "nmap", "tcpdump", "iproute2"])?;
        crate::build::run()?;
    }
    let load_before = loadavg();
    let _ = testbed::down();
    let tb = Testbed::up(DEVICES)?;
    let dir = testbed::run_dir("reaction")?;
    let stack = Stack::start_with_detectors(
        &StackOptions {
            dir: dir.clone(),
            dashboard: false,
            xdp_mode: "native".into(),
            devices: 0,
        },
        &[BENCH_DETECTOR_ID],
    )?;
    let reader = BlockReader::open(stack::INSTANCE)?;

    eprintln!(
        "reaction: verdict to map, {VERDICT_RUNS} runs x {} verdicts",
        a.verdicts
    );
    let verdicts = verdict::phase(
        &stack,
        "isolated",
        a.verdicts,
        Duration::from_millis(a.verdict_gap_ms),
        0,
        deadline,
        a.time_limit,
    )?;
    let burst = verdict::phase(
        &stack,
        "burst",
        a.verdicts,
        BURST_GAP,
        VERDICT_RUNS * a.verdicts,
        deadline,
        a.time_limit,
    )?;
    eprintln!(
        "reaction: scan to drop, {} answered and {} unanswered rounds",
        a.rounds, a.rounds
    );
    let mut rounds = Vec::new();
    for i in 0..a.rounds {
        for kind in [scan::Kind::Answered, scan::Kind::Unanswered] {
            check_deadline(deadline, a.time_limit)?;
            let r = scan::round(&stack, &reader, kind, i, a, deadline)
                .with_context(|| format!("{} scan round {}", kind.as_str(), i + 1))?;
            eprintln!(
                "reaction: {:<10} round {:>2}: {} -> {}: scan to block {} ms ({}), to drop {} ms, probes before the block {}",
                kind.as_str(),
                i + 1,
                r.source,
                r.target,
                fmt_opt(r.scan_to_block_ms),
                r.block_origin.unwrap_or("-"),
                fmt_opt(r.scan_to_drop_ms),
                r.probes_before_block
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            rounds.push(r);
            netns::sleep(Duration::from_secs(2))?;
        }
    }
    let load_after = loadavg();
    drop(reader);
    drop(stack);
    drop(tb);

    let doc = report::report(
        a,
        &verdicts,
        &burst,
        &rounds,
        load_before,
        load_after,
        t0.elapsed(),
    );
    std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    report::print_table(&doc);
    println!("wrote {}", out.display());
    Ok(())
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn check_deadline(deadline: Instant, limit: Duration) -> anyhow::Result<()> {
    netns::check_interrupt()?;
    if Instant::now() > deadline {
        bail!("time limit {limit:?} exceeded (--time-limit)");
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Sets the calling thread's nice value (best effort; Linux: per thread).
fn set_thread_nice(n: i32) {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, n);
    }
}

/// Runs `fw-ctl ARGS` on the router against the stack's instance.
fn run_fw_ctl(stack: &Stack, args: &[&str]) -> anyhow::Result<String> {
    netns::run_quiet(
        in_ns_bin(testbed::NS_ROUTER, "fw-ctl")
            .args(["--instance", stack::INSTANCE, "--config"])
            .arg(stack.dir.join("gateway.toml"))
            .args(args),
    )
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv4Net;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.5), Some(1.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&twenty, 50.0), Some(10.0));
        assert_eq!(percentile(&twenty, 99.0), Some(20.0), "p99 of 20 = max");
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 0.0), None);
        assert_eq!(percentile(&v, 101.0), None);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn scan_sources_stay_in_the_lan_and_off_testbed_hosts() {
        let mut used: Vec<Ipv4Addr> = vec![
            testbed::ROUTER_LAN,
            testbed::REPLAY_HOST,
            Ipv4Addr::new(192, 0, 2, 0),
            Ipv4Addr::new(192, 0, 2, 255),
        ];
        used.extend((1..=testbed::MAX_DEVICES).map(testbed::device_addr));
        used.extend((0..testbed::ATTACKER_ADDRS).map(testbed::attacker_addr));
        let lan = Ipv4Net::new(Ipv4Addr::new(192, 0, 2, 0), 24).unwrap();
        let all: Vec<Ipv4Addr> = [scan::Kind::Answered, scan::Kind::Unanswered]
            .into_iter()
            .flat_map(|k| (0..MAX_ROUNDS).map(move |i| round_source(k, i).unwrap()))
            .collect();
        for a in &all {
            assert!(lan.contains(a), "{a} is outside 192.0.2.0/24");
            assert!(!used.contains(a), "{a} is a testbed host's address");
        }
        let mut uniq = all.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            2 * MAX_ROUNDS,
            "every round of both sets gets its own source"
        );
        assert!(round_source(scan::Kind::Answered, MAX_ROUNDS).is_err());
        assert!(round_source(scan::Kind::Unanswered, MAX_ROUNDS).is_err());
    }

    #[test]
    fn unanswered_targets_are_absent_hosts_of_the_empty_space() {
        let empty: Ipv4Net = testbed::EMPTY_SPACE.parse().unwrap();
        let mut hosts: Vec<Ipv4Addr> = vec![testbed::ROUTER_LAN, testbed::REPLAY_HOST];
        hosts.extend((1..=testbed::MAX_DEVICES).map(testbed::device_addr));
        let all: Vec<Ipv4Addr> = (0..MAX_ROUNDS)
            .map(|i| unanswered_target(i).unwrap())
            .collect();
        for t in &all {
            assert!(empty.contains(t), "{t} is outside {}", testbed::EMPTY_SPACE);
            assert!(!hosts.contains(t), "{t} is a testbed host");
            assert_ne!(*t, empty.network(), "{t} is the network address");
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]), "distinct targets");
        assert!(unanswered_target(MAX_ROUNDS).is_err());
    }

    #[test]
    fn verdict_targets_are_distinct_and_in_the_benchmark_range() {
        let range = Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15).unwrap();
        let n = VERDICT_TARGETS as usize;
        let all: Vec<Ipv4Addr> = (0..n).map(|i| verdict_target(i).unwrap()).collect();
        assert!(all.iter().all(|a| range.contains(a)));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(verdict_target(n).is_err());
    }

    #[test]
    fn port_lists_are_checked() {
        for ok in ["1-65535", "1-1000", "22,80,443", "22,1000-2000"] {
            assert_eq!(parse_ports(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "0-10", "1-70000", "22;rm", "-p 1", "a-b", "1,,2"] {
            assert!(parse_ports(bad).is_err(), "{bad:?} accepted");
        }
    }
}
