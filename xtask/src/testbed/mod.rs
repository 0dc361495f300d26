//! `cargo xtask testbed up|down|status`: the Turing Pi cluster rebuilt from network
//! namespaces on one machine, used by `demo`, `eval` and the benchmarks.
//!
//! ```text
//!                         tad-sw (switch namespace)
//!   tad-dev1 eth0 --- p-dev1 --+                     +-- p-router --- lan0 tad-router wan0 --- eth0 tad-wan
//!   tad-dev2 eth0 --- p-dev2 --+ br-lan (ports       |     192.0.2.1     (XDP)   203.0.113.1   203.0.113.10
//!   tad-dev3 eth0 --- p-dev3 --+  isolated, like     |                                          ("internet"
//!   tad-attacker eth0 - p-atk -+  AP isolation) -----+              mgmt0 198.51.100.1           services)
//!   tad-replay eth0 - p-replay +                                      |
//!                              br-mgmt --- p-rmgmt -------------------+
//!                                 |--- p-det --- eth0 tad-detector 198.51.100.2
//!                                 +--- p-mon --- eth0 tad-monitor  198.51.100.3 (broker, dashboard)
//!                                                     host0 203.0.113.254/30 === tad-dash 203.0.113.253/30 (root)
//! ```
//!
//! - LAN 192.0.2.0/24: devices .11.., the attacker .66-.76 (one address per attack),
//!   the replay host .99. The LAN ports are isolated on the bridge and the router
//!   answers ARP for the whole LAN (`proxy_arp_pvlan`), so even device-to-device and
//!   attacker-to-device traffic crosses the router's LAN interface and its XDP
//!   program, as on a gateway with client isolation.
//! - Management 198.51.100.0/24: router, detector, monitor (the MQTT/TLS bus).
//!   Devices reach the broker on the monitor (and nothing else there) through the
//!   router: their signed telemetry (issue 17).
//! - WAN 203.0.113.0/25: the router's upstream and an "internet" host with the
//!   services IoT devices talk to; 203.0.113.252/30: root <-> monitor, so the
//!   dashboard URL works from the root namespace.
//! - 198.18.0.0/15: replayed captures' addresses; the router blackholes it.
//! - No namespace has a default route; IPv6 is disabled in every namespace (replayed
//!   IPv6 frames are still seen by XDP). Everything is named `tad-*`.
//!
//! What `up` creates (and what the demo later starts: processes, pinned BPF
//! objects) is recorded in [`STATE_FILE`]; `down` removes exactly that, and `up`
//! undoes itself on failure or Ctrl-C.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use crate::util;

// The process harness shared by the stack and the benchmarks.
pub mod daemons;
// Namespace plumbing: `ip`, programs and threads in a namespace, Ctrl-C.
pub mod netns;
// Node configs serialised from the roles' own config types.
pub mod nodes;
// The whole pipeline (broker, fw-ctl, detector, dashboard) on the testbed.
pub mod stack;
// The state file: what `up` made and the demo started.
mod state;
// Benign IoT traffic, services and login guessing for the demo.
pub mod traffic;
use netns::{in_ns, ip, ip_in, sysctl};
use state::proc_start_ticks;
pub use state::{STATE_DIR, STATE_FILE, State, forget_process, record_bpf_pin, record_process};

/// The switch namespace holding the LAN and management bridges.
pub const NS_SWITCH: &str = "tad-sw";
/// The router (gateway) node: fw-ctl and the XDP program.
pub const NS_ROUTER: &str = "tad-router";
/// The detector node.
pub const NS_DETECTOR: &str = "tad-detector";
/// The monitor node: Mosquitto and the dashboard.
pub const NS_MONITOR: &str = "tad-monitor";
/// The "internet" host behind the router's WAN side.
pub const NS_WAN: &str = "tad-wan";
/// The attacker host on the LAN.
pub const NS_ATTACKER: &str = "tad-attacker";
/// The host that injects replayed captures on the LAN.
pub const NS_REPLAY: &str = "tad-replay";

/// Interface name of every host's link (inside its own namespace).
pub const HOST_IF: &str = "eth0";
/// The router's LAN-facing interface (XDP attaches here).
pub const ROUTER_LAN_IF: &str = "lan0";
/// The router's management interface.
pub const ROUTER_MGMT_IF: &str = "mgmt0";
/// The router's WAN interface.
pub const ROUTER_WAN_IF: &str = "wan0";
/// Root-namespace end of the dashboard link.
pub const ROOT_LINK: &str = "tad-dash";
/// Monitor-namespace end of the dashboard link.
pub const MONITOR_HOST_IF: &str = "host0";

/// Router LAN address (the devices' gateway).
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Router management address.
pub const ROUTER_MGMT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Router WAN address.
pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Detector address.
pub const DETECTOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Monitor (broker, dashboard) management address.
pub const MONITOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The "internet" services host.
pub const WAN_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Root end of the dashboard link.
pub const ROOT_DASH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 253);
/// Monitor end of the dashboard link (the dashboard URL's host).
pub const MONITOR_DASH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// The replay host's own address.
pub const REPLAY_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
/// Number of attacker addresses (192.0.2.66 onwards), one per attack in the demo.
pub const ATTACKER_ADDRS: u8 = 11;
/// Most device hosts `up` will create.
pub const MAX_DEVICES: u8 = 9;
/// Replayed IPv4 addresses live here; the router blackholes it.
pub const REPLAY_V4: &str = "198.18.0.0/15";
/// The top /23 of [`REPLAY_V4`], which no replay slice reaches: an address space
/// without hosts that the attacker can reach through the router (blackholed there,
/// so probes get no answer at all).
pub const EMPTY_SPACE: &str = "198.19.254.0/23";

/// Namespace of device `i` (1-based).
pub fn device_ns(i: u8) -> String {
    format!("tad-dev{i}")
}

/// LAN address of device `i` (1-based): 192.0.2.10+i.
pub fn device_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + i)
}

/// Attacker address `i` (0-based): 192.0.2.66+i.
pub fn attacker_addr(i: u8) -> Ipv4Addr {
    assert!(
        i < ATTACKER_ADDRS,
        "attacker address index {i} out of range"
    );
    Ipv4Addr::new(192, 0, 2, 66 + i)
}

#[derive(clap::Args)]
pub struct TestbedArgs {
    #[command(subcommand)]
    cmd: TestbedCmd,
}

#[derive(clap::Subcommand)]
enum TestbedCmd {
    /// Create the namespaces, links, addresses and routes.
    Up {
        /// Number of IoT device hosts (1-9).
        #[arg(long, default_value_t = 3)]
        devices: u8,
    },
    /// Remove everything `up` (and the demo) created.
    Down,
    /// Print what exists.
    Status,
}

pub fn run(a: &TestbedArgs) -> anyhow::Result<()> {
    match a.cmd {
        TestbedCmd::Up { devices } => {
            netns::install_interrupt_handler();
            let tb = Testbed::up(devices)?;
            tb.keep();
            print_status()?;
            eprintln!("testbed: up; `cargo xtask testbed down` removes it");
            Ok(())
        }
        TestbedCmd::Down => down(),
        TestbedCmd::Status => print_status(),
    }
}

/// The testbed while it is up; dropping it tears it down (unless [`Testbed::keep`]).
pub struct Testbed {
    /// Number of device hosts.
    pub devices: u8,
    armed: bool,
}

impl Testbed {
    /// Builds the testbed with `devices` device hosts. Fails when one (or any
    /// `tad-*` namespace of the layout) already exists; on failure or Ctrl-C,
    /// removes what it made.
    pub fn up(devices: u8) -> anyhow::Result<Testbed> {
        ensure!(
            util::is_root(),
            "the testbed creates network namespaces: run as root"
        );
        ensure!(
            (1..=MAX_DEVICES).contains(&devices),
            "--devices must be 1..={MAX_DEVICES}, got {devices}"
        );
        if State::load()?.is_some() {
            bail!(
                "the testbed is already up ({STATE_FILE} exists); run `cargo xtask testbed down` first"
            );
        }
        let clash: Vec<String> = layout_namespaces(MAX_DEVICES)
            .into_iter()
            .filter(|n| netns::ns_exists(n))
            .collect();
        ensure!(
            clash.is_empty(),
            "namespaces {} already exist but are not recorded in {STATE_FILE}; remove them (`ip netns del NAME`) or run `cargo xtask testbed down`",
            clash.join(", ")
        );
        ensure!(
            ip(&["link", "show", ROOT_LINK]).is_err(),
            "link {ROOT_LINK} already exists in the root namespace; remove it (`ip link del {ROOT_LINK}`)"
        );
        State {
            devices,
            ..State::default()
        }
        .save()?;
        let tb = Testbed {
            devices,
            armed: true,
        };
        build(devices).context("testbed up failed (everything it made was removed)")?;
        eprintln!("testbed: up ({devices} devices)");
        Ok(tb)
    }

    /// Leaves the testbed up after this value is dropped.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = down()
        {
            eprintln!("testbed: teardown failed: {e:#}");
        }
    }
}

/// Every namespace the layout can have (with `devices` device hosts).
fn layout_namespaces(devices: u8) -> Vec<String> {
    let mut v: Vec<String> = [
        NS_SWITCH,
        NS_ROUTER,
        NS_DETECTOR,
        NS_MONITOR,
        NS_WAN,
        NS_ATTACKER,
        NS_REPLAY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend((1..=devices).map(device_ns));
    v
}

fn add_ns(name: &str) -> anyhow::Result<()> {
    netns::check_interrupt()?;
    ip(&["netns", "add", name])?;
    State::update(|s| s.namespaces.push(name.into()))?;
    ip_in(name, &["link", "set", "lo", "up"])?;
    // No IPv6 inside the testbed: no router solicitations or MLD reports from the
    // hosts; replayed IPv6 frames still reach XDP.
    for scope in ["all", "default"] {
        sysctl(name, &format!("net.ipv6.conf.{scope}.disable_ipv6"), "1")?;
    }
    Ok(())
}

/// A veth from a host namespace to a switch port on `bridge` in the switch namespace.
fn attach(
    host_ns: &str,
    host_if: &str,
    port: &str,
    bridge: &str,
    isolated: bool,
) -> anyhow::Result<()> {
    netns::check_interrupt()?;
    ip_in(
        NS_SWITCH,
        &[
            "link", "add", port, "type", "veth", "peer", "name", host_if, "netns", host_ns,
        ],
    )?;
    ip_in(NS_SWITCH, &["link", "set", port, "master", bridge, "up"])?;
    if isolated {
        netns::run_quiet(Command::new("bridge").args([
            "-n", NS_SWITCH, "link", "set", "dev", port, "isolated", "on",
        ]))?;
    }
    ip_in(host_ns, &["link", "set", host_if, "up"])?;
    Ok(())
}

fn addr(ns: &str, iface: &str, cidr: &str) -> anyhow::Result<()> {
    ip_in(ns, &["addr", "add", cidr, "dev", iface])?;
    Ok(())
}

fn route(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["route", "add"];
    v.extend_from_slice(args);
    ip_in(ns, &v)?;
    Ok(())
}

fn build(devices: u8) -> anyhow::Result<()> {
    for ns in layout_namespaces(devices) {
        add_ns(&ns)?;
    }
    for br in ["br-lan", "br-mgmt"] {
        ip_in(NS_SWITCH, &["link", "add", br, "type", "bridge"])?;
        ip_in(NS_SWITCH, &["link", "set", br, "up"])?;
    }

    // LAN: the router's port is the only non-isolated one.
    attach(NS_ROUTER, ROUTER_LAN_IF, "p-router", "br-lan", false)?;
    addr(NS_ROUTER, ROUTER_LAN_IF, &format!("{ROUTER_LAN}/24"))?;
    let lan_route = ["203.0.113.0/25", "via", "192.0.2.1"];
    // Devices also reach the broker (their signed telemetry, issue 17) through
    // the router, and only it on the management network.
    let broker_route = format!("{MONITOR}/32");
    for i in 1..=devices {
        let ns = device_ns(i);
        attach(&ns, HOST_IF, &format!("p-dev{i}"), "br-lan", true)?;
        addr(&ns, HOST_IF, &format!("{}/24", device_addr(i)))?;
        route(&ns, &lan_route)?;
        route(&ns, &[&broker_route, "via", "192.0.2.1"])?;
    }
    attach(NS_ATTACKER, HOST_IF, "p-atk", "br-lan", true)?;
    for i in 0..ATTACKER_ADDRS {
        addr(NS_ATTACKER, HOST_IF, &format!("{}/24", attacker_addr(i)))?;
    }
    route(NS_ATTACKER, &lan_route)?;
    // The empty address space the demo's unanswered scans probe: routed through
    // the router, which blackholes it (no host, no ICMP answer).
    route(NS_ATTACKER, &[EMPTY_SPACE, "via", "192.0.2.1"])?;
    attach(NS_REPLAY, HOST_IF, "p-replay", "br-lan", true)?;
    addr(NS_REPLAY, HOST_IF, &format!("{REPLAY_HOST}/24"))?;

    // Management network.
    attach(NS_ROUTER, ROUTER_MGMT_IF, "p-rmgmt", "br-mgmt", false)?;
    addr(NS_ROUTER, ROUTER_MGMT_IF, &format!("{ROUTER_MGMT}/24"))?;
    attach(NS_DETECTOR, HOST_IF, "p-det", "br-mgmt", false)?;
    addr(NS_DETECTOR, HOST_IF, &format!("{DETECTOR}/24"))?;
    attach(NS_MONITOR, HOST_IF, "p-mon", "br-mgmt", false)?;
    addr(NS_MONITOR, HOST_IF, &format!("{MONITOR}/24"))?;
    // The way back to the devices' MQTT connections.
    route(
        NS_MONITOR,
        &["192.0.2.0/24", "via", &ROUTER_MGMT.to_string()],
    )?;

    // WAN: a point-to-point veth router <-> "internet" host.
    ip_in(
        NS_ROUTER,
        &[
            "link",
            "add",
            ROUTER_WAN_IF,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IF,
            "netns",
            NS_WAN,
        ],
    )?;
    addr(NS_ROUTER, ROUTER_WAN_IF, &format!("{ROUTER_WAN}/25"))?;
    ip_in(NS_ROUTER, &["link", "set", ROUTER_WAN_IF, "up"])?;
    addr(NS_WAN, HOST_IF, &format!("{WAN_HOST}/25"))?;
    ip_in(NS_WAN, &["link", "set", HOST_IF, "up"])?;
    route(NS_WAN, &["192.0.2.0/24", "via", "203.0.113.1"])?;

    // Root <-> monitor, for the dashboard URL.
    netns::check_interrupt()?;
    ip(&[
        "link",
        "add",
        ROOT_LINK,
        "type",
        "veth",
        "peer",
        "name",
        MONITOR_HOST_IF,
        "netns",
        NS_MONITOR,
    ])?;
    State::update(|s| s.root_links.push(ROOT_LINK.into()))?;
    ip(&["addr", "add", &format!("{ROOT_DASH}/30"), "dev", ROOT_LINK])?;
    ip(&["link", "set", ROOT_LINK, "up"])?;
    addr(NS_MONITOR, MONITOR_HOST_IF, &format!("{MONITOR_DASH}/30"))?;
    ip_in(NS_MONITOR, &["link", "set", MONITOR_HOST_IF, "up"])?;

    // The router: forwards, answers ARP for the isolated LAN ports, sends no
    // redirects (LAN-to-LAN traffic must keep crossing it), no reverse-path filter
    // (replayed sources), blackholes the replay range.
    sysctl(NS_ROUTER, "net.ipv4.ip_forward", "1")?;
    for (k, v) in [
        ("proxy_arp", "1"),
        ("proxy_arp_pvlan", "1"),
        ("send_redirects", "0"),
        ("rp_filter", "0"),
    ] {
        sysctl(NS_ROUTER, &format!("net.ipv4.conf.{ROUTER_LAN_IF}.{k}"), v)?;
    }
    for k in ["all", "default"] {
        sysctl(NS_ROUTER, &format!("net.ipv4.conf.{k}.send_redirects"), "0")?;
        sysctl(NS_ROUTER, &format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
    }
    // Proxy ARP answers at once (the default delays them up to 0.8 s).
    sysctl(
        NS_ROUTER,
        &format!("net.ipv4.neigh.{ROUTER_LAN_IF}.proxy_delay"),
        "0",
    )?;
    route(NS_ROUTER, &["blackhole", REPLAY_V4])?;
    // Native XDP_TX on a veth sends the frame into the peer's receive queue, which
    // needs NAPI on the peer: GRO on (or an XDP program) there. Without it the
    // router's SYN-authentication answers (fw_common::synauth) are dropped.
    netns::run_quiet(in_ns(NS_SWITCH, "ethtool").args(["-K", "p-router", "gro", "on"]))
        .context("enabling GRO on the router's switch port (XDP_TX)")?;
    Ok(())
}

/// Removes what the state file records (processes, BPF pins, namespaces, root
/// links), and any namespace of the layout left without a record. Safe to run again.
pub fn down() -> anyhow::Result<()> {
    ensure!(util::is_root(), "removing the testbed needs root");
    // The switch port's xdp-filter (see `up`): its libxdp pins outlive the device.
    if Path::new(&netns::ns_path(NS_SWITCH)).exists() {
        let _ = netns::run_quiet(in_ns(NS_SWITCH, "xdp-filter").args(["unload", "p-router"]));
    }
    let state = State::load()?;
    let mut namespaces = state
        .as_ref()
        .map(|s| s.namespaces.clone())
        .unwrap_or_default();
    for ns in layout_namespaces(MAX_DEVICES) {
        if netns::ns_exists(&ns) && !namespaces.contains(&ns) {
            eprintln!("testbed: {ns} exists without a record; removing it too");
            namespaces.push(ns);
        }
    }
    let mut errors = Vec::new();
    if let Some(s) = &state {
        let pids: Vec<i32> = s
            .processes
            .iter()
            .filter(|p| p.start_ticks == 0 || proc_start_ticks(p.pid) == Some(p.start_ticks))
            .map(|p| p.pid)
            .collect();
        if !pids.is_empty() {
            eprintln!("testbed: stopping {} recorded processes", pids.len());
            netns::terminate(&pids, Duration::from_secs(3));
        }
    }
    // Whatever still runs inside our namespaces was started there by us.
    let leftover: Vec<i32> = namespaces
        .iter()
        .flat_map(|ns| netns::ns_pids(ns))
        .collect();
    if !leftover.is_empty() {
        eprintln!(
            "testbed: stopping {} processes left in the namespaces",
            leftover.len()
        );
        netns::terminate(&leftover, Duration::from_secs(3));
    }
    if let Some(s) = &state {
        for dir in &s.bpf_pins {
            let p = Path::new(dir);
            if p.starts_with("/sys/fs/bpf") && p.exists() {
                eprintln!("testbed: removing pinned BPF objects {dir}");
                if let Err(e) = std::fs::remove_dir_all(p) {
                    errors.push(format!("cannot remove {dir}: {e}"));
                }
            }
        }
    }
    for ns in namespaces.iter().rev() {
        if netns::ns_exists(ns)
            && let Err(e) = ip(&["netns", "del", ns])
        {
            errors.push(format!("{e:#}"));
        }
    }
    for l in state
        .as_ref()
        .map(|s| s.root_links.clone())
        .unwrap_or_default()
    {
        if ip(&["link", "show", &l]).is_ok()
            && let Err(e) = ip(&["link", "del", &l])
        {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        let _ = std::fs::remove_file(STATE_FILE);
        let _ = std::fs::remove_dir(STATE_DIR);
        eprintln!("testbed: down");
        Ok(())
    } else {
        bail!("testbed down left something behind: {}", errors.join("; "))
    }
}

fn print_status() -> anyhow::Result<()> {
    let state = State::load()?;
    let Some(s) = state else {
        let stray: Vec<String> = layout_namespaces(MAX_DEVICES)
            .into_iter()
            .filter(|n| netns::ns_exists(n))
            .collect();
        if stray.is_empty() {
            println!("testbed: down (no {STATE_FILE}, no tad-* namespaces)");
        } else {
            println!(
                "testbed: no state file, but these namespaces exist: {}",
                stray.join(", ")
            );
        }
        return Ok(());
    };
    println!("testbed: up, {} devices (state: {STATE_FILE})", s.devices);
    for ns in &s.namespaces {
        if !netns::ns_exists(ns) {
            println!("  {ns:<14} MISSING");
            continue;
        }
        let addrs = ip_in(ns, &["-br", "-4", "addr"]).unwrap_or_default();
        let addrs: Vec<String> = addrs
            .lines()
            .filter(|l| !l.starts_with("lo "))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let name = f
                    .first()
                    .map(|n| n.split('@').next().unwrap_or(n))
                    .unwrap_or("");
                format!(
                    "{name} {}",
                    f.get(2..).map(|a| a.join(" ")).unwrap_or_default()
                )
            })
            .collect();
        let role = match ns.as_str() {
            NS_SWITCH => "switch (br-lan, br-mgmt)".to_string(),
            _ => addrs.join(", "),
        };
        println!("  {ns:<14} {role}");
    }
    for l in &s.root_links {
        let ok = ip(&["link", "show", l]).is_ok();
        println!("  root link {l} {}", if ok { "present" } else { "MISSING" });
    }
    if netns::ns_exists(NS_ROUTER) {
        let link = ip_in(NS_ROUTER, &["link", "show", ROUTER_LAN_IF]).unwrap_or_default();
        let xdp = if link.contains("xdp") {
            "attached"
        } else {
            "not attached"
        };
        println!("  XDP on {NS_ROUTER}/{ROUTER_LAN_IF}: {xdp}");
    }
    for p in &s.processes {
        let up = proc_start_ticks(p.pid).is_some_and(|t| p.start_ticks == 0 || t == p.start_ticks);
        println!(
            "  process {} (pid {}): {}",
            p.name,
            p.pid,
            if up { "running" } else { "gone" }
        );
    }
    for d in &s.bpf_pins {
        println!(
            "  BPF pins {d}: {}",
            if Path::new(d).exists() {
                "present"
            } else {
                "gone"
            }
        );
    }
    if let Some(u) = &s.dashboard_url {
        println!("  dashboard: {u}");
    }
    Ok(())
}

/// Directory for the demo's and eval's run files (configs, logs, certificates).
pub fn run_dir(name: &str) -> anyhow::Result<PathBuf> {
    let d = util::workspace_root().join("target/tad").join(name);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_addresses_stay_in_documentation_ranges() {
        let ok = |a: Ipv4Addr| {
            let o = a.octets();
            (o[0], o[1], o[2]) == (192, 0, 2)
                || (o[0], o[1], o[2]) == (198, 51, 100)
                || (o[0], o[1], o[2]) == (203, 0, 113)
        };
        let mut all = vec![
            ROUTER_LAN,
            ROUTER_MGMT,
            ROUTER_WAN,
            DETECTOR,
            MONITOR,
            WAN_HOST,
            ROOT_DASH,
            MONITOR_DASH,
            REPLAY_HOST,
        ];
        all.extend((1..=MAX_DEVICES).map(device_addr));
        all.extend((0..ATTACKER_ADDRS).map(attacker_addr));
        for a in &all {
            assert!(ok(*a), "{a} is outside the testbed ranges");
        }
        let mut uniq = all.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), all.len(), "two hosts share an address");
    }

    #[test]
    fn names_fit_linux_limits_and_carry_the_prefix() {
        for ns in layout_namespaces(MAX_DEVICES) {
            assert!(ns.starts_with("tad-"), "{ns}");
        }
        for l in [
            ROOT_LINK,
            ROUTER_LAN_IF,
            ROUTER_MGMT_IF,
            ROUTER_WAN_IF,
            MONITOR_HOST_IF,
            "p-replay",
            "p-router",
        ] {
            assert!(l.len() <= 15, "{l} is longer than IFNAMSIZ-1");
        }
    }
}
