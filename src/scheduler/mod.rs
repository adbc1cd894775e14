//! Resource manager: the instance table and the slots it hands out.
//!
//! A slot is one of an instance's `instanceConcurrency` places. [`ResourceManager::acquire`]
//! takes a free slot on a warm instance of the function's current revision (no I/O: one short
//! lock), or starts a new instance when the callers waiting outnumber the places that
//! instances already starting will offer, up to `max_instances_per_function`; past that it
//! waits for a slot until `acquire_timeout`. A [`Slot`] frees its place when dropped, exactly
//! once. The reaper stops instances idle longer than the keep-alive, and retired ones (their
//! function was updated or deleted) once they finish what they are serving.

pub mod placement;
pub mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agent::{AgentError, InstanceInfo, Node};
use crate::config::SchedulerConfig;
use crate::metrics::Metrics;
use crate::model::FunctionRecord;
use placement::{Demand, NodeSnapshot, ScheduleError};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub instance_id: String,
    pub function_name: String,
    pub revision: i64,
    pub inflight: u32,
    pub state: InstanceState,
}

struct Inner {
    node: Arc<dyn Node>,
    cfg: SchedulerConfig,
    platform: Platform,
    node_memory_mb: u64,
    node_cpu: f64,
    pools: Mutex<HashMap<String, Pool>>,
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
    /// This caller waited for a new instance to start.
    pub cold_start: bool,
}

impl Slot {
    pub fn instance(&self) -> &InstanceInfo {
        &self.info
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
            self.inner.stop_later(inst.info.instance_id);
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

fn new_instance_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("c-{}-{}-{}", &u[..8], &u[8..16], &u[16..28])
}

impl Inner {
    /// In the caller's span: a discard's stop is part of the invocation that failed.
    fn stop_later(self: &Arc<Self>, instance_id: String) {
        let node = self.node.clone();
        self.tracker.spawn(async move { node.stop_instance(&instance_id).await }.in_current_span());
    }

    fn snapshot(&self, pools: &HashMap<String, Pool>, function: &str) -> NodeSnapshot {
        let all = pools.values().flat_map(|p| p.instances.iter());
        let (mut mem, mut cpu) = (0u64, 0f64);
        for i in all {
            mem += i.memory_mb;
            cpu += i.cpu;
        }
        NodeSnapshot {
            node_id: self.node.node_id().to_string(),
            memory_total_mb: self.node_memory_mb,
            memory_used_mb: mem,
            cpu_total: self.node_cpu,
            cpu_used: cpu,
            cordoned: false,
            same_function_instances: pools.get(function).map_or(0, |p| p.instances.len() as u32),
        }
    }
}

impl ResourceManager {
    pub fn new(node: Arc<dyn Node>, cfg: SchedulerConfig, platform: Platform, tracker: TaskTracker, metrics: Arc<Metrics>) -> Self {
        let (node_memory_mb, node_cpu) = host_capacity();
        Self {
            inner: Arc::new(Inner {
                node,
                cfg,
                platform,
                node_memory_mb,
                node_cpu,
                pools: Mutex::new(HashMap::new()),
                tracker,
                stopping: std::sync::atomic::AtomicBool::new(false),
                metrics,
            }),
        }
    }

    pub fn node(&self) -> &Arc<dyn Node> {
        &self.inner.node
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
        m.node_memory_bytes.with_label_values(&["capacity"]).set((self.inner.node_memory_mb << 20) as i64);
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
                let snapshot = inner.snapshot(&pools, name);
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
                    inst.inflight += 1;
                    inst.last_used = Instant::now();
                    return Ok(Slot { inner: inner.clone(), function: name.to_string(), info: inst.info.clone(), cold_start });
                }
                let current = pool.instances.iter().filter(|i| i.state == InstanceState::Ready).count() + pool.starting;
                let concurrency = f.config.instance_concurrency as usize;
                // Start one more only if the places already on their way do not cover the
                // callers waiting (plus this one): a burst starts what it needs, no more.
                if current < inner.cfg.max_instances_per_function && pool.starting * concurrency < pool.waiting + 1 {
                    placement::place(&[snapshot], Demand { memory_mb: f.config.memory_size.into(), cpu: f.config.cpu })
                        .inspect_err(|e| tracing::info!(function = name, "no room for a new instance: {e}"))?;
                    pool.starting += 1;
                    Some(Ok(()))
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
                Some(Ok(())) => {
                    cold_start = true;
                    self.start_instance(f).await?;
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
    async fn start_instance(&self, f: &FunctionRecord) -> Result<(), AcquireError> {
        let inner = self.inner.clone();
        let instance_id = new_instance_id();
        let spec = match spec::instance_spec(f, &instance_id, &inner.platform) {
            Ok(s) => s,
            Err(e) => {
                self.finish_start(f.name.as_str(), None);
                return Err(e.into());
            }
        };
        let (name, revision) = (f.name.to_string(), f.revision);
        let (memory_mb, cpu, concurrency) = (f.config.memory_size.into(), f.config.cpu, f.config.instance_concurrency);
        let rm = self.clone();
        tracing::info!(function = %name, instance = %instance_id, revision, "starting an instance");
        // In the caller's span: the lines of this start belong to the invocation that asked.
        let task = inner.tracker.spawn(async move {
            let t0 = Instant::now();
            let started = rm.inner.node.start_instance(spec).await;
            match started {
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
                    rm.finish_start(&name, Some(inst));
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(instance = %instance_id, "instance failed to start: {e}");
                    rm.finish_start(&name, None);
                    Err(e)
                }
            }
        }.in_current_span());
        match task.await {
            Ok(r) => r.map_err(AcquireError::from),
            Err(_) => Err(AcquireError::ShuttingDown),
        }
    }

    fn finish_start(&self, name: &str, inst: Option<Instance>) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        if self.inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // stop_all has already emptied the table: this instance would be left running.
            if let Some(inst) = inst {
                self.inner.stop_later(inst.info.instance_id);
            }
            return;
        }
        let pool = pools.entry(name.to_string()).or_default();
        pool.starting -= 1;
        if let Some(mut inst) = inst {
            if inst.revision < pool.revision {
                // The function changed while this one started.
                inst.state = InstanceState::Draining;
            }
            pool.instances.push(inst);
        }
        pool.notify.notify_waiters();
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
                        victims.push(i.info.instance_id.clone());
                    }
                    !stop
                });
            }
            pools.retain(|_, p| !p.instances.is_empty() || p.starting > 0 || p.waiting > 0);
        }
        let n = victims.len();
        for id in victims {
            tracing::info!(instance = %id, "stopping idle instance");
            self.inner.stop_later(id);
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
            .values()
            .flat_map(|p| p.instances.iter())
            .map(|i| InstanceView {
                instance_id: i.info.instance_id.clone(),
                function_name: String::new(),
                revision: i.revision,
                inflight: i.inflight,
                state: i.state,
            })
            .collect()
    }

    /// Stop every instance (shutdown). Waits for the stops.
    pub async fn stop_all(&self) {
        let all: Vec<String> = {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            self.inner.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            pools.drain().flat_map(|(_, p)| p.instances.into_iter().map(|i| i.info.instance_id)).collect()
        };
        let node = &self.inner.node;
        futures_util::future::join_all(all.iter().map(|id| node.stop_instance(id))).await;
    }
}

/// Memory and CPUs this node offers to instances: 90 % of RAM (the rest for the OS and
/// Nubis), and 4 vCPU per core: CPU is a quota that idle instances do not use, so it is
/// overcommitted, while memory is a hard limit and is not.
fn host_capacity() -> (u64, f64) {
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(4 << 20);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (mem_kb / 1024 * 9 / 10, cpus * 4.0)
}
