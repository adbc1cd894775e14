//! Prometheus metrics (the prometheus crate), served as text on `GET /metrics`.
//!
//! One [`Metrics`] per server, handed to the parts that count (not a process global: several
//! servers in one test process must not share counters). Labels are bounded: function names
//! (as many as there are functions), route templates (not raw paths), fixed outcome and state
//! names. Point-in-time values (instances by state, queue depth, node capacity) are read when
//! scraped.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Seconds; invocations from a few milliseconds (warm) to minutes.
const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const COLD_START_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

pub struct Metrics {
    registry: Registry,
    /// Invocations by function, kind (sync/async) and outcome.
    pub invocations: IntCounterVec,
    /// Time from asking for a slot to the answer, by function and kind.
    pub invocation_seconds: HistogramVec,
    pub cold_starts: IntCounterVec,
    pub cold_start_seconds: HistogramVec,
    /// API requests by route template, method and status.
    pub api_requests: IntCounterVec,
    /// Async tasks that reached a final state, by function and status.
    pub async_tasks_finished: IntCounterVec,
    pub log_lines_dropped: IntCounter,
    /// Log shipping (Elasticsearch/OpenSearch): lines stored locally and not yet shipped.
    pub log_shipping_backlog: IntGauge,
    pub log_lines_shipped: IntCounter,
    /// Failed `_bulk` requests and failed documents.
    pub log_shipping_errors: IntCounter,
    /// Unshipped lines deleted anyway because the local store hit `logs.max_lines`.
    pub log_lines_unshipped_dropped: IntCounter,
    pub instances: IntGaugeVec,
    pub async_queue_depth: IntGauge,
    pub async_queue_oldest_age: prometheus::Gauge,
    pub node_memory_bytes: IntGaugeVec,
    /// Instances that went away with their node (agent lost, lease expired).
    pub instances_lost: IntCounter,
    /// Idle pre-started cells of this node's warm pool.
    pub warm_pool_cells: IntGauge,
    /// Starts of pool-eligible instances, by whether a cell was there (`hit`) or not (`miss`).
    pub warm_pool_handoffs: IntCounterVec,
    /// Timer trigger ticks by function and outcome: `fired`, `duplicate` (fired before: refused
    /// by its task id), `skipped` (missed, by the missed-tick policy), `failed` (queue or store
    /// unavailable; tried again).
    pub timer_firings: IntCounterVec,
    /// Kafka trigger batches by function, trigger and outcome: `succeeded`, `dead_lettered`,
    /// `dropped` (past the last retry under errorsTolerance ALL, without or with a dead-letter
    /// topic), `abandoned` (not settled when the trigger stopped here: read again).
    pub kafka_trigger_batches: IntCounterVec,
    /// The same, counted in messages.
    pub kafka_trigger_messages: IntCounterVec,
    /// Failed Kafka trigger deliveries tried again, by cause: `function_error` (uses up a
    /// retry), `platform` (does not), `blocked` (past the last retry under NONE),
    /// `dead_letter` (producing to the dead-letter topic failed).
    pub kafka_trigger_retries: IntCounterVec,
    /// Messages of a Kafka trigger's partitions held here between the first unsettled one and
    /// the partition's end.
    pub kafka_trigger_lag: IntGaugeVec,
    /// 1 while a Kafka trigger's stream is blocked (a batch past its last retry under NONE).
    pub kafka_trigger_blocked: IntGaugeVec,
}

/// Outcome label of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    FunctionError,
    Timeout,
    OutOfMemory,
    Crashed,
    Throttled,
    StartFailed,
    PlatformError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FunctionError => "function_error",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::Crashed => "crashed",
            Outcome::Throttled => "throttled",
            Outcome::StartFailed => "start_failed",
            Outcome::PlatformError => "platform_error",
        }
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let log_lines_dropped =
            IntCounter::new("nubis_log_lines_dropped_total", "Log lines dropped because the log store's buffer was full").expect("valid metric");
        r.register(Box::new(log_lines_dropped.clone())).expect("unique metric");
        let int_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let instances_lost = int_counter("nubis_instances_lost_total", "Instances lost with their node (agent gone, membership lease expired)");
        let log_lines_shipped = int_counter("nubis_log_lines_shipped_total", "Log lines shipped to Elasticsearch/OpenSearch");
        let log_shipping_errors =
            int_counter("nubis_log_shipping_errors_total", "Failed log shipping requests and documents (retried unless permanent)");
        let log_lines_unshipped_dropped = int_counter(
            "nubis_log_lines_unshipped_dropped_total",
            "Log lines deleted from the local store before they were shipped (logs.max_lines reached)",
        );
        let log_shipping_backlog =
            IntGauge::new("nubis_log_shipping_backlog_lines", "Log lines stored locally and not yet shipped").expect("valid metric");
        r.register(Box::new(log_shipping_backlog.clone())).expect("unique metric");
        let instances = IntGaugeVec::new(Opts::new("nubis_instances", "Function instances by state"), &["state"]).expect("valid metric");
        r.register(Box::new(instances.clone())).expect("unique metric");
        let async_queue_depth =
            IntGauge::new("nubis_async_queue_depth", "Async invocations queued and not yet finished").expect("valid metric");
        r.register(Box::new(async_queue_depth.clone())).expect("unique metric");
        let async_queue_oldest_age = prometheus::Gauge::new(
            "nubis_async_queue_oldest_age_seconds",
            "Age of the oldest unfinished async invocation (0 when the queue is empty; embedded queue only)",
        )
        .expect("valid metric");
        r.register(Box::new(async_queue_oldest_age.clone())).expect("unique metric");
        let node_memory_bytes =
            IntGaugeVec::new(Opts::new("nubis_node_memory_bytes", "Memory this node offers to instances, and how much is placed"), &["kind"])
                .expect("valid metric");
        r.register(Box::new(node_memory_bytes.clone())).expect("unique metric");
        let warm_pool_cells = IntGauge::new("nubis_warm_pool_cells", "Idle pre-started runtime cells on this node").expect("valid metric");
        r.register(Box::new(warm_pool_cells.clone())).expect("unique metric");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let kafka_trigger_lag =
            gauge("nubis_kafka_trigger_lag_messages", "Messages of a Kafka trigger not yet settled or read", &["function", "trigger"]);
        let kafka_trigger_blocked =
            gauge("nubis_kafka_trigger_blocked", "1 while a Kafka trigger's stream is blocked by a failing batch", &["function", "trigger"]);
        Self {
            kafka_trigger_batches: counter(
                &r,
                "nubis_kafka_trigger_batches_total",
                "Kafka trigger batches by outcome",
                &["function", "trigger", "outcome"],
            ),
            kafka_trigger_messages: counter(
                &r,
                "nubis_kafka_trigger_messages_total",
                "Kafka trigger messages by their batch's outcome",
                &["function", "trigger", "outcome"],
            ),
            kafka_trigger_retries: counter(
                &r,
                "nubis_kafka_trigger_retries_total",
                "Kafka trigger deliveries tried again, by cause",
                &["function", "trigger", "cause"],
            ),
            kafka_trigger_lag,
            kafka_trigger_blocked,
            instances_lost,
            warm_pool_cells,
            warm_pool_handoffs: counter(
                &r,
                "nubis_warm_pool_handoffs_total",
                "Starts of instances a warm-pool cell can serve, by whether one was ready",
                &["result"],
            ),
            timer_firings: counter(&r, "nubis_timer_firings_total", "Timer trigger ticks by outcome", &["function", "outcome"]),
            invocations: counter(&r, "nubis_invocations_total", "Function invocations by outcome", &["function", "kind", "outcome"]),
            invocation_seconds: histogram(
                &r,
                "nubis_invocation_duration_seconds",
                "Invocation duration, including any wait for a slot and a cold start",
                &["function", "kind"],
                DURATION_BUCKETS,
            ),
            cold_starts: counter(&r, "nubis_cold_starts_total", "Instances started for a waiting call", &["function"]),
            cold_start_seconds: histogram(
                &r,
                "nubis_cold_start_duration_seconds",
                "Time to start an instance until it is ready (and initialized)",
                &["function"],
                COLD_START_BUCKETS,
            ),
            api_requests: counter(&r, "nubis_api_requests_total", "API requests by route, method and status", &["route", "method", "status"]),
            async_tasks_finished: counter(
                &r,
                "nubis_async_tasks_finished_total",
                "Async tasks that reached a final state",
                &["function", "status"],
            ),
            log_lines_dropped,
            log_shipping_backlog,
            log_lines_shipped,
            log_shipping_errors,
            log_lines_unshipped_dropped,
            instances,
            async_queue_depth,
            async_queue_oldest_age,
            node_memory_bytes,
            registry: r,
        }
    }
}

impl Metrics {
    pub fn invocation(&self, function: &str, kind: &str, outcome: Outcome, seconds: f64) {
        self.invocations.with_label_values(&[function, kind, outcome.as_str()]).inc();
        self.invocation_seconds.with_label_values(&[function, kind]).observe(seconds);
    }

    /// The Prometheus text format of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}
