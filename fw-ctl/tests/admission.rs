//! Flow admission (`fw_common::admission`) in the kernel, through
//! BPF_PROG_TEST_RUN with crafted frames (needs root): a flow enters the flow map
//! on its second packet with the statistics of both, one-packet flows wait in the
//! pending array, an expired first packet admits nothing, and a spoofed flood of
//! one-packet flows neither inserts into the flow map nor evicts an established
//! flow — while with `FLAG_ADMIT_FIRST_PACKET` (insert on the first packet) the
//! same flood evicts them.

use std::net::Ipv4Addr;

use fw_common::{
    admission::{PENDING_SLOTS, STAT_ADMITTED, STAT_PENDED},
    config::{FLAG_ADMIT_FIRST_PACKET, GatewayConfig},
    flow::{FlowKey, FlowStats, PacketMeta, tcp_flags as tf, v4_mapped},
    maps as m,
};
use fw_testkit::*;

const CLIENT4: &str = "192.0.2.20";
const SERVER4: &str = "198.51.100.5";
const CLIENT6: &str = "2001:db8:20::1";
const SERVER6: &str = "2001:db8:5::1";

fn live_pending(h: &Harness) -> Vec<fw_common::admission::PendingFlow> {
    h.pending()
        .into_iter()
        .filter(|p| p.first_seen_ns != 0)
        .collect()
}

#[test]
fn a_flow_enters_the_flow_map_on_its_second_packet_with_both_counted() {
    for (client, server, v4) in [(CLIENT4, SERVER4, true), (CLIENT6, SERVER6, false)] {
        let h = Harness::load();
        let frame = |src: &str, dst: &str, sp: u16, dp: u16, flags: u8, len: usize| {
            if v4 {
                v4_tcp(src, dst, sp, dp, flags, len)
            } else {
                v6_tcp(src, dst, sp, dp, flags, len)
            }
        };
        assert_eq!(
            h.run(&frame(client, server, 40000, 443, tf::SYN, 0)),
            XDP_PASS
        );
        assert!(
            h.flows().is_empty(),
            "{client}: a first packet inserts nothing"
        );
        let p = live_pending(&h);
        assert_eq!(p.len(), 1, "{client}: the SYN is pending");
        assert_eq!(p[0].tcp_flags, tf::SYN);
        let syn_side = p[0].side;
        h.run(&frame(server, client, 443, 40000, tf::SYN | tf::ACK, 0));
        let flows = h.flows();
        assert_eq!(flows.len(), 1, "{client}: the answer admits the flow");
        let (_, s, _) = flows[0];
        assert_eq!(s.opener, syn_side, "{client}: the SYN's sender opened it");
        let opener = s.dir[syn_side as usize];
        let responder = s.dir[1 - syn_side as usize];
        assert_eq!((opener.packets, opener.syn), (1, 1), "{client}");
        assert_eq!((responder.packets, responder.syn_ack), (1, 1), "{client}");
        assert!(
            s.first_seen_ns < s.last_seen_ns,
            "{client}: the SYN's own time"
        );
        assert!(live_pending(&h).is_empty(), "{client}: the slot is freed");
        // Later packets go to the flow map as before.
        h.run(&frame(client, server, 40000, 443, tf::ACK, 100));
        assert_eq!(h.flows()[0].1.packets(), 3, "{client}");
        let c = h.admission_counts();
        assert_eq!((c[STAT_ADMITTED as usize], c[STAT_PENDED as usize]), (1, 1));
    }
}

#[test]
fn the_admitted_statistics_equal_an_insert_on_the_first_packet() {
    // The same conversation in both modes gives the same flow entry (times aside).
    let conv = [
        v4_tcp(CLIENT4, SERVER4, 40001, 80, tf::SYN, 0),
        v4_tcp(SERVER4, CLIENT4, 80, 40001, tf::SYN | tf::ACK, 0),
        v4_tcp(CLIENT4, SERVER4, 40001, 80, tf::ACK, 0),
        v4_tcp(CLIENT4, SERVER4, 40001, 80, tf::PSH | tf::ACK, 300),
        v4_tcp(SERVER4, CLIENT4, 80, 40001, tf::FIN | tf::ACK, 0),
    ];
    let entry = |flags: u32| {
        let mut h = Harness::load();
        h.set_config(GatewayConfig {
            flags,
            ..Default::default()
        });
        for f in &conv {
            h.run(f);
        }
        let flows = h.flows();
        assert_eq!(flows.len(), 1);
        let mut s = flows[0].1;
        (
            s.first_seen_ns,
            s.last_seen_ns,
            s.iat_sum_ns,
            s.iat_sq_sum_us2,
        ) = (0, 0, 0, 0);
        s
    };
    let admitted = entry(0);
    assert_eq!(admitted, entry(FLAG_ADMIT_FIRST_PACKET));
    assert_eq!(admitted.packets(), 5);
}

#[test]
fn a_one_packet_flow_stays_pending_and_an_expired_one_admits_nothing() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        flow_idle_ms: 1,
        ..Default::default()
    });
    h.run(&v4_tcp(CLIENT4, SERVER4, 40002, 22, tf::SYN, 0));
    std::thread::sleep(std::time::Duration::from_millis(5));
    // The answer comes after the idle timeout: a new flow of its own.
    h.run(&v4_tcp(SERVER4, CLIENT4, 22, 40002, tf::SYN | tf::ACK, 0));
    assert!(h.flows().is_empty());
    let p = live_pending(&h);
    assert_eq!(
        p.len(),
        1,
        "the answer replaced the expired SYN in its slot"
    );
    assert_eq!(p[0].tcp_flags, tf::SYN | tf::ACK);
    assert_eq!(h.admission_counts()[STAT_ADMITTED as usize], 0);
}

/// Establishes `n` flows (handshake + data), runs a spoofed SYN flood of `flood`
/// one-packet flows, then one more data packet on each established flow; returns
/// how many established flows the flow map still holds with all their packets.
fn established_after_flood(flags: u32, n: u16, flood: u32) -> (usize, usize) {
    let mut h = Harness::load_with(|l: &mut aya::EbpfLoader<'_>| {
        l.map_max_entries(m::FLOWS, 1024);
    });
    h.set_config(GatewayConfig {
        flags,
        ..Default::default()
    });
    let conv = |port: u16| {
        [
            v4_tcp(CLIENT4, SERVER4, port, 8883, tf::SYN, 0),
            v4_tcp(SERVER4, CLIENT4, 8883, port, tf::SYN | tf::ACK, 0),
            v4_tcp(CLIENT4, SERVER4, port, 8883, tf::ACK, 0),
            v4_tcp(CLIENT4, SERVER4, port, 8883, tf::PSH | tf::ACK, 120),
        ]
    };
    for i in 0..n {
        for f in conv(20_000 + i) {
            h.run(&f);
        }
    }
    // Random-looking spoofed sources from 198.18.0.0/15 (benchmark range).
    for i in 0..flood {
        let x = i.wrapping_mul(0x9e37_79b1);
        let src = Ipv4Addr::new(198, 18 + (x >> 31) as u8, (x >> 8) as u8, x as u8);
        let f = v4_tcp(
            &src.to_string(),
            SERVER4,
            1024 + (x >> 20) as u16,
            8883,
            tf::SYN,
            0,
        );
        h.run(&f);
    }
    let flows = h.flows();
    let intact = (0..n)
        .filter(|i| {
            let (key, _) = FlowKey::new(
                v4_mapped(CLIENT4.parse::<Ipv4Addr>().unwrap().octets()),
                20_000 + i,
                v4_mapped(SERVER4.parse::<Ipv4Addr>().unwrap().octets()),
                8883,
                6,
                4,
                0,
            );
            flows
                .iter()
                .any(|(k, s, _): &(FlowKey, FlowStats, u32)| *k == key && s.packets() == 4)
        })
        .count();
    (intact, flows.len())
}

#[test]
fn a_spoofed_flood_neither_fills_the_flow_map_nor_evicts_established_flows() {
    // 200 established flows, then 20,000 spoofed SYNs against a 1,024-entry map.
    let (intact, total) = established_after_flood(0, 200, 20_000);
    assert_eq!(intact, 200, "every established flow kept with exact counts");
    assert_eq!(total, 200, "no flood packet entered the flow map");
    // Inserting on the first packet, the same flood turns the map over.
    let (intact_old, total_old) = established_after_flood(FLAG_ADMIT_FIRST_PACKET, 200, 20_000);
    assert!(
        intact_old < 200,
        "insert on the first packet: {intact_old} of 200 survive"
    );
    assert!(total_old > 200);
}

#[test]
fn pending_slots_hold_what_the_packet_was() {
    let h = Harness::load();
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(
        CLIENT4.parse().unwrap(),
        SERVER4.parse().unwrap(),
        1,
        0,
        0,
        &icmp(8, 0),
    ));
    h.run(&f);
    let p = live_pending(&h);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].meta(),
        PacketMeta {
            ip_len: 28,
            tcp_flags: 0,
            is_tcp: false,
            icmp: Some((8, 0)),
        }
    );
    assert_eq!(h.pending().len(), PENDING_SLOTS as usize);
    let idx = h
        .pending()
        .iter()
        .position(|s| s.first_seen_ns != 0)
        .unwrap() as u32;
    assert_eq!(
        idx & !1,
        fw_common::admission::bucket_of(&p[0].key),
        "the slot is in the key's bucket"
    );
}
