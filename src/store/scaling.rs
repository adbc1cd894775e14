//! Scaling (migration 0004): the function's controls (reserved concurrency, the invocation
//! switch), which are columns of its row, and provision configs, one row per (function,
//! qualifier).
//!
//! A provision config's qualifier is LATEST or an alias. Putting one on an alias locks the
//! function's row first and then checks the alias, as the alias writes do (`aliases.rs`), so an
//! alias cannot be deleted between the check and the write; DeleteAlias refuses while a config
//! is set on it. Reads join the alias, so a record says which version the qualifier serves now.
//!
//! Portability: the upsert is `ON CONFLICT .. DO UPDATE` on SQLite and PostgreSQL, `ON DUPLICATE
//! KEY UPDATE` on MySQL; the rest is shared SQL.

use super::sql::{Engine, sql, sql_per_engine};
use super::versions::lock_function;
use super::{Db, Store, StoreError, on_db, to_json};
use crate::model::scaling::{ConcurrencyConfigRecord, ProvisionConfig, ProvisionConfigRecord};
use crate::model::version::LATEST;

/// What PutProvisionConfig came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvisionWrite {
    Done(ProvisionConfigRecord),
    NoFunction,
    /// The qualifier names no alias of the function.
    NoAlias,
}

#[derive(sqlx::FromRow)]
struct ProvisionRow {
    function_name: String,
    qualifier: String,
    target: i64,
    config: String,
    created_time: String,
    last_modified_time: String,
    /// The alias's `versionId`; NULL for LATEST.
    alias_version: Option<i64>,
}

/// The config with the version its alias routes to (LATEST has no alias row: NULL).
macro_rules! provision_select {
    () => {
        "SELECT p.function_name AS function_name, p.qualifier AS qualifier, p.target AS target, \
         p.config AS config, p.created_time AS created_time, p.last_modified_time AS last_modified_time, \
         a.version_id AS alias_version \
         FROM provision_configs p LEFT JOIN function_aliases a \
         ON a.function_name = p.function_name AND a.alias_name = p.qualifier"
    };
}

/// The upsert SQLite and PostgreSQL share (MySQL spells it ON DUPLICATE KEY UPDATE).
const UPSERT_PROVISION_ON_CONFLICT: &str = "INSERT INTO provision_configs \
     (function_name, qualifier, target, config, created_time, last_modified_time) VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (function_name, qualifier) \
     DO UPDATE SET target = excluded.target, config = excluded.config, last_modified_time = excluded.last_modified_time";

impl Store {
    /// Set (Some) or remove (None) the function's reserved concurrency. False if there is no
    /// such function.
    pub async fn set_reserved_concurrency(&self, name: &str, reserved: Option<u32>) -> Result<bool, StoreError> {
        let updated = on_db!(self, |pool, e| {
            sqlx::query(sql!("UPDATE functions SET reserved_concurrency = ? WHERE name = ?").of(e))
                .bind(reserved.map(i64::from))
                .bind(name)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        // MySQL counts matched rows too (sqlx connects with CLIENT_FOUND_ROWS).
        Ok(updated == 1)
    }

    /// Disable calls of the function (with the reason callers are told), or enable them (the
    /// reason is cleared). False if there is no such function.
    pub async fn set_invocation_disabled(&self, name: &str, disabled: bool, reason: &str) -> Result<bool, StoreError> {
        let reason = if disabled { reason } else { "" };
        let updated = on_db!(self, |pool, e| {
            sqlx::query(sql!("UPDATE functions SET invocation_disabled = ?, disabled_reason = ? WHERE name = ?").of(e))
                .bind(i64::from(disabled))
                .bind(reason)
                .bind(name)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    /// Functions with a reserved concurrency, in name order after `start_after`, optionally
    /// only `function`.
    pub async fn list_concurrency_configs(
        &self,
        function: Option<&str>,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<ConcurrencyConfigRecord>, StoreError> {
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, (String, i64)>(
                sql!(
                    "SELECT name, reserved_concurrency FROM functions \
                     WHERE reserved_concurrency IS NOT NULL AND (? IS NULL OR name = ?) AND name > ? \
                     ORDER BY name LIMIT ?"
                )
                .of(e),
            )
            .bind(function)
            .bind(function)
            .bind(start_after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|(function_name, n)| {
                let reserved_concurrency = u32::try_from(n)
                    .map_err(|e| StoreError::Corrupt(format!("function '{function_name}' reserved_concurrency: {e}")))?;
                Ok(ConcurrencyConfigRecord { function_name, reserved_concurrency })
            })
            .collect()
    }

    /// Create or replace the provision config of `function`/`qualifier` (LATEST or an alias
    /// name); `createdTime` survives replacement.
    pub async fn put_provision_config(
        &self,
        function: &str,
        qualifier: &str,
        cfg: &ProvisionConfig,
        now: &str,
    ) -> Result<ProvisionWrite, StoreError> {
        let upsert = sql_per_engine!(
            sqlite: UPSERT_PROVISION_ON_CONFLICT,
            postgres: UPSERT_PROVISION_ON_CONFLICT,
            mysql: "INSERT INTO provision_configs (function_name, qualifier, target, config, created_time, last_modified_time) \
                    VALUES (?, ?, ?, ?, ?, ?) \
                    ON DUPLICATE KEY UPDATE target = VALUES(target), config = VALUES(config), \
                    last_modified_time = VALUES(last_modified_time)",
        );
        let config = to_json(cfg);
        let row = on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, function) {
                return Ok(Err(ProvisionWrite::NoFunction));
            }
            if qualifier != LATEST {
                let aliases = sqlx::query_scalar::<_, i64>(
                    sql!("SELECT COUNT(*) FROM function_aliases WHERE function_name = ? AND alias_name = ?").of(e),
                )
                .bind(function)
                .bind(qualifier)
                .fetch_one(&mut *tx)
                .await?;
                if aliases == 0 {
                    return Ok(Err(ProvisionWrite::NoAlias));
                }
            }
            sqlx::query(upsert.of(e))
                .bind(function)
                .bind(qualifier)
                .bind(i64::from(cfg.target))
                .bind(&config)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // Read back in the same transaction: what was written, with the alias's version.
            let row = sqlx::query_as::<_, ProvisionRow>(
                sql!(provision_select!(), " WHERE p.function_name = ? AND p.qualifier = ?").of(e),
            )
            .bind(function)
            .bind(qualifier)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(row))
        })?;
        match row {
            Ok(row) => Ok(ProvisionWrite::Done(row.into_record()?)),
            Err(outcome) => Ok(outcome),
        }
    }

    pub async fn get_provision_config(&self, function: &str, qualifier: &str) -> Result<Option<ProvisionConfigRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, ProvisionRow>(sql!(provision_select!(), " WHERE p.function_name = ? AND p.qualifier = ?").of(e))
                .bind(function)
                .bind(qualifier)
                .fetch_optional(pool)
                .await
        })?;
        row.map(ProvisionRow::into_record).transpose()
    }

    /// True if a config was deleted.
    pub async fn delete_provision_config(&self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        let deleted = on_db!(self, |pool, e| {
            sqlx::query(sql!("DELETE FROM provision_configs WHERE function_name = ? AND qualifier = ?").of(e))
                .bind(function)
                .bind(qualifier)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(deleted > 0)
    }

    /// Configs in (function, qualifier) order, after `start_after` (see
    /// [`ProvisionConfigRecord::cursor`]; `""` = from the start), optionally of one function.
    pub async fn list_provision_configs(
        &self,
        function: Option<&str>,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<ProvisionConfigRecord>, StoreError> {
        // A cursor without NUL means "after every qualifier-less position of that function",
        // i.e. the function's rows are all still to come.
        let (after_fn, after_q) = start_after.split_once('\0').unwrap_or((start_after, ""));
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, ProvisionRow>(
                sql!(
                    provision_select!(),
                    " WHERE (? IS NULL OR p.function_name = ?) AND (p.function_name, p.qualifier) > (?, ?) \
                     ORDER BY p.function_name, p.qualifier LIMIT ?"
                )
                .of(e),
            )
            .bind(function)
            .bind(function)
            .bind(after_fn)
            .bind(after_q)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(ProvisionRow::into_record).collect()
    }

    /// Every provision config, in (function, qualifier) order: what the instance maintainer
    /// keeps. One read; the configs are few (one per function and qualifier at most).
    pub async fn list_all_provision_configs(&self) -> Result<Vec<ProvisionConfigRecord>, StoreError> {
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, ProvisionRow>(sql!(provision_select!(), " ORDER BY p.function_name, p.qualifier").of(e))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(ProvisionRow::into_record).collect()
    }
}

impl ProvisionRow {
    fn into_record(self) -> Result<ProvisionConfigRecord, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("provision config of '{}/{}' {what}: {e}", self.function_name, self.qualifier))
        };
        let mut config: ProvisionConfig = serde_json::from_str(&self.config).map_err(|e| corrupt("config", &e))?;
        // The column is what SQL readers see; the document's copy is written with it.
        config.target = u32::try_from(self.target).map_err(|e| corrupt("target", &e))?;
        let version = self.alias_version.map(|v| u64::try_from(v).map_err(|e| corrupt("alias version", &e))).transpose()?;
        Ok(ProvisionConfigRecord {
            function_name: self.function_name,
            qualifier: self.qualifier,
            config,
            version,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
        })
    }
}
