//! The MQTT service (`detector run`): feeds flow batches from this instance's
//! partitions into the [`Engine`], publishes what it finds, and takes runtime
//! threshold settings.
//!
//! | direction | topic | payload | publish options |
//! |---|---|---|---|
//! | in | `tad/v1/gw/+/flows/<p>` for each taken partition `p` | [`FlowBatch`] | QoS 1 |
//! | in | `tad/v1/gw/+/evidence/<p>` for each taken partition `p` (unless `evidence.enabled = false`) | [`EvidenceBatch`]: the gateways' kernel evidence and XDP events ([`Engine::evidence`]) | QoS 0 |
//! | in | `tad/v1/settings/thresholds` (retained) | [`ThresholdSettings`] | QoS 1 |
//! | in | `tad/v1/gw/+/status`, `tad/v1/det/+/status` (retained) | [`NodeStatus`]: a gateway's `partitions`, checked against `[partitions] count` (a mismatch heard before the first record stops the service with [`ServiceError::PartitionCount`]); the detectors online, among which `[partitions] live` shares the partitions ([`crate::fleet`]) | QoS 1 |
//! | out | `tad/v1/det/<det>/alerts` | [`Alert`](tad_wire::Alert) | QoS 1, waits for room |
//! | out | `tad/v1/gw/<gw>/verdicts/<det>` (`gw`: the gateway that saw the flows; with `[fleet] block_on = "all"` blocks, quarantines and lifts also go to every gateway whose status says online) | [`Verdict`](tad_wire::Verdict), signed: a JWS by this detector's certificate key ([`tad_bus::signing`], content type `application/jose`) | QoS 1, expiry `service.verdict_expiry_s` |
//! | out | `tad/v1/det/<det>/settings/schema` | retained [`SettingsSchema`](tad_wire::SettingsSchema): every key [`ThresholdSettings`] may set, kind, range, default (the config file's value), unit, help ([`crate::settings`]); at start and after every reconnect | QoS 1, retained |
//! | out | `tad/v1/det/<det>/settings/acks` | [`SettingsAck`]: one per [`ThresholdSettings`] received | QoS 1, waits for room |
//! | out | `tad/v1/det/<det>/trust` | [`TrustUpdate`](tad_wire::TrustUpdate) | QoS 0, drop-oldest |
//! | out | `tad/v1/det/<det>/status` | retained [`NodeStatus`] with the mode; Last Will offline | by `tad_bus` |
//!
//! `<det>` is this detector's id, the CN of its certificate: the broker lets it
//! publish verdicts only under its own id, and the gateways check that the
//! signature's certificate names the same id ([`signer`] refuses to start with a
//! certificate naming another).
//!
//! Threshold settings: a [`ThresholdSettings`]'s `values` are the whole set of
//! overrides. The config in force becomes the config file's (kept unchanged from
//! start) plus those values, so a key left out is back at its file value at once
//! ([`Engine::apply_thresholds`]). All or nothing: an unknown key or a bad value
//! refuses the whole message and nothing changes. Either way a [`SettingsAck`]
//! answers it (`applied` or `refused` with an error naming the key, and the
//! `effective` value of every schema key afterwards), and the outcome is counted in
//! [`ServiceStats`].
//!
//! Fleet (`[partitions] live = true`, `docs/fleet.md`): every instance subscribes
//! to all partitions and hands the engine only those it owns by rendezvous
//! hashing over the online detectors ([`Engine::set_partitions`]); when one goes
//! offline (its clean shutdown, or the broker's Last Will) the others take its
//! partitions over with the next status message, and their source state builds up
//! again within one detection window. The cost is that every instance receives
//! every batch (decoding included).
//!
//! Queues: each subscription has the bus client's bounded queue (overflow dropped
//! and counted in its metrics); a forwarding task per flow subscription feeds one
//! bounded channel of `service.queue` batches, waiting when it is full
//! (back-pressure onto the subscription queues). Evidence batches have their own
//! channel of the same size, so a backlog of flow batches does not delay them.

use std::{future::Future, path::PathBuf, time::Duration};

use serde::Serialize;
use tad_bus::{
    BusBuilder, BusClient, BusError, ConnectionState, PublishOptions, QoS, SignError, Signer,
    Subscription,
};
use tad_wire::{
    EvidenceBatch, FlowBatch, NodeId, NodeStatus, Role, SCHEMA_VERSION, SettingsAck,
    SettingsOutcome, ThresholdSettings, now_ms, topic,
};
use tokio::sync::mpsc;

use crate::{
    config::{Config, ConfigError},
    engine::{Counters, Engine, Output},
    partition::Partitioner,
    settings,
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
    /// The verdict signing key could not be loaded from the bus certificate and
    /// key files.
    #[error(
        "cannot sign verdicts with certificate {} and key {}: {source}",
        cert_file.display(),
        key_file.display()
    )]
    Signing {
        cert_file: PathBuf,
        key_file: PathBuf,
        #[source]
        source: SignError,
    },
    /// A gateway publishes to another number of partitions than this
    /// detector's `[partitions] count` (`crate::fleet::check_count`), heard
    /// before any record: some sources would never be read.
    #[error(transparent)]
    PartitionCount(#[from] crate::fleet::CountMismatch),
    /// The signing certificate names another node than `detector.id`: every
    /// verdict would be refused by the gateways.
    #[error(
        "the certificate {} names {signer}, but detector.id is {detector}: verdicts would be refused",
        cert_file.display()
    )]
    Identity {
        cert_file: PathBuf,
        signer: NodeId,
        detector: NodeId,
    },
}

/// The verdict signer of `cfg`: its bus certificate and key
/// (`bus.cert_file`, `bus.key_file`), whose certificate must name `detector.id`.
///
/// # Errors
/// [`ServiceError::Signing`] naming both files when they cannot be read or do not
/// belong together; [`ServiceError::Identity`] when the certificate names another
/// node.
pub fn signer(cfg: &Config) -> Result<Signer, ServiceError> {
    let bus = cfg.bus_config();
    let signer = Signer::from_bus_config(&bus).map_err(|source| ServiceError::Signing {
        cert_file: bus.cert_file.clone(),
        key_file: bus.key_file.clone(),
        source,
    })?;
    if *signer.id() != cfg.detector.id {
        return Err(ServiceError::Identity {
            cert_file: bus.cert_file,
            signer: signer.id().clone(),
            detector: cfg.detector.id.clone(),
        });
    }
    Ok(signer)
}

/// Subscriptions registered on the bus builder before connecting, so messages the
/// broker queued for this detector's session are not missed.
pub struct Inputs {
    pub flows: Vec<Subscription<FlowBatch>>,
    /// Empty when `evidence.enabled` is false.
    pub evidence: Vec<Subscription<EvidenceBatch>>,
    pub settings: Subscription<ThresholdSettings>,
    /// The gateways' and detectors' retained statuses (`tad/v1/gw/+/status`,
    /// `tad/v1/det/+/status`): partition counts to check, the live detectors
    /// to share partitions with (`[partitions] live`).
    pub statuses: Vec<Subscription<NodeStatus>>,
}

/// Registers the flow-partition, evidence-partition and settings subscriptions.
pub fn subscribe(builder: &mut BusBuilder, cfg: &Config) -> Inputs {
    let parts = Partitioner::new(&cfg.partitions).partitions();
    let flows = parts
        .iter()
        .map(|p| {
            builder.subscribe::<FlowBatch>(&topic::flows_partition_filter(*p), QoS::AtLeastOnce)
        })
        .collect();
    let evidence = if cfg.evidence.enabled {
        parts
            .iter()
            .map(|p| {
                builder.subscribe::<EvidenceBatch>(
                    &topic::evidence_partition_filter(*p),
                    QoS::AtMostOnce,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let settings = builder.subscribe::<ThresholdSettings>(&topic::thresholds(), QoS::AtLeastOnce);
    let statuses = [
        topic::gateway_status_filter(),
        topic::detector_status_filter(),
    ]
    .iter()
    .map(|f| builder.subscribe::<NodeStatus>(f, QoS::AtLeastOnce))
    .collect();
    Inputs {
        flows,
        evidence,
        settings,
        statuses,
    }
}

/// What the service did, returned at shutdown.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceStats {
    /// Flow batches processed.
    pub batches: u64,
    /// Evidence batches processed.
    pub evidence_batches: u64,
    /// Threshold settings messages applied (acked `applied`).
    pub settings_applied: u64,
    /// Threshold settings messages refused (acked `refused`; nothing changed).
    pub settings_refused: u64,
    /// Settings schemas published (start and every reconnect).
    pub schemas_published: u64,
    /// Messages the bus client would not queue (closed, too large).
    pub publish_errors: u64,
    /// Times the partitions taken changed (`[partitions] live`: a detector came
    /// or went).
    pub partition_changes: u64,
    /// Gateway statuses whose partition count differs from ours, heard after
    /// the first record (before it, the mismatch stops the service).
    pub partition_mismatches: u64,
    pub engine: Counters,
}

/// What one call of [`publish`] needs besides the output.
struct Outlet<'a> {
    bus: &'a BusClient,
    signer: &'a Signer,
    det: &'a NodeId,
    expiry_s: u32,
}

/// Publishes `out`: each verdict to its gateway and, for blocks, quarantines
/// and their lifts, also to every gateway in `copies` (`[fleet] block_on =
/// "all"`); alerts and trust updates once.
async fn publish(o: &Outlet<'_>, out: Output, copies: &[String], stats: &mut ServiceStats) {
    let (bus, det) = (o.bus, o.det.as_str());
    for v in &out.verdicts {
        let fleet_wide = matches!(
            v.verdict.action,
            tad_wire::Action::Block | tad_wire::Action::Quarantine | tad_wire::Action::Unblock
        );
        let others = copies
            .iter()
            .filter(|g| fleet_wide && g.as_str() != v.gateway_id.as_str());
        for gw in std::iter::once(v.gateway_id.as_str()).chain(others.map(String::as_str)) {
            let r = bus
                .publish_signed(
                    &topic::verdicts(gw, det),
                    o.signer,
                    &v.verdict,
                    PublishOptions::verdict(o.expiry_s),
                )
                .await;
            if let Err(e) = r {
                stats.publish_errors += 1;
                tracing::warn!(error = %e, id = %v.verdict.id, gateway = gw, "verdict not published");
            } else {
                tracing::info!(id = %v.verdict.id, target = %v.verdict.target, gateway = gw, ttl_s = ?v.verdict.ttl_s, observe_only = v.verdict.observe_only, "verdict");
            }
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

/// Publishes the settings schema of the engine's base config (retained).
async fn publish_schema(bus: &BusClient, engine: &Engine, stats: &mut ServiceStats) {
    let det = &engine.base_config().detector.id;
    let schema = settings::schema(engine.base_config(), det, now_ms());
    match bus
        .publish(
            &topic::settings_schema(det),
            &schema,
            PublishOptions::retained(),
        )
        .await
    {
        Ok(()) => {
            stats.schemas_published += 1;
            tracing::debug!(keys = schema.keys.len(), "settings schema published");
        }
        Err(e) => {
            stats.publish_errors += 1;
            tracing::warn!(error = %e, "settings schema not published");
        }
    }
}

/// Applies one settings message (as the whole override set) and returns its ack.
fn apply_settings(
    engine: &mut Engine,
    s: &ThresholdSettings,
    stats: &mut ServiceStats,
) -> SettingsAck {
    let (outcome, error) = match engine.apply_thresholds(&s.values) {
        Ok(()) => {
            stats.settings_applied += 1;
            tracing::info!(id = %s.id, operator = %s.operator, values = ?s.values, "thresholds applied");
            (SettingsOutcome::Applied, None)
        }
        Err(e) => {
            stats.settings_refused += 1;
            tracing::warn!(id = %s.id, operator = %s.operator, error = %e, "threshold settings refused; nothing changed");
            (SettingsOutcome::Refused, Some(e.to_string()))
        }
    };
    SettingsAck {
        v: SCHEMA_VERSION,
        id: s.id.clone(),
        detector_id: engine.config().detector.id.clone(),
        at_ms: now_ms(),
        outcome,
        error,
        effective: settings::effective(engine.config()),
    }
}

/// Runs until `shutdown` completes, then shuts the bus client down cleanly
/// (offline status, no Last Will) and returns the counters. Verdicts are signed
/// with `signer` (see [`signer`]); the engine's config is the config file's (its
/// thresholds are the schema's defaults).
///
/// # Errors
/// [`ServiceError::Identity`] when `signer` is not `detector.id`;
/// [`ServiceError::Bus`] when the bus client closed before the first status.
pub async fn serve(
    mut engine: Engine,
    bus: BusClient,
    signer: Signer,
    inputs: Inputs,
    shutdown: impl Future<Output = ()>,
) -> Result<ServiceStats, ServiceError> {
    let cfg = engine.config().clone();
    let det = cfg.detector.id.clone();
    if *signer.id() != det {
        return Err(ServiceError::Identity {
            cert_file: cfg.bus_config().cert_file,
            signer: signer.id().clone(),
            detector: det,
        });
    }
    bus.update_status(status(&cfg, &engine)).await?;
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
    let (etx, mut erx) = mpsc::channel::<EvidenceBatch>(cfg.service.queue);
    for mut sub in inputs.evidence {
        let tx = etx.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(r) = sub.recv().await {
                if tx.send(r.message).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(etx);
    let (stx, mut srx) = mpsc::channel::<NodeStatus>(64);
    for mut sub in inputs.statuses {
        let tx = stx.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(r) = sub.recv().await {
                if tx.send(r.message).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(stx);
    let mut fleet = Fleet::new(&cfg);
    let mut settings = inputs.settings;
    let mut stats = ServiceStats::default();
    let outlet = Outlet {
        bus: &bus,
        signer: &signer,
        det: &det,
        expiry_s: cfg.service.verdict_expiry_s,
    };
    // The schema now (queued until connected) and after every reconnect (a broker
    // without persistence forgets retained messages).
    let mut state = bus.state();
    state.borrow_and_update();
    let mut state_open = true;
    publish_schema(&bus, &engine, &mut stats).await;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.service.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_ms = 0u64;
    tracing::info!(detector = %det, partitions = ?engine.partitions(), live = cfg.partitions.live, mode = ?cfg.detector.mode, "detector running");
    let mut failed: Option<ServiceError> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(batch) = rx.recv() => {
                stats.batches += 1;
                last_ms = last_ms.max(now_ms());
                let out = engine.batch(&batch, last_ms);
                publish(&outlet, out, fleet.block_copies(), &mut stats).await;
            }
            Some(batch) = erx.recv() => {
                stats.evidence_batches += 1;
                last_ms = last_ms.max(now_ms());
                let out = engine.evidence(&batch, last_ms);
                publish(&outlet, out, fleet.block_copies(), &mut stats).await;
            }
            Some(st) = srx.recv() => {
                match fleet.status(&st, &mut engine, &mut stats) {
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                    Ok(true) => {
                        if let Err(e) = bus.update_status(status(&cfg, &engine)).await {
                            stats.publish_errors += 1;
                            tracing::warn!(error = %e, "status not updated");
                        }
                    }
                    Ok(false) => {}
                }
            }
            Some(s) = settings.recv() => {
                let ack = apply_settings(&mut engine, &s.message, &mut stats);
                if let Err(e) = bus
                    .publish(&topic::settings_acks(&det), &ack, PublishOptions::reliable())
                    .await
                {
                    stats.publish_errors += 1;
                    tracing::warn!(error = %e, id = %ack.id, "settings ack not published");
                }
            }
            changed = state.changed(), if state_open => {
                if changed.is_err() {
                    state_open = false;
                } else if matches!(*state.borrow_and_update(), ConnectionState::Connected { .. }) {
                    publish_schema(&bus, &engine, &mut stats).await;
                }
            }
            _ = tick.tick() => {
                last_ms = last_ms.max(now_ms());
                let out = engine.tick(last_ms);
                publish(&outlet, out, fleet.block_copies(), &mut stats).await;
            }
        }
    }

    for f in forwarders {
        f.abort();
    }
    stats.engine = engine.counters;
    tracing::info!(stats = ?stats, bus = ?bus.metrics(), "detector stopping");
    bus.shutdown(Duration::from_secs(5)).await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// This detector's status: online, mode, partition count and the partitions
/// the engine takes now.
fn status(cfg: &Config, engine: &Engine) -> NodeStatus {
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: cfg.detector.id.clone(),
        role: Role::Detector,
        online: true,
        at_ms: now_ms(),
        mode: Some(cfg.detector.mode),
        interfaces: Vec::new(),
        maps: Vec::new(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        partitions: Some(cfg.partitions.count),
        taken: engine.partitions(),
    }
}

/// What the service knows of the fleet: the live detectors (from their
/// retained statuses) and, with `[partitions] live`, the partitions this
/// detector owns among them (`crate::fleet::owned`).
struct Fleet {
    me: String,
    count: u16,
    live_sharing: bool,
    /// Other detectors whose last status said online.
    live: std::collections::BTreeSet<String>,
    owned: std::collections::BTreeSet<u16>,
    block_on: crate::fleet::BlockOn,
    /// Gateways whose last status said online (the copies of a block with
    /// `block_on = "all"`).
    gateways: Vec<String>,
}

impl Fleet {
    fn new(cfg: &Config) -> Self {
        let count = cfg.partitions.count.max(1);
        Fleet {
            me: cfg.detector.id.to_string(),
            count,
            live_sharing: cfg.partitions.live,
            live: Default::default(),
            owned: (0..count).collect(),
            block_on: cfg.fleet.block_on,
            gateways: Vec::new(),
        }
    }

    /// The gateways every block also goes to: the online ones with
    /// `block_on = "all"`, none with `"seen"`.
    fn block_copies(&self) -> &[String] {
        match self.block_on {
            crate::fleet::BlockOn::All => &self.gateways,
            crate::fleet::BlockOn::Seen => &[],
        }
    }

    /// Takes one node status: a gateway's partition count is checked (an error
    /// before the first record, a counted warning after); a detector's
    /// online/offline state updates the live set and, with live sharing, the
    /// partitions the engine takes. Returns whether those changed.
    fn status(
        &mut self,
        st: &NodeStatus,
        engine: &mut Engine,
        stats: &mut ServiceStats,
    ) -> Result<bool, ServiceError> {
        match st.role {
            Role::Gateway => {
                let id = st.node_id.to_string();
                match (st.online, self.gateways.iter().position(|g| *g == id)) {
                    (true, None) => self.gateways.push(id),
                    (false, Some(i)) => {
                        self.gateways.remove(i);
                    }
                    _ => {}
                }
                if let Err(e) =
                    crate::fleet::check_count(st.node_id.as_str(), st.partitions, self.count)
                {
                    if stats.batches == 0 && stats.evidence_batches == 0 {
                        tracing::error!(error = %e, "partition count mismatch at start-up");
                        return Err(e.into());
                    }
                    stats.partition_mismatches += 1;
                    tracing::error!(error = %e, "partition count mismatch");
                }
            }
            Role::Detector if st.node_id.as_str() != self.me => {
                let changed = if st.online {
                    self.live.insert(st.node_id.to_string())
                } else {
                    self.live.remove(st.node_id.as_str())
                };
                if changed && self.live_sharing {
                    let live: Vec<&String> = self.live.iter().collect();
                    let owned = crate::fleet::owned(&self.me, &live, self.count);
                    if owned != self.owned {
                        engine.set_partitions(&owned);
                        stats.partition_changes += 1;
                        tracing::info!(detector = %st.node_id, online = st.online,
                            partitions = ?owned, "fleet changed: partitions taken now");
                        self.owned = owned;
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
        Ok(false)
    }
}

/// `detector run`: loads the verdict signer ([`signer`]), connects (retrying in
/// the background until the broker is up) and serves until SIGINT or SIGTERM.
pub fn run_blocking(cfg: Config, engine: Engine) -> Result<ServiceStats, ServiceError> {
    let signer = signer(&cfg)?;
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
        serve(engine, bus, signer, inputs, shutdown).await
    })
}
