//! Resource manager: the instance table and the slots it hands out.
//!
//! A slot is one of an instance's `instanceConcurrency` places. [`ResourceManager::acquire`]
//! takes a free slot on a warm instance of the function's current revision (no I/O: one short
//! lock), or starts a new instance when the callers waiting outnumber the places that
//! instances already starting will offer, up to `max_instances_per_function`; past that it
//! waits for a slot until `acquire_timeout`. A [`Slot`] frees its place when dropped, exactly
//! once. The reaper stops instances idle longer than the keep-alive, and retired ones (their
//! function was updated or deleted) once they finish what they are serving.

pub mod nodes;
pub mod placement;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentError, InstanceInfo, Node};
use crate::config::SchedulerConfig;
use crate::metrics::Metrics;
use crate::model::FunctionRecord;
use nodes::{Capacity, NodeEntry, NodeView};
use placement::{Demand, ScheduleError};
use spec::Platform;

#[derive(Debug, thiserror::Error)]
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub instance_id: String,
    pub function_name: String,
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
}

#[derive(Clone)]
pub struct ResourceManager {
    inner: Arc<Inner>,
}

/// A claimed place on an instance. Dropping it frees the place.
pub struct Slot {
    inner: Arc<Inner>,
    function: String,
    info: InstanceInfo,
    node: Arc<dyn Node>,
    /// This caller waited for a new instance to start.
    pub cold_start: bool,
}

impl Slot {
    pub fn instance(&self) -> &InstanceInfo {
        &self.info
    }

    /// The node that hosts the instance.
    pub fn node(&self) -> &Arc<dyn Node> {
        &self.node
    }

    /// The instance is broken (timed out, crashed): take it out of service and stop it.
    pub fn discard(self) {
        let removed = {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            pools.get_mut(&self.function).and_then(|p| {
                let i = p.instances.iter().position(|i| i.info.instance_id == self.info.instance_id)?;
                p.notify.notify_waiters();
                Some(p.instances.swap_remove(i))
            })
        };
        if let Some(inst) = removed {
            self.inner.stop_later(&inst.info);
        }
        // Drop runs next and finds the instance gone: nothing more to free.
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        if let Some(pool) = pools.get_mut(&self.function)
            && let Some(inst) = pool.instances.iter_mut().find(|i| i.info.instance_id == self.info.instance_id)
        {
            inst.inflight -= 1;
            inst.last_used = Instant::now();
            pool.notify.notify_waiters();
        }
    }
}

/// Counts a caller as waiting for as long as it exists, even if the caller is cancelled.
struct Waiting<'a> {
    inner: &'a Inner,
    function: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.inner.pools.lock().expect("pools lock").get_mut(self.function) {
            p.waiting -= 1;
        }
    }
}

/// How long a node whose agent refused a connection takes no new instances: about the default
/// membership lease TTL, by which time a dead node is gone from the table anyway.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

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
    /// Stop an instance in the background, on its node if the node is still a member.
    fn stop_later(self: &Arc<Self>, info: &InstanceInfo) {
        let node = self.nodes.lock().expect("nodes lock").get(&info.node_id).map(|e| e.node.clone());
        if let Some(node) = node {
            let id = info.instance_id.clone();
            self.tracker.spawn(async move { node.stop_instance(&id).await });
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
            }),
        }
    }

    /// A node joins (the local node at start; an agent whose membership appeared). Replaces
    /// an entry of the same id: its instances are forgotten (see [`Self::remove_node`]).
    pub fn add_node(&self, node: Arc<dyn Node>, capacity: Capacity, address: String) {
        let id = node.node_id().to_string();
        self.remove_node(&id);
        tracing::info!(node = %id, memory_mb = capacity.memory_mb, cpu = capacity.cpu, "node joined");
        let entry = NodeEntry { node, capacity, cordoned: false, address, starting_memory_mb: 0, starting_cpu: 0.0, starting_functions: Default::default(), suspect_until: None };
        self.inner.nodes.lock().expect("nodes lock").insert(id, entry);
        self.notify_all();
    }

    /// A node left (its membership lease expired, or it re-joined afresh): its instances are
    /// lost. They leave the table at once, so new calls start replacements on live nodes;
    /// calls in flight there fail on their own (their connection to the agent breaks or times
    /// out) with a retriable platform error. Returns how many instances were lost.
    pub fn remove_node(&self, node_id: &str) -> usize {
        let mut lost = 0;
        {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            for p in pools.values_mut() {
                let before = p.instances.len();
                p.instances.retain(|i| i.info.node_id != node_id);
                lost += before - p.instances.len();
            }
            if self.inner.nodes.lock().expect("nodes lock").remove(node_id).is_none() {
                return 0;
            }
        }
        tracing::warn!(node = %node_id, lost, "node left; its instances are lost");
        self.inner.metrics.instances_lost.inc_by(lost as u64);
        self.notify_all();
        lost
    }

    /// Cordon (no new instances) or uncordon a node. False if there is no such node.
    pub fn set_cordoned(&self, node_id: &str, cordoned: bool) -> bool {
        let found = self.inner.nodes.lock().expect("nodes lock").get_mut(node_id).map(|e| e.cordoned = cordoned).is_some();
        if found {
            tracing::info!(node = %node_id, cordoned, "node cordon changed");
            self.notify_all();
        }
        found
    }

    /// A call could not connect to this node's agent: place nothing there for a lease TTL
    /// (membership decides whether it is gone) and retire its instances, so the next calls go
    /// to other nodes. The reaper stops the retired instances if the agent answers again.
    pub fn suspect(&self, node_id: &str) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        let found = {
            let mut nodes = self.inner.nodes.lock().expect("nodes lock");
            nodes.get_mut(node_id).map(|e| e.suspect_until = Some(Instant::now() + SUSPECT_FOR)).is_some()
        };
        if !found {
            return;
        }
        tracing::warn!(node = %node_id, "node agent unreachable: avoiding the node");
        for p in pools.values_mut() {
            for i in p.instances.iter_mut().filter(|i| i.info.node_id == node_id) {
                i.state = InstanceState::Draining;
            }
            p.notify.notify_waiters();
        }
    }

    /// Cordon a node and retire its instances: they finish what they serve and are stopped;
    /// new calls start instances elsewhere. Returns how many were retired, or None if there is
    /// no such node.
    pub fn drain(&self, node_id: &str) -> Option<usize> {
        if !self.set_cordoned(node_id, true) {
            return None;
        }
        let mut n = 0;
        let mut pools = self.inner.pools.lock().expect("pools lock");
        for p in pools.values_mut() {
            for i in p.instances.iter_mut().filter(|i| i.info.node_id == node_id && i.state == InstanceState::Ready) {
                i.state = InstanceState::Draining;
                n += 1;
            }
            p.notify.notify_waiters();
        }
        Some(n)
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        let instances = self.instances();
        let pools = self.inner.pools.lock().expect("pools lock");
        let nodes = self.inner.nodes.lock().expect("nodes lock");
        let snaps = self.inner.snapshots(&pools, &nodes, "");
        snaps
            .into_iter()
            .map(|s| {
                let e = &nodes[&s.node_id];
                NodeView {
                    address: e.address.clone(),
                    cordoned: e.cordoned,
                    memory_total_mb: s.memory_total_mb,
                    memory_used_mb: s.memory_used_mb,
                    cpu_total: s.cpu_total,
                    cpu_used: s.cpu_used,
                    instances: instances.iter().filter(|i| i.node_id == s.node_id).cloned().collect(),
                    node_id: s.node_id,
                }
            })
            .collect()
    }

    fn notify_all(&self) {
        for p in self.inner.pools.lock().expect("pools lock").values() {
            p.notify.notify_waiters();
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

    /// Claim a slot for one invocation of `f` (its current revision).
    pub async fn acquire(&self, f: &FunctionRecord) -> Result<Slot, AcquireError> {
        let inner = &self.inner;
        let name = f.name.as_str();
        let deadline = Instant::now() + inner.cfg.acquire_timeout();
        let mut cold_start = false;
        loop {
            if inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(AcquireError::ShuttingDown);
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
                        return Ok(Slot { inner: inner.clone(), function: name.to_string(), info: inst.info.clone(), node, cold_start });
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
        let started = Started { name: name.clone(), node_id, memory_mb, cpu };
        let spec = match spec::instance_spec(f, &instance_id, &inner.platform) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.finish_start(started, None);
                return Err(e.into());
            }
        };
        let rm = self.clone();
        let task = inner.tracker.spawn(async move {
            let t0 = Instant::now();
            match node.start_instance(spec).await {
                Ok(info) => {
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
                    let node_id = started.node_id.clone();
                    let _ = rm.finish_start(started, None);
                    if matches!(e, AgentError::NotDelivered(_)) {
                        rm.suspect(&node_id);
                    }
                    Err(e.into())
                }
            }
        });
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
        pool.starting -= 1;
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

    /// Take every instance of a function out of service (update or delete); the reaper stops
    /// them once idle.
    pub fn retire(&self, function: &str) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        if let Some(p) = pools.get_mut(function) {
            for i in &mut p.instances {
                i.state = InstanceState::Draining;
            }
        }
    }

    /// One pass of the reaper; returns how many instances it stopped. Public so tests can
    /// drive it.
    pub fn reap_once(&self) -> usize {
        let keep_alive = self.inner.cfg.idle_keep_alive();
        let mut victims = Vec::new();
        {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            for pool in pools.values_mut() {
                pool.instances.retain(|i| {
                    let idle = i.inflight == 0;
                    let stop = idle && (i.state == InstanceState::Draining || i.last_used.elapsed() >= keep_alive);
                    if stop {
                        victims.push(i.info.clone());
                    }
                    !stop
                });
            }
            pools.retain(|_, p| !p.instances.is_empty() || p.starting > 0 || p.waiting > 0);
        }
        let n = victims.len();
        for info in victims {
            tracing::info!(instance = %info.instance_id, node = %info.node_id, "stopping idle instance");
            self.inner.stop_later(&info);
        }
        n
    }

    /// Run the reaper until cancelled.
    pub fn spawn_reaper(&self, cancel: CancellationToken) {
        let rm = self.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(rm.inner.cfg.reap_interval());
            loop {
                tokio::select! {
                    _ = tick.tick() => { rm.reap_once(); }
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }

    pub fn instances(&self) -> Vec<InstanceView> {
        let pools = self.inner.pools.lock().expect("pools lock");
        pools
            .iter()
            .flat_map(|(name, p)| p.instances.iter().map(move |i| (name, i)))
            .map(|(name, i)| InstanceView {
                instance_id: i.info.instance_id.clone(),
                function_name: name.clone(),
                node_id: i.info.node_id.clone(),
                revision: i.revision,
                inflight: i.inflight,
                state: i.state,
            })
            .collect()
    }

    /// Stop every instance (shutdown). Waits for the stops.
    pub async fn stop_all(&self) {
        let all: Vec<InstanceInfo> = {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            self.inner.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            pools.drain().flat_map(|(_, p)| p.instances.into_iter().map(|i| i.info)).collect()
        };
        let nodes: BTreeMap<String, Arc<dyn Node>> =
            self.inner.nodes.lock().expect("nodes lock").iter().map(|(id, e)| (id.clone(), e.node.clone())).collect();
        let stops = all.iter().filter_map(|i| Some(nodes.get(&i.node_id)?.stop_instance(&i.instance_id)));
        futures_util::future::join_all(stops).await;
    }
}

/// Memory and CPUs this node offers to instances: 90 % of RAM (the rest for the OS and
/// Nubis), and 4 vCPU per core: CPU is a quota that idle instances do not use, so it is
/// overcommitted, while memory is a hard limit and is not.
pub fn host_capacity() -> Capacity {
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(4 << 20);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Capacity { memory_mb: mem_kb / 1024 * 9 / 10, cpu: cpus * 4.0 }
}
