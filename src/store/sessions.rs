//! Console sign-in sessions (migration 0009): one row per signed-in browser, keyed by the
//! SHA-256 of its cookie token. See `crate::console::session` for why they live here.

use super::sql::{Engine, sql};
use super::{Db, Store, StoreError, on_db};

/// A stored session.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionRow {
    pub access_key_id: String,
    pub csrf_token: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl Store {
    pub async fn insert_session(&self, token_sha256: &str, row: &SessionRow) -> Result<(), StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query(
                sql!(
                    "INSERT INTO console_sessions (token_sha256, access_key_id, csrf_token, created_ms, expires_ms) \
                     VALUES (?, ?, ?, ?, ?)"
                )
                .of(e),
            )
            .bind(token_sha256)
            .bind(&row.access_key_id)
            .bind(&row.csrf_token)
            .bind(row.created_ms)
            .bind(row.expires_ms)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The session, expired or not (the caller compares `expires_ms` with its clock).
    pub async fn get_session(&self, token_sha256: &str) -> Result<Option<SessionRow>, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query_as::<_, SessionRow>(
                sql!("SELECT access_key_id, csrf_token, created_ms, expires_ms FROM console_sessions WHERE token_sha256 = ?").of(e),
            )
            .bind(token_sha256)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query(sql!("DELETE FROM console_sessions WHERE token_sha256 = ?").of(e))
                .bind(token_sha256)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Drop sessions that expired before `now_ms`; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        on_db!(self, |pool, e| {
            sqlx::query(sql!("DELETE FROM console_sessions WHERE expires_ms < ?").of(e))
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
