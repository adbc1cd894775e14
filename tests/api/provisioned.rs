//! What the resource manager does with the scaling configs: provisioned instances are started
//! without calls, kept however idle, and replaced when lost; a reserved concurrency throttles
//! sync calls past it at once while async events wait their turn.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bollard::query_parameters::KillContainerOptions;
use serde_json::json;

use crate::helpers::*;

const SLEEPER: &str = "import time\ndef handler(event, context):\n    time.sleep(float(event or b'0'))\n    return 'slept'\n";

async fn running_ids(app: &TestApp, f: &str) -> HashSet<String> {
    app.containers(Some(f))
        .await
        .into_iter()
        .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
        .filter_map(|c| c.id)
        .collect()
}

async fn put_provision(app: &TestApp, f: &str, target: u32) {
    let r = app
        .json_request("PUT", &format!("/2023-03-30/functions/{f}/provision-config"), "qualifier=LATEST", Some(json!({"target": target})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn provisioned_instances_start_without_calls_stay_idle_and_are_replaced_when_lost() {
    let app = spawn_app_with(|c| {
        c.scheduler.idle_keep_alive_secs = 1;
        c.scheduler.reap_interval_ms = 200;
    })
    .await;
    assert_eq!(app.create_function(python_function("prov", PY_UPPER)).await.status, 200);
    put_provision(&app, "prov", 2).await;
    let first = eventually(Duration::from_secs(60), "two provisioned instances", || async {
        let ids = running_ids(&app, "prov").await;
        (ids.len() == 2).then_some(ids)
    })
    .await;

    // Idle far past the keep-alive of 1 s, they stay (and no more start).
    let since = Instant::now();
    eventually(Duration::from_secs(10), "3 s of idleness observed", || async {
        assert_eq!(running_ids(&app, "prov").await, first, "provisioned instances are neither reaped nor added to");
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .await;

    // A call is served by one of them: no cold start.
    let r = app.invoke("prov", b"warm", &[]).await;
    assert_eq!(r.text(), "WARM");
    let get = app.json_request("GET", "/2023-03-30/functions/prov/provision-config", "qualifier=LATEST", None).await;
    assert_eq!(get.json()["current"], 2, "{}", get.text());

    // One is killed from outside: the resource manager notices and starts a replacement.
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let victim = first.iter().next().unwrap().clone();
    docker.kill_container(&victim, None::<KillContainerOptions>).await.unwrap();
    let replaced = eventually(Duration::from_secs(60), "the lost instance replaced", || async {
        let ids = running_ids(&app, "prov").await;
        (ids.len() == 2 && !ids.contains(&victim)).then_some(ids)
    })
    .await;
    assert_eq!(replaced.intersection(&first).count(), 1, "the survivor stays");
    assert_eq!(app.invoke("prov", b"again", &[]).await.text(), "AGAIN");

    // Target 0: they are ordinary idle instances again, and go.
    put_provision(&app, "prov", 0).await;
    eventually(Duration::from_secs(30), "scaled to zero", || async { running_ids(&app, "prov").await.is_empty().then_some(()) }).await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_update_replaces_provisioned_instances_with_the_new_code() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("prov-upd", PY_UPPER)).await.status, 200);
    put_provision(&app, "prov-upd", 1).await;
    let old = eventually(Duration::from_secs(60), "one provisioned instance", || async {
        let ids = running_ids(&app, "prov-upd").await;
        (ids.len() == 1).then_some(ids)
    })
    .await;
    let code = "def handler(event, context):\n    return b'v2:' + event\n";
    let r = app.update_function("prov-upd", json!({"code": {"zipFile": b64(&zip_of(&[("index.py", code)]))}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(60), "the instance of the new code, and only it", || async {
        let ids = running_ids(&app, "prov-upd").await;
        (ids.len() == 1 && ids.is_disjoint(&old)).then_some(())
    })
    .await;
    assert_eq!(app.invoke("prov-upd", b"x", &[]).await.text(), "v2:x");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn reserved_concurrency_throttles_sync_calls_past_it_and_async_events_wait() {
    let app = spawn_app_with(|c| {
        c.dispatcher.retry_base_ms = 50;
        c.dispatcher.retry_max_ms = 200;
        c.dispatcher.poll_interval_ms = 20;
    })
    .await;
    let mut f = python_function("reserved", SLEEPER);
    f["instanceConcurrency"] = json!(10);
    assert_eq!(app.create_function(f).await.status, 200);
    let r = app.json_request("PUT", "/2023-03-30/functions/reserved/concurrency", "", Some(json!({"reservedConcurrency": 2}))).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Two long calls hold the reservation; a third is refused at once, not after a wait.
    let long = |app: &TestApp| {
        let api = app.api.clone();
        tokio::spawn(async move { api.invoke("reserved", b"3", &[]).await })
    };
    let (a, b) = (long(&app), long(&app));
    eventually(Duration::from_secs(60), "two calls in flight", || async {
        let inflight: u32 = app.state.rm.instances().iter().filter(|i| i.function_name == "reserved").map(|i| i.inflight).sum();
        (inflight == 2).then_some(())
    })
    .await;
    let t = Instant::now();
    let third = app.invoke("reserved", b"0", &[]).await;
    let msg = third.assert_error(429, "ResourceExhausted");
    assert!(msg.contains("reserved concurrency of 2"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2), "refused without waiting for a slot");
    assert_eq!(a.await.unwrap().text(), "slept");
    assert_eq!(b.await.unwrap().text(), "slept");
    assert_eq!(app.invoke("reserved", b"0", &[]).await.text(), "slept", "the places came back");

    // Async events past the reservation are not failed: they wait and all succeed.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let r = app.request("POST", "/2023-03-30/functions/reserved/invocations", "", &[("x-fc-invocation-type", "Async")], b"0.5".to_vec()).await;
        assert_eq!(r.status, 202, "event {i}: {}", r.text());
        tasks.push(r.header("x-fc-async-task-id").unwrap().to_string());
    }
    let statuses = eventually(Duration::from_secs(90), "every event finished", || async {
        let mut out = HashMap::new();
        for t in &tasks {
            let r = app.json_request("GET", &format!("/2023-03-30/functions/reserved/async-tasks/{t}"), "", None).await;
            let status = r.json()["status"].as_str().unwrap_or_default().to_string();
            if !matches!(status.as_str(), "Succeeded" | "Failed" | "Expired" | "Stopped" | "Invalid") {
                return None;
            }
            out.insert(t.clone(), status);
        }
        Some(out)
    })
    .await;
    assert!(statuses.values().all(|s| s == "Succeeded"), "{statuses:?}");

    // Reserved 0 refuses every call.
    let r = app.json_request("PUT", "/2023-03-30/functions/reserved/concurrency", "", Some(json!({"reservedConcurrency": 0}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.invoke("reserved", b"0", &[]).await.assert_error(429, "ResourceExhausted");
    app.shutdown().await.unwrap();
}
