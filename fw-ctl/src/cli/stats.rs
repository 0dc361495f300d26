//! `fw-ctl stats [--watch]`: verdict counters with packets/s.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tad_wire::CounterEntry;

use super::Ctx;
use crate::{daemon::slot_name, error::Result, kernel::Pinned};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print again every interval until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between samples (also the packets/s window).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// With --watch: stop after N samples.
    #[arg(long)]
    pub count: Option<u64>,
}

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub counters: Vec<CounterEntry>,
    pub total_packets: u64,
    pub total_pps: f64,
}

/// Reads the counters twice `window` apart; packets/s over the window.
pub fn sample(maps: &Pinned, window: Duration) -> Result<Sample> {
    let a = maps.counters()?;
    let t = Instant::now();
    std::thread::sleep(window);
    let b = maps.counters()?;
    let dt = t.elapsed().as_secs_f64().max(1e-3);
    let counters: Vec<CounterEntry> = a
        .iter()
        .zip(b.iter())
        .map(|((_, x), (slot, y))| {
            CounterEntry::new(
                *slot,
                y.packets,
                y.bytes,
                y.packets.saturating_sub(x.packets) as f64 / dt,
            )
        })
        .collect();
    Ok(Sample {
        total_packets: counters.iter().map(|c| c.packets).sum(),
        total_pps: counters.iter().map(|c| c.pps).sum(),
        counters,
    })
}

/// The counters as a text table.
pub fn table(s: &Sample) -> String {
    let mut out = format!(
        "{:<24} {:>14} {:>16} {:>12}\n",
        "VERDICT/REASON", "PACKETS", "BYTES", "PPS"
    );
    for (c, slot) in s.counters.iter().zip(fw_common::counters::CounterSlot::ALL) {
        out.push_str(&format!(
            "{:<24} {:>14} {:>16} {:>12.1}\n",
            slot_name(slot),
            c.packets,
            c.bytes,
            c.pps
        ));
    }
    out.push_str(&format!(
        "{:<24} {:>14} {:>16} {:>12.1}\n",
        "total", s.total_packets, "", s.total_pps
    ));
    out
}

pub fn run(ctx: &Ctx, a: StatsArgs) -> Result<()> {
    let maps = ctx.maps("fw-ctl stats")?;
    let window = Duration::from_secs_f64(a.interval.clamp(0.05, 3600.0));
    let mut n = 0u64;
    loop {
        let s = sample(&maps, window)?;
        if ctx.json && a.watch {
            // One JSON document per line while watching.
            println!("{}", serde_json::to_string(&s).expect("serialises"));
        } else {
            ctx.print(&s, || table(&s));
        }
        n += 1;
        if !a.watch || a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}
