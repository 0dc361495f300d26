//! Running the dashboard: open the store and audit log, serve HTTP on an
//! already-bound listener until a shutdown future resolves, prune by retention.

use std::{future::Future, sync::Arc, time::Duration};

use tad_wire::now_ms;
use tokio::net::TcpListener;

use crate::{
    app::App,
    audit::{AuditError, AuditLog},
    config::Config,
    influx::{InfluxSink, InfluxTargets},
    metrics::Metrics,
    publish::{Keys, KeysError, Publisher},
    store::{Store, StoreError},
};

/// Errors starting the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The `[bus]` certificate, key or CA cannot sign or verify.
    #[error(transparent)]
    Keys(#[from] KeysError),
}

/// Opens the store (creating parent directories), the audit log (verifying it),
/// the signing keys of the `[bus]` table if there is one ([`Keys`]) and the
/// Influx export task if configured. Must run inside a tokio runtime
/// when the export is enabled.
pub fn open_app(config: Config, publisher: Arc<dyn Publisher>) -> Result<App, StartError> {
    for path in [&config.storage.db_path, &config.storage.audit_log] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StartError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    let store = Store::open(&config.storage.db_path).map_err(|source| StartError::Store {
        path: config.storage.db_path.clone(),
        source,
    })?;
    store
        .name_devices(&config.devices)
        .map_err(|source| StartError::Store {
            path: config.storage.db_path.clone(),
            source,
        })?;
    let keys = config.bus.as_ref().map(Keys::from_bus_config).transpose()?;
    let audit = AuditLog::open(&config.storage.audit_log)?;
    let metrics = Arc::new(Metrics::default());
    let influx = config.influx.enabled.then(|| {
        InfluxSink::spawn(
            InfluxTargets {
                file: config.influx.file.clone(),
                udp: config.influx.udp,
            },
            256,
            metrics.clone(),
        )
    });
    let app = App::new(config, store, audit, publisher, influx, metrics);
    Ok(match keys {
        Some(k) => app.with_keys(k),
        None => app,
    })
}

/// Serves the pages and API on `listener` until `shutdown` resolves; open live
/// event streams are ended first so the graceful shutdown completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let closing = app.closing.clone();
    let routes = crate::api::routes(app);
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            closing.send_replace(true);
        })
        .run()
        .await;
}

/// Deletes rows past their retention every `retention.prune_interval_s` until
/// the app closes.
pub async fn prune_loop(app: Arc<App>) {
    let every = Duration::from_secs(app.config.retention.prune_interval_s.max(1));
    let mut closing = app.closing.subscribe();
    loop {
        match app.store.prune(now_ms(), &app.config.retention) {
            Ok(n) => {
                app.metrics
                    .pruned_rows
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(rows = n, "retention: pruned");
                }
            }
            Err(error) => tracing::warn!(%error, "retention: prune failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}
