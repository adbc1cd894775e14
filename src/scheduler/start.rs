//! Starting an instance: placed by [`ResourceManager::acquire_local`], started on its node in a
//! tracked task, then accounted for (the node's reservation released, the instance added).

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::{AcquireError, Instance, InstanceState, ResourceManager, spec};
use crate::agent::{AgentError, Node};
use crate::model::FunctionRecord;

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

/// Where a new instance goes: its node, and the node's bound on starts in flight.
pub(super) struct Placed {
    pub node_id: String,
    pub node: Arc<dyn Node>,
    pub starts: Arc<tokio::sync::Semaphore>,
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

impl ResourceManager {
    /// Start one instance in a tracked task, so that a caller who goes away mid-start does not
    /// leave the `starting` count wrong: the instance joins the pool idle either way.
    pub(super) async fn start_instance(&self, f: &FunctionRecord, placed: Placed) -> Result<(), AcquireError> {
        let Placed { node_id, node, starts } = placed;
        let inner = self.inner.clone();
        let instance_id = new_instance_id();
        let (name, revision) = (f.name.to_string(), f.revision);
        let (memory_mb, cpu, concurrency) = (f.config.memory_size.into(), f.config.cpu, f.config.instance_concurrency);
        let started = Started { name: super::pool_key(&name, f.version), node_id, memory_mb, cpu };
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
            // Never closed: the permit always comes.
            let _permit = starts.acquire_owned().await;
            let waited = t0.elapsed();
            if waited.as_millis() > 0 {
                tracing::debug!(ms = waited.as_millis() as u64, "waited for the node's start slots");
            }
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
