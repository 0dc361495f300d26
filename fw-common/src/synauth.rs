//! SYN authentication for a protected service under a spoofed SYN flood (maps
//! [`crate::maps::SYN_AUTH`] and [`crate::maps::SYN_VALIDATED`]).
//!
//! Blocking the sources of a spoofed flood is useless (they are random) and a rate
//! limit on the victim drops legitimate clients with the flood. Instead, while a
//! service (address, TCP port) is protected, the XDP program answers a SYN from a
//! source it has not yet seen prove itself with a SYN-ACK of its own (`XDP_TX`),
//! never forwarding the SYN: the flood never reaches the victim and opens no flow.
//!
//! # The challenge (a SYN cookie carried back by the client's RST)
//! The SYN-ACK's acknowledgment number is a SYN cookie for the client's 4-tuple,
//! made by the kernel's own `bpf_tcp_raw_gen_syncookie_ipv4/ipv6` (its secret, its
//! two-minute validity; Linux `net/ipv4/syncookies.c`) over the tuple with a client
//! ISN of 0, so it does not acknowledge the client's SYN (whose ISN is another
//! number). A real TCP client in SYN-SENT answers an unacceptable acknowledgment
//! with a RST whose sequence number is that acknowledgment (RFC 9293 §3.10.7.3)
//! and stays in SYN-SENT; a spoofed source never sees the SYN-ACK. The program
//! checks the RST's sequence number with `bpf_tcp_raw_check_syncookie_ipv4/ipv6`
//! (as the ACK of that ISN-0 handshake: seq 1, ack cookie + 1); a valid one puts
//! the source in [`crate::maps::SYN_VALIDATED`] for
//! [`crate::config::GatewayConfig::syn_auth_ttl_s`] and is consumed (`XDP_DROP`).
//! The client's SYN retransmission (after its initial RTO, 1 s on Linux, RFC 6298
//! §2) passes, and so does every later SYN of that source while it stays
//! validated: a legitimate client's first connection is one RTO slower, the
//! others are not slowed at all.
//!
//! Why not a SYN proxy: answering the client's *ACK* (the kernel sample
//! `samples/bpf/xdp_synproxy`) leaves a connection the server never saw; the
//! sample hands it to netfilter's SYNPROXY target and conntrack, which rewrite the
//! sequence numbers of the whole connection. This gateway has no netfilter rules;
//! the RST challenge needs no per-connection state and no rewriting after it.
//!
//! A SYN that cannot be answered (IPv4 with options, IPv6 with extension headers
//! before TCP, a cookie helper error) is held to the entry's fallback rate
//! ([`SynAuthEntry::fallback_pps`], GCRA per service) instead.

/// Key of [`crate::maps::SYN_AUTH`]: a protected TCP service, or with port 0 every
/// TCP port of the host (looked up after the exact service). 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Server address, network byte order, IPv4-mapped for IPv4.
    pub addr: [u8; 16],
    /// Server TCP port, host byte order; 0 = every port of `addr`.
    pub port: u16,
    pub _pad: [u8; 2],
}

/// Value of [`crate::maps::SYN_AUTH`]. 64 bytes. The counters are incremented by
/// the program with atomic adds, so they are exact across CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynAuthEntry {
    /// End of the protection, `bpf_ktime_get_ns` clock (ns); 0 = until removed.
    pub expires_ns: u64,
    /// SYN-ACK challenges sent.
    pub challenged: u64,
    /// Sources that proved themselves (valid cookie in their RST).
    pub validated: u64,
    /// SYNs of validated sources passed to the server.
    pub passed: u64,
    /// SYNs that could not be challenged and were over the fallback rate (dropped).
    pub limited: u64,
    /// GCRA state of the fallback rate ([`crate::rate::gcra_admit`]), ns.
    pub fallback_tat_ns: u64,
    /// Fallback rate for SYNs that cannot be challenged, packets/s; 0 = pass them.
    pub fallback_pps: u32,
    /// Fallback burst, packets.
    pub fallback_burst: u32,
    /// Identifier of the rule or verdict that switched the protection on (0 = none).
    pub rule_id: u32,
    /// `crate::filter::ORIGIN_*` code.
    pub origin: u8,
    pub _pad: [u8; 3],
}

impl SynAuthEntry {
    /// Whether the protection is in force at `now_ns`.
    #[inline(always)]
    pub fn active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Default [`crate::config::GatewayConfig::syn_auth_ttl_s`]: a validated source
/// stays validated for 10 minutes.
pub const DEFAULT_VALIDATED_TTL_S: u32 = 600;

/// Window of the challenge SYN-ACK, bytes (any value: the client resets it).
pub const CHALLENGE_WINDOW: u16 = 1024;

/// Ones' complement sum of 16-bit big-endian words (RFC 1071), not yet folded.
#[inline(always)]
pub fn csum_add_bytes(mut sum: u64, b: &[u8]) -> u64 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u64;
        i += 2;
    }
    if i < b.len() {
        sum += (b[i] as u64) << 8;
    }
    sum
}

/// Folds a ones' complement sum to 16 bits and complements it (the checksum field).
#[inline(always)]
pub fn csum_fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The 20-byte TCP header of a challenge (no options): ports swapped from the SYN
/// (`client_port` → `server_port`), `seq`, `ack` (the cookie), flags SYN|ACK,
/// checksum 0 (filled in by the caller).
#[inline(always)]
pub fn challenge_tcp_header(server_port: u16, client_port: u16, seq: u32, ack: u32) -> [u8; 20] {
    let sp = server_port.to_be_bytes();
    let cp = client_port.to_be_bytes();
    let s = seq.to_be_bytes();
    let a = ack.to_be_bytes();
    let w = CHALLENGE_WINDOW.to_be_bytes();
    [
        sp[0], sp[1], cp[0], cp[1], s[0], s[1], s[2], s[3], a[0], a[1], a[2], a[3], 0x50, 0x12,
        w[0], w[1], 0, 0, 0, 0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_checksum() {
        // RFC 1071 §3's example words 0001 f203 f4f5 f6f7 sum to ddf2 (folded);
        // the checksum is its complement.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_fold(csum_add_bytes(0, &b)), !0xddf2);
        // A buffer with its own checksum inserted sums to 0xffff (folds to 0).
        let mut h = challenge_tcp_header(80, 40000, 7, 9);
        let c = csum_fold(csum_add_bytes(0, &h));
        h[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(csum_fold(csum_add_bytes(0, &h)), 0);
    }

    #[test]
    fn challenge_header_layout() {
        let h = challenge_tcp_header(80, 40000, 1, 0xdead_beef);
        assert_eq!(u16::from_be_bytes([h[0], h[1]]), 80);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 40000);
        assert_eq!(u32::from_be_bytes([h[8], h[9], h[10], h[11]]), 0xdead_beef);
        assert_eq!(h[12] >> 4, 5, "data offset: 5 words, no options");
        assert_eq!(h[13], 0x12, "SYN|ACK");
        assert_eq!(core::mem::size_of::<SynAuthEntry>(), 64);
        assert_eq!(core::mem::size_of::<ServiceKey>(), 20);
    }
}
