//! Invocation logs: every line an instance prints, plus one platform summary per invocation,
//! with function, time, request id and instance.
//!
//! - [`local`]: the node's own store, `<data_dir>/logs.db` (SQLite): written through a bounded
//!   channel so invocations never wait for the disk; retention by age and count.
//! - [`shipper`]: tails the local store into Elasticsearch/OpenSearch, exactly once.
//! - [`search`]: GetFunctionLogs' query, on the local store or, when a cluster is configured,
//!   on the cluster (in a cluster of nodes every node ships there; a node's store has only its
//!   own lines).
//! - [`cluster`]: the client of the search cluster and its index template.
//! - [`summary`]: the per-invocation platform record.

pub mod cluster;
pub mod local;
pub mod search;
pub mod shipper;
pub mod summary;

use serde::Serialize;
use utoipa::ToSchema;

pub use local::LogStore;
pub use search::LogSearch;
pub use summary::InvocationSummary;

/// A line on its way into the store.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the agent read the line, in Unix milliseconds.
    pub ts_ms: i64,
    pub function_name: String,
    pub instance_id: String,
    /// Empty for lines printed outside any invocation (start-up output).
    pub request_id: String,
    pub stream: &'static str,
    pub message: String,
    /// Set on the platform's per-invocation record (stream `platform`).
    pub summary: Option<InvocationSummary>,
}

/// A stored line, as the query API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredLine {
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub time: String,
    pub function_name: String,
    pub instance_id: String,
    pub request_id: String,
    /// `stdout`, `stderr`, or `platform` (the invocation summary).
    pub stream: String,
    pub message: String,
    /// The structured invocation summary, on `platform` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<InvocationSummary>,
    /// Position in the local store: newer lines have larger ids.
    #[serde(skip)]
    pub id: i64,
}

/// What to look for; every filter is optional but the function.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub function: String,
    pub request_id: Option<String>,
    pub instance_id: Option<String>,
    /// Epoch ms, inclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Case-sensitive substring of the message.
    pub text: Option<String>,
    /// Local store: only lines older than this id (the previous page's last id).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// One page of a query, newest first; `next` is the cursor of the following page (opaque: the
/// API wraps it in a nextToken).
#[derive(Debug)]
pub struct LogPage {
    pub lines: Vec<StoredLine>,
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("log store unavailable: {0}")]
    Local(#[from] sqlx::Error),
    #[error("log search unavailable: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// A page cursor this source did not issue (the caller's mistake).
    #[error("not a page cursor of this log source")]
    BadCursor,
}

/// Epoch ms as the RFC 3339 UTC string the API shows.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
