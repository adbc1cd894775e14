//! The agent's side of the control-plane protocol ([`super::wire`]): an internal listener that
//! serves a local [`Node`] (the Docker node) to the cluster's resource manager.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use base64::Engine;
use tracing::Instrument;

use super::wire::{self, error_response as error};
use super::{AgentError, InstanceReport, InstanceSpec, InvokeRequest, Node};

#[derive(Clone)]
pub struct AgentService {
    node: Arc<dyn Node>,
    secret: Arc<str>,
    /// What this agent runs, by instance id (the node needs the full InstanceInfo to invoke;
    /// the rest lets a new leader adopt the instance).
    instances: Arc<Mutex<HashMap<String, InstanceReport>>>,
    max_body: usize,
    /// The newest fencing epoch a control call carried.
    epoch: Arc<AtomicI64>,
    /// This agent's metrics (log capture and shipping, instances, memory), on `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    capacity_mb: u64,
}

impl AgentService {
    pub fn new(node: Arc<dyn Node>, secret: &str, max_body: usize, metrics: Arc<crate::metrics::Metrics>, capacity_mb: u64) -> Self {
        Self { node, secret: secret.into(), instances: Arc::default(), max_body, epoch: Arc::default(), metrics, capacity_mb }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/internal/v1/instances", post(start).get(list))
            .route("/internal/v1/instances/{id}", delete(stop))
            .route("/internal/v1/instances/{id}/invoke", post(invoke))
            .route("/internal/v1/reset", post(reset))
            .route("/internal/v1/summaries", post(summary))
            .layer(DefaultBodyLimit::max(self.max_body))
            .layer(from_fn_with_state(self.clone(), fence))
            .layer(from_fn_with_state(self.secret.clone(), wire::require_secret))
            .route("/internal/v1/health", get(|| async { "ok" }))
            // Like the controllers' /metrics: no signature; keep the listener private.
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// Stop every instance this agent runs (a resource manager that does not know them asked,
    /// or the agent is shutting down).
    pub async fn stop_all(&self) -> usize {
        let ids: Vec<String> = self.instances.lock().expect("instances lock").drain().map(|(id, _)| id).collect();
        futures_util::future::join_all(ids.iter().map(|id| self.node.stop_instance(id))).await;
        ids.len()
    }
}

/// Refuse control calls from a deposed leader: an epoch older than the newest seen. Invoke
/// calls carry no epoch and are never refused here (an invocation places nothing).
async fn fence(State(s): State<AgentService>, req: Request, next: Next) -> Response {
    if let Some(presented) = req.headers().get(wire::EPOCH).and_then(|v| v.to_str().ok()?.parse::<i64>().ok()) {
        let current = s.epoch.fetch_max(presented, Ordering::SeqCst);
        if presented < current {
            tracing::warn!(presented, current, "refused a control call from a deposed leader");
            return error(StatusCode::CONFLICT, AgentError::Fenced { presented, current });
        }
    }
    next.run(req).await
}


fn agent_error(e: AgentError) -> Response {
    let status = match e {
        AgentError::Unavailable(_) | AgentError::NotDelivered(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

async fn start(State(s): State<AgentService>, Json(spec): Json<InstanceSpec>) -> Response {
    let span = tracing::info_span!("start", instance = %spec.instance_id, function = %spec.function_name);
    let (function_name, version, revision, memory_mb, cpu, concurrency) =
        (spec.function_name.clone(), spec.version, spec.revision, spec.memory_mb, spec.cpu, spec.concurrency);
    match s.node.start_instance(spec).instrument(span).await {
        Ok(info) => {
            let report = InstanceReport { info: info.clone(), function_name, version, revision, memory_mb, cpu, concurrency };
            s.instances.lock().expect("instances lock").insert(info.instance_id.clone(), report);
            Json(info).into_response()
        }
        Err(e) => agent_error(e),
    }
}

async fn list(State(s): State<AgentService>) -> Json<Vec<InstanceReport>> {
    Json(s.instances.lock().expect("instances lock").values().cloned().collect())
}

async fn stop(State(s): State<AgentService>, Path(id): Path<String>) -> StatusCode {
    s.instances.lock().expect("instances lock").remove(&id);
    s.node.stop_instance(&id).await;
    StatusCode::NO_CONTENT
}

async fn metrics(State(s): State<AgentService>) -> Response {
    let (count, placed_mb) = {
        let map = s.instances.lock().expect("instances lock");
        (map.len() as i64, map.values().map(|r| u64::from(r.memory_mb)).sum::<u64>())
    };
    let m = &s.metrics;
    m.instances.with_label_values(&["ready"]).set(count);
    m.node_memory_bytes.with_label_values(&["capacity"]).set((s.capacity_mb << 20) as i64);
    m.node_memory_bytes.with_label_values(&["placed"]).set((placed_mb << 20) as i64);
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}

async fn summary(State(s): State<AgentService>, Json(summary): Json<crate::logstore::InvocationSummary>) -> StatusCode {
    s.node.report(summary);
    StatusCode::NO_CONTENT
}

async fn reset(State(s): State<AgentService>) -> Response {
    let stopped = s.stop_all().await;
    match s.node.remove_orphans().await {
        Ok(orphans) => Json(serde_json::json!({ "stopped": stopped + orphans })).into_response(),
        Err(e) => agent_error(e),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn invoke(State(s): State<AgentService>, Path(id): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let Some(info) = s.instances.lock().expect("instances lock").get(&id).map(|r| r.info.clone()) else {
        return error(StatusCode::NOT_FOUND, AgentError::Internal(format!("instance {id} is not running on this node")));
    };
    let (Some(request_id), Some(timeout_ms)) = (header(&headers, wire::REQUEST_ID), header(&headers, wire::TIMEOUT_MS)) else {
        return error(StatusCode::BAD_REQUEST, AgentError::Internal("invoke without request id or timeout".into()));
    };
    let Ok(timeout_ms) = timeout_ms.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, AgentError::Internal("bad timeout".into()));
    };
    let http = match (header(&headers, wire::HTTP_METHOD), header(&headers, wire::HTTP_PATH)) {
        (None, None) => None,
        (Some(m), Some(p)) if p.starts_with('/') => match axum::http::Method::from_bytes(m.as_bytes()) {
            Ok(method) => Some(crate::agent::HttpPassthrough { method, path_and_query: p.to_string() }),
            Err(_) => return error(StatusCode::BAD_REQUEST, AgentError::Internal(format!("bad method {m}"))),
        },
        _ => return error(StatusCode::BAD_REQUEST, AgentError::Internal("HTTP method without path, or path not absolute".into())),
    };
    let span = tracing::info_span!("invoke", request_id = %request_id, instance = %id);
    let caller_headers: HeaderMap =
        wire::relayable(&headers).into_iter().filter_map(|(n, v)| Some((n?, v))).filter(|(n, _)| n != "authorization").collect();
    if let Some(http) = http {
        // An HTTP trigger's request: streamed both ways (the controller enforces the request
        // limit; the node the response limit and the deadline).
        let req = crate::agent::StreamRequest {
            request_id: request_id.to_string(),
            headers: caller_headers,
            content_length: header(&headers, "content-length").and_then(|v| v.parse().ok()),
            body,
            timeout: Duration::from_millis(timeout_ms),
            http,
        };
        return match s.node.invoke_stream(&info, req).instrument(span).await {
            Ok(r) => {
                use futures_util::StreamExt;
                // An error part-way ends the body with an error: hyper then cuts the answer.
                let body = r.body.map(|item| item.map_err(|e| std::io::Error::other(e.to_string())));
                let mut resp = Response::new(Body::from_stream(body));
                *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
                *resp.headers_mut() = wire::relayable(&r.headers);
                if r.function_error {
                    resp.headers_mut().insert(wire::FUNCTION_ERROR, HeaderValue::from_static("1"));
                }
                resp
            }
            Err(e) => agent_error(e),
        };
    }
    // An event: buffered, up to the body limit (the route's DefaultBodyLimit applies to
    // extractors only).
    let body = match axum::body::to_bytes(body, s.max_body).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, AgentError::Internal(format!("reading the event: {e}"))),
    };
    let req = InvokeRequest {
        request_id: request_id.to_string(),
        body,
        want_logs: header(&headers, wire::WANT_LOGS) == Some("1"),
        headers: caller_headers,
        timeout: Duration::from_millis(timeout_ms),
    };
    match s.node.invoke(&info, req).instrument(span).await {
        Ok(r) => {
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            *resp.headers_mut() = wire::relayable(&r.headers);
            if r.function_error {
                resp.headers_mut().insert(wire::FUNCTION_ERROR, HeaderValue::from_static("1"));
            }
            if let Some(logs) = r.logs {
                let b64 = base64::engine::general_purpose::STANDARD.encode(logs);
                resp.headers_mut().insert(wire::LOGS, HeaderValue::from_str(&b64).expect("base64 is a valid header"));
            }
            resp
        }
        // The controller discards an instance in doubt (timed out, crashed) with a DELETE.
        Err(e) => agent_error(e),
    }
}
