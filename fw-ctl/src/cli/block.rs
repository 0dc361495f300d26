//! `fw-ctl block`, `unblock`, `allow`, `disallow`. Every prefix is parsed by clap
//! before anything runs (an invalid one exits 2 naming it) and checked against the
//! allowlist before any map changes.

use std::time::Duration;

use clap::Args;
use fw_common::filter::BlockReason;
use ipnet::IpNet;
use serde::Serialize;

use super::Ctx;
use crate::{
    cidr::{Ttl, clap_prefix, clap_ttl},
    control::{self, Meta},
    error::Result,
    lists::{BlockRequest, Merge, Origin, Strictness},
};

#[derive(Debug, Args)]
pub struct BlockArgs {
    /// Source addresses or CIDR prefixes.
    #[arg(required = true, value_name = "CIDR", value_parser = clap_prefix)]
    pub prefixes: Vec<IpNet>,
    /// Lifetime (90s, 10m, 2h, 7d; `permanent` for none).
    #[arg(long, default_value = "10m", value_parser = clap_ttl)]
    pub ttl: Ttl,
    /// Why (kept in the state file, shown by `list blocks`).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct PrefixArgs {
    /// Addresses or CIDR prefixes.
    #[arg(required = true, value_name = "CIDR", value_parser = clap_prefix)]
    pub prefixes: Vec<IpNet>,
}

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// Source addresses or CIDR prefixes.
    #[arg(required = true, value_name = "CIDR", value_parser = clap_prefix)]
    pub prefixes: Vec<IpNet>,
    /// Why (kept in the state file).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct Changed {
    prefix: IpNet,
    changed: bool,
}

fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

pub fn block(ctx: &Ctx, a: BlockArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl block")?;
    let reqs: Vec<BlockRequest> = a
        .prefixes
        .iter()
        .map(|n| BlockRequest {
            net: *n,
            ttl: a.ttl.0,
            reason: BlockReason::Manual,
            origin: Origin::Manual,
            rule_id: 0,
        })
        .collect();
    let meta = Meta {
        text: a.reason,
        by: Some(operator()),
    };
    let out = control::block(
        &mut maps,
        Some(&ctx.state_path),
        &reqs,
        &meta,
        Merge::Replace,
        Strictness::Covered,
    )?;
    ctx.print(&out, || {
        out.iter()
            .map(|o| {
                format!(
                    "blocked {} ({:?}), {}\n",
                    o.prefix,
                    o.change,
                    ttl_text(a.ttl.0)
                )
            })
            .collect()
    });
    Ok(())
}

fn ttl_text(t: Option<Duration>) -> String {
    match t {
        None => "permanent".into(),
        Some(d) => format!("for {}", humantime::format_duration(d)),
    }
}

pub fn unblock(ctx: &Ctx, a: PrefixArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl unblock")?;
    let out = control::unblock(&mut maps, Some(&ctx.state_path), &a.prefixes)?;
    print_changed(ctx, out, "unblocked", "was not blocked");
    Ok(())
}

pub fn allow(ctx: &Ctx, a: AllowArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl allow")?;
    let meta = Meta {
        text: a.reason,
        by: Some(operator()),
    };
    let out = control::allow(&mut maps, Some(&ctx.state_path), &a.prefixes, &meta)?;
    print_changed(ctx, out, "allowlisted", "was already allowlisted");
    Ok(())
}

pub fn disallow(ctx: &Ctx, a: PrefixArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl disallow")?;
    let out = control::disallow(&mut maps, Some(&ctx.state_path), &a.prefixes)?;
    print_changed(
        ctx,
        out,
        "removed from the allowlist",
        "was not allowlisted",
    );
    Ok(())
}

fn print_changed(ctx: &Ctx, out: Vec<(IpNet, bool)>, yes: &str, no: &str) {
    let v: Vec<Changed> = out
        .into_iter()
        .map(|(prefix, changed)| Changed { prefix, changed })
        .collect();
    ctx.print(&v, || {
        v.iter()
            .map(|c| format!("{} {}\n", c.prefix, if c.changed { yes } else { no }))
            .collect()
    });
}
