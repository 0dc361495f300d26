//! The gateway daemon (`fw-ctl run --config gateway.toml`).
//!
//! ```text
//!  collector thread (own map handles)            main task (tokio)
//!  ├─ every poll interval: Exporter::poll ──records──► DropOldest queue ──FlowBatch──► bus
//!  ├─ every second: counters + pps, map fill ─────────► CountersSnapshot ───────────► bus
//!  ├─ every sweep interval: expired blocks swept       verdicts/<det>, commands/<dash> ◄── bus
//!  └─ every state poll: maps + state file ──view──┐    └─ Enforcer (JWS, identity, trust, age,
//!                                                 │       replay, policy) ─► block map + state file ─► Ack
//!                                                 └──► StatePublisher ─► state/delta, state (retained)
//!  evidence task ([`evidence`]): every evidence.poll_interval_ms and on each ring buffer event,
//!     EVIDENCE_SRC/DST (mmap) + EVENTS ─► changed EpochEvidence + events ─► EvidenceBatch ─► bus
//!  feeds thread ([`feeds`]): every `[[feeds]] interval_s`, file or URL ─► diff ─► block maps + state file
//!  device task ([`devices`], with `[devices]`): tad/v1/dev/+/telemetry ─► guard ─► batches, refusals,
//!     trust, command decisions, scan findings ─► tad/v1/gw/<gw>/devices/...
//!  HTTP server (warp, [http] listen) ◄── Exposition (refreshed every second) ─► /metrics, /health
//! ```
//!
//! Verdicts and commands arrive on `tad/v1/gw/<gw>/verdicts/<detector>` and
//! `.../commands/<dashboard>`; the last topic level is the sender's identity (the
//! broker ACL lets only that client publish there) and the payload is a JWS the
//! [`enforcer`] verifies against the bus CA (`bus.ca_file`, read at start: a bad
//! file is a start-up error). Refusals are counted by reason in the status file
//! (`fw-ctl status`), the published state and `/metrics`.
//!
//! What is enforced is published from the maps themselves ([`enforced`]): a change
//! made by `fw-ctl block` or `fw-ctl feed load` on the router (maps + state file,
//! no bus) goes out like one made by a verdict, within `state.poll_interval_ms`.
//!
//! The flow walk (one syscall per entry) and the state reads run on their own
//! thread so a verdict never waits behind them. While the broker is unreachable, filtering goes on untouched
//! (it runs in the kernel), verdicts simply do not arrive, and flow records wait in
//! a bounded queue that drops its oldest records when full (counted, reported in the
//! next batch's `dropped_records`, the counters snapshot and the status file). The
//! bus client reconnects with exponential backoff and publishes the retained online
//! status; its Last Will marks the gateway offline.
//!
//! With `[ipfix] collector` set, every exported flow record also goes, as it
//! arrives from the collector thread, to a standard IPFIX collector over UDP
//! ([`ipfix`], RFC 7011), whether or not the bus is up.
//!
//! Shutdown (the future passed to [`run`], SIGTERM/SIGINT in the binary): one last
//! export pass, the queued records are handed to the bus, the bus is flushed and
//! closed (offline status), and the XDP program stays pinned and filtering.

mod collector;
pub mod devices;
pub mod enforced;
pub mod enforcer;
pub mod evidence;
pub mod exporter;
pub mod feeds;
pub mod http;
pub mod ipfix;
pub mod queue;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fw_common::counters::CounterSlot;
use serde::{Deserialize, Serialize};
use tad_bus::{BusClient, BusMetrics, ConnectionState, PublishOptions, QoS, RawPayload, Verifier};
use tad_wire::{
    CountersSnapshot, FlowBatch, FlowRecord, Mode, NodeId, NodeStatus, Role, SCHEMA_VERSION,
    partition_of,
    topic::{self, TopicKind},
};
use tokio::sync::mpsc;

use self::{
    collector::{Collected, collector},
    enforced::{Enforced, StatePublisher},
    enforcer::{Enforcer, EnforcerStats, Policy},
    queue::DropOldest,
};
use crate::{
    clock,
    config::GatewayFile,
    error::{CtlError, Result},
    kernel::Pinned,
    loader::{self, LoadOptions},
    pin::PinDir,
    state,
};

/// The daemon's runtime status, written to the status file every second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub gateway_id: String,
    pub instance: String,
    pub started_unix_ms: u64,
    pub at_unix_ms: u64,
    /// `connected`, `connecting`, `disconnected: <error>`, `closed` or `disabled`.
    pub bus: String,
    pub verdicts: EnforcerStatsView,
    pub flow_queue_len: usize,
    pub flow_queue_capacity: usize,
    pub records_exported_total: u64,
    pub records_published_total: u64,
    /// Records dropped from the full queue (oldest first).
    pub records_dropped_total: u64,
    /// Records the bus refused to queue (closed client).
    #[serde(default)]
    pub records_publish_failed_total: u64,
    pub batches_published_total: u64,
    pub acks_dropped_total: u64,
    pub blocks_swept_total: u64,
    pub errors_total: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub bus_metrics: Option<BusMetrics>,
    /// Where `/metrics` and `/health` are served (the bound address, so port 0
    /// in the config shows the real port); `None` when `[http] listen` is empty.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Revision of the enforced state last published (0 before the first).
    #[serde(default)]
    pub state_rev: u64,
    #[serde(default)]
    pub state_deltas_published_total: u64,
    #[serde(default)]
    pub state_snapshots_published_total: u64,
    /// The evidence task's counters ([`evidence`]).
    #[serde(default)]
    pub evidence: evidence::EvidenceStats,
    /// Provisional quarantines in force (the XDP program's own entries), as last
    /// read from the maps.
    #[serde(default)]
    pub provisional_quarantines: u64,
    /// The IPFIX exporter's counters; `None` when `[ipfix] collector` is unset.
    #[serde(default)]
    pub ipfix: Option<ipfix::IpfixStats>,
    /// The device task's counters ([`devices`]); `None` without `[devices]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<devices::DeviceStats>,
    /// Each configured feed's refreshes and failures ([`feeds`]).
    #[serde(default)]
    pub feeds: Vec<feeds::FeedStatus>,
}

/// [`EnforcerStats`] as stored in the status file.
pub type EnforcerStatsView = EnforcerStats;

impl DaemonStatus {
    /// Reads a status file.
    pub fn load(path: &Path) -> Result<DaemonStatus> {
        let b = std::fs::read(path).map_err(|e| CtlError::file(path, e))?;
        serde_json::from_slice(&b).map_err(|e| CtlError::Parse {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }

    fn save(&self, path: &Path) {
        let tmp = path.with_extension("json.tmp");
        let res = (|| -> std::io::Result<()> {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serialises"))?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
}

/// Loads the program when the instance is not loaded (interfaces from the config),
/// otherwise re-applies the config allowlist; then restores the state file. Either
/// way writes the flow admission rule and idle timeout of `[export]` into the
/// kernel configuration ([`crate::config::Export::apply`]).
pub fn prepare(cfg: &GatewayFile) -> Result<(PinDir, Pinned)> {
    let (dir, mut maps) = prepare_maps(cfg)?;
    let mut k = maps.config()?;
    cfg.export.apply(&mut k);
    maps.set_config(&k)?;
    Ok((dir, maps))
}

fn prepare_maps(cfg: &GatewayFile) -> Result<(PinDir, Pinned)> {
    let dir = PinDir::new(&cfg.instance)?;
    let state_path = cfg.state_path();
    if !dir.loaded() {
        if cfg.interfaces.is_empty() {
            return Err(CtlError::NotLoaded {
                instance: cfg.instance.clone(),
                path: dir.root.clone(),
            });
        }
        let rep = loader::load_in(
            &dir,
            &LoadOptions {
                instance: cfg.instance.clone(),
                interfaces: cfg.interfaces.clone(),
                mode: cfg.xdp_mode,
                observe: cfg.mode == crate::config::ModeName::Observe,
                limits: cfg.limits,
                evidence: cfg.evidence,
                sizes: cfg.maps,
                allow: cfg.allow_prefixes(),
                allow_own_addresses: cfg.allow_own_addresses,
                state_file: Some(state_path.clone()),
            },
        )?;
        tracing::info!(instance = %rep.instance, interfaces = ?rep.interfaces, "XDP program loaded");
        return Ok((dir.clone(), Pinned::open(&dir)?));
    }
    let mut maps = Pinned::open(&dir)?;
    loader::install_config_allow(&mut maps, &cfg.allow_prefixes(), cfg.allow_own_addresses)?;
    let rep = state::restore(&mut maps, &state_path)?;
    tracing::info!(
        restored = rep.blocks_restored,
        present = rep.blocks_present,
        expired = rep.blocks_expired,
        adopted = rep.blocks_adopted,
        "state file restored"
    );
    Ok((dir, maps))
}

/// The status published (retained) on every connect; `partitions` is
/// `[export] partitions`, which detectors check against their own count.
fn node_status(gw: &NodeId, dir: &PinDir, maps: &Pinned, partitions: u16) -> NodeStatus {
    let mode = maps
        .config()
        .map(|c| {
            if c.observe() {
                Mode::Observe
            } else {
                Mode::Enforce
            }
        })
        .ok();
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: gw.clone(),
        role: Role::Gateway,
        online: true,
        at_ms: clock::unix_ms(),
        mode,
        interfaces: dir.interface_status(),
        maps: Vec::new(),
        version: env!("CARGO_PKG_VERSION").into(),
        partitions: Some(partitions),
        taken: Vec::new(),
    }
}

struct Publisher {
    gateway_id: NodeId,
    partitions: u16,
    batch_max: usize,
    seq: u64,
    queue: DropOldest<FlowRecord>,
    status: DaemonStatus,
}

impl Publisher {
    /// Hands queued records to the bus while it is connected and its own queue has
    /// room (its drop-oldest would otherwise evict batches already handed over).
    fn flush(&mut self, bus: &BusClient, bus_capacity: usize) {
        while !self.queue.is_empty()
            && connected(bus)
            && (bus.metrics().queued as usize) < (bus_capacity / 2).max(1)
        {
            let records = self.queue.pop_batch(self.batch_max);
            let n = records.len() as u64;
            let mut parts: std::collections::BTreeMap<u16, Vec<FlowRecord>> = Default::default();
            for r in records {
                parts
                    .entry(partition_of(r.src, self.partitions))
                    .or_default()
                    .push(r);
            }
            let mut dropped = self.queue.take_dropped();
            for (p, records) in parts {
                let batch = FlowBatch {
                    v: SCHEMA_VERSION,
                    gateway_id: self.gateway_id.clone(),
                    seq: self.seq,
                    partition: p,
                    sent_at_ms: clock::unix_ms(),
                    dropped_records: std::mem::take(&mut dropped),
                    records,
                };
                match bus.try_publish(
                    &topic::flows(&self.gateway_id, p),
                    &batch,
                    PublishOptions::flows(),
                ) {
                    Ok(()) => {
                        self.seq += 1;
                        self.status.batches_published_total += 1;
                    }
                    Err(e) => {
                        self.status.errors_total += 1;
                        self.status.last_error = Some(format!("publishing flows: {e}"));
                        self.status.records_publish_failed_total += batch.records.len() as u64;
                    }
                }
            }
            self.status.records_published_total += n;
        }
    }
}

fn connected(bus: &BusClient) -> bool {
    matches!(*bus.state().borrow(), ConnectionState::Connected { .. })
}

fn bus_state_text(bus: Option<&BusClient>) -> String {
    match bus {
        None => "disabled".into(),
        Some(b) => match &*b.state().borrow() {
            ConnectionState::Connected { .. } => "connected".into(),
            ConnectionState::Connecting => "connecting".into(),
            ConnectionState::Disconnected { error } => format!("disconnected: {error}"),
            ConnectionState::Closed => "closed".into(),
        },
    }
}

async fn recv_opt<M: tad_bus::Inbound>(
    s: &mut Option<tad_bus::Subscription<M>>,
) -> Option<tad_bus::Received<M>> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The sender identity of a verdict or command topic (its last level).
fn topic_identity(topic: &str) -> String {
    match TopicKind::parse(topic) {
        Some(TopicKind::Verdicts { detector, .. }) => detector.to_string(),
        Some(TopicKind::Commands { dashboard, .. }) => dashboard.to_string(),
        _ => String::new(),
    }
}

/// Publishing what the gateway enforces (see [`enforced`]).
struct StateOut {
    publisher: StatePublisher,
    topic_state: String,
    topic_delta: String,
}

impl StateOut {
    fn snapshot(&mut self, bus: Option<&BusClient>, status: &mut DaemonStatus) {
        let Some(b) = bus else { return };
        let Some(snap) = self.publisher.snapshot(Instant::now()) else {
            return;
        };
        match b.try_publish(&self.topic_state, &snap, PublishOptions::retained()) {
            Ok(()) => status.state_snapshots_published_total += 1,
            Err(e) => {
                status.errors_total += 1;
                status.last_error = Some(format!("publishing the state snapshot: {e}"));
            }
        }
    }

    /// Takes a new view; publishes the delta and, when due, a snapshot.
    fn view(
        &mut self,
        v: Enforced,
        refusals: &tad_wire::RefusalCounts,
        bus: Option<&BusClient>,
        status: &mut DaemonStatus,
    ) {
        let first = self.publisher.current().is_none();
        let delta = self.publisher.update(v, refusals, clock::unix_ms());
        if let Some(cur) = self.publisher.current() {
            status.state_rev = cur.rev;
        }
        if first {
            self.snapshot(bus, status);
            return;
        }
        if let (Some(d), Some(b)) = (delta, bus) {
            match b.try_publish(&self.topic_delta, &d, PublishOptions::reliable()) {
                Ok(()) => status.state_deltas_published_total += 1,
                // Viewers see the gap and wait for the next snapshot (due: dirty).
                Err(e) => {
                    status.errors_total += 1;
                    status.last_error = Some(format!("publishing a state delta: {e}"));
                }
            }
        }
        if self.publisher.snapshot_due(Instant::now()) {
            self.snapshot(bus, status);
        }
    }
}

/// Runs the daemon until `shutdown` resolves (see the module docs). Returns the
/// final status.
///
/// # Errors
/// An invalid configuration; the program cannot be loaded or its pins opened;
/// the bus CA file (`bus.ca_file`) cannot be read (the error names it); the bus
/// client cannot be built; `http.listen` cannot be bound.
pub async fn run(cfg: GatewayFile, shutdown: impl Future<Output = ()>) -> Result<DaemonStatus> {
    let problems = cfg.check();
    if !problems.is_empty() {
        return Err(CtlError::Config {
            path: PathBuf::from("(config)"),
            why: problems.join("; "),
        });
    }
    let gw = cfg.node_id()?;
    let status_path = cfg.status_path();
    let state_path = cfg.state_path();
    let bus_cfg = cfg.bus_config();
    let bus_capacity = bus_cfg.queue_capacity;
    // Verdicts and commands come only over the bus: without it there is nothing
    // to verify, so no enforcer (and no CA file needed). Read before anything is
    // loaded, so a bad file changes nothing.
    let mut enforcer = if cfg.bus_enabled {
        let verifier = Verifier::from_bus_config(&bus_cfg).map_err(|e| CtlError::Config {
            path: PathBuf::from("(config)"),
            why: format!("bus.ca_file (verifies signed verdicts and commands): {e}"),
        })?;
        Some(Enforcer::new(
            Policy::from_config(&cfg)?,
            verifier,
            Some(state_path),
        ))
    } else {
        None
    };
    // IoT devices (`[devices]`, needs the bus): registry, replay windows and trust
    // ledger opened before anything is loaded, so a bad file changes nothing.
    let device_state = match &cfg.devices {
        Some(dc) if cfg.bus_enabled => Some((
            devices::Devices::open(dc.clone(), gw.clone(), cfg.trust.dashboards.clone()).map_err(
                |why| CtlError::Config {
                    path: PathBuf::from("(config)"),
                    why,
                },
            )?,
            Verifier::from_bus_config(&bus_cfg).map_err(|e| CtlError::Config {
                path: PathBuf::from("(config)"),
                why: format!("bus.ca_file (verifies device command requests): {e}"),
            })?,
        )),
        _ => None,
    };
    let mut device_subs = None;
    // Every exported record also goes to the IPFIX collector, when there is one
    // (resolved before anything is loaded, so a bad name changes nothing).
    let mut ipfix =
        ipfix::IpfixExporter::from_config(&cfg.ipfix).map_err(|e| CtlError::Config {
            path: PathBuf::from("(config)"),
            why: e.to_string(),
        })?;
    let (dir, mut maps) = tokio::task::block_in_place(|| prepare(&cfg))?;
    // Bound before the bus starts, so a taken port fails the start cleanly.
    let mut http_listen = None;
    let exposition: http::Shared = Arc::new(std::sync::Mutex::new(http::Exposition {
        gateway_id: gw.to_string(),
        ..Default::default()
    }));
    let (http_stop, http_task) = match cfg.http.addr().map_err(|why| CtlError::Config {
        path: PathBuf::from("(config)"),
        why,
    })? {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CtlError::Runtime(format!("http.listen {addr}: cannot bind: {e}")))?;
            let bound = listener.local_addr().map(|a| a.to_string()).ok();
            tracing::info!(listen = ?bound, "serving /metrics and /health");
            http_listen = bound;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(http::serve(listener, exposition.clone(), async move {
                let _ = rx.await;
            }));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };

    let (bus, mut verdicts, mut commands) = if cfg.bus_enabled {
        let mut b = tad_bus::BusClient::builder(bus_cfg)
            .map_err(|e| CtlError::Runtime(format!("bus: {e}")))?;
        // Raw bytes: the enforcer verifies and decodes them itself so it can count,
        // and where possible ack, every refused message.
        let v = b.subscribe::<RawPayload>(&topic::verdicts_filter(&gw), QoS::AtLeastOnce);
        let c = b.subscribe::<RawPayload>(&topic::commands_filter(&gw), QoS::AtLeastOnce);
        if device_state.is_some() {
            device_subs = Some(devices::subscribe(&mut b, &gw));
        }
        b.status(node_status(&gw, &dir, &maps, cfg.export.partitions));
        // start(): connect in the background and keep retrying, so the gateway runs
        // (and filters) while the broker is down.
        let bus = b
            .start()
            .map_err(|e| CtlError::Runtime(format!("bus: {e}")))?;
        (Some(bus), Some(v), Some(c))
    } else {
        (None, None, None)
    };

    // Evidence at packet speed: its own task, woken by the ring buffer.
    let evidence_stats = Arc::new(std::sync::Mutex::new(evidence::EvidenceStats::default()));
    let (evidence_stop, evidence_task) = {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ecfg = evidence::EvidenceConfig {
            gateway_id: gw.clone(),
            partitions: cfg.export.partitions,
            poll_interval: Duration::from_millis(cfg.evidence.poll_interval_ms),
        };
        let task = tokio::spawn(evidence::run(
            dir.clone(),
            ecfg,
            bus.clone(),
            evidence_stats.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        (tx, task)
    };

    let started_unix_ms = clock::unix_ms();
    let mut publisher = Publisher {
        gateway_id: gw.clone(),
        partitions: cfg.export.partitions,
        batch_max: cfg.export.batch_max_records,
        seq: 0,
        queue: DropOldest::new(cfg.export.queue_capacity),
        status: DaemonStatus {
            pid: std::process::id(),
            gateway_id: gw.to_string(),
            instance: cfg.instance.clone(),
            started_unix_ms,
            flow_queue_capacity: cfg.export.queue_capacity,
            http_listen,
            ..Default::default()
        },
    };
    let mut state_out = StateOut {
        publisher: StatePublisher::new(
            gw.clone(),
            started_unix_ms,
            Duration::from_millis(cfg.state.snapshot_interval_ms),
        ),
        topic_state: topic::gateway_state(&gw),
        topic_delta: topic::gateway_state_delta(&gw),
    };

    // The device guard: its own task (signature checks off the main loop).
    let device_stats = device_state
        .as_ref()
        .map(|_| Arc::new(std::sync::Mutex::new(devices::DeviceStats::default())));
    let device_task = match (device_state, device_subs, &bus, &device_stats) {
        (Some((d, verifier)), Some(subs), Some(b), Some(st)) => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(devices::run(
                d,
                b.clone(),
                subs,
                verifier,
                st.clone(),
                async move {
                    let _ = rx.await;
                },
            ));
            Some((tx, task))
        }
        _ => None,
    };

    let (tx, mut rx) = mpsc::channel::<Collected>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let collector_thread = {
        let (dir, cfg, stop) = (dir.clone(), cfg.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fw-ctl-collector".into())
            .spawn(move || collector(dir, cfg, tx, stop))
            .map_err(|e| CtlError::Runtime(format!("spawning the collector: {e}")))?
    };
    // Threat feeds on their schedule: their own thread and map handles.
    let feeds_stats: feeds::Shared =
        Arc::new(std::sync::Mutex::new(feeds::initial_status(&cfg.feeds)));
    let feeds_thread = if cfg.feeds.is_empty() {
        None
    } else {
        let (d, sp, list) = (dir.clone(), cfg.state_path(), cfg.feeds.clone());
        let (st, stop) = (feeds_stats.clone(), stop.clone());
        Some(
            std::thread::Builder::new()
                .name("fw-ctl-feeds".into())
                .spawn(move || feeds::run(d, sp, list, st, stop))
                .map_err(|e| CtlError::Runtime(format!("spawning the feed refresher: {e}")))?,
        )
    };
    tracing::info!(gateway = %gw, instance = %cfg.instance, bus = cfg.bus_enabled, "daemon running");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut flows_since_snapshot = 0u64;
    tokio::pin!(shutdown);
    let mut state_rx = bus.as_ref().map(|b| b.state());
    let no_refusals = tad_wire::RefusalCounts::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(r) = recv_opt(&mut verdicts) => {
                let received = Instant::now();
                let who = topic_identity(&r.topic);
                let ack = match enforcer.as_mut() {
                    Some(e) => tokio::task::block_in_place(|| e.on_verdict(&mut maps, &r.message.0, &who, received)),
                    None => None,
                };
                if let (Some(ack), Some(b)) = (ack, &bus)
                    && b.try_publish(&topic::acks(&gw), &ack, PublishOptions::reliable()).is_err()
                {
                    publisher.status.acks_dropped_total += 1;
                }
            }
            Some(r) = recv_opt(&mut commands) => {
                let received = Instant::now();
                let who = topic_identity(&r.topic);
                let ack = match enforcer.as_mut() {
                    Some(e) => tokio::task::block_in_place(|| e.on_command(&mut maps, &r.message.0, &who, received)),
                    None => None,
                };
                if let (Some(ack), Some(b)) = (ack, &bus)
                    && b.try_publish(&topic::acks(&gw), &ack, PublishOptions::reliable()).is_err()
                {
                    publisher.status.acks_dropped_total += 1;
                }
            }
            Some(c) = rx.recv() => match c {
                Collected::Records(r) => {
                    flows_since_snapshot += r.len() as u64;
                    publisher.status.records_exported_total += r.len() as u64;
                    if let Some(x) = ipfix.as_mut() {
                        x.export(&r);
                    }
                    for rec in r {
                        publisher.queue.push(rec);
                    }
                    if let Some(b) = &bus {
                        publisher.flush(b, bus_capacity);
                    }
                }
                Collected::Counters { counters, maps: fill, mode, admission } => {
                    {
                        let mut x = exposition.lock().unwrap_or_else(|p| p.into_inner());
                        x.counters = counters.clone();
                        x.mode = Some(mode);
                        x.admission = admission;
                    }
                    if let Some(b) = bus.as_ref().filter(|b| connected(b)) {
                        let snap = CountersSnapshot {
                            v: SCHEMA_VERSION,
                            gateway_id: gw.clone(),
                            at_ms: clock::unix_ms(),
                            mode,
                            counters,
                            maps: fill,
                            flows_exported: std::mem::take(&mut flows_since_snapshot),
                            records_dropped_total: publisher.queue.dropped_total,
                        };
                        let _ = b.try_publish(&topic::counters(&gw), &snap, PublishOptions::best_effort());
                    }
                }
                Collected::Swept(n) => publisher.status.blocks_swept_total += n as u64,
                Collected::State(v) => {
                    {
                        let mut x = exposition.lock().unwrap_or_else(|p| p.into_inner());
                        x.blocks.clear();
                        for b in &v.blocks {
                            *x.blocks.entry(b.origin).or_default() += 1;
                        }
                        x.provisional_quarantines =
                            v.blocks.iter().filter(|b| b.provisional).count() as u64;
                        publisher.status.provisional_quarantines = x.provisional_quarantines;
                        x.allow_entries = v.allow.len() as u64;
                        x.set_protected(&v.protected);
                        x.mode = Some(v.mode);
                    }
                    let refusals = enforcer.as_ref().map_or(&no_refusals, |e| &e.stats.refusals);
                    state_out.view(v, refusals, bus.as_ref(), &mut publisher.status);
                }
                Collected::Error(e) => {
                    tracing::warn!(error = %e, "collector");
                    publisher.status.errors_total += 1;
                    publisher.status.last_error = Some(e);
                }
            },
            Ok(()) = async { match &mut state_rx { Some(s) => s.changed().await, None => std::future::pending().await } } => {
                if let Some(b) = &bus {
                    tracing::info!(bus = %bus_state_text(Some(b)), "bus connection");
                    publisher.flush(b, bus_capacity);
                    if connected(b) {
                        // A retained snapshot after every (re)connect: the broker may
                        // have lost it, and deltas queued meanwhile may be gone.
                        state_out.snapshot(Some(b), &mut publisher.status);
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(b) = &bus {
                    publisher.flush(b, bus_capacity);
                }
                if state_out.publisher.snapshot_due(Instant::now()) {
                    state_out.snapshot(bus.as_ref(), &mut publisher.status);
                }
                if let Some(x) = ipfix.as_mut() {
                    x.refresh();
                    publisher.status.ipfix = Some(x.stats.clone());
                }
                publisher.status.devices = device_stats
                    .as_ref()
                    .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone());
                publisher.status.evidence =
                    evidence_stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
                publisher.status.feeds =
                    feeds_stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
                write_status(&mut publisher, enforcer.as_ref(), bus.as_ref(), &status_path);
                let mut x = exposition.lock().unwrap_or_else(|p| p.into_inner());
                x.evidence = publisher.status.evidence.clone();
                x.devices = publisher.status.devices.clone();
                x.enforcer = publisher.status.verdicts.clone();
                x.records_exported_total = publisher.status.records_exported_total;
                x.records_dropped_total = publisher.status.records_dropped_total;
                x.ipfix = publisher.status.ipfix.clone();
                x.bus = publisher.status.bus.clone();
                x.bus_connected = bus.as_ref().is_some_and(connected);
                x.attached = dir.interface_status();
            }
        }
    }

    tracing::info!("shutting down: last export pass, flushing");
    if let Some((tx, task)) = device_task {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = evidence_stop.send(());
    match tokio::time::timeout(Duration::from_secs(5), evidence_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "evidence task"),
        Ok(Err(e)) => tracing::warn!(error = %e, "evidence task panicked"),
        _ => {}
    }
    stop.store(true, Ordering::SeqCst);
    // Drain what the collector still sends (its last export pass) until it exits.
    let drain = async {
        while let Some(c) = rx.recv().await {
            if let Collected::Records(r) = c {
                publisher.status.records_exported_total += r.len() as u64;
                if let Some(x) = ipfix.as_mut() {
                    x.export(&r);
                }
                for rec in r {
                    publisher.queue.push(rec);
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    let _ = tokio::task::spawn_blocking(move || collector_thread.join()).await;
    if let Some(t) = feeds_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    publisher.status.feeds = feeds_stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(b) = &bus {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !publisher.queue.is_empty() && connected(b) && Instant::now() < deadline {
            publisher.flush(b, bus_capacity);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let (Some(tx), Some(task)) = (http_stop, http_task) {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    publisher.status.ipfix = ipfix.as_ref().map(|x| x.stats.clone());
    write_status(
        &mut publisher,
        enforcer.as_ref(),
        bus.as_ref(),
        &status_path,
    );
    if let Some(b) = bus {
        let _ = b.shutdown(Duration::from_secs(5)).await;
    }
    tracing::info!(
        queued_unsent = publisher.queue.len(),
        "daemon stopped; the XDP program stays pinned"
    );
    Ok(publisher.status)
}

fn write_status(p: &mut Publisher, e: Option<&Enforcer>, bus: Option<&BusClient>, path: &Path) {
    p.status.at_unix_ms = clock::unix_ms();
    p.status.bus = bus_state_text(bus);
    p.status.verdicts = e.map(|e| e.stats.clone()).unwrap_or_default();
    p.status.flow_queue_len = p.queue.len();
    p.status.records_dropped_total = p.queue.dropped_total;
    p.status.bus_metrics = bus.map(|b| b.metrics());
    p.status.save(path);
}

/// Counter slot names for text output: `verdict/reason`.
pub fn slot_name(slot: CounterSlot) -> String {
    let v = serde_json::to_value(slot.verdict()).ok();
    let r = serde_json::to_value(slot.reason()).ok();
    format!(
        "{}/{}",
        v.and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        r.and_then(|r| r.as_str().map(String::from))
            .unwrap_or_default()
    )
}
