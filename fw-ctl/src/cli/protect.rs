//! `fw-ctl protect`, `unprotect`: SYN authentication of a TCP service under a
//! spoofed SYN flood (see `fw_common::synauth`); `fw-ctl list protected` shows them.

use std::net::SocketAddr;

use clap::Args;
use fw_common::filter::ORIGIN_MANUAL;
use serde::Serialize;

use super::{Ctx, human_secs};
use crate::{
    cidr::{Ttl, clap_ttl},
    error::Result,
    loader,
    synauth::{self, Protection},
};

#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// The service, `address:port` (`[v6]:port` for IPv6); port 0 protects every
    /// TCP port of the host.
    #[arg(value_name = "ADDR:PORT")]
    pub service: SocketAddr,
    /// How long (90s, 10m, 2h; `permanent` until `unprotect`).
    #[arg(long, default_value = "10m", value_parser = clap_ttl)]
    pub ttl: Ttl,
    /// Rate for SYNs the gateway cannot answer (IPv4 options, IPv6 extension
    /// headers), packets/s; 0 passes them.
    #[arg(long, default_value_t = 0)]
    pub fallback_pps: u32,
    /// Burst for that rate, packets.
    #[arg(long, default_value_t = 16)]
    pub fallback_burst: u32,
}

#[derive(Debug, Args)]
pub struct UnprotectArgs {
    /// The service, `address:port`.
    #[arg(value_name = "ADDR:PORT")]
    pub service: SocketAddr,
}

#[derive(Serialize)]
struct Changed {
    service: SocketAddr,
    changed: bool,
}

fn ready(ctx: &Ctx, what: &str) -> Result<()> {
    loader::preflight(&ctx.dir, what)?;
    ctx.dir.require_loaded()
}

pub fn protect(ctx: &Ctx, a: ProtectArgs) -> Result<()> {
    ready(ctx, "fw-ctl protect")?;
    synauth::protect(
        &ctx.dir,
        a.service,
        Protection {
            ttl: a.ttl.0,
            fallback_pps: a.fallback_pps,
            fallback_burst: a.fallback_burst,
            rule_id: 0,
            origin: ORIGIN_MANUAL,
        },
    )?;
    ctx.print(
        &Changed {
            service: a.service,
            changed: true,
        },
        || {
            format!(
                "protected {} (SYN authentication) for {}",
                a.service,
                human_secs(a.ttl.0.map(|d| d.as_secs_f64()))
            )
        },
    );
    Ok(())
}

pub fn unprotect(ctx: &Ctx, a: UnprotectArgs) -> Result<()> {
    ready(ctx, "fw-ctl unprotect")?;
    let changed = synauth::unprotect(&ctx.dir, a.service)?;
    ctx.print(
        &Changed {
            service: a.service,
            changed,
        },
        || {
            if changed {
                format!("{} no longer protected", a.service)
            } else {
                format!("{} was not protected", a.service)
            }
        },
    );
    Ok(())
}

/// `fw-ctl list protected`.
pub fn list(ctx: &Ctx) -> Result<()> {
    ready(ctx, "fw-ctl list protected")?;
    let all = synauth::list(&ctx.dir)?;
    ctx.print(&all, || {
        let mut s = format!(
            "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "SERVICE", "EXPIRES", "CHALLENGED", "VALIDATED", "PASSED", "LIMITED"
        );
        let now = crate::clock::unix_ms();
        for p in &all {
            let left = p
                .expires_at_ms
                .map(|e| (e.saturating_sub(now)) as f64 / 1000.0);
            s += &format!(
                "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                p.service.to_string(),
                if p.active {
                    human_secs(left)
                } else {
                    "expired".into()
                },
                p.challenged,
                p.validated,
                p.passed,
                p.limited
            );
        }
        s
    });
    Ok(())
}
