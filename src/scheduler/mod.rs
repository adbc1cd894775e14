//! Resource manager: the instance table and the slots it hands out.
//!
//! Instances are kept in pools, one per function version: [`pool_key`] is the function's name
//! for LATEST and `name@<id>` for a published version, so LATEST and its versions never share
//! instances and an update of LATEST (a new revision, which retires the pool's older
//! instances) leaves the versions' pools alone.
//!
//! A slot is one of an instance's `instanceConcurrency` places. [`ResourceManager::acquire`]
//! takes a free slot on a warm instance of the function's current revision (no I/O: one short
//! lock), or starts a new instance when the callers waiting outnumber the places that
//! instances already starting will offer, up to `max_instances_per_function`; past that it
//! waits for a slot until `acquire_timeout`. A [`Slot`] frees its place when dropped, exactly
//! once. The reaper stops instances idle longer than the keep-alive, and retired ones (their
//! function was updated or deleted) once they finish what they are serving.

pub mod leader;
pub mod nodes;
pub mod placement;
mod pools;
mod provision;
mod reaper;
mod slot;
mod start;
pub mod spec;

pub use nodes::host_capacity;
pub use pools::pool_key;
pub use slot::Slot;
use slot::Waiting;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agent::{AgentError, InstanceInfo};
use crate::config::SchedulerConfig;
use crate::metrics::Metrics;
use crate::model::FunctionRecord;
use nodes::NodeEntry;
use placement::{Demand, ScheduleError};
use spec::Platform;

/// Serializable: a follower controller receives the leader's error as it was.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "camelCase")]
pub enum AcquireError {
    #[error("function '{function}' has reached its limit of {limit} instances and no slot freed within {waited:?}")]
    Throttled { function: String, limit: usize, waited: Duration },
    /// PutConcurrencyConfig: the function already has its reserved number of calls in flight.
    #[error("function '{function}' has reached its reserved concurrency of {limit} calls in flight")]
    ConcurrencyLimit { function: String, limit: u32 },
    #[error(transparent)]
    Placement(#[from] ScheduleError),
    #[error(transparent)]
    Start(#[from] AgentError),
    #[error(transparent)]
    NoImage(#[from] spec::NoImage),
    #[error("shutting down")]
    ShuttingDown,
    /// The node chosen for a new instance left the cluster before the start began.
    #[error("node '{0}' left the cluster")]
    NodeLost(String),
    /// Cluster: no resource-manager leader is known or reachable (an election is under way).
    #[error("no scheduler leader available: {0}")]
    NoLeader(String),
    /// Cluster: the leader found no such function (deleted meanwhile).
    #[error("function '{0}' does not exist")]
    NoSuchFunction(String),
    /// Cluster: the leader found no such version of the function (deleted meanwhile).
    #[error("version {version} of function '{function}' does not exist")]
    NoSuchVersion { function: String, version: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InstanceState {
    /// Serving; takes new requests while it has free slots.
    Ready,
    /// Retired (function updated/deleted, or shutdown): finishes in-flight work, takes no more.
    Draining,
}

#[derive(Debug)]
struct Instance {
    info: InstanceInfo,
    revision: i64,
    memory_mb: u64,
    cpu: f64,
    concurrency: u32,
    inflight: u32,
    state: InstanceState,
    last_used: Instant,
}

#[derive(Default)]
struct Pool {
    revision: i64,
    instances: Vec<Instance>,
    starting: usize,
    waiting: usize,
    notify: Arc<Notify>,
    /// Instances kept ready whatever the traffic (PutProvisionConfig): the reaper leaves this
    /// many alone, and the provisioner starts the missing ones.
    provisioned: usize,
}

impl Pool {
    /// Bring the pool to a function record's `revision`: a newer one retires every instance of
    /// the older; false when the record is older than the pool (read before the latest update).
    fn catch_up(&mut self, revision: i64) -> bool {
        if revision > self.revision {
            self.revision = revision;
            for i in &mut self.instances {
                i.state = InstanceState::Draining;
            }
        }
        revision >= self.revision
    }

    /// Most instances the pool may have: the on-demand cap, or more if that many are provisioned.
    fn cap(&self, cfg: &SchedulerConfig) -> usize {
        cfg.max_instances_per_function.max(self.provisioned)
    }
}

/// A read-only view of one instance, for tests, the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub instance_id: String,
    pub function_name: String,
    /// The published version it serves; absent for LATEST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub node_id: String,
    pub revision: i64,
    pub inflight: u32,
    #[schema(value_type = String)]
    pub state: InstanceState,
}

struct Inner {
    cfg: SchedulerConfig,
    platform: Platform,
    /// Lock order: `pools` before `nodes` (acquire reads both under one decision).
    pools: Mutex<HashMap<String, Pool>>,
    nodes: Mutex<BTreeMap<String, NodeEntry>>,
    /// Calls admitted per function (all its versions) that has a reserved concurrency.
    admitted: Mutex<HashMap<String, u32>>,
    tracker: TaskTracker,
    /// Set by `stop_all`: no new instances; one that finishes starting is stopped at once.
    stopping: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    /// Who places instances: this process, or a leader elsewhere ([`leader`]).
    role: Mutex<leader::Role>,
    role_changed: Notify,
    /// Wakes the provisioner when a provision config changed here.
    provision_wake: Notify,
    /// This process's fencing epoch while it leads (0 otherwise); sent to agents.
    epoch: Arc<std::sync::atomic::AtomicI64>,
    /// The metadata store, to read a function again when a caller's record is outdated.
    store: std::sync::OnceLock<crate::store::Store>,
    /// Where summaries of invocations that reached no node go (this process's log store).
    local_logs: std::sync::OnceLock<(crate::logstore::LogStore, String)>,
}

#[derive(Clone)]
pub struct ResourceManager {
    inner: Arc<Inner>,
}

/// How long a node whose agent refused a connection takes no new instances: about the default
/// membership lease TTL, by which time a dead node is gone from the table anyway.
pub(crate) const SUSPECT_FOR: Duration = Duration::from_secs(10);

impl Inner {
    /// Stop an instance in the background, on its node if the node is still a member. In the
    /// caller's span: a discard's stop is part of the invocation that failed.
    fn stop_later(self: &Arc<Self>, info: &InstanceInfo) {
        let node = self.nodes.lock().expect("nodes lock").get(&info.node_id).map(|e| e.node.clone());
        if let Some(node) = node {
            let id = info.instance_id.clone();
            self.tracker.spawn(async move { node.stop_instance(&id).await }.in_current_span());
        }
    }

    /// Count one more instance of pool `name` as starting and choose its node, reserving the
    /// instance's memory and CPU there until the start finishes ([`ResourceManager::finish_start`]).
    fn reserve_start(
        &self,
        pools: &mut HashMap<String, Pool>,
        name: &str,
        f: &FunctionRecord,
    ) -> Result<start::Placed, AcquireError> {
        pools.entry(name.to_string()).or_default().starting += 1;
        let demand = Demand { memory_mb: f.config.memory_size.into(), cpu: f.config.cpu };
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let snaps = self.snapshots(pools, &nodes, name);
        let node_id = match placement::place(&snaps, demand) {
            Ok(id) => id,
            Err(e) => {
                tracing::info!(function = name, "no room for a new instance: {e}");
                pools.get_mut(name).expect("pool exists").starting -= 1;
                return Err(e.into());
            }
        };
        let entry = nodes.get_mut(&node_id).expect("placed on a known node");
        entry.starting_memory_mb += demand.memory_mb;
        entry.starting_cpu += demand.cpu;
        *entry.starting_functions.entry(name.to_string()).or_default() += 1;
        Ok(start::Placed { node: entry.node.clone(), starts: entry.starts.clone(), node_id })
    }

    fn snapshots(&self, pools: &HashMap<String, Pool>, nodes: &BTreeMap<String, NodeEntry>, function: &str) -> Vec<placement::NodeSnapshot> {
        let placed = pools.iter().flat_map(|(name, p)| {
            p.instances.iter().map(move |i| (i.info.node_id.as_str(), i.memory_mb, i.cpu, name == function))
        });
        nodes::snapshots(nodes, function, placed)
    }
}

impl ResourceManager {
    /// A resource manager with no nodes yet: add them with [`Self::add_node`].
    pub fn new(cfg: SchedulerConfig, platform: Platform, tracker: TaskTracker, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                platform,
                pools: Mutex::new(HashMap::new()),
                nodes: Mutex::new(BTreeMap::new()),
                admitted: Mutex::new(HashMap::new()),
                tracker,
                stopping: std::sync::atomic::AtomicBool::new(false),
                metrics,
                role: Mutex::new(leader::Role::Local),
                role_changed: Notify::new(),
                provision_wake: Notify::new(),
                epoch: Arc::default(),
                local_logs: std::sync::OnceLock::new(),
                store: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The metadata store: a caller whose function record is older than the instances'
    /// revision gets the current record read from it.
    pub fn set_store(&self, store: crate::store::Store) {
        let _ = self.inner.store.set(store);
    }

    /// This process's log store, for the summaries of invocations that reached no node.
    pub fn set_local_logs(&self, logs: crate::logstore::LogStore, node_id: String) {
        let _ = self.inner.local_logs.set((logs, node_id));
    }

    /// Store the summary of an invocation that reached no node (throttled, no capacity, the
    /// start failed): there is no instance to measure.
    pub fn report_unplaced(&self, mut summary: crate::logstore::InvocationSummary) {
        if let Some((logs, node_id)) = self.inner.local_logs.get() {
            summary.node_id = node_id.clone();
            summary.set_memory(None);
            logs.append(summary.into_line());
        }
    }

    /// The longest a call waits for a slot before it is throttled.
    pub fn acquire_timeout(&self) -> Duration {
        self.inner.cfg.acquire_timeout()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Set the point-in-time gauges (instances by state, node memory) for a scrape.
    pub fn observe(&self) {
        let m = &self.inner.metrics;
        let pools = self.inner.pools.lock().expect("pools lock");
        let (mut ready, mut draining, mut starting, mut used) = (0i64, 0i64, 0i64, 0u64);
        for p in pools.values() {
            starting += p.starting as i64;
            for i in &p.instances {
                used += i.memory_mb;
                match i.state {
                    InstanceState::Ready => ready += 1,
                    InstanceState::Draining => draining += 1,
                }
            }
        }
        m.instances.with_label_values(&["starting"]).set(starting);
        m.instances.with_label_values(&["ready"]).set(ready);
        m.instances.with_label_values(&["draining"]).set(draining);
        let capacity: u64 = self.inner.nodes.lock().expect("nodes lock").values().map(|e| e.capacity.memory_mb).sum();
        m.node_memory_bytes.with_label_values(&["capacity"]).set((capacity << 20) as i64);
        m.node_memory_bytes.with_label_values(&["placed"]).set((used << 20) as i64);
    }

    /// Claim a slot for one invocation of `f` (its current revision): from this process's
    /// table, or from the cluster's leader when another controller leads.
    pub async fn acquire(&self, f: &FunctionRecord) -> Result<Slot, AcquireError> {
        let deadline = Instant::now() + self.inner.cfg.acquire_timeout();
        loop {
            let role = self.inner.role.lock().expect("role lock").clone();
            match role {
                leader::Role::Local | leader::Role::Leading => return self.acquire_local(f).await,
                leader::Role::Following(Some(client)) => return client.acquire(f).await,
                leader::Role::Following(None) => {
                    // Registered, then the role read again, so a change in between is not missed.
                    let changed = self.inner.role_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if !matches!(*self.inner.role.lock().expect("role lock"), leader::Role::Following(None)) {
                        continue;
                    }
                    if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                        return Err(AcquireError::NoLeader("no leader elected yet".into()));
                    }
                }
            }
        }
    }

    /// Admit one call of a function under its reserved concurrency, if it has one. The ticket
    /// travels with the call's slot and is given back when the slot is.
    fn admit(&self, f: &FunctionRecord) -> Result<Option<slot::Ticket>, AcquireError> {
        let Some(limit) = f.controls.reserved_concurrency else { return Ok(None) };
        let mut admitted = self.inner.admitted.lock().expect("admitted lock");
        let n = admitted.entry(f.name.to_string()).or_default();
        if *n >= limit {
            tracing::info!(function = %f.name, limit, "throttled: reserved concurrency reached");
            return Err(AcquireError::ConcurrencyLimit { function: f.name.to_string(), limit });
        }
        *n += 1;
        Ok(Some(slot::Ticket { inner: self.inner.clone(), function: f.name.to_string() }))
    }

    /// Claim a slot from this process's own table (the all-in-one server, or the leader).
    pub async fn acquire_local(&self, caller: &FunctionRecord) -> Result<Slot, AcquireError> {
        let inner = &self.inner;
        let mut ticket = self.admit(caller)?;
        let deadline = Instant::now() + inner.cfg.acquire_timeout();
        let mut cold_start = false;
        // Set when the caller's record turned out older than the pool's revision.
        let mut current: Option<FunctionRecord> = None;
        loop {
            let f = current.as_ref().unwrap_or(caller);
            let key = pool_key(f.name.as_str(), f.version);
            let name = key.as_str();
            if Instant::now() >= deadline && !cold_start {
                return Err(AcquireError::Throttled {
                    function: name.to_string(),
                    limit: inner.cfg.max_instances_per_function,
                    waited: inner.cfg.acquire_timeout(),
                });
            }
            if inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(AcquireError::ShuttingDown);
            }
            if !self.is_leading() {
                return Err(AcquireError::NoLeader("this controller stopped leading".into()));
            }
            let start = {
                let mut pools = inner.pools.lock().expect("pools lock");
                let pools = &mut *pools;
                let pool = pools.entry(name.to_string()).or_default();
                if !pool.catch_up(f.revision) {
                    // The caller read the function before its latest update (through another
                    // controller, or racing one here). Starting its revision would only make an
                    // instance that drains at once: read the current record instead.
                    None
                } else {
                    let free = pool.instances.iter_mut().find(|i| {
                        i.state == InstanceState::Ready && i.revision == f.revision && i.inflight < i.concurrency
                    });
                    if let Some(inst) = free {
                        // Instances leave the table with their node (remove_node), so the node is here.
                        let node = inner.nodes.lock().expect("nodes lock").get(&inst.info.node_id).map(|e| e.node.clone());
                        if let Some(node) = node {
                            inst.inflight += 1;
                            inst.last_used = Instant::now();
                            let owner = slot::Owner::Local { inner: inner.clone(), function: name.to_string(), _ticket: ticket.take() };
                            return Ok(Slot { owner, info: inst.info.clone(), node, cold_start });
                        }
                    }
                    let serving = pool.instances.iter().filter(|i| i.state == InstanceState::Ready).count() + pool.starting;
                    let concurrency = f.config.instance_concurrency as usize;
                    // Start one more only if the places already on their way do not cover the
                    // callers waiting (plus this one): a burst starts what it needs, no more.
                    if serving < pool.cap(&inner.cfg) && pool.starting * concurrency < pool.waiting + 1 {
                        Some(Ok(inner.reserve_start(pools, name, f)?))
                    } else {
                        pool.waiting += 1;
                        // Register as a waiter while still holding the lock, so a slot freed
                        // right after it is released cannot be missed.
                        let mut notified = Box::pin(pool.notify.clone().notified_owned());
                        notified.as_mut().enable();
                        Some(Err(notified))
                    }
                }
            };
            match start {
                Some(Ok(placed)) => {
                    cold_start = true;
                    self.start_instance(f, placed).await?;
                }
                Some(Err(notified)) => {
                    let _waiting = Waiting { inner, function: name };
                    if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                        tracing::info!(function = name, "throttled: no slot freed in time");
                        return Err(AcquireError::Throttled {
                            function: name.to_string(),
                            limit: inner.cfg.max_instances_per_function,
                            waited: inner.cfg.acquire_timeout(),
                        });
                    }
                }
                None => {
                    if let Some(version) = f.version {
                        // A version never changes: its pool is newer only once it was deleted.
                        return Err(AcquireError::NoSuchVersion { function: f.name.to_string(), version });
                    }
                    let name = f.name.as_str();
                    let Some(store) = inner.store.get() else {
                        return Err(AcquireError::NoLeader(format!("function '{name}' changed and cannot be read again here")));
                    };
                    match store.get_function(name).await {
                        Ok(Some(fresh)) => current = Some(fresh),
                        Ok(None) => return Err(AcquireError::NoSuchFunction(name.to_string())),
                        Err(e) => return Err(AcquireError::NoLeader(format!("reading the function's current revision: {e}"))),
                    }
                }
            }
        }
    }
}
