//! The node configs of every whole-system run (the testbed [`Stack`] and the
//! footprint and pipeline benchmarks), built as values of the roles' own config
//! types and serialised with `toml`: the gateway's
//! [`fw_ctl::config::GatewayFile`], the detector's [`detector::config::Config`],
//! the dashboard's [`dashboard::config::Config`], each with the
//! [`tad_bus::BusConfig`] of its node. A key renamed in a role fails to compile
//! here instead of failing at start-up on the testbed; the unit tests load what
//! these write with each role's own loader.
//!
//! Every builder starts from the type's `Default` (what the role does with no
//! file) and sets only what the run needs; callers change further fields (export
//! timings, map sizes) on the returned value before [`write`].
//!
//! [`Stack`]: super::stack::Stack
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use fw_ctl::{
    config::{GatewayFile, ModeName},
    pin::AttachMode,
};
use ipnet::IpNet;
use serde::Serialize;
use tad_bus::BusConfig;
use tad_wire::Mode;

use crate::util;

/// Gateway (fw-ctl) node id.
pub const GATEWAY_ID: &str = "gateway-1";
/// Detector node id.
pub const DETECTOR_ID: &str = "detector-1";
/// Dashboard node id.
pub const DASHBOARD_ID: &str = "dashboard";
/// The recorder's node id (a dashboard-role client: reads everything).
pub const RECORDER_ID: &str = "dashboard-recorder";
/// Broker TLS port.
pub const BROKER_PORT: u16 = 8883;

/// Where a run's broker and certificates are.
#[derive(Clone, Debug)]
pub struct Bus<'a> {
    /// Broker host (an address that is a SAN of the broker certificate).
    pub host: &'a str,
    /// `crate::certs` output directory (CA, `nodes/<node>.pem` and `.key`).
    pub certs: &'a Path,
}

impl Bus<'_> {
    /// The `[bus]` section of `node`: the broker at `host`:[`BROKER_PORT`], the CA
    /// and the node's own certificate and key.
    pub fn config(&self, node: &str) -> BusConfig {
        BusConfig::from_certs_dir(node, self.certs, self.host, BROKER_PORT)
    }
}

/// What differs between the gateways of the runs.
#[derive(Clone, Debug)]
pub struct Gateway<'a> {
    /// fw-ctl instance (pin directory `/sys/fs/bpf/<instance>`).
    pub instance: &'a str,
    /// The LAN interface XDP attaches to.
    pub iface: &'a str,
    /// `native` or `skb`.
    pub xdp_mode: &'a str,
    /// Enforce (drop) rather than observe.
    pub enforce: bool,
    /// Directory of the state and status files.
    pub dir: &'a Path,
    /// Management networks (always allowlisted).
    pub management: &'a [&'a str],
    /// Also allowlist the router's own addresses.
    pub allow_own_addresses: bool,
    /// Detector ids whose verdicts are applied.
    pub detectors: &'a [&'a str],
}

/// Parses an XDP attach mode as the command line gives it (`native`, `skb`).
///
/// # Errors
/// Any other word.
pub fn attach_mode(s: &str) -> anyhow::Result<AttachMode> {
    <AttachMode as clap::ValueEnum>::from_str(s, true)
        .map_err(|e| anyhow::anyhow!("XDP mode {s:?}: {e}"))
}

/// The gateway's config: `GatewayFile::default()` with the node's id, instance,
/// interface, modes, files, allowlist, trust ([`DASHBOARD_ID`] for commands) and
/// bus. Export timings and map sizes stay the defaults; callers set theirs.
///
/// # Errors
/// An unknown XDP mode.
pub fn gateway(g: &Gateway, bus: &Bus) -> anyhow::Result<GatewayFile> {
    let mut c = GatewayFile {
        gateway_id: GATEWAY_ID.into(),
        instance: g.instance.into(),
        interfaces: vec![g.iface.into()],
        xdp_mode: attach_mode(g.xdp_mode)?,
        mode: if g.enforce {
            ModeName::Enforce
        } else {
            ModeName::Observe
        },
        state_file: Some(g.dir.join("fw-state.json")),
        status_file: Some(g.dir.join("fw-status.json")),
        management: g.management.iter().map(|s| s.to_string()).collect(),
        allow: Vec::new(),
        allow_own_addresses: g.allow_own_addresses,
        bus_enabled: true,
        bus: bus.config(GATEWAY_ID),
        ..GatewayFile::default()
    };
    c.trust.detectors = g.detectors.iter().map(|s| s.to_string()).collect();
    c.trust.dashboards = vec![DASHBOARD_ID.into()];
    Ok(c)
}

/// The device guard's replay windows, in the run directory.
pub const DEVICE_REPLAY_FILE: &str = "device-replay.json";
/// The device trust ledger's state, in the run directory.
pub const DEVICE_TRUST_FILE: &str = "device-trust.json";

/// The gateway's `[devices]` table on the testbed: the registry `cargo xtask certs`
/// wrote under `certs` (`crate::certs::device_registry`), the replay windows and
/// trust state in `dir` ([`DEVICE_REPLAY_FILE`], [`DEVICE_TRUST_FILE`]), the
/// default per-device anomaly model, and a connect scan (300 ms per port) of the first
/// `devices` of [`crate::certs::TESTBED_DEVICES`] every 10 s, device `i` at
/// `testbed::device_addr(i + 1)`.
pub fn devices(certs: &Path, dir: &Path, devices: u8) -> tad_devices::DevicesConfig {
    let mut c = tad_devices::DevicesConfig {
        registry: crate::certs::device_registry(certs),
        ..tad_devices::DevicesConfig::default()
    };
    c.guard.replay_state = dir.join(DEVICE_REPLAY_FILE);
    c.trust.state_file = dir.join(DEVICE_TRUST_FILE);
    c.scan.enabled = true;
    c.scan.interval_ms = 10_000;
    c.scan.connect_timeout_ms = 300;
    for (i, (id, _, _)) in crate::certs::TESTBED_DEVICES
        .iter()
        .enumerate()
        .take(devices as usize)
    {
        c.scan.addresses.insert(
            tad_devices::DeviceId::parse(id).expect("testbed ids are valid"),
            super::device_addr(i as u8 + 1).into(),
        );
    }
    c
}

/// The model every run's detector loads (absolute: the detector runs elsewhere).
pub fn model_path() -> PathBuf {
    util::workspace_root().join("detector/model/model.onnx")
}

/// The detector's config: `Config::default()` with id [`DETECTOR_ID`], `mode`, the
/// bus, the workspace's model and `management` as never-blocked networks.
pub fn detector(mode: Mode, management: &[IpNet], bus: &Bus) -> detector::config::Config {
    let mut c = detector::config::Config::default();
    c.detector.id = DETECTOR_ID.parse().expect("a valid node id");
    c.detector.mode = mode;
    c.bus = bus.config(DETECTOR_ID);
    c.ml.model = model_path();
    c.policy.management = management.to_vec();
    c
}

/// The dashboard's config: `Config::default()` listening on `listen` with the API
/// token `token`, its database and audit log in `dir`, [`GATEWAY_ID`] as the
/// gateway it commands, and the bus as [`DASHBOARD_ID`].
pub fn dashboard(
    dir: &Path,
    listen: SocketAddr,
    token: &str,
    bus: &Bus,
) -> dashboard::config::Config {
    let mut c = dashboard::config::Config::default();
    c.server.listen = listen;
    c.server.api_token = token.into();
    c.storage.db_path = dir.join("dashboard.sqlite");
    c.storage.audit_log = dir.join("audit.jsonl");
    c.api.gateways = vec![GATEWAY_ID.into()];
    c.bus = Some(bus.config(DASHBOARD_ID));
    c
}

/// Writes `cfg` as TOML to `path`, after a comment saying who wrote it.
///
/// # Errors
/// The value does not serialise as TOML, or the file cannot be written.
pub fn write(path: &Path, cfg: &impl Serialize) -> anyhow::Result<()> {
    let text = toml::to_string(cfg).with_context(|| format!("serialising {}", path.display()))?;
    std::fs::write(
        path,
        format!("# Written by cargo xtask (xtask/src/testbed/nodes.rs).\n{text}"),
    )
    .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    /// Every config these builders write loads with its role's own loader, with the
    /// values set here (the footprint's and the testbed's variants).
    #[test]
    fn written_configs_load_with_each_roles_loader() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let certs = dir.join("certs");
        let bus = Bus {
            host: "198.51.100.3",
            certs: &certs,
        };
        for (enforce, mode, mgmt) in [
            (true, "native", &["198.51.100.0/24"][..]),
            (false, "skb", &[][..]),
        ] {
            let mut g = gateway(
                &Gateway {
                    instance: "tad-testbed",
                    iface: "lan0",
                    xdp_mode: mode,
                    enforce,
                    dir,
                    management: mgmt,
                    allow_own_addresses: enforce,
                    detectors: &[DETECTOR_ID, "detector-bench"],
                },
                &bus,
            )
            .expect("gateway config");
            g.export.poll_interval_ms = 250;
            g.export.idle_timeout_s = 3.0;
            g.maps.flows_max_entries = 262_144;
            if enforce {
                g.devices = Some(devices(&certs, dir, 3));
            }
            let p = dir.join("gateway.toml");
            write(&p, &g).expect("write gateway.toml");
            let back = fw_ctl::config::GatewayFile::load(&p).expect("fw-ctl loads it");
            assert_eq!(back, g);
            assert_eq!(back.bus_config().node_id, GATEWAY_ID);
            assert_eq!(back.bus.cert_file, certs.join("nodes/gateway-1.pem"));
            assert_eq!(back.xdp_mode.as_str(), mode);
            assert_eq!(back.trust.detectors, [DETECTOR_ID, "detector-bench"]);
            if let Some(d) = &back.devices {
                assert_eq!(d.registry, certs.join("devices/registry.toml"));
                assert_eq!(d.scan.addresses.len(), 3);
                assert_eq!(d.guard.replay_state, dir.join(DEVICE_REPLAY_FILE));
            }
        }
        assert!(attach_mode("bogus").is_err());

        let det = detector(Mode::Enforce, &["198.51.100.0/24".parse().unwrap()], &bus);
        let p = dir.join("detector.toml");
        write(&p, &det).expect("write detector.toml");
        let back = detector::config::Config::load(&p).expect("the detector loads it");
        assert_eq!(back, det);
        assert_eq!(back.detector.id.as_str(), DETECTOR_ID);
        assert_eq!(back.ml.model, model_path());
        assert_eq!(back.bus.key_file, certs.join("nodes/detector-1.key"));

        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
        let dash = dashboard(dir, listen, "tad-demo-1", &bus);
        let p = dir.join("dashboard.toml");
        write(&p, &dash).expect("write dashboard.toml");
        let back = dashboard::config::Config::load(&p).expect("the dashboard loads it");
        assert_eq!(back.server.listen, listen);
        assert_eq!(back.server.api_token, "tad-demo-1");
        assert_eq!(back.storage.db_path, dir.join("dashboard.sqlite"));
        assert_eq!(back.api.gateways, [GATEWAY_ID]);
        assert_eq!(
            back.bus.as_ref().map(|b| b.node_id.as_str()),
            Some(DASHBOARD_ID)
        );
        assert_eq!(back, dash);
    }
}
