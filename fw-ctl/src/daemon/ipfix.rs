//! IPFIX export (RFC 7011) of the gateway's flow records to a standard collector
//! (nfdump's nfcapd, pmacct, ntop, Wireshark...), beside the MQTT `FlowBatch`es.
//!
//! The daemon hands every [`FlowRecord`] the exporter produced (`[export]`
//! timeouts, `flow_meter::export`) to [`IpfixExporter::export`] as well as to the
//! bus queue; with `[ipfix] collector` unset nothing here runs.
//!
//! # What goes on the wire
//! UDP datagrams to `[ipfix] collector`, one IPFIX Message each (RFC 7011 §3):
//!
//! ```text
//!  Message Header (16 bytes, §3.1): version 10 | length | export time (Unix s)
//!                                   | sequence number | observation domain id
//!  Template Set (set id 2, §3.4.1): template 256 (IPv4) and 257 (IPv6), 13 fields each
//!  Data Set (set id 256 or 257):    data records, fixed length, no padding
//! ```
//!
//! - The **sequence number** is, as §3.1 defines it, the number of data records
//!   sent in this observation domain before this message (mod 2^32).
//! - **Templates** go out in the first message and again, before the data, in the
//!   first message after every `template_refresh_s`, with or without data (§8.4:
//!   over UDP an exporter MUST resend its templates periodically; a collector that
//!   restarted has lost them). No template withdrawals (§8.4 forbids them on UDP).
//! - Each message is at most `max_message_bytes` long (the whole IPFIX message, the
//!   UDP payload; default 1400 so that it fits a 1500-byte path MTU with IPv6 and
//!   UDP headers, §10.3.3). A data set per template; records never straddle messages.
//! - All integers are in network byte order (big-endian), addresses as their 4 or
//!   16 octets (RFC 7011 §6.1).
//!
//! # Biflows as two uniflow records
//! A [`FlowRecord`] is bidirectional (initiator → responder `fwd`, `bwd` back).
//! It is exported as **one uniflow data record per direction that has packets**:
//! the forward record with source = initiator, the reverse record with the
//! addresses and ports swapped. Chosen over RFC 5103 reverse information elements
//! (enterprise 29305) because every collector decodes plain uniflow records,
//! nfdump's nfcapd among them (the collector `fw-ctl/tests/ipfix.rs` checks
//! against). Both records carry the biflow's start and end time and end reason;
//! the MQTT record remains the richer one (per-flag counts, packet sizes, gaps).
//! The XDP program meters what arrives on the interfaces it is attached to, so a
//! flow whose replies leave through them unseen has a forward record only.
//!
//! # Why an own encoder
//! Fixed templates, fixed-length records, big-endian integers: a small encoder,
//! tested byte by byte below and against nfcapd. The Rust IPFIX crates looked at
//! are parsers (`ipfix`) or serialise a message built by hand (`netflow_parser`);
//! neither keeps an exporting process's sequence numbers, template refresh and
//! message size limit, which are most of what is here.
//!
//! # Information elements (RFC 7012 §5 and the IANA IPFIX registry)
//! | field | IE id | length | value |
//! |---|---|---|---|
//! | octetDeltaCount | 1 | 8 | IP bytes of this direction (since the last export of the flow) |
//! | packetDeltaCount | 2 | 8 | packets of this direction |
//! | flowStartMilliseconds | 152 | 8 | `start_ms`, Unix ms |
//! | flowEndMilliseconds | 153 | 8 | `start_ms + duration_us / 1000`, Unix ms |
//! | sourceIPv4Address / sourceIPv6Address | 8 / 27 | 4 / 16 | sender of this direction |
//! | destinationIPv4Address / destinationIPv6Address | 12 / 28 | 4 / 16 | receiver |
//! | sourceTransportPort | 7 | 2 | sender's port (0 for ICMP) |
//! | destinationTransportPort | 11 | 2 | receiver's port |
//! | protocolIdentifier | 4 | 1 | IP protocol number |
//! | tcpControlBits | 6 | 2 | OR of the TCP flags of this direction (low 8 bits) |
//! | vlanId | 58 | 2 | VLAN id, 0 untagged |
//! | flowEndReason | 136 | 1 | 1 idle timeout, 2 active timeout, 3 end of flow, 4 forced end |
//! | icmpTypeCodeIPv4 / icmpTypeCodeIPv6 | 32 / 139 | 2 | last ICMP type × 256 + code of this direction; 0 otherwise |

use std::{
    io,
    net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tad_wire::{DirCounters, EndReason, FlowRecord};

use crate::config::Ipfix;

/// IPFIX version number in the message header (RFC 7011 §3.1).
pub const VERSION: u16 = 10;
/// Set id of a Template Set (RFC 7011 §3.3.2).
pub const TEMPLATE_SET_ID: u16 = 2;
/// Template id of the IPv4 flow template (template ids start at 256, §3.4.1).
pub const TEMPLATE_V4: u16 = 256;
/// Template id of the IPv6 flow template.
pub const TEMPLATE_V6: u16 = 257;
/// Message header length, bytes (§3.1).
pub const HEADER_LEN: usize = 16;
/// Set header length, bytes (§3.3.2).
pub const SET_HEADER_LEN: usize = 4;

/// Information element ids used here (RFC 7012 §5, IANA "IPFIX Information Elements").
pub mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const VLAN_ID: u16 = 58;
    pub const FLOW_END_REASON: u16 = 136;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
}

/// The fields of a template, in record order: (IE id, length in bytes). `addr` is
/// 4 for the IPv4 template, 16 for the IPv6 one.
fn fields(v6: bool) -> [(u16, u16); 13] {
    let (src, dst, len, icmp) = if v6 {
        (
            ie::SOURCE_IPV6_ADDRESS,
            ie::DESTINATION_IPV6_ADDRESS,
            16,
            ie::ICMP_TYPE_CODE_IPV6,
        )
    } else {
        (
            ie::SOURCE_IPV4_ADDRESS,
            ie::DESTINATION_IPV4_ADDRESS,
            4,
            ie::ICMP_TYPE_CODE_IPV4,
        )
    };
    [
        (ie::OCTET_DELTA_COUNT, 8),
        (ie::PACKET_DELTA_COUNT, 8),
        (ie::FLOW_START_MILLISECONDS, 8),
        (ie::FLOW_END_MILLISECONDS, 8),
        (src, len),
        (dst, len),
        (ie::SOURCE_TRANSPORT_PORT, 2),
        (ie::DESTINATION_TRANSPORT_PORT, 2),
        (ie::PROTOCOL_IDENTIFIER, 1),
        (ie::TCP_CONTROL_BITS, 2),
        (ie::VLAN_ID, 2),
        (ie::FLOW_END_REASON, 1),
        (icmp, 2),
    ]
}

/// Length of one data record of the template, bytes (52 for IPv4, 76 for IPv6).
pub fn record_len(v6: bool) -> usize {
    fields(v6).iter().map(|(_, l)| *l as usize).sum()
}

/// The Template Set holding both templates (§3.4.1): 116 bytes.
pub fn template_set() -> Vec<u8> {
    let mut b = Vec::with_capacity(116);
    put16(&mut b, TEMPLATE_SET_ID);
    put16(&mut b, 0); // length, below
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let f = fields(v6);
        put16(&mut b, id);
        put16(&mut b, f.len() as u16);
        for (ie, len) in f {
            // Enterprise bit 0: IANA elements, no enterprise number (§3.2).
            put16(&mut b, ie);
            put16(&mut b, len);
        }
    }
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// flowEndReason value (RFC 7012 §5.11.4, IE 136).
pub fn end_reason_code(r: EndReason) -> u8 {
    match r {
        EndReason::IdleTimeout => 1,
        EndReason::ActiveTimeout => 2,
        EndReason::EndOfFlow => 3,
        EndReason::ForcedEnd => 4,
    }
}

/// One direction of a flow as a uniflow record (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uniflow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub vlan: u16,
    /// IP bytes.
    pub bytes: u64,
    pub packets: u64,
    /// OR of the TCP flags.
    pub tcp_flags: u8,
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms.
    pub end_ms: u64,
    /// flowEndReason code.
    pub end_reason: u8,
    /// ICMP type × 256 + code (0 when none).
    pub icmp_type_code: u16,
}

impl Uniflow {
    /// The uniflow records of a biflow: forward, then reverse, each only when that
    /// direction has packets (0, 1 or 2 records).
    pub fn of(r: &FlowRecord) -> impl Iterator<Item = Uniflow> + '_ {
        let end_ms = r.start_ms.saturating_add(r.duration_us / 1000);
        let one = move |d: &DirCounters, rev: bool| {
            let (src, dst, sport, dport) = if rev {
                (r.dst, r.src, r.dport, r.sport)
            } else {
                (r.src, r.dst, r.sport, r.dport)
            };
            Uniflow {
                src,
                dst,
                sport,
                dport,
                proto: r.proto,
                vlan: r.vlan,
                bytes: d.bytes,
                packets: d.packets,
                tcp_flags: d.tcp_flags_or,
                start_ms: r.start_ms,
                end_ms,
                end_reason: end_reason_code(r.end_reason),
                icmp_type_code: d.icmp.map_or(0, |(t, c)| u16::from_be_bytes([t, c])),
            }
        };
        [(&r.fwd, false), (&r.bwd, true)]
            .into_iter()
            .filter(|(d, _)| d.packets > 0)
            .map(move |(d, rev)| one(d, rev))
    }

    /// IPv6 template (by the source address; a flow never mixes families).
    fn v6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// Appends the data record in template order.
    fn encode(&self, b: &mut Vec<u8>) {
        put64(b, self.bytes);
        put64(b, self.packets);
        put64(b, self.start_ms);
        put64(b, self.end_ms);
        for a in [self.src, self.dst] {
            match a {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
        }
        put16(b, self.sport);
        put16(b, self.dport);
        b.push(self.proto);
        put16(b, u16::from(self.tcp_flags));
        put16(b, self.vlan);
        b.push(self.end_reason);
        put16(b, self.icmp_type_code);
    }
}

/// Builds IPFIX messages for one observation domain: sequence numbers and size
/// limit (no I/O; [`IpfixExporter`] sends what it makes).
#[derive(Clone, Debug)]
pub struct Encoder {
    pub observation_domain_id: u32,
    /// Largest message, bytes (the UDP payload).
    pub max_message_bytes: usize,
    /// Data records put into messages so far (mod 2^32): the next header's
    /// sequence number.
    pub sequence: u32,
}

impl Encoder {
    /// # Panics
    /// When `max_message_bytes` cannot hold the header and the template set
    /// (132 bytes); the config check asks for at least 512.
    pub fn new(observation_domain_id: u32, max_message_bytes: usize) -> Self {
        assert!(
            max_message_bytes >= HEADER_LEN + template_set().len(),
            "max_message_bytes too small for the templates"
        );
        Encoder {
            observation_domain_id,
            max_message_bytes,
            sequence: 0,
        }
    }

    /// The messages carrying `records` (each as its uniflow records), the first
    /// preceded by the template set when `templates`. `export_time_s` is the
    /// header's export time (Unix s). With no record and `templates`, one message
    /// with the templates only; with neither, none.
    pub fn encode(
        &mut self,
        records: &[FlowRecord],
        templates: bool,
        export_time_s: u32,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut msg = Message::start(self, export_time_s);
        if templates {
            msg.buf.extend_from_slice(&template_set());
        }
        for u in records.iter().flat_map(Uniflow::of) {
            let v6 = u.v6();
            let set = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
            let need = record_len(v6)
                + if msg.set == Some(set) {
                    0
                } else {
                    SET_HEADER_LEN
                };
            if msg.buf.len() + need > self.max_message_bytes {
                out.push(msg.finish());
                msg = Message::start(self, export_time_s);
            }
            msg.record(set, &u);
            self.sequence = self.sequence.wrapping_add(1);
        }
        if msg.buf.len() > HEADER_LEN {
            out.push(msg.finish());
        }
        out
    }
}

/// A message being filled.
struct Message {
    buf: Vec<u8>,
    /// The open data set: its template id and where its header starts.
    set: Option<u16>,
    set_at: usize,
}

impl Message {
    fn start(e: &Encoder, export_time_s: u32) -> Message {
        let mut buf = Vec::with_capacity(e.max_message_bytes);
        put16(&mut buf, VERSION);
        put16(&mut buf, 0); // length, set by finish
        put32(&mut buf, export_time_s);
        put32(&mut buf, e.sequence);
        put32(&mut buf, e.observation_domain_id);
        Message {
            buf,
            set: None,
            set_at: 0,
        }
    }

    fn close_set(&mut self) {
        if self.set.take().is_some() {
            let len = (self.buf.len() - self.set_at) as u16;
            self.buf[self.set_at + 2..self.set_at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn record(&mut self, set: u16, u: &Uniflow) {
        if self.set != Some(set) {
            self.close_set();
            self.set_at = self.buf.len();
            put16(&mut self.buf, set);
            put16(&mut self.buf, 0);
            self.set = Some(set);
        }
        u.encode(&mut self.buf);
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_set();
        let len = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// What the exporter sent, for the status file (`fw-ctl status --json`) and
/// `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpfixStats {
    /// The collector's resolved address.
    pub collector: String,
    /// IPFIX messages sent (datagrams the kernel accepted).
    pub messages_sent_total: u64,
    /// Data records in those messages (uniflow records: up to two per flow).
    pub records_sent_total: u64,
    /// Template sets sent.
    pub templates_sent_total: u64,
    /// Messages that could not be sent (socket error, full send buffer); their
    /// records are lost, and counted in the sequence numbers, so the collector
    /// sees the gap.
    pub send_errors_total: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The IPFIX exporting process: an unconnected, non-blocking UDP socket, the
/// [`Encoder`], and the template refresh clock.
#[derive(Debug)]
pub struct IpfixExporter {
    socket: UdpSocket,
    collector: SocketAddr,
    encoder: Encoder,
    template_refresh: Duration,
    /// When the templates were last sent; `None` before the first message.
    templates_at: Option<Instant>,
    pub stats: IpfixStats,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum IpfixError {
    #[error("ipfix.collector {collector:?}: cannot resolve: {source}")]
    Resolve {
        collector: String,
        #[source]
        source: io::Error,
    },
    #[error("ipfix.collector {collector:?}: no address")]
    NoAddress { collector: String },
    #[error("ipfix: cannot open a UDP socket: {0}")]
    Socket(#[source] io::Error),
}

impl IpfixExporter {
    /// The exporter `[ipfix]` asks for; `None` when `collector` is unset. The
    /// collector name is resolved once here (the first address is used).
    ///
    /// # Errors
    /// [`IpfixError`] when the collector does not resolve or no socket can be
    /// opened (the message names `ipfix.collector`).
    pub fn from_config(c: &Ipfix) -> Result<Option<IpfixExporter>, IpfixError> {
        let Some(name) = c.collector.as_deref() else {
            return Ok(None);
        };
        let collector = name
            .to_socket_addrs()
            .map_err(|source| IpfixError::Resolve {
                collector: name.into(),
                source,
            })?
            .next()
            .ok_or_else(|| IpfixError::NoAddress {
                collector: name.into(),
            })?;
        Self::new(
            collector,
            Encoder::new(c.observation_domain_id, c.max_message_bytes),
            Duration::from_secs(c.template_refresh_s),
        )
        .map(Some)
    }

    /// An exporter to `collector`.
    ///
    /// # Errors
    /// [`IpfixError::Socket`] when no UDP socket can be bound.
    pub fn new(
        collector: SocketAddr,
        encoder: Encoder,
        template_refresh: Duration,
    ) -> Result<IpfixExporter, IpfixError> {
        let any: SocketAddr = if collector.is_ipv6() {
            "[::]:0".parse().expect("an address")
        } else {
            "0.0.0.0:0".parse().expect("an address")
        };
        // Unconnected: a connected UDP socket fails its next send after an ICMP
        // port unreachable (collector not running yet), which would count a
        // spurious error.
        let socket = UdpSocket::bind(any).map_err(IpfixError::Socket)?;
        socket.set_nonblocking(true).map_err(IpfixError::Socket)?;
        Ok(IpfixExporter {
            socket,
            collector,
            encoder,
            template_refresh,
            templates_at: None,
            stats: IpfixStats {
                collector: collector.to_string(),
                ..Default::default()
            },
        })
    }

    /// The collector's address.
    pub fn collector(&self) -> SocketAddr {
        self.collector
    }

    /// Sends `records` (and the templates first, when due) now. Never blocks: a
    /// full socket buffer counts as a send error.
    pub fn export(&mut self, records: &[FlowRecord]) {
        self.export_at(records, Instant::now(), unix_s());
    }

    /// Sends the templates when they are due, even without records (call it
    /// periodically so a collector that restarted learns them while no flow ends).
    pub fn refresh(&mut self) {
        self.export(&[]);
    }

    fn export_at(&mut self, records: &[FlowRecord], now: Instant, export_time_s: u32) {
        let templates = self
            .templates_at
            .is_none_or(|t| now.duration_since(t) >= self.template_refresh);
        if records.is_empty() && !templates {
            return;
        }
        let msgs = self.encoder.encode(records, templates, export_time_s);
        if templates {
            self.templates_at = Some(now);
        }
        for (i, m) in msgs.iter().enumerate() {
            match self.socket.send_to(m, self.collector) {
                Ok(_) => {
                    self.stats.messages_sent_total += 1;
                    self.stats.records_sent_total += data_records(m);
                    if templates && i == 0 {
                        self.stats.templates_sent_total += 1;
                    }
                }
                Err(e) => {
                    self.stats.send_errors_total += 1;
                    self.stats.last_error = Some(format!("sending to {}: {e}", self.collector));
                    if templates && i == 0 {
                        // The collector may not have them: resend with the next message.
                        self.templates_at = None;
                    }
                }
            }
        }
    }
}

/// Data records in a message this module built (record lengths are fixed per set).
fn data_records(m: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = HEADER_LEN;
    while at + SET_HEADER_LEN <= m.len() {
        let id = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
        let body = len.saturating_sub(SET_HEADER_LEN);
        match id {
            TEMPLATE_V4 => n += (body / record_len(false)) as u64,
            TEMPLATE_V6 => n += (body / record_len(true)) as u64,
            _ => {}
        }
        at += len.max(SET_HEADER_LEN);
    }
    n
}

/// Unix time now, s (the header's export time field).
fn unix_s() -> u32 {
    (crate::clock::unix_ms() / 1000) as u32
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn rec(src: &str, dst: &str, fwd: (u64, u64), bwd: (u64, u64), why: EndReason) -> FlowRecord {
        let d = |(packets, bytes): (u64, u64), flags| DirCounters {
            packets,
            bytes,
            tcp_flags_or: flags,
            ..Default::default()
        };
        FlowRecord {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport: 22,
            proto: 6,
            vlan: 7,
            start_ms: 1_700_000_000_123,
            duration_us: 2_500_999,
            fwd: d(fwd, 0x1b),
            bwd: d(bwd, 0x12),
            iat_mean_us: 0.0,
            iat_std_us: 0.0,
            end_reason: why,
        }
    }

    #[test]
    fn template_set_bytes_follow_rfc7011_3_4_1() {
        let t = template_set();
        #[rustfmt::skip]
        let v4: [u8; 56] = [
            0x01, 0x00, 0x00, 13,   // template id 256, 13 fields
            0, 1, 0, 8,   0, 2, 0, 8,   0, 152, 0, 8,   0, 153, 0, 8,
            0, 8, 0, 4,   0, 12, 0, 4,  0, 7, 0, 2,     0, 11, 0, 2,
            0, 4, 0, 1,   0, 6, 0, 2,   0, 58, 0, 2,    0, 136, 0, 1,
            0, 32, 0, 2,
        ];
        assert_eq!(&t[..4], &[0, 2, 0, 116], "set id 2, length 116");
        assert_eq!(&t[4..60], &v4);
        assert_eq!(&t[60..64], &[0x01, 0x01, 0x00, 13], "template 257");
        assert_eq!(&t[80..88], &[0, 27, 0, 16, 0, 28, 0, 16], "IPv6 addresses");
        assert_eq!(&t[112..116], &[0, 139, 0, 2], "icmpTypeCodeIPv6");
        assert_eq!(t.len(), 116);
        assert_eq!((record_len(false), record_len(true)), (52, 76));
    }

    #[test]
    fn a_biflow_is_one_data_record_per_direction_with_packets() {
        let mut e = Encoder::new(0x0102_0304, 1400);
        let r = rec(
            "192.0.2.1",
            "198.51.100.2",
            (3, 180),
            (2, 120),
            EndReason::EndOfFlow,
        );
        let m = e.encode(std::slice::from_ref(&r), false, 0x6000_0001);
        assert_eq!(m.len(), 1);
        let m = &m[0];
        #[rustfmt::skip]
        let header = [
            0, 10, 0, (16 + 4 + 2 * 52) as u8,  // version 10, length 124
            0x60, 0, 0, 1,                      // export time
            0, 0, 0, 0,                         // sequence: no record before
            1, 2, 3, 4,                         // observation domain
        ];
        assert_eq!(&m[..16], &header);
        assert_eq!(
            &m[16..20],
            &[1, 0, 0, 108],
            "data set 256, 4 + 2 x 52 bytes"
        );
        #[rustfmt::skip]
        let fwd: [u8; 52] = [
            0, 0, 0, 0, 0, 0, 0, 180,                 // octetDeltaCount
            0, 0, 0, 0, 0, 0, 0, 3,                   // packetDeltaCount
            0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b, // flowStartMilliseconds 1_700_000_000_123
            0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x72, 0x3f, // flowEnd = start + 2500 ms
            192, 0, 2, 1,   198, 51, 100, 2,          // source, destination
            0x9c, 0x40, 0, 22,                        // ports 40000 -> 22
            6,                                        // TCP
            0, 0x1b,                                  // tcpControlBits
            0, 7,                                     // vlanId
            3,                                        // flowEndReason: end of flow
            0, 0,                                     // icmpTypeCodeIPv4: none
        ];
        assert_eq!(&m[20..72], &fwd);
        // The reverse record: addresses and ports swapped, its own counters.
        assert_eq!(&m[72..80], &120u64.to_be_bytes());
        assert_eq!(&m[80..88], &2u64.to_be_bytes());
        assert_eq!(&m[104..112], &[198, 51, 100, 2, 192, 0, 2, 1]);
        assert_eq!(&m[112..116], &[0, 22, 0x9c, 0x40]);
        assert_eq!(&m[117..119], &[0, 0x12]);
        assert_eq!(m.len(), 124);
        assert_eq!(e.sequence, 2, "two data records sent");

        // The next message's sequence number counts them.
        let m2 = e.encode(&[r], false, 0);
        assert_eq!(&m2[0][8..12], &[0, 0, 0, 2]);
    }

    #[test]
    fn a_direction_without_packets_is_not_exported() {
        let r = rec(
            "192.0.2.1",
            "198.51.100.2",
            (1, 60),
            (0, 0),
            EndReason::IdleTimeout,
        );
        let u: Vec<_> = Uniflow::of(&r).collect();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(u[0].end_reason, 1);
    }

    #[test]
    fn ipv6_records_use_their_own_set_and_template() {
        let mut e = Encoder::new(1, 1400);
        let v4 = rec(
            "192.0.2.1",
            "198.51.100.2",
            (1, 60),
            (0, 0),
            EndReason::IdleTimeout,
        );
        let mut v6 = rec(
            "2001:db8::1",
            "2001:db8::2",
            (1, 80),
            (0, 0),
            EndReason::ForcedEnd,
        );
        (v6.proto, v6.sport, v6.dport, v6.fwd.icmp) = (58, 0, 0, Some((128, 0)));
        let m = e.encode(&[v4, v6], true, 0);
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert_eq!(&m[16..18], &[0, 2], "templates first");
        let at = 16 + 116;
        assert_eq!(&m[at..at + 4], &[1, 0, 0, 56], "IPv4 set, one record");
        let at = at + 56;
        assert_eq!(&m[at..at + 4], &[1, 1, 0, 80], "IPv6 set, one record");
        let src = &m[at + 4 + 32..at + 4 + 48];
        assert_eq!(src, &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(m[at + 4 + 73], 4, "flowEndReason forced end");
        assert_eq!(
            &m[at + 4 + 74..at + 4 + 76],
            &[128, 0],
            "ICMPv6 echo request"
        );
        assert_eq!(m.len(), at + 80);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
        assert_eq!(data_records(m), 2);
    }

    #[test]
    fn messages_stay_under_the_limit_and_count_every_record() {
        let mut e = Encoder::new(1, 512);
        let recs: Vec<_> = (0..40)
            .map(|i| {
                let (s, d) = if i % 3 == 0 {
                    ("2001:db8::1", "2001:db8::2")
                } else {
                    ("192.0.2.1", "198.51.100.2")
                };
                rec(s, d, (1, 60), (1, 60), EndReason::ActiveTimeout)
            })
            .collect();
        let msgs = e.encode(&recs, true, 0);
        assert!(msgs.len() > 1);
        let mut seen = 0;
        for m in &msgs {
            assert!(m.len() <= 512, "{}", m.len());
            assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
            let seq = u32::from_be_bytes(m[8..12].try_into().unwrap());
            assert_eq!(seq, seen, "sequence = data records before this message");
            seen += data_records(m) as u32;
        }
        assert_eq!(seen, 80);
        assert_eq!(e.sequence, 80);
        assert_eq!(&msgs[0][16..18], &[0, 2], "templates only in the first");
        assert!(msgs[1..].iter().all(|m| m[16..18] != [0, 2]));
    }

    #[test]
    fn templates_are_resent_after_the_refresh_interval() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut x = IpfixExporter::new(
            rx.local_addr().unwrap(),
            Encoder::new(9, 1400),
            Duration::from_secs(60),
        )
        .unwrap();
        let r = rec(
            "192.0.2.1",
            "198.51.100.2",
            (1, 60),
            (0, 0),
            EndReason::IdleTimeout,
        );
        let t0 = Instant::now();
        let mut buf = [0u8; 2048];
        let mut first_set = |x: &mut IpfixExporter, at: Instant| {
            x.export_at(std::slice::from_ref(&r), at, 0);
            rx.recv(&mut buf).unwrap();
            u16::from_be_bytes([buf[16], buf[17]])
        };
        assert_eq!(first_set(&mut x, t0), TEMPLATE_SET_ID, "at start");
        assert_eq!(first_set(&mut x, t0 + Duration::from_secs(59)), TEMPLATE_V4);
        assert_eq!(
            first_set(&mut x, t0 + Duration::from_secs(60)),
            TEMPLATE_SET_ID,
            "after template_refresh_s"
        );
        // Without records, refresh sends a template-only message when due.
        x.export_at(&[], t0 + Duration::from_secs(61), 0);
        x.export_at(&[], t0 + Duration::from_secs(120), 0);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 116);
        assert_eq!(x.stats.messages_sent_total, 4);
        assert_eq!(x.stats.records_sent_total, 3);
        assert_eq!(x.stats.templates_sent_total, 3);
        assert_eq!(x.stats.send_errors_total, 0);
    }
}
