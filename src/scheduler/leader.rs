//! Who places instances. On one box: this process ([`Role::Local`]). In a cluster, one
//! controller is elected leader through etcd ([`crate::cluster::election`]) and runs the
//! instance table ([`Role::Leading`]); the others ([`Role::Following`]) ask it for slots over
//! the controllers' internal listener and then call the agent that hosts the instance
//! themselves, so invocation traffic never passes through the leader.
//!
//! | call (leader's internal listener) | body | answer |
//! |---|---|---|
//! | `POST /internal/v1/scheduler/acquire` | `{"function", "version", "revision"}` (version absent: LATEST) | [`Granted`], or an [`AcquireError`] with [`ERROR_HEADER`] |
//! | `POST /internal/v1/scheduler/release` | `{"lease", "discard"}` | 204 |
//! | `GET /internal/v1/scheduler/nodes` | | `[NodeView]` |
//! | `POST /internal/v1/scheduler/nodes/{id}/drain` | | `NodeView` |

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::nodes::NodeView;
use super::slot::{Owner, Slot};
use super::{AcquireError, ResourceManager};
use crate::agent::remote::RemoteNode;
use crate::agent::{InstanceInfo, Node, wire};
use crate::model::FunctionRecord;

pub const ERROR_HEADER: &str = "x-nubis-acquire-error";
/// Bound on one acquire at the leader: waiting for a slot plus a cold start.
const ACQUIRE_DEADLINE: Duration = Duration::from_secs(330);

#[derive(Clone)]
pub(super) enum Role {
    Local,
    Leading,
    /// The leader's client, once one is known.
    Following(Option<LeaderClient>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AcquireRequest {
    pub function: String,
    /// The published version to run (the leader loads its frozen config); None for LATEST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub revision: i64,
}

/// A slot the leader holds for a follower, until released (or its lease expires).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Granted {
    pub lease: String,
    pub instance: InstanceInfo,
    pub node_address: String,
    pub cold_start: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub lease: String,
    pub discard: bool,
}

/// A follower's handle on the leader. Cheap to clone.
#[derive(Clone)]
pub struct LeaderClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    url: String,
    auth: HeaderValue,
    secret: String,
    http: reqwest::Client,
    /// RemoteNodes by node id (with the address they were made for), reused for their
    /// connection pools.
    nodes: Mutex<HashMap<String, (String, Arc<RemoteNode>)>>,
    tracker: tokio_util::task::TaskTracker,
}

impl LeaderClient {
    pub fn new(url: &str, secret: &str, tracker: tokio_util::task::TaskTracker) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("static client config");
        let mut auth = wire::bearer(secret);
        auth.set_sensitive(true);
        let inner = ClientInner {
            url: url.trim_end_matches('/').to_string(),
            auth,
            secret: secret.to_string(),
            http,
            nodes: Mutex::default(),
            tracker,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.inner.http.post(format!("{}/internal/v1/scheduler{path}", self.inner.url)).header("authorization", self.inner.auth.clone())
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> AcquireError {
        AcquireError::NoLeader(format!("leader {} unreachable: {e}", self.inner.url))
    }

    pub(super) async fn acquire(&self, f: &FunctionRecord) -> Result<Slot, AcquireError> {
        let req = AcquireRequest { function: f.name.to_string(), version: f.version, revision: f.revision };
        let resp = self.post("/acquire").json(&req).timeout(ACQUIRE_DEADLINE).send().await.map_err(|e| self.unreachable(e))?;
        if resp.headers().contains_key(ERROR_HEADER) {
            return Err(resp.json::<AcquireError>().await.map_err(|e| self.unreachable(e))?);
        }
        if !resp.status().is_success() {
            return Err(self.unreachable(format!("answered {}", resp.status())));
        }
        let g: Granted = resp.json().await.map_err(|e| self.unreachable(e))?;
        let node = self.node(&g.instance.node_id, &g.node_address);
        let owner = Owner::Remote { leader: self.clone(), lease: g.lease, released: false };
        Ok(Slot { owner, info: g.instance, node, cold_start: g.cold_start })
    }

    fn node(&self, node_id: &str, address: &str) -> Arc<dyn Node> {
        let mut nodes = self.inner.nodes.lock().expect("nodes lock");
        // A lookup without allocating: this runs on every call through a follower.
        if let Some((a, n)) = nodes.get(node_id)
            && a == address
        {
            return n.clone();
        }
        // Followers only invoke; invocations carry no fencing epoch.
        let n = Arc::new(RemoteNode::new(node_id, address, &self.inner.secret, Arc::new(AtomicI64::new(0))));
        nodes.insert(node_id.to_string(), (address.to_string(), n.clone()));
        n
    }

    /// Free a slot at the leader, in the background (the slot's lease there is the backstop).
    pub(super) fn release_later(&self, lease: String, discard: bool) {
        let c = self.clone();
        self.inner.tracker.spawn(async move {
            let r = c.post("/release").json(&ReleaseRequest { lease, discard }).timeout(Duration::from_secs(10)).send().await;
            if let Err(e) = r {
                tracing::warn!(leader = %c.inner.url, "release not delivered (the leader's lease on the slot will expire): {e}");
            }
        });
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, AcquireError> {
        let resp = self
            .inner
            .http
            .get(format!("{}/internal/v1/scheduler/nodes", self.inner.url))
            .header("authorization", self.inner.auth.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        resp.error_for_status().map_err(|e| self.unreachable(e))?.json().await.map_err(|e| self.unreachable(e))
    }

    /// Drain a node at the leader; None if the leader does not know the node.
    pub async fn drain(&self, node_id: &str) -> Result<Option<NodeView>, AcquireError> {
        let resp = self.post(&format!("/nodes/{node_id}/drain")).timeout(Duration::from_secs(10)).send().await.map_err(|e| self.unreachable(e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        resp.error_for_status().map_err(|e| self.unreachable(e))?.json().await.map(Some).map_err(|e| self.unreachable(e))
    }
}

impl ResourceManager {
    /// This process won the election: it places instances from now on, with this epoch.
    /// The table starts empty; membership fills it by adopting what the agents report.
    pub fn lead(&self, epoch: i64) {
        self.inner.epoch.store(epoch, Ordering::SeqCst);
        *self.inner.role.lock().expect("role lock") = Role::Leading;
        tracing::info!(epoch, "leading the cluster's resource manager");
        self.inner.role_changed.notify_waiters();
    }

    /// Leadership is over (lease lost, shutdown): forget the table without stopping anything
    /// (the next leader adopts the instances) and follow whoever leads next.
    pub fn step_down(&self) {
        self.inner.epoch.store(0, Ordering::SeqCst);
        *self.inner.role.lock().expect("role lock") = Role::Following(None);
        self.forget_all();
        tracing::warn!("no longer leading the resource manager");
        self.inner.role_changed.notify_waiters();
    }

    /// Another controller leads (None: unknown, an election is under way).
    pub fn follow(&self, leader: Option<LeaderClient>) {
        let mut role = self.inner.role.lock().expect("role lock");
        if matches!(*role, Role::Leading | Role::Local) {
            return;
        }
        tracing::info!(leader = leader.as_ref().map_or("none", |l| l.url()), "following the scheduler leader");
        *role = Role::Following(leader);
        drop(role);
        self.inner.role_changed.notify_waiters();
    }

    /// Start as a follower (cluster mode) instead of the all-in-one `Local`.
    pub fn join_cluster(&self) {
        *self.inner.role.lock().expect("role lock") = Role::Following(None);
    }

    pub fn is_leading(&self) -> bool {
        matches!(*self.inner.role.lock().expect("role lock"), Role::Leading | Role::Local)
    }

    /// Completes at the next change of role (lead, step down, follow): for the parts that act
    /// only while leading (the timer engine) to start or stop at once.
    pub async fn role_changed(&self) {
        self.inner.role_changed.notified().await
    }

    /// The leader's client when another controller leads.
    pub fn leader(&self) -> Option<LeaderClient> {
        match &*self.inner.role.lock().expect("role lock") {
            Role::Following(l) => l.clone(),
            _ => None,
        }
    }

    /// The fencing epoch shared with this process's RemoteNodes.
    pub fn epoch(&self) -> Arc<AtomicI64> {
        self.inner.epoch.clone()
    }
}
