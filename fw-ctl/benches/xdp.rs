//! `cargo xtask bench xdp [--json FILE]`: nanoseconds per packet by path, measured
//! by the kernel itself through BPF_PROG_TEST_RUN (the mean over `repeat` runs of
//! the program on one frame; no syscall or copy cost included), on the real
//! object with its real maps. Runs as root; never part of the tests.
//!
//! Each path is measured [`ROUNDS`] times with `repeat` = [`REPEAT`] and the median
//! is reported, so one noisy round on a shared machine does not move the figure.
//! `pass_new_flow` cannot repeat one frame (the second run would find the flow),
//! so it runs [`NEW_FLOWS`] distinct frames once each and averages the kernel's
//! per-run times.

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::{LpmTrie, lpm_trie::Key};
use fw_common::{
    config::{FLAG_NO_FLOW_ACCOUNTING, GatewayConfig},
    filter::{AllowEntry, BlockEntry},
    flow::tcp_flags as tf,
    maps as m,
};
use fw_ctl::bench_env::machine;
use fw_testkit::*;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
const NEW_FLOWS: u32 = 50_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median ns per run of `frame`, expecting `action`.
fn measure(h: &Harness, frame: &[u8], action: u32) -> f64 {
    let (a, _) = h.run_repeat(frame, 1);
    assert_eq!(a, action, "benchmark frame takes the intended path");
    median((0..ROUNDS).map(|_| h.run_repeat(frame, REPEAT).1).collect())
}

/// Sources in the cycled cells.
const CYCLED_SOURCES: u32 = 100_000;

/// Mean ns of one run per frame, each frame run once (repeat = 1), over the
/// second of two passes (the first warms what can be warmed), median of rounds.
fn measure_cycled(h: &Harness, frames: &[Vec<u8>]) -> f64 {
    let pass = || {
        let mut total = 0.0;
        for f in frames {
            let (a, ns) = h.run_repeat(f, 1);
            assert_eq!(a, XDP_DROP, "every cycled frame is dropped");
            total += ns;
        }
        total / frames.len() as f64
    };
    pass();
    median((0..3).map(|_| pass()).collect())
}

/// Fills the IPv4 blocklist with `n` prefixes of mixed lengths (/16 to /32) from
/// 10.0.0.0/8 and 172.16.0.0/12, none covering the benchmark's sources.
fn fill_blocklist(h: &mut Harness, n: u32) {
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..n {
        // xorshift32: spread prefixes over the trie, deterministic per run.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = [32, 32, 24, 28, 20, 16][(i % 6) as usize];
        let base: u32 = if i % 2 == 0 {
            0x0a00_0000 | (x & 0x00ff_ffff)
        } else {
            0xac10_0000 | (x & 0x000f_ffff)
        };
        let addr = Ipv4Addr::from(base & (u32::MAX << (32 - len)));
        h.block_prefix(addr.into(), len, BlockEntry::default());
    }
}

fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    pin_to_cpu(0);
    let mut r: BTreeMap<&str, f64> = BTreeMap::new();
    let existing = v4_tcp("192.0.2.20", "198.51.100.5", 51000, 1883, tf::ACK, 64);
    // Blocked as a single address (host map) and by a /24 (LPM trie).
    let blocked = v4_tcp("198.51.100.66", "192.0.2.10", 40000, 80, tf::SYN, 0);
    let blocked_by_prefix = v4_tcp("198.51.101.66", "192.0.2.10", 40000, 80, tf::SYN, 0);
    let allowed = v4_tcp("203.0.113.7", "192.0.2.10", 40000, 22, tf::ACK, 0);

    // Fresh program, nothing in the lists.
    let mut h = Harness::load();
    {
        let mut total = 0.0;
        for i in 0..NEW_FLOWS {
            let f = v4_tcp(
                "192.0.2.30",
                "198.51.100.5",
                1024 + (i % 60000) as u16,
                443 + (i / 60000) as u16,
                tf::SYN,
                0,
            );
            let (a, ns) = h.run_repeat(&f, 1);
            assert_eq!(a, XDP_PASS);
            total += ns;
        }
        r.insert("pass_new_flow", total / NEW_FLOWS as f64);
    }
    r.insert("pass_existing_flow", measure(&h, &existing, XDP_PASS));
    // The same packet with flow accounting off: what the flow update costs.
    h.set_config(GatewayConfig {
        flags: FLAG_NO_FLOW_ACCOUNTING,
        ..Default::default()
    });
    r.insert("pass_no_flow_accounting", measure(&h, &existing, XDP_PASS));
    h.set_config(GatewayConfig::default());
    h.block("198.51.100.66/32", BlockEntry::default());
    r.insert("drop_blocklist", measure(&h, &blocked, XDP_DROP));
    h.block("198.51.101.0/24", BlockEntry::default());
    r.insert(
        "drop_blocklist_prefix",
        measure(&h, &blocked_by_prefix, XDP_DROP),
    );
    {
        let mut t: LpmTrie<_, [u8; 4], AllowEntry> =
            LpmTrie::try_from(h.ebpf.map_mut(m::ALLOW_V4).unwrap()).unwrap();
        t.insert(&Key::new(24, [203, 0, 113, 0]), AllowEntry::default(), 0)
            .unwrap();
    }
    r.insert("pass_allowlist", measure(&h, &allowed, XDP_PASS));
    h.set_config(GatewayConfig {
        syn_rate_pps: 1,
        syn_burst: 1,
        ..Default::default()
    });
    let syn = v4_tcp("192.0.2.99", "198.51.100.5", 40000, 80, tf::SYN, 0);
    h.run(&syn); // uses the one-packet burst
    r.insert("drop_ratelimit", measure(&h, &syn, XDP_DROP));

    for (n, drop_key, prefix_key, pass_key) in [
        (
            10_000,
            "drop_blocklist_10k_prefixes",
            "drop_blocklist_prefix_10k_prefixes",
            None,
        ),
        (
            1_000_000,
            "drop_blocklist_1m_prefixes",
            "drop_blocklist_prefix_1m_prefixes",
            Some("pass_existing_flow_1m_prefixes"),
        ),
    ] {
        // A third of the list are /32s: room for them in the host map.
        let mut h = Harness::load_with(|l| {
            l.map_max_entries(m::BLOCK_HOST_V4, 1 << 20);
        });
        eprintln!("filling the blocklist with {n} prefixes");
        fill_blocklist(&mut h, n);
        h.block("198.51.100.66/32", BlockEntry::default());
        h.block("198.51.101.0/24", BlockEntry::default());
        r.insert(drop_key, measure(&h, &blocked, XDP_DROP));
        r.insert(prefix_key, measure(&h, &blocked_by_prefix, XDP_DROP));
        if let Some(k) = pass_key {
            h.run(&existing);
            r.insert(k, measure(&h, &existing, XDP_PASS));
        }
    }

    // Many sources: every frame from a different blocked address, each run once
    // (repeat = 1, so each figure includes the kernel's per-call timing overhead,
    // the same in every cell): what a large hot blocklist costs in the program
    // when the traffic does not keep one entry in cache.
    {
        let sources: Vec<Ipv4Addr> = (0..CYCLED_SOURCES)
            .map(|i| Ipv4Addr::from(0xc612_0000u32 + i)) // 198.18.0.0/15
            .collect();
        let frames: Vec<Vec<u8>> = sources
            .iter()
            .map(|a| v4_tcp(&a.to_string(), "192.0.2.10", 40000, 80, tf::SYN, 0))
            .collect();
        let one = vec![frames[0].clone(); frames.len()];
        let mut h = Harness::load();
        h.block_prefix(sources[0].into(), 32, BlockEntry::default());
        r.insert("drop_cycled_1_source", measure_cycled(&h, &one));
        for a in &sources[1..] {
            h.block_prefix((*a).into(), 32, BlockEntry::default());
        }
        r.insert("drop_cycled_100k_sources", measure_cycled(&h, &frames));
        // The same list as /32s in the LPM trie (this program before the host
        // maps): for comparison.
        let mut h = Harness::load();
        {
            let mut t: LpmTrie<_, [u8; 4], BlockEntry> =
                LpmTrie::try_from(h.ebpf.map_mut(m::BLOCK_V4).unwrap()).unwrap();
            for a in &sources {
                t.insert(&Key::new(32, a.octets()), BlockEntry::default(), 0)
                    .unwrap();
            }
        }
        r.insert("drop_cycled_1_source_trie", measure_cycled(&h, &one));
        r.insert("drop_cycled_100k_sources_trie", measure_cycled(&h, &frames));
    }

    println!("XDP program, ns per packet (BPF_PROG_TEST_RUN, median of {ROUNDS} x {REPEAT} runs)");
    println!("{:<34} {:>8}", "path", "ns/pkt");
    for (k, v) in &r {
        println!("{k:<34} {v:>8.1}");
    }
    let ratio = r["drop_blocklist_1m_prefixes"] / r["drop_blocklist"];
    let ratio_prefix = r["drop_blocklist_prefix_1m_prefixes"] / r["drop_blocklist_prefix"];
    println!("1M prefixes / 1 prefix (drop, single address): {ratio:.2}x (target <= 1.5x)");
    println!("1M prefixes / 1 prefix (drop, /24 in the trie): {ratio_prefix:.2}x");
    println!(
        "targets: drop <= 20 ns ({:.1}), pass with flow update <= 60 ns ({:.1})",
        r["drop_blocklist"], r["pass_existing_flow"]
    );
    let doc = serde_json::json!({
        "ns_per_pkt": r,
        "drop_1m_over_1_prefix": ratio,
        "drop_prefix_1m_over_1_prefix": ratio_prefix,
        "repeat": REPEAT,
        "rounds": ROUNDS,
        "machine": machine(),
    });
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap())
            .expect("write the JSON result");
        println!("wrote {path}");
    }
}
