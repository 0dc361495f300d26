//! Traffic spikes (`[spike]`, `spike.rate`): per device (in
//! `trust.device_networks`, or any address when that is empty), packets and bytes
//! per `spike.interval_s` against an EWMA baseline of its own past intervals; a
//! spike is a z-score of at least `spike.z` over a minimum absolute rate, reported
//! at most once per interval, after `warmup_intervals` of baseline. Never blocks.

use std::net::IpAddr;

use tad_wire::{AlertKind, Severity};

use super::{Detection, Gate, Rules, map, ms, slot};
use crate::config::Config;

/// Per-device traffic-rate baseline (EWMA mean and variance, after Welford /
/// Finch, "Incremental calculation of weighted mean and variance", 2009).
pub struct RateState {
    /// Start of the current interval, ms.
    pub(super) bucket_start_ms: u64,
    packets: u64,
    bytes: u64,
    mean_pps: f64,
    var_pps: f64,
    mean_bps: f64,
    var_bps: f64,
    intervals: u32,
    alerted_bucket: Option<u64>,
}

impl RateState {
    fn new(now_ms: u64) -> Self {
        RateState {
            bucket_start_ms: now_ms,
            packets: 0,
            bytes: 0,
            mean_pps: 0.0,
            var_pps: 0.0,
            mean_bps: 0.0,
            var_bps: 0.0,
            intervals: 0,
            alerted_bucket: None,
        }
    }

    fn learn(&mut self, pps: f64, bps: f64, alpha: f64) {
        let upd = |mean: &mut f64, var: &mut f64, x: f64| {
            let diff = x - *mean;
            let incr = alpha * diff;
            *mean += incr;
            *var = (1.0 - alpha) * (*var + diff * incr);
        };
        upd(&mut self.mean_pps, &mut self.var_pps, pps);
        upd(&mut self.mean_bps, &mut self.var_bps, bps);
        self.intervals = self.intervals.saturating_add(1);
    }
}

impl Rules {
    /// Adds `packets` and `bytes` sent by `dev` at `now_ms` to its current
    /// interval (closing finished intervals into the baseline, idle ones as zero)
    /// and reports the interval once it is a spike.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spike(
        &mut self,
        cfg: &Config,
        dev: IpAddr,
        packets: u64,
        bytes: u64,
        now_ms: u64,
        gate: &Gate,
        out: &mut Vec<Detection>,
    ) {
        let nets = &cfg.trust.device_networks;
        if packets == 0 || (!nets.is_empty() && !nets.iter().any(|n| n.contains(&dev))) {
            return;
        }
        let sp = &cfg.spike;
        let iv = ms(sp.interval_s).max(1);
        let Some(st) = slot(&mut self.rates, &mut self.state_full, dev, || {
            RateState::new(now_ms)
        }) else {
            return;
        };
        if now_ms >= st.bucket_start_ms + iv {
            let secs = iv as f64 / 1000.0;
            st.learn(st.packets as f64 / secs, st.bytes as f64 / secs, sp.alpha);
            let elapsed = (now_ms - st.bucket_start_ms) / iv;
            for _ in 1..elapsed.min(1000) {
                st.learn(0.0, 0.0, sp.alpha);
            }
            st.bucket_start_ms += elapsed * iv;
            st.packets = 0;
            st.bytes = 0;
        }
        st.packets += packets;
        st.bytes += bytes;
        if st.intervals < sp.warmup_intervals || st.alerted_bucket == Some(st.bucket_start_ms) {
            return;
        }
        let secs = iv as f64 / 1000.0;
        let pps = st.packets as f64 / secs;
        let bps = st.bytes as f64 / secs;
        let z_pps = (pps - st.mean_pps) / st.var_pps.sqrt().max(1.0);
        let z_bps = (bps - st.mean_bps) / st.var_bps.sqrt().max(1.0);
        let hit_pps = z_pps >= sp.z && pps >= sp.min_pps;
        let hit_bps = z_bps >= sp.z && bps >= sp.min_bps;
        if (hit_pps || hit_bps) && gate.open("spike.rate", Some(dev), None, pps.max(1.0)) {
            st.alerted_bucket = Some(st.bucket_start_ms);
            out.push(Detection {
                kind: AlertKind::TrafficSpike,
                rule: "spike.rate",
                main: pps,
                severity: Severity::Medium,
                confidence: 0.6,
                source: Some(dev),
                target: None,
                window_s: sp.interval_s,
                observed: map(&[("pps", pps), ("bps", bps), ("z_pps", z_pps), ("z_bps", z_bps)]),
                thresholds: map(&[("z", sp.z), ("min_pps", sp.min_pps), ("min_bps", sp.min_bps)]),
                text: format!(
                    "{dev} sent {pps:.0} packets/s, {bps:.0} bytes/s against a baseline of {:.0} packets/s, {:.0} bytes/s",
                    st.mean_pps, st.mean_bps
                ),
                flows: Vec::new(),
                may_block: false,
            });
        }
    }
}
