//! Verdict table of the XDP program, executed by the kernel through
//! BPF_PROG_TEST_RUN with crafted frames (needs root). Every path of the program:
//! parsing variants, allowlist, blocklist (host maps and tries) with expiry, observe vs enforce, rate
//! limits at and one past their burst, truncation at every offset, the exact
//! flow entry of a scripted TCP conversation, and the provisional quarantine of a
//! scanning source (only its new flows dropped; allowlist, observe mode, IPv6).

use fw_common::{
    config::{
        DEFAULT_QUARANTINE_DISTINCT, DEFAULT_QUARANTINE_TTL_MS, DEFAULT_REPORT_DISTINCT,
        FLAG_NO_FLOW_ACCOUNTING, GatewayConfig, MODE_OBSERVE,
    },
    counters::CounterSlot,
    filter::{BLOCK_FLAG_NEW_FLOWS_ONLY, BlockEntry, BlockReason, ORIGIN_DATAPATH, ORIGIN_MANUAL},
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, SIDE_A, SIDE_B, tcp_flags as tf, v4_mapped},
};
use fw_testkit::*;

const ATTACKER4: &str = "198.51.100.66";
const VICTIM4: &str = "192.0.2.10";
const ATTACKER6: &str = "2001:db8:66::1";
const VICTIM6: &str = "2001:db8:10::1";

fn permanent() -> BlockEntry {
    BlockEntry {
        reason: 1,
        origin: ORIGIN_MANUAL,
        ..Default::default()
    }
}

/// Every way of wrapping one TCP SYN from `src`: VLAN tags and IP versions.
fn variants(src4: &str, src6: &str) -> Vec<(&'static str, Vec<u8>)> {
    let seg = tcp(40000, 80, tf::SYN, 0);
    let v4 = ipv4(
        src4.parse().unwrap(),
        VICTIM4.parse().unwrap(),
        6,
        0,
        0,
        &seg,
    );
    let v6 = ipv6(
        src6.parse().unwrap(),
        VICTIM6.parse().unwrap(),
        6,
        &[],
        &seg,
    );
    type Tags = Vec<(u16, u16)>;
    let tags: [(&str, &str, Tags); 3] = [
        ("v4 untagged", "v6 untagged", vec![]),
        ("v4 802.1Q", "v6 802.1Q", vec![(TPID_8021Q, 10)]),
        (
            "v4 802.1ad+802.1Q",
            "v6 802.1ad+802.1Q",
            vec![(TPID_8021AD, 100), (TPID_8021Q, 10)],
        ),
    ];
    let mut out = Vec::new();
    for (n4, n6, t) in tags {
        let mut f = eth(&t, 0x0800);
        f.extend(&v4);
        out.push((n4, f));
        let mut f = eth(&t, 0x86dd);
        f.extend(&v6);
        out.push((n6, f));
    }
    out
}

#[test]
fn unmatched_sources_pass_and_are_counted() {
    let h = Harness::load();
    for (name, frame) in variants(ATTACKER4, ATTACKER6) {
        assert_eq!(h.run(&frame), XDP_PASS, "{name}");
    }
    let c = h.counter(CounterSlot::PassNoMatch);
    assert_eq!(c.packets, 6);
    let total_bytes: usize = variants(ATTACKER4, ATTACKER6)
        .iter()
        .map(|(_, f)| f.len())
        .sum();
    assert_eq!(c.bytes, total_bytes as u64, "bytes are frame lengths");
}

#[test]
fn blocked_sources_are_dropped_in_every_encapsulation() {
    let mut h = Harness::load();
    h.block("198.51.100.0/24", permanent());
    h.block("2001:db8:66::/48", permanent());
    for (name, frame) in variants(ATTACKER4, ATTACKER6) {
        assert_eq!(h.run(&frame), XDP_DROP, "{name}");
    }
    // Neighbours outside the prefixes pass.
    for (name, frame) in variants("198.51.101.1", "2001:db8:67::1") {
        assert_eq!(h.run(&frame), XDP_PASS, "{name} outside the prefix");
    }
    assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 6);
    assert_eq!(
        h.block_entry("198.51.100.0/24").hits,
        3,
        "hits counted per entry"
    );
    assert_eq!(h.block_entry("2001:db8:66::/48").hits, 3);
    assert!(
        h.accounted_flows()
            .iter()
            .all(|(k, ..)| k.addr_a != v4_mapped([198, 51, 100, 66])
                && k.addr_b != v4_mapped([198, 51, 100, 66])),
        "dropped packets open no flow"
    );
}

#[test]
fn single_addresses_match_before_covering_prefixes() {
    let mut h = Harness::load();
    // Host entries (exact-match maps) and prefixes covering them (LPM tries).
    h.block("198.51.100.66/32", permanent());
    h.block("2001:db8:66::1/128", permanent());
    h.block("198.51.100.0/24", permanent());
    h.block("2001:db8:66::/48", permanent());
    for (name, frame) in variants(ATTACKER4, ATTACKER6) {
        assert_eq!(h.run(&frame), XDP_DROP, "{name}");
    }
    assert_eq!(
        h.block_entry("198.51.100.66/32").hits,
        3,
        "the host entry is the longest match"
    );
    assert_eq!(h.block_entry("2001:db8:66::1/128").hits, 3);
    assert_eq!(h.block_entry("198.51.100.0/24").hits, 0);
    assert_eq!(h.block_entry("2001:db8:66::/48").hits, 0);

    // An expired host entry counts as absent: the covering prefix decides.
    let expired = BlockEntry {
        expires_ns: monotonic_ns() - 1,
        ..permanent()
    };
    h.block("198.51.100.66/32", expired);
    h.block("2001:db8:66::1/128", expired);
    for (name, frame) in variants(ATTACKER4, ATTACKER6) {
        assert_eq!(h.run(&frame), XDP_DROP, "{name}, host entry expired");
    }
    assert_eq!(h.block_entry("198.51.100.0/24").hits, 3);
    assert_eq!(h.block_entry("2001:db8:66::/48").hits, 3);
    assert_eq!(h.block_entry("198.51.100.66/32").hits, 0);

    // An expired host entry with nothing covering it passes.
    h.block("203.0.113.9/32", expired);
    h.block("2001:db8:99::9/128", expired);
    for (name, frame) in variants("203.0.113.9", "2001:db8:99::9") {
        assert_eq!(h.run(&frame), XDP_PASS, "{name}, only an expired entry");
    }
    assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 12);
}

#[test]
fn longest_prefix_decides_nothing_allowlist_always_wins() {
    let mut h = Harness::load();
    h.block("198.51.100.66/32", permanent());
    h.allow("198.51.100.0/24");
    h.block("2001:db8:66::1/128", permanent());
    h.allow("2001:db8::/32");
    for (name, frame) in variants(ATTACKER4, ATTACKER6) {
        assert_eq!(h.run(&frame), XDP_PASS, "{name}");
    }
    assert_eq!(h.counter(CounterSlot::PassAllowlist).packets, 6);
    assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 0);
    assert_eq!(h.block_entry("198.51.100.66/32").hits, 0);
}

#[test]
fn observe_mode_counts_would_drop_and_passes() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        mode: MODE_OBSERVE,
        ..Default::default()
    });
    h.block("198.51.100.0/24", permanent());
    let f = v4_tcp(ATTACKER4, VICTIM4, 40000, 80, tf::SYN, 0);
    assert_eq!(h.run(&f), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::WouldDropBlocklist).packets, 1);
    assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 0);
    assert_eq!(
        h.accounted_flows().len(),
        1,
        "observed traffic is still accounted"
    );
    // Back to enforce: the same entry now drops.
    h.set_config(GatewayConfig::default());
    assert_eq!(h.run(&f), XDP_DROP);
}

#[test]
fn expired_entries_count_as_absent() {
    let mut h = Harness::load();
    let now = monotonic_ns();
    h.block(
        "198.51.100.66/32",
        BlockEntry {
            expires_ns: now - 1,
            ..permanent()
        },
    );
    h.block(
        "198.51.100.67/32",
        BlockEntry {
            expires_ns: now + 3_600_000_000_000,
            ..permanent()
        },
    );
    h.block("198.51.100.68/32", permanent());
    assert_eq!(
        h.run(&v4_tcp("198.51.100.66", VICTIM4, 1, 80, tf::SYN, 0)),
        XDP_PASS,
        "expired"
    );
    assert_eq!(
        h.run(&v4_tcp("198.51.100.67", VICTIM4, 1, 80, tf::SYN, 0)),
        XDP_DROP,
        "expires in 1 h"
    );
    assert_eq!(
        h.run(&v4_tcp("198.51.100.68", VICTIM4, 1, 80, tf::SYN, 0)),
        XDP_DROP,
        "permanent"
    );
    assert_eq!(h.counter(CounterSlot::PassNoMatch).packets, 1);
}

#[test]
fn ipv4_options_and_fragments() {
    let mut h = Harness::load();
    let src = "198.51.100.66".parse().unwrap();
    let dst = VICTIM4.parse().unwrap();
    // Maximum options (IHL 15): ports are read after them.
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(src, dst, 6, 10, 0, &tcp(40001, 8080, tf::SYN, 0)));
    assert_eq!(h.run(&f), XDP_PASS);
    // First fragment (MF set, offset 0) carries the ports.
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(src, dst, 17, 0, 0x2000, &udp(5353, 53, 100)));
    assert_eq!(h.run(&f), XDP_PASS);
    // A non-first fragment: its bytes are payload, not ports.
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(src, dst, 17, 0, 185, &udp(1111, 2222, 40)));
    assert_eq!(h.run(&f), XDP_PASS);
    let mut ports: Vec<(u8, u16, u16)> = h
        .accounted_flows()
        .iter()
        .map(|(k, ..)| (k.proto, k.port_a.min(k.port_b), k.port_a.max(k.port_b)))
        .collect();
    ports.sort();
    assert_eq!(ports, vec![(6, 8080, 40001), (17, 0, 0), (17, 53, 5353)]);
    // Fragments of a blocked source are dropped too.
    h.block("198.51.100.66/32", permanent());
    assert_eq!(h.run(&f), XDP_DROP);
}

#[test]
fn ipv6_extension_headers() {
    let mut h = Harness::load();
    let src = ATTACKER6.parse().unwrap();
    let dst = VICTIM6.parse().unwrap();
    let opts = vec![1, 4, 0, 0, 0, 0]; // PadN
    // Hop-by-hop, routing, destination options and a first fragment, then TCP.
    let ext = vec![
        (0u8, opts.clone()),
        (43, vec![0, 0, 0, 0, 0, 0]),
        (60, opts.clone()),
        (44, frag6(0, true)),
    ];
    let mut f = eth(&[], 0x86dd);
    f.extend(ipv6(src, dst, 6, &ext, &tcp(40002, 443, tf::SYN, 0)));
    assert_eq!(h.run(&f), XDP_PASS);
    // Non-first fragment: no ports.
    let mut f = eth(&[], 0x86dd);
    f.extend(ipv6(
        src,
        dst,
        17,
        &[(44, frag6(10, false))],
        &udp(7, 9, 16),
    ));
    assert_eq!(h.run(&f), XDP_PASS);
    // More extension headers than the bound: no ports, but still filtered.
    let many: Vec<(u8, Vec<u8>)> = (0..7).map(|_| (60u8, opts.clone())).collect();
    let mut deep = eth(&[], 0x86dd);
    deep.extend(ipv6(src, dst, 6, &many, &tcp(40003, 22, tf::SYN, 0)));
    assert_eq!(h.run(&deep), XDP_PASS);
    let mut seen: Vec<(u8, u16, u16)> = h
        .accounted_flows()
        .iter()
        .map(|(k, ..)| (k.proto, k.port_a.min(k.port_b), k.port_a.max(k.port_b)))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(6, 443, 40002), (17, 0, 0), (60, 0, 0)]);
    assert!(
        h.accounted_flows()
            .iter()
            .all(|(k, ..)| k.family == FAMILY_V6)
    );
    h.block("2001:db8:66::/64", permanent());
    assert_eq!(
        h.run(&deep),
        XDP_DROP,
        "header chains cannot smuggle a blocked source"
    );
}

/// Truncates a frame at every offset from the Ethernet header's end: while the
/// L2/L3 headers are incomplete the frame passes as malformed; from the end of the
/// IP header on, the (blocked) source is dropped whatever is missing after it.
#[test]
fn truncation_at_every_offset() {
    let v4_ip_end = 14 + 8 + 24; // two tags, IPv4 with one option word
    let mut v4 = eth(&[(TPID_8021AD, 100), (TPID_8021Q, 10)], 0x0800);
    v4.extend(ipv4(
        ATTACKER4.parse().unwrap(),
        VICTIM4.parse().unwrap(),
        6,
        1,
        0,
        &tcp(1, 2, tf::SYN, 0),
    ));
    let v6_ip_end = 14 + 4 + 40 + 8; // one tag, IPv6, hop-by-hop (8)
    let mut v6 = eth(&[(TPID_8021Q, 10)], 0x86dd);
    v6.extend(ipv6(
        ATTACKER6.parse().unwrap(),
        VICTIM6.parse().unwrap(),
        6,
        &[(0, vec![1, 4, 0, 0, 0, 0])],
        &tcp(1, 2, tf::SYN, 0),
    ));

    for (name, frame, ip_end) in [("v4", &v4, v4_ip_end), ("v6", &v6, v6_ip_end - 8)] {
        let mut h = Harness::load();
        h.block("198.51.100.0/24", permanent());
        h.block("2001:db8:66::/48", permanent());
        // BPF_PROG_TEST_RUN needs at least an Ethernet header's worth of data.
        for cut in 14..=frame.len() {
            let before = h.counter(CounterSlot::PassMalformed).packets;
            let action = h.run(&frame[..cut]);
            if cut < ip_end {
                assert_eq!(action, XDP_PASS, "{name} cut at {cut}");
                assert_eq!(
                    h.counter(CounterSlot::PassMalformed).packets,
                    before + 1,
                    "{name} cut at {cut} counted malformed"
                );
            } else {
                assert_eq!(
                    action, XDP_DROP,
                    "{name} cut at {cut}: source is known, so it is filtered"
                );
            }
        }
        let total: u64 = h.all_counters().iter().sum();
        assert_eq!(
            total,
            (frame.len() - 13) as u64,
            "{name}: every run counted exactly once"
        );
    }
}

#[test]
fn non_ip_frames_pass_as_non_ip() {
    let h = Harness::load();
    let mut arp = eth(&[(TPID_8021Q, 5)], 0x0806);
    arp.extend([0u8; 28]);
    assert_eq!(h.run(&arp), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::PassNonIp).packets, 1);
    // Wrong IP version nibble under an IPv4 ethertype.
    let mut bad = v4_tcp(ATTACKER4, VICTIM4, 1, 2, tf::SYN, 0);
    bad[14] = 0x65;
    assert_eq!(h.run(&bad), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::PassMalformed).packets, 1);
}

#[test]
fn syn_rate_limit_exactly_at_and_one_past_burst() {
    pin_to_cpu(0);
    let mut h = Harness::load();
    // 1 SYN/s with a burst of 5: the first 5 back-to-back SYNs conform.
    h.set_config(GatewayConfig {
        syn_rate_pps: 1,
        syn_burst: 5,
        ..Default::default()
    });
    let syn = v4_tcp(ATTACKER4, VICTIM4, 40000, 80, tf::SYN, 0);
    for i in 1..=5 {
        assert_eq!(h.run(&syn), XDP_PASS, "SYN {i} is within the burst");
    }
    assert_eq!(h.run(&syn), XDP_DROP, "SYN 6 is one past the burst");
    assert_eq!(h.counter(CounterSlot::DropSynRate).packets, 1);
    // Non-SYN segments and other sources are not limited by the SYN bucket.
    let ack = v4_tcp(ATTACKER4, VICTIM4, 40000, 80, tf::ACK, 0);
    assert_eq!(h.run(&ack), XDP_PASS);
    let synack = v4_tcp(ATTACKER4, VICTIM4, 40000, 80, tf::SYN | tf::ACK, 0);
    assert_eq!(h.run(&synack), XDP_PASS, "SYN-ACK is not a SYN without ACK");
    assert_eq!(
        h.run(&v4_tcp("198.51.100.67", VICTIM4, 40000, 80, tf::SYN, 0)),
        XDP_PASS
    );
    // Observe mode: would-drop, passed.
    h.set_config(GatewayConfig {
        mode: MODE_OBSERVE,
        syn_rate_pps: 1,
        syn_burst: 5,
        ..Default::default()
    });
    assert_eq!(h.run(&syn), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::WouldDropSynRate).packets, 1);
}

#[test]
fn packet_rate_limit_exactly_at_and_one_past_burst() {
    pin_to_cpu(0);
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        pkt_rate_pps: 1,
        pkt_burst: 3,
        ..Default::default()
    });
    let mut udp_frame = eth(&[], 0x86dd);
    udp_frame.extend(ipv6(
        ATTACKER6.parse().unwrap(),
        VICTIM6.parse().unwrap(),
        17,
        &[],
        &udp(5000, 5683, 20),
    ));
    for i in 1..=3 {
        assert_eq!(h.run(&udp_frame), XDP_PASS, "packet {i} within the burst");
    }
    assert_eq!(
        h.run(&udp_frame),
        XDP_DROP,
        "packet 4 is one past the burst"
    );
    assert_eq!(h.counter(CounterSlot::DropPktRate).packets, 1);
    // Rates of 0 switch the limits off.
    h.set_config(GatewayConfig::default());
    assert_eq!(h.run(&udp_frame), XDP_PASS);
}

#[test]
fn flow_entry_after_a_scripted_tcp_conversation() {
    pin_to_cpu(0);
    let h = Harness::load();
    let (c, s) = ("192.0.2.20", "198.51.100.5");
    // (from client?, flags, payload bytes)
    let script: [(bool, u8, usize); 9] = [
        (true, tf::SYN, 0),
        (false, tf::SYN | tf::ACK, 0),
        (true, tf::ACK, 0),
        (true, tf::PSH | tf::ACK, 100),
        (false, tf::ACK, 0),
        (false, tf::PSH | tf::ACK, 200),
        (true, tf::FIN | tf::ACK, 0),
        (false, tf::FIN | tf::ACK, 0),
        (true, tf::ACK, 0),
    ];
    let t0 = monotonic_ns();
    for (from_client, flags, len) in script {
        let f = if from_client {
            v4_tcp(c, s, 51000, 1883, flags, len)
        } else {
            v4_tcp(s, c, 1883, 51000, flags, len)
        };
        assert_eq!(h.run(&f), XDP_PASS);
    }
    let t1 = monotonic_ns();
    let flows = h.accounted_flows();
    assert_eq!(flows.len(), 1, "both directions share one entry");
    let (key, st, cpus_seen) = &flows[0];
    let (expect_key, client_side) = FlowKey::new(
        v4_mapped([192, 0, 2, 20]),
        51000,
        v4_mapped([198, 51, 100, 5]),
        1883,
        6,
        FAMILY_V4,
        0,
    );
    assert_eq!(*key, expect_key);
    assert_eq!(client_side, SIDE_A, "192.0.2.20 sorts below 198.51.100.5");
    assert_eq!(st.opener, SIDE_A, "the client opened the flow");
    let cl = &st.dir[SIDE_A as usize];
    let sv = &st.dir[SIDE_B as usize];
    assert_eq!((cl.packets, cl.bytes), (5, 4 * 40 + 140));
    assert_eq!((sv.packets, sv.bytes), (4, 3 * 40 + 240));
    assert_eq!(
        (
            cl.syn,
            cl.syn_ack,
            cl.fin,
            cl.rst,
            cl.psh,
            cl.ack_only,
            cl.urg,
            cl.no_flags
        ),
        (1, 0, 1, 0, 1, 2, 0, 0)
    );
    assert_eq!(
        (
            sv.syn,
            sv.syn_ack,
            sv.fin,
            sv.rst,
            sv.psh,
            sv.ack_only,
            sv.urg,
            sv.no_flags
        ),
        (0, 1, 1, 0, 1, 1, 0, 0)
    );
    assert_eq!((cl.min_len, cl.max_len), (40, 140));
    assert_eq!((sv.min_len, sv.max_len), (40, 240));
    assert_eq!(cl.tcp_flags_or, tf::SYN | tf::ACK | tf::PSH | tf::FIN);
    assert!(t0 <= st.first_seen_ns && st.first_seen_ns < st.last_seen_ns && st.last_seen_ns <= t1);
    assert_eq!(*cpus_seen, 1, "the test thread is pinned to one CPU");
    assert_eq!(
        st.iat_sum_ns,
        st.last_seen_ns - st.first_seen_ns,
        "gaps add up to the duration"
    );
}

#[test]
fn flow_accounting_can_be_switched_off() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        flags: FLAG_NO_FLOW_ACCOUNTING,
        ..Default::default()
    });
    assert_eq!(
        h.run(&v4_tcp(ATTACKER4, VICTIM4, 1, 2, tf::SYN, 0)),
        XDP_PASS
    );
    assert!(h.accounted_flows().is_empty());
}

#[test]
fn icmp_type_is_recorded_per_direction() {
    let h = Harness::load();
    let mut req = eth(&[], 0x0800);
    req.extend(ipv4(
        "192.0.2.20".parse().unwrap(),
        "198.51.100.5".parse().unwrap(),
        1,
        0,
        0,
        &icmp(8, 0),
    ));
    let mut rep = eth(&[], 0x0800);
    rep.extend(ipv4(
        "198.51.100.5".parse().unwrap(),
        "192.0.2.20".parse().unwrap(),
        1,
        0,
        0,
        &icmp(0, 0),
    ));
    h.run(&req);
    h.run(&rep);
    let flows = h.accounted_flows();
    assert_eq!(flows.len(), 1);
    let st = &flows[0].1;
    assert_eq!(
        st.dir[SIDE_A as usize].icmp_type_plus1, 9,
        "echo request from 192.0.2.20"
    );
    assert_eq!(st.dir[SIDE_B as usize].icmp_type_plus1, 1, "echo reply");
}

/// The shipped evidence thresholds (what `gateway.toml` defaults to).
fn quarantine_on() -> GatewayConfig {
    GatewayConfig {
        quarantine_distinct: DEFAULT_QUARANTINE_DISTINCT,
        quarantine_ttl_ms: DEFAULT_QUARANTINE_TTL_MS,
        report_distinct: DEFAULT_REPORT_DISTINCT,
        ..Default::default()
    }
}

/// A TCP connection `src:sport -> dst:22` carried through the handshake, so the
/// flow is established (both directions seen).
fn established(h: &Harness, src: &str, dst: &str, v6: bool, sport: u16) -> Vec<u8> {
    let f = |a: &str, b: &str, sp, dp, fl| {
        if v6 {
            v6_tcp(a, b, sp, dp, fl, 0)
        } else {
            v4_tcp(a, b, sp, dp, fl, 0)
        }
    };
    assert_eq!(h.run(&f(src, dst, sport, 22, tf::SYN)), XDP_PASS);
    assert_eq!(h.run(&f(dst, src, 22, sport, tf::SYN | tf::ACK)), XDP_PASS);
    let ack = f(src, dst, sport, 22, tf::ACK);
    assert_eq!(h.run(&ack), XDP_PASS);
    ack
}

/// Runs a SYN scan of `ports` from `src` to `dst`, each probe answered by a RST
/// (closed ports) when it passes; returns the verdict of each probe.
fn syn_scan(
    h: &Harness,
    src: &str,
    dst: &str,
    v6: bool,
    ports: std::ops::RangeInclusive<u16>,
) -> Vec<u32> {
    ports
        .map(|port| {
            let (probe, rst) = if v6 {
                (
                    v6_tcp(src, dst, 50000, port, tf::SYN, 0),
                    v6_tcp(dst, src, port, 50000, tf::RST | tf::ACK, 0),
                )
            } else {
                (
                    v4_tcp(src, dst, 50000, port, tf::SYN, 0),
                    v4_tcp(dst, src, port, 50000, tf::RST | tf::ACK, 0),
                )
            };
            let v = h.run(&probe);
            if v == XDP_PASS {
                assert_eq!(h.run(&rst), XDP_PASS);
            }
            v
        })
        .collect()
}

#[test]
fn a_scanner_is_quarantined_within_its_budget_and_keeps_its_established_flows() {
    for (src, dst, v6, host) in [
        (ATTACKER4, VICTIM4, false, "198.51.100.66/32"),
        (ATTACKER6, VICTIM6, true, "2001:db8:66::1/128"),
    ] {
        let mut h = Harness::load();
        h.set_config(quarantine_on());
        let ssh = established(&h, src, dst, v6, 40000);
        let before = monotonic_ns();
        let verdicts = syn_scan(&h, src, dst, v6, 1000..=1199);
        let first_drop = verdicts
            .iter()
            .position(|&v| v == XDP_DROP)
            .expect("the scan was never quarantined");
        // Every probe after the first drop is dropped too: each opens a new flow.
        assert!(
            verdicts[first_drop..].iter().all(|&v| v == XDP_DROP),
            "{src}"
        );
        // 48 set bits of distinct ports need ~52 probes; the target is 100.
        assert!(
            (DEFAULT_QUARANTINE_DISTINCT as usize..100).contains(&first_drop),
            "{src}: quarantined after {first_drop} probes"
        );
        let dropped = (verdicts.len() - first_drop) as u64;
        assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, dropped);
        assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 0);
        let e = h.block_entry(host);
        assert_eq!(e.origin, ORIGIN_DATAPATH, "{src}");
        assert_eq!(e.flags, BLOCK_FLAG_NEW_FLOWS_ONLY);
        assert_eq!(e.reason, BlockReason::Quarantine as u8);
        assert_eq!(e.hits, dropped, "hits count only what the entry dropped");
        let ttl_ns = DEFAULT_QUARANTINE_TTL_MS as u64 * 1_000_000;
        assert!(e.expires_ns >= before + ttl_ns && e.expires_ns <= monotonic_ns() + ttl_ns);
        // The established SSH session goes on; a new connection does not.
        assert_eq!(h.run(&ssh), XDP_PASS, "{src}: established flow cut");
        let new_conn = if v6 {
            v6_tcp(src, dst, 40001, 22, tf::SYN, 0)
        } else {
            v4_tcp(src, dst, 40001, 22, tf::SYN, 0)
        };
        assert_eq!(h.run(&new_conn), XDP_DROP);
        // A detector's block replaces it and then drops everything.
        h.block(host, permanent());
        assert_eq!(h.run(&ssh), XDP_DROP);
        assert_eq!(h.counter(CounterSlot::DropBlocklist).packets, 1);
    }
}

#[test]
fn observe_mode_counts_quarantine_would_drops_and_passes() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        mode: MODE_OBSERVE,
        ..quarantine_on()
    });
    let verdicts = syn_scan(&h, ATTACKER4, VICTIM4, false, 1..=150);
    assert!(verdicts.iter().all(|&v| v == XDP_PASS));
    let would = h.counter(CounterSlot::WouldDropQuarantine).packets;
    assert!(
        (150 - 100..=150 - DEFAULT_QUARANTINE_DISTINCT as u64).contains(&would),
        "{would} would-drops"
    );
    assert_eq!(h.block_entry("198.51.100.66/32").origin, ORIGIN_DATAPATH);
    assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, 0);
}

#[test]
fn answered_busy_clients_allowlisted_and_unconfigured_sources_are_never_quarantined() {
    // A client opening 200 connections to distinct servers, every one answered.
    let mut h = Harness::load();
    h.set_config(quarantine_on());
    for i in 0..200u16 {
        let server = format!("203.0.113.{}", i % 250 + 1);
        let port = 30000 + i;
        let syn = v4_tcp(VICTIM4, &server, port, 443, tf::SYN, 0);
        let syn_ack = v4_tcp(&server, VICTIM4, 443, port, tf::SYN | tf::ACK, 0);
        assert_eq!(h.run(&syn), XDP_PASS, "connection {i}");
        assert_eq!(h.run(&syn_ack), XDP_PASS);
    }
    assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, 0);
    assert_eq!(h.counter(CounterSlot::WouldDropQuarantine).packets, 0);

    // An allowlisted (management) scanner.
    let mut h = Harness::load();
    h.set_config(quarantine_on());
    h.allow("198.51.100.66/32");
    assert!(
        syn_scan(&h, ATTACKER4, VICTIM4, false, 1..=200)
            .iter()
            .all(|&v| v == XDP_PASS)
    );
    assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, 0);

    // All-zero configuration: provisional quarantine off.
    let h = Harness::load();
    assert!(
        syn_scan(&h, ATTACKER4, VICTIM4, false, 1..=200)
            .iter()
            .all(|&v| v == XDP_PASS)
    );
    assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, 0);
}

#[test]
fn a_quarantine_never_overrides_an_entry_in_force() {
    let mut h = Harness::load();
    h.set_config(quarantine_on());
    h.block(
        "198.51.100.66/32",
        BlockEntry {
            expires_ns: monotonic_ns() + 60_000_000_000,
            ..permanent()
        },
    );
    assert!(
        syn_scan(&h, ATTACKER4, VICTIM4, false, 1..=100)
            .iter()
            .all(|&v| v == XDP_DROP)
    );
    let e = h.block_entry("198.51.100.66/32");
    assert_eq!((e.origin, e.flags, e.hits), (ORIGIN_MANUAL, 0, 100));
}

/// The source slot of `addr` (IPv4) in the kernel's evidence map.
fn src_slot(h: &Harness, addr: [u8; 4]) -> fw_common::evidence::EvidenceSlot {
    let a = v4_mapped(addr);
    h.evidence_src()
        .into_iter()
        .find(|s| s.owned_by(&a))
        .expect("the source has an evidence slot")
}

#[test]
fn every_icmp_error_and_every_answer_counts_for_the_scanner() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig::default());
    // A UDP scan of 40 ports, each answered by a port unreachable from the host,
    // then 20 probes of absent hosts answered by a router's host unreachables.
    for port in 1..=40u16 {
        let mut f = eth(&[], 0x0800);
        f.extend(ipv4(
            ATTACKER4.parse().unwrap(),
            VICTIM4.parse().unwrap(),
            17,
            0,
            0,
            &udp(50000, port, 0),
        ));
        assert_eq!(h.run(&f), XDP_PASS);
        let mut e = eth(&[], 0x0800);
        e.extend(ipv4(
            VICTIM4.parse().unwrap(),
            ATTACKER4.parse().unwrap(),
            1,
            0,
            0,
            &icmp(3, 3),
        ));
        assert_eq!(h.run(&e), XDP_PASS);
    }
    for host in 100..120u8 {
        let dst = format!("192.0.2.{host}");
        assert_eq!(
            h.run(&v4_tcp(ATTACKER4, &dst, 50000, 80, tf::SYN, 0)),
            XDP_PASS
        );
        let mut e = eth(&[], 0x0800);
        e.extend(ipv4(
            "203.0.113.1".parse().unwrap(),
            ATTACKER4.parse().unwrap(),
            1,
            0,
            0,
            &icmp(3, 1),
        ));
        assert_eq!(h.run(&e), XDP_PASS);
    }
    let s = src_slot(&h, [198, 51, 100, 66]);
    let c = |f: fn(&fw_common::evidence::EpochCounts) -> u16| f(&s.cur) + f(&s.prev);
    assert_eq!(
        c(|e| e.icmp_errors),
        60,
        "one per error, not one per sender"
    );
    assert_eq!(c(|e| e.replies), 0);
    assert_eq!(s.new_flows(), 60);
    assert_eq!(s.unreplied(), 60);

    // Answers from allowlisted servers count: a client of 100 allowlisted servers
    // is a busy client, not a scanner.
    let mut h = Harness::load();
    h.set_config(quarantine_on());
    h.allow("203.0.113.0/24");
    for i in 1..=100u8 {
        let server = format!("203.0.113.{i}");
        assert_eq!(
            h.run(&v4_tcp(VICTIM4, &server, 30000 + i as u16, 443, tf::SYN, 0)),
            XDP_PASS,
            "connection {i}"
        );
        assert_eq!(
            h.run(&v4_tcp(
                &server,
                VICTIM4,
                443,
                30000 + i as u16,
                tf::SYN | tf::ACK,
                0
            )),
            XDP_PASS
        );
    }
    let s = src_slot(&h, [192, 0, 2, 10]);
    assert_eq!(s.cur.replies + s.prev.replies, 100);
    assert_eq!(h.counter(CounterSlot::DropQuarantine).packets, 0);
}
