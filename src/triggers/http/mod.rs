//! HTTP triggers: a function reached over plain HTTP at a URL Nubis serves.
//!
//! **Routing is by path**, on the API listener, under a fixed prefix, so a plain reverse proxy
//! (or none) can pass it through unchanged:
//!
//! - `<base>/http/<functionName>/<triggerName>[/<path>][?<query>]`: the public URL
//!   (`httpTrigger.urlInternet`); refused with 403 when the trigger sets `disableURLInternet`;
//! - `<base>/http-intranet/<functionName>/<triggerName>[/...]`: the intranet URL
//!   (`httpTrigger.urlIntranet`), always served. Publish only `/http/` through a proxy that
//!   faces the internet, and the intranet prefix stays inside.
//!
//! `<base>` is `server.public_url`, or `http://` and the Host header the trigger was read
//! with. The function sees the path after `<triggerName>` (`/` when none): code written for
//! FC's `https://<id>.<region>.fcapp.run/<path>` sees the same path here.
//!
//! These routes never pass the API's signature layer: a trigger is anonymous, or checks its
//! own signature ([`auth`]). A request, in order: the trigger (404 `TriggerNotFound`), the
//! public URL switch (403), a CORS preflight (answered here when `corsConfig` is set), the
//! method filter (405), FC's request limits (400), the signature (`authType: function`; when
//! it covers the body hash the body is read whole first), the qualifier (an alias picks a
//! version per call) and the invocation switch (412), then the call:
//! - built-in runtimes get FC 3.0's HTTP event and their return value becomes the response
//!   ([`event`]). Buffered: the event needs the whole body (at most
//!   `limits.max_sync_payload_bytes`, else 400 `EntityTooLarge`), and the return value is the
//!   whole response (at most `limits.max_response_bytes`, else 502);
//! - custom runtimes and containers get the request passed through (method, path, query,
//!   headers, body) and their response is relayed ([`crate::agent::HttpPassthrough`]),
//!   **streamed both ways** ([`invoker::invoke_stream`]): the body goes into the instance as
//!   the caller sends it, and the response goes back as the instance writes it.
//!
//! Limits of a streamed call: a declared length over `limits.max_sync_payload_bytes` is 400
//! `EntityTooLarge` before the call; a chunked body breaks off at the limit, which is 400
//! `EntityTooLarge` when the instance has not answered yet (else its answer, already under
//! way, is relayed). A response past `limits.max_response_bytes`, or still streaming when the
//! function's timeout ends, is cut: the connection ends without the final chunk, so the caller
//! sees it incomplete. The slot is held until the response ends (or the caller goes away), and
//! the invocation is summarized then.

pub mod auth;
pub mod event;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;

use crate::agent::{AgentError, HttpPassthrough, InvokeResponse};
use crate::api::AppState;
use crate::api::error::{ApiError, current_request_id};
use crate::api::qualifier::{Pick, resolve};
use crate::invoker::{self, InvokeFailure};
use crate::model::RuntimeKind;
use crate::model::trigger::http::{CorsConfig, HttpTriggerConfig};
use crate::model::trigger::{HttpTriggerUrls, TriggerConfig, TriggerRecord, TriggerType};
use crate::scheduler::AcquireError;

/// Prefix of the public trigger URLs.
pub const INTERNET_PREFIX: &str = "/http";
/// Prefix of the intranet trigger URLs.
pub const INTRANET_PREFIX: &str = "/http-intranet";
/// FC's limit on a trigger request's path and query (fc-triggers.md §1.5).
pub const MAX_PATH_BYTES: usize = 4096;
/// Response headers FC's default domain adds for browsers (fc-triggers.md §1.2).
const EXPOSED_BY_DEFAULT: &str = "Date,x-fc-request-id";

/// The URLs of trigger `trigger` of function `function`, under `base` (no trailing slash).
pub fn urls(base: &str, function: &str, trigger: &str) -> HttpTriggerUrls {
    HttpTriggerUrls {
        url_internet: format!("{base}{INTERNET_PREFIX}/{function}/{trigger}"),
        url_intranet: format!("{base}{INTRANET_PREFIX}/{function}/{trigger}"),
    }
}

/// Why a trigger call was refused before (or after) the function ran. Mapped to HTTP in
/// `crate::api::error`.
#[derive(Debug, thiserror::Error)]
pub enum HttpTriggerError {
    #[error("http trigger '{trigger}' of function '{function}' does not exist")]
    NoTrigger { function: String, trigger: String },
    /// `disableURLInternet` and the public URL; FC's words.
    #[error("access denied due to function internet URL is disable")]
    InternetDisabled,
    #[error("method '{method}' is not allowed by this trigger; it accepts {}", .allowed.join(", "))]
    MethodNotAllowed { method: String, allowed: Vec<String> },
    #[error("origin '{0}' is not allowed by the trigger's corsConfig")]
    OriginNotAllowed(String),
    #[error(transparent)]
    Auth(#[from] auth::TriggerAuthError),
    #[error("request header '{0}' is reserved: headers starting with x-fc- cannot be sent to an HTTP trigger")]
    ReservedHeader(String),
    #[error("the request's path and query exceed {} bytes", MAX_PATH_BYTES)]
    PathTooLong,
    #[error("the function returned an invalid HTTP response: {0}")]
    BadResponse(String),
}

/// Which URL a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Internet,
    Intranet,
}

/// The trigger routes, merged into the API router outside its signature layer.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/http/{function}/{trigger}", any(internet))
        .route("/http/{function}/{trigger}/", any(internet))
        .route("/http/{function}/{trigger}/{*path}", any(internet))
        .route("/http-intranet/{function}/{trigger}", any(intranet))
        .route("/http-intranet/{function}/{trigger}/", any(intranet))
        .route("/http-intranet/{function}/{trigger}/{*path}", any(intranet))
}

type Names = Path<std::collections::HashMap<String, String>>;

async fn internet(State(st): State<AppState>, Path(p): Names, req: Request) -> Response {
    respond(serve(&st, Access::Internet, &p["function"], &p["trigger"], req).await)
}

async fn intranet(State(st): State<AppState>, Path(p): Names, req: Request) -> Response {
    respond(serve(&st, Access::Intranet, &p["function"], &p["trigger"], req).await)
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The trigger, from the cache or the store; only http triggers are served here.
async fn lookup(st: &AppState, function: &str, trigger: &str) -> Result<Arc<TriggerRecord>, ApiError> {
    let t = match st.functions.get_trigger(function, trigger) {
        Some(t) => t,
        None => {
            let t = st.store.get_trigger(function, trigger).await?.map(Arc::new);
            let Some(t) = t else {
                return Err(HttpTriggerError::NoTrigger { function: function.into(), trigger: trigger.into() }.into());
            };
            st.functions.put_trigger(t.clone());
            t
        }
    };
    if t.trigger_type != TriggerType::Http {
        return Err(HttpTriggerError::NoTrigger { function: function.into(), trigger: trigger.into() }.into());
    }
    Ok(t)
}

/// The path after `/<prefix>/<function>/<trigger>`, still encoded: `/` at least.
fn rest_of_path(raw_path: &str) -> String {
    match raw_path.splitn(5, '/').nth(4) {
        Some(rest) => format!("/{rest}"),
        None => "/".to_string(),
    }
}

async fn serve(st: &AppState, access: Access, function: &str, trigger: &str, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let t = lookup(st, function, trigger).await?;
    let cfg = match t.config() {
        Ok(TriggerConfig::Http(c)) => c,
        Ok(_) => return Err(HttpTriggerError::NoTrigger { function: function.into(), trigger: trigger.into() }.into()),
        Err(e) => return Err(ApiError::internal(format!("stored config of trigger '{trigger}' of '{function}': {e}"))),
    };
    if access == Access::Internet && cfg.disable_url_internet {
        return Err(HttpTriggerError::InternetDisabled.into());
    }
    let origin = parts.headers.get("origin").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let (Some(cors), Some(origin)) = (&cfg.cors, &origin)
        && parts.method == Method::OPTIONS
        && parts.headers.contains_key("access-control-request-method")
    {
        return preflight(cors, &cfg, origin, &parts.headers);
    }
    if !cfg.allows(parts.method.as_str()) {
        return Err(HttpTriggerError::MethodNotAllowed { method: parts.method.to_string(), allowed: cfg.methods.clone() }.into());
    }
    let raw_path = rest_of_path(parts.uri.path());
    let raw_query = parts.uri.query().unwrap_or("");
    let path_and_query = if raw_query.is_empty() { raw_path.clone() } else { format!("{raw_path}?{raw_query}") };
    if path_and_query.len() > MAX_PATH_BYTES {
        return Err(HttpTriggerError::PathTooLong.into());
    }
    if let Some(reserved) = parts.headers.keys().find(|n| n.as_str().starts_with("x-fc-")) {
        return Err(HttpTriggerError::ReservedHeader(reserved.to_string()).into());
    }

    // The signature first when it does not cover the body, so an unsigned caller cannot make
    // us read a large body. One that covers it needs the whole body first: such a call is
    // then sent on from memory.
    let function_auth = cfg.auth_type == crate::model::trigger::http::AuthType::Function;
    let signed = auth::SignedRequest { method: &parts.method, raw_path: parts.uri.path(), raw_query, headers: &parts.headers };
    let body = if function_auth && !signed.signs_body_hash() {
        check_signature(st, &signed, None).await?;
        Incoming::Raw(body)
    } else if function_auth {
        let bytes = read_body(st, &parts.headers, body).await?;
        check_signature(st, &signed, Some(&crate::api::auth::sha256_hex(&bytes))).await?;
        Incoming::Read(bytes)
    } else {
        Incoming::Raw(body)
    };

    let resolved = resolve(st, function, Some(&t.qualifier), Pick::Weighted).await?;
    let f = resolved.f;
    if f.controls.invocation_disabled {
        return Err(ApiError::invocation_disabled(function, &f.controls.disabled_reason));
    }
    let request_id = current_request_id();
    let mut resp = match f.config.runtime.kind() {
        RuntimeKind::Python | RuntimeKind::Nodejs => {
            let body = match body {
                Incoming::Read(b) => b,
                Incoming::Raw(b) => read_body(st, &parts.headers, b).await?,
            };
            let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
            let protocol = format!("{:?}", parts.version);
            let cx = event::EventContext {
                method: &parts.method,
                raw_path: &raw_path,
                raw_query,
                protocol: &protocol,
                source_ip: &peer,
                account_id: &st.cfg.server.account_id,
                trigger_name: trigger,
                trigger_id: &t.trigger_id,
                request_id: &request_id,
                now: chrono::Utc::now(),
            };
            let call = call(&f, &resolved.qualifier, &request_id, Bytes::from(event::event(&cx, &parts.headers, &body)), HeaderMap::new());
            let inv = invoker::invoke(&st.rm, call).await;
            match inv.result {
                Ok(r) if r.function_error => function_failed(r),
                Ok(r) => mapped(r)?,
                Err(e) => failed(e)?,
            }
        }
        RuntimeKind::CustomDebian12 | RuntimeKind::CustomContainer => {
            let limit = st.cfg.limits.max_sync_payload_bytes;
            let over = Arc::new(AtomicBool::new(false));
            let (content_length, body) = match body {
                Incoming::Read(b) => (Some(b.len() as u64), Body::from(b)),
                Incoming::Raw(b) => {
                    let declared = declared_length(&parts.headers);
                    // Refused before the call when the caller says so up front.
                    if declared.is_some_and(|n| n > limit as u64) {
                        return Err(ApiError::too_large("request body", limit));
                    }
                    (declared, limited(b, limit, over.clone()))
                }
            };
            let http = HttpPassthrough { method: parts.method.clone(), path_and_query };
            let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
            let call = invoker::StreamCall {
                f: f.clone(),
                qualifier: resolved.qualifier.clone(),
                request_id: request_id.clone(),
                headers: passthrough_headers(&parts.headers, peer),
                content_length,
                body,
                http,
            };
            match invoker::invoke_stream(&st.rm, call).await {
                Ok(r) => relayed(r),
                Err(InvokeFailure::Agent(AgentError::RequestBody(_))) if over.load(Ordering::SeqCst) => {
                    return Err(ApiError::too_large("request body", limit));
                }
                Err(e) => failed(e)?,
            }
        }
    };
    if let (Some(cors), Some(origin)) = (&cfg.cors, &origin) {
        add_cors(resp.headers_mut(), cors, origin);
    }
    Ok(resp)
}

fn call<'a>(f: &'a crate::model::FunctionRecord, qualifier: &'a str, request_id: &'a str, body: Bytes, headers: HeaderMap) -> invoker::Call<'a> {
    invoker::Call { f, qualifier, request_id, kind: invoker::Kind::Sync, body, headers, want_logs: false }
}

async fn check_signature(st: &AppState, r: &auth::SignedRequest<'_>, body_hash: Option<&str>) -> Result<(), ApiError> {
    let ak = r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::api::auth::parse_authorization(v).ok())
        .map(|a| a.access_key_id);
    let secret = match ak {
        Some(ak) => st.keys.secret(&ak).await.map_err(|e| match e {
            crate::api::keys::KeyError::Store(e) => ApiError::from(e),
            e => ApiError::internal(e),
        })?,
        None => None,
    };
    auth::verify(r, body_hash, |_| secret, chrono::Utc::now(), st.cfg.auth.max_clock_skew()).map_err(HttpTriggerError::from)?;
    Ok(())
}

/// The body, at most the sync payload limit (400 `EntityTooLarge` beyond, as InvokeFunction).
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = st.cfg.limits.max_sync_payload_bytes;
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large("request body", limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large { ApiError::too_large("request body", limit) } else { ApiError::invalid(format!("reading request body: {e}")) }
    })
}

/// A request body as it is declared (`Content-Length`); None when it comes chunked.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// The caller's body, streamed on, that fails once more than `limit` bytes came (and sets
/// `over`, so the failure of the call it breaks off is reported as 400 EntityTooLarge).
fn limited(body: Body, limit: usize, over: Arc<AtomicBool>) -> Body {
    use futures_util::StreamExt;
    let mut seen = 0usize;
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len();
        if seen > limit {
            over.store(true, Ordering::SeqCst);
            return Err(axum::Error::new(format!("the request body exceeds {limit} bytes")));
        }
        Ok(chunk)
    }))
}

/// The request body: a built-in runtime's event needs it whole; a custom server gets it as it
/// comes, unless the signature covered it and it was read for that.
enum Incoming {
    Raw(Body),
    Read(Bytes),
}

/// The caller's headers for a custom server: all but the connection's own (and Host: the
/// instance is reached at its own address), plus the usual forwarding headers.
fn passthrough_headers(h: &HeaderMap, peer: Option<std::net::IpAddr>) -> HeaderMap {
    let mut out: HeaderMap = h.iter().filter(|(n, _)| !crate::agent::wire::is_hop_by_hop(n)).map(|(n, v)| (n.clone(), v.clone())).collect();
    if let Some(host) = h.get("host")
        && !out.contains_key("x-forwarded-host")
    {
        out.insert("x-forwarded-host", host.clone());
    }
    if let Some(ip) = peer {
        let chain = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            out.insert("x-forwarded-for", v);
        }
    }
    out
}

/// A custom server's answer, relayed: its status, headers (but the platform's and the
/// connection's own) and body, streamed as the instance writes it.
fn relayed(r: invoker::Streamed) -> Response {
    let mut resp = Response::new(r.body);
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in r.headers.iter() {
        if !event::is_reserved_response_header(name.as_str()) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}

/// A built-in runtime's return value as the HTTP response.
fn mapped(r: InvokeResponse) -> Result<Response, ApiError> {
    let m = event::map_result(r.body).map_err(HttpTriggerError::BadResponse)?;
    let mut resp = Response::new(Body::from(m.body));
    *resp.status_mut() = StatusCode::from_u16(m.status).map_err(|e| HttpTriggerError::BadResponse(e.to_string()))?;
    for (name, value) in m.headers {
        if event::is_reserved_response_header(&name) {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HttpTriggerError::BadResponse(format!("bad header name '{name}'")))?;
        let value = HeaderValue::from_str(&value).map_err(|_| HttpTriggerError::BadResponse(format!("bad value of header '{name}'")))?;
        resp.headers_mut().append(name, value);
    }
    Ok(resp)
}

/// The handler raised: 502 with FC's error document and `x-fc-error-type`, so an HTTP client
/// sees a server-side failure (a 200, as InvokeFunction answers, would read as success).
fn function_failed(r: InvokeResponse) -> Response {
    // The bootstraps send FC's error document; anything else (a response over the limit, the
    // agent's words) is wrapped into one.
    let body = if serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|v| v.is_object()) {
        r.body
    } else {
        let message = String::from_utf8_lossy(&r.body).into_owned();
        Bytes::from(serde_json::json!({ "errorMessage": message, "errorType": "BadResponse" }).to_string())
    };
    let mut resp = (StatusCode::BAD_GATEWAY, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers_mut().insert("x-fc-error-type", HeaderValue::from_static("UnhandledInvocationError"));
    resp
}

fn platform_detected(error_type: &'static str, message: String, kind: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": kind });
    let mut resp = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
    resp.headers_mut().insert("x-fc-error-type", HeaderValue::from_static(error_type));
    resp
}

/// No answer from the function: its own failures are 502 with `x-fc-error-type` (as
/// [`function_failed`]); the platform's are FC error bodies.
fn failed(e: InvokeFailure) -> Result<Response, ApiError> {
    Ok(match e {
        InvokeFailure::Agent(AgentError::Timeout(secs)) => {
            platform_detected("UnhandledInvocationError", format!("Function timed out after {secs} seconds"), "FunctionTimeout")
        }
        InvokeFailure::Agent(e @ AgentError::OutOfMemory(_)) => platform_detected("UnhandledInvocationError", e.to_string(), "FunctionOutOfMemory"),
        InvokeFailure::Agent(e @ AgentError::Crashed(_)) => platform_detected("UnhandledInvocationError", e.to_string(), "ProcessExited"),
        InvokeFailure::Agent(AgentError::BadResponse(m)) => return Err(HttpTriggerError::BadResponse(m).into()),
        InvokeFailure::Agent(AgentError::Unavailable(m)) => return Err(ApiError::unavailable("container runtime", m)),
        InvokeFailure::Agent(AgentError::NotDelivered(m)) => return Err(ApiError::unavailable("node agent", m)),
        // The caller's own body broke off (over the limit is answered before this).
        InvokeFailure::Agent(AgentError::RequestBody(m)) => return Err(ApiError::invalid(format!("reading request body: {m}"))),
        InvokeFailure::Agent(e) => return Err(ApiError::internal(e)),
        InvokeFailure::Acquire(AcquireError::Start(AgentError::Initialization(r))) => {
            let mut resp = function_failed(r);
            resp.headers_mut().insert("x-fc-error-type", HeaderValue::from_static("InitializationError"));
            resp
        }
        InvokeFailure::Acquire(AcquireError::Start(e @ (AgentError::Timeout(_) | AgentError::OutOfMemory(_) | AgentError::Crashed(_)))) => {
            platform_detected("InitializationError", format!("initializer failed: {e}"), "InitializationError")
        }
        InvokeFailure::Acquire(e) => return Err(e.into()),
    })
}

fn joined(values: &[String]) -> Option<HeaderValue> {
    HeaderValue::from_str(&values.join(", ")).ok().filter(|_| !values.is_empty())
}

/// A CORS preflight, answered by Nubis from `corsConfig` (browsers send no credentials with
/// it, so it is never signed).
fn preflight(cors: &CorsConfig, cfg: &HttpTriggerConfig, origin: &str, req: &HeaderMap) -> Result<Response, ApiError> {
    let allowed = cors.allowed_origin(origin).ok_or_else(|| HttpTriggerError::OriginNotAllowed(origin.to_string()))?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_str(&allowed).expect("an origin from a header"));
    let methods: Vec<String> = if cors.allow_methods.is_empty() || cors.allow_methods.iter().any(|m| m == "*") {
        cfg.methods.clone()
    } else {
        cors.allow_methods.iter().map(|m| m.to_ascii_uppercase()).collect()
    };
    if let Some(v) = joined(&methods) {
        h.insert("access-control-allow-methods", v);
    }
    let headers = if cors.allow_headers.is_empty() { req.get("access-control-request-headers").cloned() } else { joined(&cors.allow_headers) };
    if let Some(v) = headers {
        h.insert("access-control-allow-headers", v);
    }
    if cors.allow_credentials {
        h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    }
    if cors.max_age > 0 {
        h.insert("access-control-max-age", HeaderValue::from(cors.max_age));
    }
    h.insert("vary", HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"));
    Ok(resp)
}

/// CORS headers on an actual response, for an allowed origin (none for another: the browser
/// then withholds the response from the page).
fn add_cors(h: &mut HeaderMap, cors: &CorsConfig, origin: &str) {
    let Some(allowed) = cors.allowed_origin(origin) else { return };
    h.insert("access-control-allow-origin", HeaderValue::from_str(&allowed).expect("an origin from a header"));
    if cors.allow_credentials {
        h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    }
    let mut expose = cors.expose_headers.clone();
    expose.push(EXPOSED_BY_DEFAULT.to_string());
    if let Some(v) = joined(&expose) {
        h.insert("access-control-expose-headers", v);
    }
    h.append("vary", HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_sees_the_path_after_the_trigger() {
        assert_eq!(rest_of_path("/http/fn/web"), "/");
        assert_eq!(rest_of_path("/http/fn/web/"), "/");
        assert_eq!(rest_of_path("/http/fn/web/a/b%20c/"), "/a/b%20c/");
        assert_eq!(rest_of_path("/http-intranet/fn/web/x"), "/x");
    }

    #[test]
    fn preflights_follow_the_cors_config() {
        let cfg = HttpTriggerConfig::parse(
            r#"{"authType":"function","methods":["GET","POST"],"corsConfig":{"allowOrigins":["https://app.example"],"allowHeaders":["x-custom"],"allowCredentials":true,"maxAge":600}}"#,
        )
        .unwrap();
        let cors = cfg.cors.clone().unwrap();
        let r = preflight(&cors, &cfg, "https://app.example", &HeaderMap::new()).unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "x-custom");
        assert_eq!((&h["access-control-allow-credentials"], &h["access-control-max-age"]), (&HeaderValue::from_static("true"), &HeaderValue::from(600)));
        assert!(preflight(&cors, &cfg, "https://evil.example", &HeaderMap::new()).is_err());
        let mut out = HeaderMap::new();
        add_cors(&mut out, &cors, "https://app.example");
        assert_eq!(out["access-control-expose-headers"], "Date,x-fc-request-id");
        let mut none = HeaderMap::new();
        add_cors(&mut none, &cors, "https://evil.example");
        assert!(none.is_empty());
    }
}
