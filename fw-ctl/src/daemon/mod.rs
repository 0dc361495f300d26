//! The gateway daemon (`fw-ctl run --config gateway.toml`).
//!
//! ```text
//!  collector thread (own map handles)            main task (tokio)
//!  ├─ every poll interval: Exporter::poll ──records──► DropOldest queue ──FlowBatch──► bus
//!  ├─ every second: counters + pps, map fill ─────────► CountersSnapshot ───────────► bus
//!  └─ every sweep interval: expired blocks swept       verdicts/commands ◄── bus
//!                                                      └─ Enforcer ─► block map + state file ─► Ack
//! ```
//!
//! The flow walk (one syscall per entry) runs on its own thread so a verdict never
//! waits behind it. While the broker is unreachable, filtering goes on untouched
//! (it runs in the kernel), verdicts simply do not arrive, and flow records wait in
//! a bounded queue that drops its oldest records when full (counted, reported in the
//! next batch's `dropped_records`, the counters snapshot and the status file). The
//! bus client reconnects with exponential backoff and publishes the retained online
//! status; its Last Will marks the gateway offline.
//!
//! Shutdown (the future passed to [`run`], SIGTERM/SIGINT in the binary): one last
//! export pass, the queued records are handed to the bus, the bus is flushed and
//! closed (offline status), and the XDP program stays pinned and filtering.

pub mod enforcer;
pub mod exporter;
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
use tad_bus::{BusClient, BusMetrics, ConnectionState, PublishOptions, QoS, RawPayload};
use tad_wire::{
    CounterEntry, CountersSnapshot, FlowBatch, FlowRecord, MapFill, Mode, NodeId, NodeStatus, Role,
    SCHEMA_VERSION, partition_of, topic,
};
use tokio::sync::mpsc;

use self::{
    enforcer::{Enforcer, EnforcerStats, Policy},
    exporter::Exporter,
    queue::DropOldest,
};
use crate::{
    clock,
    config::GatewayFile,
    control,
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

/// What the collector thread reports.
enum Collected {
    Records(Vec<FlowRecord>),
    Counters {
        counters: Vec<CounterEntry>,
        maps: Vec<MapFill>,
        mode: Mode,
    },
    Swept(usize),
    Error(String),
}

/// Loads the program when the instance is not loaded (interfaces from the config),
/// otherwise re-applies the config allowlist; then restores the state file.
pub fn prepare(cfg: &GatewayFile) -> Result<(PinDir, Pinned)> {
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

fn node_status(gw: &NodeId, dir: &PinDir, maps: &Pinned) -> NodeStatus {
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
    }
}

/// The collector thread's body (see the module docs).
fn collector(dir: PinDir, cfg: GatewayFile, tx: mpsc::Sender<Collected>, stop: Arc<AtomicBool>) {
    let mut maps = match Pinned::open(&dir) {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.blocking_send(Collected::Error(e.to_string()));
            return;
        }
    };
    let e = &cfg.export;
    let poll = Duration::from_millis(e.poll_interval_ms);
    let counters_every = Duration::from_millis(e.counters_interval_ms);
    let sweep_every = Duration::from_millis(e.sweep_interval_ms);
    let state_path = cfg.state_path();
    let mut exporter = Exporter::new(e.timeouts());
    let start = Instant::now();
    let (mut next_poll, mut next_counters, mut next_sweep) =
        (start + poll, start, start + sweep_every);
    let mut prev: Option<(Instant, Vec<u64>)> = None;
    let mut fill: Vec<MapFill> = Vec::new();
    let mut fill_at: Option<Instant> = None;
    let send = |c: Collected| tx.blocking_send(c).is_ok();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now = Instant::now();
        if now >= next_poll || stopping {
            next_poll = now + poll;
            match exporter.poll(&mut maps, clock::mono_ns(), clock::unix_offset_ns()) {
                Ok(r) if r.is_empty() => {}
                Ok(r) => {
                    if !send(Collected::Records(r)) {
                        return;
                    }
                }
                Err(e) => {
                    let _ = send(Collected::Error(format!("flow export: {e}")));
                }
            }
        }
        if stopping {
            return;
        }
        if now >= next_counters {
            next_counters = now + counters_every;
            // Fill levels walk every map: refresh them every 10 s only.
            if fill_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                if let Ok(f) = maps.fill() {
                    fill = f;
                }
                fill_at = Some(now);
            }
            match (maps.counters(), maps.config()) {
                (Ok(c), Ok(g)) => {
                    let packets: Vec<u64> = c.iter().map(|(_, v)| v.packets).collect();
                    let counters = c
                        .iter()
                        .enumerate()
                        .map(|(i, (slot, v))| {
                            let pps = match &prev {
                                Some((t, p)) => {
                                    let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
                                    v.packets.saturating_sub(p[i]) as f64 / dt
                                }
                                None => 0.0,
                            };
                            CounterEntry::new(*slot, v.packets, v.bytes, pps)
                        })
                        .collect();
                    prev = Some((now, packets));
                    let mode = if g.observe() {
                        Mode::Observe
                    } else {
                        Mode::Enforce
                    };
                    if !send(Collected::Counters {
                        counters,
                        maps: fill.clone(),
                        mode,
                    }) {
                        return;
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = send(Collected::Error(format!("counters: {e}")));
                }
            }
        }
        if now >= next_sweep {
            next_sweep = now + sweep_every;
            match control::sweep(&mut maps, Some(&state_path)) {
                Ok(g) if g.is_empty() => {}
                Ok(g) => {
                    tracing::info!(expired = g.len(), "swept expired blocks");
                    if !send(Collected::Swept(g.len())) {
                        return;
                    }
                }
                Err(e) => {
                    let _ = send(Collected::Error(format!("sweep: {e}")));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// Runs the daemon until `shutdown` resolves (see the module docs). Returns the
/// final status.
pub async fn run(cfg: GatewayFile, shutdown: impl Future<Output = ()>) -> Result<DaemonStatus> {
    let problems = cfg.check();
    if !problems.is_empty() {
        return Err(CtlError::Config {
            path: PathBuf::from("(config)"),
            why: problems.join("; "),
        });
    }
    let (dir, mut maps) = tokio::task::block_in_place(|| prepare(&cfg))?;
    let gw = cfg.node_id()?;
    let status_path = cfg.status_path();
    let state_path = cfg.state_path();
    let mut enforcer = Enforcer::new(Policy::from_config(&cfg)?, Some(state_path));

    let bus_cfg = cfg.bus_config();
    let bus_capacity = bus_cfg.queue_capacity;
    let (bus, mut verdicts, mut commands) = if cfg.bus_enabled {
        let mut b = tad_bus::BusClient::builder(bus_cfg)
            .map_err(|e| CtlError::Runtime(format!("bus: {e}")))?;
        // Raw bytes: the enforcer decodes them itself so it can count, and where
        // possible ack, malformed messages.
        let v = b.subscribe::<RawPayload>(&topic::verdicts(&gw), QoS::AtLeastOnce);
        let c = b.subscribe::<RawPayload>(&topic::commands(&gw), QoS::AtLeastOnce);
        b.status(node_status(&gw, &dir, &maps));
        // start(): connect in the background and keep retrying, so the gateway runs
        // (and filters) while the broker is down.
        let bus = b
            .start()
            .map_err(|e| CtlError::Runtime(format!("bus: {e}")))?;
        (Some(bus), Some(v), Some(c))
    } else {
        (None, None, None)
    };

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
            started_unix_ms: clock::unix_ms(),
            flow_queue_capacity: cfg.export.queue_capacity,
            ..Default::default()
        },
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
    tracing::info!(gateway = %gw, instance = %cfg.instance, bus = cfg.bus_enabled, "daemon running");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut flows_since_snapshot = 0u64;
    tokio::pin!(shutdown);
    let mut state_rx = bus.as_ref().map(|b| b.state());
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(r) = recv_opt(&mut verdicts) => {
                let received = Instant::now();
                let ack = tokio::task::block_in_place(|| enforcer.on_verdict(&mut maps, &r.message.0, None, received));
                if let (Some(ack), Some(b)) = (ack, &bus)
                    && b.try_publish(&topic::acks(&gw), &ack, PublishOptions::reliable()).is_err()
                {
                    publisher.status.acks_dropped_total += 1;
                }
            }
            Some(r) = recv_opt(&mut commands) => {
                let received = Instant::now();
                let ack = tokio::task::block_in_place(|| enforcer.on_command(&mut maps, &r.message.0, None, received));
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
                    for rec in r {
                        publisher.queue.push(rec);
                    }
                    if let Some(b) = &bus {
                        publisher.flush(b, bus_capacity);
                    }
                }
                Collected::Counters { counters, maps: fill, mode } => {
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
                }
            }
            _ = tick.tick() => {
                if let Some(b) = &bus {
                    publisher.flush(b, bus_capacity);
                }
                write_status(&mut publisher, &enforcer, bus.as_ref(), &status_path);
            }
        }
    }

    tracing::info!("shutting down: last export pass, flushing");
    stop.store(true, Ordering::SeqCst);
    // Drain what the collector still sends (its last export pass) until it exits.
    let drain = async {
        while let Some(c) = rx.recv().await {
            if let Collected::Records(r) = c {
                publisher.status.records_exported_total += r.len() as u64;
                for rec in r {
                    publisher.queue.push(rec);
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    let _ = tokio::task::spawn_blocking(move || collector_thread.join()).await;
    if let Some(b) = &bus {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !publisher.queue.is_empty() && connected(b) && Instant::now() < deadline {
            publisher.flush(b, bus_capacity);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    write_status(&mut publisher, &enforcer, bus.as_ref(), &status_path);
    if let Some(b) = bus {
        let _ = b.shutdown(Duration::from_secs(5)).await;
    }
    tracing::info!(
        queued_unsent = publisher.queue.len(),
        "daemon stopped; the XDP program stays pinned"
    );
    Ok(publisher.status)
}

fn write_status(p: &mut Publisher, e: &Enforcer, bus: Option<&BusClient>, path: &Path) {
    p.status.at_unix_ms = clock::unix_ms();
    p.status.bus = bus_state_text(bus);
    p.status.verdicts = e.stats.clone();
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
