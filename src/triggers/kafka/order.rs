//! Which batch starts next. Pure.
//!
//! Without per-key ordering, batches start in the order they were cut, as soon as the
//! trigger's concurrency allows. With it (batches are then cut per key, see [`super::batch`]),
//! a key's batches start in the order they were cut and **one at a time**: the next batch of a
//! key waits until the previous one is settled (succeeded, dead-lettered or dropped), while
//! batches of other keys start meanwhile. Keys whose next batch can start take turns in the
//! order they became ready, so a key with a long backlog does not starve the others.

use std::collections::{HashMap, HashSet, VecDeque};

use super::batch::{Batch, Group};

pub struct Scheduler {
    ordered: bool,
    /// Unordered: every waiting batch, in order.
    fifo: VecDeque<Batch>,
    /// Ordered: each key's waiting batches, in order.
    queues: HashMap<Vec<u8>, VecDeque<Batch>>,
    /// Ordered: keys with a batch in flight.
    busy: HashSet<Vec<u8>>,
    /// Ordered: keys whose next batch may start (checked again when taken).
    ready: VecDeque<Vec<u8>>,
    waiting: usize,
}

impl Scheduler {
    pub fn new(ordered: bool) -> Self {
        Self { ordered, fifo: VecDeque::new(), queues: HashMap::new(), busy: HashSet::new(), ready: VecDeque::new(), waiting: 0 }
    }

    /// Batches waiting to start.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn push(&mut self, b: Batch) {
        self.waiting += 1;
        let Some(key) = b.group.clone().filter(|_| self.ordered) else {
            self.fifo.push_back(b);
            return;
        };
        let q = self.queues.entry(key.clone()).or_default();
        q.push_back(b);
        if q.len() == 1 && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The next batch that may start now; its key is then in flight until [`Self::finished`].
    pub fn take(&mut self) -> Option<Batch> {
        if let Some(b) = self.fifo.pop_front() {
            self.waiting -= 1;
            return Some(b);
        }
        while let Some(key) = self.ready.pop_front() {
            if self.busy.contains(&key) {
                continue;
            }
            let Some(q) = self.queues.get_mut(&key) else { continue };
            let Some(b) = q.pop_front() else { continue };
            if q.is_empty() {
                self.queues.remove(&key);
            }
            self.busy.insert(key);
            self.waiting -= 1;
            return Some(b);
        }
        None
    }

    /// The batch of `group` that was in flight is settled (or given up): the key's next batch
    /// may start.
    pub fn finished(&mut self, group: &Group) {
        let Some(key) = group.as_ref().filter(|_| self.ordered) else { return };
        if self.busy.remove(key) && self.queues.contains_key(key) {
            self.ready.push_back(key.clone());
        }
    }

    /// Forget the waiting records of a revoked partition; returns (messages, bytes) dropped.
    pub fn drop_partition(&mut self, partition: i32) -> (usize, usize) {
        let (mut n, mut cost) = (0, 0);
        let mut drop_in = |b: &mut Batch| {
            let (dn, dc) = b.drop_partition(partition);
            n += dn;
            cost += dc;
            !b.records.is_empty()
        };
        self.fifo.retain_mut(&mut drop_in);
        for q in self.queues.values_mut() {
            q.retain_mut(&mut drop_in);
        }
        self.queues.retain(|_, q| !q.is_empty());
        self.waiting = self.fifo.len() + self.queues.values().map(VecDeque::len).sum::<usize>();
        (n, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trigger::kafka::EventSchema;
    use crate::triggers::kafka::batch::{Record, Source};

    fn batch(key: &str, offset: i64) -> Batch {
        let src = Source::new("t", None, "1", EventSchema::RawData);
        let r = Record::new(&src, 0, offset, 1, Some(key.as_bytes()), Some(b"v"), vec![], None);
        let mut b = Batch { group: Some(key.as_bytes().to_vec()), records: vec![], bytes: 2 };
        b.bytes += r.event.len();
        b.records.push(r);
        b
    }

    fn first(b: &Batch) -> (String, i64) {
        (String::from_utf8(b.group.clone().unwrap()).unwrap(), b.records[0].offset)
    }

    #[test]
    fn one_batch_per_key_in_flight_in_order_and_keys_in_parallel() {
        let mut s = Scheduler::new(true);
        for (k, o) in [("a", 0), ("a", 1), ("b", 2), ("a", 3), ("c", 4)] {
            s.push(batch(k, o));
        }
        let running: Vec<_> = std::iter::from_fn(|| s.take()).map(|b| first(&b)).collect();
        assert_eq!(running, [("a".into(), 0), ("b".into(), 2), ("c".into(), 4)], "one per key");
        assert_eq!(s.waiting(), 2);
        s.finished(&Some(b"b".to_vec()));
        assert!(s.take().is_none(), "b has nothing more; a is still in flight");
        s.finished(&Some(b"a".to_vec()));
        assert_eq!(first(&s.take().unwrap()), ("a".into(), 1));
        assert!(s.take().is_none());
        s.push(batch("b", 5));
        assert_eq!(first(&s.take().unwrap()), ("b".into(), 5));
        s.finished(&Some(b"a".to_vec()));
        assert_eq!(first(&s.take().unwrap()), ("a".into(), 3));
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn without_ordering_batches_start_in_order_whatever_their_keys() {
        let mut s = Scheduler::new(false);
        for o in 0..3 {
            let mut b = batch("a", o);
            b.group = None;
            s.push(b);
        }
        let offsets: Vec<i64> = std::iter::from_fn(|| s.take()).map(|b| b.records[0].offset).collect();
        assert_eq!(offsets, [0, 1, 2]);
    }

    #[test]
    fn a_revoked_partition_leaves_the_waiting_batches() {
        let mut s = Scheduler::new(true);
        s.push(batch("a", 0));
        s.push(batch("a", 1));
        let mut other = batch("a", 2);
        other.records[0].partition = 3;
        s.push(other);
        let _in_flight = s.take().unwrap();
        assert_eq!(s.drop_partition(3).0, 1);
        assert_eq!(s.waiting(), 1);
        s.finished(&Some(b"a".to_vec()));
        assert_eq!(first(&s.take().unwrap()), ("a".into(), 1));
    }
}
