//! One test's database, on any engine, and raw access to it for what the store API does not
//! offer (back-dating rows, reading the migrations table).

use std::path::PathBuf;

use nubis::config::DatabaseConfig;
use nubis::store::{Engine, Store};
use sqlx::Connection;

#[path = "../support/databases.rs"]
pub mod databases;
#[path = "../support/forwarder.rs"]
pub mod forwarder;

pub struct TestDb {
    pub engine: Engine,
    /// What `Store::open` takes: for SQLite an empty URL (the data directory's nubis.db).
    pub cfg: DatabaseConfig,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// The database created for this test on a server (PostgreSQL, MySQL).
    server_db: Option<String>,
}

impl TestDb {
    pub async fn fresh(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, server_db) = match engine {
            Engine::Sqlite => (String::new(), None),
            _ => {
                let (url, name) = databases::create_database(engine).await;
                (url, Some(name))
            }
        };
        let cfg = DatabaseConfig { url, ..Default::default() };
        Self { engine, cfg, data_dir: dir.path().to_path_buf(), _dir: dir, server_db }
    }

    /// A store on this database (migrated).
    pub async fn open(&self) -> Store {
        Store::open(&self.cfg, &self.data_dir).await.expect("store opens")
    }

    /// Run one statement written for every engine, on a connection of its own.
    pub async fn exec(&self, sql: &'static str) {
        match self.engine {
            Engine::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.sqlite_url()).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Engine::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.cfg.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Engine::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.cfg.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// One integer from a query written for every engine.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        match self.engine {
            Engine::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.sqlite_url()).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Engine::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.cfg.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Engine::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.cfg.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("nubis.db").display())
    }

    /// Drop the server database (a failed test leaves its database behind for a look).
    pub async fn remove(self) {
        if let Some(name) = &self.server_db {
            databases::drop_database(self.engine, name).await;
        }
    }
}
