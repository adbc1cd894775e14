//! One invocation of a function: a slot from the resource manager, the event sent into the
//! instance, the slot freed (or the instance discarded when it timed out, ran out of memory or
//! crashed), the invocation counted and its summary record stored. Shared by the sync API path,
//! HTTP triggers and the async dispatcher, so both see the same limits, the same cold starts, the same
//! failure handling and the same records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::agent::{AgentError, HttpPassthrough, InvokeRequest, InvokeResponse, Node, StreamRequest};
use crate::logstore::InvocationSummary;
use crate::metrics::Outcome;
use crate::model::FunctionRecord;
use crate::scheduler::{AcquireError, ResourceManager, Slot};

/// Why an invocation produced no response from the function.
#[derive(Debug, thiserror::Error)]
pub enum InvokeFailure {
    /// No slot: throttled, no capacity, or the instance could not start (or initialize).
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// The instance failed while handling the event (timeout, out of memory, crash, ...).
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl InvokeFailure {
    /// A failure of the platform, not of the function: it should not use up the function's
    /// retries (async) and is reported as a platform error (sync).
    pub fn is_platform(&self) -> bool {
        match self {
            InvokeFailure::Acquire(
                AcquireError::Throttled { .. }
                | AcquireError::ConcurrencyLimit { .. }
                | AcquireError::Placement(_)
                | AcquireError::ShuttingDown
                | AcquireError::NodeLost(_)
                | AcquireError::NoLeader(_),
            ) => true,
            InvokeFailure::Acquire(AcquireError::Start(a)) | InvokeFailure::Agent(a) => {
                matches!(a, AgentError::Unavailable(_) | AgentError::NotDelivered(_) | AgentError::Internal(_) | AgentError::Fenced { .. })
            }
            InvokeFailure::Acquire(AcquireError::NoImage(_)) => true,
            InvokeFailure::Acquire(AcquireError::NoSuchFunction(_) | AcquireError::NoSuchVersion { .. }) => false,
        }
    }
}

/// Sync API call or async dispatch (the `kind` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync,
    Async,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sync => "sync",
            Kind::Async => "async",
        }
    }
}

fn outcome(result: &Result<InvokeResponse, InvokeFailure>) -> Outcome {
    match result {
        Ok(r) if r.function_error => Outcome::FunctionError,
        Ok(_) => Outcome::Success,
        Err(InvokeFailure::Agent(AgentError::Timeout(_))) => Outcome::Timeout,
        Err(InvokeFailure::Agent(AgentError::OutOfMemory(_))) => Outcome::OutOfMemory,
        Err(InvokeFailure::Agent(AgentError::Crashed(_))) => Outcome::Crashed,
        Err(InvokeFailure::Acquire(AcquireError::Throttled { .. } | AcquireError::ConcurrencyLimit { .. })) => Outcome::Throttled,
        Err(e) if e.is_platform() => Outcome::PlatformError,
        Err(InvokeFailure::Acquire(_)) => Outcome::StartFailed,
        Err(InvokeFailure::Agent(_)) => Outcome::PlatformError,
    }
}

pub struct Invocation {
    pub result: Result<InvokeResponse, InvokeFailure>,
    pub instance_id: Option<String>,
    pub cold_start: bool,
    pub duration: Duration,
}

/// One invocation to run: what the invoker needs besides the slot.
pub struct Call<'a> {
    /// LATEST or the version that runs (an alias has already picked one).
    pub f: &'a FunctionRecord,
    /// What the caller named: `LATEST`, a version id or an alias. Recorded in the summary and
    /// told to the instance (`x-fc-qualifier`).
    pub qualifier: &'a str,
    pub request_id: &'a str,
    pub kind: Kind,
    pub body: Bytes,
    /// Per-request headers for the instance.
    pub headers: HeaderMap,
    /// Return this invocation's log text (`x-fc-log-type: Tail`).
    pub want_logs: bool,
}

/// Acquire a slot and run the event in it. An agent that could not even be connected to
/// received nothing: its node is avoided from then on and the event is tried once more on
/// another instance, so a dead node costs the caller nothing. (An HTTP trigger's request for
/// a custom server goes through [`invoke_stream`] instead.)
pub async fn invoke(rm: &ResourceManager, call: Call<'_>) -> Invocation {
    let started = Instant::now();
    let mut retried = false;
    loop {
        match rm.acquire(call.f).await {
            Ok(slot) => {
                let result = send(&slot, &call).await;
                if let Err(AgentError::NotDelivered(e)) = &result
                    && !retried
                {
                    tracing::info!(function = %call.f.name, "{e}; trying once more elsewhere");
                    rm.suspect(&slot.instance().node_id);
                    slot.discard();
                    retried = true;
                    continue;
                }
                return complete(rm, slot, &call, result, started);
            }
            // The start's node was marked suspect by the resource manager.
            Err(AcquireError::Start(AgentError::NotDelivered(_))) if !retried => retried = true,
            Err(e) => return not_run(rm, &call, e, started),
        }
    }
}

/// An invocation that got no slot (throttled, no capacity, the instance did not start): counted
/// and summarized like any other.
pub fn not_run(rm: &ResourceManager, call: &Call<'_>, e: AcquireError, started: Instant) -> Invocation {
    let inv = Invocation { result: Err(e.into()), instance_id: None, cold_start: false, duration: started.elapsed() };
    finish(rm, None, call, &inv);
    inv
}

/// Run the event in an already acquired slot (the async dispatcher acquires separately, so
/// that a shutdown can cancel the wait for a slot but never an event already in an instance).
pub async fn run(rm: &ResourceManager, slot: Slot, call: Call<'_>, started: Instant) -> Invocation {
    let result = send(&slot, &call).await;
    complete(rm, slot, &call, result, started)
}

/// Send the event into the slot's instance (the body is reference-counted: a copy is cheap).
async fn send(slot: &Slot, call: &Call<'_>) -> Result<InvokeResponse, AgentError> {
    let mut headers = call.headers.clone();
    // The instance's base headers say which version it runs; this says how the call named it.
    if let Ok(q) = axum::http::HeaderValue::from_str(call.qualifier) {
        headers.insert("x-fc-qualifier", q);
    }
    let req = InvokeRequest {
        request_id: call.request_id.to_string(),
        body: call.body.clone(),
        headers,
        timeout: Duration::from_secs(call.f.config.timeout.into()),
        want_logs: call.want_logs,
    };
    slot.node().invoke(slot.instance(), req).await
}

/// An HTTP trigger's call to a custom runtime or container, streamed both ways (see
/// [`StreamRequest`]). Owned: the call outlives the handler that started it, until its
/// response body ends.
pub struct StreamCall {
    pub f: Arc<FunctionRecord>,
    pub qualifier: String,
    pub request_id: String,
    pub headers: HeaderMap,
    pub content_length: Option<u64>,
    pub body: axum::body::Body,
    pub http: HttpPassthrough,
}

/// What completing a streamed call needs once its handler has returned.
struct Owned {
    rm: ResourceManager,
    f: Arc<FunctionRecord>,
    qualifier: String,
    request_id: String,
    started: Instant,
}

impl Owned {
    fn call(&self) -> Call<'_> {
        Call {
            f: &self.f,
            qualifier: &self.qualifier,
            request_id: &self.request_id,
            kind: Kind::Sync,
            body: Bytes::new(),
            headers: HeaderMap::new(),
            want_logs: false,
        }
    }
}

/// Held by a streamed response body: when the body ends, fails or is dropped (the caller went
/// away), the slot is freed (or its instance discarded) and the invocation counted and
/// summarized, so a slot stays taken for as long as its instance is still answering.
struct Completion {
    owned: Owned,
    slot: Option<Slot>,
    head: Option<InvokeResponse>,
    error: Option<AgentError>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let result = match (self.error.take(), self.head.take()) {
            (Some(e), _) => Err(e),
            (None, Some(head)) => Ok(head),
            (None, None) => Err(AgentError::Internal("streamed call completed twice".into())),
        };
        let call = self.owned.call();
        complete(&self.owned.rm, slot, &call, result, self.owned.started);
    }
}

/// A streamed call's response: the instance's head, and its body as the caller's response
/// body (it ends with an error, which cuts the caller's connection, when the exchange failed
/// part-way).
pub struct Streamed {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: axum::body::Body,
}

fn unwrap_failure(inv: Invocation) -> InvokeFailure {
    match inv.result {
        Err(e) => e,
        Ok(_) => InvokeFailure::Agent(AgentError::Internal("a failed call recorded as a success".into())),
    }
}

/// Acquire a slot and stream an HTTP trigger's request into its instance. Returns the
/// response head once the instance sent it; the slot is held until the returned body ends or
/// is dropped. Sent once, never retried: the body is consumed by the first attempt.
pub async fn invoke_stream(rm: &ResourceManager, call: StreamCall) -> Result<Streamed, InvokeFailure> {
    let StreamCall { f, qualifier, request_id, mut headers, content_length, body, http } = call;
    let owned = Owned { rm: rm.clone(), f, qualifier, request_id, started: Instant::now() };
    let slot = match rm.acquire(&owned.f).await {
        Ok(slot) => slot,
        Err(e) => return Err(unwrap_failure(not_run(rm, &owned.call(), e, owned.started))),
    };
    if let Ok(q) = axum::http::HeaderValue::from_str(&owned.qualifier) {
        headers.insert("x-fc-qualifier", q);
    }
    let req = StreamRequest {
        request_id: owned.request_id.clone(),
        headers,
        content_length,
        body,
        timeout: Duration::from_secs(owned.f.config.timeout.into()),
        http,
    };
    match slot.node().invoke_stream(slot.instance(), req).await {
        Err(e) => {
            if matches!(e, AgentError::NotDelivered(_)) {
                rm.suspect(&slot.instance().node_id);
            }
            Err(unwrap_failure(complete(rm, slot, &owned.call(), Err(e), owned.started)))
        }
        Ok(resp) => {
            let head = InvokeResponse {
                status: resp.status,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                function_error: resp.function_error,
                logs: None,
            };
            let guard = Completion { owned, slot: Some(slot), head: Some(head), error: None };
            let body = futures_util::stream::unfold((resp.body, Some(guard)), |(mut inner, guard)| async move {
                use futures_util::StreamExt;
                // No guard: the previous item was the error that ended the stream.
                let mut guard = guard?;
                match inner.next().await? {
                    Ok(b) => Some((Ok(b), (inner, Some(guard)))),
                    Err(e) => {
                        let item = Err(std::io::Error::other(e.to_string()));
                        guard.error = Some(e);
                        // Completed now, not whenever the caller's connection is torn down.
                        drop(guard);
                        Some((item, (inner, None)))
                    }
                }
            });
            Ok(Streamed { status: resp.status, headers: resp.headers, body: axum::body::Body::from_stream(body) })
        }
    }
}

/// Count and summarize the invocation, then free the slot (or discard its instance).
fn complete(rm: &ResourceManager, slot: Slot, call: &Call<'_>, result: Result<InvokeResponse, AgentError>, started: Instant) -> Invocation {
    // The caller's body breaking off says nothing about the instance: it is kept.
    let failed = result.as_ref().is_err_and(|e| !matches!(e, AgentError::RequestBody(_)));
    let instance_id = Some(slot.instance().instance_id.clone());
    let inv = Invocation { result: result.map_err(Into::into), instance_id, cold_start: slot.cold_start, duration: started.elapsed() };
    // Before a discard: the node reads the instance's memory before it stops it.
    finish(rm, Some(slot.node()), call, &inv);
    if let Err(e) = &inv.result {
        tracing::info!(function = %call.f.name, instance = inv.instance_id.as_deref().unwrap_or_default(), "invocation failed: {e}; discarding the instance");
    }
    if failed {
        // Every failure after the event was sent leaves the instance in doubt: a timed-out
        // handler may still be running, a crashed one is gone. Never hand it out again.
        slot.discard();
    } else {
        drop(slot);
    }
    inv
}

/// Count the invocation in the metrics and hand its summary record to the node that ran it
/// (or, when none did, to this process's log store). Neither waits: the node measures memory
/// and stores the record in the background.
fn finish(rm: &ResourceManager, node: Option<&Arc<dyn Node>>, call: &Call<'_>, inv: &Invocation) {
    let outcome = outcome(&inv.result);
    rm.metrics().invocation(call.f.name.as_str(), call.kind.as_str(), outcome, inv.duration.as_secs_f64());
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::from_std(inv.duration).unwrap_or_default();
    let error = match &inv.result {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let summary = InvocationSummary {
        function_name: call.f.name.to_string(),
        qualifier: call.qualifier.to_string(),
        request_id: call.request_id.to_string(),
        instance_id: inv.instance_id.clone().unwrap_or_default(),
        node_id: node.map(|n| n.node_id().to_string()).unwrap_or_default(),
        invocation_type: match call.kind {
            Kind::Sync => "Sync",
            Kind::Async => "Async",
        }
        .to_string(),
        start_time: start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        end_time: end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        // Milliseconds to two decimals (10 µs): finer is noise.
        duration_ms: (inv.duration.as_secs_f64() * 100_000.0).round() / 100.0,
        memory_size_mb: call.f.config.memory_size,
        max_memory_used_mb: None,
        outcome: outcome.as_str().to_string(),
        cold_start: inv.cold_start,
        error,
    };
    match node {
        Some(n) => n.report(summary),
        None => rm.report_unplaced(summary),
    }
}
