//! Function rows: create, optimistic update, read, list by prefix, delete (with the function's
//! versions, aliases, provision configs and triggers), the code references that decide when a package
//! is unused, and the function's controls (reserved concurrency, the invocation switch).
//!
//! The controls are columns of the row that only their own setters write: inserting a function
//! starts it with none, and `update_function` leaves them as they are (they are not part of
//! the config, and setting them makes no new revision).

use super::sql::{Engine, sql};
use super::{Db, Store, StoreError, on_db, to_json, versions};
use crate::model::{FunctionConfig, FunctionControls, FunctionName, FunctionRecord, Tag};

/// A macro, not a const, so queries stay `&'static str` literals (sqlx refuses built strings).
macro_rules! function_columns {
    () => {
        "name, function_id, config, code_checksum, code_size, revision, tags, created_time, last_modified_time"
    };
}

/// What a read takes: the columns written at insert, and the controls.
macro_rules! function_read_columns {
    () => {
        concat!(function_columns!(), ", reserved_concurrency, invocation_disabled, disabled_reason")
    };
}

#[derive(sqlx::FromRow)]
pub(super) struct FunctionRow {
    name: String,
    function_id: String,
    config: String,
    code_checksum: String,
    code_size: i64,
    revision: i64,
    tags: String,
    created_time: String,
    last_modified_time: String,
    reserved_concurrency: Option<i64>,
    /// 0 or 1 (an integer on every engine).
    invocation_disabled: i64,
    disabled_reason: String,
}

impl Store {
    pub async fn insert_function(&self, f: &FunctionRecord) -> Result<(), StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query(sql!("INSERT INTO functions (", function_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)").of(e))
                .bind(f.name.as_str())
                .bind(&f.function_id)
                .bind(to_json(&f.config))
                .bind(&f.code_checksum)
                .bind(f.code_size as i64)
                .bind(f.revision)
                .bind(to_json(&f.tags))
                .bind(&f.created_time)
                .bind(&f.last_modified_time)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Replace a function's row if it is still at `expected_revision` (optimistic concurrency:
    /// two racing updates cannot silently overwrite each other).
    pub async fn update_function(&self, f: &FunctionRecord, expected_revision: i64) -> Result<(), StoreError> {
        let updated = on_db!(self, |pool, e| {
            sqlx::query(
                sql!(
                    "UPDATE functions SET config = ?, code_checksum = ?, code_size = ?, revision = ?, \
                     last_modified_time = ? WHERE name = ? AND revision = ?"
                )
                .of(e),
            )
            .bind(to_json(&f.config))
            .bind(&f.code_checksum)
            .bind(f.code_size as i64)
            .bind(f.revision)
            .bind(&f.last_modified_time)
            .bind(f.name.as_str())
            .bind(expected_revision)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        // MySQL counts matched rows here too (sqlx connects with CLIENT_FOUND_ROWS), and the
        // revision always changes anyway.
        if updated == 1 { Ok(()) } else { Err(StoreError::Conflict) }
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, FunctionRow>(sql!("SELECT ", function_read_columns!(), " FROM functions WHERE name = ?").of(e))
                .bind(name)
                .fetch_optional(pool)
                .await
        })?;
        row.map(FunctionRow::into_record).transpose()
    }

    /// Functions whose name starts with `prefix`, after `start_after`, in name order (code
    /// point order on every engine: the schemas use binary collations).
    pub async fn list_functions(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        let prefix_chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, FunctionRow>(
                sql!(
                    "SELECT ",
                    function_read_columns!(),
                    " FROM functions WHERE substr(name, 1, ?) = ? AND name > ? ORDER BY name LIMIT ?"
                )
                .of(e),
            )
            .bind(prefix_chars)
            .bind(prefix)
            .bind(start_after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(FunctionRow::into_record).collect()
    }

    /// Delete a function with its versions, aliases, provision configs and triggers, in one transaction. None if there was
    /// no such function, else the code packages its versions used (they may now be unused).
    pub async fn delete_function(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            // Locks the row first, as version and alias writes do (store/versions.rs).
            if !versions::lock_function!(tx, e, name) {
                return Ok(None);
            }
            let codes = sqlx::query_scalar::<_, String>(
                sql!("SELECT DISTINCT code_checksum FROM function_versions WHERE function_name = ? ORDER BY code_checksum").of(e),
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(sql!("DELETE FROM provision_configs WHERE function_name = ?").of(e)).bind(name).execute(&mut *tx).await?;
            // DeleteFunction refuses while the function has triggers (FunctionNotEmpty); a
            // trigger created after that check, before this lock, goes with its function
            // rather than outlive it.
            sqlx::query(sql!("DELETE FROM triggers WHERE function_name = ?").of(e)).bind(name).execute(&mut *tx).await?;
            sqlx::query(sql!("DELETE FROM function_aliases WHERE function_name = ?").of(e)).bind(name).execute(&mut *tx).await?;
            sqlx::query(sql!("DELETE FROM function_versions WHERE function_name = ?").of(e)).bind(name).execute(&mut *tx).await?;
            sqlx::query(sql!("DELETE FROM functions WHERE name = ?").of(e)).bind(name).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(codes))
        })
    }

    /// How many functions and versions use a code package (identical uploads share one, and a
    /// version keeps the package it was published with).
    pub async fn code_references(&self, checksum: &str) -> Result<i64, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query_scalar::<_, i64>(
                sql!(
                    "SELECT (SELECT COUNT(*) FROM functions WHERE code_checksum = ?) \
                     + (SELECT COUNT(*) FROM function_versions WHERE code_checksum = ?)"
                )
                .of(e),
            )
            .bind(checksum)
            .bind(checksum)
            .fetch_one(pool)
            .await
        })
    }
}

impl FunctionRow {
    pub(super) fn into_record(self) -> Result<FunctionRecord, StoreError> {
        let name = self.name;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("function '{name}' {what}: {e}"));
        let config: FunctionConfig = serde_json::from_str(&self.config).map_err(|e| corrupt("config", &e))?;
        let tags: Vec<Tag> = serde_json::from_str(&self.tags).map_err(|e| corrupt("tags", &e))?;
        Ok(FunctionRecord {
            name: FunctionName::parse(&name).map_err(|e| corrupt("name", &e))?,
            version: None,
            function_id: self.function_id,
            config,
            code_checksum: self.code_checksum,
            code_size: u64::try_from(self.code_size).map_err(|e| corrupt("code_size", &e))?,
            revision: self.revision,
            tags,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
            controls: FunctionControls {
                reserved_concurrency: self
                    .reserved_concurrency
                    .map(|n| u32::try_from(n).map_err(|e| corrupt("reserved_concurrency", &e)))
                    .transpose()?,
                invocation_disabled: self.invocation_disabled != 0,
                disabled_reason: self.disabled_reason,
            },
        })
    }
}
