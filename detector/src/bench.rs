//! `detector bench`: flow records per second through partitioning, the model and
//! every rule on one core (this thread). Synthetic mixed traffic: mostly completed
//! TCP/UDP sessions between 4096 devices in 198.18.0.0/15 and 256 servers, plus
//! SYN probes from a few scanners, in batches of 512 records as gateways send them.
//! A measurement, never a test assertion (`cargo xtask bench detector`).

use std::{net::IpAddr, path::Path, time::Instant};

use serde::Serialize;
use tad_wire::{DirCounters, EndReason, FlowRecord};

use crate::{
    config::Config,
    engine::Engine,
    model::{Autoencoder, ModelError},
};

/// Result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub records: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    pub model: bool,
    pub alerts: u64,
    pub verdicts: u64,
    /// Of which: `flow_meter::features::extract` alone, ns per record (measured
    /// separately over the same records).
    pub extract_ns_per_record: f64,
    /// The engine's counters after the run.
    pub counters: crate::engine::Counters,
}

/// Records per batch, as a gateway sends them.
pub const BATCH: usize = 512;

/// Synthetic record number `i` (deterministic).
pub fn synthetic(i: usize) -> FlowRecord {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let dev = (h % 4096) as u32;
    let src = IpAddr::from([198, 18 + (dev >> 8) as u8 % 2, (dev >> 8) as u8, dev as u8]);
    let dst = IpAddr::from([203, 0, 113, (h >> 20) as u8]);
    let scan = i.is_multiple_of(50);
    let (fwd, bwd, dport) = if scan {
        (
            DirCounters {
                packets: 1,
                bytes: 44,
                syn: 1,
                tcp_flags_or: 2,
                min_len: 44,
                max_len: 44,
                ..Default::default()
            },
            DirCounters {
                packets: 1,
                bytes: 40,
                rst: 1,
                tcp_flags_or: 0x14,
                min_len: 40,
                max_len: 40,
                ..Default::default()
            },
            (h >> 32) as u16,
        )
    } else {
        let p = 4 + (h >> 40) % 20;
        (
            DirCounters {
                packets: p,
                bytes: p * 120,
                syn: 1,
                psh: 2,
                ack_only: (p - 3) as u32,
                fin: 1,
                tcp_flags_or: 0x1b,
                min_len: 52,
                max_len: 400,
                ..Default::default()
            },
            DirCounters {
                packets: p - 1,
                bytes: p * 300,
                syn_ack: 1,
                psh: 2,
                ack_only: (p - 4) as u32,
                fin: 1,
                tcp_flags_or: 0x1b,
                min_len: 52,
                max_len: 1400,
                ..Default::default()
            },
            [443u16, 1883, 8883, 80][(h >> 50) as usize % 4],
        )
    };
    FlowRecord {
        src: if scan {
            IpAddr::from([192, 0, 2, (h % 4) as u8])
        } else {
            src
        },
        dst,
        sport: 30000 + (h % 30000) as u16,
        dport,
        proto: 6,
        vlan: 0,
        start_ms: 1_700_000_000_000 + i as u64 / 100,
        duration_us: 1000 + (h >> 30) % 5_000_000,
        fwd,
        bwd,
        iat_mean_us: 1000.0,
        iat_std_us: 200.0,
        end_reason: EndReason::EndOfFlow,
    }
}

/// Pushes `n` synthetic records through an engine with the default config and the
/// model at `model_path` (skipped, and said so, if it cannot be loaded).
pub fn run(n: usize, model_path: &Path) -> Result<BenchResult, ModelError> {
    let model = Autoencoder::load(model_path).ok();
    let has_model = model.is_some();
    let mut cfg = Config::default();
    cfg.partitions.count = 2;
    let mut engine = Engine::new(cfg, model);
    // Records are made batch by batch outside the timed sections, so the engine
    // reads each batch from cache as it would right after decoding it.
    let mut batch: Vec<FlowRecord> = Vec::with_capacity(BATCH);
    let mut busy = std::time::Duration::ZERO;
    let mut extract = std::time::Duration::ZERO;
    let mut alerts = 0u64;
    let mut verdicts = 0u64;
    let mut sink = 0f32;
    let gw: tad_wire::NodeId = "bench".parse().expect("a valid node id");
    for (k, first) in (0..n).step_by(BATCH).enumerate() {
        batch.clear();
        batch.extend((first..(first + BATCH).min(n)).map(synthetic));
        let now_ms = 1_700_000_000_000 + k as u64 * 5;
        let t = Instant::now();
        let out = engine.records(&gw, &batch, now_ms);
        busy += t.elapsed();
        alerts += out.alerts.len() as u64;
        verdicts += out.verdicts.len() as u64;
        let t = Instant::now();
        for r in &batch {
            sink += flow_meter::features::extract(r)[0];
        }
        extract += t.elapsed();
    }
    std::hint::black_box(sink);
    let seconds = busy.as_secs_f64();
    let extract_ns_per_record = extract.as_nanos() as f64 / n.max(1) as f64;
    Ok(BenchResult {
        records: n,
        seconds,
        records_per_s: n as f64 / seconds.max(1e-9),
        model: has_model,
        alerts,
        verdicts,
        extract_ns_per_record,
        counters: engine.counters,
    })
}
