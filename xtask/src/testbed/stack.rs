//! The whole pipeline on the testbed, as `demo`, `eval` and the reaction benchmark
//! run it: certificates, Mosquitto (TLS + ACL) on the monitor node, the XDP program
//! and the fw-ctl daemon on the router, the detector, optionally the dashboard, and
//! a bus listener that records alerts, verdicts and acks.
//!
//! Every process is started with `nsenter --net` into its node's namespace (fw-ctl
//! needs bpffs, which `ip netns exec` would hide) through the shared harness
//! ([`super::daemons`]), recorded in the testbed state file, and stopped when the
//! [`Stack`] is dropped. The node configs come from [`super::nodes`].
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tad_wire::{Ack, Alert, Mode, Verdict, now_ms};

use super::{
    self as testbed,
    daemons::{self, Daemons, Subscriber, bin, wait_tcp},
    netns::{self, in_ns},
    nodes::{self, BROKER_PORT, DASHBOARD_ID, DETECTOR_ID, GATEWAY_ID, RECORDER_ID},
};

/// fw-ctl instance (pin directory /sys/fs/bpf/<instance>).
pub const INSTANCE: &str = "tad-testbed";
/// Dashboard HTTP port on the monitor node.
pub const DASHBOARD_PORT: u16 = 8080;
/// The management network: allowlisted at the gateway, never blocked by the
/// detector.
pub const MANAGEMENT: &str = "198.51.100.0/24";

/// What to start.
pub struct StackOptions {
    /// Run directory (configs, logs, certificates, state).
    pub dir: PathBuf,
    /// Start the dashboard too.
    pub dashboard: bool,
    /// XDP attach mode (native or skb).
    pub xdp_mode: String,
    /// Testbed device hosts enrolled in the gateway's `[devices]` table
    /// ([`nodes::devices`]: telemetry guard, trust ledger, command vetting, a
    /// vulnerability scan of each every 10 s); 0 = no `[devices]` table.
    pub devices: u8,
}

/// Alerts, verdicts and acks seen on the bus, with the wall-clock time they arrived.
#[derive(Default, Debug, Clone, Serialize)]
pub struct Recorded {
    pub alerts: Vec<(u64, Alert)>,
    /// Verdicts whose signature verified against the testbed CA, by a certificate
    /// naming the topic's detector and the payload's `detector_id`.
    pub verdicts: Vec<(u64, Verdict)>,
    /// Verdicts that did not verify: (arrival, topic, why).
    pub unverified_verdicts: Vec<(u64, String, String)>,
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
    // Field order is drop order: the recorder disconnects before the broker stops.
    recorder: Option<Subscriber>,
    daemons: Daemons,
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
            nodes::DEVICE_REPLAY_FILE,
            nodes::DEVICE_TRUST_FILE,
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
        let ids: Vec<String> = [GATEWAY_ID, DETECTOR_ID, DASHBOARD_ID, RECORDER_ID]
            .iter()
            .chain(extra_detectors)
            .map(|s| s.to_string())
            .collect();
        // `certs::run` also makes the testbed devices' certificates, ACL blocks,
        // telemetry keys and enrollments: reuse requires those too.
        let device_ids: Vec<&str> = crate::certs::TESTBED_DEVICES
            .iter()
            .map(|d| d.0)
            .chain([crate::certs::TESTBED_UNENROLLED])
            .collect();
        // Reuse the run directory's PKI only when it covers every node, ACL included.
        let acl = std::fs::read_to_string(certs.join("mosquitto/acl")).unwrap_or_default();
        let have_all = certs.join("mosquitto/mosquitto.conf").exists()
            && crate::certs::device_registry(&certs).exists()
            && ids.iter().map(String::as_str).chain(device_ids).all(|n| {
                certs.join(format!("nodes/{n}.pem")).exists()
                    && acl.lines().any(|l| l.trim() == format!("user {n}"))
            });
        eprintln!("stack: certificates in {}", certs.display());
        if !have_all {
            crate::certs::run(&crate::certs::CertsArgs {
                out: certs.clone(),
                nodes: ids.clone(),
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
            recorder: None,
            daemons: Daemons::new(&o.dir, true),
        };
        let host = testbed::MONITOR.to_string();
        let bus = nodes::Bus {
            host: &host,
            certs: &certs,
        };

        // Broker on the monitor node (probed from the router, across the bridge).
        let broker = SocketAddr::new(IpAddr::V4(testbed::MONITOR), BROKER_PORT);
        daemons::start_broker(&mut s.daemons, testbed::NS_MONITOR, &certs, broker)?;
        wait_tcp(
            testbed::NS_ROUTER,
            broker,
            Duration::from_secs(10),
            "mosquitto",
        )?;
        eprintln!("stack: mosquitto (TLS, ACL) on {broker}");

        // The recorder first, so it sees every alert.
        s.start_recorder(&bus)?;

        // XDP + fw-ctl daemon on the router.
        let fw = bin("fw-ctl");
        let pin = format!("/sys/fs/bpf/{INSTANCE}");
        if Path::new(&pin).exists() {
            eprintln!("stack: removing stale pins {pin}");
            daemons::fw_ctl_unload(testbed::NS_ROUTER, INSTANCE);
            let _ = std::fs::remove_dir_all(&pin);
        }
        let gw_conf = o.dir.join("gateway.toml");
        let detectors: Vec<&str> = [DETECTOR_ID]
            .iter()
            .chain(extra_detectors)
            .copied()
            .collect();
        let mut g = gateway_config(&o.dir, &o.xdp_mode, &detectors, &bus)?;
        if o.devices > 0 {
            g.devices = Some(nodes::devices(&certs, &o.dir, o.devices));
        }
        nodes::write(&gw_conf, &g)?;
        daemons::fw_ctl_load(&daemons::Load {
            ns: testbed::NS_ROUTER,
            instance: INSTANCE,
            config: &gw_conf,
            iface: testbed::ROUTER_LAN_IF,
            xdp_mode: &o.xdp_mode,
            observe: false,
        })?;
        testbed::record_bpf_pin(&pin)?;
        eprintln!(
            "stack: XDP loaded on {}/{} ({})",
            testbed::NS_ROUTER,
            testbed::ROUTER_LAN_IF,
            o.xdp_mode
        );
        s.daemons.spawn(
            "fw-ctl run",
            "fw-ctl",
            in_ns(testbed::NS_ROUTER, &fw)
                .args(["--instance", INSTANCE])
                .arg("run")
                .arg("--config")
                .arg(&gw_conf),
        )?;

        // Detector.
        let det_conf = o.dir.join("detector.toml");
        let management: IpNet = MANAGEMENT.parse().expect("a valid prefix");
        nodes::write(
            &det_conf,
            &nodes::detector(Mode::Enforce, &[management], &bus),
        )?;
        s.daemons.spawn(
            "detector",
            "detector",
            in_ns(testbed::NS_DETECTOR, bin("detector"))
                .arg("run")
                .arg("--config")
                .arg(&det_conf),
        )?;

        // Dashboard.
        if o.dashboard {
            let dash_conf = o.dir.join("dashboard.toml");
            let listen =
                SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), DASHBOARD_PORT);
            nodes::write(
                &dash_conf,
                &nodes::dashboard(&o.dir, listen, &s.api_token, &bus),
            )?;
            s.daemons.spawn(
                "dashboard",
                "dashboard",
                in_ns(testbed::NS_MONITOR, bin("dashboard"))
                    .arg("serve")
                    .arg("--config")
                    .arg(&dash_conf),
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

    /// Fails naming the first daemon that has exited (and its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.daemons.check_alive()
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

    fn start_recorder(&mut self, bus: &nodes::Bus) -> anyhow::Result<()> {
        let rec = self.recorded.clone();
        let cfg = bus.config(RECORDER_ID);
        let verifier =
            tad_bus::Verifier::from_bus_config(&cfg).context("the recorder's verdict verifier")?;
        let sub = Subscriber::start(
            testbed::NS_MONITOR,
            cfg,
            "tad/v1/#",
            move |m: tad_bus::client::Received<tad_bus::AnyMessage>| {
                let t = now_ms();
                let mut r = rec.lock().expect("recorder lock");
                match m.message {
                    tad_bus::AnyMessage::Alert(a) => r.alerts.push((t, a)),
                    tad_bus::AnyMessage::Verdict(v) => {
                        let topic_det = match tad_wire::topic::TopicKind::parse(&m.topic) {
                            Some(tad_wire::topic::TopicKind::Verdicts { detector, .. }) => {
                                Some(detector)
                            }
                            _ => None,
                        };
                        match v.verify(&verifier) {
                            Ok(s)
                                if topic_det.as_deref() == Some(s.signer.as_str())
                                    && s.message.detector_id == s.signer =>
                            {
                                r.verdicts.push((t, s.message))
                            }
                            Ok(s) => r.unverified_verdicts.push((
                                t,
                                m.topic.clone(),
                                format!(
                                    "signed by {} for detector {}",
                                    s.signer, s.message.detector_id
                                ),
                            )),
                            Err(e) => {
                                r.unverified_verdicts
                                    .push((t, m.topic.clone(), e.to_string()))
                            }
                        }
                    }
                    tad_bus::AnyMessage::Ack(a) => r.acks.push((t, a)),
                    _ => {}
                }
            },
        )
        .context("bus recorder")?;
        self.recorder = Some(sub);
        Ok(())
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
        // The recorder first; then the daemons in reverse order (dashboard,
        // detector, fw-ctl daemon, broker), then the program.
        self.recorder = None;
        let _ = std::mem::replace(&mut self.daemons, Daemons::new(&self.dir, false));
        if Path::new(&format!("/sys/fs/bpf/{INSTANCE}")).exists() {
            daemons::fw_ctl_unload(testbed::NS_ROUTER, INSTANCE);
        }
    }
}

/// The testbed gateway: enforce, the management network allowlisted with the
/// router's own addresses, `detectors` trusted, and the export timings of the
/// demo (poll 250 ms, idle 3 s, active 10 s, end grace 300 ms, counters 1 s).
fn gateway_config(
    dir: &Path,
    xdp_mode: &str,
    detectors: &[&str],
    bus: &nodes::Bus,
) -> anyhow::Result<fw_ctl::config::GatewayFile> {
    let mut g = nodes::gateway(
        &nodes::Gateway {
            instance: INSTANCE,
            iface: testbed::ROUTER_LAN_IF,
            xdp_mode,
            enforce: true,
            dir,
            management: &[MANAGEMENT],
            allow_own_addresses: true,
            detectors,
        },
        bus,
    )?;
    g.export.poll_interval_ms = 250;
    g.export.idle_timeout_s = 3.0;
    g.export.active_timeout_s = 10.0;
    g.export.end_grace_ms = 300;
    g.export.counters_interval_ms = 1000;
    Ok(g)
}
