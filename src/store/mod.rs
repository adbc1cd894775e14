//! All SQL lives here.
//!
//! What is persisted: function metadata (config, code checksum, revision) and sealed access keys;
//! async invoke configs and task records (`async_tasks`); the embedded queue's messages
//! (`crate::queue::embedded`, same database).
//! What is not: instances, slots, log capture state; they are rebuilt from the agents at start
//! (and, on one node, simply started afresh after orphans are removed).
//!
//! The SQL is kept portable (no SQLite-only functions) so PostgreSQL/MySQL backends can reuse it;
//! the one exception, SQLite JSON functions in `Store::transition_task`, is marked there.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::model::{FunctionConfig, FunctionName, FunctionRecord, Tag};

mod async_tasks;
pub use async_tasks::{TaskChange, TaskQuery};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("changed concurrently")]
    Conflict,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            _ => StoreError::Unavailable(e),
        }
    }
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A macro, not a const, so queries stay `&'static str` literals (sqlx refuses built strings).
macro_rules! function_columns {
    () => {
        "name, function_id, config, code_checksum, code_size, revision, tags, created_time, last_modified_time"
    };
}

impl Store {
    /// Open (creating if needed) the SQLite file and apply migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            // WAL lets readers run beside the single writer; NORMAL is durable across process
            // crashes (the case we promise), fsyncs at checkpoints.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn insert_function(&self, f: &FunctionRecord) -> Result<(), StoreError> {
        sqlx::query(concat!("INSERT INTO functions (", function_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(f.name.as_str())
            .bind(&f.function_id)
            .bind(to_json(&f.config))
            .bind(&f.code_checksum)
            .bind(f.code_size as i64)
            .bind(f.revision)
            .bind(to_json(&f.tags))
            .bind(&f.created_time)
            .bind(&f.last_modified_time)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replace a function's row if it is still at `expected_revision` (optimistic concurrency:
    /// two racing updates cannot silently overwrite each other).
    pub async fn update_function(&self, f: &FunctionRecord, expected_revision: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE functions SET config = ?, code_checksum = ?, code_size = ?, revision = ?, \
             last_modified_time = ? WHERE name = ? AND revision = ?",
        )
        .bind(to_json(&f.config))
        .bind(&f.code_checksum)
        .bind(f.code_size as i64)
        .bind(f.revision)
        .bind(&f.last_modified_time)
        .bind(f.name.as_str())
        .bind(expected_revision)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict) }
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", function_columns!(), " FROM functions WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| function_from_row(&r)).transpose()
    }

    /// Functions whose name starts with `prefix`, after `start_after`, in name order.
    pub async fn list_functions(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            function_columns!(),
            " FROM functions WHERE substr(name, 1, ?) = ? AND name > ? ORDER BY name LIMIT ?"
        ))
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(start_after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(function_from_row).collect()
    }

    /// True if a row was deleted.
    pub async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM functions WHERE name = ?").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many functions use a code package (it may be shared by identical uploads).
    pub async fn code_references(&self, checksum: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM functions WHERE code_checksum = ?")
            .bind(checksum)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn insert_access_key(&self, id: &str, sealed: &[u8], description: &str, created: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO access_keys (access_key_id, secret_sealed, description, created_time) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(sealed)
            .bind(description)
            .bind(created)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_access_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT secret_sealed FROM access_keys WHERE access_key_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn count_access_keys(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM access_keys").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// The SQLite pool, for the embedded queue that shares this database.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize")
}

fn function_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<FunctionRecord, StoreError> {
    let name: String = r.try_get("name")?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("function '{name}' {what}: {e}"));
    let config: FunctionConfig =
        serde_json::from_str(&r.try_get::<String, _>("config")?).map_err(|e| corrupt("config", &e))?;
    let tags: Vec<Tag> = serde_json::from_str(&r.try_get::<String, _>("tags")?).map_err(|e| corrupt("tags", &e))?;
    Ok(FunctionRecord {
        name: FunctionName::parse(&name).map_err(|e| corrupt("name", &e))?,
        function_id: r.try_get("function_id")?,
        config,
        code_checksum: r.try_get("code_checksum")?,
        code_size: r.try_get::<i64, _>("code_size")? as u64,
        revision: r.try_get("revision")?,
        tags,
        created_time: r.try_get("created_time")?,
        last_modified_time: r.try_get("last_modified_time")?,
    })
}
