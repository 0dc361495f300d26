//! The operator command line: clap derive definitions (doc comments are the help
//! text) and one module per verb. Every read verb takes `--json` (one JSON document
//! on stdout). Exit codes: 0 ok, 1 failure, 2 usage (bad arguments, invalid CIDR
//! or TTL; clap's own parse errors also exit 2).

pub mod block;
pub mod config;
pub mod feed;
pub mod flows;
pub mod list;
pub mod load;
pub mod mode;
pub mod protect;
pub mod run;
pub mod stats;
pub mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::{
    config::{GatewayFile, default_state_path},
    error::{CtlError, Result},
    kernel::Pinned,
    loader,
    pin::{DEFAULT_INSTANCE, PinDir},
};

/// Default configuration file, used when `--config` is not given and it exists.
pub const DEFAULT_CONFIG: &str = "/etc/fw-ctl/gateway.toml";

/// fw-ctl: the gateway's XDP loader, operator CLI and daemon.
#[derive(Debug, Parser)]
#[command(
    name = "fw-ctl",
    version,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage (bad arguments, invalid CIDR or TTL)."
)]
pub struct Cli {
    /// Instance name: the pin directory /sys/fs/bpf/<instance> [default: the config's, else "tad"].
    #[arg(long, global = true, env = "FW_CTL_INSTANCE")]
    pub instance: Option<String>,
    /// Gateway configuration file [default: /etc/fw-ctl/gateway.toml when it exists].
    #[arg(long, global = true, env = "FW_CTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Without --config: ignore /etc/fw-ctl/gateway.toml (built-in defaults).
    #[arg(long, global = true)]
    pub no_config: bool,
    /// Block state file [default: the config's, else /var/lib/fw-ctl/<instance>/state.json].
    #[arg(long, global = true, env = "FW_CTL_STATE")]
    pub state: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Load the XDP program, attach it to interfaces and pin it.
    Load(load::LoadArgs),
    /// Detach and unpin the program (and the maps unless --keep-maps).
    Unload(load::UnloadArgs),
    /// Interfaces, mode, map fill levels, counters and packets/s.
    Status(status::StatusArgs),
    /// Block source prefixes.
    Block(block::BlockArgs),
    /// Remove blocks.
    Unblock(block::PrefixArgs),
    /// Allowlist source prefixes (the allowlist always wins).
    Allow(block::AllowArgs),
    /// Remove manual allowlist entries.
    Disallow(block::PrefixArgs),
    /// List blocks or allows.
    List(list::ListArgs),
    /// Show the flow table.
    Flows(flows::FlowsArgs),
    /// Verdict counters (packets, bytes, packets/s).
    Stats(stats::StatsArgs),
    /// Set observe (IDS) or enforce (IPS) mode.
    Mode(mode::ModeArgs),
    /// Show or set the per-source rate limits and the evidence thresholds.
    Limits(mode::LimitsArgs),
    /// Protect a TCP service with SYN authentication (a spoofed SYN flood).
    Protect(protect::ProtectArgs),
    /// End the protection of a service.
    Unprotect(protect::UnprotectArgs),
    /// Threat-intelligence feeds.
    #[command(subcommand)]
    Feed(feed::FeedVerb),
    /// Configuration files.
    #[command(subcommand)]
    Config(config::ConfigVerb),
    /// Run the daemon: flow export, verdicts and commands over MQTT, state file.
    Run(run::RunArgs),
}

/// What every verb needs: the instance, the configuration, the state file.
pub struct Ctx {
    pub dir: PinDir,
    pub cfg: Option<GatewayFile>,
    pub state_path: PathBuf,
    pub json: bool,
}

impl Ctx {
    /// Resolves the global options.
    pub fn new(cli: &Cli) -> Result<Ctx> {
        let cfg_path = cli.config.clone().or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG);
            (!cli.no_config && p.exists()).then_some(p)
        });
        let cfg = match &cfg_path {
            Some(p) => Some(GatewayFile::load(p)?),
            None => None,
        };
        let instance = cli
            .instance
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.instance.clone()))
            .unwrap_or_else(|| DEFAULT_INSTANCE.to_string());
        let dir = PinDir::new(&instance)?;
        let state_path = cli
            .state
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.state_path()))
            .unwrap_or_else(|| default_state_path(&instance));
        Ok(Ctx {
            dir,
            cfg,
            state_path,
            json: cli.json,
        })
    }

    /// The pinned maps, after the privilege and bpffs checks.
    pub fn maps(&self, what: &str) -> Result<Pinned> {
        loader::preflight(&self.dir, what)?;
        self.dir.require_loaded()?;
        Pinned::open(&self.dir)
    }

    /// Prints `value` as JSON, or `text()` otherwise.
    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serialises")
            );
        } else {
            let t = text();
            if !t.is_empty() {
                println!("{}", t.trim_end());
            }
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let json = cli.json;
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let v = serde_json::json!({ "error": e.to_string(), "usage": e.is_usage() });
                println!("{v}");
            }
            eprintln!("fw-ctl: error: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    // `config check` must work on a file even when the default config is broken.
    if let Verb::Config(v) = &cli.verb {
        return config::run(v, cli.json);
    }
    let ctx = Ctx::new(&cli)?;
    match cli.verb {
        Verb::Load(a) => load::load(&ctx, a),
        Verb::Unload(a) => load::unload(&ctx, a),
        Verb::Status(a) => status::run(&ctx, a),
        Verb::Block(a) => block::block(&ctx, a),
        Verb::Unblock(a) => block::unblock(&ctx, a),
        Verb::Allow(a) => block::allow(&ctx, a),
        Verb::Disallow(a) => block::disallow(&ctx, a),
        Verb::List(a) => list::run(&ctx, a),
        Verb::Flows(a) => flows::run(&ctx, a),
        Verb::Stats(a) => stats::run(&ctx, a),
        Verb::Mode(a) => mode::mode(&ctx, a),
        Verb::Limits(a) => mode::limits(&ctx, a),
        Verb::Protect(a) => protect::protect(&ctx, a),
        Verb::Unprotect(a) => protect::unprotect(&ctx, a),
        Verb::Feed(v) => feed::run(&ctx, v),
        Verb::Config(_) => unreachable!("handled above"),
        Verb::Run(a) => run::run(ctx, a),
    }
}

/// Formats a duration in seconds for people: `9m58s`, `2h0m`, `permanent`.
pub fn human_secs(s: Option<f64>) -> String {
    match s {
        None => "permanent".into(),
        Some(s) => {
            let s = s.max(0.0) as u64;
            match s {
                0..60 => format!("{s}s"),
                60..3600 => format!("{}m{:02}s", s / 60, s % 60),
                3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
                _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
            }
        }
    }
}

/// An error for a verb that needs something the context lacks.
pub fn usage(what: &str, why: &str) -> CtlError {
    CtlError::InvalidArgument {
        what: what.into(),
        why: why.into(),
    }
}
