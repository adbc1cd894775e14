//! One invocation of a function: a slot from the resource manager, the event sent into the
//! instance, the slot freed (or the instance discarded when it timed out, ran out of memory or
//! crashed). Shared by the sync API path and the async dispatcher, so both see the same
//! limits, the same cold starts and the same failure handling.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::agent::{AgentError, InvokeRequest, InvokeResponse};
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
                | AcquireError::Placement(_)
                | AcquireError::ShuttingDown
                | AcquireError::NodeLost(_)
                | AcquireError::NoLeader(_),
            ) => {
                true
            }
            InvokeFailure::Acquire(AcquireError::Start(a)) | InvokeFailure::Agent(a) => {
                matches!(a, AgentError::Unavailable(_) | AgentError::NotDelivered(_) | AgentError::Internal(_) | AgentError::Fenced { .. })
            }
            InvokeFailure::Acquire(AcquireError::NoImage(_)) => true,
            InvokeFailure::Acquire(AcquireError::NoSuchFunction(_)) => false,
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
        Err(InvokeFailure::Acquire(AcquireError::Throttled { .. })) => Outcome::Throttled,
        Err(e) if e.is_platform() => Outcome::PlatformError,
        Err(InvokeFailure::Acquire(_)) => Outcome::StartFailed,
        Err(InvokeFailure::Agent(_)) => Outcome::PlatformError,
    }
}

impl Invocation {
    /// Count this invocation in the metrics.
    pub fn record(&self, rm: &ResourceManager, function: &str, kind: Kind) {
        rm.metrics().invocation(function, kind.as_str(), outcome(&self.result), self.duration.as_secs_f64());
    }
}

pub struct Invocation {
    pub result: Result<InvokeResponse, InvokeFailure>,
    pub instance_id: Option<String>,
    pub cold_start: bool,
    pub duration: Duration,
}

/// Acquire a slot and run the event in it.
pub async fn invoke(
    rm: &ResourceManager,
    f: &FunctionRecord,
    request_id: &str,
    body: Bytes,
    headers: HeaderMap,
    want_logs: bool,
) -> Invocation {
    let started = Instant::now();
    let mut retried = false;
    loop {
        let inv = match rm.acquire(f).await {
            Ok(slot) => {
                let node_id = slot.instance().node_id.clone();
                let inv = run(slot, f, request_id, body.clone(), headers.clone(), want_logs, started).await;
                if matches!(inv.result, Err(InvokeFailure::Agent(AgentError::NotDelivered(_)))) {
                    rm.suspect(&node_id);
                }
                inv
            }
            Err(e) => Invocation { result: Err(e.into()), instance_id: None, cold_start: false, duration: started.elapsed() },
        };
        // An agent that could not be connected to received nothing: one more try, on another
        // instance (its node is now avoided), hides a dead node from the caller.
        let not_delivered = matches!(
            inv.result,
            Err(InvokeFailure::Agent(AgentError::NotDelivered(_)) | InvokeFailure::Acquire(AcquireError::Start(AgentError::NotDelivered(_))))
        );
        if not_delivered && !retried {
            retried = true;
            tracing::info!(function = %f.name, "node agent unreachable; trying once more elsewhere");
            continue;
        }
        return inv;
    }
}

/// Run the event in an already acquired slot (the async dispatcher acquires separately, so
/// that a shutdown can cancel the wait for a slot but never an event already in an instance).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    slot: Slot,
    f: &FunctionRecord,
    request_id: &str,
    body: Bytes,
    headers: HeaderMap,
    want_logs: bool,
    started: Instant,
) -> Invocation {
    let cold_start = slot.cold_start;
    let instance_id = slot.instance().instance_id.clone();
    let req = InvokeRequest {
        request_id: request_id.to_string(),
        body,
        headers,
        timeout: Duration::from_secs(f.config.timeout.into()),
        want_logs,
    };
    let result = match slot.node().invoke(slot.instance(), req).await {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::info!(function = %f.name, instance = %instance_id, "invocation failed: {e}");
            // Every failure after the event was sent leaves the instance in doubt: a timed-out
            // handler may still be running, a crashed one is gone. Never hand it out again.
            slot.discard();
            return Invocation { result: Err(e.into()), instance_id: Some(instance_id), cold_start, duration: started.elapsed() };
        }
    };
    drop(slot);
    Invocation { result, instance_id: Some(instance_id), cold_start, duration: started.elapsed() }
}
