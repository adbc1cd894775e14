//! The log query API over the local log store: filters, newest-first paging, errors, and logs
//! surviving a restart; the flood guard.

use std::time::Duration;

use crate::helpers::*;
use crate::log_queries::{self, TALKER, logs, messages};

#[tokio::test]
async fn logs_are_queryable_by_request_text_time_and_instance_and_survive_restart() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("talk", TALKER)).await.status, 200);
    let before = chrono::Utc::now().timestamp_millis() - 1;
    let rids = log_queries::talk(&app, "talk").await;
    // Lines reach the store asynchronously.
    log_queries::wait_visible(&app, "talk", &rids).await;
    log_queries::check(&app, "talk", &rids, before).await;

    let rid = rids[1].0.clone();
    let node = app.node_id.clone();
    // Move the data directory out of the app so it outlives it.
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    app.shutdown_keeping(&data).await;
    let again = spawn_app_with(|c| {
        c.agent.node_id = node.clone();
        c.server.data_dir = data.clone();
    })
    .await;
    let page = logs(&again, "talk", &format!("requestId={rid}")).await.json();
    assert_eq!(messages(&page).len(), 4, "logs survive a restart");
    assert_eq!(page["logs"].as_array().unwrap().len(), 5, "and so does the summary");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_function_flooding_its_logs_is_limited_and_every_dropped_line_is_counted() {
    let app = spawn_app().await;
    let flood = "def handler(event, context):\n    for i in range(60000):\n        print('n', i)\n    return 'done'\n";
    let mut f = python_function("flood", flood);
    f["timeout"] = serde_json::json!(60);
    assert_eq!(app.create_function(f).await.status, 200);
    let r = app.invoke("flood", b"", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.text(), "done");
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    use base64::Engine;
    let tail = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(r.header("x-fc-log-result").unwrap()).unwrap()).unwrap();
    assert!(tail.contains("log lines dropped"), "the tail says lines were dropped: {tail}");
    eventually(Duration::from_secs(20), "the End line stored", || async {
        let page = logs(&app, "flood", &format!("requestId={rid}&query=FC%20Invoke%20End&limit=1")).await.json();
        (!messages(&page).is_empty()).then_some(())
    })
    .await;
    // Every printed line is either stored or counted in a marker: none is lost silently.
    let (mut stored, mut dropped, mut token) = (0u64, 0u64, String::new());
    loop {
        let q = format!("requestId={rid}&limit=1000{}", if token.is_empty() { String::new() } else { format!("&nextToken={token}") });
        let page = logs(&app, "flood", &q).await.json();
        for m in messages(&page) {
            if m.starts_with("n ") {
                stored += 1;
            } else if let Some(rest) = m.strip_prefix("[nubis] ") {
                dropped += rest.split_whitespace().next().unwrap().parse::<u64>().unwrap();
            }
        }
        match page["nextToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert!(dropped > 0 && stored < 60_000, "stored {stored}, dropped {dropped}");
    assert_eq!(stored + dropped, 60_000, "stored {stored} + dropped {dropped}");
    // The node still serves.
    assert_eq!(app.create_function(python_function("calm", PY_UPPER)).await.status, 200);
    assert_eq!(app.invoke("calm", b"ok", &[]).await.text(), "OK");
    app.shutdown().await.unwrap();
}
