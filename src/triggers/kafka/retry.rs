//! When a failed batch is tried again, and when it has had its last retry (fc-triggers.md §3.2,
//! `runOptions.retryStrategy`). Pure; the engine sleeps the delays.

use std::time::Duration;

use crate::model::trigger::kafka::{PushRetryStrategy, RetryStrategy};

/// BACKOFF_RETRY: this many retries by default, each after a random 10–20 s.
const BACKOFF_RETRIES: u32 = 3;
const BACKOFF_SECS: (f64, f64) = (10.0, 20.0);
/// EXPONENTIAL_DECAY_RETRY: this many retries by default, after 1, 2, 4 … 512 s, then 512 s
/// (about a day in all).
const EXPONENTIAL_RETRIES: u32 = 176;
const EXPONENTIAL_MAX_SECS: f64 = 512.0;
/// After a platform failure (no slot, the queue down, invocation disabled): tried again after
/// this, without using a retry.
const PLATFORM_SECS: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    strategy: PushRetryStrategy,
    /// Retries after the first attempt.
    max_retries: u32,
    /// No retry once the batch's first attempt is older than this.
    max_age: Option<Duration>,
    /// `kafka_triggers.retry_interval_scale`.
    scale: f64,
}

impl RetryPolicy {
    /// `MaximumRetryAttempts` and `MaximumEventAgeInSeconds` of 0 (what FC's console sends) mean
    /// "the strategy's default" and "no age limit".
    pub fn new(cfg: &RetryStrategy, scale: f64) -> Self {
        let default = match cfg.push_retry_strategy {
            PushRetryStrategy::BackoffRetry => BACKOFF_RETRIES,
            PushRetryStrategy::ExponentialDecayRetry => EXPONENTIAL_RETRIES,
        };
        Self {
            strategy: cfg.push_retry_strategy,
            max_retries: cfg.maximum_retry_attempts.filter(|&n| n > 0).unwrap_or(default),
            max_age: cfg.maximum_event_age_in_seconds.filter(|&s| s > 0).map(Duration::from_secs),
            scale: scale.max(0.0),
        }
    }

    fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64(secs * self.scale)
    }

    /// Whether retry `n` (1-based) may be made, `age` after the batch's first attempt.
    pub fn may_retry(&self, n: u32, age: Duration) -> bool {
        n <= self.max_retries && self.max_age.is_none_or(|m| age < m)
    }

    /// The wait before retry `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        match self.strategy {
            PushRetryStrategy::BackoffRetry => self.scaled(rand::random_range(BACKOFF_SECS.0..=BACKOFF_SECS.1)),
            PushRetryStrategy::ExponentialDecayRetry => {
                self.scaled(2f64.powi(n.saturating_sub(1).min(20) as i32).min(EXPONENTIAL_MAX_SECS))
            }
        }
    }

    /// Past the last retry with `errorsTolerance: NONE` (the stream is blocked): the same batch
    /// is tried again at the strategy's longest interval until it succeeds.
    pub fn blocked_delay(&self) -> Duration {
        match self.strategy {
            PushRetryStrategy::BackoffRetry => self.delay(1),
            PushRetryStrategy::ExponentialDecayRetry => self.scaled(EXPONENTIAL_MAX_SECS),
        }
    }

    /// After a failure of the platform rather than of the function.
    pub fn platform_delay(&self) -> Duration {
        self.scaled(PLATFORM_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: PushRetryStrategy, attempts: Option<u32>, age: Option<u64>) -> RetryPolicy {
        let cfg = RetryStrategy { push_retry_strategy: strategy, maximum_event_age_in_seconds: age, maximum_retry_attempts: attempts };
        RetryPolicy::new(&cfg, 1.0)
    }

    #[test]
    fn backoff_retries_three_times_ten_to_twenty_seconds_apart() {
        let p = policy(PushRetryStrategy::BackoffRetry, None, None);
        assert!(p.may_retry(3, Duration::ZERO) && !p.may_retry(4, Duration::ZERO));
        for n in 1..=3 {
            let d = p.delay(n).as_secs_f64();
            assert!((10.0..=20.0).contains(&d), "{d}");
        }
        // 0 is FC's "not set".
        assert!(policy(PushRetryStrategy::BackoffRetry, Some(0), Some(0)).may_retry(3, Duration::from_secs(1 << 20)));
    }

    #[test]
    fn exponential_decay_doubles_to_512_seconds_for_176_retries() {
        let p = policy(PushRetryStrategy::ExponentialDecayRetry, None, None);
        let delays: Vec<u64> = (1..=12).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 512, 512]);
        assert!(p.may_retry(176, Duration::ZERO) && !p.may_retry(177, Duration::ZERO));
        // About a day in all: 1 … 256 s (511 s), then 512 s 167 times.
        let total: u64 = (1..=176).map(|n| p.delay(n).as_secs()).sum();
        assert_eq!(total, 511 + 167 * 512);
        assert_eq!(p.blocked_delay(), Duration::from_secs(512));
    }

    #[test]
    fn limits_and_scale() {
        let p = policy(PushRetryStrategy::ExponentialDecayRetry, Some(2), Some(60));
        assert!(p.may_retry(2, Duration::from_secs(59)));
        assert!(!p.may_retry(3, Duration::ZERO), "attempts");
        assert!(!p.may_retry(1, Duration::from_secs(60)), "age");
        let cfg = RetryStrategy { push_retry_strategy: PushRetryStrategy::BackoffRetry, ..Default::default() };
        let fast = RetryPolicy::new(&cfg, 0.01);
        assert!((100..=200).contains(&fast.delay(1).as_millis()), "{:?}", fast.delay(1));
        assert_eq!(fast.platform_delay(), Duration::from_millis(10));
    }
}
