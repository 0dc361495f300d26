//! Flow export: when a flow's record is due (IPFIX semantics, RFC 7011 section 5.1
//! terms; flowEndReason per RFC 7012 IE 136) and how the merged per-CPU statistics
//! become a [`FlowRecord`].
//!
//! The gateway daemon (walking the kernel's flow map) and the pcap flow meter
//! ([`crate::meter`], used for training and replay tests) both call [`expiry`] and
//! [`to_record`], so a capture yields the same records in both.
//!
//! A record is due when, at the time of an export pass (`now_ns`):
//! 1. **idle timeout**: no packet for `idle` (default 10 s): the flow is over;
//! 2. **end of flow**: a TCP RST was seen, or FIN from both sides, and no packet came
//!    for `end_grace` (default 500 ms, so the last ACK of a teardown lands in the
//!    record rather than opening a new flow);
//! 3. **active timeout**: the flow has run `active` (default 60 s) since its start
//!    or its previous export; the flow goes on, the record carries the counts since
//!    the previous export (delta counts, like IPFIX's octetDeltaCount), and the entry
//!    is kept.
//!
//! The defaults are shorter than IPFIX exporters' usual 15 s idle / 30 min active
//! because a detector must see short-lived scan and brute-force flows within a
//! second or two, and IoT devices hold long-lived MQTT sessions that would
//! otherwise never be reported.

use std::time::Duration;

use fw_common::flow::{FlowKey, FlowStats, SIDE_A};
use tad_wire::{DirCounters, EndReason, FlowRecord, addr_from_map};

/// Export timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle timeout (no packet for this long ends the flow).
    pub idle: Duration,
    /// Active timeout (a running flow is reported this often).
    pub active: Duration,
    /// Quiet time after RST or FIN+FIN before the flow counts as ended.
    pub end_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle: Duration::from_secs(10),
            active: Duration::from_secs(60),
            end_grace: Duration::from_millis(500),
        }
    }
}

/// Whether a flow's record is due at `now_ns`, and why. `last_export_ns` is when the
/// flow was last exported by active timeout (same clock as the stats), if ever.
pub fn expiry(
    stats: &FlowStats,
    now_ns: u64,
    last_export_ns: Option<u64>,
    t: &Timeouts,
) -> Option<EndReason> {
    if stats.first_seen_ns == 0 {
        return None;
    }
    let quiet_ns = now_ns.saturating_sub(stats.last_seen_ns);
    if quiet_ns >= t.idle.as_nanos() as u64 {
        return Some(EndReason::IdleTimeout);
    }
    let [a, b] = &stats.dir;
    let ended = a.rst > 0 || b.rst > 0 || (a.fin > 0 && b.fin > 0);
    if ended && quiet_ns >= t.end_grace.as_nanos() as u64 {
        return Some(EndReason::EndOfFlow);
    }
    let since = last_export_ns.unwrap_or(stats.first_seen_ns);
    if now_ns.saturating_sub(since) >= t.active.as_nanos() as u64 {
        return Some(EndReason::ActiveTimeout);
    }
    None
}

/// Counts accumulated since `base` (a snapshot taken at the previous active-timeout
/// export): packet, byte and flag counts and inter-arrival sums are differences;
/// minimum/maximum lengths and the opener are those of the whole flow; the start is
/// the previous snapshot's last packet.
pub fn delta_since(now: &FlowStats, base: &FlowStats) -> FlowStats {
    let mut d = *now;
    d.first_seen_ns = base.last_seen_ns.max(now.first_seen_ns);
    d.iat_sum_ns = now.iat_sum_ns.saturating_sub(base.iat_sum_ns);
    d.iat_sq_sum_us2 = now.iat_sq_sum_us2.saturating_sub(base.iat_sq_sum_us2);
    for (o, b) in d.dir.iter_mut().zip(base.dir.iter()) {
        o.packets = o.packets.saturating_sub(b.packets);
        o.bytes = o.bytes.saturating_sub(b.bytes);
        o.syn = o.syn.saturating_sub(b.syn);
        o.syn_ack = o.syn_ack.saturating_sub(b.syn_ack);
        o.fin = o.fin.saturating_sub(b.fin);
        o.rst = o.rst.saturating_sub(b.rst);
        o.psh = o.psh.saturating_sub(b.psh);
        o.ack_only = o.ack_only.saturating_sub(b.ack_only);
        o.urg = o.urg.saturating_sub(b.urg);
        o.no_flags = o.no_flags.saturating_sub(b.no_flags);
    }
    d
}

fn dir_counters(d: &fw_common::flow::DirStats) -> DirCounters {
    DirCounters {
        packets: d.packets,
        bytes: d.bytes,
        syn: d.syn,
        syn_ack: d.syn_ack,
        fin: d.fin,
        rst: d.rst,
        psh: d.psh,
        ack_only: d.ack_only,
        urg: d.urg,
        no_flags: d.no_flags,
        min_len: d.min_len,
        max_len: d.max_len,
        tcp_flags_or: d.tcp_flags_or,
        icmp: (d.icmp_type_plus1 != 0).then(|| (d.icmp_type_plus1 - 1, d.icmp_code)),
    }
}

/// Builds the record of a flow from its merged statistics.
///
/// * `cpus_seen`: how many per-CPU copies saw packets (from [`FlowStats::merge`]);
///   the standard deviation of inter-arrival times uses `packets - cpus_seen` gap
///   samples.
/// * `unix_offset_ns`: Unix time minus `bpf_ktime_get_ns` time (CLOCK_REALTIME -
///   CLOCK_MONOTONIC), to turn kernel timestamps into wall-clock time.
///
/// Orientation: the initiator is the side that sent a SYN without ACK when exactly
/// one side did, else the side that sent the first packet.
pub fn to_record(
    key: &FlowKey,
    stats: &FlowStats,
    cpus_seen: u32,
    unix_offset_ns: i128,
    end_reason: EndReason,
) -> FlowRecord {
    let [a, b] = &stats.dir;
    let initiator = match (a.syn > 0, b.syn > 0) {
        (true, false) => SIDE_A,
        (false, true) => 1 - SIDE_A,
        _ => stats.opener,
    };
    let (src, sport, dst, dport, fwd, bwd) = if initiator == SIDE_A {
        (key.addr_a, key.port_a, key.addr_b, key.port_b, a, b)
    } else {
        (key.addr_b, key.port_b, key.addr_a, key.port_a, b, a)
    };
    let packets = stats.packets();
    let duration_ns = stats.last_seen_ns.saturating_sub(stats.first_seen_ns);
    let iat_mean_us = if packets >= 2 {
        duration_ns as f64 / 1_000.0 / (packets - 1) as f64
    } else {
        0.0
    };
    let samples = packets.saturating_sub(cpus_seen.max(1) as u64);
    let iat_std_us = if samples >= 2 {
        let n = samples as f64;
        let mean = stats.iat_sum_ns as f64 / 1_000.0 / n;
        (stats.iat_sq_sum_us2 as f64 / n - mean * mean)
            .max(0.0)
            .sqrt()
    } else {
        0.0
    };
    let start_unix_ns = stats.first_seen_ns as i128 + unix_offset_ns;
    FlowRecord {
        src: addr_from_map(src, key.family),
        dst: addr_from_map(dst, key.family),
        sport,
        dport,
        proto: key.proto,
        vlan: key.vlan_id,
        start_ms: (start_unix_ns.max(0) / 1_000_000) as u64,
        duration_us: duration_ns / 1_000,
        fwd: dir_counters(fwd),
        bwd: dir_counters(bwd),
        iat_mean_us,
        iat_std_us,
        end_reason,
    }
}

#[cfg(test)]
mod tests {
    use fw_common::flow::{PacketMeta, SIDE_B, tcp_flags, v4_mapped};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn tcp(flags: u8) -> PacketMeta {
        PacketMeta {
            ip_len: 60,
            tcp_flags: flags,
            is_tcp: true,
            icmp: None,
        }
    }

    #[test]
    fn idle_end_and_active_timeouts() {
        let t = Timeouts::default();
        let mut f = FlowStats::default();
        f.account(SIDE_A, &tcp(tcp_flags::SYN), S);
        assert_eq!(expiry(&f, S + 9 * S, None, &t), None);
        assert_eq!(
            expiry(&f, S + 10 * S, None, &t),
            Some(EndReason::IdleTimeout)
        );
        f.account(SIDE_B, &tcp(tcp_flags::RST | tcp_flags::ACK), 2 * S);
        assert_eq!(
            expiry(&f, 2 * S + S / 4, None, &t),
            None,
            "inside the end grace"
        );
        assert_eq!(
            expiry(&f, 2 * S + S / 2, None, &t),
            Some(EndReason::EndOfFlow)
        );

        let mut long = FlowStats::default();
        for i in 0..=61 {
            long.account(SIDE_A, &tcp(tcp_flags::ACK), S + i * S);
        }
        assert_eq!(
            expiry(&long, 62 * S, None, &t),
            Some(EndReason::ActiveTimeout)
        );
        assert_eq!(expiry(&long, 62 * S, Some(61 * S), &t), None);
    }

    #[test]
    fn record_is_oriented_from_the_syn_sender() {
        let (key, side) = FlowKey::new(
            v4_mapped([198, 51, 100, 9]),
            443,
            v4_mapped([192, 0, 2, 3]),
            50000,
            6,
            4,
            0,
        );
        let client = 1 - side;
        let mut f = FlowStats::default();
        // The capture starts with the server's SYN-ACK; the client's SYN is retried later.
        f.account(side, &tcp(tcp_flags::SYN | tcp_flags::ACK), S);
        f.account(client, &tcp(tcp_flags::SYN), 2 * S);
        f.account(client, &tcp(tcp_flags::ACK), 4 * S);
        let r = to_record(&key, &f, 1, 0, EndReason::IdleTimeout);
        assert_eq!(r.src.to_string(), "192.0.2.3");
        assert_eq!((r.sport, r.dport), (50000, 443));
        assert_eq!((r.fwd.packets, r.bwd.packets, r.bwd.syn_ack), (2, 1, 1));
        assert_eq!(r.duration_us, 3_000_000);
        assert!((r.iat_mean_us - 1_500_000.0).abs() < 1e-6);
        // Gaps 1 s and 2 s: standard deviation 0.5 s.
        assert!((r.iat_std_us - 500_000.0).abs() < 1.0, "{}", r.iat_std_us);
        assert_eq!(r.start_ms, 1_000);
    }

    #[test]
    fn delta_counts_since_previous_export() {
        let mut f = FlowStats::default();
        f.account(SIDE_A, &tcp(tcp_flags::ACK), S);
        f.account(SIDE_A, &tcp(tcp_flags::ACK), 2 * S);
        let base = f;
        f.account(SIDE_B, &tcp(tcp_flags::ACK), 3 * S);
        let d = delta_since(&f, &base);
        assert_eq!((d.dir[0].packets, d.dir[1].packets), (0, 1));
        assert_eq!(d.first_seen_ns, 2 * S);
        assert_eq!(d.iat_sum_ns, S);
    }
}
