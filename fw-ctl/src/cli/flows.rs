//! `fw-ctl flows`: the flow table, merged per-CPU, oriented from the initiator,
//! and the one-packet flows still waiting in the pending array
//! (`fw_common::admission`: a flow enters the flow map on its second packet),
//! shown with `pending: true`.

use clap::{Args, ValueEnum};
use flow_meter::export::to_record;
use serde::Serialize;
use tad_wire::EndReason;

use super::Ctx;
use crate::{clock, error::Result};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortBy {
    Bytes,
    Packets,
    Duration,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Show at most N flows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Order, largest first.
    #[arg(long, value_enum, default_value = "bytes")]
    pub sort: SortBy,
}

/// One flow as shown.
#[derive(Clone, Debug, Serialize)]
pub struct FlowView {
    pub src: std::net::IpAddr,
    pub sport: u16,
    pub dst: std::net::IpAddr,
    pub dport: u16,
    pub proto: u8,
    pub vlan: u16,
    /// Both directions.
    pub packets: u64,
    /// Both directions, IP bytes.
    pub bytes: u64,
    pub fwd_packets: u64,
    pub bwd_packets: u64,
    pub fwd_bytes: u64,
    pub bwd_bytes: u64,
    /// First to last packet, s.
    pub duration_s: f64,
    /// Since the last packet, s.
    pub idle_s: f64,
    /// First packet, Unix ms.
    pub start_ms: u64,
    /// A one-packet flow in the pending array, not (yet) in the flow map.
    pub pending: bool,
}

pub fn run(ctx: &Ctx, a: FlowsArgs) -> Result<()> {
    let maps = ctx.maps("fw-ctl flows")?;
    let now = clock::mono_ns();
    let off = clock::unix_offset_ns();
    let idle_ns = maps.config()?.flow_idle_ns();
    let mut slots = Vec::new();
    // Maps kept from a version without the pending array have no one-packet flows.
    if let Ok(t) = crate::kernel::PendingTable::open(&maps.dir, fw_common::maps::PENDING) {
        t.read_all(&mut slots)?;
    }
    let pending = slots
        .iter()
        .filter(|p| p.live(now, idle_ns))
        .map(|p| (p.key, p.stats(), 1, true));
    let mut v: Vec<FlowView> = maps
        .flows()?
        .into_iter()
        .map(|f| (f.key, f.stats, f.cpus_seen, false))
        .chain(pending)
        .map(|(key, stats, cpus, pending)| {
            let r = to_record(&key, &stats, cpus, off, EndReason::ForcedEnd);
            FlowView {
                src: r.src,
                sport: r.sport,
                dst: r.dst,
                dport: r.dport,
                proto: r.proto,
                vlan: r.vlan,
                packets: r.packets(),
                bytes: r.fwd.bytes + r.bwd.bytes,
                fwd_packets: r.fwd.packets,
                bwd_packets: r.bwd.packets,
                fwd_bytes: r.fwd.bytes,
                bwd_bytes: r.bwd.bytes,
                duration_s: r.duration_us as f64 / 1e6,
                idle_s: now.saturating_sub(stats.last_seen_ns) as f64 / 1e9,
                start_ms: r.start_ms,
                pending,
            }
        })
        .collect();
    match a.sort {
        SortBy::Bytes => v.sort_by_key(|f| std::cmp::Reverse(f.bytes)),
        SortBy::Packets => v.sort_by_key(|f| std::cmp::Reverse(f.packets)),
        SortBy::Duration => v.sort_by(|x, y| y.duration_s.total_cmp(&x.duration_s)),
    }
    v.truncate(a.top);
    ctx.print(&v, || {
        let mut s = format!(
            "{:<5} {:<46} {:<46} {:>9} {:>12} {:>9} {:>7}\n",
            "PROTO", "SRC", "DST", "PACKETS", "BYTES", "DUR(s)", "IDLE(s)"
        );
        for f in &v {
            s.push_str(&format!(
                "{:<5} {:<46} {:<46} {:>9} {:>12} {:>9.2} {:>7.1}\n",
                f.proto,
                std::net::SocketAddr::new(f.src, f.sport).to_string(),
                std::net::SocketAddr::new(f.dst, f.dport).to_string(),
                f.packets,
                f.bytes,
                f.duration_s,
                f.idle_s
            ));
        }
        s
    });
    Ok(())
}
