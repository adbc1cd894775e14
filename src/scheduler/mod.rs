//! Resource manager: the instance table and the slots it hands out.
//!
//! Instances are kept in pools, one per function version: [`pool_key`] is the function's name
//! for LATEST and `name@<id>` for a published version, so LATEST and its versions never share
//! instances and an update of LATEST (a new revision, which retires the pool's older
//! instances) leaves the versions' pools alone.
//!
//! A slot is one of an instance's `instanceConcurrency` places. [`ResourceManager::acquire`]
//! takes a free slot on a warm instance of the pool's current revision (no I/O: one short
//! lock), or starts a new instance when the callers waiting outnumber the places that
//! instances already starting will offer, up to `max_instances_per_function`; past that it
//! waits for a slot until `acquire_timeout`. A [`Slot`] frees its place when dropped, exactly
//! once. The reaper stops instances idle longer than the keep-alive, and retired ones (their
//! function was updated or deleted) once they finish what they are serving.

pub mod leader;
pub mod nodes;
pub mod placement;
mod pools;
mod reaper;
mod slot;
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

use crate::agent::{AgentError, InstanceInfo, Node};
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
    tracker: TaskTracker,
    /// Set by `stop_all`: no new instances; one that finishes starting is stopped at once.
    stopping: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    /// Who places instances: this process, or a leader elsewhere ([`leader`]).
    role: Mutex<leader::Role>,
    role_changed: Notify,
    /// This process's fencing epoch while it leads (0 otherwise); sent to agents.
    epoch: Arc<std::sync::atomic::AtomicI64>,
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

/// Why a started instance did not join the table.
#[derive(Debug)]
enum Unplaced {
    ShuttingDown,
    NodeLost(String),
}

impl From<Unplaced> for AcquireError {
    fn from(u: Unplaced) -> Self {
        match u {
            Unplaced::ShuttingDown => AcquireError::ShuttingDown,
            Unplaced::NodeLost(n) => AcquireError::NodeLost(n),
        }
    }
}

/// What a start reserved, released when it finishes.
struct Started {
    /// The pool key.
    name: String,
    node_id: String,
    memory_mb: u64,
    cpu: f64,
}

fn new_instance_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("c-{}-{}-{}", &u[..8], &u[8..16], &u[16..28])
}

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
                tracker,
                stopping: std::sync::atomic::AtomicBool::new(false),
                metrics,
                role: Mutex::new(leader::Role::Local),
                role_changed: Notify::new(),
                epoch: Arc::default(),
                local_logs: std::sync::OnceLock::new(),
            }),
        }
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

    /// Claim a slot for one invocation of `f` (its current revision; LATEST or the version it
    /// is): from this process's table, or from the cluster's leader when another controller
    /// leads.
    pub async fn acquire(&self, f: &FunctionRecord) -> Result<Slot, AcquireError> {
        let deadline = Instant::now() + self.inner.cfg.acquire_timeout();
        loop {
            // Registered before the role is read, so a change right after cannot be missed.
            let changed = self.inner.role_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let role = self.inner.role.lock().expect("role lock").clone();
            match role {
                leader::Role::Local | leader::Role::Leading => return self.acquire_local(f).await,
                leader::Role::Following(Some(client)) => return client.acquire(f).await,
                leader::Role::Following(None) => {
                    if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                        return Err(AcquireError::NoLeader("no leader elected yet".into()));
                    }
                }
            }
        }
    }

    /// Claim a slot from this process's own table (the all-in-one server, or the leader).
    pub async fn acquire_local(&self, f: &FunctionRecord) -> Result<Slot, AcquireError> {
        let inner = &self.inner;
        let key = pool_key(f.name.as_str(), f.version);
        let name = key.as_str();
        let deadline = Instant::now() + inner.cfg.acquire_timeout();
        let mut cold_start = false;
        loop {
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
                if f.revision > pool.revision {
                    pool.revision = f.revision;
                    for i in &mut pool.instances {
                        i.state = InstanceState::Draining;
                    }
                }
                let free = pool.instances.iter_mut().find(|i| {
                    i.state == InstanceState::Ready && i.revision == f.revision && i.inflight < i.concurrency
                });
                if let Some(inst) = free {
                    // Instances leave the table with their node (remove_node), so the node is here.
                    let node = inner.nodes.lock().expect("nodes lock").get(&inst.info.node_id).map(|e| e.node.clone());
                    if let Some(node) = node {
                        inst.inflight += 1;
                        inst.last_used = Instant::now();
                        return Ok(Slot { owner: slot::Owner::Local { inner: inner.clone(), function: name.to_string() }, info: inst.info.clone(), node, cold_start });
                    }
                }
                let current = pool.instances.iter().filter(|i| i.state == InstanceState::Ready).count() + pool.starting;
                let concurrency = f.config.instance_concurrency as usize;
                // Start one more only if the places already on their way do not cover the
                // callers waiting (plus this one): a burst starts what it needs, no more.
                if current < inner.cfg.max_instances_per_function && pool.starting * concurrency < pool.waiting + 1 {
                    pool.starting += 1;
                    let demand = Demand { memory_mb: f.config.memory_size.into(), cpu: f.config.cpu };
                    let mut nodes = inner.nodes.lock().expect("nodes lock");
                    let snaps = inner.snapshots(pools, &nodes, name);
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
                    Some(Ok((node_id, entry.node.clone())))
                } else {
                    pool.waiting += 1;
                    // Register as a waiter while still holding the lock, so a slot freed
                    // right after it is released cannot be missed.
                    let mut notified = Box::pin(pool.notify.clone().notified_owned());
                    notified.as_mut().enable();
                    Some(Err(notified))
                }
            };
            match start {
                Some(Ok((node_id, node))) => {
                    cold_start = true;
                    self.start_instance(f, node_id, node).await?;
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
                None => unreachable!(),
            }
        }
    }

    /// Start one instance in a tracked task, so that a caller who goes away mid-start does not
    /// leave the `starting` count wrong: the instance joins the pool idle either way.
    async fn start_instance(&self, f: &FunctionRecord, node_id: String, node: Arc<dyn Node>) -> Result<(), AcquireError> {
        let inner = self.inner.clone();
        let instance_id = new_instance_id();
        let (name, revision) = (f.name.to_string(), f.revision);
        let (memory_mb, cpu, concurrency) = (f.config.memory_size.into(), f.config.cpu, f.config.instance_concurrency);
        let started = Started { name: pool_key(&name, f.version), node_id, memory_mb, cpu };
        let spec = match spec::instance_spec(f, &instance_id, &inner.platform) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.finish_start(started, None);
                return Err(e.into());
            }
        };
        let rm = self.clone();
        tracing::info!(function = %name, version = %f.version_name(), instance = %instance_id, revision, "starting an instance");
        // In the caller's span: the lines of this start belong to the invocation that asked.
        let task = inner.tracker.spawn(async move {
            let t0 = Instant::now();
            match node.start_instance(spec).await {
                Ok(info) => {
                    tracing::info!(instance = %info.instance_id, ms = t0.elapsed().as_millis() as u64, "instance ready");
                    rm.inner.metrics.cold_starts.with_label_values(&[&name]).inc();
                    rm.inner.metrics.cold_start_seconds.with_label_values(&[&name]).observe(t0.elapsed().as_secs_f64());
                    let inst = Instance {
                        info,
                        revision,
                        memory_mb,
                        cpu,
                        concurrency,
                        inflight: 0,
                        state: InstanceState::Ready,
                        last_used: Instant::now(),
                    };
                    rm.finish_start(started, Some(inst)).map_err(AcquireError::from)
                }
                Err(e) => {
                    tracing::warn!(instance = %instance_id, node = %started.node_id, "instance failed to start: {e}");
                    let node_id = started.node_id.clone();
                    let _ = rm.finish_start(started, None);
                    if matches!(e, AgentError::NotDelivered(_)) {
                        rm.suspect(&node_id);
                    }
                    Err(e.into())
                }
            }
        }.in_current_span());
        match task.await {
            Ok(r) => r,
            Err(_) => Err(AcquireError::ShuttingDown),
        }
    }

    /// Account for a finished start: release the node's reservation and add the instance.
    /// Fails with NodeLost when the node left the cluster meanwhile (the instance went with it).
    fn finish_start(&self, s: Started, inst: Option<Instance>) -> Result<(), Unplaced> {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        let node_present = {
            let mut nodes = self.inner.nodes.lock().expect("nodes lock");
            match nodes.get_mut(&s.node_id) {
                Some(e) => {
                    e.starting_memory_mb = e.starting_memory_mb.saturating_sub(s.memory_mb);
                    e.starting_cpu = (e.starting_cpu - s.cpu).max(0.0);
                    if let Some(n) = e.starting_functions.get_mut(&s.name) {
                        *n -= 1;
                        if *n == 0 {
                            e.starting_functions.remove(&s.name);
                        }
                    }
                    true
                }
                None => false,
            }
        };
        if self.inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // stop_all has already emptied the table: this instance would be left running.
            if let Some(inst) = inst {
                self.inner.stop_later(&inst.info);
            }
            return Err(Unplaced::ShuttingDown);
        }
        let pool = pools.entry(s.name).or_default();
        // Saturating: a step-down may have emptied the table while this one started.
        pool.starting = pool.starting.saturating_sub(1);
        pool.notify.notify_waiters();
        match inst {
            Some(_) if !node_present => Err(Unplaced::NodeLost(s.node_id)),
            Some(mut inst) => {
                if inst.revision < pool.revision {
                    // The function changed while this one started.
                    inst.state = InstanceState::Draining;
                }
                pool.instances.push(inst);
                Ok(())
            }
            None => Ok(()),
        }
    }

}
