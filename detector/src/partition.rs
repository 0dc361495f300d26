//! Sharing the load between detector instances without splitting any source's
//! state.
//!
//! Gateways publish each flow record to partition `p = partition_of(initiator, n)`
//! (`tad_wire::partition_of`, FNV-1a of the initiator address) on
//! `tad/v1/gw/<gw>/flows/<p>`. Each detector instance takes a fixed set of
//! partitions (`[partitions] count = n, take = [...]`) and subscribes to
//! `tad/v1/gw/+/flows/<p>` for each. Every rule keyed by source (scans, per-source
//! floods, brute force, anomalies, trust of an offender) therefore sees all of that
//! source's flows in one instance, and the union of the instances' alerts equals a
//! single instance's. MQTT v5 shared subscriptions are not used for flows: they
//! balance per message and would split a source's state.
//!
//! Victim-keyed state (the per-victim SYN-flood count) is the exception: flows to
//! one victim come from many sources and so spread over the instances. Each
//! instance compares its share against `per_victim_half_open * taken / n` (a
//! uniformly spread spoofed flood puts that share on each), so each instance raises
//! the victim alert; the dashboard sees the same (kind, target) from several
//! detectors. The partition assignment is static: changing it means restarting the
//! instances (state is rebuilt within one window).

use std::{collections::BTreeSet, net::IpAddr};

use tad_wire::partition_of;

use crate::config::Partitions;

/// Which partitions one instance takes.
#[derive(Clone, Debug)]
pub struct Partitioner {
    count: u16,
    take: Option<BTreeSet<u16>>,
}

impl Partitioner {
    pub fn new(p: &Partitions) -> Self {
        let count = p.count.max(1);
        let take: BTreeSet<u16> = p.take.iter().copied().filter(|x| *x < count).collect();
        let take = (!take.is_empty() && take.len() < count as usize).then_some(take);
        Partitioner { count, take }
    }

    /// Replaces the partitions taken with `owned` (the fleet's live assignment,
    /// `crate::fleet::owned`); members `>= count` are ignored, and all or none
    /// of them means all (a lone detector takes everything).
    pub fn set_owned(&mut self, owned: &BTreeSet<u16>) {
        let take: BTreeSet<u16> = owned.iter().copied().filter(|x| *x < self.count).collect();
        self.take = (!take.is_empty() && take.len() < self.count as usize).then_some(take);
    }

    /// Whether this instance handles records initiated by `src`.
    pub fn takes(&self, src: IpAddr) -> bool {
        match &self.take {
            None => true,
            Some(t) => t.contains(&partition_of(src, self.count)),
        }
    }

    /// The partitions to subscribe to.
    pub fn partitions(&self) -> Vec<u16> {
        match &self.take {
            None => (0..self.count).collect(),
            Some(t) => t.iter().copied().collect(),
        }
    }

    /// Fraction of all partitions taken (scales victim-keyed thresholds).
    pub fn share(&self) -> f64 {
        match &self.take {
            None => 1.0,
            Some(t) => t.len() as f64 / self.count as f64,
        }
    }
}
