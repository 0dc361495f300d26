//! `fw-ctl status`: attached interfaces and modes, observe/enforce, rate limits,
//! map fill levels, counters by verdict and reason with packets/s over the last
//! second, and the daemon's runtime status when one has written it (bus, queue,
//! verdicts and commands applied/rejected, refusals by reason, state revision).

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tad_wire::{InterfaceStatus, MapFill};

use super::{Ctx, stats};
use crate::{config::Limits, daemon::DaemonStatus, error::Result};

#[derive(Debug, Args)]
pub struct StatusArgs {}

#[derive(Serialize)]
pub struct Status {
    pub instance: String,
    pub pin_dir: String,
    pub interfaces: Vec<InterfaceStatus>,
    /// `observe` or `enforce`.
    pub mode: String,
    pub limits: Limits,
    /// The evidence thresholds loaded in the program (`[evidence]`; 0 = off).
    pub evidence: EvidenceView,
    /// Provisional quarantines in force: the program's own blocklist entries
    /// (origin `datapath`), which drop only new flows of their source.
    pub provisional_quarantines: Vec<ProvisionalView>,
    /// Services under SYN authentication (`fw-ctl list protected`), with their
    /// counters.
    pub protected: Vec<crate::synauth::Protected>,
    pub maps: Vec<MapFill>,
    pub counters: stats::Sample,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonStatus>,
}

/// The evidence thresholds of the kernel configuration.
#[derive(Serialize)]
pub struct EvidenceView {
    pub quarantine_distinct: u32,
    pub quarantine_ttl_ms: u32,
    pub report_distinct: u32,
}

/// One provisional quarantine.
#[derive(Serialize)]
pub struct ProvisionalView {
    pub prefix: ipnet::IpNet,
    /// Seconds left.
    pub expires_in_s: Option<f64>,
    /// New flows dropped (would-drop in observe mode).
    pub hits: u64,
}

/// `refusals: bad_signature 2, stale 1` (`refusals: none` when there are none).
pub fn refusals_line(r: &tad_wire::RefusalCounts) -> String {
    if r.is_empty() {
        return "refusals: none\n".into();
    }
    let parts: Vec<String> = r
        .iter()
        .map(|(k, n)| format!("{} {n}", crate::daemon::enforcer::reason_name(*k)))
        .collect();
    format!("refusals: {}\n", parts.join(", "))
}

pub fn run(ctx: &Ctx, _a: StatusArgs) -> Result<()> {
    let maps = ctx.maps("fw-ctl status")?;
    let cfg = maps.config()?;
    let counters = stats::sample(&maps, Duration::from_secs(1))?;
    let status_path = ctx
        .cfg
        .as_ref()
        .map(|c| c.status_path())
        .unwrap_or_else(|| {
            std::path::PathBuf::from("/run/fw-ctl").join(format!("{}.json", ctx.dir.instance))
        });
    let daemon = DaemonStatus::load(&status_path)
        .ok()
        .filter(|d| std::path::Path::new(&format!("/proc/{}", d.pid)).exists());
    let st = Status {
        instance: ctx.dir.instance.clone(),
        pin_dir: ctx.dir.root.display().to_string(),
        interfaces: ctx.dir.interface_status(),
        mode: if cfg.observe() { "observe" } else { "enforce" }.into(),
        limits: Limits {
            syn_pps: cfg.syn_rate_pps,
            syn_burst: cfg.syn_burst,
            pps: cfg.pkt_rate_pps,
            burst: cfg.pkt_burst,
        },
        evidence: EvidenceView {
            quarantine_distinct: cfg.quarantine_distinct,
            quarantine_ttl_ms: cfg.quarantine_ttl_ms,
            report_distinct: cfg.report_distinct,
        },
        provisional_quarantines: crate::control::list_blocks(&maps, None)?
            .into_iter()
            .filter(|b| b.origin == crate::lists::Origin::Datapath)
            .map(|b| ProvisionalView {
                prefix: b.prefix,
                expires_in_s: b.expires_in_s,
                hits: b.hits,
            })
            .collect(),
        protected: crate::synauth::list(&ctx.dir)?,
        maps: maps.fill()?,
        counters,
        daemon,
    };
    ctx.print(&st, || {
        let mut s = format!("instance {} ({}), mode {}\n", st.instance, st.pin_dir, st.mode);
        for i in &st.interfaces {
            s.push_str(&format!("  attached to {} ({})\n", i.name, i.xdp_mode));
        }
        let l = &st.limits;
        s.push_str(&format!(
            "rate limits: syn {} pps burst {}, all {} pps burst {} (0 = off)\n",
            l.syn_pps, l.syn_burst, l.pps, l.burst
        ));
        let e = &st.evidence;
        s.push_str(&format!(
            "evidence: provisional quarantine at {} distinct for {} ms, reports at {} distinct (0 = off); {} provisional quarantine(s) in force\n\nMAP            ENTRIES / MAX\n",
            e.quarantine_distinct,
            e.quarantine_ttl_ms,
            e.report_distinct,
            st.provisional_quarantines.len()
        ));
        for m in &st.maps {
            s.push_str(&format!("{:<14} {:>8} / {}\n", m.name, m.entries, m.max_entries));
        }
        s.push('\n');
        s.push_str(&stats::table(&st.counters));
        match &st.daemon {
            Some(d) => {
                s.push_str(&format!(
                    "\ndaemon pid {}: bus {}, flow queue {}/{}, records exported {} dropped {}, verdicts applied {} rejected {}, commands applied {} rejected {}\n",
                    d.pid,
                    d.bus,
                    d.flow_queue_len,
                    d.flow_queue_capacity,
                    d.records_exported_total,
                    d.records_dropped_total,
                    d.verdicts.verdicts_applied,
                    d.verdicts.verdicts_rejected,
                    d.verdicts.commands_applied,
                    d.verdicts.commands_rejected
                ));
                s.push_str(&refusals_line(&d.verdicts.refusals));
                s.push_str(&format!("state published: rev {}", d.state_rev));
                if let Some(h) = &d.http_listen {
                    s.push_str(&format!(", http on {h}"));
                }
                s.push('\n');
            }
            None => s.push_str("\nno daemon running\n"),
        }
        s
    });
    Ok(())
}
