//! The kernel's flow accounting and the userspace pcap flow meter
//! (`flow_meter::meter`, which feeds the detector's training and the capture
//! tests) must see the same flows: every frame of every capture in
//! `../shared/pcaps` goes through the XDP program (BPF_PROG_TEST_RUN) and through
//! the meter's parser plus the shared accounting rule, and the two flow tables
//! must agree key by key and counter by counter (timestamps aside: the kernel
//! stamps test runs with the real clock). Crafted frames add the header chains the
//! captures lack (IPv6 AH, fragments, headers cut short), where the two parsers
//! once differed. Needs root.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::EbpfLoader;
use flow_meter::meter::{LinkType, for_each_frame, parse_frame};
use fw_common::{
    flow::{FlowKey, FlowStats, tcp_flags},
    maps as m,
    proto::{
        ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_TCP,
        IPPROTO_UDP,
    },
};
use fw_testkit::*;

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

/// Authentication Header (RFC 4302) with a 12-octet ICV (HMAC-SHA1-96): 24
/// octets, so Payload Len = 24 / 4 - 2 = 4 (the 8-octet rule would read 40).
fn ah(next: u8) -> Vec<u8> {
    let mut a = vec![next, 4, 0, 0, 0x00, 0x00, 0x10, 0x01, 0, 0, 0, 1];
    a.resize(24, 0xa5);
    a
}

/// Flow keys with their compared counters ([`counts`]).
type Flows = Vec<(FlowKey, Vec<u64>)>;
/// A crafted frame: (case, frame, the one flow's (proto, lower port, higher
/// port), or `None` when no flow opens at all).
type Case = (&'static str, Vec<u8>, Option<(u8, u16, u16)>);

/// The flows one frame opens, in the kernel (fresh program, BPF_PROG_TEST_RUN) and
/// in the meter (its parser + the shared accounting rule), keys with counters.
fn both(frame: &[u8]) -> (Flows, Flows) {
    let h = Harness::load();
    assert_eq!(
        h.run(frame),
        XDP_PASS,
        "nothing is listed, everything passes"
    );
    let kernel = h.flows().iter().map(|(k, s, _)| (*k, counts(s))).collect();
    let meter = parse_frame(LinkType::Ethernet, frame)
        .map(|p| {
            let (key, side) =
                FlowKey::new(p.src, p.sport, p.dst, p.dport, p.proto, p.family, p.vlan_id);
            let mut s = FlowStats::default();
            s.account(side, &p.meta, 1);
            (key, counts(&s))
        })
        .into_iter()
        .collect();
    (kernel, meter)
}

#[test]
fn crafted_header_chains_get_the_same_flow_key() {
    pin_to_cpu(0);
    let src = "2001:db8:1::10".parse().unwrap();
    let dst = "2001:db8:2::20".parse().unwrap();
    let padn = vec![1, 4, 0, 0, 0, 0];
    let v6 = |first: u8, ext: &[(u8, Vec<u8>)], payload: &[u8]| {
        let mut f = eth(&[], ETH_P_IPV6);
        f.extend(ipv6(src, dst, first, ext, payload));
        f
    };
    let syn = tcp(40000, 443, tcp_flags::SYN, 0);
    let ah_tcp: Vec<u8> = ah(IPPROTO_TCP).into_iter().chain(syn.clone()).collect();
    let ah_udp: Vec<u8> = ah(IPPROTO_UDP)
        .into_iter()
        .chain(udp(5353, 53, 12))
        .collect();
    // Six headers (the bound), AH among them, then TCP.
    let five: Vec<(u8, Vec<u8>)> = (0..5).map(|_| (IPPROTO_DSTOPTS, padn.clone())).collect();
    let mut vlan_ah = eth(&[(TPID_8021Q, 10)], ETH_P_IPV6);
    vlan_ah.extend(ipv6(src, dst, IPPROTO_AH, &[], &ah_udp));
    // A non-first fragment whose payload looks like destination options + TCP.
    let frag_payload: Vec<u8> = [IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0]
        .into_iter()
        .chain(syn.clone())
        .collect();
    let mut hop_cut = v6(IPPROTO_TCP, &[(IPPROTO_HOPOPTS, padn.clone())], &syn);
    hop_cut.truncate(14 + 40 + 1);
    let mut v4_opts_cut = eth(&[], ETH_P_IP);
    v4_opts_cut.extend(ipv4(
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        IPPROTO_TCP,
        2,
        0,
        &syn,
    ));
    v4_opts_cut.truncate(14 + 20 + 4);

    let cases: Vec<Case> = vec![
        (
            "AH, TCP",
            v6(IPPROTO_AH, &[], &ah_tcp),
            Some((IPPROTO_TCP, 443, 40000)),
        ),
        (
            "hop-by-hop, AH, TCP",
            v6(IPPROTO_AH, &[(IPPROTO_HOPOPTS, padn.clone())], &ah_tcp),
            Some((IPPROTO_TCP, 443, 40000)),
        ),
        ("802.1Q, AH, UDP", vlan_ah, Some((IPPROTO_UDP, 53, 5353))),
        (
            "five destination options, AH (six headers), TCP",
            v6(IPPROTO_AH, &five, &ah_tcp),
            Some((IPPROTO_TCP, 443, 40000)),
        ),
        (
            "six destination options, AH (seven headers): past the bound",
            v6(
                IPPROTO_AH,
                &[five.clone(), vec![(IPPROTO_DSTOPTS, padn.clone())]].concat(),
                &ah_tcp,
            ),
            Some((IPPROTO_AH, 0, 0)),
        ),
        (
            "non-first fragment, next header destination options",
            v6(IPPROTO_DSTOPTS, &[(44, frag6(10, false))], &frag_payload),
            Some((IPPROTO_DSTOPTS, 0, 0)),
        ),
        (
            "hop-by-hop header cut after one octet",
            hop_cut,
            Some((IPPROTO_HOPOPTS, 0, 0)),
        ),
        ("IPv4 options cut short (malformed)", v4_opts_cut, None),
    ];
    for (name, frame, want) in cases {
        let (kernel, meter) = both(&frame);
        assert_eq!(kernel, meter, "{name}: kernel and meter flows");
        let got = kernel
            .first()
            .map(|(k, _)| (k.proto, k.port_a.min(k.port_b), k.port_a.max(k.port_b)));
        assert_eq!(got, want, "{name}: the flow found");
        assert!(kernel.len() <= 1, "{name}: one frame, at most one flow");
    }
}
