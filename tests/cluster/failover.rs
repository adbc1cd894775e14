//! Losing an agent: killed (lease expires) or stopped (lease revoked).

use std::time::{Duration, Instant};

use super::membership::spread;
use super::*;

#[tokio::test]
async fn a_killed_agent_is_replaced_within_the_lease_ttl() {
    let cluster = Cluster::new();
    let mut a = cluster.agent("a");
    let b = cluster.agent("b");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id, &b.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("survivor")).await.status, 200);
    spread(&app.api, "survivor", 2).await;

    a.kill9().await;
    let killed = Instant::now();
    // Calls right after the kill may meet A's instances. The agent process is gone, so the
    // connection is refused: nothing was delivered, and the controller tries once more on
    // another node (avoiding A from then on). The caller sees no failure at all.
    let mut failures = 0;
    let mut first_ok_after_removal = None;
    let mut removed_after = None;
    while first_ok_after_removal.is_none() {
        assert!(killed.elapsed() < Duration::from_secs(TTL_SECS + 20), "no recovery after the kill");
        let r = app.api.invoke("survivor", b"after", &[]).await;
        match r.status {
            200 => {}
            503 => failures += 1,
            s => panic!("unexpected status {s} after the kill: {}", r.text()),
        }
        if removed_after.is_none() && !nodes(&app.api).await.iter().any(|n| n["nodeId"] == a.node_id.as_str()) {
            removed_after = Some(elapsed_ms(killed));
        }
        if removed_after.is_some() && r.status == 200 {
            first_ok_after_removal = Some(elapsed_ms(killed));
        }
    }
    let removed_after = removed_after.unwrap();
    println!(
        "failover: agent killed; node removed after {removed_after} ms (lease TTL {TTL_SECS} s), \
         first success after removal at {} ms, {failures} calls answered 503 meanwhile",
        first_ok_after_removal.unwrap()
    );
    assert!(removed_after <= u128::from(TTL_SECS) * 1000 + 2000, "node removed only after {removed_after} ms");
    assert_eq!(failures, 0, "calls failed although nothing had been delivered to the dead agent");
    // From now on every call succeeds, on B.
    for i in 0..10 {
        let r = app.api.invoke("survivor", format!("n{i}").as_bytes(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let instance = r.json()["env"]["FC_INSTANCE_ID"].as_str().unwrap().to_string();
        assert_eq!(node_of(&app.api, &instance).await.as_deref(), Some(b.node_id.as_str()));
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stopped_agent_leaves_at_once_and_stops_its_instances() {
    let cluster = Cluster::new();
    let mut a = cluster.agent("a");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("leaver")).await.status, 200);
    assert_eq!(app.api.invoke("leaver", b"x", &[]).await.status, 200);
    assert_eq!(helpers::containers_of(&a.node_id, Some("leaver")).await.len(), 1);

    let t = Instant::now();
    a.sigterm();
    let status = tokio::time::timeout(Duration::from_secs(30), a.child.wait()).await.expect("agent exits").unwrap();
    assert!(status.success(), "{status:?}\n{}", a.log());
    wait_for_nodes(&app.api, &[], Duration::from_secs(TTL_SECS + 5)).await;
    println!("graceful leave: node gone {} ms after SIGTERM", elapsed_ms(t));
    assert!(helpers::containers_of(&a.node_id, Some("leaver")).await.is_empty(), "instances left running");
    // No node: calls fail with FC's capacity error, not a 500.
    app.api.invoke("leaver", b"x", &[]).await.assert_error(503, "ResourcePoolInsufficientCapacity");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn async_events_sent_while_an_agent_dies_all_run_once_it_is_gone() {
    let cluster = Cluster::new();
    let mut a = cluster.agent("a");
    let b = cluster.agent("b");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id, &b.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("pipeline")).await.status, 200);
    spread(&app.api, "pipeline", 2).await;

    a.kill9().await;
    let ids: Vec<String> = (0..20).map(|i| format!("ev-{i}")).collect();
    for id in &ids {
        let h = [("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", id.as_str())];
        let r = app.api.invoke("pipeline", id.as_bytes(), &h).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    for id in &ids {
        let t = helpers::eventually(Duration::from_secs(60), &format!("task {id} succeeded"), || async {
            let j = app.api.request("GET", &format!("/2023-03-30/functions/pipeline/async-tasks/{id}"), "", &[], vec![]).await.json();
            assert_ne!(j["status"], "Failed", "{j}");
            (j["status"] == "Succeeded").then_some(j)
        })
        .await;
        // Platform failures (the dead agent) do not use up the function's retries.
        assert_eq!(t["alreadyRetriedTimes"], 0, "{t}");
        let payload: Value = serde_json::from_str(t["returnPayload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["event"], id.as_str());
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn etcd_unreachable_answers_503_and_the_cluster_recovers_when_it_returns() {
    let etcd = super::etcd::Etcd3::start_members(1).await;
    let mut cluster = Cluster::new();
    cluster.etcd = Some(etcd.endpoints());
    let a = cluster.agent("a");
    let app = cluster.controller_with(|c| c.scheduler.acquire_timeout_secs = 2).await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("patient")).await.status, 200);
    assert_eq!(app.api.invoke("patient", b"before", &[]).await.status, 200);

    etcd.signal_all("-STOP");
    let t = Instant::now();
    // Leadership cannot be renewed: the controller steps down and calls are refused with a
    // retriable FC error, not a 500 and not a hang.
    super::helpers::eventually(Duration::from_secs(TTL_SECS + 20), "503 while etcd is unreachable", || async {
        let r = app.api.invoke("patient", b"during", &[]).await;
        assert!(r.status == 200 || r.status == 503, "{} {}", r.status, r.text());
        (r.status == 503).then(|| r.assert_error(503, "ServiceUnavailable"))
    })
    .await;
    println!("etcd frozen: calls refused with 503 after {} ms", elapsed_ms(t));

    etcd.signal_all("-CONT");
    let t = Instant::now();
    let r = super::helpers::eventually(Duration::from_secs(30), "calls succeed again once etcd is back", || async {
        let r = app.api.invoke("patient", b"after", &[]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json()["event"], "after");
    println!("etcd back: calls succeed again after {} ms", elapsed_ms(t));
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    app.shutdown().await.unwrap();
}
