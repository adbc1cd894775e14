//! The nodes the resource manager places on: one local Docker node in the all-in-one server,
//! the live agents of the cluster's membership (etcd) otherwise. Each entry holds the node's
//! handle, the capacity it announced, whether an operator cordoned it, and the memory/CPU
//! reserved by instances still starting there (so a burst of cold starts cannot overfill it
//! before the instances are in the table).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::placement::NodeSnapshot;
use super::{Instance, InstanceState, ResourceManager, SUSPECT_FOR};
use crate::agent::{InstanceReport, Node};

/// What a node offers to instances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    pub memory_mb: u64,
    pub cpu: f64,
}

pub(super) struct NodeEntry {
    pub node: Arc<dyn Node>,
    pub capacity: Capacity,
    pub cordoned: bool,
    /// Where controllers reach it (empty for the in-process node).
    pub address: String,
    pub starting_memory_mb: u64,
    pub starting_cpu: f64,
    /// Instances starting here, by function: counted when spreading a function's instances,
    /// so a burst of cold starts does not land on one node.
    pub starting_functions: HashMap<String, u32>,
    /// Set when a call could not connect to the agent: the node takes no new instances until
    /// then (its membership lease will tell whether it is really gone).
    pub suspect_until: Option<std::time::Instant>,
    /// Starts in flight on the node (`scheduler.max_starts_per_node`): a burst's further
    /// starts queue here rather than all hitting the node's container engine at once.
    pub starts: Arc<tokio::sync::Semaphore>,
}

/// A node as the admin API and the console show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node_id: String,
    pub address: String,
    pub cordoned: bool,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub cpu_total: f64,
    pub cpu_used: f64,
    pub instances: Vec<super::InstanceView>,
}

/// Per-node usage of the placed instances, then the snapshot placement scores.
pub(super) fn snapshots<'a>(
    nodes: &BTreeMap<String, NodeEntry>,
    function: &str,
    placed: impl Iterator<Item = (&'a str, u64, f64, bool)>,
) -> Vec<NodeSnapshot> {
    let mut snaps: BTreeMap<&str, NodeSnapshot> = nodes
        .iter()
        .map(|(id, e)| {
            (
                id.as_str(),
                NodeSnapshot {
                    node_id: id.clone(),
                    memory_total_mb: e.capacity.memory_mb,
                    memory_used_mb: e.starting_memory_mb,
                    cpu_total: e.capacity.cpu,
                    cpu_used: e.starting_cpu,
                    cordoned: e.cordoned || e.suspect_until.is_some_and(|t| t > std::time::Instant::now()),
                    same_function_instances: e.starting_functions.get(function).copied().unwrap_or(0),
                },
            )
        })
        .collect();
    for (node_id, memory_mb, cpu, same_function) in placed {
        if let Some(s) = snaps.get_mut(node_id) {
            s.memory_used_mb += memory_mb;
            s.cpu_used += cpu;
            s.same_function_instances += u32::from(same_function);
        }
    }
    snaps.into_values().collect()
}

impl ResourceManager {
    /// Take over instances a node's agent reports (a new leader, or a resync finding ones
    /// this table lost track of). They join idle, serving their own revision; an older
    /// revision than the newest known drains. Returns how many were new.
    pub fn adopt(&self, reports: Vec<InstanceReport>) -> usize {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        let mut adopted = 0;
        for r in reports {
            let pool = pools.entry(super::pool_key(&r.function_name, r.version)).or_default();
            if pool.instances.iter().any(|i| i.info.instance_id == r.info.instance_id) {
                continue;
            }
            pool.revision = pool.revision.max(r.revision);
            pool.instances.push(Instance {
                info: r.info,
                revision: r.revision,
                memory_mb: r.memory_mb.into(),
                cpu: r.cpu,
                concurrency: r.concurrency.max(1),
                inflight: 0,
                state: InstanceState::Ready,
                last_used: Instant::now(),
            });
            adopted += 1;
        }
        for p in pools.values_mut() {
            let newest = p.revision;
            for i in p.instances.iter_mut().filter(|i| i.revision < newest) {
                i.state = InstanceState::Draining;
            }
            p.notify.notify_waiters();
        }
        adopted
    }

    /// Where controllers reach a node's agent.
    pub fn node_address(&self, node_id: &str) -> Option<String> {
        self.inner.nodes.lock().expect("nodes lock").get(node_id).map(|e| e.address.clone())
    }

    /// Forget every node and instance without stopping anything (leadership lost: the next
    /// leader adopts them from the agents).
    pub fn forget_all(&self) {
        let mut pools = self.inner.pools.lock().expect("pools lock");
        for p in pools.values() {
            p.notify.notify_waiters();
        }
        pools.clear();
        self.inner.nodes.lock().expect("nodes lock").clear();
    }

    /// A node joins (the local node at start; an agent whose membership appeared). Replaces
    /// an entry of the same id: its instances are forgotten (see [`Self::remove_node`]).
    pub fn add_node(&self, node: Arc<dyn Node>, capacity: Capacity, address: String) {
        let id = node.node_id().to_string();
        self.remove_node(&id);
        tracing::info!(node = %id, memory_mb = capacity.memory_mb, cpu = capacity.cpu, "node joined");
        let entry = NodeEntry { node, capacity, cordoned: false, address, starting_memory_mb: 0, starting_cpu: 0.0, starting_functions: Default::default(), suspect_until: None, starts: Arc::new(tokio::sync::Semaphore::new(self.inner.cfg.max_starts_per_node.max(1))) };
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
