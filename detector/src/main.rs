//! `detector`: the detector node's binary. Thin: parses arguments and calls the
//! library (see `detector::engine`).

use std::{fs::File, io::BufWriter, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use detector::{config::Config, engine::Engine, model::Autoencoder};

/// The detector: port scans, floods, spikes, brute force, policy violations and an
/// autoencoder over flow records; device trust scores; verdicts for the gateways.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the detector service (MQTT).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the feature vectors of captures as CSV (training data).
    Features {
        /// Captures (pcap or pcapng).
        #[arg(long, num_args = 1.., required = true)]
        pcap: Vec<PathBuf>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the alerts, verdicts and trust updates a capture raises (JSON lines).
    ReplayPcap {
        pcap: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also print each flow record.
        #[arg(long)]
        records: bool,
    },
    /// Flow records per second through partitioning, model and rules on one core.
    Bench {
        /// Write {"records_per_s": ...} here as well.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Records to push through.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Model to use (default: the committed one); `none` runs the rules only.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Check a config file.
    CheckConfig { file: PathBuf },
}

fn load_engine(cfg: Config) -> anyhow::Result<Engine> {
    let model = if cfg.ml.enabled {
        Some(
            Autoencoder::load(&cfg.ml.model)
                .with_context(|| "loading the model (set [ml] enabled = false to run without)")?,
        )
    } else {
        None
    };
    let mut engine = Engine::new(cfg.clone(), model);
    if let Some(feed) = &cfg.trust.threat_feed {
        let (f, bad) = detector::trust::ThreatFeed::load(feed)
            .with_context(|| format!("reading {}", feed.display()))?;
        for line in bad {
            tracing::warn!(file = %feed.display(), line, "threat feed line is not an IP or CIDR; skipped");
        }
        engine.trust_mut().feed = f;
    }
    Ok(engine)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            let engine = load_engine(cfg.clone())?;
            let stats = detector::service::run_blocking(cfg, engine)?;
            eprintln!("{}", serde_json::to_string(&stats)?);
            Ok(())
        }
        Cmd::Features { pcap, out } => {
            let paths: Vec<&std::path::Path> = pcap.iter().map(|p| p.as_path()).collect();
            let mut w = BufWriter::new(
                File::create(&out).with_context(|| format!("creating {}", out.display()))?,
            );
            let n = detector::features_csv::write_csv(&paths, &mut w)?;
            eprintln!("{n} feature rows written to {}", out.display());
            Ok(())
        }
        Cmd::ReplayPcap {
            pcap,
            config,
            records,
        } => {
            let mut cfg = match config {
                Some(c) => Config::load(&c)?,
                None => Config::default(),
            };
            if cfg.ml.model.is_relative() && !cfg.ml.model.exists() {
                cfg.ml.model = detector::model::default_model_path();
            }
            let mut engine = load_engine(cfg)?;
            let recs = detector::replay::records(&pcap)?;
            if records {
                for r in &recs {
                    println!(
                        "{}",
                        serde_json::json!({"record": r.record, "at_ns": r.at_ns})
                    );
                }
            }
            for (at, out) in detector::replay::run(&mut engine, &recs) {
                for a in out.alerts {
                    println!("{}", serde_json::json!({"at_ns": at, "alert": a}));
                }
                for v in out.verdicts {
                    println!(
                        "{}",
                        serde_json::json!({"at_ns": at, "gateway": v.gateway_id, "verdict": v.verdict})
                    );
                }
                for t in out.trust {
                    println!("{}", serde_json::json!({"at_ns": at, "trust": t}));
                }
            }
            eprintln!("{}", serde_json::to_string(&engine.counters)?);
            Ok(())
        }
        Cmd::Bench {
            json,
            records,
            model,
        } => {
            let model = model.unwrap_or_else(detector::model::default_model_path);
            let r = detector::bench::run(records, &model)?;
            let s = serde_json::to_string_pretty(&r)?;
            println!("{s}");
            if let Some(p) = json {
                std::fs::write(&p, s).with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        Cmd::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}
