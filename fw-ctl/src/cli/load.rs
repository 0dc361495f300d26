//! `fw-ctl load` and `fw-ctl unload`.

use clap::Args;
use ipnet::IpNet;

use super::Ctx;
use crate::{
    cidr::clap_prefix,
    config::{Limits, MapSizes},
    error::Result,
    loader::{self, LoadOptions},
    pin::AttachMode,
};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Interface to attach to (repeat for several; they share one set of maps)
    /// [default: the config's interfaces].
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// XDP attach mode [default: the config's, else native].
    #[arg(long, value_enum)]
    pub mode: Option<AttachMode>,
    /// Start in observe (IDS) mode: count would-drops, pass everything.
    #[arg(long)]
    pub observe: bool,
    /// Management network to allowlist (in addition to the config's); repeatable.
    #[arg(long, value_name = "CIDR", value_parser = clap_prefix)]
    pub management: Vec<IpNet>,
    /// Do not allowlist this host's own addresses.
    #[arg(long)]
    pub no_own_addresses: bool,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    /// Keep the maps pinned (blocks stay; the next load reuses them).
    #[arg(long)]
    pub keep_maps: bool,
}

pub fn load(ctx: &Ctx, a: LoadArgs) -> Result<()> {
    let cfg = ctx.cfg.clone().unwrap_or_default();
    let interfaces = if a.ifaces.is_empty() {
        cfg.interfaces.clone()
    } else {
        a.ifaces
    };
    let mut allow = cfg.allow_prefixes();
    allow.extend(a.management);
    let observe = a.observe || (ctx.cfg.is_some() && cfg.mode == crate::config::ModeName::Observe);
    let opts = LoadOptions {
        instance: ctx.dir.instance.clone(),
        interfaces,
        mode: a.mode.unwrap_or(cfg.xdp_mode),
        observe,
        limits: if ctx.cfg.is_some() {
            cfg.limits
        } else {
            Limits::default()
        },
        // The shipped defaults (provisional quarantine on) also without a file.
        evidence: cfg.evidence,
        sizes: if ctx.cfg.is_some() {
            cfg.maps
        } else {
            MapSizes::default()
        },
        allow,
        allow_own_addresses: !a.no_own_addresses && cfg.allow_own_addresses,
        state_file: Some(ctx.state_path.clone()),
    };
    let rep = loader::load_in(&ctx.dir, &opts)?;
    ctx.print(&rep, || {
        let mut s = format!(
            "loaded instance {} ({}) on {} in {} mode, {}\n",
            rep.instance,
            rep.pin_dir,
            rep.interfaces.join(", "),
            rep.xdp_mode.as_str(),
            if rep.observe { "observe" } else { "enforce" }
        );
        if rep.reused_maps {
            s.push_str("reused the maps kept by an earlier unload --keep-maps\n");
        }
        if let Some(r) = &rep.restored {
            s.push_str(&format!(
                "state: {} blocks restored, {} expired\n",
                r.blocks_restored, r.blocks_expired
            ));
        }
        s
    });
    Ok(())
}

pub fn unload(ctx: &Ctx, a: UnloadArgs) -> Result<()> {
    let rep = loader::unload(&ctx.dir, a.keep_maps)?;
    ctx.print(&rep, || {
        format!(
            "unloaded instance {} (detached from {}){}",
            rep.instance,
            if rep.detached.is_empty() {
                "-".to_string()
            } else {
                rep.detached.join(", ")
            },
            if rep.maps_kept { "; maps kept" } else { "" }
        )
    });
    Ok(())
}
