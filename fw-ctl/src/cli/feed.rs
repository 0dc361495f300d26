//! `fw-ctl feed load FILE [--ttl ...]`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Ctx;
use crate::{
    cidr::{Ttl, clap_ttl},
    error::Result,
    feed,
};

#[derive(Debug, Subcommand)]
pub enum FeedVerb {
    /// Block every prefix of a FireHOL / Spamhaus DROP style list (one IP or CIDR a
    /// line, `#` and `;` comments). Bad lines are reported with their numbers; the
    /// good ones are loaded.
    Load(FeedLoadArgs),
}

#[derive(Debug, Args)]
pub struct FeedLoadArgs {
    pub file: PathBuf,
    /// Lifetime of the entries (e.g. 2d; `permanent` for none).
    #[arg(long, default_value = "permanent", value_parser = clap_ttl)]
    pub ttl: Ttl,
}

pub fn run(ctx: &Ctx, v: FeedVerb) -> Result<()> {
    match v {
        FeedVerb::Load(a) => {
            let mut maps = ctx.maps("fw-ctl feed load")?;
            let rep = feed::load(&mut maps, Some(&ctx.state_path), &a.file, a.ttl.0)?;
            ctx.print(&rep, || {
                let mut s = format!(
                    "{}: {} prefixes, {} new, {} updated, {} already blocked, {} allowlisted (skipped), {} bad lines\n",
                    rep.file,
                    rep.prefixes,
                    rep.inserted,
                    rep.updated,
                    rep.unchanged,
                    rep.allowlisted.len(),
                    rep.bad_lines.len()
                );
                for b in &rep.bad_lines {
                    s.push_str(&format!("  line {}: {}\n", b.line, b.error));
                }
                s
            });
            for b in &rep.bad_lines {
                eprintln!("fw-ctl: {}:{}: {}", rep.file, b.line, b.error);
            }
            Ok(())
        }
    }
}
