//! The platform's summary record of every invocation, against real containers: one per
//! invocation, with sane times and memory, for a success, a handler's error, a timeout, an
//! out-of-memory kill and an async run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::log_queries::{lines, logs};

const CODE: &str = "import time
def handler(event, context):
    e = event.decode()
    if e == 'fail':
        raise ValueError('boom')
    if e == 'sleep':
        time.sleep(30)
    if e == 'hog':
        hog = bytearray(48 * 1024 * 1024)
        hog[::4096] = b'x' * len(hog[::4096])
    if e == 'burst':
        hog = b'x' * (400 * 1024 * 1024)
    return 'ok'
";

/// The summary record of one invocation, once stored (exactly one).
async fn summary_of(app: &TestApp, function: &str, rid: &str) -> Value {
    let all = eventually(Duration::from_secs(15), "the invocation's summary is stored", || async {
        let page = logs(app, function, &format!("requestId={rid}")).await.json();
        let s: Vec<Value> = lines(&page).into_iter().filter(|l| l["stream"] == "platform").collect();
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(all.len(), 1, "one summary per invocation: {all:?}");
    let line = &all[0];
    assert_eq!(line["requestId"], rid);
    line["summary"].clone()
}

/// Invoke; the summary, the response and how long the caller waited.
async fn call(app: &TestApp, function: &str, event: &str) -> (Value, Resp, Duration) {
    let t = Instant::now();
    let r = app.invoke(function, event.as_bytes(), &[]).await;
    let waited = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    (summary_of(app, function, &rid).await, r, waited)
}

fn ms(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a time")).expect("RFC 3339").timestamp_millis()
}

/// What holds for every summary of an invocation that reached an instance.
fn assert_sane(app: &TestApp, s: &Value, r: &Resp, waited: Duration, outcome: &str) {
    assert_eq!(s["outcome"], outcome, "{s}");
    assert_eq!(s["functionName"], "sum");
    assert_eq!(s["qualifier"], "LATEST");
    assert_eq!(s["requestId"].as_str(), r.header("x-fc-request-id"));
    assert_eq!(s["instanceId"].as_str(), r.header("x-fc-instance-id"), "{s}");
    assert_eq!(s["nodeId"], app.node_id.as_str());
    assert_eq!(s["memorySizeMB"], 128);
    let d = s["durationMs"].as_f64().unwrap();
    assert!(d > 0.0 && d <= waited.as_secs_f64() * 1000.0 + 1.0, "durationMs {d} within the caller's wait {waited:?}");
    let header: f64 = r.header("x-fc-invocation-duration").unwrap().parse().unwrap();
    assert!((d - header).abs() <= 1.0, "durationMs {d} is the x-fc-invocation-duration {header}");
    let (start, end) = (ms(&s["startTime"]), ms(&s["endTime"]));
    assert!(start <= end && (end - start - d as i64).abs() <= 2, "{s}");
    let used = s["maxMemoryUsedMB"].as_f64().unwrap_or_else(|| panic!("memory measured: {s}"));
    assert!(used > 0.0 && used <= 128.0, "{s}");
}

#[tokio::test]
async fn every_invocation_has_one_summary_with_its_outcome_times_and_memory() {
    let app = spawn_app().await;
    let mut f = python_function("sum", CODE);
    f["timeout"] = json!(2);
    assert_eq!(app.create_function(f).await.status, 200);

    let (s, r, waited) = call(&app, "sum", "hello").await;
    assert_sane(&app, &s, &r, waited, "success");
    assert_eq!((s["coldStart"].as_bool(), s["invocationType"].as_str()), (Some(true), Some("Sync")));
    let idle = s["maxMemoryUsedMB"].as_f64().unwrap();
    println!("success: {s}");

    let (s, r, waited) = call(&app, "sum", "hog").await;
    assert_sane(&app, &s, &r, waited, "success");
    assert_eq!(s["coldStart"], false);
    let hog = s["maxMemoryUsedMB"].as_f64().unwrap();
    assert!(hog >= idle + 40.0, "a 48 MB allocation shows in the peak: {idle} MB before, {hog} MB after");

    let (s, r, waited) = call(&app, "sum", "fail").await;
    assert_eq!(r.header("x-fc-error-type"), Some("UnhandledInvocationError"));
    assert_sane(&app, &s, &r, waited, "function_error");
    assert!(s["maxMemoryUsedMB"].as_f64().unwrap() >= hog, "the instance's peak so far: {s}");

    // A timeout discards the instance: its memory is read before it is removed.
    let (s, r, waited) = call(&app, "sum", "sleep").await;
    assert_sane(&app, &s, &r, waited, "timeout");
    assert!(s["durationMs"].as_f64().unwrap() >= 2000.0, "{s}");
    assert!(s["error"].as_str().unwrap().contains("timed out"), "{s}");
    println!("timeout: {s}");

    let (s, r, waited) = call(&app, "sum", "burst").await;
    assert_sane(&app, &s, &r, waited, "out_of_memory");
    assert_eq!(s["maxMemoryUsedMB"], 128.0, "an OOM kill used the whole limit: {s}");

    // Async: the same record, typed Async, under the task's request id.
    let r = app.invoke("sum", b"hello", &[("x-fc-invocation-type", "Async")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let s = summary_of(&app, "sum", r.header("x-fc-request-id").unwrap()).await;
    assert_eq!((s["outcome"].as_str(), s["invocationType"].as_str()), (Some("success"), Some("Async")));
    assert!(s["maxMemoryUsedMB"].as_f64().is_some(), "{s}");

    // Refused before any instance: still one record, without instance or memory.
    let mut big = python_function("huge", CODE);
    big["memorySize"] = json!(32768);
    assert_eq!(app.create_function(big).await.status, 200);
    let r = app.invoke("huge", b"", &[]).await;
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    r.assert_error(503, "ResourcePoolInsufficientCapacity");
    let s = summary_of(&app, "huge", &rid).await;
    assert_eq!((s["outcome"].as_str(), s["instanceId"].as_str()), (Some("platform_error"), Some("")), "{s}");
    assert!(s["maxMemoryUsedMB"].is_null(), "{s}");
    app.shutdown().await.unwrap();
}
