//! All SQL lives here.
//!
//! What is persisted: function metadata (config, code checksum, revision, and its controls:
//! reserved concurrency, the invocation switch) and sealed access keys; published versions
//! (frozen config and code checksum) and aliases (`versions.rs`, `aliases.rs`); provision
//! configs (`scaling.rs`: the instances to keep, not the instances); triggers (`triggers.rs`:
//! their configs verbatim) and the one piece of an engine's state that must outlive a process,
//! each timer trigger's last tick (`timers.rs`); console sign-in sessions (`sessions.rs`); async
//! invoke configs and task records
//! (`async_tasks`); with SQLite, also the embedded queue's messages
//! (`crate::queue::embedded`, same database).
//! What is not: instances, slots, log capture state; they are rebuilt from the agents at start
//! (and, on one node, simply started afresh after orphans are removed).
//!
//! One [`Store`] serves three engines: SQLite (a file in the data directory, the default),
//! PostgreSQL and MySQL/MariaDB (what a cluster of controllers shares). Each method is written
//! once; [`on_db!`] expands its body for each engine's pool, so every query is typed for its own
//! driver, and the SQL comes from [`sql`] (`&'static str` per engine; identical bind order).
//! Schemas: `migrations/{sqlite,postgres,mysql}`, equivalent but for the embedded queue's
//! table, which only SQLite has. They are applied at open under a lock (PostgreSQL: sqlx's
//! advisory lock; MySQL: ours, see [`migrate_mysql`]; SQLite: a flock), so controllers starting
//! together apply each migration once.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::migrate::MigrateError;
use sqlx::{Connection, SqlitePool};

use crate::config::DatabaseConfig;

mod aliases;
mod async_configs;
mod async_tasks;
mod errors;
mod functions;
mod scaling;
mod sessions;
pub(crate) mod sql;
mod timers;
mod triggers;
mod versions;

pub use aliases::{AliasWrite, DeleteAlias};
pub use scaling::ProvisionWrite;
pub use sessions::SessionRow;
pub use timers::TimerRecord;
pub use triggers::TriggerWrite;
pub use async_tasks::{TaskChange, TaskQuery};
pub use versions::{DeleteVersion, Publish, Resolution};
pub use errors::StoreError;
pub use sql::Engine;
use sql::sql;

/// Handle to the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Bound on every call (pool wait + statements): a database that stops answering turns
    /// into 503s, not requests that hang.
    timeout: Duration,
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// Run `$body` against this store's pool, with `$pool` bound to the pool and `$e` to its
/// [`Engine`]. The body is expanded once per engine, so its queries are typed for that driver;
/// it returns `Result<_, sqlx::Error>` (and may use `?`). The whole call is bounded by the
/// store's timeout.
macro_rules! on_db {
    ($store:expr, |$pool:ident, $e:ident| $body:expr) => {{
        let store: &Store = $store;
        let work = async {
            let r: Result<_, sqlx::Error> = match &store.db {
                Db::Sqlite(p) => {
                    let ($pool, $e) = (p, Engine::Sqlite);
                    $body
                }
                Db::Postgres(p) => {
                    let ($pool, $e) = (p, Engine::Postgres);
                    $body
                }
                Db::MySql(p) => {
                    let ($pool, $e) = (p, Engine::MySql);
                    $body
                }
            };
            r
        };
        match tokio::time::timeout(store.timeout, work).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::TimedOut(store.timeout)),
        }
    }};
}
use on_db;


impl Store {
    /// Open the database `cfg.url` names (empty: the SQLite file `<data_dir>/nubis.db`) and
    /// apply migrations. Fails if no connection can be made within `cfg.connect_timeout_secs`.
    pub async fn open(cfg: &DatabaseConfig, data_dir: &Path) -> Result<Self, StoreError> {
        let url = cfg.url.trim();
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let db = match scheme.as_deref() {
            None if url.is_empty() => Db::Sqlite(open_sqlite_pool(&data_dir.join("nubis.db"), cfg).await?),
            Some("sqlite") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                Db::Sqlite(open_sqlite_pool(Path::new(path), cfg).await?)
            }
            Some("postgres" | "postgresql") => {
                let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(e.to_string()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(cfg.connect_timeout())
                    .connect_with(opts.application_name("nubis"))
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Db::Postgres(pool)
            }
            Some("mysql" | "mariadb") => {
                let opts = MySqlConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(e.to_string()))?;
                let opts = opts.charset("utf8mb4");
                let pool = MySqlPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(cfg.connect_timeout())
                    .connect_with(opts.clone())
                    .await?;
                migrate_mysql(&pool, &opts).await?;
                Db::MySql(pool)
            }
            _ => {
                return Err(StoreError::BadUrl(
                    "expected empty (SQLite in the data directory), sqlite://PATH, postgres://... or mysql://...".into(),
                ));
            }
        };
        Ok(Self { db, timeout: cfg.query_timeout() })
    }

    /// Open (creating if needed) a SQLite file with the default settings, and migrate it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let cfg = DatabaseConfig::default();
        Ok(Self { db: Db::Sqlite(open_sqlite_pool(path, &cfg).await?), timeout: cfg.query_timeout() })
    }

    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
            Db::MySql(_) => Engine::MySql,
        }
    }

    pub async fn insert_access_key(&self, id: &str, sealed: &[u8], description: &str, created: &str) -> Result<(), StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query(
                sql!("INSERT INTO access_keys (access_key_id, secret_sealed, description, created_time) VALUES (?, ?, ?, ?)")
                    .of(e),
            )
            .bind(id)
            .bind(sealed)
            .bind(description)
            .bind(created)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn get_access_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query_scalar::<_, Vec<u8>>(sql!("SELECT secret_sealed FROM access_keys WHERE access_key_id = ?").of(e))
                .bind(id)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn count_access_keys(&self) -> Result<i64, StoreError> {
        on_db!(self, |pool, e| sqlx::query_scalar::<_, i64>(sql!("SELECT COUNT(*) FROM access_keys").of(e)).fetch_one(pool).await)
    }

    /// The SQLite pool, for the embedded queue that shares this database; None on the other
    /// engines (the embedded queue is SQLite-only).
    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite(p) => Some(p),
            _ => None,
        }
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
            Db::MySql(p) => p.close().await,
        }
    }
}

async fn open_sqlite_pool(path: &Path, cfg: &DatabaseConfig) -> Result<SqlitePool, StoreError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL lets readers run beside the single writer; NORMAL is durable across process
        // crashes (the case we promise), fsyncs at checkpoints.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(cfg.connect_timeout())
        .connect_with(opts)
        .await?;
    // sqlx's migrator does not lock on SQLite, and two processes opening a fresh file at once
    // (a server and `nubis admin create-key`) would both create the tables. An exclusive
    // flock on a file beside the database serializes them (it goes with the file descriptor,
    // so it is released on close, and on a crash).
    let lock_path = path.with_file_name(format!(
        "{}.migrate-lock",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        f.lock()?;
        Ok(f)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|e| MigrateError::Execute(e.into()))?;
    let migrated = sqlx::migrate!("migrations/sqlite").run(&pool).await;
    drop(lock);
    migrated?;
    Ok(pool)
}

/// How long a MySQL controller waits for another one's migrations.
const MYSQL_MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(300);

/// Migrate under a lock of our own: sqlx's migrator asks for `GET_LOCK(name, -1)` and ignores
/// the answer, and MariaDB answers NULL at once to a negative timeout, so controllers
/// starting together would run the same migration side by side. The lock is named after the
/// database (hashed: lock names stop at 64 characters) and held on a connection of its own,
/// outside the pool, so it works whatever the pool's size.
async fn migrate_mysql(pool: &MySqlPool, opts: &MySqlConnectOptions) -> Result<(), StoreError> {
    let mut lock = MySqlConnection::connect_with(opts).await?;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(CONCAT('nubis-migrate:', SHA1(DATABASE())), ?)")
        .bind(MYSQL_MIGRATION_LOCK_WAIT.as_secs() as i64)
        .fetch_one(&mut lock)
        .await?;
    if got != Some(1) {
        return Err(StoreError::MigrationLock(MYSQL_MIGRATION_LOCK_WAIT));
    }
    let migrated = sqlx::migrate!("migrations/mysql").run(pool).await;
    // Closing the connection releases the lock too; release it explicitly all the same.
    let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('nubis-migrate:', SHA1(DATABASE())))").execute(&mut lock).await;
    let _ = lock.close().await;
    Ok(migrated?)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize")
}
