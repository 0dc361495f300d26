//! `cargo xtask bench footprint`: resident memory and CPU of the gateway daemon
//! (`fw-ctl run`), the detector and the dashboard while the XDP program sees 1,000
//! and then 10,000 active flows ([`run`]); and `cargo xtask bench pipeline`: flow
//! records per second from the gateway to the detector over MQTT/TLS
//! ([`run_pipeline`], which shares this module's namespaces and processes). Both run
//! as root; never part of the tests.
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
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    testbed::{
        netns::{self, Proc, in_ns},
        stack::{
            BROKER_PORT, DASHBOARD_ID as DASH_ID, DETECTOR_ID as DET_ID, GATEWAY_ID as GW_ID,
            RECORDER_ID as REC_ID, bus_lines,
        },
    },
    util,
};

/// Flow counts measured, with their JSON suffix.
const STEPS: [(&str, u32); 2] = [("1k", 1_000), ("10k", 10_000)];
/// Traffic before the measuring window (flows created, first exports done).
const WARMUP: Duration = Duration::from_secs(12);
/// Measuring window.
const WINDOW: Duration = Duration::from_secs(10);
/// Source addresses of the generator.
const SOURCES: u32 = 100;
/// First destination port of the generated flows.
const BASE_PORT: u16 = 20_000;
const DASHBOARD_PORT: u16 = 18_080;
/// Gateway address on the veth.
const GW_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Export settings of the footprint run (see the module docs).
const FOOTPRINT_EXPORT: &str = "[export]
poll_interval_ms = 1000
idle_timeout_s = 10.0
active_timeout_s = 5.0
";

/// Generator source address `i` (198.18.1.1 + i).
fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 1)) + i)
}

/// Namespaces, pins and the run directory, removed when dropped (after the
/// processes, which [`Procs`] stops first).
struct Bed {
    gw: String,
    gen_ns: String,
    instance: String,
    dir: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let fw = util::workspace_root().join("target/release/fw-ctl");
        if fw.exists() && netns::ns_exists(&self.gw) {
            let _ = netns::run_quiet(in_ns(&self.gw, &fw).args([
                "--instance",
                &self.instance,
                "unload",
            ]));
        }
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.instance));
        for ns in [&self.gw, &self.gen_ns] {
            if netns::ns_exists(ns) {
                let _ = netns::ip(&["netns", "del", ns]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The started daemons, stopped in reverse order when dropped.
#[derive(Default)]
struct Procs(Vec<(String, Proc)>);

impl Drop for Procs {
    fn drop(&mut self) {
        while let Some((_, mut p)) = self.0.pop() {
            p.stop();
        }
    }
}

/// The traffic thread; stops when dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<u64>>>,
}

impl Traffic {
    /// Keeps `flows` UDP flows active from namespace `ns`: each flow once per second.
    fn start(ns: &str, flows: u32) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.to_string();
        let st = stop.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<u64> {
            let setup = || -> anyhow::Result<Vec<UdpSocket>> {
                netns::enter_thread(&ns)?;
                (0..SOURCES)
                    .map(|i| {
                        UdpSocket::bind(SocketAddr::new(IpAddr::V4(source(i)), 0))
                            .with_context(|| format!("binding a UDP socket on {}", source(i)))
                    })
                    .collect()
            };
            let socks = match setup() {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(0);
                }
            };
            let per_source = flows / SOURCES;
            let payload = [0x5au8; 36]; // 20 IP + 8 UDP + 36 = 64-byte IP packet
            let ticks = 100u32; // per second
            let started = Instant::now();
            let mut sent = 0u64;
            let mut i = 0u32;
            let mut tick = 0u64;
            while !st.load(Ordering::Relaxed) {
                // One tick: 1/100 of the flows, then wait for the next 10 ms mark.
                for _ in 0..flows.div_ceil(ticks) {
                    let (s, p) = (i % SOURCES, i / SOURCES);
                    let dst = SocketAddr::new(IpAddr::V4(GW_ADDR), BASE_PORT + p as u16);
                    if socks[s as usize].send_to(&payload, dst).is_ok() {
                        sent += 1;
                    }
                    i = (i + 1) % (per_source * SOURCES);
                }
                tick += 1;
                let next = started + Duration::from_millis(tick * 10);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            Ok(sent)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("traffic thread did not start")??;
        Ok(Traffic {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it; returns datagrams sent.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(n))) => n,
            _ => 0,
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds (utime + stime) of `pid`.
fn cpu_s(pid: i32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name (which may hold spaces): state is field 3,
    // utime 14, stime 15 (proc(5)).
    let rest = s.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) as f64 / hz)
}

/// VmRSS of `pid`, MiB.
fn rss_mib(pid: i32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Waits until something listens on `addr` inside `ns`.
fn wait_tcp(ns: &str, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> anyhow::Result<()> {
        netns::enter_thread(&ns)?;
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
            if Instant::now() > end {
                bail!("nothing listens on {addr} after 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    .with_context(|| format!("{what} did not come up"))
}

/// Builds the release binary of `pkg`; false (with the reason printed) when it
/// does not build.
fn build(pkg: &str) -> bool {
    match util::cargo(&["build", "--release", "-p", pkg]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("footprint: {pkg} does not build ({e:#}); it is skipped");
            false
        }
    }
}

/// Namespaces, veth and addresses of `bed`, certificates for `nodes` and the
/// broker (started into `procs`); returns the certificate directory.
fn bring_up(bed: &Bed, procs: &mut Procs, nodes: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = &bed.dir;
    std::fs::create_dir_all(dir)?;
    // Namespaces and the veth.
    for ns in [&bed.gw, &bed.gen_ns] {
        netns::ip(&["netns", "add", ns])?;
        netns::ip_in(ns, &["link", "set", "lo", "up"])?;
    }
    netns::ip_in(
        &bed.gw,
        &[
            "link",
            "add",
            "fplan",
            "type",
            "veth",
            "peer",
            "name",
            "fpgen",
            "netns",
            &bed.gen_ns,
        ],
    )?;
    netns::ip_in(
        &bed.gw,
        &["addr", "add", &format!("{GW_ADDR}/15"), "dev", "fplan"],
    )?;
    netns::ip_in(&bed.gw, &["link", "set", "fplan", "up"])?;
    for i in 0..SOURCES {
        netns::ip_in(
            &bed.gen_ns,
            &["addr", "add", &format!("{}/15", source(i)), "dev", "fpgen"],
        )?;
    }
    netns::ip_in(&bed.gen_ns, &["link", "set", "fpgen", "up"])?;

    // Certificates, broker.
    let certs = dir.join("certs");
    crate::certs::run(&crate::certs::CertsArgs {
        out: certs.clone(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        broker_names: Vec::new(),
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), BROKER_PORT),
        broker_user: Some("root".into()),
        days: 2,
        new_ca: false,
    })
    .context("making certificates")?;
    spawn(
        procs,
        dir,
        "mosquitto",
        in_ns(&bed.gw, "mosquitto")
            .arg("-c")
            .arg(certs.join("mosquitto/mosquitto.conf")),
    )?;
    wait_tcp(
        &bed.gw,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), BROKER_PORT),
        "mosquitto",
    )?;

    Ok(certs)
}

/// Starts `cmd` as `name` (log `<dir>/<name>.log`) into `procs`.
fn spawn(procs: &mut Procs, dir: &Path, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let p = Proc::spawn(name, cmd, Some(&dir.join(format!("{name}.log"))))?;
    procs.0.push((name.to_string(), p));
    Ok(())
}

/// `fw-ctl load` of the instance of `bed` on `fplan` (skb mode, observe).
fn load_xdp(bed: &Bed, gw_conf: &Path) -> anyhow::Result<()> {
    let fw = util::workspace_root().join("target/release/fw-ctl");
    netns::run_quiet(
        in_ns(&bed.gw, fw)
            .args(["--instance", &bed.instance, "--config"])
            .arg(gw_conf)
            .args(["load", "--iface", "fplan", "--mode", "skb", "--observe"]),
    )
    .context("fw-ctl load")?;
    Ok(())
}

/// Runs the benchmark and writes its JSON to `json_out`.
pub fn run(json_out: &Path) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    anyhow::ensure!(
        util::is_root(),
        "footprint loads an XDP program and creates namespaces: run as root"
    );
    let root = util::workspace_root();
    let bin = |n: &str| root.join("target/release").join(n);
    anyhow::ensure!(build("fw-ctl"), "fw-ctl must build for this benchmark");
    let mut skipped = Vec::new();
    let with_detector = build("detector");
    let with_dashboard = build("dashboard");
    if !with_detector {
        skipped.push("detector");
    }
    if !with_dashboard {
        skipped.push("dashboard");
    }

    let me = std::process::id();
    let bed = Bed {
        gw: format!("tadfp-gw-{me}"),
        gen_ns: format!("tadfp-gen-{me}"),
        instance: format!("tadfp-{me}"),
        dir: std::env::temp_dir().join(format!("tad-footprint-{me}")),
    };
    let mut procs = Procs::default();
    let dir = &bed.dir;

    let certs = bring_up(&bed, &mut procs, &[GW_ID, DET_ID, DASH_ID])?;
    let mut spawn =
        |name: &str, cmd: &mut Command| -> anyhow::Result<()> { spawn(&mut procs, dir, name, cmd) };

    // Gateway: load the XDP program, start the daemon.
    let gw_conf = dir.join("gateway.toml");
    std::fs::write(
        &gw_conf,
        gateway_toml(dir, &certs, &bed.instance, FOOTPRINT_EXPORT),
    )?;
    load_xdp(&bed, &gw_conf)?;
    spawn(
        "fw_ctl",
        in_ns(&bed.gw, bin("fw-ctl"))
            .args(["--instance", &bed.instance, "run", "--config"])
            .arg(&gw_conf),
    )?;
    if with_detector {
        let c = dir.join("detector.toml");
        std::fs::write(&c, detector_toml(&certs, &root))?;
        spawn(
            "detector",
            in_ns(&bed.gw, bin("detector"))
                .args(["run", "--config"])
                .arg(&c),
        )?;
    }
    if with_dashboard {
        let c = dir.join("dashboard.toml");
        std::fs::write(&c, dashboard_toml(dir, &certs))?;
        spawn(
            "dashboard",
            in_ns(&bed.gw, bin("dashboard"))
                .args(["serve", "--config"])
                .arg(&c),
        )?;
        wait_tcp(
            &bed.gw,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DASHBOARD_PORT),
            "dashboard",
        )?;
    }
    netns::sleep(Duration::from_secs(2))?;
    check_alive(&mut procs, dir)?;
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
    let status_file = dir.join("fw-status.json");
    for (label, flows) in STEPS {
        eprintln!("footprint: {flows} flows: {WARMUP:?} warm-up, {WINDOW:?} window...");
        let mut traffic = Traffic::start(&bed.gen_ns, flows)?;
        netns::sleep(WARMUP)?;
        check_alive(&mut procs, dir)?;
        let pids: Vec<(String, i32)> = procs.0.iter().map(|(n, p)| (n.clone(), p.pid())).collect();
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
        let in_map = map_flows(&bed, &bin("fw-ctl"));
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
    check_alive(&mut procs, dir)?;

    println!(
        "{:<10} {:>12} {:>10} {:>12} {:>10}",
        "component", "RSS 1k MiB", "CPU 1k %", "RSS 10k MiB", "CPU 10k %"
    );
    for (name, _) in &procs.0 {
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
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_string_pretty(&j)?)
        .with_context(|| format!("writing {}", json_out.display()))?;
    eprintln!("footprint: wrote {}", json_out.display());
    drop(procs);
    drop(bed);
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Fails naming the first daemon that exited, with the end of its log.
fn check_alive(procs: &mut Procs, dir: &Path) -> anyhow::Result<()> {
    for (name, p) in &mut procs.0 {
        if let Some(st) = p.exited() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            bail!(
                "{name} exited ({st}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(())
}

/// Records exported so far, from the daemon's status file.
fn exported(status: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(status).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v["records_exported_total"].as_u64()
}

/// Entries in the flow map, from `fw-ctl --json status`.
fn map_flows(bed: &Bed, fw: &Path) -> Option<u64> {
    let out = netns::run_quiet(in_ns(&bed.gw, fw).args([
        "--instance",
        &bed.instance,
        "--json",
        "status",
    ]))
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["maps"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == "FLOWS")?["entries"]
        .as_u64()
}

fn gateway_toml(dir: &Path, certs: &Path, instance: &str, export: &str) -> String {
    format!(
        r#"# Written by cargo xtask bench footprint.
gateway_id = "{GW_ID}"
instance = "{instance}"
interfaces = ["fplan"]
xdp_mode = "skb"
mode = "observe"
state_file = "{dir}/fw-state.json"
status_file = "{dir}/fw-status.json"
management = []
allow = []
allow_own_addresses = false
bus_enabled = true

{export}

[trust]
detectors = ["{DET_ID}"]
dashboards = ["{DASH_ID}"]

[bus]
{bus}"#,
        dir = dir.display(),
        bus = bus_lines("127.0.0.1", certs, GW_ID),
    )
}

fn detector_toml(certs: &Path, root: &Path) -> String {
    format!(
        r#"# Written by cargo xtask bench footprint.
[detector]
id = "{DET_ID}"
mode = "observe"

[bus]
{bus}
[ml]
model = "{root}/detector/model/model.onnx"
"#,
        bus = bus_lines("127.0.0.1", certs, DET_ID),
        root = root.display(),
    )
}

fn dashboard_toml(dir: &Path, certs: &Path) -> String {
    format!(
        r#"# Written by cargo xtask bench footprint.
[server]
listen = "127.0.0.1:{DASHBOARD_PORT}"
api_token = "tad-footprint"

[storage]
db_path = "{dir}/dashboard.sqlite"
audit_log = "{dir}/audit.jsonl"

[api]
gateways = ["{GW_ID}"]

[bus]
node_id = "{DASH_ID}"
{bus}"#,
        dir = dir.display(),
        bus = bus_lines("127.0.0.1", certs, DASH_ID),
    )
}

/// Flows per round of the `pipeline` run.
const PIPELINE_FLOWS: u32 = 100_000;
/// Rounds of the `pipeline` run (median reported).
const PIPELINE_ROUNDS: usize = 3;
/// Export settings of the pipeline run: flows are due 1 s after their packet.
const PIPELINE_EXPORT: &str = "[export]
poll_interval_ms = 250
idle_timeout_s = 1.0
active_timeout_s = 60.0
queue_capacity = 400000

[maps]
flows_max_entries = 262144
";

/// Sends one datagram on each of `flows` distinct flows from namespace `ns`
/// (100 sources x `flows / 100` ports), pausing 1 ms every 500 datagrams so the
/// veth backlog does not overflow; returns datagrams sent.
fn burst(ns: &str, flows: u32) -> anyhow::Result<u64> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> anyhow::Result<u64> {
        netns::enter_thread(&ns)?;
        let socks: Vec<UdpSocket> = (0..SOURCES)
            .map(|i| UdpSocket::bind(SocketAddr::new(IpAddr::V4(source(i)), 0)))
            .collect::<Result<_, _>>()
            .context("binding the generator's UDP sockets")?;
        let payload = [0x5au8; 36];
        let mut sent = 0u64;
        for i in 0..flows {
            let (s, p) = (i % SOURCES, i / SOURCES);
            let dst = SocketAddr::new(IpAddr::V4(GW_ADDR), BASE_PORT + p as u16);
            if socks[s as usize].send_to(&payload, dst).is_ok() {
                sent += 1;
            }
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(sent)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
}

/// Arrival time and size of every flow batch seen by the measuring subscriber.
type Arrivals = Arc<std::sync::Mutex<Vec<(Instant, usize)>>>;

/// Subscribes to every gateway's flow batches from namespace `ns` as [`REC_ID`];
/// returns once subscribed. Stops when `stop` is set.
fn start_recorder(
    ns: &str,
    certs: &Path,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut cfg = tad_bus::BusConfig::from_certs_dir(REC_ID, certs, "127.0.0.1", BROKER_PORT);
    cfg.subscription_capacity = 100_000;
    let ns = ns.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let h = std::thread::spawn(move || {
        let run = || -> anyhow::Result<()> {
            netns::enter_thread(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut b = tad_bus::BusClient::builder(cfg)?;
                let mut sub = b.subscribe::<tad_wire::FlowBatch>(
                    "tad/v1/gw/+/flows/+",
                    tad_bus::QoS::AtLeastOnce,
                );
                let bus = tokio::time::timeout(Duration::from_secs(15), b.connect())
                    .await
                    .context("connecting the measuring subscriber timed out")??;
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
                        Ok(Some(m)) => arrivals
                            .lock()
                            .expect("arrivals lock")
                            .push((Instant::now(), m.message.records.len())),
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                let _ = bus.shutdown(Duration::from_secs(1)).await;
                Ok::<(), anyhow::Error>(())
            })
        };
        if let Err(e) = run() {
            let _ = ready_tx.send(Err(e));
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r.context("measuring subscriber")?,
        Err(_) => bail!("the measuring subscriber did not connect within 20 s"),
    }
    Ok(h)
}

/// Records the detector says it processed: `detector run` prints its counters as
/// one JSON line on stderr when it stops (`{"batches": .., "engine": {"records": N,
/// ..}}`).
fn detector_records(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
        v["engine"]["records"].as_u64()
    })
}

/// `cargo xtask bench pipeline`: flow records per second end to end, gateway to
/// detector over MQTT/TLS. Runs as root; never part of the tests.
///
/// Method: same namespaces, broker and binaries as [`run`]. The XDP program is
/// loaded and the detector and a measuring subscriber (same flow-topic subscription
/// as the detector, dashboard role) connect. Each of [`PIPELINE_ROUNDS`] rounds then
/// sends [`PIPELINE_FLOWS`] distinct UDP flows (one datagram each) through the
/// program with no gateway daemon running, waits until the 1 s idle timeout has
/// passed for all of them, and starts `fw-ctl run`: its first poll finds every flow
/// due, and it exports, batches (500 records) and publishes them all; the daemon is
/// stopped once they have arrived. Per round, `records_per_s` = records received by
/// the subscriber after its first batch over the time from the first to the last
/// batch; `records_per_s_from_start` = all records over the time from the daemon's
/// start to the last batch (process start, TLS connection, the first poll interval
/// and the export pass included). Medians are reported. `detector_records` is what
/// the detector reports having processed when stopped: it must equal
/// `records_received_total` for the rate to hold gateway-to-detector.
pub fn run_pipeline(json_out: &Path) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    anyhow::ensure!(
        util::is_root(),
        "pipeline loads an XDP program and creates namespaces: run as root"
    );
    let root = util::workspace_root();
    let bin = |n: &str| root.join("target/release").join(n);
    anyhow::ensure!(build("fw-ctl"), "fw-ctl must build for this benchmark");
    anyhow::ensure!(
        build("detector"),
        "the detector must build for this benchmark"
    );
    let me = std::process::id();
    let bed = Bed {
        gw: format!("tadpl-gw-{me}"),
        gen_ns: format!("tadpl-gen-{me}"),
        instance: format!("tadpl-{me}"),
        dir: std::env::temp_dir().join(format!("tad-pipeline-{me}")),
    };
    let mut procs = Procs::default();
    let dir = &bed.dir;
    let certs = bring_up(&bed, &mut procs, &[GW_ID, DET_ID, REC_ID])?;
    let gw_conf = dir.join("gateway.toml");
    std::fs::write(
        &gw_conf,
        gateway_toml(dir, &certs, &bed.instance, PIPELINE_EXPORT),
    )?;
    load_xdp(&bed, &gw_conf)?;

    let c = dir.join("detector.toml");
    std::fs::write(&c, detector_toml(&certs, &root))?;
    spawn(
        &mut procs,
        dir,
        "detector",
        in_ns(&bed.gw, bin("detector"))
            .args(["run", "--config"])
            .arg(&c),
    )?;
    let arrivals: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the subscriber on every exit path.
    struct StopOnDrop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(h) = self.1.take() {
                let _ = h.join();
            }
        }
    }
    let mut rec_guard = StopOnDrop(stop.clone(), None);
    rec_guard.1 = Some(start_recorder(&bed.gw, &certs, arrivals.clone(), stop)?);
    netns::sleep(Duration::from_secs(2))?;
    check_alive(&mut procs, dir)?;

    let mut rates = Vec::new();
    let mut rates_from_start = Vec::new();
    let mut flows_total = 0u64;
    let mut received_total = 0usize;
    let mut dropped_total = 0u64;
    for round in 1..=PIPELINE_ROUNDS {
        // Flows first, with no daemon running; all idle 2 s later.
        let sent = burst(&bed.gen_ns, PIPELINE_FLOWS)?;
        netns::sleep(Duration::from_secs(2))?;
        let in_map = map_flows(&bed, &bin("fw-ctl")).context("reading the flow map fill")?;
        arrivals.lock().expect("arrivals lock").clear();
        let _ = std::fs::remove_file(dir.join("fw-status.json"));
        let started = Instant::now();
        spawn(
            &mut procs,
            dir,
            "fw_ctl",
            in_ns(&bed.gw, bin("fw-ctl"))
                .args(["--instance", &bed.instance, "run", "--config"])
                .arg(&gw_conf),
        )?;
        let limit = Duration::from_secs(120);
        let mut quiet_since = Instant::now();
        let mut last_total = 0usize;
        loop {
            netns::sleep(Duration::from_millis(100))?;
            let total: usize = arrivals
                .lock()
                .expect("arrivals lock")
                .iter()
                .map(|a| a.1)
                .sum();
            if total != last_total {
                last_total = total;
                quiet_since = Instant::now();
            }
            if total as u64 >= in_map {
                break;
            }
            // Nothing new for 5 s after records started: some were lost; report what came.
            if total > 0 && quiet_since.elapsed() > Duration::from_secs(5) {
                break;
            }
            if started.elapsed() > limit {
                check_alive(&mut procs, dir)?;
                bail!("only {total} of {in_map} records arrived within {limit:?}");
            }
        }
        // Stop the daemon (its status file holds the drop counter).
        netns::sleep(Duration::from_millis(1500))?;
        let dropped = std::fs::read_to_string(dir.join("fw-status.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s["records_dropped_total"].as_u64())
            .unwrap_or(0);
        if let Some(i) = procs.0.iter().position(|(n, _)| n == "fw_ctl") {
            let (_, mut p) = procs.0.remove(i);
            p.stop();
        }
        let a = arrivals.lock().expect("arrivals lock").clone();
        anyhow::ensure!(a.len() >= 2, "fewer than two flow batches arrived");
        let total: usize = a.iter().map(|x| x.1).sum();
        let span = a[a.len() - 1].0 - a[0].0;
        let rate = (total - a[0].1) as f64 / span.as_secs_f64();
        let from_start = total as f64 / (a[a.len() - 1].0 - started).as_secs_f64();
        eprintln!(
            "pipeline: round {round}: {sent} datagrams, {in_map} flows, {total} records in {} \
             batches: {rate:.0} records/s first to last batch, {from_start:.0} from daemon start, \
             {dropped} dropped at the gateway",
            a.len()
        );
        rates.push(rate);
        rates_from_start.push(from_start);
        flows_total += in_map;
        received_total += total;
        dropped_total += dropped;
    }
    // Let the detector finish, then stop it for its counters.
    netns::sleep(Duration::from_secs(2))?;
    drop(rec_guard);
    if let Some(i) = procs.0.iter().position(|(n, _)| n == "detector") {
        let (_, mut p) = procs.0.remove(i);
        p.stop();
    }
    let det_records = detector_records(&dir.join("detector.log"));
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (rate, from_start) = (median(rates.clone()), median(rates_from_start.clone()));
    println!(
        "pipeline: median of {PIPELINE_ROUNDS} rounds: {rate:.0} records/s first to last batch, \
         {from_start:.0} records/s from daemon start; records received {received_total} of \
         {flows_total} flows; detector processed {}; gateway dropped {dropped_total}",
        det_records.map_or("?".into(), |n| n.to_string()),
    );
    let j = serde_json::json!({
        "bench": "pipeline",
        "rounds": PIPELINE_ROUNDS,
        "flows_per_round": PIPELINE_FLOWS,
        "records_per_s": round2(rate),
        "records_per_s_from_start": round2(from_start),
        "records_per_s_rounds": rates.iter().map(|r| round2(*r)).collect::<Vec<_>>(),
        "flows_in_map_total": flows_total,
        "records_received_total": received_total,
        "detector_records": det_records,
        "gateway_records_dropped": dropped_total,
    });
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_string_pretty(&j)?)
        .with_context(|| format!("writing {}", json_out.display()))?;
    eprintln!("pipeline: wrote {}", json_out.display());
    drop(procs);
    drop(bed);
    Ok(())
}
