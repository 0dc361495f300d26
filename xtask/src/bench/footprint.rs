//! `cargo xtask bench footprint`: resident memory and CPU of the gateway daemon
//! (`fw-ctl run`), the detector and the dashboard while the XDP program sees 1,000
//! and then 10,000 active flows ([`run`]). Runs as root on the bed of
//! [`super::flows`] (shared with the `pipeline` benchmark); never part of the tests.
//!
//! # Method
//! - Two network namespaces of our own, `tadfp-gw-<pid>` and `tadfp-gen-<pid>`,
//!   joined by a veth (`fplan` / `fpgen`, 198.18.0.0/15, no route out). The XDP
//!   program is loaded on `fplan` (generic/skb mode, observe mode so nothing is
//!   dropped) under the private instance `tadfp-<pid>`.
//! - A real Mosquitto with mutual TLS and the project's ACL (certificates and
//!   config from [`crate::certs`]) on 127.0.0.1:8883 inside the gateway namespace;
//!   the release binaries `fw-ctl run`, `detector run` and `dashboard serve`, each
//!   with its own TOML config, connect to it. On the cluster they live on three
//!   nodes; here they share one namespace, which changes neither their memory nor
//!   their CPU time.
//! - Traffic: a thread of this process, inside the generator namespace, sends
//!   64-byte UDP datagrams from 100 source addresses to `FLOWS / 100` destination
//!   ports each, every flow once per second, so exactly `FLOWS` distinct flows stay
//!   active (idle timeout 10 s). The daemon runs with `poll_interval_ms = 1000` and
//!   `active_timeout_s = 5`, so every flow is exported about every 5 s: at 10k flows
//!   about 2,000 flow records/s reach the detector and the dashboard, and all three
//!   programs work in steady state.
//! - Per flow count: [`WARMUP`] of traffic, then a [`WINDOW`] in which each
//!   process's `/proc/<pid>/stat` utime + stime (CPU seconds; `cpu_pct` = their
//!   increase over the window in % of one core) and `/proc/<pid>/status` VmRSS
//!   (sampled each second; `rss_mib` = the largest sample, MiB) are read. The 10k
//!   step follows the 1k step with the same processes.
//! - Flows in the kernel map (`fw-ctl status`) and records exported per second
//!   (the daemon's status file) are recorded to show the load was what it claims.
//!
//! JSON: `rss_mib` and `cpu_pct`, each keyed `<component>_<1k|10k>` with components
//! `fw_ctl`, `detector`, `dashboard` (and `mosquitto`, for reference); plus
//! `flows_in_map`, `records_per_s` keyed `1k` / `10k`, and `skipped` (components
//! whose release binary could not be built). Everything started is stopped by PID,
//! the pins removed and the namespaces deleted on every exit path.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use super::flows::{Bed, Traffic, build_bin, cpu_s, exported, round2, rss_mib, write_json};
use crate::{
    testbed::{
        daemons::{in_ns_bin, wait_tcp},
        netns,
        nodes::{self, DASHBOARD_ID, DETECTOR_ID, GATEWAY_ID},
    },
    util,
};

/// Flow counts measured, with their JSON suffix.
const STEPS: [(&str, u32); 2] = [("1k", 1_000), ("10k", 10_000)];
/// Traffic before the measuring window (flows created, first exports done).
const WARMUP: Duration = Duration::from_secs(12);
/// Measuring window.
const WINDOW: Duration = Duration::from_secs(10);
/// The dashboard's HTTP port (127.0.0.1 in the gateway namespace).
const DASHBOARD_PORT: u16 = 18_080;

/// Runs the benchmark and writes its JSON to `json_out`.
///
/// # Errors
/// Not root, fw-ctl not building, or any step of the bed or the measurement
/// failing (everything started is removed).
pub fn run(json_out: &Path) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    anyhow::ensure!(
        util::is_root(),
        "footprint loads an XDP program and creates namespaces: run as root"
    );
    anyhow::ensure!(
        build_bin("footprint", "fw-ctl"),
        "fw-ctl must build for this benchmark"
    );
    let mut skipped = Vec::new();
    let with_detector = build_bin("footprint", "detector");
    let with_dashboard = build_bin("footprint", "dashboard");
    if !with_detector {
        skipped.push("detector");
    }
    if !with_dashboard {
        skipped.push("dashboard");
    }

    let mut bed = Bed::up("footprint", "fp", &[GATEWAY_ID, DETECTOR_ID, DASHBOARD_ID])?;

    // Gateway: load the XDP program, start the daemon. Every flow is exported about
    // every 5 s (see the module docs).
    let mut gw = bed.gateway()?;
    gw.export.poll_interval_ms = 1000;
    gw.export.idle_timeout_s = 10.0;
    gw.export.active_timeout_s = 5.0;
    let gw_conf = bed.load_xdp(&gw)?;
    bed.spawn_fw_ctl(&gw_conf)?;
    if with_detector {
        bed.spawn_detector()?;
    }
    if with_dashboard {
        let c = bed.dir.join("dashboard.toml");
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DASHBOARD_PORT);
        nodes::write(
            &c,
            &nodes::dashboard(&bed.dir, listen, "tad-footprint", &bed.bus()),
        )?;
        let mut cmd = in_ns_bin(&bed.gw, "dashboard");
        cmd.args(["serve", "--config"]).arg(&c);
        bed.daemons.spawn("dashboard", "dashboard", &mut cmd)?;
        wait_tcp(&bed.gw, listen, Duration::from_secs(20), "dashboard")?;
    }
    netns::sleep(Duration::from_secs(2))?;
    bed.daemons.check_alive()?;
    eprintln!(
        "footprint: mosquitto, fw-ctl daemon{}{} running in {}",
        if with_detector { ", detector" } else { "" },
        if with_dashboard { ", dashboard" } else { "" },
        bed.gw
    );

    let mut rss: BTreeMap<String, f64> = BTreeMap::new();
    let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
    let mut flows_in_map: BTreeMap<&str, u64> = BTreeMap::new();
    let mut records_per_s: BTreeMap<&str, f64> = BTreeMap::new();
    let status_file = bed.dir.join("fw-status.json");
    for (label, flows) in STEPS {
        eprintln!("footprint: {flows} flows: {WARMUP:?} warm-up, {WINDOW:?} window...");
        let mut traffic = Traffic::start(&bed.gen_ns, flows)?;
        netns::sleep(WARMUP)?;
        bed.daemons.check_alive()?;
        let pids = bed.daemons.pids();
        let cpu0: Vec<f64> = pids
            .iter()
            .map(|(_, p)| cpu_s(*p))
            .collect::<Result<_, _>>()?;
        let rec0 = exported(&status_file);
        let t0 = Instant::now();
        let mut peak = vec![0f64; pids.len()];
        while t0.elapsed() < WINDOW {
            for (i, (_, p)) in pids.iter().enumerate() {
                peak[i] = peak[i].max(rss_mib(*p)?);
            }
            netns::sleep(Duration::from_secs(1))?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu1: Vec<f64> = pids
            .iter()
            .map(|(_, p)| cpu_s(*p))
            .collect::<Result<_, _>>()?;
        for (i, (_, p)) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_mib(*p)?);
        }
        let rec1 = exported(&status_file);
        let in_map = bed.map_flows();
        let sent = traffic.stop();
        for (i, (name, _)) in pids.iter().enumerate() {
            let key = format!("{name}_{label}");
            rss.insert(key.clone(), round2(peak[i]));
            cpu.insert(key, round2((cpu1[i] - cpu0[i]) / secs * 100.0));
        }
        if let Some(n) = in_map {
            flows_in_map.insert(label, n);
        }
        if let (Some(a), Some(b)) = (rec0, rec1) {
            records_per_s.insert(label, round2((b - a) as f64 / secs));
        }
        eprintln!(
            "footprint: {flows} flows: {sent} datagrams sent, {} flows in the map",
            in_map.map_or("?".into(), |n| n.to_string())
        );
    }
    bed.daemons.check_alive()?;

    println!(
        "{:<10} {:>12} {:>10} {:>12} {:>10}",
        "component", "RSS 1k MiB", "CPU 1k %", "RSS 10k MiB", "CPU 10k %"
    );
    for (name, _) in &bed.daemons.pids() {
        let g = |m: &BTreeMap<String, f64>, l: &str| {
            m.get(&format!("{name}_{l}"))
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        println!(
            "{:<10} {:>12} {:>10} {:>12} {:>10}",
            name,
            g(&rss, "1k"),
            g(&cpu, "1k"),
            g(&rss, "10k"),
            g(&cpu, "10k")
        );
    }
    println!("flows in the map: {flows_in_map:?}; records exported/s: {records_per_s:?}");
    let j = serde_json::json!({
        "bench": "footprint",
        "window_s": WINDOW.as_secs(),
        "warmup_s": WARMUP.as_secs(),
        "rss_mib": rss,
        "cpu_pct": cpu,
        "flows_in_map": flows_in_map,
        "records_per_s": records_per_s,
        "skipped": skipped,
    });
    write_json(json_out, &j)?;
    eprintln!("footprint: wrote {}", json_out.display());
    drop(bed);
    Ok(())
}
