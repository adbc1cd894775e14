//! Node agent: runs function instances as Docker containers and proxies invocations into them.
//!
//! [`Node`] is the seam between the resource manager and a node. In the all-in-one server the
//! [`docker::DockerNode`] runs in-process; remote agents implement the same trait over HTTP.

pub mod codecache;
pub mod docker;
pub mod logs;
pub mod memory;
pub mod pool;
pub mod remote;
pub mod service;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::logstore::InvocationSummary;

/// Everything a node needs to start one instance of one function revision. Serializable: the
/// resource manager sends it to remote agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub instance_id: String,
    pub function_name: String,
    /// The published version it runs; None for LATEST. Defaulted so that specs from a
    /// controller that predates versions still parse.
    #[serde(default)]
    pub version: Option<u64>,
    pub revision: i64,
    pub image: String,
    /// Overrides of the image's entrypoint/command (custom runtimes and containers).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Code package to mount read-only at /code.
    pub code_checksum: Option<String>,
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub cpu: f64,
    /// Calls the instance serves at once (`instanceConcurrency`); reported back to a resource
    /// manager that adopts the instance.
    #[serde(default = "one")]
    pub concurrency: u32,
    pub port: u16,
    /// Readiness: GET this path until 2xx; None: the port accepting connections is enough.
    pub health_path: Option<String>,
    /// Built-in bootstraps print `FC Invoke Start/End` themselves.
    pub prints_log_markers: bool,
    /// Call POST /initialize once before the first invocation, with this deadline.
    pub initializer_timeout: Option<Duration>,
    /// Headers sent on every call into the instance (x-fc-function-name, ...).
    #[serde(with = "wire::header_map")]
    pub base_headers: HeaderMap,
}

fn one() -> u32 {
    1
}

/// An instance as its agent reports it: enough for a new resource-manager leader to adopt it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    pub info: InstanceInfo,
    pub function_name: String,
    /// Which pool a new leader puts it in: LATEST (None) or a version.
    #[serde(default)]
    pub version: Option<u64>,
    pub revision: i64,
    pub memory_mb: u32,
    pub cpu: f64,
    pub concurrency: u32,
}

/// A started instance, as the resource manager addresses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub node_id: String,
    pub addr: SocketAddr,
}

#[derive(Debug)]
pub struct InvokeRequest {
    pub request_id: String,
    pub body: Bytes,
    /// Per-request headers (x-fc-request-id is added by the node).
    pub headers: HeaderMap,
    pub timeout: Duration,
    /// Wait for this invocation's log lines and return them.
    pub want_logs: bool,
}

/// The request line of an HTTP trigger's request passed through to the instance's server
/// unchanged (FC's "web function" contract, fc-triggers.md §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPassthrough {
    pub method: axum::http::Method,
    /// Origin-form: the path after the trigger's URL prefix (`/` at least), then `?query`.
    pub path_and_query: String,
}

/// An HTTP trigger's request for a custom runtime or container, streamed: the body goes into
/// the instance as the caller sends it, and [`StreamResponse::body`] comes back as the
/// instance writes it. Built-in runtimes never get one (their event needs the whole body).
pub struct StreamRequest {
    pub request_id: String,
    /// The caller's headers (as [`InvokeRequest::headers`]).
    pub headers: HeaderMap,
    /// The caller's declared length, passed on so the instance gets a sized body (servers
    /// that cannot read chunked requests still work); None: sent chunked.
    pub content_length: Option<u64>,
    pub body: axum::body::Body,
    /// Bounds the whole exchange: the answer's head and the last byte of its body.
    pub timeout: Duration,
    pub http: HttpPassthrough,
}

/// The instance's answer to a [`StreamRequest`]: its head at once, its body as a stream. The
/// stream ends with an `Err` (and nothing after it) when the exchange failed part-way: the
/// deadline passed, the response grew past the node's limit, the instance broke off.
pub struct StreamResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// A 5xx from the custom server (as [`InvokeResponse::function_error`]).
    pub function_error: bool,
    pub body: BodyStream,
}

pub type BodyStream = futures_util::stream::BoxStream<'static, Result<Bytes, AgentError>>;

#[derive(Debug, Serialize, Deserialize)]
pub struct InvokeResponse {
    pub status: u16,
    #[serde(with = "wire::header_map")]
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The function reported an error (x-fc-status: 404, or a 5xx from a custom server).
    pub function_error: bool,
    /// This invocation's log text when asked for.
    pub logs: Option<String>,
}

/// Why an instance could not start or an invocation failed. Variants say whose fault it is:
/// `Start`, `Timeout`, `OutOfMemory`, `Crashed`, `Initialization` are the function's;
/// `Unavailable` and `Internal` are the platform's.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "camelCase")]
pub enum AgentError {
    #[error("image '{0}' is not present on the node and could not be pulled")]
    ImageNotFound(String),
    #[error("the instance exited before it was ready (exit code {}): {logs}", code(*exit_code))]
    Exited { exit_code: Option<i64>, logs: String },
    #[error("the instance did not listen on port {port} within {secs} s")]
    NotReady { port: u16, secs: u64 },
    #[error("function timed out after {0} seconds")]
    Timeout(u64),
    #[error("the instance ran out of memory (limit {0} MB) and was killed")]
    OutOfMemory(u32),
    #[error("the instance exited unexpectedly while handling the request (exit code {})", code(*.0))]
    Crashed(Option<i64>),
    #[error("the initializer failed")]
    Initialization(InvokeResponse),
    #[error("the instance returned an invalid response: {0}")]
    BadResponse(String),
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The node's agent could not be connected to: nothing was sent, so the call can safely be
    /// made again elsewhere.
    #[error("node agent unreachable, nothing was sent: {0}")]
    NotDelivered(String),
    #[error("agent error: {0}")]
    Internal(String),
    /// The caller's request body broke off (it went away, or its body passed the limit)
    /// before the instance answered: nobody's fault on the platform's or the function's side.
    #[error("the request body could not be read: {0}")]
    RequestBody(String),
    /// A control call from a resource manager whose leadership has ended (its fencing epoch
    /// is older than one the agent has seen).
    #[error("refused: fencing epoch {presented} is older than {current}: the caller is no longer the leader")]
    Fenced { presented: i64, current: i64 },
}

fn code(c: Option<i64>) -> String {
    c.map_or_else(|| "unknown".into(), |c| c.to_string())
}

#[async_trait::async_trait]
pub trait Node: Send + Sync + 'static {
    fn node_id(&self) -> &str;
    /// Create and start an instance; returns once it is ready (and initialized).
    async fn start_instance(&self, spec: InstanceSpec) -> Result<InstanceInfo, AgentError>;
    /// Send one event to an instance (`POST /invoke`) and wait for its answer (at most
    /// `req.timeout`).
    async fn invoke(&self, instance: &InstanceInfo, req: InvokeRequest) -> Result<InvokeResponse, AgentError>;
    /// Send an HTTP trigger's request into an instance, streaming both ways. Returns once
    /// the instance's response head arrived; the body follows (see [`StreamResponse`]).
    async fn invoke_stream(&self, instance: &InstanceInfo, req: StreamRequest) -> Result<StreamResponse, AgentError>;
    /// Store the summary record of a finished invocation. Returns at once, so it never delays
    /// an answer: the node reads the instance's memory peak in the background, then stores
    /// the record. Call it before the instance is stopped, so that the reading comes first.
    fn report(&self, summary: InvocationSummary);
    /// Stop and remove an instance. Idempotent.
    async fn stop_instance(&self, instance_id: &str);
    /// Remove instances a previous run of this node left behind. Returns how many.
    async fn remove_orphans(&self) -> Result<usize, AgentError>;
    /// Instances whose container exited on its own since the last call (crashed, killed from
    /// outside), so the resource manager drops them before a call finds them dead. Remote
    /// nodes report none here: their instance list is reconciled by the membership resync.
    fn take_exited(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An instance's response body as a stream that ends with an error (and then nothing) at the
/// deadline, past `max` bytes, or when the instance breaks off; the stream holds `guard` until
/// it is done or dropped.
pub fn bounded_body<S, E, G>(inner: S, deadline: tokio::time::Instant, timeout: Duration, max: usize, guard: G) -> BodyStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
    G: Send + 'static,
{
    let state = (Box::pin(inner), 0usize, Some(guard));
    futures_util::stream::unfold(state, move |(mut inner, sent, guard)| async move {
        // `guard` gone: an error was the last item.
        guard.as_ref()?;
        let item = match tokio::time::timeout_at(deadline, inner.next()).await {
            Err(_) => Err(AgentError::Timeout(timeout.as_secs())),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(AgentError::BadResponse(format!("the response broke off: {e}"))),
            Ok(Some(Ok(b))) if sent + b.len() > max => {
                Err(AgentError::BadResponse(format!("the response is larger than {max} bytes; it was cut there")))
            }
            Ok(Some(Ok(b))) => {
                let sent = sent + b.len();
                return Some((Ok(b), (inner, sent, guard)));
            }
        };
        Some((item, (inner, sent, None)))
    })
    .boxed()
}
