//! `cargo xtask certs`: the bus PKI and a matching Mosquitto config.
//!
//! Creates (or reuses) the CA in `--out`, issues the broker certificate (SANs
//! localhost, 127.0.0.1, ::1 and every `--broker-name`) and one client certificate
//! per `--node` (CN = node id), then writes `mosquitto/mosquitto.conf` and
//! `mosquitto/acl` under `--out` pointing at those files. Private keys are mode 0600.
//! Rotation and using an existing PKI: certs/README.md.
//!
//! The testbed's IoT devices ([`TESTBED_DEVICES`], issue 17) get the same: an MQTT
//! client certificate each (CN = device id, `nodes/<id>.pem`), an ACL block that
//! lets each publish only its own telemetry topic and read only its own command
//! topic (`tad_bus::broker::render_acl_with_devices`), an Ed25519 telemetry key
//! pair `devices/<id>.key` (PKCS#8, 0600) / `devices/<id>.pub` (kept when present),
//! and its enrollment in `devices/registry.toml` (the gateway's `[devices]
//! registry`) with the simulator's sensors, `tad_devices::cli::provision`;
//! [`TESTBED_UNENROLLED`] gets the certificate and ACL block only.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use tad_bus::{
    broker::{BrokerConfig, render_acl_with_devices},
    pki::{self, PkiOptions},
};

/// Generate the bus CA, broker and node certificates and a Mosquitto config.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Output directory (keys are written mode 0600; never commit it).
    #[arg(long, default_value = "certs/out")]
    pub out: PathBuf,
    /// Node id to issue a client certificate for (CN = id; prefix gives the role:
    /// gateway-*, detector-*, dashboard*). Repeatable.
    #[arg(long = "node", default_values_t = ["gateway-1".to_string(), "detector-1".to_string(), "dashboard".to_string()])]
    pub nodes: Vec<String>,
    /// Extra broker name or IP address for the broker certificate's SANs (e.g. the
    /// testbed address 198.51.100.2). Repeatable.
    #[arg(long = "broker-name")]
    pub broker_names: Vec<String>,
    /// Broker listener address written into mosquitto.conf.
    #[arg(long, default_value = "0.0.0.0:8883")]
    pub listen: SocketAddr,
    /// Account mosquitto switches to when started as root (`root` to stay root;
    /// omitted: mosquitto's default `mosquitto`, which must be able to read the key).
    #[arg(long)]
    pub broker_user: Option<String>,
    /// Lifetime of the broker and node certificates, days.
    #[arg(long, default_value_t = 397)]
    pub days: u32,
    /// Replace the CA even if one exists in --out (every node then needs the new ca.pem).
    #[arg(long)]
    pub new_ca: bool,
}

/// The testbed's simulated devices: id, sensors (`name=min..max`, the ranges of
/// `tad_devices::sim::SimDevice::from_seed`), command kinds they accept.
pub const TESTBED_DEVICES: &[(&str, &[&str], &[&str])] = &[
    (
        "esp32-1",
        &["temperature=-20..60", "humidity=0..100"],
        &["set", "reboot"],
    ),
    (
        "esp32-2",
        &["temperature=-20..60", "humidity=0..100"],
        &["set", "reboot"],
    ),
    (
        "esp32-3",
        &["temperature=-20..60", "humidity=0..100"],
        &["reboot"],
    ),
];

/// A testbed device with a certificate and an ACL block but no enrollment (and
/// no telemetry key): the demo's "unenrolled device" (its telemetry reaches the
/// gateway, which refuses it as `unenrolled`).
pub const TESTBED_UNENROLLED: &str = "esp32-9";

/// The registry file under a certs output directory.
pub fn device_registry(out: &std::path::Path) -> PathBuf {
    out.join("devices").join("registry.toml")
}

/// Keys and enrollments of [`TESTBED_DEVICES`] under `out/devices/`.
pub fn provision_devices(out: &std::path::Path) -> anyhow::Result<()> {
    let dir = out.join("devices");
    let reg = device_registry(out);
    for (id, sensors, commands) in TESTBED_DEVICES {
        let sensors: Vec<String> = sensors.iter().map(|s| s.to_string()).collect();
        let commands = commands
            .iter()
            .map(|c| {
                c.parse::<tad_devices::CommandKind>()
                    .map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let p = tad_devices::cli::provision(&dir, &reg, id, &sensors, &commands)
            .with_context(|| format!("device {id}"))?;
        if p.key_created {
            println!("wrote {}", dir.join(format!("{id}.key")).display());
        }
        if p.enrolled {
            println!("enrolled {id} in {}", reg.display());
        }
    }
    Ok(())
}

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let devices: Vec<String> = TESTBED_DEVICES
        .iter()
        .map(|d| d.0)
        .chain([TESTBED_UNENROLLED])
        .map(String::from)
        .collect();
    let mut pki_nodes = args.nodes.clone();
    pki_nodes.extend(devices.iter().filter(|d| !args.nodes.contains(d)).cloned());
    let opts = PkiOptions {
        nodes: pki_nodes,
        broker_names: args.broker_names.clone(),
        leaf_days: args.days,
        new_ca: args.new_ca,
        ..PkiOptions::default()
    };
    // Check the roles before writing anything.
    let acl = render_acl_with_devices(&args.nodes, &devices).context("node list")?;
    let report = pki::generate(&args.out, &opts)
        .with_context(|| format!("generating certificates in {}", args.out.display()))?;
    let out = std::path::absolute(&args.out).context("resolving --out")?;
    provision_devices(&out)?;
    let l = pki::PkiLayout::new(&out);
    let mdir = out.join("mosquitto");
    std::fs::create_dir_all(mdir.join("data"))
        .with_context(|| format!("creating {}", mdir.display()))?;
    let acl_file = mdir.join("acl");
    std::fs::write(&acl_file, acl).with_context(|| format!("writing {}", acl_file.display()))?;
    let conf = BrokerConfig {
        bind: args.listen.ip(),
        port: args.listen.port(),
        cafile: l.ca_cert(),
        certfile: l.broker_cert(),
        keyfile: l.broker_key(),
        acl_file,
        persistence_dir: Some(mdir.join("data")),
        log_file: None,
        run_as_user: args.broker_user.clone(),
        max_queued_messages: 10_000,
    };
    let conf_file = mdir.join("mosquitto.conf");
    std::fs::write(&conf_file, conf.render())
        .with_context(|| format!("writing {}", conf_file.display()))?;
    println!(
        "{} CA in {}",
        if report.ca_created {
            "created"
        } else {
            "reused"
        },
        l.ca_cert().display()
    );
    for f in &report.written {
        println!("wrote {}", f.display());
    }
    println!("wrote {}", conf_file.display());
    println!("broker: mosquitto -c {}", conf_file.display());
    Ok(())
}
