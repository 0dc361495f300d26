//! `cargo xtask bench flood [--quick]`: what a random-source SYN flood does to the
//! gateway's data path and to the flows it should keep (issue 14, item 2: "measure
//! it first"). Runs as root in three network namespaces this benchmark creates and
//! always removes; never part of the tests.
//!
//! ```text
//!  tadfl-lan-<pid>                 tadfl-rtr-<pid>                    tadfl-dev-<pid>
//!  trafgen SYN flood   fl-lan ==== fl-rlan (XDP)  fl-rdev ==== fl-dev  victim 203.0.113.10
//!  50 devices x 20 UDP flows       192.0.2.1      203.0.113.1           TCP :8080 (accepts)
//!  client 192.0.2.200 (50 conn/s)  forwarding on, 198.18.0.0/15          UDP :5683 (counts)
//!  192.0.2.10-59, .200             blackholed, no other route
//! ```
//!
//! - **Flood**: trafgen (netsniff-ng) in the LAN namespace, one worker (`--cpus 1`,
//!   which trafgen pins to CPU 0 itself), flat out: 54-byte TCP SYNs to the victim's
//!   service from random sources in 198.18.0.0/15 (131,072 addresses, random source
//!   port and sequence number; trafgen recomputes the checksums), so nearly every
//!   packet is a new flow for the 65,536-entry flow LRU, as under `hping3
//!   --rand-source`. The router forwards them to the victim, whose SYN-ACKs (SYN
//!   cookies once its queue is full) die in the router's blackhole route.
//! - **Legitimate devices**: a thread of this process sends one 64-byte UDP datagram
//!   on each of 1,000 long-lived flows (50 device addresses x 20 source ports, to the
//!   victim's UDP port) every second (`--legit-period-ms`), from at least two periods
//!   before the flood (so each is established) until after it. The
//!   victim counts what it receives per flow. A packet that reached the victim has
//!   passed the XDP program, so a flow is **kept exact** when its entry is in the
//!   pinned flow map at the end with exactly the packet count the victim received
//!   (packets lost before XDP count in neither; packets lost after it would show as
//!   `map_over_received`).
//! - **Flow records**: the daemon's own export code ([`Exporter::poll`] on the pinned
//!   map through [`Pinned`], the path `fw-ctl run` and the `flowmap` bench use) runs
//!   on its shipped defaults (poll 1 s, idle 10 s, active 60 s) during the whole cell,
//!   deleting ended flows as the daemon does; at the end one more pass past every
//!   timeout exports what is left. A flow's records are **exact** when their packets
//!   sum to the victim's count: every packet reached the detector's input. The MQTT
//!   transport is not in this bench (its queue holds 100,000 records and drops the
//!   oldest: `records_per_s` shows the load it would carry).
//! - **Client**: a thread opens a new TCP connection to the victim's service every
//!   20 ms (50/s) during the window, each with a 3 s connect timeout (one SYN
//!   retransmission fits); success share and connect latency p50/p99 (nearest rank,
//!   pooled over runs).
//! - **Cost**: over the window (after a 0.6 s warm-up of the flood), softirq time of
//!   all CPUs (/proc/stat) / packets the LAN side delivered to the router's XDP
//!   interface (tx of `fl-lan`): `softirq_ns_per_pkt`. This is the whole receive path
//!   of a flood packet: veth, XDP, forwarding, the victim's SYN handling. Busy time of
//!   all CPUs per packet and CPU 1's busy share are reported beside it. This process
//!   pins itself to CPU 1 (the legitimate traffic and the client run there).
//!
//! Cells ([`CELLS`], one table entry each): `no_program`, `program_insert_first`
//! (the XDP program before flow admission: every first packet an LRU insert),
//! `program` (the XDP program as the gateway runs it today: enforce, rate limits
//! off, flow accounting on, flows admitted on their second packet,
//! `fw_common::admission`; attached in generic (skb) mode, see below),
//! `program_syn_auth` (the victim's service under SYN authentication), the last
//! two again with the victim's own SYN cookies off (`program_victim_no_cookies`,
//! `program_syn_auth_victim_no_cookies`: a device stack that cannot absorb the
//! flood, where the mitigation decides whether the client gets through) and
//! `program_no_flood` (the same without the flood: checks that the method finds
//! every legitimate flow exact when nothing evicts them). Each run measures every cell
//! once (order rotated between runs); figures are medians over runs.
//!
//! Options: `--json FILE`, `--runs N` (default 3), `--window-ms MS` (default 10000),
//! `--legit-period-ms MS` (default 1000: how often each legitimate flow sends),
//! `--quick` (1 run, 5 s window). Method and latest figures: BENCHMARKS.md, `flood`.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use common::{
    Generator, catch_signals, cpu_ticks, in_ns, run, sleep_unless_interrupted, write_json,
};
use fw_common::{
    config::{GatewayConfig, MODE_ENFORCE},
    counters::CounterSlot,
    flow::{FAMILY_V4, FlowKey, FlowStats, SIDE_A, v4_mapped},
    maps as m,
};
use fw_ctl::{
    bench_env::machine,
    config::Export,
    daemon::exporter::Exporter,
    kernel::{PendingTable, Pinned},
};
use fw_testkit::{Harness, PrivatePins, monotonic_ns, pin_to_cpu};
use serde_json::{Value, json};

// ---- Topology -------------------------------------------------------------------

/// LAN side (attacker, devices, client) of the first veth pair.
const LAN_IF: &str = "fl-lan";
/// The router's LAN interface, where the XDP program sits.
const RTR_LAN_IF: &str = "fl-rlan";
/// The router's interface toward the victim device.
const RTR_DEV_IF: &str = "fl-rdev";
/// The victim device's interface.
const DEV_IF: &str = "fl-dev";
const LAN_MAC: &str = "02:00:00:00:f1:02";
const RTR_LAN_MAC: &str = "02:00:00:00:f1:01";
const RTR_DEV_MAC: &str = "02:00:00:00:f2:01";
const DEV_MAC: &str = "02:00:00:00:f2:02";
const RTR_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RTR_DEV_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The victim device (TCP service and the legitimate flows' UDP sink).
const VICTIM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The client opening new connections; the LAN namespace's primary address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
/// First legitimate device address (192.0.2.10 + i).
const DEVICE_BASE: u32 = 0xc000_020a;
/// Legitimate devices.
const DEVICES: u32 = 50;
/// Long-lived UDP flows per device (source ports LEGIT_SPORT + j).
const FLOWS_PER_DEVICE: u32 = 20;
const LEGIT_SPORT: u16 = 40_000;
/// Every legitimate flow sends one datagram per period (default; `--legit-period-ms`).
const LEGIT_PERIOD: Duration = Duration::from_secs(1);
/// Legitimate traffic before the flood starts (3 packets per flow).
const LEGIT_WARMUP: Duration = Duration::from_millis(3_000);
/// UDP payload of a legitimate datagram: 20 IP + 8 UDP + 36 = 64-byte IP packet.
const LEGIT_PAYLOAD: usize = 36;
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5683;
/// Flood sources: 198.18.0.0/15 (RFC 2544 benchmarking range).
const FLOOD_SRC_MIN: u32 = 0xc612_0000;
const FLOOD_SRC_MAX: u32 = 0xc613_ffff;
/// New client connections per second, and the timeout of each.
const CONNECT_PER_S: u32 = 50;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The CPU trafgen pins its single worker to, and the one this process uses.
const GEN_CPU: usize = 0;
const BENCH_CPU: usize = 1;
const FLOOD_WARMUP: Duration = Duration::from_millis(600);
/// Generic (skb) mode. Native XDP on veth receives through a 256-entry ring that,
/// when full, pushes back on the sender (this kernel returns busy to a full ring):
/// with the slow path behind the program (forwarding and the victim's SYN
/// handling, ~3 µs per packet) trafgen's TX ring flush then fails with EAGAIN and
/// trafgen exits (measured). In skb mode the packets take the same per-CPU input
/// backlog as without a program, so both cells shed excess packets in the same
/// place (counted: `lan_tx_dropped`); on veth the two modes cost the same
/// (FIELD-NOTES, `filters`).
const XDP_MODE: XdpMode = XdpMode::Skb;

// ---- Cells --------------------------------------------------------------------------

/// One cell of the table: what sits on the router's LAN interface and whether the
/// flood runs. A later change of issue 14 is one more entry.
struct Cell {
    /// JSON key.
    key: &'static str,
    /// One line for the report.
    what: &'static str,
    flood: bool,
    /// `None`: no XDP program. `Some(f)`: the program in skb mode with the
    /// gateway's default runtime config (enforce, no rate limits, flow accounting
    /// on) adjusted by `f`.
    program: Option<fn(&mut GatewayConfig)>,
    /// With the program: the victim's TCP service under SYN authentication
    /// (`fw_common::synauth`, what a detector's `ProtectSyn` verdict switches on).
    syn_auth: bool,
    /// The victim's own SYN cookies (`net.ipv4.tcp_syncookies`): on (1) as the
    /// kernel ships, or off (0): a device whose stack cannot absorb a flood.
    victim_syncookies: bool,
}

fn as_today(_: &mut GatewayConfig) {}

fn insert_first(c: &mut GatewayConfig) {
    c.flags |= fw_common::config::FLAG_ADMIT_FIRST_PACKET;
}

const CELLS: &[Cell] = &[
    Cell {
        key: "no_program",
        what: "no XDP program, flood",
        flood: true,
        program: None,
        syn_auth: false,
        victim_syncookies: true,
    },
    Cell {
        key: "program_insert_first",
        what: "program inserting every flow on its first packet (before admission), flood",
        flood: true,
        program: Some(insert_first),
        syn_auth: false,
        victim_syncookies: true,
    },
    Cell {
        key: "program",
        what: "program as today (flow accounting on, admission on the second packet), flood",
        flood: true,
        program: Some(as_today),
        syn_auth: false,
        victim_syncookies: true,
    },
    Cell {
        key: "program_syn_auth",
        what: "program, victim service under SYN authentication, flood",
        flood: true,
        program: Some(as_today),
        syn_auth: true,
        victim_syncookies: true,
    },
    Cell {
        key: "program_victim_no_cookies",
        what: "program, no mitigation, victim without SYN cookies, flood",
        flood: true,
        program: Some(as_today),
        syn_auth: false,
        victim_syncookies: false,
    },
    Cell {
        key: "program_syn_auth_victim_no_cookies",
        what: "program, SYN authentication, victim without SYN cookies, flood",
        flood: true,
        program: Some(as_today),
        syn_auth: true,
        victim_syncookies: false,
    },
    Cell {
        key: "program_no_flood",
        what: "program as today, no flood (method check)",
        flood: false,
        program: Some(as_today),
        syn_auth: false,
        victim_syncookies: true,
    },
];

// ---- Options ------------------------------------------------------------------------

struct Options {
    json: Option<PathBuf>,
    runs: usize,
    window: Duration,
    legit_period: Duration,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        json: None,
        runs: 3,
        window: Duration::from_millis(10_000),
        legit_period: LEGIT_PERIOD,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--json" => o.json = Some(value("--json")?.into()),
            "--runs" => {
                o.runs = value("--runs")?.parse().context("--runs: a whole number")?;
                ensure!(o.runs >= 1, "--runs must be at least 1");
            }
            "--window-ms" => {
                let ms: u64 = value("--window-ms")?
                    .parse()
                    .context("--window-ms: milliseconds")?;
                ensure!(ms >= 1000, "--window-ms must be at least 1000");
                o.window = Duration::from_millis(ms);
            }
            "--legit-period-ms" => {
                let ms: u64 = value("--legit-period-ms")?
                    .parse()
                    .context("--legit-period-ms: milliseconds")?;
                ensure!(ms >= 10, "--legit-period-ms must be at least 10");
                o.legit_period = Duration::from_millis(ms);
            }
            "--quick" => {
                o.runs = 1;
                o.window = Duration::from_millis(5_000);
            }
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?}; known: --json FILE, --runs N, --window-ms MS, --legit-period-ms MS, --quick"
            ),
        }
    }
    Ok(o)
}

// ---- Commands and namespaces --------------------------------------------------------

fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

fn sysctl(ns: &str, kv: &str) -> anyhow::Result<()> {
    run(in_ns(ns, "sysctl").args(["-qw", kv]))?;
    Ok(())
}

/// Moves the calling thread into network namespace `ns` (setns affects only it).
fn enter(ns: &File) -> anyhow::Result<()> {
    // SAFETY: setns on this thread with a valid namespace fd.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
    Ok(())
}

/// The three namespaces and their veth pairs, no route out; deleted on drop (also
/// on error, panic or Ctrl-C), which removes the links with them.
struct Testbed {
    lan: String,
    rtr: String,
    dev: String,
    lan_fd: Arc<File>,
    rtr_fd: Arc<File>,
    dev_fd: Arc<File>,
    dir: tempfile::TempDir,
    syncookies: String,
}

impl Testbed {
    fn new() -> anyhow::Result<Testbed> {
        let id = std::process::id();
        let names = [
            format!("tadfl-lan-{id}"),
            format!("tadfl-rtr-{id}"),
            format!("tadfl-dev-{id}"),
        ];
        // The guard owns the names before the first one exists, so a failure half
        // way deletes what was made.
        let mut guard = NsGuard(Vec::new());
        for ns in &names {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            guard.0.push(ns.clone());
            for kv in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                sysctl(ns, kv)?;
            }
            ip_in(ns, &["link", "set", "lo", "up"])?;
        }
        let [lan, rtr, dev] = names;
        for (a, a_ns, a_mac, b, b_ns, b_mac) in [
            (LAN_IF, &lan, LAN_MAC, RTR_LAN_IF, &rtr, RTR_LAN_MAC),
            (RTR_DEV_IF, &rtr, RTR_DEV_MAC, DEV_IF, &dev, DEV_MAC),
        ] {
            run(Command::new("ip").args([
                "link", "add", a, "netns", a_ns, "address", a_mac, "type", "veth", "peer", "name",
                b, "netns", b_ns, "address", b_mac,
            ]))?;
        }
        // LAN: the client's address first (the primary, the source of its
        // connections), then the devices'.
        ip_in(
            &lan,
            &["addr", "add", &format!("{CLIENT}/24"), "dev", LAN_IF],
        )?;
        for i in 0..DEVICES {
            let a = Ipv4Addr::from(DEVICE_BASE + i);
            ip_in(&lan, &["addr", "add", &format!("{a}/24"), "dev", LAN_IF])?;
        }
        ip_in(
            &rtr,
            &[
                "addr",
                "add",
                &format!("{RTR_LAN_ADDR}/24"),
                "dev",
                RTR_LAN_IF,
            ],
        )?;
        ip_in(
            &rtr,
            &[
                "addr",
                "add",
                &format!("{RTR_DEV_ADDR}/24"),
                "dev",
                RTR_DEV_IF,
            ],
        )?;
        ip_in(
            &dev,
            &["addr", "add", &format!("{VICTIM}/24"), "dev", DEV_IF],
        )?;
        for (ns, ifs) in [
            (&lan, &[LAN_IF][..]),
            (&rtr, &[RTR_LAN_IF, RTR_DEV_IF][..]),
            (&dev, &[DEV_IF][..]),
        ] {
            for i in ifs {
                ip_in(ns, &["link", "set", i, "up"])?;
            }
        }
        ip_in(
            &lan,
            &[
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                &RTR_LAN_ADDR.to_string(),
                "src",
                &CLIENT.to_string(),
            ],
        )?;
        ip_in(
            &dev,
            &[
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &RTR_DEV_ADDR.to_string(),
            ],
        )?;
        // The router forwards between its two subnets; replies to the spoofed
        // sources are discarded; no reverse-path check (the spoofed sources must
        // reach the victim, as they would from the outside).
        sysctl(&rtr, "net.ipv4.ip_forward=1")?;
        for kv in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            &format!("net.ipv4.conf.{RTR_LAN_IF}.rp_filter=0"),
        ] {
            sysctl(&rtr, kv)?;
        }
        ip_in(&rtr, &["route", "add", "blackhole", "198.18.0.0/15"])?;
        let syncookies = run(in_ns(&dev, "sysctl").args(["-n", "net.ipv4.tcp_syncookies"]))?
            .trim()
            .to_string();
        let open = |ns: &str| -> anyhow::Result<Arc<File>> {
            Ok(Arc::new(
                File::open(format!("/run/netns/{ns}")).with_context(|| format!("open {ns}"))?,
            ))
        };
        let tb = Testbed {
            lan_fd: open(&lan)?,
            rtr_fd: open(&rtr)?,
            dev_fd: open(&dev)?,
            lan,
            rtr,
            dev,
            dir: tempfile::tempdir().context("temporary directory")?,
            syncookies,
        };
        guard.0.clear();
        Ok(tb)
    }

    /// (tx_packets, tx_dropped) of the LAN side's veth.
    fn lan_tx(&self) -> anyhow::Result<(u64, u64)> {
        let out = ip_in(&self.lan, &["-s", "-j", "link", "show", "dev", LAN_IF])?;
        let v: Value = serde_json::from_str(&out).context("parse `ip -s -j link`")?;
        let tx = &v[0]["stats64"]["tx"];
        Ok((
            tx["packets"].as_u64().context("no tx packets")?,
            tx["dropped"].as_u64().unwrap_or(0),
        ))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        drop(NsGuard(vec![
            self.lan.clone(),
            self.rtr.clone(),
            self.dev.clone(),
        ]));
    }
}

/// Deletes the named namespaces when dropped.
struct NsGuard(Vec<String>);

impl Drop for NsGuard {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---- Flood generator ----------------------------------------------------------------

/// trafgen config: TCP SYNs to the victim's service from random sources in
/// 198.18.0.0/15, random source port and sequence number.
fn flood_conf() -> String {
    format!(
        "{{\n  eth(da={RTR_LAN_MAC}, sa={LAN_MAC}),\n  \
         ipv4(sa=drnd({FLOOD_SRC_MIN}, {FLOOD_SRC_MAX}), da={VICTIM}, ttl=64, id=drnd()),\n  \
         tcp(sp=drnd(1024, 65535), dp={TCP_PORT}, seq=drnd(), syn, win=64240)\n}}\n"
    )
}

// ---- Threads: devices, victim, client, exporter -------------------------------------

/// A background thread with a stop flag; `stop` joins it and returns its result.
struct Worker<T> {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<T>>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Runs `f(stop)` on a thread in namespace `ns`; waits until `f` reports ready
    /// (or fails) through the sender it gets.
    fn start(
        ns: &Arc<File>,
        f: impl FnOnce(&AtomicBool, &std::sync::mpsc::Sender<()>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<Worker<T>> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ns, st) = (ns.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            enter(&ns)?;
            f(&st, &tx)
        });
        let mut w = Worker {
            stop,
            handle: Some(handle),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            // The thread failed before it was ready: its error.
            return Err(w
                .stop()
                .err()
                .unwrap_or_else(|| anyhow!("worker did not start")));
        }
        Ok(w)
    }

    fn stop(&mut self) -> anyhow::Result<T> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| anyhow!("worker panicked"))?,
            None => bail!("worker already stopped"),
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Legitimate flow `i`: (device address, source port).
fn legit_flow(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(DEVICE_BASE + i % DEVICES),
        LEGIT_SPORT + (i / DEVICES) as u16,
    )
}

const LEGIT_FLOWS: u32 = DEVICES * FLOWS_PER_DEVICE;

/// Sends on every legitimate flow once per `period` (spread over 10 ms ticks);
/// returns the datagrams sent per flow.
fn devices(
    period: Duration,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<u64>> {
    let socks: Vec<UdpSocket> = (0..LEGIT_FLOWS)
        .map(|i| UdpSocket::bind(legit_flow(i)).with_context(|| format!("bind {}", legit_flow(i))))
        .collect::<anyhow::Result<_>>()?;
    let _ = ready.send(());
    let dst = SocketAddr::from(SocketAddrV4::new(VICTIM, UDP_PORT));
    let payload = [0x5au8; LEGIT_PAYLOAD];
    let ticks = (period.as_millis() / 10).max(1) as u32;
    let per_tick = LEGIT_FLOWS.div_ceil(ticks);
    let mut sent = vec![0u64; LEGIT_FLOWS as usize];
    let started = Instant::now();
    let (mut i, mut tick) = (0u32, 0u64);
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            if socks[i as usize].send_to(&payload, dst).is_ok() {
                sent[i as usize] += 1;
            }
            i = (i + 1) % LEGIT_FLOWS;
        }
        tick += 1;
        if let Some(d) =
            (started + Duration::from_millis(tick * 10)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(d);
        }
    }
    Ok(sent)
}

/// The victim's UDP sink: datagrams received per source.
fn udp_sink(
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<HashMap<SocketAddrV4, u64>> {
    let s = UdpSocket::bind(SocketAddrV4::new(VICTIM, UDP_PORT)).context("bind the UDP sink")?;
    let rcvbuf: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on our socket with a valid int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let _ = ready.send(());
    let mut got: HashMap<SocketAddrV4, u64> = HashMap::new();
    let mut buf = [0u8; 2048];
    // Drain after the stop flag until the socket is empty.
    let mut draining = false;
    loop {
        match s.recv_from(&mut buf) {
            Ok((_, SocketAddr::V4(from))) => *got.entry(from).or_default() += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if draining {
                    return Ok(got);
                }
            }
            Err(e) => return Err(e).context("UDP sink"),
        }
        if stop.load(Ordering::SeqCst) {
            draining = true;
        }
    }
}

/// The victim's TCP service: accepts and closes every connection.
fn tcp_service(stop: &AtomicBool, ready: &std::sync::mpsc::Sender<()>) -> anyhow::Result<u64> {
    let l = TcpListener::bind(SocketAddrV4::new(VICTIM, TCP_PORT)).context("bind the service")?;
    l.set_nonblocking(true)?;
    let _ = ready.send(());
    let mut accepted = 0;
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    Ok(accepted)
}

/// Connect attempts: `Some(ms)` connected after ms, `None` failed or timed out.
type Attempts = Arc<Mutex<Vec<Option<f64>>>>;

/// Opens a new connection to the victim every 1/[`CONNECT_PER_S`] s until stopped,
/// each on its own thread with [`CONNECT_TIMEOUT`]; waits for the outstanding ones.
fn client(
    ns: Arc<File>,
) -> impl FnOnce(&AtomicBool, &std::sync::mpsc::Sender<()>) -> anyhow::Result<Vec<Option<f64>>> {
    move |stop, ready| {
        let _ = ready.send(());
        let out: Attempts = Arc::default();
        let gap = Duration::from_secs(1) / CONNECT_PER_S;
        let started = Instant::now();
        let mut n = 0u32;
        let mut threads = Vec::new();
        let to = SocketAddr::from(SocketAddrV4::new(VICTIM, TCP_PORT));
        while !stop.load(Ordering::SeqCst) {
            let (ns, out) = (ns.clone(), out.clone());
            threads.push(std::thread::spawn(move || {
                let r = enter(&ns).ok().and_then(|()| {
                    let t = Instant::now();
                    TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
                        .ok()
                        .map(|_| t.elapsed().as_secs_f64() * 1e3)
                });
                out.lock().expect("attempts").push(r);
            }));
            n += 1;
            if let Some(d) = (started + gap * n).checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        for t in threads {
            let _ = t.join();
        }
        Ok(std::mem::take(&mut *out.lock().expect("attempts")))
    }
}

/// What the exporter produced for the legitimate flows: per (device, port), the
/// records and the packets in them; plus every record of the cell.
#[derive(Default)]
struct Exported {
    legit: HashMap<SocketAddrV4, (u32, u64)>,
    records: u64,
    passes: u32,
    pass_ms_max: f64,
}

impl Exported {
    fn add(&mut self, recs: &[tad_wire::FlowRecord]) {
        self.records += recs.len() as u64;
        for r in recs {
            let dev = match (r.src, r.dst) {
                (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d))
                    if r.proto == 17 && d == VICTIM && r.dport == UDP_PORT =>
                {
                    SocketAddrV4::new(s, r.sport)
                }
                (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d))
                    if r.proto == 17 && s == VICTIM && r.sport == UDP_PORT =>
                {
                    SocketAddrV4::new(d, r.dport)
                }
                _ => continue,
            };
            let e = self.legit.entry(dev).or_default();
            e.0 += 1;
            e.1 += r.packets();
        }
    }
}

/// The daemon's export loop on the pinned map: one [`Exporter::poll`] every
/// `poll_interval_ms`, ended flows deleted, records tallied.
fn export_loop(
    mut pinned: Pinned,
    mut ex: Exporter,
    poll: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<(Pinned, Exporter, Exported)>> {
    std::thread::spawn(move || {
        let mut tally = Exported::default();
        let mut next = Instant::now() + poll;
        let pending = PendingTable::open(&pinned.dir, m::PENDING)
            .map_err(|e| anyhow!("open the pending array: {e}"))?;
        let mut slots = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                let t = Instant::now();
                let now = monotonic_ns();
                let mut recs = ex
                    .poll(&mut pinned, now, 0)
                    .map_err(|e| anyhow!("export pass: {e}"))?;
                pending
                    .read_all(&mut slots)
                    .map_err(|e| anyhow!("read the pending array: {e}"))?;
                recs.extend(ex.poll_pending(&slots, now, 0));
                tally.pass_ms_max = tally.pass_ms_max.max(t.elapsed().as_secs_f64() * 1e3);
                tally.passes += 1;
                tally.add(&recs);
                next += poll;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((pinned, ex, tally))
    })
}

// Interruption: SIGINT/SIGTERM/SIGHUP set `common::INTERRUPTED`; the waits then fail,
// so the guards stop trafgen and remove what the run made before the process exits.

// ---- Measurement ----------------------------------------------------------------------

/// Packets dropped by the per-CPU input backlogs (/proc/net/softnet_stat, column 2).
fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|x| u64::from_str_radix(x, 16).ok())
                .sum()
        })
        .unwrap_or(0)
}

/// One cell of one run.
#[derive(Clone, Debug, Default)]
struct Sample {
    pkts_per_s: f64,
    softirq_ns: f64,
    cpu_ns: f64,
    other_busy_pct: f64,
    /// XDP counter (every verdict) / LAN tx over the cell; program cells only.
    xdp_over_sent: Option<f64>,
    lan_tx_dropped: u64,
    softnet_dropped: u64,
    legit_sent: u64,
    legit_received: u64,
    /// Program cells: legitimate flows in the map, and of those with the exact count.
    in_map: Option<u32>,
    exact: Option<u32>,
    map_over_received: Option<u32>,
    map_entries_end: Option<usize>,
    /// Program cells: flows whose records sum to the received count; packets in
    /// the legitimate flows' records; records of the legitimate flows; all records.
    records_exact: Option<u32>,
    record_packets: Option<u64>,
    legit_records: Option<u64>,
    records: Option<u64>,
    /// Records per second of the periodic passes (the last, flushing pass excluded).
    records_per_s: Option<f64>,
    export_pass_ms_max: Option<f64>,
    attempts: Vec<Option<f64>>,
}

fn measure(
    tb: &Testbed,
    cell: &Cell,
    window: Duration,
    period: Duration,
    flood_conf: &Path,
) -> anyhow::Result<Sample> {
    let tick_ns = 1e9 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut s = Sample::default();
    sysctl(
        &tb.dev,
        if cell.victim_syncookies {
            "net.ipv4.tcp_syncookies=1"
        } else {
            "net.ipv4.tcp_syncookies=0"
        },
    )?;

    // The program (if any): fresh maps pinned privately, attached to the router's
    // LAN interface in skb mode (see XDP_MODE); the daemon's export loop on the pins.
    let pins;
    let mut prog: Option<(Harness, XdpLinkId)> = None;
    let mut exporter = None;
    let export_stop = Arc::new(AtomicBool::new(false));
    let export = Export::default();
    let mut export_started = None;
    if let Some(adjust) = cell.program {
        pins = Some(PrivatePins::new(&format!("tadfl-{}", std::process::id())));
        let pins = pins.as_ref().expect("just set");
        let mut h = Harness::load_pinned(pins, |_| {});
        let mut cfg = GatewayConfig {
            mode: MODE_ENFORCE,
            ..Default::default()
        };
        adjust(&mut cfg);
        h.set_config(cfg);
        if cell.syn_auth {
            h.protect(
                &VICTIM.to_string(),
                TCP_PORT,
                fw_common::synauth::SynAuthEntry::default(),
            );
        }
        let rtr = tb.rtr_fd.clone();
        let xdp = &mut h.ebpf;
        let id = std::thread::scope(|sc| {
            sc.spawn(|| -> anyhow::Result<XdpLinkId> {
                enter(&rtr)?;
                let p: &mut Xdp = xdp
                    .program_mut(m::PROGRAM)
                    .context("program fw")?
                    .try_into()?;
                p.attach(RTR_LAN_IF, XDP_MODE)
                    .with_context(|| format!("attach XDP ({XDP_MODE:?}) to {RTR_LAN_IF}"))
            })
            .join()
            .map_err(|_| anyhow!("attach thread panicked"))?
        })?;
        prog = Some((h, id));
        let pinned = Pinned::open(&pins.0).map_err(|e| anyhow!("open the pinned maps: {e}"))?;
        export_started = Some(Instant::now());
        exporter = Some(export_loop(
            pinned,
            Exporter::new(export.timeouts()),
            Duration::from_millis(export.poll_interval_ms),
            export_stop.clone(),
        ));
    } else {
        pins = None;
    }
    let xdp_seen = |p: &Option<(Harness, XdpLinkId)>| -> u64 {
        p.as_ref()
            .map(|(h, _)| CounterSlot::ALL.iter().map(|c| h.counter(*c).packets).sum())
            .unwrap_or(0)
    };

    let mut sink = Worker::start(&tb.dev_fd, udp_sink)?;
    let mut service = Worker::start(&tb.dev_fd, tcp_service)?;
    let (sent0, dropped0) = tb.lan_tx()?;
    let (xdp0, softnet0) = (xdp_seen(&prog), softnet_dropped());
    let mut devs = Worker::start(&tb.lan_fd, move |st, tx| devices(period, st, tx))?;
    // Every flow has sent at least twice before the flood starts: a long-lived
    // flow is in the flow map (admitted on its second packet, fw_common::admission).
    sleep_unless_interrupted(LEGIT_WARMUP.max(2 * period + Duration::from_millis(100)))?;

    let mut generator = if cell.flood {
        let g = Generator::start(
            &tb.lan,
            LAN_IF,
            flood_conf,
            tb.dir.path().join("trafgen.err"),
        )?;
        sleep_unless_interrupted(FLOOD_WARMUP)?;
        Some(g)
    } else {
        None
    };
    let mut cl = Worker::start(&tb.lan_fd, client(tb.lan_fd.clone()))?;
    let (a_tx, a_cpu, a_t) = (tb.lan_tx()?.0, cpu_ticks()?, Instant::now());
    sleep_unless_interrupted(window)?;
    let (b_cpu, b_t, b_tx) = (cpu_ticks()?, Instant::now(), tb.lan_tx()?.0);
    if let Some(g) = generator.as_mut() {
        g.ensure_running()?;
    }
    // Outstanding connects finish under the flood.
    s.attempts = cl.stop()?;
    drop(generator);
    let sent = devs.stop()?;
    std::thread::sleep(Duration::from_millis(300));
    let received = sink.stop()?;
    service.stop()?;
    let (sent1, dropped1) = tb.lan_tx()?;
    s.lan_tx_dropped = dropped1 - dropped0;
    s.softnet_dropped = softnet_dropped() - softnet0;

    let win = (b_t - a_t).as_secs_f64();
    let pkts = (b_tx - a_tx) as f64;
    ensure!(pkts > 0.0, "{}: nothing was sent in the window", cell.key);
    s.pkts_per_s = pkts / win;
    let d: Vec<(f64, f64)> = a_cpu
        .iter()
        .zip(&b_cpu)
        .map(|(a, b)| ((b.0 - a.0) as f64 * tick_ns, (b.1 - a.1) as f64 * tick_ns))
        .collect();
    s.cpu_ns = d.iter().map(|x| x.0).sum::<f64>() / pkts;
    s.softirq_ns = d.iter().map(|x| x.1).sum::<f64>() / pkts;
    let other: f64 = d
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != GEN_CPU)
        .map(|(_, x)| x.0)
        .sum();
    s.other_busy_pct = 100.0 * other / (win * 1e9 * (d.len() - 1).max(1) as f64);
    s.legit_sent = sent.iter().sum();
    let recv = |i: u32| received.get(&legit_flow(i)).copied().unwrap_or(0);
    s.legit_received = (0..LEGIT_FLOWS).map(recv).sum();

    if let (Some((mut h, id)), Some(ex)) = (prog.take(), exporter) {
        s.xdp_over_sent = Some(
            (CounterSlot::ALL
                .iter()
                .map(|c| h.counter(*c).packets)
                .sum::<u64>()
                - xdp0) as f64
                / (sent1 - sent0).max(1) as f64,
        );
        export_stop.store(true, Ordering::SeqCst);
        let (mut pinned, mut ex, mut tally) =
            ex.join().map_err(|_| anyhow!("export thread panicked"))??;
        // The map at the end, then the last export pass past every timeout.
        let flows: HashMap<FlowKey, FlowStats> = pinned
            .flows()
            .map_err(|e| anyhow!("read the flow map: {e}"))?
            .into_iter()
            .map(|f| (f.key, f.stats))
            .collect();
        s.map_entries_end = Some(flows.len());
        let (mut in_map, mut exact, mut over) = (0, 0, 0);
        for i in 0..LEGIT_FLOWS {
            let f = legit_flow(i);
            let (key, side) = FlowKey::new(
                v4_mapped(f.ip().octets()),
                f.port(),
                v4_mapped(VICTIM.octets()),
                UDP_PORT,
                17,
                FAMILY_V4,
                0,
            );
            if let Some(st) = flows.get(&key) {
                in_map += 1;
                let n = st.dir[if side == SIDE_A { 0 } else { 1 }].packets;
                if n == recv(i) {
                    exact += 1;
                } else if n > recv(i) {
                    over += 1;
                }
            }
        }
        s.records_per_s =
            export_started.map(|t0| tally.records as f64 / t0.elapsed().as_secs_f64());
        let t = export.timeouts();
        let flush = monotonic_ns() + (t.idle + t.active + Duration::from_secs(1)).as_nanos() as u64;
        let recs = ex
            .poll(&mut pinned, flush, 0)
            .map_err(|e| anyhow!("last export pass: {e}"))?;
        tally.add(&recs);
        s.in_map = Some(in_map);
        s.exact = Some(exact);
        s.map_over_received = Some(over);
        s.records_exact = Some(
            (0..LEGIT_FLOWS)
                .filter(|i| tally.legit.get(&legit_flow(*i)).map(|e| e.1) == Some(recv(*i)))
                .count() as u32,
        );
        s.record_packets = Some(tally.legit.values().map(|e| e.1).sum());
        s.legit_records = Some(tally.legit.values().map(|e| e.0 as u64).sum());
        s.records = Some(tally.records);
        s.export_pass_ms_max = Some(tally.pass_ms_max);
        let p: &mut Xdp = h
            .ebpf
            .program_mut(m::PROGRAM)
            .context("program fw")?
            .try_into()?;
        p.detach(id).context("detach XDP")?;
    }
    drop(pins);
    Ok(s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

fn r(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn main() -> anyhow::Result<()> {
    let opts = options()?;
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the flood benchmark creates namespaces and loads XDP: run as root"
    );
    for tool in ["trafgen", "ip"] {
        Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| {
                format!("{tool} not found (cargo xtask setup installs netsniff-ng, iproute2)")
            })?;
    }
    ensure!(
        fw_testkit::cpus() >= 2,
        "needs at least 2 CPUs (trafgen on CPU {GEN_CPU}, this process on CPU {BENCH_CPU})"
    );
    pin_to_cpu(BENCH_CPU);
    catch_signals();
    let started = Instant::now();
    let tb = Testbed::new()?;
    let conf = tb.dir.path().join("flood.cfg");
    std::fs::write(&conf, flood_conf())?;
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for run_i in 0..opts.runs {
        let mut order: Vec<&Cell> = CELLS.iter().collect();
        order.rotate_left(run_i % CELLS.len());
        for cell in order {
            eprintln!("flood: run {} cell {} ({})", run_i + 1, cell.key, cell.what);
            let s = measure(&tb, cell, opts.window, opts.legit_period, &conf)
                .with_context(|| format!("cell {}", cell.key))?;
            let ok = s.attempts.iter().filter(|a| a.is_some()).count();
            eprintln!(
                "  {:.3} Mpps  softirq {:.0} ns/pkt  cpu {:.0} ns/pkt  legit in map {:?} exact {:?} records exact {:?} of {LEGIT_FLOWS}  connects {ok}/{}  map {:?}",
                s.pkts_per_s / 1e6,
                s.softirq_ns,
                s.cpu_ns,
                s.in_map,
                s.exact,
                s.records_exact,
                s.attempts.len(),
                s.map_entries_end,
            );
            samples.entry(cell.key).or_default().push(s);
        }
    }
    let syncookies = tb.syncookies.clone();
    drop(tb);
    report(&samples, &opts, &syncookies, started.elapsed())
}

fn report(
    samples: &BTreeMap<&str, Vec<Sample>>,
    opts: &Options,
    syncookies: &str,
    took: Duration,
) -> anyhow::Result<()> {
    let n = LEGIT_FLOWS as f64;
    let mut cells = serde_json::Map::new();
    println!(
        "\nSYN flood (trafgen, random sources in 198.18.0.0/15) against a device behind the XDP interface; {LEGIT_FLOWS} legitimate UDP flows; client {CONNECT_PER_S} conn/s, {} s timeout (median of {} runs x {} ms)",
        CONNECT_TIMEOUT.as_secs(),
        opts.runs,
        opts.window.as_millis()
    );
    println!(
        "{:<18} {:>7} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "cell",
        "Mpps",
        "softirq ns",
        "cpu ns",
        "in map %",
        "exact %",
        "records %",
        "connect %",
        "p50 ms",
        "p99 ms"
    );
    for cell in CELLS {
        let Some(v) = samples.get(cell.key) else {
            continue;
        };
        let med = |f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let med_opt = |f: &dyn Fn(&Sample) -> Option<f64>| -> Option<f64> {
            let x: Vec<f64> = v.iter().filter_map(f).collect();
            (!x.is_empty()).then(|| median(x))
        };
        let mut lat: Vec<f64> = v
            .iter()
            .flat_map(|s| s.attempts.iter().flatten().copied())
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let attempts: usize = v.iter().map(|s| s.attempts.len()).sum();
        let success = lat.len() as f64 / attempts.max(1) as f64;
        let in_map = med_opt(&|s| s.in_map.map(|x| x as f64 / n));
        let exact = med_opt(&|s| s.exact.map(|x| x as f64 / n));
        let rec_exact = med_opt(&|s| s.records_exact.map(|x| x as f64 / n));
        let rec_pkts = med_opt(&|s| {
            s.record_packets
                .map(|x| x as f64 / s.legit_received.max(1) as f64)
        });
        let pct_s = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1}", 100.0 * x));
        let (p50, p99) = (pct(&lat, 50.0), pct(&lat, 99.0));
        println!(
            "{:<18} {:>7.3} {:>10.0} {:>8.0} {:>9} {:>9} {:>9} {:>9.1} {:>8} {:>8}",
            cell.key,
            med(&|s| s.pkts_per_s) / 1e6,
            med(&|s| s.softirq_ns),
            med(&|s| s.cpu_ns),
            pct_s(in_map),
            pct_s(exact),
            pct_s(rec_exact),
            100.0 * success,
            p50.map_or("-".into(), |x| format!("{x:.2}")),
            p99.map_or("-".into(), |x| format!("{x:.2}")),
        );
        let runs: Vec<Value> = v
            .iter()
            .map(|s| {
                let ok = s.attempts.iter().filter(|a| a.is_some()).count();
                json!({
                    "pkts_per_s": s.pkts_per_s.round(),
                    "softirq_ns_per_pkt": r(s.softirq_ns, 1),
                    "cpu_ns_per_pkt": r(s.cpu_ns, 1),
                    "other_cpus_busy_pct": r(s.other_busy_pct, 1),
                    "xdp_counted_over_sent": s.xdp_over_sent.map(|x| r(x, 4)),
                    "lan_tx_dropped": s.lan_tx_dropped,
                    "softnet_dropped": s.softnet_dropped,
                    "legit_sent": s.legit_sent,
                    "legit_received": s.legit_received,
                    "legit_in_map": s.in_map,
                    "legit_in_map_exact": s.exact,
                    "legit_map_over_received": s.map_over_received,
                    "flow_map_entries_end": s.map_entries_end,
                    "legit_records_exact": s.records_exact,
                    "legit_records": s.legit_records,
                    "legit_record_packets": s.record_packets,
                    "records": s.records,
                    "export_pass_ms_max": s.export_pass_ms_max.map(|x| r(x, 1)),
                    "connects": s.attempts.len(),
                    "connected": ok,
                })
            })
            .collect();
        // How long the flood takes to write as many new flows as the LRU holds.
        let turnover_ms = (cell.flood && cell.program.is_some()).then(|| {
            r(
                m::FLOWS_MAX_ENTRIES as f64 / med(&|s| s.pkts_per_s) * 1e3,
                1,
            )
        });
        cells.insert(
            cell.key.to_string(),
            json!({
                "what": cell.what,
                "flood": cell.flood,
                "program": cell.program.is_some(),
                "syn_auth": cell.syn_auth,
                "pkts_per_s": med(&|s| s.pkts_per_s).round(),
                "softirq_ns_per_pkt": r(med(&|s| s.softirq_ns), 1),
                "cpu_ns_per_pkt": r(med(&|s| s.cpu_ns), 1),
                "legit_flows_in_map_share": in_map.map(|x| r(x, 4)),
                "legit_flows_exact_share": exact.map(|x| r(x, 4)),
                "legit_flows_records_exact_share": rec_exact.map(|x| r(x, 4)),
                "legit_packets_in_records_share": rec_pkts.map(|x| r(x, 4)),
                "flow_map_turnover_ms": turnover_ms,
                "records_per_s": med_opt(&|s| s.records_per_s).map(|x| x.round()),
                "client_success_share": r(success, 4),
                "client_attempts": attempts,
                "connect_ms_p50": p50.map(|x| r(x, 3)),
                "connect_ms_p99": p99.map(|x| r(x, 3)),
                "runs": runs,
            }),
        );
    }
    println!("took {:.0} s", took.as_secs_f64());
    let export = Export::default();
    let doc = json!({
        "bench": "flood",
        "cells": cells,
        "runs": opts.runs,
        "window_ms": opts.window.as_millis() as u64,
        "legit_flows": LEGIT_FLOWS,
        "legit_period_ms": opts.legit_period.as_millis() as u64,
        "connect_per_s": CONNECT_PER_S,
        "connect_timeout_ms": CONNECT_TIMEOUT.as_millis() as u64,
        "flow_map_entries": m::FLOWS_MAX_ENTRIES,
        "export": {
            "poll_interval_ms": export.poll_interval_ms,
            "idle_timeout_s": export.idle_timeout_s,
            "active_timeout_s": export.active_timeout_s,
        },
        "victim_tcp_syncookies": syncookies,
        "generator": format!("trafgen --cpus 1 --prio-high (worker on CPU {GEN_CPU}), 54-byte TCP SYNs, random sources in 198.18.0.0/15, veth"),
        "xdp_mode": "skb",
        "machine": machine(),
    });
    if let Some(path) = &opts.json {
        write_json(path, &doc)?;
    }
    Ok(())
}
