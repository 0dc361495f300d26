//! Unit tests of `evidence`.

use super::*;
use crate::flow::v4_mapped;

fn syn(dport: u16) -> Opening {
    Opening {
        kind: OpenKind::Syn,
        dport,
        ip_len: 60,
    }
}

#[test]
fn sizes_are_what_the_docs_say() {
    assert_eq!(core::mem::size_of::<EpochCounts>(), 104);
    assert_eq!(core::mem::size_of::<EvidenceSlot>(), 248);
    assert_eq!(core::mem::size_of::<EvidenceEvent>(), 40);
}

#[test]
fn a_vertical_scan_fills_the_port_bitmap_and_crosses_the_budget() {
    let src = v4_mapped([198, 51, 100, 7]);
    let dst = v4_mapped([192, 0, 2, 10]);
    let mut s = EvidenceSlot::default();
    let b = Budgets {
        quarantine: 48,
        report: 16,
        quarantine_epochs: 30,
    };
    let mut quarantined_at = None;
    let mut reports = 0;
    for (i, port) in (1..=200u16).enumerate() {
        assert!(s.claim(&src, 4, 7));
        s.count_opening(&dst, &syn(port));
        s.count_answer(Answer::Refused);
        match decide_after_opening(&mut s, &b) {
            AfterOpening::Quarantine => {
                assert!(quarantined_at.is_none(), "quarantined twice");
                quarantined_at = Some(i + 1);
            }
            AfterOpening::Report => reports += 1,
            AfterOpening::Nothing => {}
        }
    }
    assert_eq!(s.union_hosts, 1);
    assert_eq!(s.cur.distinct_ports, s.union_ports);
    // 200 consecutive ports in 256 bits: the multiplicative hash spreads a run
    // more evenly than random (whose expected fill would be ~139).
    assert!((139..=200).contains(&s.union_ports), "{}", s.union_ports);
    let at = quarantined_at.expect("never quarantined");
    assert!((48..=60).contains(&at), "quarantined after {at} probes");
    assert_eq!(reports, 1, "one report per epoch");
    assert_eq!(s.unreplied(), 200);
}

#[test]
fn replies_spare_a_busy_client() {
    let src = v4_mapped([192, 0, 2, 20]);
    let mut s = EvidenceSlot::default();
    for i in 0..100u8 {
        assert!(s.claim(&src, 4, 3));
        s.count_opening(&v4_mapped([203, 0, 113, i]), &syn(443));
        s.count_answer(Answer::Reply);
    }
    assert!(s.union_hosts >= 48);
    assert!(!s.over_budget(48));
    assert!(s.over_report(16));
}

#[test]
fn epochs_roll_into_a_two_epoch_union() {
    let src = v4_mapped([198, 51, 100, 7]);
    let mut s = EvidenceSlot::default();
    s.claim(&src, 4, 10);
    for i in 0..30u8 {
        s.count_opening(&v4_mapped([192, 0, 2, i]), &syn(80));
    }
    let h = s.union_hosts;
    s.claim(&src, 4, 11);
    // The same 30 hosts again: nothing new in the union.
    for i in 0..30u8 {
        s.count_opening(&v4_mapped([192, 0, 2, i]), &syn(80));
    }
    assert_eq!(s.union_hosts, h);
    assert_eq!(s.new_flows(), 60);
    // A gap of two epochs forgets everything.
    s.claim(&src, 4, 13);
    assert_eq!((s.union_hosts, s.new_flows()), (0, 0));
}

#[test]
fn a_one_packet_source_cannot_evict_an_active_scanner() {
    let scanner = v4_mapped([198, 51, 100, 7]);
    let spoofed = v4_mapped([203, 0, 113, 99]);
    let mut s = EvidenceSlot::default();
    s.claim(&scanner, 4, 5);
    s.count_opening(&v4_mapped([192, 0, 2, 1]), &syn(22));
    // One probe only: a newcomer may take the slot.
    let mut t = s;
    assert!(t.claim(&spoofed, 4, 5));
    // Two probes: the scanner keeps it until it goes quiet for two epochs.
    s.count_opening(&v4_mapped([192, 0, 2, 1]), &syn(23));
    assert!(!s.claim(&spoofed, 4, 6));
    assert!(s.owned_by(&scanner));
    assert!(s.claim(&spoofed, 4, 7));
    assert!(s.owned_by(&spoofed));
}

#[test]
fn icmp_errors_open_no_flow_and_requests_have_no_port() {
    assert_eq!(opening(1, false, 0, Some((3, 3)), 0, 56), None);
    // A SYN-ACK or a RST opens no flow of its sender's.
    assert_eq!(
        first_packet(
            6,
            true,
            tcp_flags::SYN | tcp_flags::ACK,
            None,
            80,
            40000,
            44
        ),
        First::Answers(Answer::Reply)
    );
    assert_eq!(
        first_packet(
            6,
            true,
            tcp_flags::RST | tcp_flags::ACK,
            None,
            80,
            40000,
            40
        ),
        First::Resets
    );
    // A large datagram from a DNS server to a high port answers; a short one
    // (a probe sent from port 53) or one to a service port opens.
    assert_eq!(
        first_packet(17, false, 0, None, 53, 40000, 512),
        First::Answers(Answer::Reply)
    );
    assert!(matches!(
        first_packet(17, false, 0, None, 53, 40000, 28),
        First::Opens(_)
    ));
    assert!(matches!(
        first_packet(17, false, 0, None, 53, 161, 512),
        First::Opens(_)
    ));
    assert!(matches!(
        first_packet(17, false, 0, None, 40001, 40000, 512),
        First::Opens(_)
    ));
    assert_eq!(opening(58, false, 0, Some((1, 4)), 0, 96), None);
    assert_eq!(
        opening(1, false, 0, Some((8, 0)), 0, 84).map(|o| o.kind),
        Some(OpenKind::Icmp)
    );
    assert_eq!(
        opening(6, true, tcp_flags::FIN, None, 80, 40).map(|o| o.kind),
        Some(OpenKind::TcpOther)
    );
    assert_eq!(
        answer_of(true, tcp_flags::RST | tcp_flags::ACK),
        Answer::Refused
    );
    assert_eq!(answer_of(false, 0), Answer::Reply);
}
