//! `/metrics` after a scripted set of invocations: counters and histogram counts match exactly.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::*;

/// The value of one sample line, `name{labels} value`, matched on the name and all the given
/// label pairs (order-free).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, "}"));
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn scraped_counts_match_the_invocations_made() {
    let app = spawn_app().await;
    let code = "import time\n\
def handler(event, context):\n    \
    if event == b'fail':\n        raise ValueError('no')\n    \
    if event == b'hang':\n        time.sleep(30)\n    \
    return 'ok'\n";
    let mut f = python_function("m", code);
    f["timeout"] = json!(1);
    assert_eq!(app.create_function(f).await.status, 200);

    let mut instances = HashSet::new();
    for payload in [&b"a"[..], b"b", b"c", b"fail", b"hang", b"d"] {
        let r = app.invoke("m", payload, &[]).await;
        assert_eq!(r.status, 200);
        instances.insert(r.header("x-fc-instance-id").unwrap().to_string());
    }
    // The timeout killed the first instance, so "d" needed a second cold start.
    assert_eq!(instances.len(), 2);
    app.invoke("nope", b"", &[]).await.assert_error(404, "FunctionNotFound");

    let r = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let inv = |outcome| sample(&text, "nubis_invocations_total", &[("function", "m"), ("kind", "sync"), ("outcome", outcome)]);
    assert_eq!(inv("success"), Some(4.0), "{text}");
    assert_eq!(inv("function_error"), Some(1.0));
    assert_eq!(inv("timeout"), Some(1.0));
    assert_eq!(sample(&text, "nubis_invocation_duration_seconds_count", &[("function", "m"), ("kind", "sync")]), Some(6.0));
    assert_eq!(sample(&text, "nubis_cold_starts_total", &[("function", "m")]), Some(2.0));
    assert_eq!(sample(&text, "nubis_cold_start_duration_seconds_count", &[("function", "m")]), Some(2.0));
    let route = "/2023-03-30/functions/{functionName}/invocations";
    assert_eq!(sample(&text, "nubis_api_requests_total", &[("route", route), ("method", "POST"), ("status", "200")]), Some(6.0));
    assert_eq!(sample(&text, "nubis_api_requests_total", &[("route", route), ("method", "POST"), ("status", "404")]), Some(1.0));
    assert_eq!(sample(&text, "nubis_instances", &[("state", "ready")]), Some(1.0));
    assert_eq!(sample(&text, "nubis_async_queue_depth", &[]), Some(0.0));
    assert!(sample(&text, "nubis_node_memory_bytes", &[("kind", "placed")]).is_some_and(|v| v == (128u64 << 20) as f64));
    assert!(!text.contains("\"nope\""), "no series for a function that does not exist");

    // Async: one success, counted as a finished task too.
    let r = app.invoke("m", b"x", &[("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", "m1")]).await;
    assert_eq!(r.status, 202);
    let text = eventually(std::time::Duration::from_secs(30), "async task counted", || async {
        let t = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        sample(&t, "nubis_async_tasks_finished_total", &[("function", "m"), ("status", "Succeeded")]).map(|_| t)
    })
    .await;
    assert_eq!(sample(&text, "nubis_invocations_total", &[("function", "m"), ("kind", "async"), ("outcome", "success")]), Some(1.0));
    assert_eq!(sample(&text, "nubis_async_tasks_finished_total", &[("function", "m"), ("status", "Succeeded")]), Some(1.0));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn queue_depth_and_age_show_waiting_async_events() {
    // No dispatcher: accepted events wait in the queue, and the metrics say so.
    let app = spawn_app_with(|c| c.dispatcher.enabled = false).await;
    assert_eq!(app.create_function(python_function("qa", PY_UPPER)).await.status, 200);
    for id in ["q1", "q2"] {
        let r = app.invoke("qa", b"x", &[("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", id)]).await;
        assert_eq!(r.status, 202);
    }
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(sample(&text, "nubis_async_queue_depth", &[]), Some(2.0));
    let age = eventually(std::time::Duration::from_secs(10), "the oldest event ages", || async {
        let t = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        sample(&t, "nubis_async_queue_oldest_age_seconds", &[]).filter(|a| *a >= 0.2)
    })
    .await;
    assert!(age < 60.0, "{age}");
    app.shutdown().await.unwrap();
}
