//! Shared by the timer tests of tests/api and tests/cluster: a function that reports each
//! execution, a witness that counts those reports from Docker, and the async tasks the ticks
//! became.
//!
//! The witness reads the instances' own stdout as Docker keeps it (whatever happens to the
//! server process), so an execution the server's records missed would still be counted.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use super::helpers::ApiClient;

/// Prints `EXEC <triggerName> <triggerTime>` for the witness, and returns the event.
pub const PY_TIMER: &str = "import json\n\
def handler(event, context):\n    \
e = json.loads(event)\n    \
print('EXEC', e['triggerName'], e['triggerTime'], flush=True)\n    \
return event\n";

/// Executions per (trigger name, triggerTime), from the stdout of every container (running or
/// not) of these nodes.
pub async fn witnessed(node_ids: &[String]) -> HashMap<(String, String), usize> {
    use bollard::query_parameters::{ListContainersOptions, LogsOptions};
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let mut counts = HashMap::new();
    for node in node_ids {
        let filters = HashMap::from([("label".to_string(), vec![format!("nubis.node={node}")])]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
            let Some(id) = c.id else { continue };
            let mut logs = docker.logs(&id, Some(LogsOptions { stdout: true, ..Default::default() }));
            let mut text = String::new();
            while let Some(Ok(chunk)) = logs.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
            for line in text.lines() {
                let mut parts = line.trim().splitn(3, ' ');
                if let (Some("EXEC"), Some(name), Some(time)) = (parts.next(), parts.next(), parts.next()) {
                    *counts.entry((name.to_string(), time.to_string())).or_default() += 1;
                }
            }
        }
    }
    counts
}

/// One async task a tick became.
#[derive(Debug, Clone)]
pub struct TickTask {
    pub task_id: String,
    pub status: String,
    pub event: Value,
    pub tick: DateTime<Utc>,
    /// When the tick was accepted (submitted), epoch ms.
    pub created_ms: i64,
    /// `Running` events that repeat a run whose outcome was lost (at-least-once delivery).
    pub redeliveries: usize,
    pub raw: Value,
}

/// Every async task of `function`, oldest first, with its payload parsed as a timer event.
pub async fn tick_tasks(api: &ApiClient, function: &str) -> Vec<TickTask> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // Query keys in canonical order (as the SDKs sign them).
        let mut q = "includePayload=true&limit=100".to_string();
        if let Some(n) = &next {
            q += &format!("&nextToken={n}");
        }
        q += "&sortOrderByTime=asc";
        let r = api.request("GET", &format!("/2023-03-30/functions/{function}/async-tasks"), &q, &[], vec![]).await;
        assert_eq!(r.status, 200, "ListAsyncTasks: {}", r.text());
        let page = r.json();
        for t in page["tasks"].as_array().expect("tasks") {
            let event: Value = serde_json::from_str(t["taskPayload"].as_str().expect("taskPayload")).expect("the payload is JSON");
            let tick = DateTime::parse_from_rfc3339(event["triggerTime"].as_str().expect("triggerTime")).unwrap().with_timezone(&Utc);
            let redeliveries = t["events"]
                .as_array()
                .map(|es| es.iter().filter(|e| e["eventDetail"].as_str().is_some_and(|d| d.starts_with("re-delivered"))).count())
                .unwrap_or(0);
            out.push(TickTask {
                task_id: t["taskId"].as_str().unwrap().to_string(),
                status: t["status"].as_str().unwrap().to_string(),
                event,
                tick,
                // The `Enqueued` event is written when the tick was accepted.
                created_ms: t["events"][0]["timestamp"].as_i64().expect("an accepted event"),
                redeliveries,
                raw: t.clone(),
            });
        }
        match page["nextToken"].as_str() {
            Some(n) if !n.is_empty() => next = Some(n.to_string()),
            _ => break,
        }
    }
    out.sort_by_key(|t| t.tick);
    out
}

/// The ticks as seconds since the epoch.
pub fn secs(tasks: &[TickTask]) -> Vec<i64> {
    tasks.iter().map(|t| t.tick.timestamp()).collect()
}

/// `nubis_timer_firings_total` of this server, by (function, outcome).
pub async fn firings(api: &ApiClient) -> BTreeMap<(String, String), u64> {
    let text = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("nubis_timer_firings_total{")) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |k: &str| labels.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
        out.insert((label("function"), label("outcome")), value.parse().unwrap());
    }
    out
}
