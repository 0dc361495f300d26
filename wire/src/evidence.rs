//! Evidence at packet speed on the bus: what the gateway's XDP program counted per
//! address and epoch (`fw_common::evidence`), published every poll
//! (`[evidence] poll_interval_ms`, 250 ms by default) and at once when the program
//! raises an event, whether or not any flow has ended.
//!
//! One [`EpochEvidence`] describes one address in one kernel epoch (1 s). Counts
//! only grow within an epoch, so a receiver keeps the latest record per (address,
//! epoch) and, over a window of epochs, ORs the bitmaps and adds the counts;
//! [`distinct_estimate`] turns a bitmap into a distinct count (linear counting).

use std::net::IpAddr;

pub use fw_common::evidence::{BITMAP_BITS, BITMAP_WORDS, EPOCH_NS};
use serde::{Deserialize, Serialize};

use crate::{Message, NodeId};

/// Whose evidence a record is: the sender's (its new flows, distinct destinations
/// and ports, the answers it got) or the receiver's (flows opened towards it,
/// distinct sources, ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceRole {
    Source,
    Destination,
}

/// One address's counts in one kernel epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochEvidence {
    pub addr: IpAddr,
    pub role: EvidenceRole,
    /// Start of the epoch, Unix ms (the gateway's clock).
    pub epoch_start_ms: u64,
    /// Peer bitmap (destinations of a source, sources of a destination): bit
    /// `hash(peer) mod 256`, word `i` holds bits `64 i .. 64 i + 63`.
    pub hosts: [u64; BITMAP_WORDS],
    /// Destination-port bitmap, same layout (TCP and UDP).
    pub ports: [u64; BITMAP_WORDS],
    /// New flows opened (by a source, towards a destination).
    pub new_flows: u32,
    /// Of them: TCP SYN without ACK.
    pub syn: u32,
    /// Of them: TCP without SYN.
    pub tcp_other: u32,
    /// Of them: UDP.
    pub udp: u32,
    /// Of them: ICMP/ICMPv6 requests.
    pub icmp: u32,
    /// IP bytes of the first packets of those flows.
    pub bytes: u64,
    /// Source only: flows it opened that got a reply (SYN-ACK, UDP, ICMP reply).
    pub replies: u32,
    /// Source only: flows it opened that were refused (RST).
    pub refused: u32,
    /// Source only: ICMP errors addressed to it.
    pub icmp_errors: u32,
    /// Source only: RSTs it sent that opened a flow (resetting SYN-ACKs it never
    /// asked for: a sign that someone forges its address, e.g. nmap's idle scan).
    #[serde(default)]
    pub unsolicited_rsts: u32,
}

impl EpochEvidence {
    /// New flows without a reply (refused, ICMP error or silence).
    pub fn unreplied(&self) -> u32 {
        self.new_flows.saturating_sub(self.replies)
    }
}

/// What the XDP program reported through its event ring buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceEventKind {
    /// The source crossed `report_distinct` distinct hosts or ports this epoch.
    Report,
    /// The program quarantined the source provisionally: its new flows are dropped
    /// (would-drop in observe mode) until the entry expires, a detector confirms it
    /// with a block or lifts it with an unblock.
    Quarantine,
}

/// One event of the XDP program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceEvent {
    pub kind: EvidenceEventKind,
    pub addr: IpAddr,
    /// When the program raised it, Unix ms.
    pub at_ms: u64,
    /// Distinct destination hosts / ports over the last one to two epochs (set bits).
    pub union_hosts: u16,
    pub union_ports: u16,
    /// New flows, and of them unreplied ones, over the same epochs.
    pub new_flows: u32,
    pub unreplied: u32,
}

/// Evidence from one gateway for one partition (addresses map to partitions as flow
/// initiators do, [`crate::partition_of`]), published on
/// `tad/v1/gw/<gw>/evidence/<p>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceBatch {
    pub v: u16,
    pub gateway_id: NodeId,
    /// Sequence number per gateway and partition, from 0.
    pub seq: u64,
    pub partition: u16,
    /// Unix time of publication, ms.
    pub sent_at_ms: u64,
    /// Records whose counts changed since the previous batch.
    pub records: Vec<EpochEvidence>,
    /// Events since the previous batch.
    #[serde(default)]
    pub events: Vec<EvidenceEvent>,
}
message!(EvidenceBatch, "evidence batch");

/// Distinct items behind a bitmap of [`BITMAP_BITS`] bits: linear counting
/// (Whang, Vander-Zanden, Taylor 1990), `-m ln(zero / m)`. A full bitmap returns the
/// estimate for one clear bit (the largest it can tell, about 1,420).
pub fn distinct_estimate(bits: &[u64; BITMAP_WORDS]) -> f64 {
    let m = BITMAP_BITS as f64;
    let set: u32 = bits.iter().map(|w| w.count_ones()).sum();
    let zero = (BITMAP_BITS - set).max(1) as f64;
    -m * (zero / m).ln()
}

/// ORs `b` into `a`.
pub fn bitmap_or(a: &mut [u64; BITMAP_WORDS], b: &[u64; BITMAP_WORDS]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_counting_is_close_for_random_fills() {
        assert_eq!(distinct_estimate(&[0; 4]), 0.0);
        // 100 pseudo-random items into 256 bits.
        let mut bits = [0u64; 4];
        let mut x = 0x1234_5678u64;
        for _ in 0..100 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (x >> 56) as usize;
            bits[b / 64] |= 1 << (b % 64);
        }
        let e = distinct_estimate(&bits);
        assert!((80.0..=120.0).contains(&e), "{e}");
        assert!(distinct_estimate(&[u64::MAX; 4]) > 1_000.0);
    }
}
