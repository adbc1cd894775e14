//! What a store call can fail with, sorted by who can act on it: the caller (a duplicate, a
//! lost race, a value the database refuses), the operator (the database is unreachable or
//! overloaded: retry later), or us (a query or row this code cannot handle).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("changed concurrently")]
    Conflict,
    /// Unreachable, restarting, out of connections, or a transient failure (deadlock,
    /// serialization): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database did not answer within {0:?}")]
    TimedOut(Duration),
    /// The database refused a value the caller supplied (e.g. a NUL character on PostgreSQL).
    #[error("the database refused a value: {0}")]
    Rejected(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// A statement this engine does not accept, or a result this code cannot read: a bug.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database.url: {0}")]
    BadUrl(String),
    #[error("another process held the migration lock for {0:?}")]
    MigrationLock(Duration),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            E::Database(db) => {
                // SQLite's codes are result codes, not SQLSTATEs: everything else there is
                // treated as unavailable (busy, I/O), as it always was.
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    return StoreError::Unavailable(e);
                }
                // SQLSTATE classes (PostgreSQL and MySQL report them alike): 22 data exception,
                // 23 integrity violation, 42 syntax or access rule, 0A unsupported feature.
                // Everything else (08 connection, 53 resources, 57 shutdown, 40 deadlock or
                // serialization, MySQL's HY000 lock wait timeout, ...) is the database's state.
                let class = db.code().map(|c| c.get(..2).unwrap_or_default().to_string());
                match class.as_deref() {
                    Some("22") => StoreError::Rejected(db.message().to_string()),
                    Some("23" | "42" | "0A") => StoreError::Query(e),
                    _ => StoreError::Unavailable(e),
                }
            }
            E::RowNotFound
            | E::TypeNotFound { .. }
            | E::ColumnIndexOutOfBounds { .. }
            | E::ColumnNotFound(_)
            | E::ColumnDecode { .. }
            | E::Encode(_)
            | E::Decode(_)
            | E::InvalidArgument(_) => StoreError::Query(e),
            _ => StoreError::Unavailable(e),
        }
    }
}
