//! Sliding-window counters: events with a time (ms), evicted once older than the
//! window, with a running count of distinct keys. Bounded: past `cap` events the
//! oldest is evicted early (counted by the caller through [`Distinct::overflowed`]).

use std::{collections::VecDeque, hash::Hash};

use crate::HashMap;

/// Distinct keys seen in a sliding window.
#[derive(Clone, Debug)]
pub struct Distinct<K: Hash + Eq + Copy> {
    events: VecDeque<(u64, K)>,
    counts: HashMap<K, u32>,
    cap: usize,
    overflowed: u64,
}

impl<K: Hash + Eq + Copy> Distinct<K> {
    pub fn new(cap: usize) -> Self {
        Distinct {
            events: VecDeque::new(),
            counts: HashMap::default(),
            cap: cap.max(1),
            overflowed: 0,
        }
    }

    /// Drops events at or before `now_ms - window_ms`.
    pub fn evict(&mut self, now_ms: u64, window_ms: u64) {
        let Some(horizon) = now_ms.checked_sub(window_ms) else {
            return;
        };
        while let Some(&(t, _)) = self.events.front() {
            if t > horizon {
                break;
            }
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, k)) = self.events.pop_front()
            && let Some(c) = self.counts.get_mut(&k)
        {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&k);
            }
        }
    }

    pub fn insert(&mut self, t_ms: u64, k: K) {
        if self.events.len() >= self.cap {
            self.pop();
            self.overflowed += 1;
        }
        self.events.push_back((t_ms, k));
        *self.counts.entry(k).or_insert(0) += 1;
    }

    /// Distinct keys in the window.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// Events of key `k` in the window.
    pub fn count(&self, k: &K) -> u32 {
        self.counts.get(k).copied().unwrap_or(0)
    }

    /// Events in the window.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The keys in the window.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.counts.keys()
    }

    /// Events evicted early because the window was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Latest event time.
    pub fn last_ms(&self) -> Option<u64> {
        self.events.back().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_keys_inside_the_window() {
        let mut w = Distinct::new(100);
        w.insert(1_000, 1u16);
        w.insert(2_000, 2);
        w.insert(3_000, 1);
        assert_eq!((w.len(), w.distinct()), (3, 2));
        w.evict(62_000, 60_000);
        assert_eq!(
            (w.len(), w.distinct()),
            (1, 1),
            "events at or before 2 s are gone"
        );
        w.evict(63_000, 60_000);
        assert!(w.is_empty());
    }

    #[test]
    fn cap_evicts_the_oldest() {
        let mut w = Distinct::new(2);
        for (t, k) in [(1, 'a'), (2, 'b'), (3, 'c')] {
            w.insert(t, k);
        }
        assert_eq!((w.distinct(), w.overflowed()), (2, 1));
        assert!(!w.keys().any(|k| *k == 'a'));
    }
}
