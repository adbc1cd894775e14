//! The admin web console: pages under `/console/`, served by the API listener.
//!
//! - `session.rs`: sign-in with an access key pair, sessions in the metadata store, the
//!   cookie + CSRF rule; `crate::api::authenticate` accepts a session in place of a signature.
//! - `assets.rs`: the embedded front end (plain ES modules, one CSS file, vendored uPlot).
//! - `series.rs`: time series for the monitoring charts.
//!
//! The front end calls the FC REST API itself (same validation, same error messages), so the
//! only console-specific JSON endpoints are the session and the chart series. Pages need a
//! session (else a redirect to the sign-in page); the static assets do not (they hold nothing
//! but the code that is in this repository).

pub mod assets;
pub mod series;
pub mod session;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiError, AppState};
pub use series::Samples;
pub use session::{ConsoleError, ConsoleSession};

/// Pages may load only this origin's scripts and styles (uPlot sets inline styles on its
/// elements, hence `'unsafe-inline'` for styles only), and may not be framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index_page))
        .route("/console/login", get(login_page))
        .route("/console/assets/{file}", get(asset))
        .route("/console/api/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/console/api/functions/{name}/series", get(function_series))
        .route("/console/api/cluster/series", get(cluster_series))
}

/// Take a sample of the node table every `console.sample_interval_ms`, until cancelled.
pub fn spawn_sampler(st: &AppState, tracker: &TaskTracker, cancel: CancellationToken) {
    let st = st.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(st.cfg.console.sample_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A follower without a leader yet has no table: no sample, the chart shows a gap.
            if let Ok(nodes) = crate::api::nodes::table(&st).await {
                st.samples.push(series::sample(chrono::Utc::now().timestamp_millis(), &nodes));
            }
        }
    });
}

fn page(name: &str) -> Response {
    let a = assets::get(name).expect("page is embedded");
    let mut resp = (StatusCode::OK, a.body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// The console (one page; its views are `#/...` routes). Without a live session: the
/// sign-in page, which comes back here after signing in.
async fn index_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let live = match session::cookie_token(&headers) {
        Some(t) => session::lookup(&st, t).await.is_ok(),
        None => false,
    };
    if live { page("index.html") } else { Redirect::to("/console/login").into_response() }
}

async fn login_page() -> Response {
    page("login.html")
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = assets::get(&file).filter(|_| !file.ends_with(".html")) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no console asset '{file}'")).into_response();
    };
    let etag = HeaderValue::from_str(&a.etag).expect("hex etag");
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag);
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, a.body).into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(header::ETAG, etag);
    // Revalidate every time (a 304 is cheap): a new binary must never run yesterday's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInInput {
    access_key_id: String,
    access_key_secret: String,
}

/// What the console knows about its session. Never the secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionOutput {
    access_key_id: String,
    csrf_token: String,
    /// Epoch ms.
    expires_at: i64,
}

impl From<session::Session> for SessionOutput {
    fn from(s: session::Session) -> Self {
        Self { access_key_id: s.access_key_id, csrf_token: s.csrf_token, expires_at: s.expires_ms }
    }
}

/// Sign in. JSON only: a cross-site form cannot send `application/json` without a preflight,
/// and the cookie is SameSite=Strict, so another site cannot sign a browser in either.
async fn sign_in(State(st): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ConsoleError::Invalid("sign in with a JSON body (content-type: application/json)".into()).into());
    }
    let input: SignInInput = serde_json::from_slice(&body)
        .map_err(|_| ConsoleError::Invalid("expected {\"accessKeyId\": ..., \"accessKeySecret\": ...}".into()))?;
    let (token, s) = session::sign_in(&st, input.access_key_id.trim(), input.access_key_secret.trim()).await?;
    tracing::info!(access_key_id = %s.access_key_id, "console sign-in");
    let mut resp = Json(SessionOutput::from(s)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session::session_cookie(&st, &token));
    Ok(resp)
}

async fn whoami(ConsoleSession(s): ConsoleSession) -> Json<SessionOutput> {
    Json(s.into())
}

/// Sign out: the row goes, so the cookie is dead on every controller, whatever the browser
/// does with the cleared cookie.
async fn sign_out(State(st): State<AppState>, ConsoleSession(_): ConsoleSession, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(t) = session::cookie_token(&headers) {
        session::sign_out(&st, t).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeriesParams {
    /// Epoch ms; default: an hour before `to`.
    from: Option<i64>,
    /// Epoch ms; default: now.
    to: Option<i64>,
    /// Bucket width in seconds; default 60.
    step: Option<i64>,
}

impl SeriesParams {
    fn window(&self) -> Result<(i64, i64, i64), ApiError> {
        let to = self.to.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let from = self.from.unwrap_or(to - 3_600_000);
        let step = self.step.unwrap_or(60).max(1) * 1000;
        if from >= to {
            return Err(ApiError::invalid("from must be before to"));
        }
        if (to - from) / step > series::MAX_BUCKETS {
            return Err(ApiError::invalid(format!("at most {} buckets: widen step", series::MAX_BUCKETS)));
        }
        Ok((from, to, step))
    }
}

/// A function's calls, errors, duration percentiles, cold starts and instances per bucket.
async fn function_series(
    State(st): State<AppState>,
    _: ConsoleSession,
    Path(name): Path<String>,
    q: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<series::FunctionSeries>, ApiError> {
    let Query(q) = q?;
    let (from, to, step) = q.window()?;
    crate::api::functions::load(&st, &name).await?;
    let query = series::summary_query(&name, from, to);
    let (mut calls, mut cursor, mut truncated) = (Vec::new(), None::<String>, false);
    loop {
        let page = st.log_search.page(&query, cursor.as_deref()).await?;
        calls.extend(page.lines.into_iter().filter_map(|l| Some((l.timestamp, l.summary?))).filter(|(_, s)| s.function_name == name));
        match page.next {
            Some(next) if calls.len() < series::MAX_SUMMARIES => cursor = Some(next),
            Some(_) => {
                truncated = true;
                break;
            }
            None => break,
        }
    }
    let mut out = series::bucket(&name, from, to, step, &calls, &st.samples.since(from));
    out.truncated = truncated;
    Ok(Json(out))
}

#[derive(Serialize)]
struct ClusterSeries {
    samples: Vec<series::Sample>,
}

/// Node capacity and usage, and instances, as sampled by this controller.
async fn cluster_series(
    State(st): State<AppState>,
    _: ConsoleSession,
    q: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ClusterSeries>, ApiError> {
    let Query(q) = q?;
    let (from, _, _) = q.window()?;
    Ok(Json(ClusterSeries { samples: st.samples.since(from) }))
}
