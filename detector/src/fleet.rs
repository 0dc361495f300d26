//! Fleet building blocks: partition ownership that follows the live detectors,
//! and the check of the gateways' partition count against the detector's.
//!
//! Ownership is rendezvous (highest-random-weight) hashing, Thaler and Ravishankar,
//! "Using name-based mappings to increase hit rates", IEEE/ACM ToN 6(1), 1998:
//! partition `p` belongs to the live detector `d` with the largest
//! [`weight`]`(d, p)`, ties broken by the smaller id. Every detector that sees the
//! same live set computes the same owners without talking to the others; when a
//! detector leaves, only the partitions it owned move (each to the runner-up), and
//! when one joins it takes only the partitions it now wins. The live set is meant
//! to come from the detectors' retained status topics (online, or offline by the
//! broker's Last Will after 1.5 × keep-alive), so the takeover time of a dead
//! detector's partitions is keep-alive × 1.5 + one detection window. See
//! `docs/fleet.md` for what is wired and what is not yet.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Which gateways a block goes to (`[fleet] block_on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOn {
    /// The gateway whose flows or evidence showed the source.
    #[default]
    Seen,
    /// Also every other gateway whose retained status says online: a source
    /// caught at one site is blocked at all of them. SYN authentication stays
    /// with the gateway of the victim.
    All,
}

/// The `[fleet]` section of the detector config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSection {
    pub block_on: BlockOn,
}

/// Weight of detector `id` for partition `p`: FNV-1a (64-bit; offset basis
/// 0xcbf29ce484222325, prime 0x100000001b3, as `tad_wire::partition_of`) over the
/// id's UTF-8 bytes, a 0xff separator and `p` big-endian, then a SplitMix64
/// finaliser so that ids differing in one byte get unrelated weights. Stable across
/// machines and builds (no random seed): every detector must compute the same.
pub fn weight(id: &str, p: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes().iter().chain(&[0xff]).chain(&p.to_be_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of partition `p` among the `live` detector ids (any order,
/// duplicates harmless); `None` if `live` is empty.
pub fn owner_of<S: AsRef<str>>(p: u16, live: &[S]) -> Option<&str> {
    live.iter()
        .map(AsRef::as_ref)
        .max_by(|a, b| weight(a, p).cmp(&weight(b, p)).then_with(|| b.cmp(a)))
}

/// The partitions in `0..count` that detector `me` owns among `live`. `me` is
/// counted as live whether or not `live` lists it (a detector always sees itself).
pub fn owned<S: AsRef<str>>(me: &str, live: &[S], count: u16) -> BTreeSet<u16> {
    let mut all: Vec<&str> = live.iter().map(AsRef::as_ref).collect();
    all.push(me);
    (0..count.max(1))
        .filter(|p| owner_of(*p, &all) == Some(me))
        .collect()
}

/// A gateway publishes to a different number of partitions than this detector
/// reads: records of some sources would land on partitions nobody reads (or be
/// read by the wrong owner), so the detector refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "partition count mismatch: gateway {gateway} publishes to {gateway_count} partitions, \
     this detector's [partitions] count = {detector_count}; set the same count on every \
     gateway ([export] partitions) and detector"
)]
pub struct CountMismatch {
    pub gateway: String,
    pub gateway_count: u16,
    pub detector_count: u16,
}

/// Compares a gateway's advertised partition count with the detector's.
/// `advertised = None` (a gateway too old to say) is accepted.
///
/// # Errors
/// [`CountMismatch`] naming the gateway and both counts when they differ.
pub fn check_count(
    gateway: &str,
    advertised: Option<u16>,
    detector_count: u16,
) -> Result<(), CountMismatch> {
    match advertised {
        Some(n) if n.max(1) != detector_count.max(1) => Err(CountMismatch {
            gateway: gateway.to_owned(),
            gateway_count: n,
            detector_count,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u16 = 64;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("detector-{i}")).collect()
    }

    #[test]
    fn every_partition_owned_exactly_once() {
        for n in 1..=5 {
            let live = ids(n);
            let mut seen = vec![0u32; N as usize];
            for me in &live {
                for p in owned(me, &live, N) {
                    seen[p as usize] += 1;
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "n={n}: {seen:?}");
        }
    }

    #[test]
    fn order_of_live_set_does_not_matter() {
        let live = ids(4);
        let mut rev = live.clone();
        rev.reverse();
        for p in 0..N {
            assert_eq!(owner_of(p, &live), owner_of(p, &rev));
        }
    }

    #[test]
    fn leaving_moves_only_the_leavers_partitions() {
        let live = ids(4);
        let gone = &live[1];
        let rest: Vec<String> = live.iter().filter(|d| *d != gone).cloned().collect();
        let mut moved = 0;
        for p in 0..N {
            let before = owner_of(p, &live).unwrap();
            let after = owner_of(p, &rest).unwrap();
            if before == gone {
                moved += 1;
                assert_ne!(after, gone);
            } else {
                assert_eq!(before, after, "partition {p} moved needlessly");
            }
        }
        assert!(moved > 0, "the leaver owned nothing of {N}");
    }

    #[test]
    fn spread_is_roughly_even() {
        let live = ids(4);
        for me in &live {
            let k = owned(me, &live, 256).len();
            assert!((32..=96).contains(&k), "{me} owns {k} of 256");
        }
    }

    #[test]
    fn me_counts_as_live() {
        let all = owned("detector-1", &[] as &[&str], 8);
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn count_check() {
        assert!(check_count("gateway-1", Some(4), 4).is_ok());
        assert!(check_count("gateway-1", None, 4).is_ok());
        let e = check_count("gateway-2", Some(8), 4).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("gateway-2") && msg.contains('8') && msg.contains('4'),
            "{msg}"
        );
    }
}
