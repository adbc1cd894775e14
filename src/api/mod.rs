//! API controller: the FC 3.0 REST surface (`/2023-03-30/...`, signed), plus unsigned
//! `/health`, `/openapi.json`, time-limited code download links (`/nubis/code/...`) and HTTP
//! triggers (`/http/...`, `/http-intranet/...`: `crate::triggers::http`, their own auth).
//!
//! Layers, outermost first: request id (every response carries `x-fc-request-id`, every error
//! body its `RequestId`) → signature check, or a console session (FC routes only, see
//! [`authenticate`]) → handler. The console's pages and JSON are merged in from `crate::console`. The OpenAPI document
//! is built from the same route table (utoipa-axum), so it cannot drift from what is served.

pub mod aliases;
pub mod async_invoke;
pub mod auth;
pub mod code;
pub mod controls;
pub mod error;
pub mod functions;
pub mod invoke;
pub mod keys;
pub mod logs;
pub mod nodes;
pub mod paging;
pub mod provision;
pub mod qualifier;
pub mod triggers;
pub mod versions;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::codestore::CodeStore;
use crate::config::Config;
use crate::model::FunctionRecord;
use crate::model::trigger::TriggerRecord;
use crate::model::version::AliasRecord;
use crate::logstore::{LogSearch, LogStore};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::scheduler::ResourceManager;
use crate::store::Store;
pub use error::ApiError;
use error::REQUEST_ID;
use keys::Keyring;

/// Handles only; the logic lives in the modules that own it. One `Arc`: the router clones the
/// state for every request (each middleware layer and the `State` extractor), so a clone must be
/// one reference count, not one per handle.
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

pub struct Handles {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub code: CodeStore,
    pub keys: Arc<Keyring>,
    pub rm: ResourceManager,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub logs: LogStore,
    /// Where GetFunctionLogs reads: the search cluster if configured, else `logs`.
    pub log_search: LogSearch,
    pub functions: Arc<FunctionCache>,
    /// Signs code download links.
    pub code_url_key: [u8; 32],
    /// Held from storing a code blob until its function row is written, and while an unused
    /// blob is counted and deleted, so a delete cannot remove a blob a create is about to
    /// reference. (One process; the cluster store will need this in the database.)
    pub code_gc: Arc<tokio::sync::Mutex<()>>,
    /// The cluster's etcd (cordons), None on a single box.
    pub etcd: Option<(etcd_client::Client, crate::cluster::Keys)>,
    /// Wakes the timer engine when a trigger is written through this process.
    pub timers: crate::triggers::timer::TimerWake,
    /// Wakes the Kafka trigger engine likewise.
    pub kafka_triggers: crate::triggers::EngineWake,
    /// The console's samples of the node table (its monitoring charts).
    pub samples: Arc<crate::console::Samples>,
}

/// A cache entry and when it was stored.
type Cached<T> = (Arc<T>, std::time::Instant);

/// Function records (LATEST and versions) and aliases for the invoke path, so a warm call does
/// no database round trip. Entries are dropped on update and delete through this process. With
/// several controllers (one shared database) a change through another one is not seen here, so
/// entries also expire after `ttl`: a change made elsewhere reaches this controller's calls
/// within it. Versions never change, but they can be deleted (and a function deleted and
/// created again reuses version ids), so they are dropped and expire like the rest.
#[derive(Default)]
pub struct FunctionCache {
    /// By [`crate::scheduler::pool_key`]: `name` for LATEST, `name@<id>` for a version.
    map: RwLock<HashMap<String, Cached<FunctionRecord>>>,
    /// By (function, alias).
    aliases: RwLock<HashMap<(String, String), Cached<AliasRecord>>>,
    /// Triggers by (function, trigger name), for the HTTP trigger path.
    triggers: RwLock<HashMap<(String, String), Cached<TriggerRecord>>>,
    ttl: Option<std::time::Duration>,
}

impl FunctionCache {
    /// Entries expire after `ttl` (cluster mode); without one they live until invalidated.
    pub fn with_ttl(ttl: Option<std::time::Duration>) -> Self {
        Self { map: RwLock::default(), aliases: RwLock::default(), triggers: RwLock::default(), ttl }
    }
    fn fresh(&self, at: std::time::Instant) -> bool {
        self.ttl.is_none_or(|ttl| at.elapsed() < ttl)
    }
    /// LATEST.
    pub fn get(&self, name: &str) -> Option<Arc<FunctionRecord>> {
        self.get_at(name, None)
    }
    /// LATEST (`None`) or a version.
    pub fn get_at(&self, name: &str, version: Option<u64>) -> Option<Arc<FunctionRecord>> {
        let map = self.map.read().expect("cache lock");
        let (f, at) = map.get(&crate::scheduler::pool_key(name, version))?;
        self.fresh(*at).then(|| f.clone())
    }
    /// The entry however old: for when the database cannot be read.
    pub fn get_stale(&self, name: &str) -> Option<Arc<FunctionRecord>> {
        self.map.read().expect("cache lock").get(name).map(|(f, _)| f.clone())
    }
    pub fn put(&self, f: Arc<FunctionRecord>) {
        let key = crate::scheduler::pool_key(f.name.as_str(), f.version);
        self.map.write().expect("cache lock").insert(key, (f, std::time::Instant::now()));
    }
    /// LATEST changed (its versions did not).
    pub fn invalidate(&self, name: &str) {
        self.map.write().expect("cache lock").remove(name);
    }
    pub fn invalidate_version(&self, name: &str, version: u64) {
        self.map.write().expect("cache lock").remove(&crate::scheduler::pool_key(name, Some(version)));
    }
    /// The function's controls changed: LATEST and every version record carry them (its
    /// aliases did not change).
    pub fn invalidate_controls(&self, name: &str) {
        self.map.write().expect("cache lock").retain(|_, (f, _)| f.name.as_str() != name);
    }
    /// The function is gone: LATEST, its versions and its aliases.
    pub fn invalidate_function(&self, name: &str) {
        self.map.write().expect("cache lock").retain(|_, (f, _)| f.name.as_str() != name);
        self.aliases.write().expect("cache lock").retain(|(f, _), _| f != name);
        self.triggers.write().expect("cache lock").retain(|(f, _), _| f != name);
    }
    pub fn get_alias(&self, name: &str, alias: &str) -> Option<Arc<AliasRecord>> {
        let map = self.aliases.read().expect("cache lock");
        let (a, at) = map.get(&(name.to_string(), alias.to_string()))?;
        self.fresh(*at).then(|| a.clone())
    }
    pub fn put_alias(&self, a: Arc<AliasRecord>) {
        let key = (a.function_name.clone(), a.alias_name.clone());
        self.aliases.write().expect("cache lock").insert(key, (a, std::time::Instant::now()));
    }
    pub fn invalidate_alias(&self, name: &str, alias: &str) {
        self.aliases.write().expect("cache lock").remove(&(name.to_string(), alias.to_string()));
    }
    pub fn get_trigger(&self, name: &str, trigger: &str) -> Option<Arc<TriggerRecord>> {
        let map = self.triggers.read().expect("cache lock");
        let (t, at) = map.get(&(name.to_string(), trigger.to_string()))?;
        self.fresh(*at).then(|| t.clone())
    }
    pub fn put_trigger(&self, t: Arc<TriggerRecord>) {
        let key = (t.function_name.clone(), t.trigger_name.clone());
        self.triggers.write().expect("cache lock").insert(key, (t, std::time::Instant::now()));
    }
    pub fn invalidate_trigger(&self, name: &str, trigger: &str) {
        self.triggers.write().expect("cache lock").remove(&(name.to_string(), trigger.to_string()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nubis Function Compute API",
        version = "2023-03-30",
        description = "The Function Compute 3.0 REST API as served by Nubis. Every /2023-03-30 \
                       call is signed with ACS3-HMAC-SHA256; errors are {Code, Message, RequestId}."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The FC routes and their OpenAPI description, from one table.
fn fc_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(functions::create_function, functions::list_functions))
        .routes(routes!(functions::get_function, functions::update_function, functions::delete_function))
        .routes(routes!(functions::get_function_code))
        .routes(routes!(invoke::invoke_function))
        .routes(routes!(versions::publish_function_version, versions::list_function_versions))
        .routes(routes!(versions::delete_function_version))
        .routes(routes!(aliases::create_alias, aliases::list_aliases))
        .routes(routes!(aliases::get_alias, aliases::update_alias, aliases::delete_alias))
        .routes(routes!(triggers::create_trigger, triggers::list_triggers))
        .routes(routes!(triggers::get_trigger, triggers::update_trigger, triggers::delete_trigger))
        .routes(routes!(
            async_invoke::put_async_invoke_config,
            async_invoke::get_async_invoke_config,
            async_invoke::delete_async_invoke_config
        ))
        .routes(routes!(async_invoke::list_async_invoke_configs))
        .routes(routes!(
            provision::put_provision_config,
            provision::get_provision_config,
            provision::delete_provision_config
        ))
        .routes(routes!(provision::list_provision_configs))
        .routes(routes!(
            controls::put_concurrency_config,
            controls::get_concurrency_config,
            controls::delete_concurrency_config
        ))
        .routes(routes!(controls::list_concurrency_configs))
        .routes(routes!(controls::enable_function_invocation))
        .routes(routes!(controls::disable_function_invocation))
        .routes(routes!(async_invoke::list_async_tasks))
        .routes(routes!(async_invoke::get_async_task))
        .routes(routes!(async_invoke::stop_async_task))
        .routes(routes!(logs::get_function_logs))
        .routes(routes!(nodes::list_nodes))
        .routes(routes!(nodes::get_cluster))
        .routes(routes!(nodes::cordon_node))
        .routes(routes!(nodes::uncordon_node))
        .routes(routes!(nodes::drain_node))
        .split_for_parts()
}

/// The OpenAPI document of the served API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    fc_routes().1
}

pub fn router(state: AppState) -> Router {
    let (fc, doc) = fc_routes();
    let doc = Arc::new(doc.to_json().expect("openapi serializes"));
    // The signature layer already bounds bodies per route; axum's own 2 MB default would
    // refuse legal 32 MB invocations after they were read.
    let fc = fc.layer(from_fn_with_state(state.clone(), authenticate)).layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(fc)
        .route("/health", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([("content-type", "application/json")], doc.as_str().to_string()) }
            }),
        )
        .route("/nubis/code/{name}", get(code::download))
        // HTTP triggers: outside the signature layer (a trigger checks its own auth).
        .merge(crate::triggers::http::routes())
        .merge(if state.cfg.console.enabled { crate::console::routes() } else { Router::new() })
        .route("/metrics", get(metrics))
        .fallback(path_not_supported)
        .method_not_allowed_fallback(path_not_supported)
        .layer(from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

async fn path_not_supported(req: Request) -> ApiError {
    ApiError::path_not_supported(req.method().as_str(), req.uri().path())
}

/// Request id for every response, and the request counted by route template (bounded labels:
/// `/2023-03-30/functions/{functionName}`, never the raw path).
async fn request_id(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let id = crate::model::new_request_id();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.uri().path());
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req).instrument(span)).await;
    resp.headers_mut().insert("x-fc-request-id", HeaderValue::from_str(&id).expect("ascii id"));
    st.metrics.api_requests.with_label_values(&[&route, method.as_str(), resp.status().as_str()]).inc();
    resp
}

/// Prometheus text format. Unsigned, like any scrape target: keep the listener private or put
/// it behind a proxy that guards /metrics.
async fn metrics(State(st): State<AppState>) -> Response {
    st.rm.observe();
    // The Kafka backend reads broker metadata here: bounded, and off the invoke path.
    if let Ok(Ok(depth)) = tokio::time::timeout(std::time::Duration::from_secs(2), st.queue.depth()).await {
        st.metrics.async_queue_depth.set(depth as i64);
    }
    if let Ok(Ok(oldest)) = tokio::time::timeout(std::time::Duration::from_secs(2), st.queue.oldest_enqueued_ms()).await {
        let age_ms = oldest.map_or(0, |t| (crate::dispatcher::now_ms() - t).max(0));
        st.metrics.async_queue_oldest_age.set(age_ms as f64 / 1000.0);
    }
    ([("content-type", "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

/// Authenticate an FC request: an ACS3 signature, or a console session. A request with an
/// `Authorization` header is always judged by its signature; one without it but with the
/// console's cookie by the session, and a change then needs the session's CSRF header too
/// (`crate::console::session`): cookie auth is never enough for a change on its own.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    if state.cfg.console.enabled
        && !parts.headers.contains_key("authorization")
        && crate::console::session::cookie_token(&parts.headers).is_some()
    {
        crate::console::session::authenticate(&state, &parts.method, &parts.headers).await?;
        let bytes = read_body(&state, &parts, body).await?;
        return Ok(next.run(Request::from_parts(parts, Body::from(bytes))).await);
    }
    verify_signature(state, parts, body, next).await
}

/// Buffer the body (its hash is part of the signature), then verify the signature.
async fn verify_signature(state: AppState, parts: axum::http::request::Parts, body: Body, next: Next) -> Result<Response, ApiError> {
    // Refuse unknown or missing keys before reading a (possibly large) body.
    let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let secret = match auth::parse_authorization(header) {
        Ok(h) => state.keys.secret(&h.access_key_id).await.map_err(|e| match e {
            keys::KeyError::Store(e) => ApiError::from(e),
            e => ApiError::internal(e),
        })?,
        Err(_) => None,
    };
    if secret.is_none() {
        let rp = auth::RequestParts {
            method: &parts.method,
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body_sha256_hex: auth::EMPTY_SHA256,
        };
        // Produces the right error (missing header, malformed, unknown key) without the body.
        auth::verify(&rp, |_| None, chrono::Utc::now(), state.cfg.auth.max_clock_skew())?;
    }
    let bytes = read_body(&state, &parts, body).await?;
    let hash = auth::sha256_hex(&bytes);
    let rp = auth::RequestParts {
        method: &parts.method,
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body_sha256_hex: &hash,
    };
    auth::verify(&rp, |_| secret, chrono::Utc::now(), state.cfg.auth.max_clock_skew())?;
    Ok(next.run(Request::from_parts(parts, Body::from(bytes))).await)
}

/// The body, up to the route's limit: invocations carry at most the sync payload limit,
/// everything else at most a base64 code zip plus its JSON.
async fn read_body(state: &AppState, parts: &axum::http::request::Parts, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limits = &state.cfg.limits;
    let (limit, what) = if parts.uri.path().ends_with("/invocations") {
        (limits.max_sync_payload_bytes, "invocation payload")
    } else {
        ((limits.max_code_zip_bytes as usize) / 3 * 4 + (1 << 20), "request body")
    };
    let declared = parts.headers.get("content-length").and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(what, limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large { ApiError::too_large(what, limit) } else { ApiError::invalid(format!("reading request body: {e}")) }
    })
}

/// The base URL clients reach this server at: `server.public_url`, else `http://` and the
/// request's Host header (what the client used, so links work from where it stands).
pub fn public_base_url(st: &AppState, headers: &axum::http::HeaderMap) -> String {
    if st.cfg.server.public_url.is_empty() {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        format!("http://{host}")
    } else {
        st.cfg.server.public_url.trim_end_matches('/').to_string()
    }
}

/// For handlers that answer "done" with no content (FC deletes).
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
