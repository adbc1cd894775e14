//! Epoch milliseconds that never go backwards within this process.
//!
//! Async task events are stamped from the wall clock, and the API shows those stamps
//! (`events[].timestamp`, `startedTime`, `endTime`). The wall clock can be stepped back (NTP, a
//! VM's time sync): an event stamped after such a step, though it happened after another (a
//! keyed event's `Running` after the previous event's final state, a task's next event after
//! its last), would then look older than it. Handing out at least the largest value handed out
//! so far keeps every stamp of this process in causal order: after a step back, stamps stay put
//! until the wall clock catches up. A step forward is kept (it cannot be told from real time).
//! Controllers of a cluster each have their own clock; their stamps can still disagree a little.

use std::sync::atomic::{AtomicI64, Ordering};

/// The largest value [`now_ms`] has returned.
static LAST_MS: AtomicI64 = AtomicI64::new(i64::MIN);

/// Wall-clock epoch ms, never less than a value returned before this call began.
pub fn now_ms() -> i64 {
    not_before(&LAST_MS, chrono::Utc::now().timestamp_millis())
}

/// `wall`, or the largest value handed out through `last` if that is later; records the result.
fn not_before(last: &AtomicI64, wall: i64) -> i64 {
    last.fetch_max(wall, Ordering::SeqCst).max(wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_stepped_back_does_not_move_stamps_back() {
        let last = AtomicI64::new(i64::MIN);
        assert_eq!(not_before(&last, 5_004), 5_004);
        // Stepped back 17 ms: held at the last stamp until the wall clock is past it again.
        assert_eq!(not_before(&last, 4_987), 5_004);
        assert_eq!(not_before(&last, 5_003), 5_004);
        assert_eq!(not_before(&last, 5_010), 5_010);
        // Forward steps are real time as far as anyone can tell.
        assert_eq!(not_before(&last, 60_000), 60_000);
        let a = now_ms();
        assert!(now_ms() >= a);
    }
}
