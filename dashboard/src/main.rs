//! `dashboard`: the monitoring node's binary. Parses arguments and hands over to
//! the library.
// warp composes every route into one nested type; release builds need more
// recursion than the default 128 to prove it Unpin.
#![recursion_limit = "256"]

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use dashboard::{
    audit,
    config::Config,
    publish::{ChannelPublisher, Publisher, RecordingPublisher},
    server,
};

/// Monitoring node of the TuringAnamolyDetection gateway: web UI, REST API,
/// history and tamper-evident audit log.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the dashboard: subscribe to the bus, store, serve the pages and API.
    Serve {
        /// Configuration file (TOML; see dashboard.toml.example).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain of an audit log; exit 1 naming the first bad line.
    Verify {
        /// The JSON Lines audit log.
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Audit {
            cmd: AuditCmd::Verify { file, json },
        } => verify(&file, json),
        Cmd::Serve { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,warp=warn".into()),
                )
                .init();
            match serve(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dashboard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn verify(file: &std::path::Path, json: bool) -> ExitCode {
    match audit::verify_file(file) {
        Ok(head) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "records": head.records, "head": head.hash})
                );
            } else {
                println!(
                    "{}: OK, {} records, head {}",
                    file.display(),
                    head.records,
                    head.hash
                );
            }
            ExitCode::SUCCESS
        }
        Err(audit::VerifyError::Fault { fault, .. }) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "line": fault.line, "error": fault.what})
                );
            } else {
                eprintln!(
                    "{}: TAMPERED at line {}: {}",
                    file.display(),
                    fault.line,
                    fault.what
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dashboard: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, "dashboard listening");
    let bus_cfg = config.bus.clone();
    let (publisher, outbound): (Arc<dyn Publisher>, _) = if bus_cfg.is_some() {
        let (p, rx) = ChannelPublisher::new(config.api.outbound_queue);
        (Arc::new(p), Some(rx))
    } else {
        tracing::warn!("no [bus] table: nothing will arrive, commands are only recorded");
        (Arc::new(RecordingPublisher::default()), None)
    };
    let app = Arc::new(server::open_app(config, publisher)?);
    tokio::spawn(server::prune_loop(app.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let bus_task = match (bus_cfg, outbound) {
        (Some(cfg), Some(rx)) => Some(tokio::spawn(dashboard::bus::run(
            app.clone(),
            cfg,
            rx,
            stopped(stop_rx.clone()),
        ))),
        _ => None,
    };
    let http = tokio::spawn(server::serve(listener, app, stopped(stop_rx)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    if let Some(t) = bus_task {
        t.await?.context("bus")?;
    }
    http.await?;
    tracing::info!("stopped");
    Ok(())
}
