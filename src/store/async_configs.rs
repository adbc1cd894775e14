//! PutAsyncInvokeConfig and friends: one row per (function, qualifier) (migration 0002).
//!
//! Portability: the upsert is `ON CONFLICT .. DO UPDATE` on SQLite and PostgreSQL, `ON DUPLICATE
//! KEY UPDATE` on MySQL; the rest is shared SQL.

use super::sql::{Engine, sql, sql_per_engine};
use super::{Db, Store, StoreError, on_db, to_json};
use crate::model::async_task::{AsyncConfig, AsyncConfigRecord};
use crate::model::now_iso;

#[derive(sqlx::FromRow)]
struct ConfigRow {
    function_name: String,
    qualifier: String,
    config: String,
    created_time: String,
    last_modified_time: String,
}

macro_rules! config_columns {
    () => {
        "function_name, qualifier, config, created_time, last_modified_time"
    };
}

/// The upsert SQLite and PostgreSQL share (MySQL spells it ON DUPLICATE KEY UPDATE).
const UPSERT_CONFIG_ON_CONFLICT: &str = "INSERT INTO async_invoke_configs \
     (function_name, qualifier, config, created_time, last_modified_time) VALUES (?, ?, ?, ?, ?) \
     ON CONFLICT (function_name, qualifier) \
     DO UPDATE SET config = excluded.config, last_modified_time = excluded.last_modified_time";

impl Store {
    /// Create or replace the config of `function`/`qualifier`; `createdTime` survives replacement.
    pub async fn put_async_config(
        &self,
        function: &str,
        qualifier: &str,
        cfg: &AsyncConfig,
    ) -> Result<AsyncConfigRecord, StoreError> {
        let now = now_iso();
        let config = to_json(cfg);
        // Upsert and read back in one transaction so a concurrent delete cannot make us return
        // a record that is not what we wrote.
        let upsert = sql_per_engine!(
            sqlite: UPSERT_CONFIG_ON_CONFLICT,
            postgres: UPSERT_CONFIG_ON_CONFLICT,
            mysql: "INSERT INTO async_invoke_configs (function_name, qualifier, config, created_time, last_modified_time) \
                    VALUES (?, ?, ?, ?, ?) \
                    ON DUPLICATE KEY UPDATE config = VALUES(config), last_modified_time = VALUES(last_modified_time)",
        );
        let row = on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            sqlx::query(upsert.of(e))
                .bind(function)
                .bind(qualifier)
                .bind(&config)
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query_as::<_, ConfigRow>(
                sql!("SELECT ", config_columns!(), " FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?")
                    .of(e),
            )
            .bind(function)
            .bind(qualifier)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row)
        })?;
        row.into_record()
    }

    pub async fn get_async_config(&self, function: &str, qualifier: &str) -> Result<Option<AsyncConfigRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, ConfigRow>(
                sql!("SELECT ", config_columns!(), " FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?")
                    .of(e),
            )
            .bind(function)
            .bind(qualifier)
            .fetch_optional(pool)
            .await
        })?;
        row.map(ConfigRow::into_record).transpose()
    }

    /// True if a config was deleted.
    pub async fn delete_async_config(&self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        let deleted = on_db!(self, |pool, e| {
            sqlx::query(sql!("DELETE FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?").of(e))
                .bind(function)
                .bind(qualifier)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(deleted > 0)
    }

    /// Configs in (function, qualifier) order, after `start_after` (see
    /// [`AsyncConfigRecord::cursor`]; `""` = from the start), optionally of one function.
    pub async fn list_async_configs(
        &self,
        function: Option<&str>,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<AsyncConfigRecord>, StoreError> {
        // A cursor without NUL means "after every qualifier-less position of that function",
        // i.e. the function's rows are all still to come.
        let (after_fn, after_q) = start_after.split_once('\0').unwrap_or((start_after, ""));
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, ConfigRow>(
                sql!(
                    "SELECT ",
                    config_columns!(),
                    " FROM async_invoke_configs \
                     WHERE (? IS NULL OR function_name = ?) AND (function_name, qualifier) > (?, ?) \
                     ORDER BY function_name, qualifier LIMIT ?"
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
        rows.into_iter().map(ConfigRow::into_record).collect()
    }
}

impl ConfigRow {
    fn into_record(self) -> Result<AsyncConfigRecord, StoreError> {
        let config = serde_json::from_str(&self.config).map_err(|e| {
            StoreError::Corrupt(format!("async config of '{}/{}': {e}", self.function_name, self.qualifier))
        })?;
        Ok(AsyncConfigRecord {
            function_name: self.function_name,
            qualifier: self.qualifier,
            config,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
        })
    }
}
