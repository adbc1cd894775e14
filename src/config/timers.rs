//! `[timers]`: the timer trigger engine (`crate::triggers::timer`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// FC's smallest timer interval: one minute.
pub const MIN_INTERVAL_SECS_DEFAULT: u64 = 60;
/// How late a missed tick may still be fired after downtime.
pub const MISSED_TICK_GRACE_SECS_DEFAULT: u64 = 600;
/// How often the engine reads the timer triggers again (changes made through another
/// controller; a write through this one wakes it at once).
pub const REFRESH_MS_DEFAULT: u64 = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    /// Run the timer engine in this process. It fires only while the process places instances
    /// (always on one box; in a cluster, while it is the scheduler leader).
    pub enabled: bool,
    /// The smallest interval a timer trigger may have, checked at CreateTrigger/UpdateTrigger:
    /// `@every` at least this; with 60 or more, a cron expression must fire at most once a
    /// minute. Below 60 is for tests.
    pub min_interval_secs: u64,
    /// Missed-tick policy: after downtime (restart, failover), of the ticks missed since the
    /// last one fired, only the most recent is fired, and only if it is at most this old; the
    /// others are skipped.
    pub missed_tick_grace_secs: u64,
    /// How often the timer triggers are read again from the metadata store.
    pub refresh_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval_secs: MIN_INTERVAL_SECS_DEFAULT,
            missed_tick_grace_secs: MISSED_TICK_GRACE_SECS_DEFAULT,
            refresh_ms: REFRESH_MS_DEFAULT,
        }
    }
}

impl TimersConfig {
    pub fn min_interval(&self) -> Duration {
        Duration::from_secs(self.min_interval_secs)
    }
    pub fn missed_tick_grace(&self) -> Duration {
        Duration::from_secs(self.missed_tick_grace_secs)
    }
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.max(1))
    }
}
