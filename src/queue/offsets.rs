//! Which offsets of one Kafka partition may be committed: shared by the async queue's Kafka
//! backend ([`super::kafka`]) and the Kafka trigger engine (`crate::triggers::kafka`).
//!
//! Work on messages of one partition may finish out of order (several in flight at once). A
//! commit says "everything before this offset is done", so it may only go up to the lowest
//! offset still in work: a consumer that dies then leaves every unfinished message, and only
//! those after it that were already done, to be read again. Never a message skipped.

use std::collections::BTreeSet;

/// One partition's offsets between read and commit.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// Read and not yet settled (acked, or its batch's outcome recorded).
    pending: BTreeSet<i64>,
    /// The highest offset read.
    highest: Option<i64>,
    /// The offset last committed (the next one to read).
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// `offset` was read and is now in work.
    pub fn received(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.highest = Some(self.highest.map_or(offset, |h| h.max(offset)));
    }

    /// `offset`'s work is done. False if it was not in work (settled before, or never read
    /// here).
    pub fn settled(&mut self, offset: i64) -> bool {
        self.pending.remove(&offset)
    }

    /// Whether `offset` was read and is not yet settled.
    pub fn in_work(&self, offset: i64) -> bool {
        self.pending.contains(&offset)
    }

    /// Offsets in work.
    pub fn unsettled(&self) -> usize {
        self.pending.len()
    }

    /// The offset to commit now (the lowest one still in work, or one past the highest read),
    /// if that moves the commit forward; it is then taken as committed.
    pub fn commit_point(&mut self) -> Option<i64> {
        let next = match self.pending.first() {
            Some(&lowest) => lowest,
            None => self.highest? + 1,
        };
        if self.committed.is_some_and(|c| c >= next) {
            return None;
        }
        self.committed = Some(next);
        Some(next)
    }

    /// The offset last committed (or about to be), if any.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_lowest_offset_in_work() {
        let mut p = PartitionOffsets::default();
        assert_eq!(p.commit_point(), None, "nothing read");
        for o in 10..15 {
            p.received(o);
        }
        // 12 and 13 finish first: nothing may be committed past 10.
        assert!(p.settled(12) && p.settled(13));
        assert_eq!(p.commit_point(), Some(10));
        assert_eq!(p.commit_point(), None, "no move, no commit");
        assert!(p.settled(10));
        assert_eq!(p.commit_point(), Some(11));
        assert!(p.settled(11) && p.settled(14));
        assert_eq!(p.commit_point(), Some(15));
        assert_eq!(p.committed(), Some(15));
        assert!(!p.settled(14), "settled twice");
        assert_eq!(p.unsettled(), 0);
    }
}
