//! The MQTT service (`detector run`): feeds flow batches from this instance's
//! partitions into the [`Engine`] and publishes what it finds.
//!
//! | direction | topic | payload | publish options |
//! |---|---|---|---|
//! | in | `tad/v1/gw/+/flows/<p>` for each taken partition `p` | [`FlowBatch`] | QoS 1 |
//! | in | `tad/v1/settings/thresholds` (retained) | [`ThresholdSettings`] | QoS 1 |
//! | out | `tad/v1/det/<det>/alerts` | [`Alert`](tad_wire::Alert) | QoS 1, waits for room |
//! | out | `tad/v1/gw/<gw>/verdicts` (the gateway that saw the flows) | [`Verdict`](tad_wire::Verdict) | QoS 1, expiry `service.verdict_expiry_s` |
//! | out | `tad/v1/det/<det>/trust` | [`TrustUpdate`](tad_wire::TrustUpdate) | QoS 0, drop-oldest |
//! | out | `tad/v1/det/<det>/status` | retained [`NodeStatus`] with the mode; Last Will offline | by `tad_bus` |
//!
//! Queues: each subscription has the bus client's bounded queue (overflow dropped
//! and counted in its metrics); a forwarding task per flow subscription feeds one
//! bounded channel of `service.queue` batches, waiting when it is full
//! (back-pressure onto the subscription queues). Threshold settings with an unknown
//! key or a bad value are rejected whole, logged and counted; nothing changes.

use std::{future::Future, time::Duration};

use serde::Serialize;
use tad_bus::{BusBuilder, BusClient, BusError, PublishOptions, QoS, Subscription};
use tad_wire::{FlowBatch, NodeStatus, Role, SCHEMA_VERSION, ThresholdSettings, now_ms, topic};
use tokio::sync::mpsc;

use crate::{
    config::{Config, ConfigError},
    engine::{Counters, Engine, Output},
    partition::Partitioner,
};

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("model: {0}")]
    Model(#[from] crate::model::ModelError),
}

/// Subscriptions registered on the bus builder before connecting, so messages the
/// broker queued for this detector's session are not missed.
pub struct Inputs {
    pub flows: Vec<Subscription<FlowBatch>>,
    pub settings: Subscription<ThresholdSettings>,
}

/// Registers the flow-partition and settings subscriptions.
pub fn subscribe(builder: &mut BusBuilder, cfg: &Config) -> Inputs {
    let flows = Partitioner::new(&cfg.partitions)
        .partitions()
        .into_iter()
        .map(|p| {
            builder.subscribe::<FlowBatch>(&topic::flows_partition_filter(p), QoS::AtLeastOnce)
        })
        .collect();
    let settings = builder.subscribe::<ThresholdSettings>(&topic::thresholds(), QoS::AtLeastOnce);
    Inputs { flows, settings }
}

/// What the service did, returned at shutdown.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceStats {
    pub batches: u64,
    pub settings_applied: u64,
    pub settings_rejected: u64,
    pub publish_errors: u64,
    pub engine: Counters,
}

async fn publish(bus: &BusClient, det: &str, expiry_s: u32, out: Output, stats: &mut ServiceStats) {
    for v in &out.verdicts {
        let r = bus
            .publish(
                &topic::verdicts(&v.gateway_id),
                &v.verdict,
                PublishOptions::verdict(expiry_s),
            )
            .await;
        if let Err(e) = r {
            stats.publish_errors += 1;
            tracing::warn!(error = %e, id = %v.verdict.id, "verdict not published");
        } else {
            tracing::info!(id = %v.verdict.id, target = %v.verdict.target, gateway = %v.gateway_id, ttl_s = ?v.verdict.ttl_s, observe_only = v.verdict.observe_only, "verdict");
        }
    }
    for a in &out.alerts {
        if let Err(e) = bus
            .publish(&topic::alerts(det), a, PublishOptions::reliable())
            .await
        {
            stats.publish_errors += 1;
            tracing::warn!(error = %e, id = %a.id, "alert not published");
        }
    }
    for t in &out.trust {
        if let Err(e) = bus
            .publish(&topic::trust(det), t, PublishOptions::best_effort())
            .await
        {
            stats.publish_errors += 1;
            tracing::debug!(error = %e, "trust update not published");
        }
    }
}

/// Runs until `shutdown` completes, then shuts the bus client down cleanly
/// (offline status, no Last Will) and returns the counters.
pub async fn serve(
    mut engine: Engine,
    bus: BusClient,
    inputs: Inputs,
    shutdown: impl Future<Output = ()>,
) -> Result<ServiceStats, ServiceError> {
    let cfg = engine.config().clone();
    let det = cfg.detector.id.clone();
    bus.update_status(NodeStatus {
        v: SCHEMA_VERSION,
        node_id: det.clone(),
        role: Role::Detector,
        online: true,
        at_ms: now_ms(),
        mode: Some(cfg.detector.mode),
        interfaces: Vec::new(),
        maps: Vec::new(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
    .await?;
    let (tx, mut rx) = mpsc::channel::<FlowBatch>(cfg.service.queue);
    let mut forwarders = Vec::new();
    for mut sub in inputs.flows {
        let tx = tx.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(r) = sub.recv().await {
                if tx.send(r.message).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut settings = inputs.settings;
    let mut stats = ServiceStats::default();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.service.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_ms = 0u64;
    tracing::info!(detector = %det, partitions = ?Partitioner::new(&cfg.partitions).partitions(), mode = ?cfg.detector.mode, "detector running");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(batch) = rx.recv() => {
                stats.batches += 1;
                last_ms = last_ms.max(now_ms());
                let out = engine.batch(&batch, last_ms);
                publish(&bus, &det, cfg.service.verdict_expiry_s, out, &mut stats).await;
            }
            Some(s) = settings.recv() => {
                match engine.apply_thresholds(&s.message.values) {
                    Ok(()) => {
                        stats.settings_applied += 1;
                        tracing::info!(id = %s.message.id, operator = %s.message.operator, values = ?s.message.values, "thresholds applied");
                    }
                    Err(e) => {
                        stats.settings_rejected += 1;
                        tracing::warn!(id = %s.message.id, operator = %s.message.operator, error = %e, "threshold settings rejected; nothing changed");
                    }
                }
            }
            _ = tick.tick() => {
                last_ms = last_ms.max(now_ms());
                let out = engine.tick(last_ms);
                publish(&bus, &det, cfg.service.verdict_expiry_s, out, &mut stats).await;
            }
        }
    }
    for f in forwarders {
        f.abort();
    }
    stats.engine = engine.counters;
    tracing::info!(stats = ?stats, bus = ?bus.metrics(), "detector stopping");
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(stats)
}

/// `detector run`: connects (retrying in the background until the broker is up)
/// and serves until SIGINT or SIGTERM.
pub fn run_blocking(cfg: Config, engine: Engine) -> Result<ServiceStats, ServiceError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut builder = BusClient::builder(cfg.bus_config())?;
        let inputs = subscribe(&mut builder, &cfg);
        let bus = builder.start()?;
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        serve(engine, bus, inputs, shutdown).await
    })
}
