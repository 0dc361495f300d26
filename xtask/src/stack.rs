//! The whole pipeline on the testbed, as `demo` and `eval` run it: certificates,
//! Mosquitto (TLS + ACL) on the monitor node, the XDP program and the fw-ctl
//! daemon on the router, the detector, optionally the dashboard, and a bus
//! listener that records alerts, verdicts and acks.
//!
//! Every process is started with `nsenter --net` into its node's namespace (fw-ctl
//! needs bpffs, which `ip netns exec` would hide), recorded in the testbed state
//! file, and stopped when the [`Stack`] is dropped.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tad_wire::{Ack, Alert, Verdict, now_ms};

use super::{
    self as testbed,
    netns::{self, Proc, in_ns},
};
use crate::util;

/// Gateway (fw-ctl) node id.
pub const GATEWAY_ID: &str = "gateway-1";
/// Detector node id.
pub const DETECTOR_ID: &str = "detector-1";
/// Dashboard node id.
pub const DASHBOARD_ID: &str = "dashboard";
/// The recorder's node id (a dashboard-role client: reads everything).
pub const RECORDER_ID: &str = "dashboard-recorder";
/// fw-ctl instance (pin directory /sys/fs/bpf/<instance>).
pub const INSTANCE: &str = "tad-testbed";
/// Broker TLS port on the monitor node.
pub const BROKER_PORT: u16 = 8883;
/// Dashboard HTTP port on the monitor node.
pub const DASHBOARD_PORT: u16 = 8080;

/// Paths of the release binaries.
pub fn bin(name: &str) -> PathBuf {
    util::workspace_root().join("target/release").join(name)
}

/// What to start.
pub struct StackOptions {
    /// Run directory (configs, logs, certificates, state).
    pub dir: PathBuf,
    /// Start the dashboard too.
    pub dashboard: bool,
    /// XDP attach mode (native or skb).
    pub xdp_mode: String,
}

/// Alerts, verdicts and acks seen on the bus, with the wall-clock time they arrived.
#[derive(Default, Debug, Clone, Serialize)]
pub struct Recorded {
    pub alerts: Vec<(u64, Alert)>,
    pub verdicts: Vec<(u64, Verdict)>,
    pub acks: Vec<(u64, Ack)>,
}

/// The running pipeline; dropping it stops everything it started (the testbed
/// itself is the caller's).
pub struct Stack {
    /// Run directory.
    pub dir: PathBuf,
    /// Dashboard URL (from the root namespace), when started.
    pub dashboard_url: Option<String>,
    /// Bearer token of the dashboard's API.
    pub api_token: String,
    /// What the recorder has seen.
    pub recorded: Arc<Mutex<Recorded>>,
    recorder_stop: Option<tokio::sync::oneshot::Sender<()>>,
    recorder: Option<std::thread::JoinHandle<()>>,
    procs: Vec<Proc>,
}

/// Waits until a TCP connection to `addr` from inside `ns` succeeds.
pub fn wait_tcp(ns: &str, addr: SocketAddr, limit: Duration, what: &str) -> anyhow::Result<()> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> anyhow::Result<()> {
        netns::enter_thread(&ns)?;
        let end = Instant::now() + limit;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
                return Ok(());
            }
            netns::check_interrupt()?;
            if Instant::now() > end {
                bail!("nothing listens on {addr} in {ns} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    .with_context(|| format!("{what} did not come up"))
}

impl Stack {
    /// Builds the binaries, writes configs and certificates into `o.dir`, starts
    /// broker, fw-ctl (load + daemon), detector and (optionally) the dashboard.
    pub fn start(o: &StackOptions) -> anyhow::Result<Stack> {
        Self::start_with_detectors(o, &[])
    }

    /// [`Stack::start`] with extra detector identities (`detector-*` node ids):
    /// each gets a client certificate, the detector role in the broker ACL and a
    /// place in the gateway's `[trust] detectors`, so a tool (the `reaction`
    /// benchmark) can publish verdicts under its own MQTT client id next to the
    /// running detector.
    pub fn start_with_detectors(
        o: &StackOptions,
        extra_detectors: &[&str],
    ) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&o.dir)?;
        // Clean state: no blocks restored, no broker sessions or queued messages,
        // no stored dashboard data, fresh logs.
        for f in [
            "fw-state.json",
            "fw-status.json",
            "dashboard.sqlite",
            "dashboard.sqlite-wal",
            "dashboard.sqlite-shm",
            "audit.jsonl",
        ] {
            let _ = std::fs::remove_file(o.dir.join(f));
        }
        for n in ["mosquitto", "fw-ctl", "detector", "dashboard"] {
            let _ = std::fs::remove_file(o.dir.join(format!("{n}.log")));
        }
        let _ = std::fs::remove_dir_all(o.dir.join("certs/mosquitto/data"));
        std::fs::create_dir_all(o.dir.join("certs/mosquitto/data"))?;
        for b in ["fw-ctl", "detector", "dashboard"] {
            if (b != "dashboard" || o.dashboard) && !bin(b).exists() {
                bail!(
                    "{} is missing: `cargo xtask build` failed?",
                    bin(b).display()
                );
            }
        }
        crate::setup::ensure_bpffs()?;
        let certs = o.dir.join("certs");
        let nodes: Vec<String> = [GATEWAY_ID, DETECTOR_ID, DASHBOARD_ID, RECORDER_ID]
            .iter()
            .chain(extra_detectors)
            .map(|s| s.to_string())
            .collect();
        // Reuse the run directory's PKI only when it covers every node, ACL included.
        let acl = std::fs::read_to_string(certs.join("mosquitto/acl")).unwrap_or_default();
        let have_all = certs.join("mosquitto/mosquitto.conf").exists()
            && nodes.iter().all(|n| {
                certs.join(format!("nodes/{n}.pem")).exists()
                    && acl.lines().any(|l| l.trim() == format!("user {n}"))
            });
        eprintln!("stack: certificates in {}", certs.display());
        if !have_all {
            crate::certs::run(&crate::certs::CertsArgs {
                out: certs.clone(),
                nodes: nodes.clone(),
                broker_names: vec![testbed::MONITOR.to_string()],
                listen: SocketAddr::new(IpAddr::V4(testbed::MONITOR), BROKER_PORT),
                broker_user: Some("root".into()),
                days: 30,
                new_ca: false,
            })
            .context("making certificates")?;
        }
        let mut s = Stack {
            dir: o.dir.clone(),
            dashboard_url: None,
            api_token: format!("tad-demo-{:x}", now_ms()),
            recorded: Arc::default(),
            recorder_stop: None,
            recorder: None,
            procs: Vec::new(),
        };
        let log = |n: &str| o.dir.join(format!("{n}.log"));

        // Broker on the monitor node.
        let conf = certs.join("mosquitto/mosquitto.conf");
        s.spawn(
            "mosquitto",
            in_ns(testbed::NS_MONITOR, "mosquitto").arg("-c").arg(&conf),
            &log("mosquitto"),
        )?;
        let broker = SocketAddr::new(IpAddr::V4(testbed::MONITOR), BROKER_PORT);
        wait_tcp(
            testbed::NS_ROUTER,
            broker,
            Duration::from_secs(10),
            "mosquitto",
        )?;
        eprintln!("stack: mosquitto (TLS, ACL) on {broker}");

        // The recorder first, so it sees every alert.
        s.start_recorder(&certs)?;

        // XDP + fw-ctl daemon on the router.
        let fw = bin("fw-ctl");
        let pin = format!("/sys/fs/bpf/{INSTANCE}");
        if Path::new(&pin).exists() {
            eprintln!("stack: removing stale pins {pin}");
            let _ = netns::run_quiet(in_ns(testbed::NS_ROUTER, &fw).args([
                "--instance",
                INSTANCE,
                "unload",
            ]));
            let _ = std::fs::remove_dir_all(&pin);
        }
        let gw_conf = o.dir.join("gateway.toml");
        let detectors: Vec<&str> = [DETECTOR_ID]
            .iter()
            .chain(extra_detectors)
            .copied()
            .collect();
        std::fs::write(
            &gw_conf,
            gateway_toml(&o.dir, &certs, &o.xdp_mode, &detectors),
        )?;
        netns::run_quiet(
            in_ns(testbed::NS_ROUTER, &fw)
                .args(["--instance", INSTANCE, "--config"])
                .arg(&gw_conf)
                .args([
                    "load",
                    "--iface",
                    testbed::ROUTER_LAN_IF,
                    "--mode",
                    &o.xdp_mode,
                ]),
        )
        .context("fw-ctl load")?;
        testbed::record_bpf_pin(&pin)?;
        eprintln!(
            "stack: XDP loaded on {}/{} ({})",
            testbed::NS_ROUTER,
            testbed::ROUTER_LAN_IF,
            o.xdp_mode
        );
        s.spawn(
            "fw-ctl run",
            in_ns(testbed::NS_ROUTER, &fw)
                .args(["--instance", INSTANCE])
                .arg("run")
                .arg("--config")
                .arg(&gw_conf),
            &log("fw-ctl"),
        )?;

        // Detector.
        let det_conf = o.dir.join("detector.toml");
        std::fs::write(&det_conf, detector_toml(&certs))?;
        s.spawn(
            "detector",
            in_ns(testbed::NS_DETECTOR, bin("detector"))
                .arg("run")
                .arg("--config")
                .arg(&det_conf),
            &log("detector"),
        )?;

        // Dashboard.
        if o.dashboard {
            let dash_conf = o.dir.join("dashboard.toml");
            std::fs::write(&dash_conf, dashboard_toml(&o.dir, &certs, &s.api_token))?;
            s.spawn(
                "dashboard",
                in_ns(testbed::NS_MONITOR, bin("dashboard"))
                    .arg("serve")
                    .arg("--config")
                    .arg(&dash_conf),
                &log("dashboard"),
            )?;
            let addr = SocketAddr::new(IpAddr::V4(testbed::MONITOR_DASH), DASHBOARD_PORT);
            wait_tcp(
                testbed::NS_MONITOR,
                addr,
                Duration::from_secs(20),
                "dashboard",
            )?;
            let url = format!("http://{addr}/");
            testbed::State::update(|st| st.dashboard_url = Some(url.clone()))?;
            s.dashboard_url = Some(url);
        }
        // Give the daemons a moment to connect; fail early when one died.
        netns::sleep(Duration::from_secs(2))?;
        s.check_alive()?;
        Ok(s)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
        let p = Proc::spawn(name, cmd, Some(log))?;
        testbed::record_process(p.pid(), name)?;
        self.procs.push(p);
        Ok(())
    }

    /// Fails naming the first daemon that has exited (and its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(st) = p.exited() {
                let logname = match p.name.as_str() {
                    "fw-ctl run" => "fw-ctl",
                    n => n,
                };
                let log = self.dir.join(format!("{logname}.log"));
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(8).collect();
                bail!(
                    "{} exited ({st}); last lines of {}:\n{}",
                    p.name,
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Runs `fw-ctl --json VERB...` on the router and parses its output.
    pub fn fw_ctl_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = netns::run_quiet(
            in_ns(testbed::NS_ROUTER, bin("fw-ctl"))
                .args(["--instance", INSTANCE, "--config"])
                .arg(self.dir.join("gateway.toml"))
                .arg("--json")
                .args(args),
        )?;
        serde_json::from_str(&out)
            .with_context(|| format!("fw-ctl {} printed no JSON: {out}", args.join(" ")))
    }

    /// Current blocks: prefix -> (origin, hits).
    pub fn blocks(&self) -> anyhow::Result<Vec<BlockSeen>> {
        let v = self.fw_ctl_json(&["list", "blocks"])?;
        let arr = v
            .as_array()
            .context("`fw-ctl list blocks --json` is not an array")?;
        Ok(arr
            .iter()
            .filter_map(|b| {
                let prefix = b["prefix"].as_str()?.to_string();
                let addr = prefix.split('/').next()?.parse().ok()?;
                Some(BlockSeen {
                    addr,
                    prefix,
                    origin: b["origin"].as_str().unwrap_or("").to_string(),
                    reason: b["reason"]
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| b["reason"].to_string()),
                    hits: b["hits"].as_u64().unwrap_or(0),
                })
            })
            .collect())
    }

    fn start_recorder(&mut self, certs: &Path) -> anyhow::Result<()> {
        let cfg = tad_bus::BusConfig::from_certs_dir(
            RECORDER_ID,
            certs,
            &testbed::MONITOR.to_string(),
            BROKER_PORT,
        );
        let rec = self.recorded.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let h = std::thread::spawn(move || {
            let ready = ready_tx.clone();
            let run = move || -> anyhow::Result<()> {
                netns::enter_thread(testbed::NS_MONITOR)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut b = tad_bus::BusClient::builder(cfg)?;
                    let mut all =
                        b.subscribe::<tad_bus::AnyMessage>("tad/v1/#", tad_bus::QoS::AtLeastOnce);
                    let bus = tokio::time::timeout(Duration::from_secs(15), b.connect())
                        .await
                        .context("connecting the recorder timed out")??;
                    let _ = ready.send(Ok(()));
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            m = all.recv() => {
                                let Some(m) = m else { break };
                                let t = now_ms();
                                let mut r = rec.lock().expect("recorder lock");
                                match m.message {
                                    tad_bus::AnyMessage::Alert(a) => r.alerts.push((t, a)),
                                    tad_bus::AnyMessage::Verdict(v) => r.verdicts.push((t, v)),
                                    tad_bus::AnyMessage::Ack(a) => r.acks.push((t, a)),
                                    _ => {}
                                }
                            }
                        }
                    }
                    let _ = bus.shutdown(Duration::from_secs(2)).await;
                    Ok::<(), anyhow::Error>(())
                })
            };
            if let Err(e) = run() {
                let _ = ready_tx.send(Err(e));
            }
        });
        self.recorder = Some(h);
        self.recorder_stop = Some(stop_tx);
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(r) => r.context("bus recorder"),
            Err(_) => bail!("bus recorder did not connect within 20 s"),
        }
    }

    /// A snapshot of what the recorder has seen.
    pub fn recorded(&self) -> Recorded {
        self.recorded.lock().expect("recorder lock").clone()
    }
}

/// One blocklist entry as `fw-ctl list blocks --json` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockSeen {
    pub addr: IpAddr,
    pub prefix: String,
    pub origin: String,
    pub reason: String,
    /// Packets dropped (or would-drop) by this entry.
    pub hits: u64,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.recorder_stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.recorder.take() {
            let _ = h.join();
        }
        // Reverse order: dashboard, detector, fw-ctl daemon, broker.
        while let Some(mut p) = self.procs.pop() {
            p.stop();
            let _ = testbed::forget_process(p.pid());
        }
        let pin = format!("/sys/fs/bpf/{INSTANCE}");
        if Path::new(&pin).exists() && testbed::netns::ns_exists(testbed::NS_ROUTER) {
            let _ = netns::run_quiet(in_ns(testbed::NS_ROUTER, bin("fw-ctl")).args([
                "--instance",
                INSTANCE,
                "unload",
            ]));
        }
    }
}

/// The broker and mutual-TLS lines of a node's `[bus]` section (each ending in a
/// newline): the broker at `host`:[`BROKER_PORT`], the CA and the node's certificate
/// and key where `crate::certs` writes them (`<certs>/nodes/<node>.pem`, `.key`).
pub fn bus_lines(host: &str, certs: &Path, node: &str) -> String {
    let c = certs.display();
    format!(
        "host = \"{host}\"\nport = {BROKER_PORT}\nca_file = \"{c}/ca.pem\"\n\
         cert_file = \"{c}/nodes/{node}.pem\"\nkey_file = \"{c}/nodes/{node}.key\"\n"
    )
}

fn gateway_toml(dir: &Path, certs: &Path, xdp_mode: &str, detectors: &[&str]) -> String {
    format!(
        r#"# Written by cargo xtask demo/eval for the testbed.
gateway_id = "{GATEWAY_ID}"
instance = "{INSTANCE}"
interfaces = ["{lan}"]
xdp_mode = "{xdp_mode}"
mode = "enforce"
state_file = "{dir}/fw-state.json"
status_file = "{dir}/fw-status.json"
management = ["198.51.100.0/24"]
allow = []
allow_own_addresses = true
bus_enabled = true

[export]
poll_interval_ms = 250
idle_timeout_s = 3.0
active_timeout_s = 10.0
end_grace_ms = 300
counters_interval_ms = 1000

[trust]
detectors = {detectors:?}
dashboards = ["{DASHBOARD_ID}"]

[bus]
{bus}"#,
        lan = testbed::ROUTER_LAN_IF,
        dir = dir.display(),
        bus = bus_lines(&testbed::MONITOR.to_string(), certs, GATEWAY_ID),
    )
}

fn detector_toml(certs: &Path) -> String {
    format!(
        r#"# Written by cargo xtask demo/eval for the testbed.
[detector]
id = "{DETECTOR_ID}"
mode = "enforce"

[bus]
{bus}
[ml]
model = "{root}/detector/model/model.onnx"

[policy]
management = ["198.51.100.0/24"]
"#,
        bus = bus_lines(&testbed::MONITOR.to_string(), certs, DETECTOR_ID),
        root = util::workspace_root().display(),
    )
}

fn dashboard_toml(dir: &Path, certs: &Path, token: &str) -> String {
    format!(
        r#"# Written by cargo xtask demo for the testbed.
[server]
listen = "0.0.0.0:{DASHBOARD_PORT}"
api_token = "{token}"

[storage]
db_path = "{dir}/dashboard.sqlite"
audit_log = "{dir}/audit.jsonl"

[api]
gateways = ["{GATEWAY_ID}"]

[bus]
node_id = "{DASHBOARD_ID}"
{bus}"#,
        dir = dir.display(),
        bus = bus_lines(&testbed::MONITOR.to_string(), certs, DASHBOARD_ID),
    )
}
