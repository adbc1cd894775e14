//! Placement: pure and synchronous. A snapshot of nodes and one instance's demand in, a node
//! (or why none fits) out. Best fit by memory, then CPU, so large instances still find room;
//! ties broken by node id so decisions are deterministic.

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    pub node_id: String,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub cpu_total: f64,
    pub cpu_used: f64,
    pub cordoned: bool,
    /// Instances of the function being placed already on this node (to spread them).
    pub same_function_instances: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub memory_mb: u64,
    pub cpu: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ScheduleError {
    #[error("no schedulable node")]
    NoNodes,
    #[error("no node has {memory_mb} MB of memory and {cpu} vCPU free")]
    InsufficientCapacity { memory_mb: u64, cpu: f64 },
}

/// Score, fields in priority order (lower is better); `node_id` last makes ties deterministic.
#[derive(Debug, PartialEq, PartialOrd)]
struct Score<'a> {
    same_function_instances: u32,
    memory_left_mb: u64,
    cpu_left_milli: u64,
    node_id: &'a str,
}

pub fn place(nodes: &[NodeSnapshot], demand: Demand) -> Result<String, ScheduleError> {
    let live: Vec<&NodeSnapshot> = nodes.iter().filter(|n| !n.cordoned).collect();
    if live.is_empty() {
        return Err(ScheduleError::NoNodes);
    }
    live.into_iter()
        .filter_map(|n| {
            let mem_free = n.memory_total_mb.checked_sub(n.memory_used_mb)?;
            let cpu_free = n.cpu_total - n.cpu_used;
            (mem_free >= demand.memory_mb && cpu_free + 1e-9 >= demand.cpu).then(|| Score {
                same_function_instances: n.same_function_instances,
                memory_left_mb: mem_free - demand.memory_mb,
                cpu_left_milli: ((cpu_free - demand.cpu).max(0.0) * 1000.0) as u64,
                node_id: &n.node_id,
            })
        })
        .min_by(|a, b| a.partial_cmp(b).expect("scores are finite"))
        .map(|s| s.node_id.to_string())
        .ok_or(ScheduleError::InsufficientCapacity { memory_mb: demand.memory_mb, cpu: demand.cpu })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, total: u64, used: u64) -> NodeSnapshot {
        NodeSnapshot {
            node_id: id.into(),
            memory_total_mb: total,
            memory_used_mb: used,
            cpu_total: 8.0,
            cpu_used: 0.0,
            cordoned: false,
            same_function_instances: 0,
        }
    }
    const D: Demand = Demand { memory_mb: 512, cpu: 0.5 };

    #[test]
    fn best_fit_by_memory() {
        let nodes = [node("a", 4096, 0), node("b", 4096, 3000), node("c", 4096, 3800)];
        assert_eq!(place(&nodes, D).unwrap(), "b");
    }

    #[test]
    fn spreads_a_function_before_packing() {
        let mut nodes = [node("a", 4096, 3000), node("b", 4096, 0)];
        nodes[0].same_function_instances = 1;
        assert_eq!(place(&nodes, D).unwrap(), "b");
    }

    #[test]
    fn skips_cordoned_and_full_nodes_and_ties_are_deterministic() {
        let mut nodes = [node("b", 4096, 0), node("a", 4096, 0), node("c", 1024, 800)];
        assert_eq!(place(&nodes, D).unwrap(), "a");
        nodes[1].cordoned = true;
        assert_eq!(place(&nodes, D).unwrap(), "b");
        nodes[0].cpu_used = 7.8;
        assert_eq!(place(&nodes, D), Err(ScheduleError::InsufficientCapacity { memory_mb: 512, cpu: 0.5 }));
        assert_eq!(place(&[], D), Err(ScheduleError::NoNodes));
    }
}
