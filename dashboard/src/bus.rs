//! The dashboard's side of the MQTT/TLS bus (`tad_bus`): subscribes to
//! `tad/v1/#` (gateway state snapshots and deltas, signed verdicts and commands,
//! alerts, counters, ...) and feeds every message to [`App::ingest`]; publishes
//! what the API queued ([`Outbound`], QoS 1, thresholds retained, commands signed
//! with the dashboard's certificate key via `BusClient::publish_signed`). Its own
//! retained status and Last Will are handled by `tad_bus`.

use std::{sync::Arc, time::Duration};

use tad_bus::{BusClient, BusConfig, BusError, PublishOptions, QoS, RawPayload};
use tad_wire::{Command, TOPIC_ROOT};
use tokio::sync::mpsc;

use crate::{app::App, publish::Outbound};

/// The subscription filter: everything under the topic root.
pub fn filter() -> String {
    format!("{TOPIC_ROOT}/#")
}

/// Starts the bus client in the background (it keeps retrying until the broker
/// is reachable) and runs the ingest and publish loops until `shutdown`
/// resolves, then leaves cleanly (offline status, disconnect).
///
/// # Errors
/// [`BusError`] for a bad bus config (node id, certificate files), or
/// [`BusError::Config`] when `app` has no signing [`Keys`](crate::publish::Keys)
/// (`server::open_app` loads them from the same `[bus]` table) or they name
/// another identity than `cfg.node_id`.
pub async fn run(
    app: Arc<App>,
    cfg: BusConfig,
    mut outbound: mpsc::Receiver<Outbound>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), BusError> {
    let Some(keys) = app.keys.clone() else {
        return Err(BusError::Config {
            what: "no signing keys loaded for the dashboard (bus.cert_file/key_file)".into(),
        });
    };
    if keys.id() != cfg.node_id {
        return Err(BusError::Config {
            what: format!(
                "bus.node_id {:?} differs from the signing certificate's identity {:?}",
                cfg.node_id,
                keys.id()
            ),
        });
    }
    let mut builder = BusClient::builder(cfg)?;
    // Kept as bytes: `App::ingest` decodes them by topic and checks the ids in
    // them against the topic.
    let mut sub = builder.subscribe::<RawPayload>(&filter(), QoS::AtLeastOnce);
    let bus = builder.start()?;
    tracing::info!(node = bus.node_id(), filter = %filter(), "bus client started");

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = outbound.recv().await {
                let opts = if m.retain {
                    PublishOptions::retained()
                } else {
                    PublishOptions::reliable()
                };
                let res = if m.signed {
                    match tad_wire::decode::<Command>(&m.payload) {
                        Ok(c) => bus.publish_signed(&m.topic, &keys.signer, &c, opts).await,
                        Err(error) => {
                            tracing::error!(%error, topic = %m.topic, "unsignable outbound message");
                            continue;
                        }
                    }
                } else {
                    bus.publish_bytes(&m.topic, m.payload, opts).await
                };
                if let Err(error) = res {
                    tracing::error!(%error, topic = %m.topic, "publish failed");
                }
            }
        })
    };

    let ingest = async {
        let mut limiter = WarnLimiter::new(Duration::from_secs(10));
        while let Some(r) = sub.recv().await {
            // Blocks briefly (SQLite write, audit fsync): one message at a time.
            if let Err(error) = app.ingest(&r.topic, &r.message.0)
                && let Some(suppressed) = limiter.allow()
            {
                tracing::warn!(%error, topic = %r.topic, suppressed, "bus message refused");
            }
        }
    };
    tokio::select! {
        _ = ingest => tracing::warn!("bus subscription ended"),
        _ = shutdown => {}
    }
    publisher.abort();
    bus.shutdown(Duration::from_secs(5)).await
}

/// At most one warning per interval; counts the ones it held back (every refusal
/// is also counted in `/metrics`).
struct WarnLimiter {
    every: Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    fn new(every: Duration) -> WarnLimiter {
        WarnLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a warning may be logged now (`n` were held back since the
    /// last one), `None` otherwise.
    fn allow(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_are_rate_limited_and_the_rest_counted() {
        let mut l = WarnLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(l.allow(), Some(2));
    }
}
