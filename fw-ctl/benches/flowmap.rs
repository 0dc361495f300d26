//! `cargo bench -p fw-ctl --bench flowmap [-- --json FILE]`: cost of one export pass
//! of the daemon over the kernel flow map at 64k, 256k and 1M entries. Runs as root;
//! never part of the tests.
//!
//! Method. For each size `n` the real XDP object is loaded (not attached) with the
//! FLOWS LRU per-CPU hash sized to `n` (`EbpfLoader::map_max_entries`) and its maps
//! pinned in a private directory `/sys/fs/bpf/tadbench-flowmap-<pid>/`, so the
//! daemon's own [`Pinned`] map access is used unchanged. The map is filled from
//! userspace with `PerCpuHashMap::insert` (one `BPF_MAP_UPDATE_ELEM` per flow; far
//! faster than pushing `n` frames through BPF_PROG_TEST_RUN, and it lands the same
//! bytes): `n` distinct IPv4 TCP flows (clients in 198.18.0.0/15, servers in
//! 192.0.2.0/24), each an established session (SYN, SYN-ACK, ACK, then 3-40 data
//! segments, accounted with the one rule [`FlowStats::account`]) held in one CPU's
//! copy, the other copies empty, as on a gateway where RSS steers a flow to one queue.
//!
//! Then [`Exporter::poll`] (the daemon's export path: map walk in batches of
//! `BPF_MAP_LOOKUP_BATCH`, merge of the per-CPU copies, expiry decision, record building, deletion of
//! ended flows) is timed with the wall clock for
//! - `quiet`: a pass at a time when no flow is due (1 s after the last packet, below
//!   the idle and active timeouts): walk + merge + expiry only;
//! - `all_due`: a pass past the idle timeout, so every flow yields a
//!   [`tad_wire::FlowRecord`] and is deleted from the map (the map is refilled,
//!   untimed, before each such pass).
//!
//! Each is run [`ROUNDS`] times and the median reported, in ms per pass and ns per
//! entry. JSON: `export_ms` (the `all_due` pass, the full cost of one export) and
//! `export_quiet_ms`, `ns_per_entry_all_due`, `ns_per_entry_quiet`, `entries` (flows
//! in the map for the quiet pass) and `records_all_due` (flows walked and exported by
//! the all-due pass; the LRU's per-CPU free-list caching can leave a refilled map up
//! to 128 entries short of `n`), each keyed `64k`, `256k`, `1m`.

use std::{collections::BTreeMap, time::Instant};

use aya::maps::{PerCpuHashMap, PerCpuValues};
use flow_meter::export::Timeouts;
use fw_common::{
    flow::{FAMILY_V4, FlowKey, FlowStats, PacketMeta, SIDE_A, SIDE_B, tcp_flags as tf, v4_mapped},
    maps as m,
};
use fw_ctl::{daemon::exporter::Exporter, kernel::Pinned};
use fw_testkit::*;

const ROUNDS: usize = 5;
const SIZES: [(&str, u32); 3] = [("64k", 65_536), ("256k", 262_144), ("1m", 1_048_576)];
const S: u64 = 1_000_000_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Key of flow `i`: client 198.18.0.0 + i/256 port 10000 + i%256, server
/// 192.0.2.(1 + i%200) port 443. Distinct for i < 2^25.
fn key(i: u32) -> FlowKey {
    let c = 0xc612_0000u32 + (i >> 8);
    FlowKey::new(
        v4_mapped(c.to_be_bytes()),
        10_000 + (i & 0xff) as u16,
        v4_mapped([192, 0, 2, 1 + (i % 200) as u8]),
        443,
        6,
        FAMILY_V4,
        0,
    )
    .0
}

/// An established TCP session of `data` segments after the handshake, first packet
/// at `t0`, packets 10 ms apart; sides as a client on side A would send them.
fn session(t0: u64, data: u32) -> FlowStats {
    let mut s = FlowStats::default();
    let seg = |flags, len| PacketMeta {
        ip_len: len,
        tcp_flags: flags,
        is_tcp: true,
        icmp: None,
    };
    let mut t = t0;
    s.account(SIDE_A, &seg(tf::SYN, 60), t);
    t += 10_000_000;
    s.account(SIDE_B, &seg(tf::SYN | tf::ACK, 60), t);
    t += 10_000_000;
    s.account(SIDE_A, &seg(tf::ACK, 52), t);
    for j in 0..data {
        t += 10_000_000;
        let (side, flags, len) = if j % 2 == 0 {
            (SIDE_A, tf::PSH | tf::ACK, 200 + (j * 37 % 1200) as u16)
        } else {
            (SIDE_B, tf::ACK, 52)
        };
        s.account(side, &seg(flags, len), t);
    }
    s
}

/// Fills FLOWS with `n` flows; returns the latest last-seen time used.
fn fill(h: &mut Harness, n: u32, t0: u64) -> u64 {
    let ncpu = cpus();
    let templates: Vec<FlowStats> = (0..38).map(|d| session(t0, 3 + d)).collect();
    let last = templates.iter().map(|s| s.last_seen_ns).max().unwrap();
    let mut map: PerCpuHashMap<_, FlowKey, FlowStats> =
        PerCpuHashMap::try_from(h.ebpf.map_mut(m::FLOWS).unwrap()).unwrap();
    for i in 0..n {
        let mut v = vec![FlowStats::default(); ncpu];
        v[i as usize % ncpu] = templates[i as usize % templates.len()];
        let v = PerCpuValues::try_from(v).unwrap();
        map.insert(key(i), v, 0).expect("insert a flow");
    }
    last
}

struct Row {
    label: &'static str,
    entries: usize,
    quiet_ms: f64,
    all_due_ms: f64,
    records: usize,
    fill_s: f64,
}

fn bench_size(label: &'static str, n: u32) -> Row {
    let guard = PrivatePins::new(&format!("tadbench-flowmap-{}", std::process::id()));
    let mut h = Harness::load_pinned(&guard, |l| {
        l.map_max_entries(m::FLOWS, n);
    });
    let mut pinned = Pinned::open(&guard.0).expect("open the pinned maps");
    let timeouts = Timeouts::default();
    let t0 = monotonic_ns();

    let started = Instant::now();
    let last = fill(&mut h, n, t0);
    let fill_s = started.elapsed().as_secs_f64();
    let entries = pinned.flows().unwrap().len();

    // (a) nothing due.
    let mut quiet = Vec::new();
    for _ in 0..ROUNDS {
        let mut ex = Exporter::new(timeouts);
        let started = Instant::now();
        let out = ex.poll(&mut pinned, last + S, 0).unwrap();
        quiet.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(out.is_empty(), "no flow is due 1 s after its last packet");
    }

    // (b) everything due (idle timeout); refill before each pass.
    let mut all_due = Vec::new();
    let mut records = 0;
    for round in 0..ROUNDS {
        if round > 0 {
            fill(&mut h, n, t0);
        }
        let mut ex = Exporter::new(timeouts);
        let now = last + timeouts.idle.as_nanos() as u64 + S;
        let started = Instant::now();
        let out = ex.poll(&mut pinned, now, 0).unwrap();
        all_due.push(started.elapsed().as_secs_f64() * 1e3);
        records = out.len();
        assert_eq!(pinned.flows().unwrap().len(), 0, "idle flows are removed");
    }
    drop(pinned);
    drop(h);
    drop(guard);
    Row {
        label,
        entries,
        quiet_ms: median(quiet),
        all_due_ms: median(all_due),
        records,
        fill_s,
    }
}

fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    let mut rows = Vec::new();
    for (label, n) in SIZES {
        eprintln!("flowmap: {label} ({n} entries)...");
        rows.push(bench_size(label, n));
    }

    println!(
        "{:<6} {:>9} {:>12} {:>10} {:>14} {:>10} {:>9} {:>8}",
        "size", "entries", "quiet ms", "ns/entry", "all-due ms", "ns/entry", "records", "fill s"
    );
    let mut export_ms = BTreeMap::new();
    let mut export_quiet_ms = BTreeMap::new();
    let mut ns_all = BTreeMap::new();
    let mut ns_quiet = BTreeMap::new();
    let mut entries = BTreeMap::new();
    let mut records = BTreeMap::new();
    for r in &rows {
        // The all-due pass walks the refilled map, which the LRU may keep a
        // few entries short of `entries`; every entry it walks yields a record.
        let (nq, na) = (
            r.quiet_ms * 1e6 / r.entries.max(1) as f64,
            r.all_due_ms * 1e6 / r.records.max(1) as f64,
        );
        println!(
            "{:<6} {:>9} {:>12.1} {:>10.0} {:>14.1} {:>10.0} {:>9} {:>8.1}",
            r.label, r.entries, r.quiet_ms, nq, r.all_due_ms, na, r.records, r.fill_s
        );
        export_ms.insert(r.label, r.all_due_ms);
        export_quiet_ms.insert(r.label, r.quiet_ms);
        ns_all.insert(r.label, na);
        ns_quiet.insert(r.label, nq);
        entries.insert(r.label, r.entries as f64);
        records.insert(r.label, r.records as f64);
    }
    if let Some(path) = json_out {
        let j = serde_json::json!({
            "bench": "flowmap",
            "cpus": cpus(),
            "rounds": ROUNDS,
            "export_ms": export_ms,
            "export_quiet_ms": export_quiet_ms,
            "ns_per_entry_all_due": ns_all,
            "ns_per_entry_quiet": ns_quiet,
            "entries": entries,
            "records_all_due": records,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap()).expect("write JSON");
        eprintln!("wrote {path}");
    }
}
