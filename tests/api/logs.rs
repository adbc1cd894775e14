//! The log query API over the local log store: filters, newest-first paging, errors, and logs
//! surviving a restart.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const TALKER: &str = "def handler(event, context):\n    print('line A ' + event.decode())\n    print('line B')\n    return 'ok'\n";

async fn logs(app: &ApiClient, name: &str, query: &str) -> Resp {
    app.request("GET", &format!("/2023-03-30/functions/{name}/logs"), query, &[], vec![]).await
}

fn messages(page: &Value) -> Vec<String> {
    page["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn logs_are_queryable_by_request_text_time_and_instance_and_survive_restart() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("talk", TALKER)).await.status, 200);
    let before = chrono::Utc::now().timestamp_millis() - 1;
    let mut rids = Vec::new();
    for word in ["first", "second", "third"] {
        let r = app.invoke("talk", word.as_bytes(), &[]).await;
        assert_eq!(r.status, 200);
        rids.push((r.header("x-fc-request-id").unwrap().to_string(), r.header("x-fc-instance-id").unwrap().to_string()));
    }
    let (rid, instance) = rids[1].clone();
    // Lines reach the store asynchronously: wait for the last invocation's End line.
    let last = rids[2].0.clone();
    eventually(Duration::from_secs(10), "logs stored", || async {
        let page = logs(&app, "talk", &format!("requestId={last}")).await.json();
        messages(&page).iter().any(|m| m.starts_with("FC Invoke End")).then_some(())
    })
    .await;

    let page = logs(&app, "talk", &format!("requestId={rid}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    assert_eq!(
        messages(&page),
        [format!("FC Invoke End RequestId: {rid}"), "line B".into(), "line A second".into(), format!("FC Invoke Start RequestId: {rid}")],
        "this request's lines, newest first"
    );
    let l = &page["logs"][0];
    assert_eq!((l["functionName"].as_str(), l["instanceId"].as_str()), (Some("talk"), Some(instance.as_str())));
    assert!(l["timestamp"].as_i64().unwrap() >= before && l["time"].as_str().unwrap().ends_with('Z'));

    assert_eq!(messages(&logs(&app, "talk", "query=line%20A%20third").await.json()), ["line A third"]);
    assert_eq!(messages(&logs(&app, "talk", "query=LINE").await.json()).len(), 0, "case-sensitive");
    let future = chrono::Utc::now().timestamp_millis() + 60_000;
    assert!(messages(&logs(&app, "talk", &format!("startTime={future}")).await.json()).is_empty());
    assert_eq!(messages(&logs(&app, "talk", &format!("query=line%20B&startTime={before}&endTime={future}")).await.json()).len(), 3);
    assert_eq!(messages(&logs(&app, "talk", &format!("instanceId={instance}&query=line%20A")).await.json()).len(), 3);

    // Paging: every line of the function once, newest first.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let q = if token.is_empty() { "limit=5".to_string() } else { format!("limit=5&nextToken={token}") };
        let page = logs(&app, "talk", &q).await.json();
        let ts: Vec<i64> = page["logs"].as_array().unwrap().iter().map(|l| l["timestamp"].as_i64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
        all.extend(messages(&page));
        match page["nextToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(all.iter().filter(|m| m.starts_with("line A ")).count(), 3);
    assert_eq!(all.iter().filter(|m| m.starts_with("FC Invoke Start")).count(), 3);

    logs(&app, "nope", "").await.assert_error(404, "FunctionNotFound");
    logs(&app, "talk", "limit=0").await.assert_error(400, "InvalidArgument");
    logs(&app, "talk", "nextToken=%21%21").await.assert_error(400, "InvalidArgument");

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
        let page = logs(&app, "flood", &format!("requestId={rid}&limit=1")).await.json();
        messages(&page).first().is_some_and(|m| m.starts_with("FC Invoke End")).then_some(())
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
