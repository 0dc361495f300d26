//! `cargo xtask certs`: the bus PKI and a matching Mosquitto config.
//!
//! Creates (or reuses) the CA in `--out`, issues the broker certificate (SANs
//! localhost, 127.0.0.1, ::1 and every `--broker-name`) and one client certificate
//! per `--node` (CN = node id), then writes `mosquitto/mosquitto.conf` and
//! `mosquitto/acl` under `--out` pointing at those files. Private keys are mode 0600.
//! Rotation and using an existing PKI: certs/README.md.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use tad_bus::{
    broker::{BrokerConfig, render_acl},
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

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let opts = PkiOptions {
        nodes: args.nodes.clone(),
        broker_names: args.broker_names.clone(),
        leaf_days: args.days,
        new_ca: args.new_ca,
        ..PkiOptions::default()
    };
    // Check the roles before writing anything.
    let acl = render_acl(&args.nodes).context("node list")?;
    let report = pki::generate(&args.out, &opts)
        .with_context(|| format!("generating certificates in {}", args.out.display()))?;
    let out = std::path::absolute(&args.out).context("resolving --out")?;
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
