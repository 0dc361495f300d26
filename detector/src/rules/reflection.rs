//! Reflection and amplification floods (`[reflection]`).
//!
//! In a reflection attack the attacker sends requests whose source address is
//! forged to be the victim's to many servers (reflectors): DNS resolvers, NTP,
//! SNMP, SSDP, CoAP, BACnet devices, memcached, or any TCP server for a SYN-ACK
//! reflection. Their answers, often much larger than the requests
//! (amplification), converge on the victim, who never asked for them (Rossow,
//! "Amplification Hell: Revisiting Network Protocols for DDoS Abuse", NDSS 2014;
//! CISA TA14-017A). A gateway sees two shapes of it:
//!
//! * `reflection.victim` (kind `reflection`): the victim receives unsolicited
//!   answers ([`answer`]: a flow opened by a UDP datagram from a service port of
//!   `reflection.udp_ports`, or by a SYN-ACK, to which the victim sent nothing
//!   comparable back) from at least `min_reflectors` distinct reflectors and
//!   `min_packets` packets in `window_s` (scaled to this instance's share of the
//!   partitions), or `min_bytes` from any number of them. The alert names the
//!   victim as its target and no source; it never blocks, and the reflectors are
//!   no suspects of any other rule for these records either (see [`answer`]).
//! * `reflection.amplifier` (kind `amplifier`): a device of ours
//!   (`trust.device_networks`, or private-use addresses when that list is empty)
//!   sent at least `amplifier_packets` responses from one of those UDP service
//!   ports to requesters outside in `window_s`, with response bytes at least
//!   `amplification` times the request bytes the gateway saw (with XDP on the
//!   LAN side only it sees no requests, and the ratio is met). The alert names
//!   the device as its target; it never blocks (the device is being abused; the
//!   requesters' addresses are forged).
//!
//! Solicited answers are not counted: a flow the victim opened (its query, then
//! the answer) has the victim as initiator, and answers to the victim's own
//! query to a multicast or broadcast group (SSDP M-SEARCH, CoAP or BACnet
//! discovery) on that port within the window are excused. Known limit: with
//! several partitions the group query and its answers may be judged by
//! different instances, and an answer exported before the query in the same
//! export pass is counted.

use std::{collections::VecDeque, net::IpAddr};

use fw_common::flow::proto;
use ipnet::IpNet;
use tad_wire::{AlertKind, FlowRecord, Severity};

use super::{Detection, Gate, MAX_TRACKED, Recent, WINDOW_CAP, map, ms, slot};
use crate::{
    HashMap,
    classify::is_group,
    config::{Config, Reflection},
    window::Distinct,
};

/// What kind of unsolicited answer a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A UDP datagram (or several) from a reflection service port.
    Udp,
    /// A TCP SYN-ACK (SYN-ACK reflection, or backscatter of a spoofed SYN flood).
    SynAck,
}

/// Smallest IP length of a datagram with a payload: IPv4 20 + UDP 8 + 1, IPv6
/// 40 + 8 + 1 bytes.
fn min_answer_len(a: IpAddr) -> u16 {
    if a.is_ipv4() { 29 } else { 49 }
}

/// Whether `r` is an answer its responder (the victim, `r.dst`) never asked for,
/// sent by its initiator (the reflector, `r.src`):
///
/// * UDP from a port of `udp_ports`, to a unicast address, every datagram with a
///   payload, to an ephemeral port (>= 1024: the victim's forged request source
///   port) or to the same service port (NTP, BACnet symmetric modes); the victim
///   sent back less than 1/`amplification` of the bytes (usually nothing);
/// * TCP opened by a SYN-ACK (no SYN from the initiator), which the victim did not
///   complete (no SYN, data or ACK-only segment back; a RST may come back).
///
/// A UDP scan with a forged source port 53 (`nmap -g 53`) sends empty probes, to
/// service ports below 1024 too, and stays a scan. Such records are not probes,
/// flood or access-policy units of their sender: the reflector is innocent.
pub fn answer(rf: &Reflection, r: &FlowRecord) -> Option<Answer> {
    if r.fwd.packets == 0 || is_group(r.dst) {
        return None;
    }
    match r.proto {
        proto::UDP => {
            let to_port = r.dport >= 1024 || r.dport == r.sport;
            let payload = r.fwd.min_len >= min_answer_len(r.dst);
            let silent = (r.bwd.bytes as f64) * rf.amplification <= r.fwd.bytes as f64;
            (rf.udp_ports.contains(&r.sport) && to_port && payload && silent).then_some(Answer::Udp)
        }
        proto::TCP => {
            let (f, b) = (&r.fwd, &r.bwd);
            let opened_by_syn_ack = f.syn_ack > 0 && f.syn == 0;
            let completed = b.syn > 0 || b.psh > 0 || b.ack_only > 0;
            (opened_by_syn_ack && !completed).then_some(Answer::SynAck)
        }
        _ => None,
    }
}

/// Windowed sums of (packets, bytes, other bytes), bounded: past [`WINDOW_CAP`]
/// events the newest absorbs the next (sums stay exact, times coarser).
#[derive(Default)]
struct Sums {
    events: VecDeque<(u64, [u64; 3])>,
    total: [u64; 3],
}

impl Sums {
    fn evict(&mut self, now_ms: u64, window_ms: u64) {
        let Some(horizon) = now_ms.checked_sub(window_ms) else {
            return;
        };
        while let Some(&(t, v)) = self.events.front() {
            if t > horizon {
                break;
            }
            self.events.pop_front();
            for (tot, x) in self.total.iter_mut().zip(v) {
                *tot -= x;
            }
        }
    }

    fn add(&mut self, now_ms: u64, v: [u64; 3]) {
        for (tot, x) in self.total.iter_mut().zip(v) {
            *tot += x;
        }
        let full = self.events.len() >= WINDOW_CAP;
        match self.events.back_mut() {
            Some(last) if full || last.0 == now_ms => {
                last.0 = now_ms;
                for (e, x) in last.1.iter_mut().zip(v) {
                    *e += x;
                }
            }
            _ => self.events.push_back((now_ms, v)),
        }
    }
}

/// Unsolicited answers to one victim.
struct VictimState {
    last_ms: u64,
    reflectors: Distinct<IpAddr>,
    /// (answer packets, answer bytes, bytes the victim sent back).
    sums: Sums,
    /// Answer packets by service port (0: SYN-ACK) while the window is not empty.
    ports: HashMap<u16, u64>,
    recent: Recent,
}

/// Responses of one device to requesters outside.
struct DeviceState {
    last_ms: u64,
    peers: Distinct<IpAddr>,
    /// (response packets, response bytes, request bytes).
    sums: Sums,
    ports: HashMap<u16, u64>,
    recent: Recent,
}

/// The reflection rules' state.
#[derive(Default)]
pub struct ReflectionBook {
    victims: HashMap<IpAddr, VictimState>,
    devices: HashMap<IpAddr, DeviceState>,
    /// (querier, port) -> last query to a multicast/broadcast group on that port, ms.
    group_queries: HashMap<(IpAddr, u16), u64>,
}

/// Private-use and link-local addresses (RFC 1918, RFC 3927, RFC 4193, RFC 4291).
fn private(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_private() || v.is_link_local(),
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            s & 0xfe00 == 0xfc00 || s & 0xffc0 == 0xfe80
        }
    }
}

/// Whether `a` is one of our devices: in `trust.device_networks`, or private-use
/// when that list is empty.
fn is_device(nets: &[IpNet], a: IpAddr) -> bool {
    if nets.is_empty() {
        private(a)
    } else {
        nets.iter().any(|n| n.contains(&a))
    }
}

/// Name of a well-known reflection service port, for alert texts.
fn service(port: u16) -> &'static str {
    match port {
        0 => "TCP SYN-ACK",
        17 => "QOTD",
        19 => "CharGEN",
        53 => "DNS",
        69 => "TFTP",
        111 => "portmap",
        123 => "NTP",
        137 => "NetBIOS",
        161 => "SNMP",
        389 => "CLDAP",
        500 | 4500 => "ISAKMP",
        520 => "RIP",
        1434 => "MS-SQL",
        1900 => "SSDP",
        3283 => "ARMS",
        3478 => "STUN",
        3702 => "WS-Discovery",
        5351 => "NAT-PMP",
        5683 => "CoAP",
        10001 => "Ubiquiti discovery",
        11211 => "memcached",
        37810 => "DVR discovery",
        47808 => "BACnet",
        _ => "UDP service",
    }
}

fn top_port(ports: &HashMap<u16, u64>) -> u16 {
    ports
        .iter()
        .max_by_key(|(p, n)| (**n, u16::MAX - **p))
        .map_or(0, |(p, _)| *p)
}

impl ReflectionBook {
    /// Runs both rules on one record at `now_ms`; `share` scales the victim-side
    /// packet and reflector thresholds to this instance's share of the partitions.
    /// State that finds its table full ([`MAX_TRACKED`]) is skipped and counted in
    /// `state_full`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        now_ms: u64,
        share: f64,
        gate: &Gate,
        state_full: &mut u64,
        out: &mut Vec<Detection>,
    ) {
        let rf = &cfg.reflection;
        let w_ms = ms(rf.window_s);
        if r.proto == proto::UDP && is_group(r.dst) && rf.udp_ports.contains(&r.dport) {
            if self.group_queries.len() < MAX_TRACKED
                || self.group_queries.contains_key(&(r.src, r.dport))
            {
                self.group_queries.insert((r.src, r.dport), now_ms);
            } else {
                *state_full += 1;
            }
            return;
        }
        let ans = answer(rf, r);
        if let Some(a) = ans {
            let solicited = a == Answer::Udp
                && self
                    .group_queries
                    .get(&(r.dst, r.sport))
                    .is_some_and(|t| now_ms.saturating_sub(*t) <= w_ms);
            if !solicited {
                self.victim(rf, r, a, now_ms, share, gate, state_full, out);
            }
        }
        self.device(cfg, r, ans, now_ms, gate, state_full, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn victim(
        &mut self,
        rf: &Reflection,
        r: &FlowRecord,
        a: Answer,
        now_ms: u64,
        share: f64,
        gate: &Gate,
        state_full: &mut u64,
        out: &mut Vec<Detection>,
    ) {
        let w_ms = ms(rf.window_s);
        let Some(v) = slot(&mut self.victims, state_full, r.dst, || VictimState {
            last_ms: now_ms,
            reflectors: Distinct::new(1 << 16),
            sums: Sums::default(),
            ports: HashMap::default(),
            recent: Recent::default(),
        }) else {
            return;
        };
        v.last_ms = now_ms;
        v.recent.push(r);
        v.reflectors.evict(now_ms, w_ms);
        v.sums.evict(now_ms, w_ms);
        if v.sums.events.is_empty() {
            v.ports.clear();
        }
        v.reflectors.insert(now_ms, r.src);
        v.sums
            .add(now_ms, [r.fwd.packets, r.fwd.bytes, r.bwd.bytes]);
        let port = if a == Answer::SynAck { 0 } else { r.sport };
        *v.ports.entry(port).or_insert(0) += r.fwd.packets;
        let reflectors = v.reflectors.distinct() as f64;
        let [packets, bytes, back] = v.sums.total.map(|x| x as f64);
        let min_reflectors = (rf.min_reflectors as f64 * share).ceil().max(1.0);
        let min_packets = (rf.min_packets as f64 * share).ceil().max(1.0);
        let many = reflectors >= min_reflectors && packets >= min_packets;
        if !(many || bytes >= rf.min_bytes as f64)
            || !gate.open("reflection.victim", None, Some(r.dst), reflectors)
        {
            return;
        }
        let top = top_port(&v.ports);
        let via = if top == 0 {
            "TCP SYN-ACKs".to_string()
        } else {
            format!("{} answers from UDP port {top}", service(top))
        };
        out.push(Detection {
            kind: AlertKind::Reflection,
            rule: "reflection.victim",
            severity: Severity::High,
            confidence: 0.8,
            source: None,
            target: Some(r.dst),
            window_s: rf.window_s,
            observed: map(&[
                ("reflectors", reflectors),
                ("packets", packets),
                ("bytes", bytes),
                ("victim_bytes", back),
                ("port", top as f64),
            ]),
            thresholds: map(&[
                ("reflectors", min_reflectors),
                ("packets", min_packets),
                ("bytes", rf.min_bytes as f64),
            ]),
            main: reflectors,
            text: format!(
                "{} received {packets} unsolicited packets ({bytes} bytes; it sent {back} back) from {reflectors} reflectors in {} s, mostly {via}: a reflection/amplification flood; the reflectors are innocent and not blocked",
                r.dst, rf.window_s
            ),
            flows: v.recent.list(),
            may_block: false,
        });
    }

    /// The device side: `r` as a request to a device's service port from outside
    /// (both directions seen) or as an unsolicited answer a device sent outside.
    #[allow(clippy::too_many_arguments)]
    fn device(
        &mut self,
        cfg: &Config,
        r: &FlowRecord,
        ans: Option<Answer>,
        now_ms: u64,
        gate: &Gate,
        state_full: &mut u64,
        out: &mut Vec<Detection>,
    ) {
        let rf = &cfg.reflection;
        let nets = &cfg.trust.device_networks;
        let outside = |a: IpAddr| !is_device(nets, a) && !cfg.never_block(a);
        let (dev, peer, port, resp, req) = if r.proto == proto::UDP
            && rf.udp_ports.contains(&r.dport)
            && r.bwd.packets > 0
            && !is_group(r.dst)
            && is_device(nets, r.dst)
            && outside(r.src)
        {
            (r.dst, r.src, r.dport, &r.bwd, r.fwd.bytes)
        } else if ans == Some(Answer::Udp) && is_device(nets, r.src) && outside(r.dst) {
            (r.src, r.dst, r.sport, &r.fwd, r.bwd.bytes)
        } else {
            return;
        };
        let w_ms = ms(rf.window_s);
        let Some(d) = slot(&mut self.devices, state_full, dev, || DeviceState {
            last_ms: now_ms,
            peers: Distinct::new(WINDOW_CAP),
            sums: Sums::default(),
            ports: HashMap::default(),
            recent: Recent::default(),
        }) else {
            return;
        };
        d.last_ms = now_ms;
        d.recent.push(r);
        d.peers.evict(now_ms, w_ms);
        d.sums.evict(now_ms, w_ms);
        if d.sums.events.is_empty() {
            d.ports.clear();
        }
        d.peers.insert(now_ms, peer);
        d.sums.add(now_ms, [resp.packets, resp.bytes, req]);
        *d.ports.entry(port).or_insert(0) += resp.packets;
        let [packets, bytes, req_bytes] = d.sums.total.map(|x| x as f64);
        let factor = if req_bytes > 0.0 {
            bytes / req_bytes
        } else {
            f64::INFINITY
        };
        if packets < rf.amplifier_packets as f64
            || factor < rf.amplification
            || !gate.open("reflection.amplifier", None, Some(dev), packets)
        {
            return;
        }
        let peers = d.peers.distinct() as f64;
        let top = top_port(&d.ports);
        let ratio = if factor.is_finite() {
            format!("{factor:.1}x the {req_bytes} request bytes seen")
        } else {
            "no requests seen".to_string()
        };
        out.push(Detection {
            kind: AlertKind::Amplifier,
            rule: "reflection.amplifier",
            severity: Severity::High,
            confidence: 0.8,
            source: None,
            target: Some(dev),
            window_s: rf.window_s,
            observed: map(&[
                ("packets", packets),
                ("bytes", bytes),
                ("request_bytes", req_bytes),
                // Capped for the JSON number; infinity = no request seen.
                ("amplification", factor.min(1e9)),
                ("requesters", peers),
                ("port", top as f64),
            ]),
            thresholds: map(&[
                ("packets", rf.amplifier_packets as f64),
                ("amplification", rf.amplification),
            ]),
            main: packets,
            text: format!(
                "device {dev} sent {packets} {} responses ({bytes} bytes, {ratio}) from UDP port {top} to {peers} requesters outside in {} s: it is used as a reflector/amplifier (the requesters' addresses are forged victims); close or restrict the service",
                service(top),
                rf.window_s
            ),
            flows: d.recent.list(),
            may_block: false,
        });
    }

    /// Whether `r` is an unsolicited answer ([`answer`]) from a reflector to a
    /// victim this book currently sees under a many-reflector flood (at least
    /// `min_reflectors`, scaled by `share`, in the window): the engine lifts an
    /// evidence-path quarantine of such a reflector (its answers to many victim
    /// ports look like a vertical scan to the kernel evidence, which has no source
    /// ports). Known limit: a scanner that also forges such a flood on its
    /// victim gets its evidence quarantine lifted (the flow-path rules still
    /// judge it).
    pub fn reflector_in_flood(&self, cfg: &Config, r: &FlowRecord, share: f64) -> bool {
        let rf = &cfg.reflection;
        answer(rf, r).is_some()
            && self.victims.get(&r.dst).is_some_and(|v| {
                v.reflectors.distinct() as f64 >= (rf.min_reflectors as f64 * share).ceil().max(1.0)
            })
    }

    /// Drops state untouched for `idle_ms`.
    pub fn gc(&mut self, now_ms: u64, idle_ms: u64) {
        self.victims
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.devices
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle_ms);
        self.group_queries
            .retain(|_, t| now_ms.saturating_sub(*t) <= idle_ms);
    }
}

#[cfg(test)]
mod tests {
    use tad_wire::{DirCounters, EndReason};

    use super::*;

    fn udp(src: &str, sport: u16, dst: &str, dport: u16, len: u16, back: u64) -> FlowRecord {
        FlowRecord {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            proto: proto::UDP,
            vlan: 0,
            start_ms: 0,
            duration_us: 0,
            fwd: DirCounters {
                packets: 1,
                bytes: len as u64,
                min_len: len,
                max_len: len,
                ..Default::default()
            },
            bwd: DirCounters {
                packets: (back > 0) as u64,
                bytes: back,
                ..Default::default()
            },
            iat_mean_us: 0.0,
            iat_std_us: 0.0,
            end_reason: EndReason::IdleTimeout,
        }
    }

    #[test]
    fn answers_and_non_answers() {
        let rf = Reflection::default();
        let v = "192.0.2.9";
        let yes = [
            udp("203.0.113.1", 53, v, 40000, 512, 0),
            udp("203.0.113.1", 123, v, 123, 468, 0),
            udp("203.0.113.1", 11211, v, 5000, 1400, 60),
        ];
        for r in yes {
            assert_eq!(answer(&rf, &r), Some(Answer::Udp), "{r:?}");
        }
        let no = [
            // An empty probe from a forged port 53 (nmap -g 53), to a low port.
            udp("203.0.113.1", 53, v, 40000, 28, 0),
            udp("203.0.113.1", 53, v, 80, 60, 0),
            // Not a reflection port; to a group; answered by the "victim".
            udp("203.0.113.1", 40001, v, 40000, 512, 0),
            udp("203.0.113.1", 1900, "239.255.255.250", 1900, 300, 0),
            udp("203.0.113.1", 53, v, 40000, 100, 90),
        ];
        for r in no {
            assert_eq!(answer(&rf, &r), None, "{r:?}");
        }
    }

    #[test]
    fn windowed_sums_stay_exact_past_the_cap() {
        let mut s = Sums::default();
        for t in 0..(WINDOW_CAP as u64 + 10) {
            s.add(t, [1, 10, 0]);
        }
        assert_eq!(
            s.total,
            [WINDOW_CAP as u64 + 10, 10 * (WINDOW_CAP as u64 + 10), 0]
        );
        assert!(s.events.len() <= WINDOW_CAP);
        s.evict(1_000_000, 1);
        assert_eq!(s.total, [0, 0, 0]);
    }

    #[test]
    fn private_and_configured_devices() {
        assert!(is_device(&[], "192.168.1.5".parse().unwrap()));
        assert!(is_device(&[], "fd00::5".parse().unwrap()));
        assert!(!is_device(&[], "203.0.113.5".parse().unwrap()));
        let nets = ["198.51.100.0/24".parse().unwrap()];
        assert!(is_device(&nets, "198.51.100.5".parse().unwrap()));
        assert!(!is_device(&nets, "192.168.1.5".parse().unwrap()));
    }
}
