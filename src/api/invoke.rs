//! InvokeFunction. Sync: the `qualifier` resolved to a cached record (LATEST, a version, or the
//! version an alias picks for this call) → [`invoker::invoke`] (a slot from the resource
//! manager's pool of that version, warm or cold; the node forwards the event into the
//! instance) → the answer goes back with FC's headers, `x-fc-invocation-service-version`
//! naming the version that ran. No database round trip when the records are cached and an
//! instance is warm. Async: handed to [`super::async_invoke::accept`] (202).
//!
//! A function whose invocation is disabled (DisableFunctionInvocation) is refused here, sync
//! and async alike, with 412 `FunctionInvocationDisabled` (see `super::controls`).
//!
//! Function failures (an exception, a timeout, running out of memory, a crash, a failed
//! initializer) are answered 200 with `x-fc-error-type`, as FC does, so SDK callers read them as
//! results, not exceptions. Platform failures are FC error bodies with 4xx/5xx.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::error::{ApiError, ErrorBody, current_request_id};
use super::qualifier::{Pick, resolve};
use crate::agent::logs::tail;
use crate::agent::{AgentError, InvokeResponse};
use crate::invoker::{self, InvokeFailure};
use crate::scheduler::AcquireError;

/// FC's `x-fc-log-result` carries at most the last 4 KB of the invocation's log.
const LOG_TAIL_BYTES: usize = 4096;

#[derive(Deserialize, IntoParams)]
pub struct InvokeParams {
    /// `LATEST` (default), a version id, or an alias (weighted per call).
    pub qualifier: Option<String>,
}

enum LogType {
    None,
    Tail,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn function_error(error_type: &'static str, message: String, kind: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": kind });
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut().insert("x-fc-error-type", HeaderValue::from_static(error_type));
    resp
}

fn from_instance(r: InvokeResponse, error_type: &'static str) -> Response {
    let mut resp = (StatusCode::OK, r.body).into_response();
    let h = resp.headers_mut();
    if let Some(ct) = r.headers.get("content-type") {
        h.insert("content-type", ct.clone());
    }
    if r.function_error {
        h.insert("x-fc-error-type", HeaderValue::from_static(error_type));
    }
    if let Some(logs) = r.logs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(tail(&logs, LOG_TAIL_BYTES));
        h.insert("x-fc-log-result", HeaderValue::from_str(&b64).expect("base64 is ascii"));
    }
    resp
}

/// Map what went wrong in the instance (which the invoker has already discarded).
fn failed(e: AgentError) -> Response {
    match e {
        AgentError::Timeout(secs) => {
            function_error("UnhandledInvocationError", format!("Function timed out after {secs} seconds"), "FunctionTimeout")
        }
        e @ AgentError::OutOfMemory(_) => function_error("UnhandledInvocationError", e.to_string(), "FunctionOutOfMemory"),
        e @ AgentError::Crashed(_) => function_error("UnhandledInvocationError", e.to_string(), "ProcessExited"),
        AgentError::BadResponse(m) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "BadResponse", format!("the function returned an invalid response: {m}")).into_response()
        }
        AgentError::Unavailable(m) => ApiError::unavailable("container runtime", m).into_response(),
        AgentError::NotDelivered(m) => ApiError::unavailable("node agent", m).into_response(),
        e => ApiError::internal(e).into_response(),
    }
}

#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/invocations", tag = "invocations",
    params(("functionName" = String, Path), InvokeParams,
        ("x-fc-invocation-type" = Option<String>, Header, description = "Sync (default) or Async"),
        ("x-fc-log-type" = Option<String>, Header, description = "None (default) or Tail"),
        ("x-fc-async-task-id" = Option<String>, Header, description = "Async: the task id (generated if absent)"),
        ("x-nubis-ordering-key" = Option<String>, Header, description = "Async (Nubis extension): events of the function with the same key (1-256 printable ASCII characters) run one at a time, in accept order")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The function's result; with x-fc-error-type when the function failed"),
        (status = 202, description = "Async: accepted; x-fc-async-task-id names the task"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn invoke_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<InvokeParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let log_type = match header(&headers, "x-fc-log-type") {
        None | Some("None") | Some("") => LogType::None,
        Some("Tail") => LogType::Tail,
        Some(other) => return Err(ApiError::invalid(format!("x-fc-log-type must be None or Tail, got '{other}'"))),
    };
    let is_async = match header(&headers, "x-fc-invocation-type") {
        None | Some("Sync") | Some("") => false,
        Some("Async") => true,
        Some(other) => return Err(ApiError::invalid(format!("x-fc-invocation-type must be Sync or Async, got '{other}'"))),
    };
    let resolved = resolve(&st, &name, q.qualifier.as_deref(), Pick::Weighted).await?;
    // Function-wide, so every qualifier's record carries it; refused before anything is queued.
    let controls = &resolved.f.controls;
    if controls.invocation_disabled {
        return Err(ApiError::invocation_disabled(&name, &controls.disabled_reason));
    }
    if is_async {
        // The qualifier is queued as named: an alias picks its version when the event runs.
        return super::async_invoke::accept(&st, &name, &resolved.qualifier, &headers, body).await;
    }
    let f = resolved.f;
    let request_id = current_request_id();
    let call = invoker::Call {
        f: &f,
        qualifier: &resolved.qualifier,
        request_id: &request_id,
        kind: invoker::Kind::Sync,
        body,
        headers: slot_headers(&headers),
        want_logs: matches!(log_type, LogType::Tail),
    };
    let inv = invoker::invoke(&st.rm, call).await;
    let resp = match inv.result {
        Ok(r) => from_instance(r, "UnhandledInvocationError"),
        Err(InvokeFailure::Acquire(AcquireError::Start(AgentError::Initialization(r)))) => from_instance(r, "InitializationError"),
        Err(InvokeFailure::Acquire(AcquireError::Start(e @ (AgentError::Timeout(_) | AgentError::OutOfMemory(_) | AgentError::Crashed(_))))) => {
            function_error("InitializationError", format!("initializer failed: {e}"), "InitializationError")
        }
        Err(InvokeFailure::Acquire(e)) => return Err(e.into()),
        Err(InvokeFailure::Agent(e)) => failed(e),
    };
    Ok(finish(resp, &f, inv.instance_id.as_deref(), inv.duration))
}

/// Headers from the caller that the instance may see (FC passes none of the signing ones).
fn slot_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in ["x-fc-log-type", "x-fc-trace-id"] {
        if let Some(v) = h.get(name) {
            out.insert(name, v.clone());
        }
    }
    out
}

fn finish(mut resp: Response, f: &crate::model::FunctionRecord, instance: Option<&str>, took: std::time::Duration) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.code_checksum) {
        h.insert("x-fc-code-checksum", v);
    }
    if let Some(i) = instance.and_then(|i| HeaderValue::from_str(i).ok()) {
        h.insert("x-fc-instance-id", i);
    }
    // What ran: LATEST or the version id (for an alias, the version it picked for this call).
    h.insert("x-fc-invocation-service-version", HeaderValue::from_str(&f.version_name()).expect("digits or LATEST"));
    h.insert("x-fc-invocation-duration", HeaderValue::from(took.as_millis() as u64));
    resp
}
