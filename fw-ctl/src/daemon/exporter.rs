//! Flow export: each poll walks the kernel flow table, decides with
//! [`flow_meter::export::expiry`] which flows are due (IPFIX idle / active timeout,
//! end of flow; defaults and rationale in `flow_meter::export`), turns them into
//! [`FlowRecord`]s with [`flow_meter::export::to_record`], removes finished entries
//! from the map and remembers, for flows that go on, the statistics at their last
//! active-timeout export so the next record carries delta counts
//! ([`flow_meter::export::delta_since`]).
//!
//! One-packet flows never enter the flow map (`fw_common::admission`): each pass
//! also reads the pending array and exports the slots whose packet crossed the
//! idle timeout since the previous pass ([`Exporter::poll_pending`], the rule
//! `flow_meter::pending::due` the meter applies too).
//!
//! The detector turns each record into its feature vector with
//! `flow_meter::features::extract` (one code path, documented there), so the gateway
//! ships records, not features.

use std::collections::HashMap;

use flow_meter::{
    export::{Timeouts, delta_since, expiry, to_record},
    pending::due,
};
use fw_common::{
    admission::PendingFlow,
    flow::{FlowKey, FlowStats},
};
use tad_wire::{EndReason, FlowRecord};

use crate::{error::Result, kernel::FlowEntry};

/// A flow table the exporter can walk and prune (the kernel map, or a fake).
pub trait FlowTable {
    /// Every flow with its merged per-CPU statistics.
    fn flows(&self) -> Result<Vec<FlowEntry>>;
    /// Removes a flow; false when it was already gone.
    fn remove_flow(&mut self, key: &FlowKey) -> Result<bool>;
}

impl FlowTable for crate::kernel::Pinned {
    fn flows(&self) -> Result<Vec<FlowEntry>> {
        crate::kernel::Pinned::flows(self)
    }
    fn remove_flow(&mut self, key: &FlowKey) -> Result<bool> {
        crate::kernel::Pinned::remove_flow(self, key)
    }
}

/// A running flow's state at its last active-timeout export.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    /// Kernel time of that export, ns.
    at_ns: u64,
    stats: FlowStats,
    /// The last [`Exporter::poll`] pass that found the flow in the map.
    seen_pass: u64,
}

/// Export state across polls.
#[derive(Debug)]
pub struct Exporter {
    pub timeouts: Timeouts,
    /// Per running flow: when it was last exported by active timeout, the
    /// statistics at that moment, and the pass that last saw the flow in the map.
    baselines: HashMap<FlowKey, Baseline>,
    /// Export passes so far (marks which baselines' flows are still in the map).
    pass: u64,
    /// Records produced since start.
    pub exported_total: u64,
    /// Kernel time of the previous [`Self::poll_pending`] (ns).
    pending_prev_ns: Option<u64>,
}

impl Exporter {
    pub fn new(timeouts: Timeouts) -> Self {
        Exporter {
            timeouts,
            baselines: HashMap::new(),
            pass: 0,
            exported_total: 0,
            pending_prev_ns: None,
        }
    }

    /// The one-packet flows of the pending array `slots` that are due at `now_ns`
    /// (kernel clock): those whose packet crossed the idle timeout since the
    /// previous call, as idle-timeout records. The first call exports none (it
    /// starts the window: flows that expired while no daemon ran are not
    /// exported twice after a restart).
    pub fn poll_pending(
        &mut self,
        slots: &[PendingFlow],
        now_ns: u64,
        unix_offset_ns: i128,
    ) -> Vec<FlowRecord> {
        let Some(prev) = self.pending_prev_ns.replace(now_ns) else {
            return Vec::new();
        };
        let idle = self.timeouts.idle.as_nanos() as u64;
        let out: Vec<FlowRecord> = slots
            .iter()
            .filter(|s| due(s, prev, now_ns, idle))
            .map(|s| {
                to_record(
                    &s.key,
                    &s.stats(),
                    1,
                    unix_offset_ns,
                    EndReason::IdleTimeout,
                )
            })
            .collect();
        self.exported_total += out.len() as u64;
        out
    }

    /// One export pass at `now_ns` (kernel clock). `unix_offset_ns` converts kernel
    /// timestamps to Unix time ([`crate::clock::unix_offset_ns`]).
    pub fn poll<T: FlowTable + ?Sized>(
        &mut self,
        table: &mut T,
        now_ns: u64,
        unix_offset_ns: i128,
    ) -> Result<Vec<FlowRecord>> {
        let flows = table.flows()?;
        let mut out = Vec::new();
        self.pass += 1;
        let pass = self.pass;
        for f in flows {
            let base = self.baselines.get_mut(&f.key).map(|b| {
                b.seen_pass = pass;
                *b
            });
            // An entry evicted and recreated under the same key is a new flow: a
            // baseline taken from a flow with another start does not apply.
            let base = base.filter(|b| b.stats.first_seen_ns == f.stats.first_seen_ns);
            let Some(reason) = expiry(&f.stats, now_ns, base.map(|b| b.at_ns), &self.timeouts)
            else {
                continue;
            };
            let stats = match base {
                Some(b) => delta_since(&f.stats, &b.stats),
                None => f.stats,
            };
            let has_packets = stats.packets() > 0;
            if reason == EndReason::ActiveTimeout {
                self.baselines.insert(
                    f.key,
                    Baseline {
                        at_ns: now_ns,
                        stats: f.stats,
                        seen_pass: pass,
                    },
                );
            } else {
                self.baselines.remove(&f.key);
                table.remove_flow(&f.key)?;
            }
            if has_packets {
                out.push(to_record(
                    &f.key,
                    &stats,
                    f.cpus_seen,
                    unix_offset_ns,
                    reason,
                ));
            }
        }
        // Flows the kernel evicted (LRU) take their baselines with them.
        self.baselines.retain(|_, b| b.seen_pass == pass);
        self.exported_total += out.len() as u64;
        Ok(out)
    }

    /// Running flows being tracked for delta export.
    pub fn tracked(&self) -> usize {
        self.baselines.len()
    }
}

/// A flow table in memory (tests).
#[derive(Clone, Debug, Default)]
pub struct MemFlows {
    pub flows: HashMap<FlowKey, FlowStats>,
}

impl FlowTable for MemFlows {
    fn flows(&self) -> Result<Vec<FlowEntry>> {
        Ok(self
            .flows
            .iter()
            .map(|(k, s)| FlowEntry {
                key: *k,
                stats: *s,
                cpus_seen: 1,
            })
            .collect())
    }
    fn remove_flow(&mut self, key: &FlowKey) -> Result<bool> {
        Ok(self.flows.remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fw_common::flow::{PacketMeta, SIDE_A, SIDE_B, tcp_flags, v4_mapped};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn tcp(flags: u8) -> PacketMeta {
        PacketMeta {
            ip_len: 60,
            tcp_flags: flags,
            is_tcp: true,
            icmp: None,
        }
    }

    fn key() -> FlowKey {
        FlowKey::new(
            v4_mapped([192, 0, 2, 10]),
            40000,
            v4_mapped([198, 51, 100, 5]),
            443,
            6,
            4,
            0,
        )
        .0
    }

    /// `f` with one ACK from side A at each whole second in `secs` (since 1 s).
    fn acks(mut f: FlowStats, secs: std::ops::Range<u64>) -> FlowStats {
        for i in secs {
            f.account(SIDE_A, &tcp(tcp_flags::ACK), S + i * S);
        }
        f
    }

    #[test]
    fn one_packet_flows_leave_the_pending_array_once_after_the_idle_timeout() {
        let mut slot = PendingFlow::default();
        let (k, side) = FlowKey::new(
            v4_mapped([198, 51, 100, 9]),
            50000,
            v4_mapped([192, 0, 2, 10]),
            23,
            6,
            4,
            0,
        );
        slot.set(&k, side, &tcp(tcp_flags::SYN), S);
        let slots = [PendingFlow::default(), slot];
        let mut ex = Exporter::new(t());
        assert!(
            ex.poll_pending(&slots, S, 0).is_empty(),
            "first pass starts the window"
        );
        assert!(
            ex.poll_pending(&slots, 5 * S, 0).is_empty(),
            "idle 5 s not over"
        );
        let r = ex.poll_pending(&slots, 6 * S, 0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].end_reason, EndReason::IdleTimeout);
        assert_eq!(r[0].packets(), 1);
        assert_eq!(r[0].start_ms, 1_000);
        assert!(
            ex.poll_pending(&slots, 7 * S, 0).is_empty(),
            "exported once"
        );
        assert_eq!(ex.exported_total, 1);
    }

    fn t() -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(5),
            active: Duration::from_secs(10),
            end_grace: Duration::from_millis(500),
        }
    }

    #[test]
    fn ended_flow_is_exported_once_and_removed() {
        let mut table = MemFlows::default();
        let mut f = FlowStats::default();
        f.account(SIDE_A, &tcp(tcp_flags::SYN), S);
        f.account(SIDE_B, &tcp(tcp_flags::RST | tcp_flags::ACK), S + 1_000);
        table.flows.insert(key(), f);
        let mut ex = Exporter::new(t());
        assert!(
            ex.poll(&mut table, S + 100, 0).unwrap().is_empty(),
            "inside the end grace"
        );
        let r = ex.poll(&mut table, 2 * S, 0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].end_reason, EndReason::EndOfFlow);
        assert_eq!((r[0].fwd.packets, r[0].bwd.packets), (1, 1));
        assert!(table.flows.is_empty());
        assert!(ex.poll(&mut table, 3 * S, 0).unwrap().is_empty());
    }

    #[test]
    fn long_flow_reports_deltas_then_idles_out() {
        let mut table = MemFlows::default();
        let f = acks(FlowStats::default(), 0..12);
        table.flows.insert(key(), f);
        let mut ex = Exporter::new(t());
        let r = ex.poll(&mut table, 12 * S, 0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].end_reason, EndReason::ActiveTimeout);
        assert_eq!(r[0].packets(), 12);
        assert_eq!(table.flows.len(), 1, "a running flow stays in the map");
        // Three more packets, then silence past the idle timeout.
        table.flows.insert(key(), acks(table.flows[&key()], 12..15));
        assert!(ex.poll(&mut table, 16 * S, 0).unwrap().is_empty());
        let r = ex.poll(&mut table, 21 * S, 0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].end_reason, EndReason::IdleTimeout);
        assert_eq!(r[0].packets(), 3, "delta since the active-timeout export");
        assert!(table.flows.is_empty());
        assert_eq!(ex.tracked(), 0);
        assert_eq!(ex.exported_total, 2);
    }

    #[test]
    fn evicted_or_recreated_flows_lose_their_baseline() {
        let mut table = MemFlows::default();
        let f = acks(FlowStats::default(), 0..12);
        table.flows.insert(key(), f);
        let mut ex = Exporter::new(t());
        assert_eq!(ex.poll(&mut table, 12 * S, 0).unwrap().len(), 1);
        assert_eq!(ex.tracked(), 1);
        // The kernel evicted the flow (LRU): its baseline goes with it.
        table.flows.clear();
        assert!(ex.poll(&mut table, 13 * S, 0).unwrap().is_empty());
        assert_eq!(ex.tracked(), 0, "no baseline outlives its flow");

        // A flow recreated under the same key with another start is new: its
        // first record carries all its packets, not a delta.
        table.flows.insert(key(), f);
        assert_eq!(ex.poll(&mut table, 12 * S, 0).unwrap().len(), 1);
        table
            .flows
            .insert(key(), acks(FlowStats::default(), 20..24));
        let r = ex.poll(&mut table, 30 * S, 0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].packets(), 4, "all of the new flow's packets");
    }
}
