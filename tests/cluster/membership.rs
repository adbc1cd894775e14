//! Membership, spreading, cordon and drain.

use std::time::Duration;

use super::helpers::{ApiClient, eventually};
use super::*;

/// Invoke `name` with several concurrent calls until its instances are on `want` distinct
/// nodes; returns the node of every instance seen.
pub async fn spread(api: &ApiClient, name: &str, want: usize) -> Vec<String> {
    eventually(Duration::from_secs(60), &format!("instances of {name} on {want} nodes"), || async {
        let events: Vec<String> = (0..4).map(|i| format!("e{i}")).collect();
        let calls = events.iter().map(|e| api.invoke(name, e.as_bytes(), &[]));
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let mut on: Vec<String> = nodes(api)
            .await
            .iter()
            .filter(|n| n["instances"].as_array().is_some_and(|v| v.iter().any(|i| i["functionName"] == name)))
            .map(|n| n["nodeId"].as_str().unwrap().to_string())
            .collect();
        on.dedup();
        (on.len() >= want).then_some(on)
    })
    .await
}

#[tokio::test]
async fn agents_join_and_a_functions_instances_spread_over_them() {
    let cluster = Cluster::new();
    let a = cluster.agent("a");
    let b = cluster.agent("b");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id, &b.node_id], Duration::from_secs(30)).await;
    let listed = nodes(&app.api).await;
    for n in &listed {
        assert!(n["memoryTotalMb"].as_u64().unwrap() > 0, "{n}");
        assert!(n["address"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{n}");
        assert_eq!(n["cordoned"], false);
    }

    assert_eq!(app.api.create_function(echo_function("spread")).await.status, 200);
    let r = app.api.invoke("spread", b"hello", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["event"], "hello");
    let on = spread(&app.api, "spread", 2).await;
    assert_eq!(on.len(), 2, "{on:?}");
    // The containers really run on the agents' Docker nodes, labelled with their node ids, and
    // each agent's /metrics counts the instances it runs as the controller's table does.
    for agent in [&a, &b] {
        let running = helpers::containers_of(&agent.node_id, Some("spread")).await.len();
        assert!(running > 0, "{}", agent.log());
        let listed = nodes(&app.api).await;
        let node = listed.iter().find(|n| n["nodeId"] == agent.node_id.as_str()).unwrap();
        let in_table = node["instances"].as_array().unwrap().len();
        let text = reqwest::get(format!("{}/metrics", node["address"].as_str().unwrap())).await.unwrap().text().await.unwrap();
        let line = format!("nubis_instances{{state=\"ready\"}} {in_table}");
        assert!(text.lines().any(|l| l == line), "{line} not in the agent's metrics:\n{text}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cordon_drain_and_uncordon_a_node() {
    let cluster = Cluster::new();
    let a = cluster.agent("a");
    let b = cluster.agent("b");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id, &b.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("drained")).await.status, 200);
    spread(&app.api, "drained", 2).await;

    app.api.request("POST", "/nubis/admin/v1/nodes/nope/cordon", "", &[], vec![]).await.assert_error(404, "NodeNotFound");

    let r = app.api.request("POST", &format!("/nubis/admin/v1/nodes/{}/drain", a.node_id), "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cordoned"], true);
    // The cordon is in etcd, where every controller (and a restarted one) finds it.
    let mut etcd = etcd_client::Client::connect([etcd_endpoints()], None).await.unwrap();
    let key = format!("{}/cordon/{}", cluster.prefix, a.node_id);
    assert_eq!(etcd.get(key.as_str(), None).await.unwrap().kvs().len(), 1);

    // A's instances are retired and stopped once idle; calls keep working, on B only.
    eventually(Duration::from_secs(30), "node a has no instances", || async {
        nodes(&app.api).await.iter().find(|n| n["nodeId"] == a.node_id.as_str())?["instances"].as_array()?.is_empty().then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "node a's containers removed", || async {
        helpers::containers_of(&a.node_id, Some("drained")).await.is_empty().then_some(())
    })
    .await;
    for i in 0..6 {
        let r = app.api.invoke("drained", format!("x{i}").as_bytes(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let instance = r.json()["env"]["FC_INSTANCE_ID"].as_str().unwrap().to_string();
        assert_eq!(node_of(&app.api, &instance).await.as_deref(), Some(b.node_id.as_str()));
    }

    let r = app.api.request("POST", &format!("/nubis/admin/v1/nodes/{}/uncordon", a.node_id), "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cordoned"], false);
    assert!(etcd.get(key.as_str(), None).await.unwrap().kvs().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn agents_refuse_calls_without_the_cluster_secret() {
    let cluster = Cluster::new();
    let a = cluster.agent("a");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    let addr = nodes(&app.api).await[0]["address"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some(SECRET)] {
        let mut req = http.get(format!("{addr}/internal/v1/instances"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
    }
    let ok = http.get(format!("{addr}/internal/v1/instances")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    app.shutdown().await.unwrap();
}
