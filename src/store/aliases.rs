//! Function aliases (migration 0003). Writes lock the function's row first, like the version
//! writes (see `versions.rs`), so an alias can never be written for a version that a
//! concurrent DeleteFunctionVersion removes, nor deleted while a provision config is put on
//! it. The statements are the same on every engine.

use super::sql::{Engine, sql};
use super::versions::lock_function;
use super::{Db, Store, StoreError, on_db};
use crate::model::ValidationError;
use crate::model::version::{AliasInput, AliasRecord, Routing};

/// What DeleteAlias came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAlias {
    Deleted,
    /// No such alias (or no such function).
    NoAlias,
    /// A provision config is set on the alias: it goes first.
    Provisioned,
}

/// What CreateAlias or UpdateAlias came to.
#[derive(Debug, Clone)]
pub enum AliasWrite {
    Done(AliasRecord),
    NoFunction,
    /// The alias would route to a version that does not exist.
    NoVersion(u64),
    /// Create: the name is taken.
    Exists,
    /// Update: no such alias.
    NoAlias,
    /// Update: the merged alias is not valid.
    Invalid(ValidationError),
}

#[derive(sqlx::FromRow)]
struct AliasRow {
    function_name: String,
    alias_name: String,
    version_id: i64,
    additional_version_id: Option<i64>,
    additional_weight: Option<f64>,
    description: String,
    created_time: String,
    last_modified_time: String,
}

macro_rules! alias_columns {
    () => {
        "function_name, alias_name, version_id, additional_version_id, additional_weight, description, \
         created_time, last_modified_time"
    };
}

/// Within a transaction holding the function's lock: the first of `routing`'s versions that
/// does not exist, if any.
macro_rules! missing_version {
    ($tx:expr, $e:expr, $name:expr, $routing:expr) => {{
        let mut missing = None;
        for v in $routing.versions() {
            let n = sqlx::query_scalar::<_, i64>(
                sql!("SELECT COUNT(*) FROM function_versions WHERE function_name = ? AND version_id = ?").of($e),
            )
            .bind($name)
            .bind(v as i64)
            .fetch_one(&mut *$tx)
            .await?;
            if n == 0 {
                missing = Some(v);
                break;
            }
        }
        missing
    }};
}

impl Store {
    pub async fn create_alias(&self, a: &AliasRecord) -> Result<AliasWrite, StoreError> {
        let (extra, weight) = split(&a.routing);
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, &a.function_name) {
                return Ok(AliasWrite::NoFunction);
            }
            if let Some(v) = missing_version!(tx, e, &a.function_name, a.routing) {
                return Ok(AliasWrite::NoVersion(v));
            }
            let taken = sqlx::query_scalar::<_, i64>(
                sql!("SELECT COUNT(*) FROM function_aliases WHERE function_name = ? AND alias_name = ?").of(e),
            )
            .bind(&a.function_name)
            .bind(&a.alias_name)
            .fetch_one(&mut *tx)
            .await?;
            if taken > 0 {
                return Ok(AliasWrite::Exists);
            }
            sqlx::query(sql!("INSERT INTO function_aliases (", alias_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)").of(e))
                .bind(&a.function_name)
                .bind(&a.alias_name)
                .bind(a.routing.version_id as i64)
                .bind(extra)
                .bind(weight)
                .bind(&a.description)
                .bind(&a.created_time)
                .bind(&a.last_modified_time)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(AliasWrite::Done(a.clone()))
        })
    }

    /// Lay `input` over the stored alias (validated as a whole) and store the result.
    pub async fn update_alias(&self, function: &str, alias: &str, input: &AliasInput, now: &str) -> Result<AliasWrite, StoreError> {
        let row = on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, function) {
                return Ok(Err(AliasWrite::NoFunction));
            }
            let old = sqlx::query_as::<_, AliasRow>(
                sql!("SELECT ", alias_columns!(), " FROM function_aliases WHERE function_name = ? AND alias_name = ?").of(e),
            )
            .bind(function)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(old) = old else { return Ok(Err(AliasWrite::NoAlias)) };
            let new = match input.merged_into(&old.into_record(), now) {
                Ok(new) => new,
                Err(invalid) => return Ok(Err(AliasWrite::Invalid(invalid))),
            };
            if let Some(v) = missing_version!(tx, e, function, new.routing) {
                return Ok(Err(AliasWrite::NoVersion(v)));
            }
            let (extra, weight) = split(&new.routing);
            sqlx::query(
                sql!(
                    "UPDATE function_aliases SET version_id = ?, additional_version_id = ?, additional_weight = ?, \
                     description = ?, last_modified_time = ? WHERE function_name = ? AND alias_name = ?"
                )
                .of(e),
            )
            .bind(new.routing.version_id as i64)
            .bind(extra)
            .bind(weight)
            .bind(&new.description)
            .bind(&new.last_modified_time)
            .bind(function)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(new))
        })?;
        Ok(row.map_or_else(|outcome| outcome, AliasWrite::Done))
    }

    pub async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<AliasRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, AliasRow>(
                sql!("SELECT ", alias_columns!(), " FROM function_aliases WHERE function_name = ? AND alias_name = ?").of(e),
            )
            .bind(function)
            .bind(alias)
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(AliasRow::into_record))
    }

    /// A function's aliases whose name starts with `prefix`, after `start_after`, in name
    /// (code point) order.
    pub async fn list_aliases(&self, function: &str, prefix: &str, start_after: &str, limit: u32) -> Result<Vec<AliasRecord>, StoreError> {
        let prefix_chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, AliasRow>(
                sql!(
                    "SELECT ",
                    alias_columns!(),
                    " FROM function_aliases WHERE function_name = ? AND substr(alias_name, 1, ?) = ? AND alias_name > ? \
                     ORDER BY alias_name LIMIT ?"
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
        Ok(rows.into_iter().map(AliasRow::into_record).collect())
    }

    /// Delete an alias no provision config is set on (the check and the delete hold the
    /// function's lock, so a config cannot be put on the alias in between).
    pub async fn delete_alias(&self, function: &str, alias: &str) -> Result<DeleteAlias, StoreError> {
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, function) {
                return Ok(DeleteAlias::NoAlias);
            }
            let provisioned = sqlx::query_scalar::<_, i64>(
                sql!("SELECT COUNT(*) FROM provision_configs WHERE function_name = ? AND qualifier = ?").of(e),
            )
            .bind(function)
            .bind(alias)
            .fetch_one(&mut *tx)
            .await?;
            if provisioned > 0 {
                return Ok(DeleteAlias::Provisioned);
            }
            let deleted = sqlx::query(sql!("DELETE FROM function_aliases WHERE function_name = ? AND alias_name = ?").of(e))
                .bind(function)
                .bind(alias)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(if deleted > 0 { DeleteAlias::Deleted } else { DeleteAlias::NoAlias })
        })
    }
}

fn split(r: &Routing) -> (Option<i64>, Option<f64>) {
    (r.additional.map(|(v, _)| v as i64), r.additional.map(|(_, w)| w))
}

impl AliasRow {
    fn into_record(self) -> AliasRecord {
        let additional = self.additional_version_id.zip(self.additional_weight).map(|(v, w)| (v as u64, w));
        AliasRecord {
            function_name: self.function_name,
            alias_name: self.alias_name,
            routing: Routing { version_id: self.version_id as u64, additional },
            description: self.description,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
        }
    }
}
