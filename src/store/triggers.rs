//! Triggers (migration 0006), one row per (function, trigger name).
//!
//! Writes lock the function's row first, like the version and alias writes (`versions.rs`),
//! and only then check what they depend on: that the qualifier names LATEST, an existing
//! version or an existing alias, and that no other http trigger serves the same qualifier. So
//! two creates cannot both take a qualifier's http trigger, and a DeleteFunction (which locks
//! the same row) cannot miss a trigger created beside it. The statements are the same on every
//! engine.

use super::sql::{Engine, sql};
use super::versions::lock_function;
use super::{Db, Store, StoreError, on_db};
use crate::model::ValidationError;
use crate::model::trigger::{TriggerInput, TriggerRecord, TriggerType};
use crate::model::version::Qualifier;

/// What CreateTrigger or UpdateTrigger came to.
#[derive(Debug, Clone)]
pub enum TriggerWrite {
    Done(TriggerRecord),
    NoFunction,
    /// The qualifier is a version id that does not exist, or names nothing (`007`).
    NoVersion(String),
    /// The qualifier is an alias name that does not exist.
    NoAlias(String),
    /// Create: the name is taken.
    Exists,
    /// Update: no such trigger.
    NoTrigger,
    /// Another http trigger (named here) already serves the qualifier: one per qualifier.
    HttpTaken(String),
    /// Update: the merged trigger is not valid.
    Invalid(ValidationError),
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    function_name: String,
    trigger_name: String,
    trigger_id: String,
    trigger_type: String,
    trigger_config: String,
    qualifier: String,
    description: String,
    source_arn: String,
    invocation_role: String,
    created_time: String,
    last_modified_time: String,
}

macro_rules! trigger_columns {
    () => {
        "function_name, trigger_name, trigger_id, trigger_type, trigger_config, qualifier, description, source_arn, \
         invocation_role, created_time, last_modified_time"
    };
}

/// Within a transaction holding the function's lock: why `$t` cannot be written, if it cannot
/// (its qualifier names nothing, or another http trigger serves it).
macro_rules! conflict {
    ($tx:expr, $e:expr, $t:expr) => {{
        let t: &TriggerRecord = $t;
        let mut outcome = None;
        match Qualifier::parse(Some(&t.qualifier)) {
            Err(bad) => outcome = Some(TriggerWrite::NoVersion(bad.0)),
            Ok(Qualifier::Latest) => {}
            Ok(Qualifier::Version(v)) => {
                let n = sqlx::query_scalar::<_, i64>(
                    sql!("SELECT COUNT(*) FROM function_versions WHERE function_name = ? AND version_id = ?").of($e),
                )
                .bind(&t.function_name)
                .bind(i64::try_from(v).unwrap_or(i64::MAX))
                .fetch_one(&mut *$tx)
                .await?;
                if n == 0 {
                    outcome = Some(TriggerWrite::NoVersion(v.to_string()));
                }
            }
            Ok(Qualifier::Alias(a)) => {
                let n = sqlx::query_scalar::<_, i64>(
                    sql!("SELECT COUNT(*) FROM function_aliases WHERE function_name = ? AND alias_name = ?").of($e),
                )
                .bind(&t.function_name)
                .bind(&a)
                .fetch_one(&mut *$tx)
                .await?;
                if n == 0 {
                    outcome = Some(TriggerWrite::NoAlias(a));
                }
            }
        }
        if outcome.is_none() && t.trigger_type == TriggerType::Http {
            let other = sqlx::query_scalar::<_, String>(
                sql!(
                    "SELECT trigger_name FROM triggers WHERE function_name = ? AND trigger_type = 'http' AND qualifier = ? \
                     AND trigger_name <> ? ORDER BY trigger_name LIMIT 1"
                )
                .of($e),
            )
            .bind(&t.function_name)
            .bind(&t.qualifier)
            .bind(&t.trigger_name)
            .fetch_optional(&mut *$tx)
            .await?;
            outcome = other.map(TriggerWrite::HttpTaken);
        }
        outcome
    }};
}

impl Store {
    pub async fn create_trigger(&self, t: &TriggerRecord) -> Result<TriggerWrite, StoreError> {
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, &t.function_name) {
                return Ok(TriggerWrite::NoFunction);
            }
            let taken = sqlx::query_scalar::<_, i64>(
                sql!("SELECT COUNT(*) FROM triggers WHERE function_name = ? AND trigger_name = ?").of(e),
            )
            .bind(&t.function_name)
            .bind(&t.trigger_name)
            .fetch_one(&mut *tx)
            .await?;
            if taken > 0 {
                return Ok(TriggerWrite::Exists);
            }
            if let Some(refused) = conflict!(tx, e, t) {
                return Ok(refused);
            }
            sqlx::query(sql!("INSERT INTO triggers (", trigger_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").of(e))
                .bind(&t.function_name)
                .bind(&t.trigger_name)
                .bind(&t.trigger_id)
                .bind(t.trigger_type.as_str())
                .bind(&t.trigger_config)
                .bind(&t.qualifier)
                .bind(&t.description)
                .bind(&t.source_arn)
                .bind(&t.invocation_role)
                .bind(&t.created_time)
                .bind(&t.last_modified_time)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(TriggerWrite::Done(t.clone()))
        })
    }

    /// Lay `input` over the stored trigger (validated as a whole) and store the result.
    pub async fn update_trigger(&self, function: &str, trigger: &str, input: &TriggerInput, now: &str) -> Result<TriggerWrite, StoreError> {
        let written = on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, function) {
                return Ok(Err(TriggerWrite::NoFunction));
            }
            let old = sqlx::query_as::<_, TriggerRow>(
                sql!("SELECT ", trigger_columns!(), " FROM triggers WHERE function_name = ? AND trigger_name = ?").of(e),
            )
            .bind(function)
            .bind(trigger)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(old) = old else { return Ok(Err(TriggerWrite::NoTrigger)) };
            let old = match old.into_record() {
                Ok(old) => old,
                Err(corrupt) => return Ok(Ok(Err(corrupt))),
            };
            let new = match input.merged_into(&old, now) {
                Ok(new) => new,
                Err(invalid) => return Ok(Err(TriggerWrite::Invalid(invalid))),
            };
            if let Some(refused) = conflict!(tx, e, &new) {
                return Ok(Err(refused));
            }
            sqlx::query(
                sql!(
                    "UPDATE triggers SET trigger_config = ?, qualifier = ?, description = ?, invocation_role = ?, \
                     last_modified_time = ? WHERE function_name = ? AND trigger_name = ?"
                )
                .of(e),
            )
            .bind(&new.trigger_config)
            .bind(&new.qualifier)
            .bind(&new.description)
            .bind(&new.invocation_role)
            .bind(&new.last_modified_time)
            .bind(function)
            .bind(trigger)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(Ok(new)))
        })?;
        match written {
            Ok(Ok(new)) => Ok(TriggerWrite::Done(new)),
            Ok(Err(corrupt)) => Err(corrupt),
            Err(outcome) => Ok(outcome),
        }
    }

    pub async fn get_trigger(&self, function: &str, trigger: &str) -> Result<Option<TriggerRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, TriggerRow>(
                sql!("SELECT ", trigger_columns!(), " FROM triggers WHERE function_name = ? AND trigger_name = ?").of(e),
            )
            .bind(function)
            .bind(trigger)
            .fetch_optional(pool)
            .await
        })?;
        row.map(TriggerRow::into_record).transpose()
    }

    /// A function's triggers whose name starts with `prefix`, after `start_after`, in name
    /// (code point) order.
    pub async fn list_triggers(&self, function: &str, prefix: &str, start_after: &str, limit: u32) -> Result<Vec<TriggerRecord>, StoreError> {
        let prefix_chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, TriggerRow>(
                sql!(
                    "SELECT ",
                    trigger_columns!(),
                    " FROM triggers WHERE function_name = ? AND substr(trigger_name, 1, ?) = ? AND trigger_name > ? \
                     ORDER BY trigger_name LIMIT ?"
                )
                .of(e),
            )
            .bind(function)
            .bind(prefix_chars)
            .bind(prefix)
            .bind(start_after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(TriggerRow::into_record).collect()
    }

    /// Every trigger of one type, of every function, in (function, name) order: what the
    /// timer and Kafka engines run.
    pub async fn list_all_triggers_of_type(&self, trigger_type: TriggerType) -> Result<Vec<TriggerRecord>, StoreError> {
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, TriggerRow>(
                sql!("SELECT ", trigger_columns!(), " FROM triggers WHERE trigger_type = ? ORDER BY function_name, trigger_name").of(e),
            )
            .bind(trigger_type.as_str())
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(TriggerRow::into_record).collect()
    }

    /// How many triggers a function has (DeleteFunction refuses while there are any).
    pub async fn count_triggers(&self, function: &str) -> Result<i64, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query_scalar::<_, i64>(sql!("SELECT COUNT(*) FROM triggers WHERE function_name = ?").of(e))
                .bind(function)
                .fetch_one(pool)
                .await
        })
    }

    /// False if there was no such trigger.
    pub async fn delete_trigger(&self, function: &str, trigger: &str) -> Result<bool, StoreError> {
        let deleted = on_db!(self, |pool, e| {
            sqlx::query(sql!("DELETE FROM triggers WHERE function_name = ? AND trigger_name = ?").of(e))
                .bind(function)
                .bind(trigger)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(deleted > 0)
    }
}

impl TriggerRow {
    fn into_record(self) -> Result<TriggerRecord, StoreError> {
        let trigger_type = TriggerType::parse(&self.trigger_type).map_err(|e| {
            StoreError::Corrupt(format!("trigger '{}' of function '{}': {e}", self.trigger_name, self.function_name))
        })?;
        Ok(TriggerRecord {
            function_name: self.function_name,
            trigger_name: self.trigger_name,
            trigger_id: self.trigger_id,
            trigger_type,
            trigger_config: self.trigger_config,
            qualifier: self.qualifier,
            description: self.description,
            source_arn: self.source_arn,
            invocation_role: self.invocation_role,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
        })
    }
}
