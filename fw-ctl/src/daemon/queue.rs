//! The bounded queue of flow records waiting for the broker. When it is full the
//! oldest record is dropped (the newest traffic matters most to a detector) and
//! counted; the count travels in the next [`tad_wire::FlowBatch`]
//! (`dropped_records`) and in the counters snapshot.

use std::collections::VecDeque;

/// A FIFO of at most `capacity` items that drops its oldest item when full.
#[derive(Debug)]
pub struct DropOldest<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// Items dropped since creation.
    pub dropped_total: u64,
    /// Items dropped since the last [`Self::take_dropped`].
    dropped_pending: u64,
}

impl<T> DropOldest<T> {
    /// An empty queue holding at most `capacity` (>= 1) items.
    pub fn new(capacity: usize) -> Self {
        DropOldest {
            items: VecDeque::with_capacity(capacity.clamp(1, 65_536)),
            capacity: capacity.max(1),
            dropped_total: 0,
            dropped_pending: 0,
        }
    }

    /// Appends an item, dropping the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.dropped_total += 1;
            self.dropped_pending += 1;
        }
        self.items.push_back(item);
    }

    /// Removes up to `n` of the oldest items.
    pub fn pop_batch(&mut self, n: usize) -> Vec<T> {
        let n = n.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// Puts items back at the front (a publish that failed), oldest first; items
    /// that no longer fit are dropped and counted.
    pub fn requeue_front(&mut self, items: Vec<T>) {
        for item in items.into_iter().rev() {
            if self.items.len() == self.capacity {
                self.dropped_total += 1;
                self.dropped_pending += 1;
                continue;
            }
            self.items.push_front(item);
        }
    }

    /// Drops counted since the previous call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_pending)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_and_counts() {
        let mut q = DropOldest::new(3);
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.dropped_total, 2);
        assert_eq!(q.take_dropped(), 2);
        assert_eq!(q.take_dropped(), 0);
        assert_eq!(q.pop_batch(10), vec![2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn requeue_keeps_order() {
        let mut q = DropOldest::new(4);
        for i in 0..4 {
            q.push(i);
        }
        let b = q.pop_batch(2);
        q.push(9);
        q.requeue_front(b);
        assert_eq!(q.pop_batch(10), vec![1, 2, 3, 9]);
        assert_eq!(q.dropped_total, 1);
    }
}
