//! Taking instances out of service: retiring a function's instances, the idle reaper, and
//! stopping everything at shutdown; plus the read-only instance list.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{InstanceState, InstanceView, ResourceManager};
use crate::agent::{InstanceInfo, Node};

impl ResourceManager {
    /// Callers waiting for a slot of a pool (tests, diagnostics). `key` is a
    /// [`super::pool_key`].
    pub fn waiting(&self, key: &str) -> usize {
        self.inner.pools.lock().expect("pools lock").get(key).map_or(0, |p| p.waiting)
    }

    /// Take every instance of one pool out of service (LATEST updated, a version deleted); the
    /// reaper stops them once idle. `key` is a [`super::pool_key`].
    ///
    /// `revision`: the pool's revision from now on (an update), or, for a delete, a revision
    /// later than any it had (revisions are times: a function created again later gets a later
    /// one). Callers still holding an older record read the current one instead of starting
    /// the old revision again (and a deleted function's get FunctionNotFound).
    pub fn retire(&self, key: &str, revision: i64) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        if let Some(p) = pools.get_mut(key) {
            p.revision = p.revision.max(revision);
            for i in &mut p.instances {
                i.state = InstanceState::Draining;
            }
            p.notify.notify_waiters();
        }
    }

    /// Take the instances of a function and of all its versions out of service (delete), with
    /// `revision` later than any they had (see [`Self::retire`]).
    pub fn retire_function(&self, function: &str, revision: i64) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        for (key, p) in pools.iter_mut() {
            if super::pools::split_pool_key(key).0 == function {
                p.revision = p.revision.max(revision);
                for i in &mut p.instances {
                    i.state = InstanceState::Draining;
                }
                p.notify.notify_waiters();
            }
        }
    }

    /// One pass of the reaper; returns how many instances it stopped. Public so tests can
    /// drive it.
    pub fn reap_once(&self) -> usize {
        let keep_alive = self.inner.cfg.idle_keep_alive();
        let mut victims = Vec::new();
        let exited: Vec<String> = {
            let nodes = self.inner.nodes.lock().expect("nodes lock");
            nodes.values().flat_map(|e| e.node.take_exited()).collect()
        };
        {
            let mut pools = self.inner.pools.lock().expect("pools lock");
            for pool in pools.values_mut() {
                // Dead instances leave the table (a call still in one fails and discards it);
                // their pools start replacements on demand, or the provisioner does.
                for i in pool.instances.iter_mut().filter(|i| exited.contains(&i.info.instance_id)) {
                    i.state = InstanceState::Draining;
                    pool.notify.notify_waiters();
                }
                // Provisioned instances stay however idle; the least recently used go first.
                let mut ready = pool.instances.iter().filter(|i| i.state == InstanceState::Ready).count();
                let provisioned = pool.provisioned;
                pool.instances.sort_by_key(|i| i.last_used);
                pool.instances.retain(|i| {
                    let idle = i.inflight == 0;
                    let stop = idle
                        && (i.state == InstanceState::Draining || (i.last_used.elapsed() >= keep_alive && ready > provisioned));
                    if stop {
                        if i.state == InstanceState::Ready {
                            ready -= 1;
                        }
                        victims.push(i.info.clone());
                    }
                    !stop
                });
            }
            pools.retain(|_, p| !p.instances.is_empty() || p.starting > 0 || p.waiting > 0 || p.provisioned > 0);
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
            .flat_map(|(key, p)| p.instances.iter().map(move |i| (super::pools::split_pool_key(key), i)))
            .map(|((name, version), i)| InstanceView {
                instance_id: i.info.instance_id.clone(),
                function_name: name.to_string(),
                version,
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
