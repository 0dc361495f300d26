//! `fw-ctl run --config gateway.toml`: the daemon ([`crate::daemon`]). SIGTERM and
//! SIGINT flush and exit, leaving the XDP program pinned and filtering unless
//! `--unload-on-exit` is given.

use clap::Args;

use super::Ctx;
use crate::{
    daemon,
    error::{CtlError, Result},
    loader,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Detach and unpin the program (maps kept) when the daemon stops.
    #[arg(long)]
    pub unload_on_exit: bool,
}

pub fn run(ctx: Ctx, a: RunArgs) -> Result<()> {
    let Some(cfg) = ctx.cfg.clone() else {
        return Err(super::usage(
            "--config",
            "the daemon needs a configuration file",
        ));
    };
    let mut cfg = cfg;
    cfg.instance = ctx.dir.instance.clone();
    cfg.state_file = Some(ctx.state_path.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CtlError::Runtime(format!("tokio runtime: {e}")))?;
    let status = rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        };
        daemon::run(cfg, shutdown).await
    })?;
    tracing::info!(
        exported = status.records_exported_total,
        published = status.records_published_total,
        dropped = status.records_dropped_total,
        "daemon exited"
    );
    if a.unload_on_exit {
        loader::unload(&ctx.dir, true)?;
    }
    Ok(())
}
