//! What one flow record says about its initiator: a scan probe (and of which
//! kind), a half-open handshake, an unsolicited RST, a short authentication
//! attempt. Pure functions of a [`FlowRecord`]; the rules count these.
//!
//! Flag terms follow nmap's scan types (nmap.org/book/man-port-scanning-techniques):
//! SYN (half-open), connect (full handshake, no data), FIN, NULL (no flags), XMAS
//! (FIN+PSH+URG), Maimon (FIN+ACK), UDP (unanswered datagram), and ICMP echo /
//! timestamp / address-mask sweeps.

use std::net::IpAddr;

use fw_common::flow::{proto, tcp_flags};
use tad_wire::FlowRecord;

/// Kind of scan probe a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// SYN unanswered, refused (RST), or answered but never completed.
    Syn,
    /// Handshake completed, no data, torn down at once.
    Connect,
    Fin,
    Null,
    Xmas,
    Maimon,
    /// UDP datagram(s) without any answer.
    Udp,
    /// ICMP/ICMPv6 echo, timestamp or address-mask request.
    IcmpSweep,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Syn => "syn",
            ProbeKind::Connect => "connect",
            ProbeKind::Fin => "fin",
            ProbeKind::Null => "null",
            ProbeKind::Xmas => "xmas",
            ProbeKind::Maimon => "maimon",
            ProbeKind::Udp => "udp",
            ProbeKind::IcmpSweep => "icmp",
        }
    }
}

/// Whether the record is a scan probe by its initiator (see the module docs).
/// `max_packets`: a flow whose initiator sent more packets is a connection.
pub fn probe(r: &FlowRecord, max_packets: u32) -> Option<ProbeKind> {
    let f = &r.fwd;
    let b = &r.bwd;
    if f.packets == 0 || f.packets > max_packets as u64 {
        return None;
    }
    match r.proto {
        proto::TCP => {
            if f.syn_ack > 0 {
                // The initiator answered someone's SYN: backscatter, not a probe.
                return None;
            }
            if f.syn > 0 {
                let answered = answered(r);
                let completed = f.ack_only > 0 || f.psh > 0;
                let data = f.psh > 0 || b.psh > 0;
                return match (answered, completed) {
                    (false, _) | (true, false) => Some(ProbeKind::Syn),
                    (true, true) if !data && f.psh == 0 => Some(ProbeKind::Connect),
                    _ => None,
                };
            }
            // No SYN: the responder may only have reset (or stayed silent).
            if b.packets != b.rst as u64 {
                return None;
            }
            let flags = f.tcp_flags_or & 0x3f;
            const FPU: u8 = tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG;
            if flags == 0 {
                Some(ProbeKind::Null)
            } else if flags == tcp_flags::FIN {
                Some(ProbeKind::Fin)
            } else if flags & FPU == FPU && flags & tcp_flags::ACK == 0 {
                Some(ProbeKind::Xmas)
            } else if flags == tcp_flags::FIN | tcp_flags::ACK {
                Some(ProbeKind::Maimon)
            } else {
                None
            }
        }
        proto::UDP => (b.packets == 0 && !is_group(r.dst)).then_some(ProbeKind::Udp),
        proto::ICMP => matches!(f.icmp, Some((8 | 13 | 17, _))).then_some(ProbeKind::IcmpSweep),
        proto::ICMPV6 => matches!(f.icmp, Some((128, _))).then_some(ProbeKind::IcmpSweep),
        _ => None,
    }
}

/// Broadcast or multicast destination (discovery traffic, never a probe). IPv4
/// addresses ending in .255 count as directed broadcasts.
pub fn is_group(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_broadcast() || v.is_multicast() || v.octets()[3] == 255,
        IpAddr::V6(v) => v.is_multicast(),
    }
}

/// Whether the responder answered the initiator's SYN: its SYN-ACK is in the
/// record, or the record holds no packet of the responder at all (a one-way
/// view: XDP on the LAN side only sees a device's outbound packets, never the
/// answers routed back to it) and the initiator went on in the same flow with
/// ACK-only or data (PSH) segments, which a TCP stack sends only once the
/// handshake completed (RFC 9293 §3.5: the SYN-SENT state sends nothing but
/// SYN retransmissions and, on a bad answer, RST).
///
/// Known limit: in a one-way view a flooder that follows each SYN with a forged
/// ACK is counted as completing its handshakes; the victim-side kernel evidence
/// (`evidence.synflood`, which counts SYNs) and SYN authentication still apply.
pub fn answered(r: &FlowRecord) -> bool {
    r.bwd.syn_ack > 0 || (r.bwd.packets == 0 && (r.fwd.ack_only > 0 || r.fwd.psh > 0))
}

/// A TCP handshake the initiator started and never completed (SYN flood unit):
/// no answer ([`answered`]) or an answer it never acknowledged. A SYN refused
/// with a RST and nothing else is not one: the responder keeps no state for it
/// (a closed port; a SYN scan's probe, which the scan rules count).
pub fn half_open(r: &FlowRecord) -> bool {
    let refused = r.bwd.rst > 0 && r.bwd.syn_ack == 0 && r.bwd.packets == r.bwd.rst as u64;
    r.proto == proto::TCP
        && r.fwd.syn > 0
        && r.fwd.syn_ack == 0
        && !refused
        && !(answered(r) && (r.fwd.ack_only > 0 || r.fwd.psh > 0))
}

/// A flow of nothing but RSTs from its initiator, unanswered: the initiator is
/// resetting packets the responder never sent, i.e. someone is spoofing the
/// responder's address towards it (nmap's idle scan probes its zombie this way).
pub fn unsolicited_rst(r: &FlowRecord) -> bool {
    r.proto == proto::TCP
        && r.fwd.packets > 0
        && r.fwd.rst as u64 == r.fwd.packets
        && r.fwd.syn == 0
        && r.fwd.syn_ack == 0
        && r.bwd.packets == 0
}

/// Outcome of one connection to an authentication service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthAttempt {
    /// Refused (RST) or unanswered SYN.
    Failed,
    /// Established, ended within the duration/size limits.
    Short,
}

/// Whether the record is a failed or short connection to its responder's port
/// (the caller checks that the port is an authentication service). Only records
/// that contain the handshake count, so one session split by active timeouts
/// counts once.
pub fn auth_attempt(r: &FlowRecord, max_duration_us: u64, max_bytes: u64) -> Option<AuthAttempt> {
    if r.proto != proto::TCP || r.fwd.syn == 0 {
        return None;
    }
    if !answered(r) {
        return Some(AuthAttempt::Failed);
    }
    let bytes = r.fwd.bytes + r.bwd.bytes;
    let short = r.end_reason != tad_wire::EndReason::ActiveTimeout
        && r.duration_us <= max_duration_us
        && bytes <= max_bytes;
    short.then_some(AuthAttempt::Short)
}

#[cfg(test)]
pub(crate) mod tests {
    use tad_wire::{DirCounters, EndReason};

    use super::*;

    /// A TCP record with the given initiator/responder counters.
    pub fn tcp(src: &str, dst: &str, dport: u16, fwd: DirCounters, bwd: DirCounters) -> FlowRecord {
        FlowRecord {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport,
            proto: proto::TCP,
            vlan: 0,
            start_ms: 0,
            duration_us: 1000,
            fwd,
            bwd,
            iat_mean_us: 0.0,
            iat_std_us: 0.0,
            end_reason: EndReason::EndOfFlow,
        }
    }

    fn d(packets: u64, flags: u8) -> DirCounters {
        let n = packets as u32;
        let has = |f: u8| if flags & f != 0 { n } else { 0 };
        DirCounters {
            packets,
            bytes: 40 * packets,
            syn: if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
                n
            } else {
                0
            },
            syn_ack: if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK
            {
                n
            } else {
                0
            },
            fin: has(tcp_flags::FIN),
            rst: has(tcp_flags::RST),
            psh: has(tcp_flags::PSH),
            ack_only: if flags & 0x3f == tcp_flags::ACK { n } else { 0 },
            urg: has(tcp_flags::URG),
            no_flags: if flags & 0x3f == 0 { n } else { 0 },
            min_len: 40,
            max_len: 40,
            tcp_flags_or: flags,
            icmp: None,
        }
    }

    /// SYN, ACK, RST: a connect scan's handshake torn down without data.
    fn connect_fwd() -> DirCounters {
        use tcp_flags::*;
        let mut f = d(3, SYN);
        f.syn = 1;
        f.ack_only = 1;
        f.rst = 1;
        f.tcp_flags_or = SYN | ACK | RST;
        f
    }

    #[test]
    fn tcp_probe_kinds() {
        use tcp_flags::*;
        let none = DirCounters::default();
        let rst = d(1, RST | ACK);
        let cases = [
            (d(1, SYN), none, Some(ProbeKind::Syn)),
            (d(1, SYN), rst, Some(ProbeKind::Syn)),
            (d(2, SYN), d(1, SYN | ACK), Some(ProbeKind::Syn)),
            (d(1, 0), rst, Some(ProbeKind::Null)),
            (d(1, FIN), none, Some(ProbeKind::Fin)),
            (d(1, FIN | PSH | URG), rst, Some(ProbeKind::Xmas)),
            (d(1, FIN | ACK), rst, Some(ProbeKind::Maimon)),
            (d(1, SYN | ACK), rst, None),
            (connect_fwd(), d(1, SYN | ACK), Some(ProbeKind::Connect)),
            (d(1, ACK | PSH), d(1, ACK | PSH), None),
        ];
        for (i, (f, b, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                probe(&tcp("192.0.2.1", "192.0.2.2", 80, f, b), 4),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn completed_sessions_are_not_probes_or_half_open() {
        use tcp_flags::*;
        let mut f = d(6, SYN);
        f.ack_only = 4;
        f.psh = 2;
        f.tcp_flags_or = SYN | ACK | PSH;
        let mut b = d(4, SYN | ACK);
        b.syn_ack = 1;
        b.psh = 3;
        let r = tcp("192.0.2.1", "192.0.2.2", 22, f, b);
        assert_eq!(probe(&r, 4), None);
        assert!(!half_open(&r));
        assert_eq!(
            auth_attempt(&r, 30_000_000, 20_000),
            Some(AuthAttempt::Short)
        );
    }
}
