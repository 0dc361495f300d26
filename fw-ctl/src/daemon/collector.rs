//! The daemon's collector thread: everything that walks the pinned maps on a
//! schedule, off the async loop so a verdict never waits behind a walk — the flow
//! export pass (every `export.poll_interval_ms`), counters with pps and map fill
//! (every `export.counters_interval_ms`; fill every 10 s), the expiry sweep (every
//! `export.sweep_interval_ms`) and the enforced-state read (every
//! `state.poll_interval_ms`). Results go to the main task as [`Collected`]
//! messages over a bounded channel; the thread ends when the channel closes or
//! `stop` is set (after one last export pass).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tad_wire::{CounterEntry, FlowRecord, MapFill, Mode};
use tokio::sync::mpsc;

use super::{
    enforced::{Enforced, StateReader},
    exporter::Exporter,
};
use crate::{
    clock,
    config::GatewayFile,
    control,
    kernel::{PendingTable, Pinned},
    pin::PinDir,
};

/// What the collector thread reports.
pub(super) enum Collected {
    Records(Vec<FlowRecord>),
    Counters {
        counters: Vec<CounterEntry>,
        maps: Vec<MapFill>,
        mode: Mode,
        /// Flow admission counts (`fw_common::admission::STAT_*`), when the
        /// program has the map.
        admission: Option<[u64; 3]>,
    },
    Swept(usize),
    /// What the maps and the state file hold (every `state.poll_interval_ms`).
    State(Enforced),
    Error(String),
}

/// The collector thread's body (see the module docs).
pub(super) fn collector(
    dir: PinDir,
    cfg: GatewayFile,
    tx: mpsc::Sender<Collected>,
    stop: Arc<AtomicBool>,
) {
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
    let state_every = Duration::from_millis(cfg.state.poll_interval_ms);
    let mut reader = StateReader::new(state_path.clone());
    let mut exporter = Exporter::new(e.timeouts());
    // The pending array of one-packet flows (absent from maps kept by an older
    // version: no one-packet records then).
    let pending = match PendingTable::open(&dir, fw_common::maps::PENDING) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "no pending array: one-packet flows are not exported");
            None
        }
    };
    let mut pending_buf = Vec::new();
    let start = Instant::now();
    let (mut next_poll, mut next_counters, mut next_sweep, mut next_state) =
        (start + poll, start, start + sweep_every, start);
    let mut prev: Option<(Instant, Vec<u64>)> = None;
    let mut fill: Vec<MapFill> = Vec::new();
    let mut fill_at: Option<Instant> = None;
    let send = |c: Collected| tx.blocking_send(c).is_ok();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now = Instant::now();
        if now >= next_poll || stopping {
            next_poll = now + poll;
            let now_ns = clock::mono_ns();
            let offset = clock::unix_offset_ns();
            let polled = exporter.poll(&mut maps, now_ns, offset).and_then(|mut r| {
                if let Some(t) = &pending {
                    t.read_all(&mut pending_buf)?;
                    r.extend(exporter.poll_pending(&pending_buf, now_ns, offset));
                }
                Ok(r)
            });
            match polled {
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
                        admission: maps.admission(),
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
        if now >= next_state {
            next_state = now + state_every;
            match reader.read(&maps) {
                Ok(v) => {
                    if !send(Collected::State(v)) {
                        return;
                    }
                }
                Err(e) => {
                    let _ = send(Collected::Error(format!("reading the enforced state: {e}")));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
