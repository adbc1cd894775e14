//! The platform's summary of one invocation: one record per invocation, stored with the
//! function's own lines (stream `platform`, same request id), so GetFunctionLogs and the
//! search cluster show what happened and what it cost next to what the function printed. The
//! structured fields travel with the line (column `summary` in logs.db, object `summary` in the
//! shipped document); the message says the same for people reading plain logs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::LogLine;

/// The stream name of platform records.
pub const STREAM: &str = "platform";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvocationSummary {
    pub function_name: String,
    /// The qualifier invoked; only `LATEST` exists today.
    pub qualifier: String,
    pub request_id: String,
    /// Empty when no instance served it (throttled, no capacity, start failed).
    pub instance_id: String,
    /// The node that ran the instance (for an invocation without one: the node that refused it).
    pub node_id: String,
    /// `Sync` or `Async`.
    pub invocation_type: String,
    /// RFC 3339 UTC, ms: when the invocation asked for a slot, and when its answer was in.
    pub start_time: String,
    pub end_time: String,
    /// `end - start`, the same span as the `x-fc-invocation-duration` header: any wait for a
    /// slot and a cold start are included.
    pub duration_ms: f64,
    /// The function's `memorySize`.
    #[serde(rename = "memorySizeMB")]
    pub memory_size_mb: u32,
    /// The instance's peak memory use since it started, read from Docker after this invocation
    /// (cgroup v1 `max_usage`, page cache included). It is the instance's high-water mark
    /// over every invocation it served so far, not this invocation's alone: an instance that
    /// served a bigger event earlier reports that peak. Where the engine reports no peak
    /// (cgroup v2), the usage read after the invocation (a lower bound). For an out-of-memory
    /// kill, the memory size (the limit was reached). None when nothing could be read (no
    /// instance, or it was gone).
    #[serde(rename = "maxMemoryUsedMB")]
    pub max_memory_used_mb: Option<f64>,
    /// `success`, `function_error`, `timeout`, `out_of_memory`, `crashed`, `throttled`,
    /// `start_failed` or `platform_error` (the `outcome` label of `nubis_invocations_total`).
    pub outcome: String,
    /// This invocation waited for a new instance.
    pub cold_start: bool,
    /// What went wrong, when the platform saw it (empty on success and on a handler's error).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0
}

impl InvocationSummary {
    /// Fill in the measured memory peak (bytes), applying the rules of `max_memory_used_mb`.
    pub fn set_memory(&mut self, measured_bytes: Option<u64>) {
        self.max_memory_used_mb = if self.outcome == "out_of_memory" {
            Some(f64::from(self.memory_size_mb))
        } else {
            measured_bytes.map(mb)
        };
    }

    /// FC's report line, in words.
    pub fn message(&self) -> String {
        let used = self.max_memory_used_mb.map_or_else(|| "unknown".to_string(), |m| format!("{m:.2} MB"));
        let mut m = format!(
            "FC Invoke Summary RequestId: {}, Outcome: {}, Duration: {:.2} ms, Memory Size: {} MB, Max Memory Used: {used}",
            self.request_id, self.outcome, self.duration_ms, self.memory_size_mb
        );
        if !self.error.is_empty() {
            m.push_str(", Error: ");
            m.push_str(&self.error);
        }
        m
    }

    /// The record as a line of the log store. Timed when it is stored, like every line (so
    /// time order and store order agree); the invocation's own times are in the fields.
    pub fn into_line(self) -> LogLine {
        LogLine {
            ts_ms: chrono::Utc::now().timestamp_millis(),
            function_name: self.function_name.clone(),
            instance_id: self.instance_id.clone(),
            request_id: self.request_id.clone(),
            stream: STREAM,
            message: self.message(),
            summary: Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(outcome: &str) -> InvocationSummary {
        InvocationSummary {
            function_name: "f".into(),
            qualifier: "LATEST".into(),
            request_id: "1-r".into(),
            instance_id: "c-1".into(),
            node_id: "n".into(),
            invocation_type: "Sync".into(),
            start_time: "2026-01-01T00:00:00.000Z".into(),
            end_time: "2026-01-01T00:00:00.012Z".into(),
            duration_ms: 12.0,
            memory_size_mb: 128,
            max_memory_used_mb: None,
            outcome: outcome.into(),
            cold_start: false,
            error: String::new(),
        }
    }

    #[test]
    fn memory_is_in_mb_and_an_oom_kill_used_the_whole_limit() {
        let mut s = summary("success");
        s.set_memory(Some(20 * 1_048_576 + 524_288));
        assert_eq!(s.max_memory_used_mb, Some(20.5));
        assert!(s.message().ends_with("Memory Size: 128 MB, Max Memory Used: 20.50 MB"), "{}", s.message());
        let mut s = summary("out_of_memory");
        s.set_memory(None);
        assert_eq!(s.max_memory_used_mb, Some(128.0));
        let mut s = summary("crashed");
        s.set_memory(None);
        assert!(s.message().ends_with("Max Memory Used: unknown"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["memorySizeMB"], 128);
        assert!(json["maxMemoryUsedMB"].is_null());
        assert_eq!(serde_json::from_value::<InvocationSummary>(json).unwrap(), s);
    }
}
