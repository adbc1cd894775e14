//! `[kafka_triggers]`: the Kafka trigger engine (`crate::triggers::kafka`). Brokers default to
//! `[kafka] brokers`, and its consumers use `[kafka] session_timeout_ms`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the engine reads the Kafka triggers again (changes made through another
/// controller; a write through this one wakes it at once).
pub const REFRESH_MS_DEFAULT: u64 = 2000;
/// Messages read and not yet settled, per trigger, before its consumers pause.
pub const MAX_UNSETTLED_MESSAGES_DEFAULT: usize = 20_000;
/// Bytes of messages read and not yet settled, per trigger, before its consumers pause.
pub const MAX_UNSETTLED_BYTES_DEFAULT: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTriggersConfig {
    /// Run the Kafka trigger engine in this process. It consumes only while the process places
    /// instances (always on one box; in a cluster, while it is the scheduler leader).
    pub enabled: bool,
    /// How often the Kafka triggers are read again from the metadata store.
    pub refresh_ms: u64,
    /// Multiplies every retry interval of the retry strategies (BACKOFF_RETRY: 10–20 s;
    /// EXPONENTIAL_DECAY_RETRY: 1 s doubling to 512 s) and the 1 s wait after a platform
    /// failure. 1 is FC's timing; below 1 is for tests.
    pub retry_interval_scale: f64,
    /// Per trigger: messages read and not yet settled (buffered, in batches waiting or in
    /// flight) before its consumers pause reading. At least one full batch is always allowed.
    pub max_unsettled_messages: usize,
    /// The same bound in bytes (message keys and values). At least one full batch's payload
    /// limit is always allowed.
    pub max_unsettled_bytes: usize,
}

impl Default for KafkaTriggersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_ms: REFRESH_MS_DEFAULT,
            retry_interval_scale: 1.0,
            max_unsettled_messages: MAX_UNSETTLED_MESSAGES_DEFAULT,
            max_unsettled_bytes: MAX_UNSETTLED_BYTES_DEFAULT,
        }
    }
}

impl KafkaTriggersConfig {
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.max(1))
    }
}
