//! The kernel's flow accounting and the userspace pcap flow meter
//! (`flow_meter::meter`, which feeds the detector's training and the capture
//! tests) must see the same flows: every frame of every capture in
//! `../shared/pcaps` goes through the XDP program (BPF_PROG_TEST_RUN) and through
//! the meter's parser plus the shared accounting rule, and the two flow tables
//! must agree key by key and counter by counter (timestamps aside: the kernel
//! stamps test runs with the real clock). Needs root.

mod kernel;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::EbpfLoader;
use flow_meter::meter::{LinkType, for_each_frame, parse_frame};
use fw_common::{
    flow::{FlowKey, FlowStats},
    maps as m,
};
use kernel::*;

fn pcaps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")
}

/// Every frame of a capture with its link type (frames of link types the meter
/// does not decode are left out).
fn frames(path: &Path) -> Vec<(LinkType, Vec<u8>)> {
    let mut out = Vec::new();
    for_each_frame(path, |fr| {
        if let Some(l) = LinkType::of(fr.linktype) {
            out.push((l, fr.data.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The frame as the XDP program would receive it: non-Ethernet captures get an
/// Ethernet header carrying the same ethertype.
fn as_ethernet(link: LinkType, frame: &[u8]) -> Option<Vec<u8>> {
    let (ethertype, l3) = match link {
        LinkType::Ethernet => return Some(frame.to_vec()),
        LinkType::LinuxSll => (frame.get(14..16)?.to_vec(), 16),
        LinkType::LinuxSll2 => (frame.get(0..2)?.to_vec(), 20),
        LinkType::RawIp => (ethertype_of(*frame.first()?), 0),
        LinkType::Loopback => (ethertype_of(*frame.get(4)?), 4),
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend(ethertype);
    f.extend_from_slice(frame.get(l3..)?);
    Some(f)
}

fn ethertype_of(first_ip_byte: u8) -> Vec<u8> {
    if first_ip_byte >> 4 == 6 {
        vec![0x86, 0xdd]
    } else {
        vec![0x08, 0x00]
    }
}

/// Counters compared between kernel and meter (all but the timestamps).
fn counts(s: &FlowStats) -> Vec<u64> {
    s.dir
        .iter()
        .flat_map(|d| {
            [
                d.packets,
                d.bytes,
                d.syn as u64,
                d.syn_ack as u64,
                d.fin as u64,
                d.rst as u64,
                d.psh as u64,
                d.ack_only as u64,
                d.urg as u64,
                d.no_flags as u64,
                d.min_len as u64,
                d.max_len as u64,
                d.tcp_flags_or as u64,
                d.icmp_type_plus1 as u64,
                d.icmp_code as u64,
            ]
        })
        .chain([s.opener as u64])
        .collect()
}

#[test]
fn kernel_and_meter_account_every_capture_identically() {
    pin_to_cpu(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(pcaps_dir())
        .expect("../shared/pcaps next to the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "captures found: {}", files.len());
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Room for the largest capture's flows (the spoofed flood has ~38k).
        let h = Harness::load_with(|l: &mut EbpfLoader<'_>| {
            l.map_max_entries(m::FLOWS, 131_072);
        });
        let mut meter: HashMap<FlowKey, FlowStats> = HashMap::new();
        let mut t = 1u64;
        for (link, frame) in frames(&path) {
            let Some(eth) = as_ethernet(link, &frame) else {
                continue;
            };
            if eth.len() < 14 {
                continue;
            }
            assert_eq!(
                h.run(&eth),
                XDP_PASS,
                "{name}: nothing is listed, everything passes"
            );
            if let Some(p) = parse_frame(link, &frame) {
                let (key, side) =
                    FlowKey::new(p.src, p.sport, p.dst, p.dport, p.proto, p.family, p.vlan_id);
                t += 1;
                meter.entry(key).or_default().account(side, &p.meta, t);
            }
        }
        let kernel: HashMap<FlowKey, FlowStats> =
            h.flows().into_iter().map(|(k, s, _)| (k, s)).collect();
        assert_eq!(kernel.len(), meter.len(), "{name}: number of flows");
        for (k, ms) in &meter {
            let ks = kernel
                .get(k)
                .unwrap_or_else(|| panic!("{name}: kernel lacks flow {k:?}"));
            assert_eq!(counts(ks), counts(ms), "{name}: flow {k:?}");
        }
    }
}
