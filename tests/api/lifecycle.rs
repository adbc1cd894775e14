//! Instance lifecycle: scale-out under concurrency (capped), throttling, timeouts, memory
//! limits, idle reaping, orphans after a crash, graceful shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

const SLEEPER: &str = "import time\ndef handler(event, context):\n    time.sleep(float(event or b'0'))\n    return 'slept'\n";

#[tokio::test]
async fn parallel_calls_start_one_instance_each_up_to_the_cap() {
    let app = spawn_app_with(|c| c.scheduler.max_instances_per_function = 3).await;
    assert_eq!(app.create_function(python_function("par", SLEEPER)).await.status, 200);
    let calls = (0..5).map(|_| app.invoke("par", b"2", &[]));
    let results = futures_util::future::join_all(calls).await;
    let mut instances = HashSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "slept");
        instances.insert(r.header("x-fc-instance-id").unwrap().to_string());
    }
    assert_eq!(instances.len(), 3, "5 parallel calls on instanceConcurrency 1, capped at 3 instances");
    assert_eq!(app.containers(Some("par")).await.len(), 3);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn instance_concurrency_shares_one_instance() {
    let app = spawn_app().await;
    let mut f = python_function("shared", SLEEPER);
    f["instanceConcurrency"] = json!(4);
    assert_eq!(app.create_function(f).await.status, 200);
    let results = futures_util::future::join_all((0..4).map(|_| app.invoke("shared", b"1", &[]))).await;
    let ids: HashSet<_> = results.iter().map(|r| r.header("x-fc-instance-id").unwrap().to_string()).collect();
    assert!(results.iter().all(|r| r.status == 200));
    assert_eq!(ids.len(), 1, "a burst of 4 on instanceConcurrency 4 starts one instance");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_beyond_the_cap_are_throttled_after_waiting() {
    let app = spawn_app_with(|c| {
        c.scheduler.max_instances_per_function = 1;
        c.scheduler.acquire_timeout_secs = 1;
    })
    .await;
    assert_eq!(app.create_function(python_function("one", SLEEPER)).await.status, 200);
    assert_eq!(app.invoke("one", b"0", &[]).await.status, 200, "warm it up");
    let (a, b) = tokio::join!(app.invoke("one", b"4", &[]), async {
        tokio::time::sleep(Duration::from_millis(300)).await; // let the first call take the slot
        app.invoke("one", b"0", &[]).await
    });
    assert_eq!(a.status, 200);
    let msg = b.assert_error(429, "ResourceExhausted");
    assert!(msg.contains("limit of 1"), "{msg}");
    assert_eq!(b.header("x-acs-retry-after"), Some("1"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_call_past_its_timeout_is_answered_and_its_instance_killed() {
    let app = spawn_app().await;
    let mut f = python_function("slow", SLEEPER);
    f["timeout"] = json!(1);
    assert_eq!(app.create_function(f).await.status, 200);
    assert_eq!(app.invoke("slow", b"0", &[]).await.status, 200);
    let started = Instant::now();
    let r = app.invoke("slow", b"30", &[]).await;
    assert!(started.elapsed() < Duration::from_secs(10), "answered at the timeout, not after the sleep");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-fc-error-type"), Some("UnhandledInvocationError"));
    assert_eq!(r.json()["errorType"], "FunctionTimeout");
    let killed = r.header("x-fc-instance-id").unwrap().to_string();
    eventually(Duration::from_secs(10), "timed-out instance removed", || async {
        let left = app.containers(Some("slow")).await;
        (!left.iter().any(|c| c.labels.as_ref().is_some_and(|l| l.get("nubis.instance") == Some(&killed)))).then_some(())
    })
    .await;
    let r = app.invoke("slow", b"0", &[]).await;
    assert_eq!(r.text(), "slept", "the next call gets a fresh instance");
    assert_ne!(r.header("x-fc-instance-id"), Some(killed.as_str()));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_instance_over_its_memory_limit_is_killed_and_reported() {
    let app = spawn_app().await;
    let code = "def handler(event, context):\n    hog = b'x' * (400 * 1024 * 1024)\n    return str(len(hog))\n";
    assert_eq!(app.create_function(python_function("hog", code)).await.status, 200);
    let r = app.invoke("hog", b"", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-fc-error-type"), Some("UnhandledInvocationError"));
    let j = r.json();
    assert_eq!(j["errorType"], "FunctionOutOfMemory", "{j}");
    assert!(j["errorMessage"].as_str().unwrap().contains("128 MB"), "{j}");
    eventually(Duration::from_secs(10), "OOM-killed instance removed", || async {
        app.containers(Some("hog")).await.is_empty().then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_instances_are_reaped() {
    let app = spawn_app_with(|c| {
        c.scheduler.idle_keep_alive_secs = 1;
        c.scheduler.reap_interval_ms = 200;
    })
    .await;
    assert_eq!(app.create_function(python_function("idle", PY_UPPER)).await.status, 200);
    assert_eq!(app.invoke("idle", b"a", &[]).await.text(), "A");
    assert_eq!(app.containers(Some("idle")).await.len(), 1);
    eventually(Duration::from_secs(15), "idle instance stopped (scale to zero)", || async {
        app.containers(Some("idle")).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(app.invoke("idle", b"b", &[]).await.text(), "B", "and back from zero");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_removes_containers_left_by_a_crash() {
    let app = spawn_app().await;
    let node = app.node_id.clone();
    assert_eq!(app.create_function(python_function("orphan", PY_UPPER)).await.status, 200);
    assert_eq!(app.invoke("orphan", b"x", &[]).await.status, 200);
    let before = app.containers(Some("orphan")).await.len();
    assert_eq!(before, 1);
    let data_dir = app.crash().await;
    let again = spawn_app_with(|c| {
        c.agent.node_id = node.clone();
        c.server.data_dir = data_dir.path().to_path_buf();
    })
    .await;
    assert!(again.containers(Some("orphan")).await.is_empty(), "orphans removed at start");
    // The function itself survived the crash (SQLite) and serves again.
    assert_eq!(again.invoke("orphan", b"y", &[]).await.text(), "Y");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_then_stops_instances() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("drain", SLEEPER)).await.status, 200);
    assert_eq!(app.invoke("drain", b"0", &[]).await.status, 200);
    let state = app.state.clone();
    let client = app.api.clone();
    let call = tokio::spawn(async move { client.invoke("drain", b"2", &[]).await });
    eventually(Duration::from_secs(10), "call in flight", || {
        let st = state.clone();
        async move { st.rm.instances().iter().any(|i| i.inflight == 1).then_some(()) }
    })
    .await;
    let containers_before = app.containers(Some("drain")).await.len();
    assert_eq!(containers_before, 1);
    let node_id = app.node_id.clone();
    app.shutdown().await.unwrap();
    let r = call.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"), "the in-flight call finished");
    let left = containers_of(&node_id, None).await;
    assert!(left.is_empty(), "instances stopped at shutdown: {left:?}");
}

/// A call waiting for a slot holds the record it read before an update: it must be served by
/// the current revision, not start instance after instance of the old one (each would drain
/// at once) until its client gives up.
#[tokio::test]
async fn a_call_waiting_across_an_update_is_served_by_the_new_code() {
    let app = spawn_app_with(|c| c.scheduler.max_instances_per_function = 1).await;
    let old = "import time\ndef handler(event, context):\n    time.sleep(float(event or b'0'))\n    return 'old'\n";
    assert_eq!(app.create_function(python_function("swap", old)).await.status, 200);
    let (st, client) = (app.state.clone(), app.api.clone());
    let busy = tokio::spawn(async move { client.invoke("swap", b"2", &[]).await });
    eventually(Duration::from_secs(30), "the only instance busy", || async {
        st.rm.instances().iter().any(|i| i.inflight == 1).then_some(())
    })
    .await;
    let client = app.api.clone();
    let waiting = tokio::spawn(async move { client.invoke("swap", b"0", &[]).await });
    let st = app.state.clone();
    eventually(Duration::from_secs(10), "a second call waiting for the slot", || async { (st.rm.waiting("swap") == 1).then_some(()) }).await;

    let new = "def handler(event, context):\n    return 'new'\n";
    let r = app.update_function("swap", json!({"code": {"zipFile": b64(&zip_of(&[("index.py", new)]))}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the waiting call is answered").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "new"));
    assert_eq!(busy.await.unwrap().text(), "old");
    app.shutdown().await.unwrap();
}
