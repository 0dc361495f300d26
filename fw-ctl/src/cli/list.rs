//! `fw-ctl list blocks|allows|protected`.

use clap::{Args, ValueEnum};

use super::{Ctx, human_secs};
use crate::{control, error::Result};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Which {
    /// Blocklist entries in force: time left, reason, origin, hits.
    Blocks,
    /// Allowlist entries: origin (manual or config), hits.
    Allows,
    /// Services under SYN authentication: expiry, challenges, validated sources.
    Protected,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(value_enum)]
    pub which: Which,
}

pub fn run(ctx: &Ctx, a: ListArgs) -> Result<()> {
    if let Which::Protected = a.which {
        return super::protect::list(ctx);
    }
    let maps = ctx.maps("fw-ctl list")?;
    match a.which {
        Which::Blocks => {
            let v = control::list_blocks(&maps, Some(&ctx.state_path))?;
            ctx.print(&v, || {
                let mut s = format!(
                    "{:<20} {:>10} {:<20} {:<9} {:>10}  {}\n",
                    "PREFIX", "LEFT", "REASON", "ORIGIN", "HITS", "TEXT"
                );
                for b in &v {
                    s.push_str(&format!(
                        "{:<20} {:>10} {:<20} {:<9} {:>10}  {}\n",
                        b.prefix.to_string(),
                        human_secs(b.expires_in_s),
                        serde_json::to_value(b.reason)
                            .ok()
                            .and_then(|r| r.as_str().map(String::from))
                            .unwrap_or_default(),
                        b.origin.as_str(),
                        b.hits,
                        [b.text.clone(), b.by.clone().map(|x| format!("({x})"))]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
                s
            });
        }
        Which::Allows => {
            let v = control::list_allows(&maps, Some(&ctx.state_path))?;
            ctx.print(&v, || {
                let mut s = format!(
                    "{:<40} {:<9} {:>10}  {}\n",
                    "PREFIX", "ORIGIN", "HITS", "TEXT"
                );
                for a in &v {
                    s.push_str(&format!(
                        "{:<40} {:<9} {:>10}  {}\n",
                        a.prefix.to_string(),
                        a.origin.as_str(),
                        a.hits,
                        a.text.clone().unwrap_or_default()
                    ));
                }
                s
            });
        }
        Which::Protected => unreachable!("handled above"),
    }
    Ok(())
}
