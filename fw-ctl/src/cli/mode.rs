//! `fw-ctl mode observe|enforce` and `fw-ctl limits`: the runtime configuration
//! map, which the XDP program reads on every packet (takes effect immediately):
//! the mode, the per-source rate limits and the evidence thresholds (provisional
//! quarantine, report events; `[evidence]` in gateway.toml).

use clap::Args;
use fw_common::config::{MODE_ENFORCE, MODE_OBSERVE};
use serde::Serialize;

use super::Ctx;
use crate::{
    config::{Limits, ModeName},
    error::Result,
};

#[derive(Debug, Args)]
pub struct ModeArgs {
    #[arg(value_enum)]
    pub mode: ModeName,
}

#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// TCP SYN (without ACK) per source, packets/s; 0 = off.
    #[arg(long)]
    pub syn_pps: Option<u32>,
    /// SYN burst, packets.
    #[arg(long)]
    pub syn_burst: Option<u32>,
    /// All packets per source, packets/s; 0 = off.
    #[arg(long)]
    pub pps: Option<u32>,
    /// Packet burst, packets.
    #[arg(long)]
    pub burst: Option<u32>,
    /// Provisional quarantine threshold: distinct hosts or ports (set bits of the
    /// 256-bit bitmaps) and unanswered new flows within 1-2 s; 0 = off.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub quarantine_distinct: Option<u32>,
    /// Lifetime of a provisional quarantine, ms (1000..=3600000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1000..=3_600_000))]
    pub quarantine_ttl_ms: Option<u32>,
    /// Distinct hosts or ports at which the program wakes the daemon; 0 = off.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub report_distinct: Option<u32>,
}

/// What `fw-ctl limits` shows: the rate limits and the evidence thresholds.
#[derive(Serialize)]
struct LimitsOut {
    #[serde(flatten)]
    limits: Limits,
    quarantine_distinct: u32,
    quarantine_ttl_ms: u32,
    report_distinct: u32,
}

#[derive(Serialize)]
struct ModeOut {
    mode: ModeName,
    previous: ModeName,
}

pub fn mode(ctx: &Ctx, a: ModeArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl mode")?;
    let mut cfg = maps.config()?;
    let previous = if cfg.observe() {
        ModeName::Observe
    } else {
        ModeName::Enforce
    };
    cfg.mode = match a.mode {
        ModeName::Observe => MODE_OBSERVE,
        ModeName::Enforce => MODE_ENFORCE,
    };
    maps.set_config(&cfg)?;
    let out = ModeOut {
        mode: a.mode,
        previous,
    };
    ctx.print(&out, || {
        format!("mode {:?} (was {:?})", a.mode, previous).to_lowercase()
    });
    Ok(())
}

pub fn limits(ctx: &Ctx, a: LimitsArgs) -> Result<()> {
    let mut maps = ctx.maps("fw-ctl limits")?;
    let mut cfg = maps.config()?;
    let l = Limits {
        syn_pps: a.syn_pps.unwrap_or(cfg.syn_rate_pps),
        syn_burst: a.syn_burst.unwrap_or(cfg.syn_burst),
        pps: a.pps.unwrap_or(cfg.pkt_rate_pps),
        burst: a.burst.unwrap_or(cfg.pkt_burst),
    };
    if l.syn_pps > 0 && l.syn_burst == 0 {
        return Err(super::usage(
            "--syn-burst",
            "must be at least 1 when --syn-pps is set",
        ));
    }
    if l.pps > 0 && l.burst == 0 {
        return Err(super::usage(
            "--burst",
            "must be at least 1 when --pps is set",
        ));
    }
    let changing = a.syn_pps.is_some()
        || a.syn_burst.is_some()
        || a.pps.is_some()
        || a.burst.is_some()
        || a.quarantine_distinct.is_some()
        || a.quarantine_ttl_ms.is_some()
        || a.report_distinct.is_some();
    if changing {
        cfg.syn_rate_pps = l.syn_pps;
        cfg.syn_burst = l.syn_burst;
        cfg.pkt_rate_pps = l.pps;
        cfg.pkt_burst = l.burst;
        cfg.quarantine_distinct = a.quarantine_distinct.unwrap_or(cfg.quarantine_distinct);
        cfg.quarantine_ttl_ms = a.quarantine_ttl_ms.unwrap_or(cfg.quarantine_ttl_ms);
        cfg.report_distinct = a.report_distinct.unwrap_or(cfg.report_distinct);
        maps.set_config(&cfg)?;
    }
    let out = LimitsOut {
        limits: l,
        quarantine_distinct: cfg.quarantine_distinct,
        quarantine_ttl_ms: cfg.quarantine_ttl_ms,
        report_distinct: cfg.report_distinct,
    };
    ctx.print(&out, || {
        format!(
            "syn {} pps burst {}, all packets {} pps burst {}; provisional quarantine at {} distinct for {} ms, reports at {} distinct (0 = off)",
            l.syn_pps,
            l.syn_burst,
            l.pps,
            l.burst,
            out.quarantine_distinct,
            out.quarantine_ttl_ms,
            out.report_distinct
        )
    });
    Ok(())
}
