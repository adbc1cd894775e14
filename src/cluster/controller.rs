//! The controller's internal listener: the leader's side of [`crate::scheduler::leader`].
//! Followers acquire slots here; the leader holds each granted slot under a lease id until it
//! is released, or until its deadline passes (a follower that died mid-call must not keep a
//! place forever).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::wire;
use crate::api::FunctionCache;
use crate::model::FunctionRecord;
use crate::scheduler::leader::{AcquireRequest, ERROR_HEADER, Granted, ReleaseRequest};
use crate::scheduler::{AcquireError, ResourceManager, Slot};
use crate::store::Store;

/// Extra time a granted slot is held beyond the function's timeout before it is reclaimed.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Held {
    slot: Slot,
    expires: Instant,
}

#[derive(Clone)]
pub struct ControllerService {
    rm: ResourceManager,
    store: Store,
    secret: Arc<str>,
    held: Arc<Mutex<HashMap<String, Held>>>,
    /// The API's function cache: invalidated by updates through this controller, and expiring
    /// (cluster mode) so updates through the others are seen within a second.
    functions: Arc<FunctionCache>,
}

impl ControllerService {
    pub fn new(rm: ResourceManager, store: Store, secret: &str, functions: Arc<FunctionCache>) -> Self {
        Self { rm, store, secret: secret.into(), held: Arc::default(), functions }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/internal/v1/scheduler/acquire", post(acquire))
            .route("/internal/v1/scheduler/release", post(release))
            .route("/internal/v1/scheduler/nodes", get(nodes))
            .route("/internal/v1/scheduler/nodes/{id}/drain", post(drain))
            .layer(from_fn_with_state(self.secret.clone(), wire::require_secret))
            .route("/internal/v1/health", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Reclaim slots whose holder never released them.
    pub fn spawn_sweeper(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let held = self.held.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                let now = Instant::now();
                let expired: Vec<Held> = {
                    let mut h = held.lock().expect("held lock");
                    let ids: Vec<String> = h.iter().filter(|(_, v)| v.expires <= now).map(|(k, _)| k.clone()).collect();
                    ids.iter().filter_map(|k| h.remove(k)).collect()
                };
                if !expired.is_empty() {
                    tracing::warn!(n = expired.len(), "reclaimed slots whose follower never released them");
                }
            }
        });
    }

    /// The function (or the version of it) a follower asks a slot for, at least at the
    /// revision the follower saw.
    async fn function(&self, name: &str, version: Option<u64>, revision: i64) -> Result<Arc<FunctionRecord>, AcquireError> {
        if let Some(f) = self.functions.get_at(name, version).filter(|f| f.revision >= revision) {
            return Ok(f);
        }
        let loaded = match version {
            None => self.store.get_function(name).await,
            Some(v) => self.store.get_function_at(name, v).await,
        };
        let f = match loaded {
            Ok(Some(f)) => Arc::new(f),
            Ok(None) => {
                return Err(match version {
                    None => AcquireError::NoSuchFunction(name.to_string()),
                    Some(version) => AcquireError::NoSuchVersion { function: name.to_string(), version },
                });
            }
            Err(e) => return Err(AcquireError::NoLeader(format!("the leader cannot read the function: {e}"))),
        };
        self.functions.put(f.clone());
        Ok(f)
    }
}

fn refuse(e: AcquireError) -> Response {
    let status = match e {
        AcquireError::NoLeader(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = (status, Json(e)).into_response();
    resp.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static("1"));
    resp
}

async fn acquire(State(s): State<ControllerService>, Json(req): Json<AcquireRequest>) -> Response {
    if !s.rm.is_leading() {
        return refuse(AcquireError::NoLeader("this controller is not the leader".into()));
    }
    let f = match s.function(&req.function, req.version, req.revision).await {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let slot = match s.rm.acquire_local(&f).await {
        Ok(slot) => slot,
        Err(e) => return refuse(e),
    };
    let Some(node_address) = s.rm.node_address(&slot.instance().node_id) else {
        return refuse(AcquireError::NodeLost(slot.instance().node_id.clone()));
    };
    let lease = uuid::Uuid::new_v4().simple().to_string();
    let granted = Granted { lease: lease.clone(), instance: slot.instance().clone(), node_address, cold_start: slot.cold_start };
    let expires = Instant::now() + s.rm.acquire_timeout() + Duration::from_secs(f.config.timeout.into()) + LEASE_MARGIN;
    s.held.lock().expect("held lock").insert(lease, Held { slot, expires });
    Json(granted).into_response()
}

async fn release(State(s): State<ControllerService>, Json(req): Json<ReleaseRequest>) -> StatusCode {
    let held = s.held.lock().expect("held lock").remove(&req.lease);
    match held {
        Some(h) if req.discard => h.slot.discard(),
        Some(h) => drop(h.slot),
        // Expired already, or granted by an earlier leadership: nothing held here.
        None => {}
    }
    StatusCode::NO_CONTENT
}

async fn nodes(State(s): State<ControllerService>) -> Response {
    if !s.rm.is_leading() {
        return refuse(AcquireError::NoLeader("this controller is not the leader".into()));
    }
    Json(s.rm.nodes()).into_response()
}

async fn drain(State(s): State<ControllerService>, Path(id): Path<String>) -> Response {
    if !s.rm.is_leading() {
        return refuse(AcquireError::NoLeader("this controller is not the leader".into()));
    }
    match s.rm.drain(&id) {
        Some(_) => Json(s.rm.nodes().into_iter().find(|n| n.node_id == id)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
