//! One deadline structure per shard: every connection's next timeout in a min-heap, so the shard loop sleeps
//! until the earliest and wakes exactly the connections that are due.
//!
//! A connection's deadline changes all the time (every packet can move it), so entries are never updated in
//! place: a new one is pushed and the old one is recognised as stale when it surfaces (its instant no longer
//! matches the key's current deadline). The heap is rebuilt when stale entries outnumber live ones.

use std::cmp::Reverse;
use rustc_hash::FxHashMap as HashMap;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Instant;

pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    current: HashMap<K, Instant>,
}

impl<K: Copy + Eq + Hash + Ord> Default for Timers<K> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), current: HashMap::default() }
    }
}

impl<K: Copy + Eq + Hash + Ord> Timers<K> {
    /// Sets (or, with None, clears) `key`'s deadline.
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            None => {
                self.current.remove(&key);
            }
            Some(at) => {
                if self.current.insert(key, at) == Some(at) {
                    return;
                }
                self.heap.push(Reverse((at, key)));
                if self.heap.len() > 2 * self.current.len() + 64 {
                    self.heap = self.current.iter().map(|(k, at)| Reverse((*at, *k))).collect();
                }
            }
        }
    }

    pub fn remove(&mut self, key: K) {
        self.current.remove(&key);
    }

    /// A key whose deadline is at or before `now` (and clears it), or None.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.current.get(&key) == Some(&at) {
                self.current.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// The earliest live deadline.
    pub fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if self.current.get(&key) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_out_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(1u32, Some(ms(t0, 30)));
        t.set(2, Some(ms(t0, 10)));
        t.set(3, Some(ms(t0, 20)));
        assert_eq!(t.next(), Some(ms(t0, 10)));
        assert_eq!(t.pop_due(ms(t0, 5)), None);
        assert_eq!(t.pop_due(ms(t0, 25)), Some(2));
        assert_eq!(t.pop_due(ms(t0, 25)), Some(3));
        assert_eq!(t.pop_due(ms(t0, 25)), None);
        assert_eq!(t.next(), Some(ms(t0, 30)));
    }

    #[test]
    fn a_moved_deadline_replaces_the_old_one() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(1u32, Some(ms(t0, 10)));
        t.set(1, Some(ms(t0, 50)));
        assert_eq!(t.next(), Some(ms(t0, 50)), "the stale 10 ms entry is skipped");
        assert_eq!(t.pop_due(ms(t0, 20)), None);
        t.set(1, Some(ms(t0, 5)));
        assert_eq!(t.pop_due(ms(t0, 20)), Some(1));
        assert_eq!(t.pop_due(ms(t0, 100)), None, "fired once, not again for the 50 ms entry");
    }

    #[test]
    fn cleared_and_removed_keys_never_fire() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(1u32, Some(ms(t0, 10)));
        t.set(2, Some(ms(t0, 10)));
        t.set(1, None);
        t.remove(2);
        assert!(t.is_empty());
        assert_eq!(t.pop_due(ms(t0, 100)), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..10_000u64 {
            t.set(7u32, Some(ms(t0, i)));
        }
        assert!(t.heap.len() <= 2 * t.len() + 65, "heap holds {} entries for one key", t.heap.len());
        assert_eq!(t.pop_due(ms(t0, 10_000)), Some(7));
    }
}
