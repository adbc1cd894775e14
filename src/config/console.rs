//! `[console]`: the admin web console (`crate::console`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A signed-in browser stays signed in for a working day.
pub const SESSION_TTL_SECS_DEFAULT: u64 = 12 * 3600;
/// Cluster samples (node usage, instances per function) every 10 s...
pub const SAMPLE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// ...kept for an hour.
pub const SAMPLES_KEPT_DEFAULT: usize = 360;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console under `/console/` (and accept its session cookie on the API).
    pub enabled: bool,
    /// How long a sign-in lasts; then the browser signs in again.
    pub session_ttl_secs: u64,
    /// How often node usage and instances per function are sampled for the charts.
    pub sample_interval_ms: u64,
    /// How many samples are kept in memory (per controller).
    pub samples_kept: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_secs: SESSION_TTL_SECS_DEFAULT,
            sample_interval_ms: SAMPLE_INTERVAL_MS_DEFAULT,
            samples_kept: SAMPLES_KEPT_DEFAULT,
        }
    }
}

impl ConsoleConfig {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs.max(1))
    }
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms.max(100))
    }
}
