//! The bed of the `footprint` and `pipeline` benchmarks ([`Bed`]): two network
//! namespaces of our own, `tad<prefix>-gw-<pid>` and `tad<prefix>-gen-<pid>`, joined by a
//! veth (`fplan` / `fpgen`, 198.18.0.0/15, no route out); a real Mosquitto with
//! mutual TLS and the project's ACL on 127.0.0.1:8883 in the gateway namespace,
//! where every daemon runs (started through the shared harness,
//! [`crate::testbed::daemons`], with configs from [`crate::testbed::nodes`]); the
//! XDP program on `fplan` in skb and observe mode under a private instance.
//!
//! Also the UDP flow generators of the generator namespace ([`Traffic`]: flows kept
//! active; [`burst`]: one datagram per flow) and the per-process readings
//! ([`cpu_s`], [`rss_mib`]). Everything started is stopped by PID, the pins removed
//! and the namespaces deleted when the [`Bed`] is dropped, on every exit path.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fw_ctl::config::GatewayFile;
use tad_wire::Mode;

use crate::{
    build,
    testbed::{
        daemons::{self, Daemons, in_ns_bin},
        netns,
        nodes::{self, BROKER_PORT, DETECTOR_ID},
    },
};

/// Source addresses of the generator.
pub const SOURCES: u32 = 100;
/// First destination port of the generated flows.
pub const BASE_PORT: u16 = 20_000;
/// Gateway address on the veth.
pub const GW_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Broker host of the bed's nodes (inside the gateway namespace).
const BROKER_HOST: &str = "127.0.0.1";

/// Generator source address `i` (198.18.1.1 + i).
fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 1)) + i)
}

/// Builds the release binary `name` (the workspace package set, see
/// [`crate::util::WORKSPACE`]); false (with the reason printed) when it does not
/// build.
pub fn build_bin(bench: &str, name: &str) -> bool {
    match build::release(&["--bin", name]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("{bench}: {name} does not build ({e:#}); it is skipped");
            false
        }
    }
}

/// The namespaces, the broker, the daemons, the pins and the run directory of one
/// benchmark run; removed when dropped (the daemons first).
pub struct Bed {
    /// The gateway namespace (broker, XDP, every daemon).
    pub gw: String,
    /// The generator namespace.
    pub gen_ns: String,
    /// The private fw-ctl instance.
    pub instance: String,
    /// Run directory (configs, logs, certificates, state and status files).
    pub dir: PathBuf,
    /// Certificates (`crate::certs` output).
    pub certs: PathBuf,
    /// The started processes (`mosquitto` first).
    pub daemons: Daemons,
}

impl Bed {
    /// Namespaces `tad<prefix>-gw-<pid>` and `tad<prefix>-gen-<pid>`, the veth and
    /// its addresses, the run directory `$TMPDIR/tad-<bench>-<pid>`, certificates
    /// for `nodes` and the broker.
    ///
    /// # Errors
    /// Any `ip` step, the certificates or the broker failing.
    pub fn up(bench: &str, prefix: &str, nodes: &[&str]) -> anyhow::Result<Bed> {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("tad-{bench}-{me}"));
        let mut bed = Bed {
            gw: format!("tad{prefix}-gw-{me}"),
            gen_ns: format!("tad{prefix}-gen-{me}"),
            instance: format!("tad{prefix}-{me}"),
            certs: dir.join("certs"),
            daemons: Daemons::new(&dir, false),
            dir,
        };
        std::fs::create_dir_all(&bed.dir)?;
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

        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), BROKER_PORT);
        crate::certs::run(&crate::certs::CertsArgs {
            out: bed.certs.clone(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            broker_names: Vec::new(),
            listen,
            broker_user: Some("root".into()),
            days: 2,
            new_ca: false,
        })
        .context("making certificates")?;
        let (gw, certs) = (bed.gw.clone(), bed.certs.clone());
        daemons::start_broker(&mut bed.daemons, &gw, &certs, listen)?;
        Ok(bed)
    }

    /// The bed's broker and certificates.
    pub fn bus(&self) -> nodes::Bus<'_> {
        nodes::Bus {
            host: BROKER_HOST,
            certs: &self.certs,
        }
    }

    /// The gateway config of the bed (`fplan`, skb, observe, nothing allowlisted,
    /// [`DETECTOR_ID`] trusted), export and maps left to the caller.
    ///
    /// # Errors
    /// See [`nodes::gateway`].
    pub fn gateway(&self) -> anyhow::Result<GatewayFile> {
        nodes::gateway(
            &nodes::Gateway {
                instance: &self.instance,
                iface: "fplan",
                xdp_mode: "skb",
                enforce: false,
                dir: &self.dir,
                management: &[],
                allow_own_addresses: false,
                detectors: &[DETECTOR_ID],
            },
            &self.bus(),
        )
    }

    /// Writes the detector's config (observe mode) and starts `detector run` as
    /// `detector`.
    ///
    /// # Errors
    /// Writing the config or starting the process failing.
    pub fn spawn_detector(&mut self) -> anyhow::Result<()> {
        let c = self.dir.join("detector.toml");
        nodes::write(&c, &nodes::detector(Mode::Observe, &[], &self.bus()))?;
        let mut cmd = in_ns_bin(&self.gw, "detector");
        cmd.args(["run", "--config"]).arg(&c);
        self.daemons.spawn("detector", "detector", &mut cmd)?;
        Ok(())
    }

    /// Writes `cfg` as `gateway.toml` and loads the XDP program on `fplan` (skb,
    /// observe); returns the config path.
    ///
    /// # Errors
    /// Writing the config or `fw-ctl load` failing.
    pub fn load_xdp(&self, cfg: &GatewayFile) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("gateway.toml");
        nodes::write(&path, cfg)?;
        daemons::fw_ctl_load(&daemons::Load {
            ns: &self.gw,
            instance: &self.instance,
            config: &path,
            iface: "fplan",
            xdp_mode: "skb",
            observe: true,
        })?;
        Ok(path)
    }

    /// Starts `fw-ctl run` with config `conf` as `fw_ctl`.
    ///
    /// # Errors
    /// The process does not start.
    pub fn spawn_fw_ctl(&mut self, conf: &Path) -> anyhow::Result<()> {
        let mut cmd = in_ns_bin(&self.gw, "fw-ctl");
        cmd.args(["--instance", &self.instance, "run", "--config"])
            .arg(conf);
        self.daemons.spawn("fw_ctl", "fw_ctl", &mut cmd)?;
        Ok(())
    }

    /// Entries in the flow map, from `fw-ctl --json status`.
    pub fn map_flows(&self) -> Option<u64> {
        let out = netns::run_quiet(in_ns_bin(&self.gw, "fw-ctl").args([
            "--instance",
            &self.instance,
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
}

impl Drop for Bed {
    fn drop(&mut self) {
        // The daemons first, then the program, the namespaces and the files.
        let _ = std::mem::replace(&mut self.daemons, Daemons::new(&self.dir, false));
        daemons::fw_ctl_unload(&self.gw, &self.instance);
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.instance));
        for ns in [&self.gw, &self.gen_ns] {
            if netns::ns_exists(ns) {
                let _ = netns::ip(&["netns", "del", ns]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Records exported so far, from the daemon's status file.
pub fn exported(status: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(status).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v["records_exported_total"].as_u64()
}

/// `x` rounded to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Writes the JSON result `j` to `json_out` (parents created).
///
/// # Errors
/// The file cannot be written.
pub fn write_json(json_out: &Path, j: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_string_pretty(j)?)
        .with_context(|| format!("writing {}", json_out.display()))
}

/// The traffic thread; stops when dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<u64>>>,
}

impl Traffic {
    /// Keeps `flows` UDP flows active from namespace `ns`: each flow once per second.
    pub fn start(ns: &str, flows: u32) -> anyhow::Result<Traffic> {
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
    pub fn stop(&mut self) -> u64 {
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
pub fn cpu_s(pid: i32) -> anyhow::Result<f64> {
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
pub fn rss_mib(pid: i32) -> anyhow::Result<f64> {
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

/// Sends one datagram on each of `flows` distinct flows from namespace `ns`
/// (100 sources x `flows / 100` ports), pausing 1 ms every 500 datagrams so the
/// veth backlog does not overflow; returns datagrams sent.
pub fn burst(ns: &str, flows: u32) -> anyhow::Result<u64> {
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
