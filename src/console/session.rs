//! Console sign-in sessions.
//!
//! A browser signs in with an access key pair (the one printed at first start will do) and
//! gets a random token in an `HttpOnly; SameSite=Strict` cookie. Sessions are rows of the
//! metadata store (migration 0009), not signed cookies: every controller behind a load
//! balancer reads the same rows, and signing out deletes the row, so it ends the session on all
//! of them at once. A signed cookie would need a revocation table for that anyway, so the row
//! is the simpler of the two. Only the token's SHA-256 is stored.
//!
//! Cookie auth is ambient (the browser attaches it to any request to this origin), so every
//! change made with it needs the session's CSRF token in `x-nubis-csrf` as well, which another
//! origin can neither read nor set. Reads (GET, HEAD) need only the cookie.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};

use crate::api::keys::KeyError;
use crate::api::{ApiError, AppState};
use crate::store::{SessionRow, StoreError};

pub const COOKIE: &str = "nubis_session";
pub const CSRF_HEADER: &str = "x-nubis-csrf";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("sign in to the console first")]
    NotSignedIn,
    #[error("the console session has expired or was signed out; sign in again")]
    SessionExpired,
    #[error("a change made with the console's session needs its x-nubis-csrf header")]
    CsrfMissing,
    #[error("the x-nubis-csrf header does not match this session")]
    CsrfMismatch,
    #[error("unknown access key id, or the secret does not match it")]
    BadCredentials,
    /// The caller's mistake in a console request (a sign-in body that is not JSON, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_key_id: String,
    pub csrf_token: String,
    pub expires_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_hex(bytes: usize) -> String {
    let b: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(b)
}

/// Equal strings, in time that depends only on the length.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session token from the request's `Cookie` headers.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Check the pair and open a session; returns the cookie token and the session.
pub async fn sign_in(st: &AppState, access_key_id: &str, secret: &str) -> Result<(String, Session), ConsoleError> {
    let known = st.keys.secret(access_key_id).await?;
    if !known.is_some_and(|k| same(&k, secret)) {
        return Err(ConsoleError::BadCredentials);
    }
    let now = now_ms();
    // Housekeeping here, not in a background task: sign-ins are rare and any controller does it.
    st.store.delete_expired_sessions(now).await?;
    let token = random_hex(32);
    let row = SessionRow {
        access_key_id: access_key_id.to_string(),
        csrf_token: random_hex(16),
        created_ms: now,
        expires_ms: now + st.cfg.console.session_ttl().as_millis() as i64,
    };
    st.store.insert_session(&crate::api::auth::sha256_hex(token.as_bytes()), &row).await?;
    Ok((token, Session { access_key_id: row.access_key_id, csrf_token: row.csrf_token, expires_ms: row.expires_ms }))
}

pub async fn sign_out(st: &AppState, token: &str) -> Result<(), ConsoleError> {
    Ok(st.store.delete_session(&crate::api::auth::sha256_hex(token.as_bytes())).await?)
}

/// The live session of a cookie token. Read from the store on every request (no cache), so a
/// sign-out through any controller takes effect everywhere at once; console traffic is one
/// person's clicks, so the read costs nothing that matters.
pub async fn lookup(st: &AppState, token: &str) -> Result<Session, ConsoleError> {
    let key = crate::api::auth::sha256_hex(token.as_bytes());
    let row = st.store.get_session(&key).await?.ok_or(ConsoleError::SessionExpired)?;
    if row.expires_ms <= now_ms() {
        st.store.delete_session(&key).await?;
        return Err(ConsoleError::SessionExpired);
    }
    // A session is only as good as its key.
    if st.keys.secret(&row.access_key_id).await?.is_none() {
        return Err(ConsoleError::SessionExpired);
    }
    Ok(Session { access_key_id: row.access_key_id, csrf_token: row.csrf_token, expires_ms: row.expires_ms })
}

/// Changes need the CSRF header; reads do not.
pub fn check_csrf(session: &Session, method: &Method, headers: &HeaderMap) -> Result<(), ConsoleError> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).ok_or(ConsoleError::CsrfMissing)?;
    if same(sent, &session.csrf_token) { Ok(()) } else { Err(ConsoleError::CsrfMismatch) }
}

/// Cookie and, for a change, CSRF header: the request's session.
pub async fn authenticate(st: &AppState, method: &Method, headers: &HeaderMap) -> Result<Session, ConsoleError> {
    let token = cookie_token(headers).ok_or(ConsoleError::NotSignedIn)?;
    let session = lookup(st, token).await?;
    check_csrf(&session, method, headers)?;
    Ok(session)
}

/// `Set-Cookie` for a new session. `Secure` when the server is reached over HTTPS (as far as
/// `server.public_url` says): a browser would not send a Secure cookie over plain HTTP.
pub fn session_cookie(st: &AppState, token: &str) -> HeaderValue {
    let secure = if st.cfg.server.public_url.starts_with("https://") { "; Secure" } else { "" };
    let max_age = st.cfg.console.session_ttl().as_secs();
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"))
        .expect("hex token")
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("nubis_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Extractor for console JSON endpoints: a live session (and the CSRF header for a change),
/// else a 401/403 FC error.
pub struct ConsoleSession(pub Session);

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        Ok(Self(authenticate(st, &parts.method, &parts.headers).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1; nubis_session=abc ; b=2"));
        assert_eq!(cookie_token(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("nubis_session=x"));
        assert_eq!(cookie_token(&h), Some("x"));
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("nubis_session="));
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn changes_need_the_matching_csrf_header() {
        let s = Session { access_key_id: "NB1".into(), csrf_token: "t0k".into(), expires_ms: 0 };
        let mut h = HeaderMap::new();
        assert!(check_csrf(&s, &Method::GET, &h).is_ok());
        assert!(matches!(check_csrf(&s, &Method::POST, &h), Err(ConsoleError::CsrfMissing)));
        h.insert(CSRF_HEADER, HeaderValue::from_static("t0x"));
        assert!(matches!(check_csrf(&s, &Method::DELETE, &h), Err(ConsoleError::CsrfMismatch)));
        h.insert(CSRF_HEADER, HeaderValue::from_static("t0k"));
        assert!(check_csrf(&s, &Method::PUT, &h).is_ok());
    }
}
