//! The meter's copy of the XDP program's pending array: flows are admitted to the
//! flow table on their second packet (`fw_common::admission`, which documents the
//! rule), with the same hash, two-way buckets, expiry and replacement, so a
//! capture yields the flow table and records the gateway would have.
//!
//! One-packet flows leave as records the way the gateway daemon exports them: at
//! each export pass, every slot whose packet crossed the idle timeout since the
//! previous pass ([`due`]); slots are never cleared by the export (the kernel's
//! are not either), only by an admission. The daemon finds them by reading the
//! whole array; the meter keeps a queue of its pends in time order instead (a
//! pass costs what expired, not 65,536 slots) and checks at the pass that the slot
//! still holds that packet: the same outcome.

use std::collections::VecDeque;

use fw_common::{
    admission::{
        self, Admission, PENDING_SLOTS, PendingFlow, STAT_ADMITTED, STAT_PENDED,
        STAT_REPLACED_LIVE, STAT_SLOTS,
    },
    flow::{FlowKey, FlowStats, PacketMeta},
};

/// Whether a pending slot's one-packet flow is due for export at a pass at
/// `now_ns`, the previous pass having run at `prev_ns` (0: none): its packet
/// crossed the idle timeout `idle_ns` in `(prev_ns, now_ns]`. The gateway
/// daemon's and the meter's one rule.
pub fn due(slot: &PendingFlow, prev_ns: u64, now_ns: u64, idle_ns: u64) -> bool {
    if slot.first_seen_ns == 0 {
        return false;
    }
    let expires = slot.first_seen_ns.saturating_add(idle_ns);
    expires > prev_ns && expires <= now_ns
}

/// What a packet without a flow-table entry did in the pending array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pended {
    /// It was the flow's second packet: the flow's statistics so far (both
    /// packets), to insert into the flow table.
    Admitted(FlowStats),
    /// It is now pending (the flow's first packet, for the evidence rules).
    First,
}

/// The pending array (see the module docs).
pub struct PendingTable {
    slots: Vec<PendingFlow>,
    stats: [u64; STAT_SLOTS as usize],
    /// Pends in time order: (slot index, the packet's time).
    queue: VecDeque<(usize, u64)>,
}

impl Default for PendingTable {
    fn default() -> Self {
        PendingTable {
            slots: vec![PendingFlow::default(); PENDING_SLOTS as usize],
            stats: [0; STAT_SLOTS as usize],
            queue: VecDeque::new(),
        }
    }
}

impl PendingTable {
    /// The program's `open_flow` without `FLAG_ADMIT_FIRST_PACKET`: the packet of
    /// `key` sent by `side` at `now_ns` either admits its flow or becomes pending.
    pub fn packet(
        &mut self,
        key: &FlowKey,
        side: u8,
        meta: &PacketMeta,
        now_ns: u64,
        idle_ns: u64,
    ) -> Pended {
        let base = admission::bucket_of(key) as usize;
        let d = admission::decide(
            key,
            &self.slots[base],
            &self.slots[base + 1],
            now_ns,
            idle_ns,
        );
        match d {
            Admission::Admit(way) => {
                let pf = &mut self.slots[base + way as usize];
                let mut s = FlowStats::default();
                pf.account_into(&mut s);
                pf.first_seen_ns = 0;
                s.account(side, meta, now_ns);
                self.stats[STAT_ADMITTED as usize] += 1;
                Pended::Admitted(s)
            }
            Admission::Pend { way, replaces_live } => {
                self.slots[base + way as usize].set(key, side, meta, now_ns);
                self.queue.push_back((base + way as usize, now_ns));
                self.stats[STAT_PENDED as usize] += 1;
                if replaces_live {
                    self.stats[STAT_REPLACED_LIVE as usize] += 1;
                }
                Pended::First
            }
        }
    }

    /// The live pending flow of `key` at `now_ns`, if any (its first packet).
    pub fn get(&self, key: &FlowKey, now_ns: u64, idle_ns: u64) -> Option<&PendingFlow> {
        let base = admission::bucket_of(key) as usize;
        self.slots[base..base + admission::PENDING_WAYS as usize]
            .iter()
            .find(|s| s.live(now_ns, idle_ns) && s.key.same(key))
    }

    /// The one-packet flows due at a pass at `now_ns` (their packet crossed the
    /// idle timeout since the previous pass, see [`due`]), in time order.
    /// `now_ns` must not decrease between calls.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PendingFlow> {
        let mut out = Vec::new();
        while let Some(&(i, t)) = self.queue.front() {
            if t.saturating_add(idle_ns) > now_ns {
                break;
            }
            self.queue.pop_front();
            if self.slots[i].first_seen_ns == t {
                out.push(self.slots[i]);
            }
        }
        out
    }

    /// Every pending flow not exported yet (the meter's final flush), in time
    /// order; the table is empty afterwards.
    pub fn flush(&mut self) -> Vec<PendingFlow> {
        let mut out = Vec::new();
        for (i, t) in std::mem::take(&mut self.queue) {
            if self.slots[i].first_seen_ns == t {
                out.push(self.slots[i]);
                self.slots[i].first_seen_ns = 0;
            }
        }
        out
    }

    /// Whether no pending flow awaits export.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Every slot, as the kernel's array holds them (index = slot).
    pub fn slots(&self) -> &[PendingFlow] {
        &self.slots
    }

    /// Admission counts, indexed by `fw_common::admission::STAT_*`.
    pub fn counts(&self) -> [u64; STAT_SLOTS as usize] {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use fw_common::flow::{tcp_flags, v4_mapped};

    use super::*;

    const IDLE: u64 = 3_000_000_000;

    fn syn() -> PacketMeta {
        PacketMeta {
            ip_len: 60,
            tcp_flags: tcp_flags::SYN,
            is_tcp: true,
            icmp: None,
        }
    }

    fn key(sport: u16) -> (FlowKey, u8) {
        FlowKey::new(
            v4_mapped([192, 0, 2, 7]),
            sport,
            v4_mapped([198, 51, 100, 1]),
            80,
            6,
            4,
            0,
        )
    }

    #[test]
    fn a_one_packet_flow_is_due_once_after_the_idle_timeout() {
        let mut t = PendingTable::default();
        let (k, side) = key(1234);
        assert_eq!(t.packet(&k, side, &syn(), 1_000, IDLE), Pended::First);
        assert!(t.expire(1_000 + IDLE - 1, IDLE).is_empty());
        assert!(!due(&t.slots()[0], 0, 0, IDLE));
        let slot = *t.get(&k, 1_000, IDLE).expect("pending");
        assert!(!due(&slot, 0, 1_000 + IDLE - 1, IDLE));
        assert!(due(&slot, 1_000 + IDLE - 1, 1_000 + IDLE, IDLE));
        let out = t.expire(1_000 + IDLE, IDLE);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stats().packets(), 1);
        // The next pass does not export it again, and it admits nothing any more.
        assert!(!due(&slot, 1_000 + IDLE, 2_000 + IDLE, IDLE));
        assert!(t.expire(2_000 + IDLE, IDLE).is_empty());
        assert!(t.get(&k, 1_000 + IDLE, IDLE).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn the_answer_admits_and_frees_the_slot() {
        let mut t = PendingTable::default();
        let (k, side) = key(1234);
        t.packet(&k, side, &syn(), 1_000, IDLE);
        let synack = PacketMeta {
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            ..syn()
        };
        let Pended::Admitted(s) = t.packet(&k, 1 - side, &synack, 2_000, IDLE) else {
            panic!("the answer must admit the flow");
        };
        assert_eq!((s.packets(), s.opener, s.first_seen_ns), (2, side, 1_000));
        assert!(t.expire(u64::MAX, IDLE).is_empty());
        assert!(t.flush().is_empty());
        assert_eq!(t.counts(), [1, 1, 0]);
    }
}
