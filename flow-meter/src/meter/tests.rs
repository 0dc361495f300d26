//! Unit tests of `meter`.

use std::{borrow::Cow, fs::File, path::PathBuf};

use fw_common::{
    counters::CounterSlot,
    flow::tcp_flags::{ACK, RST, SYN},
};
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use super::*;
use crate::test_frames::{eth, ipv4, tcp, udp};

const S: u64 = 1_000_000_000;

fn collect(m: &mut Meter, pkts: &[(u64, Vec<u8>)], end: bool) -> Vec<TimedRecord> {
    let mut out = Vec::new();
    for (t, f) in pkts {
        m.frame(*t, LinkType::RawIp, f, &mut |r| out.push(r));
    }
    if end {
        m.finish(None, &mut |r| out.push(r));
    }
    out
}

#[test]
fn export_passes_follow_the_expiry_rules() {
    let c = [192, 0, 2, 1];
    let s = [192, 0, 2, 2];
    let mut m = Meter::new(MeterOptions::default());
    let t0 = 1_000 * S;
    let pkts = vec![
        (t0, ipv4(c, s, 6, 0, 0, &tcp(40000, 22, SYN))),
        (
            t0 + S / 1000,
            ipv4(s, c, 6, 0, 0, &tcp(22, 40000, RST | ACK)),
        ),
        // A later packet of another flow drives the clock past the end grace.
        (t0 + 2 * S, ipv4(c, s, 17, 0, 0, &udp(5000, 53, 10))),
    ];
    let out = collect(&mut m, &pkts, false);
    assert_eq!(out.len(), 1, "the reset flow ends after the 500 ms grace");
    let r = &out[0];
    assert_eq!(r.record.end_reason, EndReason::EndOfFlow);
    assert_eq!(
        (r.record.src.to_string(), r.record.dport),
        ("192.0.2.1".to_string(), 22)
    );
    assert!(
        r.at_ns >= t0 + S / 2 && r.at_ns <= t0 + S / 2 + 250_000_000 + S / 1000,
        "{}",
        r.at_ns - t0
    );
    let rest = collect(&mut m, &[], true);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].record.end_reason, EndReason::ForcedEnd);
    assert_eq!(rest[0].at_ns, t0 + 2 * S);

    // Idle timeout, and a long flow reported by active timeout with delta counts.
    let mut m = Meter::new(MeterOptions::default());
    let mut pkts: Vec<(u64, Vec<u8>)> = (0..=70)
        .map(|i| (t0 + i * S, ipv4(c, s, 17, 0, 0, &udp(7000, 7000, 0))))
        .collect();
    pkts.push((t0 + 90 * S, ipv4(s, c, 17, 0, 0, &udp(9, 9, 0))));
    let out = collect(&mut m, &pkts, true);
    let reasons: Vec<_> = out
        .iter()
        .map(|r| (r.record.end_reason, r.record.packets()))
        .collect();
    assert_eq!(reasons[0].0, EndReason::ActiveTimeout);
    assert_eq!(reasons[1].0, EndReason::IdleTimeout);
    assert_eq!(
        reasons[0].1 + reasons[1].1,
        71,
        "delta counts add up: {reasons:?}"
    );
    assert_eq!(reasons[2], (EndReason::ForcedEnd, 1));
}

#[test]
fn a_quarantined_source_loses_its_new_flows_but_keeps_its_established_ones() {
    let scanner = [198, 51, 100, 7];
    let target = [192, 0, 2, 10];
    let t0 = 1_000 * S;
    for observe in [false, true] {
        let opts = MeterOptions {
            evidence: EvidenceOptions {
                observe,
                ..EvidenceOptions::default()
            },
            ..MeterOptions::default()
        };
        let mut m = Meter::new(opts);
        let mut t = t0;
        let mut send = |m: &mut Meter, f: Vec<u8>| {
            t += 1_000;
            m.frame(t, LinkType::RawIp, &f, &mut |_| {}).unwrap()
        };
        send(&mut m, ipv4(scanner, target, 6, 0, 0, &tcp(50000, 22, SYN)));
        send(
            &mut m,
            ipv4(target, scanner, 6, 0, 0, &tcp(22, 50000, SYN | ACK)),
        );
        let mut slots = Vec::new();
        for port in 1000..1100u16 {
            let slot = send(
                &mut m,
                ipv4(scanner, target, 6, 0, 0, &tcp(40000, port, SYN)),
            );
            if slot == CounterSlot::PassNoMatch {
                send(
                    &mut m,
                    ipv4(target, scanner, 6, 0, 0, &tcp(port, 40000, RST | ACK)),
                );
            }
            slots.push(slot);
        }
        let est = send(&mut m, ipv4(scanner, target, 6, 0, 0, &tcp(50000, 22, ACK)));
        assert_eq!(est, CounterSlot::PassNoMatch, "observe {observe}");
        let limited = if observe {
            CounterSlot::WouldDropQuarantine
        } else {
            CounterSlot::DropQuarantine
        };
        let first = slots
            .iter()
            .position(|s| *s == limited)
            .expect("quarantined");
        assert!(slots[first..].iter().all(|s| *s == limited));
        let q = m.evidence().quarantines();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].1.hits as usize, 100 - first);
        let stats = m.stats();
        assert_eq!(stats.by_slot[limited as usize] as usize, 100 - first);
        // The answered flows are in the table. Enforce: the dropped probes
        // opened no flow; observe: each is a pending one-packet flow.
        assert_eq!(m.active_flows(), 1 + first, "observe {observe}");
        let pending = m
            .admission()
            .slots()
            .iter()
            .filter(|s| s.first_seen_ns != 0)
            .count();
        assert_eq!(pending, if observe { 100 - first } else { 0 });
        assert_eq!(
            stats.dropped as usize,
            if observe { 0 } else { 100 - first }
        );
    }
}

#[test]
fn evidence_records_follow_the_export_passes() {
    let c = [192, 0, 2, 1];
    let t0 = 1_000 * S;
    let opts = MeterOptions {
        evidence: EvidenceOptions {
            export_records: true,
            ..EvidenceOptions::off()
        },
        ..MeterOptions::default()
    };
    let mut m = Meter::new(opts);
    for i in 0..4u64 {
        // One new flow every 300 ms: passes every 250 ms see each.
        let f = ipv4(c, [192, 0, 2, 100 + i as u8], 17, 0, 0, &udp(5000, 53, 0));
        m.frame(t0 + i * 300_000_000, LinkType::RawIp, &f, &mut |_| {});
    }
    m.finish(None, &mut |_| {});
    let ev = m.take_evidence();
    let src: Vec<(u64, u64, u32)> = ev
        .iter()
        .flat_map(|te| {
            te.records
                .iter()
                .filter(|r| r.role == tad_wire::EvidenceRole::Source)
                .map(move |r| (te.at_ns - t0, r.epoch_start_ms, r.new_flows))
        })
        .collect();
    // Epoch 1000 s holds the first four flows (0, .3, .6, .9 s); each pass
    // after one publishes the grown count.
    let e = 1_000_000;
    assert_eq!(
        src,
        vec![
            (250_000_000, e, 1),
            (500_000_000, e, 2),
            (750_000_000, e, 3),
            (900_000_000, e, 4),
        ],
        "{ev:?}"
    );
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fw-common-meter-{}-{name}", std::process::id()))
}

#[test]
fn reads_pcap_and_pcapng_with_their_timestamp_units() {
    let c = [192, 0, 2, 1];
    let s = [192, 0, 2, 2];
    let frames = [
        eth(
            fw_common::proto::ETH_P_IP,
            &[],
            &ipv4(c, s, 6, 0, 0, &tcp(40000, 80, SYN)),
        ),
        eth(0x0806, &[], &[0u8; 28]),
    ];
    let t0 = 1_600_000_000 * S + 123_456_789;
    let p1 = tmp("a.pcap");
    {
        let hdr = PcapHeader {
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(File::create(&p1).unwrap(), hdr).unwrap();
        for f in &frames {
            w.write_packet(&PcapPacket::new(
                Duration::from_nanos(t0),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
    }
    let p2 = tmp("b.pcapng");
    {
        let mut w = PcapNgWriter::new(File::create(&p2).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .unwrap();
        for f in &frames {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(t0),
                original_len: f.len() as u32,
                data: Cow::Borrowed(f),
                options: vec![],
            })
            .unwrap();
        }
    }
    for p in [&p1, &p2] {
        let mut recs = Vec::new();
        let stats = for_each_record(p, &MeterOptions::default(), |r| recs.push(r)).unwrap();
        assert_eq!(
            (stats.frames, stats.accounted, stats.skipped, stats.records),
            (2, 1, 1, 1),
            "{p:?}"
        );
        assert_eq!(recs[0].record.start_ms, t0 / 1_000_000, "{p:?}");
        assert_eq!(recs[0].at_ns, t0);
        std::fs::remove_file(p).unwrap();
    }
    let bad = tmp("c.pcap");
    std::fs::write(&bad, b"not a capture").unwrap();
    let err = records_from_pcap(&bad, &MeterOptions::default()).unwrap_err();
    assert!(matches!(err, MeterError::UnknownFormat { .. }), "{err}");
    std::fs::remove_file(&bad).unwrap();
}
