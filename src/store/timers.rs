//! Timer triggers' state (migration 0007): the last tick each timer trigger fired or skipped,
//! `triggers.timer_last_tick_ms`, written by the timer engine only (`crate::triggers::timer`)
//! and only forwards. It is a hint for catch-up after a restart or a failover; what makes a
//! tick fire once is its deterministic async task id, not this column.

use super::sql::{Engine, sql};
use super::{Db, Store, StoreError, on_db};

/// A timer trigger as the engine reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimerRecord {
    pub function_name: String,
    pub trigger_name: String,
    /// A trigger deleted and created again under its name has a new id (and no last tick).
    pub trigger_id: String,
    /// The stored `triggerConfig` string.
    pub trigger_config: String,
    pub qualifier: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`: when the trigger was created or last updated.
    pub last_modified_time: String,
    /// The last tick fired or skipped, ms since the epoch; None before the first.
    pub timer_last_tick_ms: Option<i64>,
}

impl Store {
    /// Every timer trigger, in (function, name) order.
    pub async fn list_timer_triggers(&self) -> Result<Vec<TimerRecord>, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query_as::<_, TimerRecord>(
                sql!(
                    "SELECT function_name, trigger_name, trigger_id, trigger_config, qualifier, last_modified_time, \
                     timer_last_tick_ms FROM triggers WHERE trigger_type = 'timer' ORDER BY function_name, trigger_name"
                )
                .of(e),
            )
            .fetch_all(pool)
            .await
        })
    }

    /// Record `tick_ms` as the trigger's last tick, if it is later than the one stored (two
    /// controllers that both believe they lead never move it back). False if it was not
    /// later, or the trigger (with this id) is gone.
    pub async fn advance_timer(&self, function: &str, trigger: &str, trigger_id: &str, tick_ms: i64) -> Result<bool, StoreError> {
        let n = on_db!(self, |pool, e| {
            sqlx::query(
                sql!(
                    "UPDATE triggers SET timer_last_tick_ms = ? WHERE function_name = ? AND trigger_name = ? \
                     AND trigger_id = ? AND (timer_last_tick_ms IS NULL OR timer_last_tick_ms < ?)"
                )
                .of(e),
            )
            .bind(tick_ms)
            .bind(function)
            .bind(trigger)
            .bind(trigger_id)
            .bind(tick_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }
}
