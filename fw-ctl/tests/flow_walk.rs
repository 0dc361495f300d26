//! The daemon's walk over the kernel flow map (`Pinned::flows`, read in batches of
//! `BPF_MAP_LOOKUP_BATCH`): every flow exactly once, per-CPU copies merged, across
//! several batches and after deletions. Needs root (loads the XDP object, pins its
//! maps in a private bpffs directory).

use std::collections::HashMap;

use aya::maps::{PerCpuHashMap, PerCpuValues};
use fw_common::{
    flow::{FAMILY_V4, FlowKey, FlowStats, PacketMeta, SIDE_A, SIDE_B, v4_mapped},
    maps as m,
};
use fw_ctl::kernel::{FLOW_BATCH, Pinned};
use fw_testkit::*;

/// Flow `i`: 198.18.x.y:(1024 + i % 50000) -> 192.0.2.10:53, UDP.
fn key(i: u32) -> FlowKey {
    let c = 0xc612_0000u32 + i;
    FlowKey::new(
        v4_mapped(c.to_be_bytes()),
        1024 + (i % 50_000) as u16,
        v4_mapped([192, 0, 2, 10]),
        53,
        17,
        FAMILY_V4,
        0,
    )
    .0
}

/// The per-CPU copies of flow `i`: `1 + i % 7` requests on one CPU and, for every
/// third flow, a reply on the next CPU (a flow whose packets hit two queues).
fn copies(i: u32, ncpu: usize) -> Vec<FlowStats> {
    let mut v = vec![FlowStats::default(); ncpu];
    let meta = |len| PacketMeta {
        ip_len: len,
        ..Default::default()
    };
    let t0 = 1_000_000_000 + u64::from(i) * 1_000;
    let cpu = i as usize % ncpu;
    for j in 0..(1 + i % 7) {
        v[cpu].account(SIDE_A, &meta(60 + j as u16), t0 + u64::from(j) * 1_000_000);
    }
    if i.is_multiple_of(3) {
        v[(cpu + 1) % ncpu].account(SIDE_B, &meta(120), t0 + 500_000);
    }
    v
}

#[test]
fn walk_returns_every_flow_once_merged_across_batches() {
    let n = 2 * FLOW_BATCH as u32 + 777;
    let pins = PrivatePins::new(&format!("tadtest-flowwalk-{}", std::process::id()));
    let mut h = Harness::load_pinned(&pins, |_| {});
    let ncpu = cpus();
    let mut expected = HashMap::new();
    {
        let mut map: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(h.ebpf.map_mut(m::FLOWS).unwrap()).unwrap();
        for i in 0..n {
            let v = copies(i, ncpu);
            expected.insert(key(i), FlowStats::merge(v.iter()));
            map.insert(key(i), PerCpuValues::try_from(v).unwrap(), 0)
                .unwrap();
        }
    }
    let mut pinned = Pinned::open(&pins.0).unwrap();
    let walk = |p: &Pinned| -> HashMap<FlowKey, (FlowStats, u32)> {
        let flows = p.flows().unwrap();
        let len = flows.len();
        let by_key: HashMap<_, _> = flows
            .into_iter()
            .map(|f| (f.key, (f.stats, f.cpus_seen)))
            .collect();
        assert_eq!(by_key.len(), len, "no flow is returned twice");
        by_key
    };

    let got = walk(&pinned);
    assert_eq!(got.len(), n as usize, "every flow, over several batches");
    for (k, want) in &expected {
        assert_eq!(got.get(k), Some(want), "merged statistics of {k:?}");
    }
    if ncpu > 1 {
        assert_eq!(got[&key(0)].1, 2, "flow 0 was seen on two CPUs");
        assert_eq!(got[&key(0)].0.dir[SIDE_B as usize].packets, 1);
    }

    // Deleting every other flow: the walk returns exactly the rest.
    for i in (0..n).step_by(2) {
        assert!(pinned.remove_flow(&key(i)).unwrap());
    }
    let got = walk(&pinned);
    let want: Vec<FlowKey> = (1..n).step_by(2).map(key).collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>().len(), want.len());
    assert!(want.iter().all(|k| got.contains_key(k)));
    drop(pinned);
    drop(h);
}
