//! `cargo xtask demo [--ci]`: the whole system on the testbed against real attack
//! tools and real captures.
//!
//! 1. Setup if needed (Debian packages), release build, testbed up.
//! 2. Certificates, Mosquitto (TLS + ACL) on the monitor node, XDP + the fw-ctl
//!    daemon on the router, the detector, the dashboard (URL printed; it works
//!    from the root namespace over the 203.0.113.252/30 link).
//! 3. Benign IoT traffic from every device throughout ([`traffic`]).
//! 4. Attacks, one attacker address each (192.0.2.66..): nmap SYN, connect, UDP
//!    and FIN scans of a device (answered: RSTs, ICMP unreachables), masscan-style
//!    unanswered scans at 1,000 probes/s (SYN and UDP scans of an absent host, an
//!    ICMP echo sweep of an empty /24), an hping3 SYN flood, a spoofed SYN flood
//!    (`--rand-source`, [`flood`]: SYN authentication of the victim, which keeps
//!    serving a client, no source blocked, off after), repeated SSH and Telnet
//!    logins, then
//!    replays of the attack captures in ../shared/pcaps (each into its own slice
//!    of 198.18.0.0/15).
//! 5. A table: attack, attacker, detected at, blocked at, reaction time, attacker
//!    packets let through before the block, packets dropped since; and the benign
//!    hosts ever blocked (must be none). Then the device layer ([`devices`], with
//!    `--devices` 3 or more; the gateway runs a `[devices]` table for the testbed's
//!    simulated ESP32s): signed telemetry through the gateway's guard, a replayed
//!    message, a forged signature, an unenrolled device, out-of-range values, a
//!    command burst to a low-trust device, a device with telnet open; a table of
//!    what each was expected to and did cause, and sent = accepted + refused with
//!    the refusals exactly the attacks.
//! 6. Gateway-side actions ([`enforced`]): a `fw-ctl block` and a `fw-ctl feed
//!    load` on the router appear in the dashboard's blocklist within 2 s (latency
//!    printed), a 6 s-TTL block disappears, the gateway's `/health` and `/metrics`
//!    answer.
//! 7. Checks (`--ci` fails on any): every attacker blocked; no benign host ever
//!    blocked; five probe packets from each blocked source raise its XDP drop
//!    counter by five; every detected attack's alert is served by the dashboard
//!    API with its audit hash; the step 6 expectations; the gateway's blocklist
//!    and the dashboard's list for it are the same prefixes at the end; every
//!    verdict on the bus verified (signature by the detector it names).
//!
//! Without `--ci` the dashboard stays up (with benign traffic) until Ctrl-C.
//!
//! "Packets let through" for a tool attack is the attacker interface's transmit
//! count during the attack minus the packets its block dropped (ARP included:
//! an over-count of a few packets); for a replay it is exact (frames injected from
//! that source minus the block's drops).
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use crate::{
    eval::{Manifest, pcaps_dir},
    replay::{self, AddrMap, Macs, Timing},
    testbed::{
        self, Testbed,
        netns::{self, Proc, in_ns},
        stack::{Stack, StackOptions},
        traffic::{self, Traffic},
    },
};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Unattended: a short scenario under a time limit; exit non-zero when an
    /// expectation fails.
    #[arg(long)]
    ci: bool,
    /// Time limit of the whole run with --ci.
    #[arg(long, default_value = "900s", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// Number of IoT device hosts.
    #[arg(long, default_value_t = 3)]
    devices: u8,
    /// XDP attach mode on the router.
    #[arg(long, default_value = "native")]
    xdp_mode: String,
    /// Skip setup and the release build.
    #[arg(long)]
    no_build: bool,
    /// Leave out the capture replays.
    #[arg(long)]
    no_replays: bool,
    /// Run without the dashboard (and without its API check).
    #[arg(long)]
    no_dashboard: bool,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) mod devices;
mod enforced;
mod flood;
mod report;

/// What happened to one attack.
#[derive(Debug, Clone)]
struct Outcome {
    name: String,
    attacker: IpAddr,
    /// Shown instead of the address (replays: "198.18.16.1 (= 172.16.0.8)").
    label: String,
    started: f64,
    detected: Option<f64>,
    blocked: Option<f64>,
    sent: u64,
    hits: u64,
    /// A scan or sweep: held to [`SCAN_TARGET_S`] and [`SCAN_TARGET_PROBES`].
    scan: bool,
}

/// Targets of the unanswered scans, in [`testbed::EMPTY_SPACE`]: two absent hosts
/// and an empty /24.
const ABSENT_HOST: &str = "198.19.254.1";
const ABSENT_HOST2: &str = "198.19.254.2";
const EMPTY_24: &str = "198.19.255.0/24";

/// Issue 14's target for a scan or sweep, answered or not: blocked within this
/// long after it started and this many probes.
pub(crate) const SCAN_TARGET_S: f64 = 1.0;
pub(crate) const SCAN_TARGET_PROBES: u64 = 100;

/// Every block seen so far: address -> (first seen, latest hits).
type Seen = Arc<Mutex<HashMap<IpAddr, (f64, u64)>>>;

pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    let t0 = Instant::now();
    if !a.no_build {
        crate::setup::ensure_apt_packages(&[
            "mosquitto",
            "mosquitto-clients",
            "nmap",
            "hping3",
            "tcpreplay",
            "netcat-openbsd",
            "iproute2",
            "chromium",
        ])?;
        // The Blocks-page check drives Chromium with playwright-core.
        if !a.no_dashboard {
            crate::setup::ensure_e2e_packages()?;
        }
        crate::build::run()?;
    }
    let _ = testbed::down();
    let tb = Testbed::up(a.devices)?;
    let dir = testbed::run_dir("demo")?;
    let device_layer = a.devices >= devices::MIN_DEVICES;
    // Before the gateway starts: its first vulnerability scan runs at once.
    let telnet = device_layer.then(devices::listen_telnet).transpose()?;
    let stack = Arc::new(Stack::start(&StackOptions {
        dir: dir.clone(),
        dashboard: !a.no_dashboard,
        xdp_mode: a.xdp_mode.clone(),
        devices: a.devices,
    })?);
    let url = stack
        .dashboard_url
        .clone()
        .unwrap_or_else(|| "(not started)".into());
    println!("\ndashboard: {url}  (API token: {})\n", stack.api_token);

    let mut traffic = Traffic::start(tb.devices)?;
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, stack) = (seen.clone(), stop.clone(), stack.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(bs) = stack.blocks() {
                    let now = now_s();
                    let mut m = seen.lock().expect("lock");
                    for b in bs.into_iter().filter(|b| b.origin != "config") {
                        m.entry(b.addr).or_insert((now, 0)).1 = b.hits;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let result = scenario(a, &stack, &seen, t0);
    stop.store(true, Ordering::SeqCst);
    let _ = poller.join();
    let (outcomes, benign, flood) = match result {
        Ok(r) => r,
        Err(e) => {
            traffic.stop();
            return Err(e);
        }
    };
    let mut failures = Vec::new();
    enforced::gateway_side(&stack, &mut failures)?;
    report::report(&stack, &outcomes, &benign, &seen, &mut failures)?;
    if device_layer {
        let rows = devices::run(&stack, &mut failures)?;
        devices::print(&rows);
    } else {
        println!(
            "\ndevice layer: skipped (needs --devices {} or more)",
            devices::MIN_DEVICES
        );
    }
    drop(telnet);
    flood::check(&flood, &mut failures);
    enforced::compare_blocklists(&stack, &mut failures)?;

    if !failures.is_empty() {
        println!("\nFAILED expectations:");
        for f in &failures {
            println!("  - {f}");
        }
    } else {
        println!("\nall expectations met");
    }
    if a.ci {
        traffic.stop();
        drop(stack);
        drop(tb);
        if !failures.is_empty() {
            bail!("{} expectation(s) failed", failures.len());
        }
        return Ok(());
    }
    println!(
        "\ndashboard stays up at {url} (benign traffic continues); Ctrl-C to stop and tear down"
    );
    while !netns::interrupted() {
        std::thread::sleep(Duration::from_millis(200));
    }
    traffic.stop();
    drop(stack);
    drop(tb);
    Ok(())
}

fn check_time(a: &DemoArgs, t0: Instant) -> anyhow::Result<()> {
    netns::check_interrupt()?;
    if a.ci && t0.elapsed() > a.time_limit {
        bail!("time limit {:?} exceeded", a.time_limit);
    }
    Ok(())
}

fn tx_packets(ns: &str, iface: &str) -> u64 {
    netns::ip_in(ns, &["-s", "-j", "link", "show", iface])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v[0]["stats64"]["tx"]["packets"].as_u64())
        .unwrap_or(0)
}

fn detected_at(stack: &Stack, addr: IpAddr) -> Option<f64> {
    stack
        .recorded()
        .alerts
        .iter()
        .filter(|(_, al)| al.source == Some(addr))
        .map(|(t, _)| *t as f64 / 1000.0)
        .reduce(f64::min)
}

/// Runs the attacks; returns their outcomes and the set of benign addresses.
fn scenario(
    a: &DemoArgs,
    stack: &Stack,
    seen: &Seen,
    t0: Instant,
) -> anyhow::Result<(Vec<Outcome>, BTreeSet<IpAddr>, flood::FloodOutcome)> {
    let mut benign: BTreeSet<IpAddr> = [
        testbed::ROUTER_LAN,
        testbed::ROUTER_MGMT,
        testbed::ROUTER_WAN,
        testbed::DETECTOR,
        testbed::MONITOR,
        testbed::WAN_HOST,
        testbed::REPLAY_HOST,
    ]
    .into_iter()
    .chain((1..=a.devices).map(testbed::device_addr))
    .map(IpAddr::V4)
    .collect();
    let warmup = if a.ci { 5 } else { 15 };
    println!("demo: benign traffic for {warmup} s before the first attack");
    netns::sleep(Duration::from_secs(warmup))?;

    let dev = |i: u8| testbed::device_addr(i.min(a.devices)).to_string();
    let atk = |i: u8| testbed::attacker_addr(i).to_string();
    let ports = if a.ci { "1-300" } else { "1-1000" };
    let tools: Vec<(&str, u8, Vec<String>)> = vec![
        (
            "nmap SYN scan",
            0,
            split(&format!(
                "nmap -sS -n -Pn -e eth0 -S {} -T4 --max-retries 1 -p {ports} {}",
                atk(0),
                dev(1)
            )),
        ),
        (
            "nmap connect scan",
            1,
            split(&format!(
                "nmap -sT -n -Pn -e eth0 -S {} -T4 --max-retries 1 -p {ports} {}",
                atk(1),
                dev(1)
            )),
        ),
        (
            "nmap UDP scan",
            2,
            split(&format!(
                "nmap -sU -n -Pn -e eth0 -S {} -T4 --max-retries 1 --min-rate 300 -p 1-200 {}",
                atk(2),
                dev(2)
            )),
        ),
        (
            "nmap FIN scan",
            3,
            split(&format!(
                "nmap -sF -n -Pn -e eth0 -S {} -T4 --max-retries 1 -p {ports} {}",
                atk(3),
                dev(2)
            )),
        ),
        // Unanswered, masscan-style (rate 1,000/s, no retries): the probes of an
        // absent host or an empty address get no answer, so no flow ever ends
        // before its idle timeout; the kernel's evidence sees them at once.
        (
            "SYN scan, unanswered (absent host)",
            8,
            split(&format!(
                "nmap -sS -n -Pn -e eth0 -S {} --min-rate 1000 --max-retries 0 -p 1-1000 {ABSENT_HOST}",
                atk(8),
            )),
        ),
        (
            "UDP scan, unanswered (absent host)",
            9,
            split(&format!(
                "nmap -sU -n -Pn -e eth0 -S {} --min-rate 1000 --max-retries 0 -p 1-1000 {ABSENT_HOST2}",
                atk(9),
            )),
        ),
        (
            "ICMP echo sweep, unanswered (empty /24)",
            10,
            split(&format!(
                "nmap -sn -PE -n -e eth0 -S {} --min-rate 1000 --max-retries 0 {EMPTY_24}",
                atk(10),
            )),
        ),
        (
            "hping3 SYN flood",
            4,
            split(&format!(
                "hping3 -q -S -p 80 -i u500 -c 20000 -a {} {}",
                atk(4),
                dev(3)
            )),
        ),
    ];
    let mut out = Vec::new();
    for (name, idx, argv) in tools {
        check_time(a, t0)?;
        let addr = IpAddr::V4(testbed::attacker_addr(idx));
        println!("demo: attack: {name} from {addr}");
        let tx0 = tx_packets(testbed::NS_ATTACKER, testbed::HOST_IF);
        let started = now_s();
        let log = stack.dir.join("attacks.log");
        let mut p = Proc::spawn(
            name,
            in_ns(testbed::NS_ATTACKER, &argv[0]).args(&argv[1..]),
            Some(&log),
        )?;
        let end = Instant::now() + Duration::from_secs(if a.ci { 45 } else { 90 });
        let mut blocked_since: Option<Instant> = None;
        while Instant::now() < end && p.exited().is_none() {
            netns::check_interrupt()?;
            if blocked_since.is_none() && seen.lock().expect("lock").contains_key(&addr) {
                blocked_since = Some(Instant::now());
            }
            // Let it run on a little after the block: those packets are dropped.
            if blocked_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        p.stop();
        wait_for_block(seen, addr, Duration::from_secs(6))?;
        out.push(finish(
            stack,
            seen,
            name,
            addr,
            addr.to_string(),
            started,
            tx_packets(testbed::NS_ATTACKER, testbed::HOST_IF) - tx0,
        ));
    }

    // A spoofed SYN flood: SYN authentication of the victim, no source blocked.
    check_time(a, t0)?;
    let flood = flood::spoofed_flood(stack, seen)?;

    // Login guessing: repeated short connections to SSH and Telnet.
    for (name, idx, dev_i, port) in [
        ("SSH login guessing", 5u8, 2u8, 22u16),
        ("Telnet login guessing", 6, 3, 23),
    ] {
        check_time(a, t0)?;
        let src = testbed::attacker_addr(idx);
        let addr = IpAddr::V4(src);
        let dst = SocketAddrV4::new(testbed::device_addr(dev_i.min(a.devices)), port);
        println!("demo: attack: {name} from {addr} against {dst}");
        let tx0 = tx_packets(testbed::NS_ATTACKER, testbed::HOST_IF);
        let started = now_s();
        let seen2 = seen.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                if netns::enter_thread(testbed::NS_ATTACKER).is_err() {
                    return;
                }
                let mut blocked_at: Option<Instant> = None;
                traffic::guess_logins(src, dst, Duration::from_millis(250), 200, || {
                    if blocked_at.is_none() && seen2.lock().expect("lock").contains_key(&addr) {
                        blocked_at = Some(Instant::now());
                    }
                    blocked_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3))
                });
            });
        });
        wait_for_block(seen, addr, Duration::from_secs(6))?;
        out.push(finish(
            stack,
            seen,
            name,
            addr,
            addr.to_string(),
            started,
            tx_packets(testbed::NS_ATTACKER, testbed::HOST_IF) - tx0,
        ));
    }

    if !a.no_replays {
        let manifest = Manifest::parse(
            &std::fs::read_to_string(pcaps_dir().join("MANIFEST.tsv"))
                .context("reading MANIFEST.tsv")?,
        )?;
        let names: Vec<&str> = if a.ci {
            vec![
                "Montimage__42.TCP_NULL_scan.pcap",
                "OISF__syn-flood-drop-precedence.pcap",
            ]
        } else {
            vec![
                "ntop__synscan.pcap",
                "Montimage__42.TCP_NULL_scan.pcap",
                "Montimage__40.TCP_SYN_scan.pcap",
                "Montimage__56.syn_flooding.pcap",
                "OISF__syn-flood-drop-precedence.pcap",
                "zeek__sshguess.pcap",
                "zeek__bruteforce.pcap",
                "ntop__coap_mqtt.pcap",
                "StopDDoS__pkt.TCP.synflood.spoofed.pcap",
            ]
        };
        let macs = Macs {
            src: netns::mac_of(testbed::NS_REPLAY, testbed::HOST_IF)?,
            dst: replay::testbed_router_mac()?,
        };
        for (k, name) in names.iter().enumerate() {
            check_time(a, t0)?;
            let path: PathBuf = pcaps_dir().join(name);
            let row = manifest
                .row(name)
                .with_context(|| format!("{name} has no MANIFEST row"))?;
            let prepared = replay::prepare_with(
                &path,
                macs,
                AddrMap::starting_after((k as u32 + 1) * 4096, (k as u128 + 1) * 4096),
            )?;
            let attackers: Vec<(IpAddr, String)> = row
                .must_block
                .iter()
                .filter_map(|o| o.parse().ok())
                .filter_map(|o| prepared.map.replayed_of(o).map(|r| (r, o.to_string())))
                .collect();
            for e in &prepared.map.entries {
                if !attackers.iter().any(|(r, _)| *r == e.replayed) {
                    benign.insert(e.replayed);
                }
            }
            println!(
                "demo: replay: {name} ({} frames, original timing, gaps capped at 1 s); attackers {:?}",
                prepared.frames.len(),
                attackers
                    .iter()
                    .map(|(r, o)| format!("{r} (= {o})"))
                    .collect::<Vec<_>>()
            );
            let started = now_s();
            let mut sent: HashMap<IpAddr, u64> = HashMap::new();
            replay::inject(
                &prepared,
                Some(testbed::NS_REPLAY),
                testbed::HOST_IF,
                Timing::Original(Duration::from_secs(1)),
                |i, _| {
                    if let Some(s) = prepared.frames[i].src {
                        *sent.entry(s).or_default() += 1;
                    }
                },
            )?;
            for (r, o) in attackers {
                wait_for_block(seen, r, Duration::from_secs(10))?;
                out.push(finish(
                    stack,
                    seen,
                    &format!("replay {name}"),
                    r,
                    format!("{r} (= {o})"),
                    started,
                    sent.get(&r).copied().unwrap_or(0),
                ));
            }
        }
    }
    netns::sleep(Duration::from_secs(3))?;
    Ok((out, benign, flood))
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn wait_for_block(seen: &Seen, addr: IpAddr, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while Instant::now() < end && !seen.lock().expect("lock").contains_key(&addr) {
        netns::sleep(Duration::from_millis(100))?;
    }
    Ok(())
}

fn finish(
    stack: &Stack,
    seen: &Seen,
    name: &str,
    addr: IpAddr,
    label: String,
    started: f64,
    sent: u64,
) -> Outcome {
    let (blocked, hits) = seen
        .lock()
        .expect("lock")
        .get(&addr)
        .map(|(t, h)| (Some(*t), *h))
        .unwrap_or((None, 0));
    let o = Outcome {
        name: name.into(),
        attacker: addr,
        label,
        started,
        detected: detected_at(stack, addr),
        blocked,
        sent,
        hits,
        // The tools' scans; replays run at their capture's own pace.
        scan: !name.starts_with("replay") && (name.contains("scan") || name.contains("sweep")),
    };
    match o.blocked {
        Some(b) => println!(
            "demo:   blocked {:.2} s after the attack started",
            b - o.started
        ),
        None => println!("demo:   NOT blocked"),
    }
    o
}
