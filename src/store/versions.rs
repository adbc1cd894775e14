//! Function versions (migration 0003); aliases are in `aliases.rs`.
//!
//! Every write to a function's versions or aliases first locks the function's row (an UPDATE
//! of it: a row lock on PostgreSQL and MySQL, the write lock on SQLite) and only then reads
//! what it checks. So publish, delete-version and the alias writes of one function run one
//! after the other, and a check cannot be overtaken by a concurrent write (an alias created
//! for a version being deleted, two publishes taking the same id). The statements are the
//! same on every engine.

use super::sql::{Engine, sql};
use super::functions::FunctionRow;
use super::{Db, Store, StoreError, on_db};
use crate::model::version::{Qualifier, VersionRecord};
use crate::model::FunctionRecord;

/// Lock the function's row for the rest of the transaction; evaluates to false when there is
/// no such function. `last_version_id = last_version_id` changes nothing but takes the lock
/// (MySQL counts the matched row: sqlx connects with CLIENT_FOUND_ROWS).
macro_rules! lock_function {
    ($tx:expr, $e:expr, $name:expr) => {
        sqlx::query(sql!("UPDATE functions SET last_version_id = last_version_id WHERE name = ?").of($e))
            .bind($name)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
            == 1
    };
}
pub(super) use lock_function;

/// What PublishFunctionVersion came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    Published(VersionRecord),
    /// LATEST's config and code equal those of the newest version: nothing to publish.
    Unchanged { latest: u64 },
    NoFunction,
}

/// What DeleteFunctionVersion came to.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteVersion {
    /// Deleted; its code package may now be unused.
    Deleted { code_checksum: String },
    NoVersion,
    /// These aliases route to it (as their version or their additional version).
    InUse(Vec<String>),
    NoFunction,
}

/// What a qualifier names, for a caller without a cache (the async dispatcher).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Found(Box<FunctionRecord>),
    NoFunction,
    NoVersion(u64),
    NoAlias(String),
}

#[derive(sqlx::FromRow)]
struct LatestRow {
    config: String,
    code_checksum: String,
    code_size: i64,
    revision: i64,
    last_version_id: i64,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    function_name: String,
    version_id: i64,
    description: String,
    code_checksum: String,
    created_time: String,
    last_modified_time: String,
}

macro_rules! version_columns {
    () => {
        "function_name, version_id, description, code_checksum, created_time, last_modified_time"
    };
}

/// The frozen config of a version, with the function's identity (id, tags, creation time) and
/// its current controls (a disabled function is disabled in every version), in the shape of a
/// function row.
macro_rules! function_at_sql {
    () => {
        "SELECT f.name AS name, f.function_id AS function_id, v.config AS config, \
         v.code_checksum AS code_checksum, v.code_size AS code_size, v.revision AS revision, \
         f.tags AS tags, f.created_time AS created_time, v.last_modified_time AS last_modified_time, \
         f.reserved_concurrency AS reserved_concurrency, f.invocation_disabled AS invocation_disabled, \
         f.disabled_reason AS disabled_reason \
         FROM function_versions v JOIN functions f ON f.name = v.function_name \
         WHERE v.function_name = ? AND v.version_id = ?"
    };
}

fn id(v: u64) -> i64 {
    // Version ids are parsed as at most i64::MAX (model::version::parse_version_id).
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Snapshot LATEST as the next version, unless nothing changed since the newest version.
    /// The id comes from the function row's counter, so it is never given twice.
    pub async fn publish_version(&self, name: &str, description: &str, now: &str) -> Result<Publish, StoreError> {
        let published = on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            // Taking the next id locks the row: a concurrent update of LATEST waits for this
            // snapshot, and a concurrent publish for its id.
            let taken = sqlx::query(sql!("UPDATE functions SET last_version_id = last_version_id + 1 WHERE name = ?").of(e))
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if taken != 1 {
                return Ok(Err(Publish::NoFunction));
            }
            let latest = sqlx::query_as::<_, LatestRow>(
                sql!("SELECT config, code_checksum, code_size, revision, last_version_id FROM functions WHERE name = ?").of(e),
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            let newest = sqlx::query_as::<_, (i64, String, String)>(
                sql!(
                    "SELECT version_id, config, code_checksum FROM function_versions WHERE function_name = ? \
                     ORDER BY version_id DESC LIMIT 1"
                )
                .of(e),
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((v, config, checksum)) = newest
                && checksum == latest.code_checksum
                && same_json(&config, &latest.config)
            {
                // Dropping the transaction rolls the counter back.
                return Ok(Err(Publish::Unchanged { latest: v as u64 }));
            }
            // Above LATEST's revision: instances of a version never pass for older ones.
            let revision = chrono::Utc::now().timestamp_micros().max(latest.revision + 1);
            sqlx::query(
                sql!(
                    "INSERT INTO function_versions (function_name, version_id, description, config, code_checksum, \
                     code_size, revision, created_time, last_modified_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )
                .of(e),
            )
            .bind(name)
            .bind(latest.last_version_id)
            .bind(description)
            .bind(&latest.config)
            .bind(&latest.code_checksum)
            .bind(latest.code_size)
            .bind(revision)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok((latest.last_version_id, latest.code_checksum)))
        })?;
        Ok(match published {
            Err(outcome) => outcome,
            Ok((v, code_checksum)) => Publish::Published(VersionRecord {
                function_name: name.to_string(),
                version_id: v as u64,
                description: description.to_string(),
                code_checksum,
                created_time: now.to_string(),
                last_modified_time: now.to_string(),
            }),
        })
    }

    /// A version's frozen config and code as a runnable record (`version` set), or None.
    pub async fn get_function_at(&self, name: &str, version: u64) -> Result<Option<FunctionRecord>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, FunctionRow>(sql!(function_at_sql!()).of(e)).bind(name).bind(id(version)).fetch_optional(pool).await
        })?;
        row.map(|r| r.into_record().map(|f| FunctionRecord { version: Some(version), ..f })).transpose()
    }

    /// One page of a function's versions: ascending ids after `after` (`forward`), or
    /// descending ids before it.
    pub async fn list_versions(&self, name: &str, after: Option<u64>, forward: bool, limit: u32) -> Result<Vec<VersionRecord>, StoreError> {
        let (sql, cursor) = if forward {
            (sql!("SELECT ", version_columns!(), " FROM function_versions WHERE function_name = ? AND version_id > ? ORDER BY version_id LIMIT ?"), after.map_or(0, id))
        } else {
            (
                sql!("SELECT ", version_columns!(), " FROM function_versions WHERE function_name = ? AND version_id < ? ORDER BY version_id DESC LIMIT ?"),
                after.map_or(i64::MAX, id),
            )
        };
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, VersionRow>(sql.of(e)).bind(name).bind(cursor).bind(i64::from(limit)).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(VersionRow::into_record).collect())
    }

    /// Delete a version no alias routes to.
    pub async fn delete_version(&self, name: &str, version: u64) -> Result<DeleteVersion, StoreError> {
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            if !lock_function!(tx, e, name) {
                return Ok(DeleteVersion::NoFunction);
            }
            let aliases = sqlx::query_scalar::<_, String>(
                sql!(
                    "SELECT alias_name FROM function_aliases WHERE function_name = ? \
                     AND (version_id = ? OR additional_version_id = ?) ORDER BY alias_name"
                )
                .of(e),
            )
            .bind(name)
            .bind(id(version))
            .bind(id(version))
            .fetch_all(&mut *tx)
            .await?;
            if !aliases.is_empty() {
                return Ok(DeleteVersion::InUse(aliases));
            }
            let checksum = sqlx::query_scalar::<_, String>(
                sql!("SELECT code_checksum FROM function_versions WHERE function_name = ? AND version_id = ?").of(e),
            )
            .bind(name)
            .bind(id(version))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(code_checksum) = checksum else { return Ok(DeleteVersion::NoVersion) };
            sqlx::query(sql!("DELETE FROM function_versions WHERE function_name = ? AND version_id = ?").of(e))
                .bind(name)
                .bind(id(version))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(DeleteVersion::Deleted { code_checksum })
        })
    }

    /// What `q` names now; an alias picks its version with `roll` (uniform in `[0, 1)`).
    /// Uncached: one or two reads (the API's invoke path caches, see `api::qualifier`).
    pub async fn resolve(&self, name: &str, q: &Qualifier, roll: f64) -> Result<Resolution, StoreError> {
        let version = match q {
            Qualifier::Latest => {
                return Ok(self.get_function(name).await?.map_or(Resolution::NoFunction, |f| Resolution::Found(Box::new(f))));
            }
            Qualifier::Version(v) => *v,
            Qualifier::Alias(a) => match self.get_alias(name, a).await? {
                Some(alias) => alias.routing.pick(roll),
                None if self.get_function(name).await?.is_none() => return Ok(Resolution::NoFunction),
                None => return Ok(Resolution::NoAlias(a.clone())),
            },
        };
        Ok(match self.get_function_at(name, version).await? {
            Some(f) => Resolution::Found(Box::new(f)),
            None if self.get_function(name).await?.is_none() => Resolution::NoFunction,
            None => Resolution::NoVersion(version),
        })
    }
}

/// Two stored config documents say the same (compared as JSON values: key order is not
/// meaning).
fn same_json(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl VersionRow {
    fn into_record(self) -> VersionRecord {
        VersionRecord {
            function_name: self.function_name,
            version_id: self.version_id as u64,
            description: self.description,
            code_checksum: self.code_checksum,
            created_time: self.created_time,
            last_modified_time: self.last_modified_time,
        }
    }
}
