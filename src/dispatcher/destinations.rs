//! Destinations: where a finished async invocation's record goes (`onSuccess`, `onFailure`).
//!
//! The record has FC's destination shape: request context (request id, function ARN, condition,
//! approximate invoke count), the original payload, and the response or error. A destination
//! is delivered before the task's final state is recorded and before the message is acked, so a
//! crash in between delivers it again: at least once. Targets:
//! - another function (`acs:fc:<region>:<account>:functions/<name>[/<qualifier>]`): an async
//!   invocation of it, with the record as its payload;
//! - an HTTP endpoint (`http(s)://...`): a JSON POST, tried up to [`HTTP_ATTEMPTS`] times;
//! - a Kafka topic (`acs:kafka:<region>:<account>:topics/<topic>`, Kafka backend only): the
//!   record published with the function name as key, acknowledged by the brokers.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::{Dispatcher, Origin, submit};
use crate::model::async_task::{AsyncConfig, AsyncTask, DestinationTarget, new_task_id};

const HTTP_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventExpired,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventExpired => "EventExpired",
        }
    }
}

pub fn record(task: &AsyncTask, condition: Condition, response: Option<&Bytes>, region: &str, account_id: &str) -> serde_json::Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut response_context = json!({ "statusCode": 200 });
    if condition != Condition::Success {
        response_context["functionError"] = json!(match condition {
            Condition::EventExpired => "EventExpired",
            _ => "UnhandledInvocationError",
        });
    }
    json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": task.request_id,
            "taskId": task.task_id,
            "functionArn": format!("acs:fc:{region}:{account_id}:functions/{}", task.function_name),
            "qualifier": task.qualifier,
            "condition": condition.as_str(),
            "approximateInvokeCount": task.already_retried_times + u32::from(condition != Condition::EventExpired),
        },
        "requestPayload": text(&task.payload),
        "responseContext": response_context,
        "responsePayload": response.map(|b| text(b)).or_else(|| task.error_message.clone()),
    })
}

/// Deliver the record to the configured destination, if any; returns the task's
/// `destinationStatus`.
pub async fn deliver(
    d: &Dispatcher,
    task: &AsyncTask,
    cfg: &AsyncConfig,
    condition: Condition,
    response: Option<&Bytes>,
) -> Option<String> {
    let target = if condition == Condition::Success { cfg.on_success() } else { cfg.on_failure() }?;
    let (store, queue, http, region, account) = d.shared_parts();
    let body = serde_json::to_vec(&record(task, condition, response, region, account)).expect("record serializes");
    let status = match target {
        DestinationTarget::Function { name, qualifier } => match store.get_function(&name).await {
            Ok(Some(_)) => {
                let task_id = new_task_id();
                let request_id = crate::model::new_request_id();
                match submit(store, queue, &name, qualifier.as_deref().unwrap_or("LATEST"), &task_id, &request_id, &body, Origin::Invoke).await {
                    Ok(()) => format!("Succeeded: queued as task {task_id} of function {name}"),
                    Err(e) => format!("Failed: queueing for function {name}: {e}"),
                }
            }
            Ok(None) => format!("Failed: destination function {name} does not exist"),
            Err(e) => format!("Failed: {e}"),
        },
        DestinationTarget::Http { url } => post(http, &url, body).await,
        DestinationTarget::KafkaTopic { topic } => match d.kafka() {
            Some(p) => match crate::queue::kafka::publish(p, &topic, &task.function_name, &body).await {
                Ok(()) => format!("Succeeded: published to Kafka topic {topic}"),
                Err(e) => format!("Failed: Kafka topic {topic}: {e}"),
            },
            None => format!("Failed: Kafka topic {topic}: Kafka destinations need the Kafka queue backend"),
        },
    };
    if status.starts_with("Failed") {
        tracing::warn!(function = %task.function_name, task = %task.task_id, "destination: {status}");
    }
    Some(status)
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> String {
    let mut last = String::new();
    for attempt in 1..=HTTP_ATTEMPTS {
        let sent = http.post(url).header("content-type", "application/json").body(body.clone()).send().await;
        match sent {
            Ok(r) if r.status().is_success() => return format!("Succeeded: {url} answered {}", r.status().as_u16()),
            Ok(r) => last = format!("{url} answered {}", r.status().as_u16()),
            Err(e) => last = format!("{url}: {e}"),
        }
        if attempt < HTTP_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }
    format!("Failed after {HTTP_ATTEMPTS} attempts: {last}")
}
