//! The resource manager's side of the control-plane protocol ([`super::wire`]): a [`Node`]
//! whose instances run on a remote agent, reached over pooled keep-alive HTTP connections.
//!
//! Failures of the agent itself (refused, reset, no answer in time) become
//! [`AgentError::Unavailable`]: a platform error, so sync callers get a retriable 503 and async
//! events are delivered again without using up the function's retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use base64::Engine;
use bytes::Bytes;

use super::wire::{self, ERROR_HEADER, PREFIX};
use super::{AgentError, InstanceInfo, InstanceReport, InstanceSpec, InvokeRequest, InvokeResponse, Node, StreamRequest, StreamResponse};

/// Extra time over the function's own deadline before an agent is given up on: the agent
/// enforces the deadline itself and answers Timeout; this only catches a silent agent.
const INVOKE_MARGIN: Duration = Duration::from_secs(5);
/// Bound on a start (image check, container create, readiness, initializer).
const START_DEADLINE: Duration = Duration::from_secs(300);
const CONTROL_DEADLINE: Duration = Duration::from_secs(30);

pub struct RemoteNode {
    node_id: String,
    base: String,
    auth: HeaderValue,
    http: reqwest::Client,
    /// The caller's fencing epoch (its leader key's revision), sent on every control call.
    epoch: Arc<AtomicI64>,
}

impl RemoteNode {
    /// `address`: the agent's internal URL, e.g. `http://10.0.0.7:9100`.
    pub fn new(node_id: &str, address: &str, secret: &str, epoch: Arc<AtomicI64>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // Agents are on the cluster network: never through a proxy.
            .no_proxy()
            .build()
            .expect("static client config");
        let mut auth = wire::bearer(secret);
        auth.set_sensitive(true);
        Self { node_id: node_id.to_string(), base: format!("{}{PREFIX}", address.trim_end_matches('/')), auth, http, epoch }
    }

    /// A control call: authenticated and fenced.
    fn control(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", self.auth.clone())
            .header(wire::EPOCH, self.epoch.load(Ordering::SeqCst))
    }

    fn unreachable(&self, e: reqwest::Error) -> AgentError {
        if e.is_connect() {
            AgentError::NotDelivered(format!("node agent {}: {e}", self.node_id))
        } else {
            AgentError::Unavailable(format!("node agent {} unreachable: {e}", self.node_id))
        }
    }

    /// An answer with the error header carries an AgentError; any other non-2xx is the agent's.
    async fn error_of(&self, resp: reqwest::Response) -> AgentError {
        let status = resp.status();
        let is_agent_error = resp.headers().contains_key(ERROR_HEADER);
        let body = resp.bytes().await.unwrap_or_default();
        if is_agent_error && let Ok(e) = serde_json::from_slice::<AgentError>(&body) {
            return e;
        }
        AgentError::Internal(format!("node agent {} answered {status}: {}", self.node_id, String::from_utf8_lossy(&body)))
    }

    /// Send a control call and read its JSON answer (or the agent's error).
    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder, deadline: Duration) -> Result<T, AgentError> {
        let resp = req.timeout(deadline).send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp).await);
        }
        resp.json().await.map_err(|e| self.unreachable(e))
    }

    /// The control headers of an invoke call, and the caller's headers that may be relayed.
    fn invoke_headers(
        &self,
        caller: &axum::http::HeaderMap,
        request_id: &str,
        timeout: Duration,
        http: Option<&super::HttpPassthrough>,
    ) -> Result<axum::http::HeaderMap, AgentError> {
        let mut headers = wire::relayable(caller);
        headers.insert("authorization", self.auth.clone());
        headers.insert(wire::REQUEST_ID, HeaderValue::from_str(request_id).expect("ascii id"));
        headers.insert(wire::TIMEOUT_MS, HeaderValue::from(timeout.as_millis() as u64));
        if let Some(h) = http {
            headers.insert(wire::HTTP_METHOD, HeaderValue::from_str(h.method.as_str()).expect("a method is a token"));
            let path = HeaderValue::from_str(&h.path_and_query)
                .map_err(|_| AgentError::Internal(format!("path not sendable as a header: {}", h.path_and_query)))?;
            headers.insert(wire::HTTP_PATH, path);
        }
        Ok(headers)
    }

    /// Instances the agent runs, for a new leader to adopt. Carries the epoch, so from then on
    /// the agent refuses the previous leader.
    pub async fn list(&self) -> Result<Vec<InstanceReport>, AgentError> {
        self.call(self.control(reqwest::Method::GET, "/instances"), CONTROL_DEADLINE).await
    }
}

#[async_trait::async_trait]
impl Node for RemoteNode {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<InstanceInfo, AgentError> {
        self.call(self.control(reqwest::Method::POST, "/instances").json(&spec), START_DEADLINE).await
    }

    async fn invoke(&self, instance: &InstanceInfo, req: InvokeRequest) -> Result<InvokeResponse, AgentError> {
        let mut headers = self.invoke_headers(&req.headers, &req.request_id, req.timeout, None)?;
        if req.want_logs {
            headers.insert(wire::WANT_LOGS, HeaderValue::from_static("1"));
        }
        let resp = self
            .http
            .post(format!("{}/instances/{}/invoke", self.base, instance.instance_id))
            .headers(headers)
            .body(req.body)
            .timeout(req.timeout + INVOKE_MARGIN)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.headers().contains_key(ERROR_HEADER) {
            return Err(self.error_of(resp).await);
        }
        let status = resp.status().as_u16();
        let function_error = resp.headers().contains_key(wire::FUNCTION_ERROR);
        let logs = resp
            .headers()
            .get(wire::LOGS)
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.as_bytes()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let headers = wire::relayable(resp.headers());
        let body: Bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(InvokeResponse { status, headers, body, function_error, logs })
    }

    /// Relayed over the same invoke call, both bodies streamed; the agent streams it on
    /// because it carries the HTTP method header. An error the agent meets part-way cuts its
    /// answer, seen here as a broken body (or as the deadline passing, which both sides keep).
    async fn invoke_stream(&self, instance: &InstanceInfo, req: StreamRequest) -> Result<StreamResponse, AgentError> {
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut headers = self.invoke_headers(&req.headers, &req.request_id, req.timeout, Some(&req.http))?;
        if let Some(n) = req.content_length {
            headers.insert("content-length", HeaderValue::from(n));
        }
        let resp = self
            .http
            .post(format!("{}/instances/{}/invoke", self.base, instance.instance_id))
            .headers(headers)
            .body(reqwest::Body::wrap_stream(req.body.into_data_stream()))
            .timeout(req.timeout + INVOKE_MARGIN)
            .send()
            .await
            .map_err(|e| if caller_body_failed(&e) { AgentError::RequestBody(e.to_string()) } else { self.unreachable(e) })?;
        if resp.headers().contains_key(ERROR_HEADER) {
            return Err(self.error_of(resp).await);
        }
        let status = resp.status().as_u16();
        let function_error = resp.headers().contains_key(wire::FUNCTION_ERROR);
        let headers = wire::relayable(resp.headers());
        // The agent enforces the response limit; only the deadline is kept here too.
        let body = super::bounded_body(resp.bytes_stream(), deadline, req.timeout, usize::MAX, ());
        Ok(StreamResponse { status, headers, function_error, body })
    }

    /// Sent in the background to the agent, which measures the instance and stores the record
    /// with its logs (and ships them). Not ordered with a following stop: a discarded instance
    /// may be gone before it is measured, and the record then has no memory figure.
    fn report(&self, summary: crate::logstore::InvocationSummary) {
        let req = self.http.post(format!("{}/summaries", self.base)).header("authorization", self.auth.clone()).json(&summary);
        let node = self.node_id.clone();
        tokio::spawn(async move {
            if let Err(e) = req.timeout(CONTROL_DEADLINE).send().await.and_then(|r| r.error_for_status()) {
                tracing::warn!(node = %node, "invocation summary not delivered: {e}");
            }
        });
    }

    async fn stop_instance(&self, instance_id: &str) {
        let r = self.control(reqwest::Method::DELETE, &format!("/instances/{instance_id}")).timeout(CONTROL_DEADLINE).send().await;
        match r {
            // The agent is gone or unreachable; its instances go with its lease.
            Err(e) => tracing::warn!(node = %self.node_id, instance = %instance_id, "stop not delivered: {e}"),
            Ok(resp) if !resp.status().is_success() => {
                let e = self.error_of(resp).await;
                tracing::warn!(node = %self.node_id, instance = %instance_id, "stop refused: {e}");
            }
            Ok(_) => {}
        }
    }

    /// Stop everything the agent runs: the resource manager adopting a node starts from a
    /// clean slate (instances placed by an earlier controller are unknown here).
    async fn remove_orphans(&self) -> Result<usize, AgentError> {
        let v: serde_json::Value = self.call(self.control(reqwest::Method::POST, "/reset"), START_DEADLINE).await?;
        Ok(v["stopped"].as_u64().unwrap_or(0) as usize)
    }
}

/// True when a call failed because the body being sent (the caller's) broke off.
fn caller_body_failed(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<axum::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}
