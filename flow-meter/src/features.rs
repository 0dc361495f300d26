//! The detector's per-flow feature vector: one code path for serving (the detector
//! scores exported [`FlowRecord`]s) and for training (`detector features` writes
//! the same vectors as CSV for `detector/train/train.py`).
//!
//! Every feature is computed from one [`FlowRecord`]; "fwd" is initiator →
//! responder, "bwd" the reverse. Counts, byte totals, durations and rates are
//! compressed with `ln(1 + x)` so that the heavy tails of network traffic do not
//! dominate; ratios are in [0, 1]. The training script standardises each column
//! (z-score with the benign training set's mean and standard deviation) and saves
//! those parameters beside the model.
//!
//! | # | name | formula | unit before ln1p |
//! |---|---|---|---|
//! | 0 | `ln_duration_ms` | ln1p(duration_us / 1000) | ms |
//! | 1 | `ln_fwd_packets` | ln1p(fwd.packets) | packets |
//! | 2 | `ln_bwd_packets` | ln1p(bwd.packets) | packets |
//! | 3 | `ln_fwd_bytes` | ln1p(fwd.bytes) | bytes (IP length) |
//! | 4 | `ln_bwd_bytes` | ln1p(bwd.bytes) | bytes |
//! | 5 | `ln_fwd_mean_len` | ln1p(fwd.bytes / fwd.packets) | bytes/packet |
//! | 6 | `ln_bwd_mean_len` | ln1p(bwd.bytes / bwd.packets), 0 if none | bytes/packet |
//! | 7 | `ln_fwd_max_len` | ln1p(fwd.max_len) | bytes |
//! | 8 | `ln_bwd_max_len` | ln1p(bwd.max_len) | bytes |
//! | 9 | `ln_iat_mean_ms` | ln1p(iat_mean_us / 1000) | ms |
//! | 10 | `ln_iat_std_ms` | ln1p(iat_std_us / 1000) | ms |
//! | 11 | `ln_pps` | ln1p(packets / max(duration_s, 1 ms)) | packets/s |
//! | 12 | `ln_bps` | ln1p(bytes / max(duration_s, 1 ms)) | bytes/s |
//! | 13 | `bwd_pkt_ratio` | bwd.packets / packets | ratio |
//! | 14 | `syn_ratio` | (fwd.syn + bwd.syn) / packets | ratio |
//! | 15 | `synack_ratio` | (fwd.syn_ack + bwd.syn_ack) / packets | ratio |
//! | 16 | `fin_ratio` | (fwd.fin + bwd.fin) / packets | ratio |
//! | 17 | `rst_ratio` | (fwd.rst + bwd.rst) / packets | ratio |
//! | 18 | `psh_ratio` | (fwd.psh + bwd.psh) / packets | ratio |
//! | 19 | `ack_only_ratio` | (fwd.ack_only + bwd.ack_only) / packets | ratio |
//! | 20 | `is_tcp` | proto == 6 | 0/1 |
//! | 21 | `is_udp` | proto == 17 | 0/1 |
//! | 22 | `is_icmp` | proto == 1 or 58 | 0/1 |
//! | 23 | `dport_well_known` | dport < 1024 | 0/1 |

use tad_wire::FlowRecord;

/// Number of features.
pub const N_FEATURES: usize = 24;

/// Feature names, in vector order (the CSV header of `detector features`).
pub const NAMES: [&str; N_FEATURES] = [
    "ln_duration_ms",
    "ln_fwd_packets",
    "ln_bwd_packets",
    "ln_fwd_bytes",
    "ln_bwd_bytes",
    "ln_fwd_mean_len",
    "ln_bwd_mean_len",
    "ln_fwd_max_len",
    "ln_bwd_max_len",
    "ln_iat_mean_ms",
    "ln_iat_std_ms",
    "ln_pps",
    "ln_bps",
    "bwd_pkt_ratio",
    "syn_ratio",
    "synack_ratio",
    "fin_ratio",
    "rst_ratio",
    "psh_ratio",
    "ack_only_ratio",
    "is_tcp",
    "is_udp",
    "is_icmp",
    "dport_well_known",
];

/// Computes the feature vector of one flow record (see the module table).
pub fn extract(r: &FlowRecord) -> [f32; N_FEATURES] {
    let ln = |x: f64| x.max(0.0).ln_1p() as f32;
    let packets = r.packets().max(1) as f64;
    let bytes = (r.fwd.bytes + r.bwd.bytes) as f64;
    let mean = |b: u64, p: u64| if p == 0 { 0.0 } else { b as f64 / p as f64 };
    let dur_s = (r.duration_us as f64 / 1e6).max(1e-3);
    let ratio = |n: u32| (n as f64 / packets) as f32;
    let f = &r.fwd;
    let b = &r.bwd;
    [
        ln(r.duration_us as f64 / 1e3),
        ln(f.packets as f64),
        ln(b.packets as f64),
        ln(f.bytes as f64),
        ln(b.bytes as f64),
        ln(mean(f.bytes, f.packets)),
        ln(mean(b.bytes, b.packets)),
        ln(f.max_len as f64),
        ln(b.max_len as f64),
        ln(r.iat_mean_us / 1e3),
        ln(r.iat_std_us / 1e3),
        ln(r.packets() as f64 / dur_s),
        ln(bytes / dur_s),
        (b.packets as f64 / packets) as f32,
        ratio(f.syn + b.syn),
        ratio(f.syn_ack + b.syn_ack),
        ratio(f.fin + b.fin),
        ratio(f.rst + b.rst),
        ratio(f.psh + b.psh),
        ratio(f.ack_only + b.ack_only),
        (r.proto == 6) as u8 as f32,
        (r.proto == 17) as u8 as f32,
        (r.proto == 1 || r.proto == 58) as u8 as f32,
        (r.dport < 1024) as u8 as f32,
    ]
}

#[cfg(test)]
mod tests {
    use tad_wire::{DirCounters, EndReason};

    use super::*;

    #[test]
    fn features_of_a_small_tcp_flow() {
        let r = FlowRecord {
            src: "192.0.2.3".parse().unwrap(),
            dst: "198.51.100.9".parse().unwrap(),
            sport: 50000,
            dport: 22,
            proto: 6,
            vlan: 0,
            start_ms: 0,
            duration_us: 2_000_000,
            fwd: DirCounters {
                packets: 3,
                bytes: 180,
                syn: 1,
                ack_only: 2,
                max_len: 60,
                ..Default::default()
            },
            bwd: DirCounters {
                packets: 1,
                bytes: 60,
                syn_ack: 1,
                max_len: 60,
                ..Default::default()
            },
            iat_mean_us: 666_666.0,
            iat_std_us: 0.0,
            end_reason: EndReason::IdleTimeout,
        };
        let x = extract(&r);
        assert_eq!(x.len(), NAMES.len());
        assert!((x[0] - (2001f32).ln()).abs() < 1e-4);
        assert!((x[1] - 4f32.ln()).abs() < 1e-6);
        assert!(
            (x[11] - 3f32.ln()).abs() < 1e-5,
            "4 packets over 2 s = 2 pps"
        );
        assert_eq!(x[13], 0.25);
        assert_eq!((x[14], x[15], x[19]), (0.25, 0.25, 0.5));
        assert_eq!((x[20], x[21], x[22], x[23]), (1.0, 0.0, 0.0, 1.0));
    }
}
