//! The nodes the resource manager places on: one local Docker node in the all-in-one server,
//! the live agents of the cluster's membership (etcd) otherwise. Each entry holds the node's
//! handle, the capacity it announced, whether an operator cordoned it, and the memory/CPU
//! reserved by instances still starting there (so a burst of cold starts cannot overfill it
//! before the instances are in the table).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::placement::NodeSnapshot;
use crate::agent::Node;

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
}

/// A node as the admin API and the console show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
