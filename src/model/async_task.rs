//! Asynchronous invocation: the per-function async config (`PutAsyncInvokeConfig`), its
//! destinations, and async tasks with their status history.
//!
//! A task is the durable record of one async invocation; the queue only carries its key, so the
//! task row is the truth for status, retries and results. Statuses follow FC:
//! `Enqueued → (Dequeued) → Running → Succeeded | Failed`, `Retrying` between attempts,
//! `Stopping → Stopped` for StopAsyncTask, `Expired` (too old before it started), `Invalid`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::ValidationError;
use super::function::is_valid_name;

pub const DEFAULT_MAX_ASYNC_RETRY_ATTEMPTS: u32 = 3;
pub const MAX_ASYNC_RETRY_ATTEMPTS: u32 = 8;
pub const DEFAULT_MAX_ASYNC_EVENT_AGE_SECONDS: u32 = 86_400;
/// One week, FC's ceiling.
pub const MAX_ASYNC_EVENT_AGE_SECONDS: u32 = 604_800;
const MAX_DESTINATION_LEN: usize = 2048;
const SUPPORTED_DESTINATIONS: &str = "supported destinations are \
    acs:fc:<region>:<account>:functions/<function>[/<qualifier>], http(s)://<host>/<path>, \
    acs:kafka:<region>:<account>:topics/<topic>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum TaskStatus {
    Enqueued,
    Dequeued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Stopping,
    Stopped,
    Expired,
    Invalid,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 10] = [
        Self::Enqueued,
        Self::Dequeued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::Expired,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueued => "Enqueued",
            Self::Dequeued => "Dequeued",
            Self::Running => "Running",
            Self::Retrying => "Retrying",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
        }
    }

    /// A final task never changes status again (its queue message can be dropped).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped | Self::Expired | Self::Invalid)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = ValidationError;
    /// Exact, case-sensitive names, as FC prints them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
            ValidationError::new("status", format!("must be one of {}", names.join(", ")))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    /// 1-based sequence within the task.
    pub event_id: i64,
    pub status: TaskStatus,
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub event_detail: String,
}

/// One async invocation, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncTask {
    pub function_name: String,
    pub qualifier: String,
    pub task_id: String,
    pub request_id: String,
    pub status: TaskStatus,
    /// The invocation's input, verbatim.
    pub payload: Vec<u8>,
    pub return_payload: Option<Vec<u8>>,
    pub error_message: Option<String>,
    pub already_retried_times: u32,
    pub destination_status: Option<String>,
    pub instance_id: Option<String>,
    /// Epoch ms when accepted; listing order and the `startedTimeBegin/End` filter use it.
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub events: Vec<TaskEvent>,
    /// The event's ordering key (`x-nubis-ordering-key`), if it was given one: events of the
    /// function with the same key run one at a time, in accept order.
    pub ordering_key: Option<String>,
}

impl AsyncTask {
    /// FC's `AsyncTask` document. Absent values are omitted rather than null.
    pub fn to_api(&self, region: &str, account_id: &str, include_payload: bool) -> Value {
        let mut m = Map::new();
        m.insert("taskId".into(), json!(self.task_id));
        m.insert("requestId".into(), json!(self.request_id));
        m.insert("functionArn".into(), json!(function_arn(region, account_id, &self.function_name)));
        m.insert("qualifier".into(), json!(self.qualifier));
        m.insert("status".into(), json!(self.status.as_str()));
        if let Some(s) = self.started_ms {
            m.insert("startedTime".into(), json!(s));
        }
        if let Some(e) = self.end_ms {
            m.insert("endTime".into(), json!(e));
        }
        if let (Some(s), Some(e)) = (self.started_ms, self.end_ms) {
            m.insert("durationMs".into(), json!((e - s).max(0)));
        }
        m.insert("alreadyRetriedTimes".into(), json!(self.already_retried_times));
        if let Some(d) = &self.destination_status {
            m.insert("destinationStatus".into(), json!(d));
        }
        // Empty is how a later success clears an earlier attempt's error.
        if let Some(e) = self.error_message.as_ref().filter(|e| !e.is_empty()) {
            m.insert("taskErrorMessage".into(), json!(e));
        }
        if include_payload {
            m.insert("taskPayload".into(), json!(String::from_utf8_lossy(&self.payload)));
        }
        if let Some(r) = &self.return_payload {
            m.insert("returnPayload".into(), json!(String::from_utf8_lossy(r)));
        }
        if let Some(i) = &self.instance_id {
            m.insert("instanceId".into(), json!(i));
        }
        // A Nubis extension: FC has no ordering keys.
        if let Some(k) = &self.ordering_key {
            m.insert("orderingKey".into(), json!(k));
        }
        m.insert("events".into(), serde_json::to_value(&self.events).expect("events serialize"));
        Value::Object(m)
    }
}

fn function_arn(region: &str, account_id: &str, function: &str) -> String {
    format!("acs:fc:{region}:{account_id}:functions/{function}")
}

/// `^[A-Za-z_][A-Za-z0-9_-]{0,127}$`, the same rule as function names.
pub fn is_valid_task_id(s: &str) -> bool {
    is_valid_name(s)
}

/// The request header naming an async invocation's ordering key (a Nubis extension).
pub const ORDERING_KEY_HEADER: &str = "x-nubis-ordering-key";

/// An ordering key: async invocations of one function with the same key run one at a time, in
/// the order they were accepted (see docs/architecture.md, "Ordering keys"). 1 to
/// [`OrderingKey::MAX_LEN`] printable ASCII characters (space to `~`), compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderingKey(String);

impl OrderingKey {
    pub const MAX_LEN: usize = 256;

    /// `field` names where the key came from, for the error (e.g. the header's name).
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ValidationError::new(field, format!("must be 1 to {} characters long, got {}", Self::MAX_LEN, s.len())));
        }
        if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(ValidationError::new(field, format!("must be printable ASCII (space to '~'), got {c:?}")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh task id for invocations that did not name one. The prefix keeps it matching
/// [`is_valid_task_id`] (a bare uuid may start with a digit).
pub fn new_task_id() -> String {
    format!("task-{}", uuid::Uuid::new_v4().simple())
}

/// Where a finished task's result is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationTarget {
    Function { name: String, qualifier: Option<String> },
    Http { url: String },
    KafkaTopic { topic: String },
}

impl DestinationTarget {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| ValidationError::new(field, format!("{why}; {SUPPORTED_DESTINATIONS}"));
        if s.len() > MAX_DESTINATION_LEN || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must be at most 2048 characters without spaces"));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return if has_url_host(s) {
                Ok(Self::Http { url: s.to_string() })
            } else {
                Err(bad(&format!("'{s}' has no host")))
            };
        }
        // acs:<service>:<region>:<account>:<resource>; region and account are not checked
        // (one Nubis is one account in one region, whatever the caller writes there).
        let parts: Vec<&str> = s.splitn(5, ':').collect();
        match parts.as_slice() {
            ["acs", "fc", _, _, resource] => {
                let rest = resource.strip_prefix("functions/").ok_or_else(|| bad("an fc ARN must name functions/<function>"))?;
                let (name, qualifier) = match rest.split_once('/') {
                    Some((n, q)) => (n, Some(q)),
                    None => (rest, None),
                };
                if !is_valid_name(name) {
                    return Err(bad(&format!("'{name}' is not a valid function name")));
                }
                if let Some(q) = qualifier
                    && !is_valid_qualifier(q)
                {
                    return Err(bad(&format!("'{q}' is not a valid qualifier")));
                }
                Ok(Self::Function { name: name.to_string(), qualifier: qualifier.map(str::to_string) })
            }
            ["acs", "kafka", _, _, resource] => {
                let topic = resource.strip_prefix("topics/").ok_or_else(|| bad("a kafka ARN must name topics/<topic>"))?;
                if !is_valid_topic(topic) {
                    return Err(bad(&format!("'{topic}' is not a valid topic (1 to 249 of A-Z a-z 0-9 . _ -)")));
                }
                Ok(Self::KafkaTopic { topic: topic.to_string() })
            }
            _ => Err(bad(&format!("'{s}' is not supported"))),
        }
    }
}

/// A Kafka topic name: 1 to 249 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len()) && topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `LATEST`, a version id (digits) or an alias name.
fn is_valid_qualifier(q: &str) -> bool {
    is_valid_name(q) || (!q.is_empty() && q.len() <= 128 && q.bytes().all(|b| b.is_ascii_digit()))
}

/// `scheme://host[:port][/...]` with a non-empty host made of name or IP characters.
fn has_url_host(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) if !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') => (h, p.strip_prefix(':')),
            _ => return false,
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// An ARN or URL accepted by [`DestinationTarget::parse`].
    pub destination: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Destination>,
}

/// A function's (per qualifier) async invocation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AsyncConfig {
    /// Retries after the first attempt, 0..=8.
    pub max_async_retry_attempts: u32,
    /// A task not started within this age expires, 1..=604800.
    pub max_async_event_age_in_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_config: Option<DestinationConfig>,
    /// Task mode: tasks are queryable, stoppable and deduplicated by task id.
    pub async_task: bool,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            max_async_retry_attempts: DEFAULT_MAX_ASYNC_RETRY_ATTEMPTS,
            max_async_event_age_in_seconds: DEFAULT_MAX_ASYNC_EVENT_AGE_SECONDS,
            destination_config: None,
            async_task: false,
        }
    }
}

/// Null and `[]` mean "not given" (the Python SDK sends `[]` for unset fields).
fn is_unset(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(|a| a.is_empty())
}

fn as_object(field: &str, v: Value) -> Result<Map<String, Value>, ValidationError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ValidationError::new(field, format!("must be an object, got {other}"))),
    }
}

fn int_in(field: &str, v: &Value, lo: u32, hi: u32) -> Result<u32, ValidationError> {
    match v.as_i64() {
        Some(n) if (lo as i64..=hi as i64).contains(&n) => Ok(n as u32),
        Some(n) => Err(ValidationError::new(field, format!("must be between {lo} and {hi}, got {n}"))),
        None => Err(ValidationError::new(field, format!("must be an integer, got {v}"))),
    }
}

/// `{"destination": "<arn>"}` at `field`, or None when unset.
fn destination_at(field: &str, v: Option<Value>) -> Result<Option<Destination>, ValidationError> {
    let Some(v) = v.filter(|v| !is_unset(v)) else { return Ok(None) };
    let mut m = as_object(field, v)?;
    let f = format!("{field}.destination");
    match m.remove("destination").filter(|v| !is_unset(v)) {
        Some(Value::String(s)) => {
            DestinationTarget::parse(&f, &s)?;
            Ok(Some(Destination { destination: s }))
        }
        Some(other) => Err(ValidationError::new(&f, format!("must be a string, got {other}"))),
        None => Err(ValidationError::missing(&f)),
    }
}

impl AsyncConfig {
    /// Validate a PutAsyncInvokeConfig body. Unknown keys are ignored, as FC does.
    pub fn from_input(mut body: Map<String, Value>) -> Result<AsyncConfig, ValidationError> {
        body.retain(|_, v| !is_unset(v));
        let mut cfg = AsyncConfig::default();
        if let Some(v) = body.get("maxAsyncRetryAttempts") {
            cfg.max_async_retry_attempts = int_in("maxAsyncRetryAttempts", v, 0, MAX_ASYNC_RETRY_ATTEMPTS)?;
        }
        if let Some(v) = body.get("maxAsyncEventAgeInSeconds") {
            cfg.max_async_event_age_in_seconds =
                int_in("maxAsyncEventAgeInSeconds", v, 1, MAX_ASYNC_EVENT_AGE_SECONDS)?;
        }
        if let Some(v) = body.get("asyncTask") {
            cfg.async_task = v
                .as_bool()
                .ok_or_else(|| ValidationError::new("asyncTask", format!("must be a boolean, got {v}")))?;
        }
        if let Some(v) = body.remove("destinationConfig") {
            let mut m = as_object("destinationConfig", v)?;
            let dc = DestinationConfig {
                on_success: destination_at("destinationConfig.onSuccess", m.remove("onSuccess"))?,
                on_failure: destination_at("destinationConfig.onFailure", m.remove("onFailure"))?,
            };
            // `{}` is the same as no destinations; store it as absent so GET does not echo `{}`.
            if dc != DestinationConfig::default() {
                cfg.destination_config = Some(dc);
            }
        }
        Ok(cfg)
    }

    pub fn on_success(&self) -> Option<DestinationTarget> {
        self.destination(|d| d.on_success.as_ref())
    }

    pub fn on_failure(&self) -> Option<DestinationTarget> {
        self.destination(|d| d.on_failure.as_ref())
    }

    fn destination(&self, pick: impl Fn(&DestinationConfig) -> Option<&Destination>) -> Option<DestinationTarget> {
        let d = pick(self.destination_config.as_ref()?)?;
        // Validated when stored; a row that no longer parses is treated as "no destination".
        DestinationTarget::parse("destination", &d.destination).ok()
    }
}

/// A stored async config with its key and times.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncConfigRecord {
    pub function_name: String,
    pub qualifier: String,
    pub config: AsyncConfig,
    pub created_time: String,
    pub last_modified_time: String,
}

impl AsyncConfigRecord {
    /// FC's `AsyncConfig` document: the config fields plus `functionArn` (the function's ARN,
    /// without qualifier), `qualifier`, `createdTime`, `lastModifiedTime`.
    pub fn to_api(&self, region: &str, account_id: &str) -> Value {
        let Value::Object(mut m) = serde_json::to_value(&self.config).expect("config serializes") else {
            unreachable!("a struct serializes to an object")
        };
        m.insert("functionArn".into(), json!(function_arn(region, account_id, &self.function_name)));
        m.insert("qualifier".into(), json!(self.qualifier));
        m.insert("createdTime".into(), json!(self.created_time));
        m.insert("lastModifiedTime".into(), json!(self.last_modified_time));
        Value::Object(m)
    }

    /// The `start_after` cursor of `Store::list_async_configs` that resumes after this record.
    /// Contains a NUL byte: encode it (e.g. base64) before putting it in a nextToken.
    pub fn cursor(&self) -> String {
        format!("{}\0{}", self.function_name, self.qualifier)
    }
}

#[cfg(test)]
mod tests;
