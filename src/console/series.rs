//! Time series for the console's monitoring charts, from the two sources that already exist:
//!
//! - **Per-function calls** (invocations, errors, duration percentiles, cold starts) come from
//!   the platform's invocation summaries in the log store (`crate::logstore::summary`): one
//!   record per invocation with its outcome, duration and cold start, kept as long as the logs
//!   and, with a search cluster, gathered from every node. So the charts agree with the logs
//!   page and survive restarts, and percentiles are exact rather than read off histogram
//!   buckets. A window is read up to [`MAX_SUMMARIES`] records (newest first); beyond that the
//!   answer says `truncated`.
//! - **Instances and node capacity** are state, not events: no record holds their history. A
//!   [`Samples`] ring in each controller takes the node table (the one the nodes API shows)
//!   every `console.sample_interval_ms` and keeps the last `console.samples_kept` samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::logstore::{InvocationSummary, LogQuery};

/// Most summaries read for one chart window (10 pages of 1000).
pub const MAX_SUMMARIES: usize = 10_000;
/// Most buckets in one answer.
pub const MAX_BUCKETS: i64 = 1440;

/// One node at one sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSample {
    pub node_id: String,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub cpu_total: f64,
    pub cpu_used: f64,
    pub instances: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Epoch ms.
    pub t: i64,
    pub nodes: Vec<NodeSample>,
    /// Instances per function (every version together) at this sample.
    pub functions: BTreeMap<String, usize>,
}

/// The last samples, oldest first; bounded by `kept`.
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
    kept: usize,
}

impl Samples {
    pub fn new(kept: usize) -> Self {
        Self { ring: Mutex::new(VecDeque::with_capacity(kept.min(4096))), kept: kept.max(1) }
    }

    pub fn push(&self, s: Sample) {
        let mut ring = self.ring.lock().expect("samples lock");
        if ring.len() == self.kept {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Samples taken at or after `from_ms`.
    pub fn since(&self, from_ms: i64) -> Vec<Sample> {
        self.ring.lock().expect("samples lock").iter().filter(|s| s.t >= from_ms).cloned().collect()
    }
}

/// A sample of the node table.
pub fn sample(t: i64, nodes: &[crate::scheduler::nodes::NodeView]) -> Sample {
    let mut functions = BTreeMap::new();
    for i in nodes.iter().flat_map(|n| &n.instances) {
        *functions.entry(i.function_name.clone()).or_insert(0) += 1;
    }
    let nodes = nodes
        .iter()
        .map(|n| NodeSample {
            node_id: n.node_id.clone(),
            memory_total_mb: n.memory_total_mb,
            memory_used_mb: n.memory_used_mb,
            cpu_total: n.cpu_total,
            cpu_used: n.cpu_used,
            instances: n.instances.len(),
        })
        .collect();
    Sample { t, nodes, functions }
}

/// A function's calls per bucket; arrays are column-wise (what the chart library takes).
/// Percentiles and instances are `None` where a bucket has no data.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSeries {
    /// Bucket starts, epoch seconds.
    pub t: Vec<i64>,
    pub invocations: Vec<u64>,
    pub errors: Vec<u64>,
    pub cold_starts: Vec<u64>,
    pub p50_ms: Vec<Option<f64>>,
    pub p95_ms: Vec<Option<f64>>,
    pub p99_ms: Vec<Option<f64>>,
    /// The most instances of the function at any sample in the bucket.
    pub instances: Vec<Option<usize>>,
    /// More summaries than [`MAX_SUMMARIES`] fell in the window: the oldest buckets are short.
    pub truncated: bool,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Bucket `(timestamp ms, summary)` pairs and samples into `[from, to)` by `step_ms`.
pub fn bucket(
    function: &str,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    calls: &[(i64, InvocationSummary)],
    samples: &[Sample],
) -> FunctionSeries {
    let n = ((to_ms - from_ms).max(0) + step_ms - 1) / step_ms;
    let n = n as usize;
    let mut out = FunctionSeries {
        t: (0..n).map(|i| (from_ms + i as i64 * step_ms) / 1000).collect(),
        invocations: vec![0; n],
        errors: vec![0; n],
        cold_starts: vec![0; n],
        instances: vec![None; n],
        ..Default::default()
    };
    let index = |ts: i64| (ts >= from_ms && ts < to_ms).then(|| ((ts - from_ms) / step_ms) as usize);
    let mut durations: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (ts, s) in calls {
        let Some(i) = index(*ts) else { continue };
        out.invocations[i] += 1;
        if s.outcome != "success" {
            out.errors[i] += 1;
        }
        if s.cold_start {
            out.cold_starts[i] += 1;
        }
        durations[i].push(s.duration_ms);
    }
    for d in &mut durations {
        d.sort_by(f64::total_cmp);
    }
    out.p50_ms = durations.iter().map(|d| percentile(d, 50.0)).collect();
    out.p95_ms = durations.iter().map(|d| percentile(d, 95.0)).collect();
    out.p99_ms = durations.iter().map(|d| percentile(d, 99.0)).collect();
    for s in samples {
        if let Some(i) = index(s.t) {
            let n = s.functions.get(function).copied().unwrap_or(0);
            out.instances[i] = Some(out.instances[i].map_or(n, |m| m.max(n)));
        }
    }
    out
}

/// The query for a function's summaries in a window (the platform stream's message prefix;
/// lines a function printed that happen to match are dropped by the caller, having no summary).
pub fn summary_query(function: &str, from_ms: i64, to_ms: i64) -> LogQuery {
    LogQuery {
        function: function.to_string(),
        from_ms: Some(from_ms),
        to_ms: Some(to_ms - 1),
        text: Some("FC Invoke Summary".to_string()),
        limit: 1000,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ms: f64, outcome: &str, cold: bool) -> InvocationSummary {
        InvocationSummary {
            function_name: "f".into(),
            qualifier: "LATEST".into(),
            request_id: "r".into(),
            instance_id: "i".into(),
            node_id: "n".into(),
            invocation_type: "Sync".into(),
            start_time: String::new(),
            end_time: String::new(),
            duration_ms: ms,
            memory_size_mb: 128,
            max_memory_used_mb: None,
            outcome: outcome.into(),
            cold_start: cold,
            error: String::new(),
        }
    }

    #[test]
    fn buckets_counts_and_exact_percentiles() {
        let calls: Vec<(i64, InvocationSummary)> = (1..=100)
            .map(|i| (1_000 + i, call(i as f64, if i % 10 == 0 { "function_error" } else { "success" }, i == 1)))
            .chain([(61_000, call(7.0, "timeout", false)), (500, call(1.0, "success", false))])
            .collect();
        let at = |t, n| Sample { t, nodes: vec![], functions: BTreeMap::from([("f".to_string(), n)]) };
        let samples = vec![at(2_000, 3), at(3_000, 1)];
        let s = bucket("f", 1_000, 121_000, 60_000, &calls, &samples);
        assert_eq!(s.t, vec![1, 61]);
        assert_eq!(s.invocations, vec![100, 1]);
        assert_eq!(s.errors, vec![10, 1]);
        assert_eq!(s.cold_starts, vec![1, 0]);
        assert_eq!(s.p50_ms, vec![Some(50.0), Some(7.0)]);
        assert_eq!(s.p95_ms, vec![Some(95.0), Some(7.0)]);
        assert_eq!(s.p99_ms, vec![Some(99.0), Some(7.0)]);
        assert_eq!(s.instances, vec![Some(3), None]);
    }

    #[test]
    fn empty_buckets_have_no_percentiles() {
        let s = bucket("f", 0, 30_000, 10_000, &[], &[]);
        assert_eq!(s.invocations, vec![0, 0, 0]);
        assert_eq!(s.p99_ms, vec![None, None, None]);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let r = Samples::new(2);
        for t in 1..=3 {
            r.push(Sample { t, nodes: vec![], functions: BTreeMap::new() });
        }
        assert_eq!(r.since(0).iter().map(|s| s.t).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r.since(3).len(), 1);
    }
}
