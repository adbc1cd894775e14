//! Kafka triggers in a cluster: two controller processes sharing one PostgreSQL database, one
//! etcd and one broker, and an agent. Only the scheduler leader consumes (the follower has no
//! batch at all); a `kill -9` of the leader in the middle of a topic loses nothing (messages are
//! produced before the kill and after it): the other controller leads, its consumers take the
//! trigger's group over from the committed offsets, and every message is processed at least once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nubis::store::Engine;
use serde_json::json;

use super::ha::{create_key, shared_env, start_controller};
use super::helpers::{ApiClient, eventually, python_function};
use super::kafka_support::{all_committed, create_topic, produce, produce_into, producer};
use super::*;

const MESSAGES: usize = 400;
/// Produced before the kill; the rest after it, so the new leader has work whenever the old
/// one got through the first part before it died.
const FIRST: usize = 300;

/// Prints `EXEC <value>` for each message of its batch, then works 300 ms (30 batches of the
/// first part take the leader ~4.5 s at concurrency 2: the kill mostly lands mid-topic).
const PY_EXEC: &str = "import json, time\n\
def handler(event, context):\n    \
for e in json.loads(event):\n        print('EXEC ' + e['data']['value'], flush=True)\n    \
time.sleep(0.3)\n    \
return 'ok'\n";

async fn is_leader(api: &ApiClient) -> bool {
    let r = api.request("GET", "/nubis/admin/v1/cluster", "", &[], vec![]).await;
    r.status == 200 && r.json()["role"] == "leader"
}

/// This controller's `nubis_kafka_trigger_messages_total` for the trigger, all outcomes.
async fn batches_here(api: &ApiClient) -> u64 {
    let text = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("nubis_kafka_trigger_messages_total{") && l.contains("trigger=\"logs\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Executions per value, from the stdout of every container of `node` (Docker keeps it).
async fn executions(node: &str, per_container: &mut HashMap<String, HashMap<String, usize>>) -> HashMap<String, usize> {
    use bollard::query_parameters::{ListContainersOptions, LogsOptions};
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let filters = HashMap::from([("label".to_string(), vec![format!("nubis.node={node}")])]);
    let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
        let Some(id) = c.id else { continue };
        let mut logs = docker.logs(&id, Some(LogsOptions { stdout: true, ..Default::default() }));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for v in text.lines().filter_map(|l| l.trim().strip_prefix("EXEC ")) {
            *counts.entry(v.to_string()).or_default() += 1;
        }
        // A container being removed may answer with less: logs only grow.
        let total = |c: &HashMap<String, usize>| c.values().sum::<usize>();
        if per_container.get(&id).is_none_or(|before| total(before) <= total(&counts)) {
            per_container.insert(id, counts);
        }
    }
    let mut all = HashMap::new();
    for counts in per_container.values() {
        for (v, n) in counts {
            *all.entry(v.clone()).or_default() += n;
        }
    }
    all
}

#[tokio::test]
async fn only_the_leader_consumes_and_a_leader_kill_loses_no_message() {
    let mut cluster = Cluster::new();
    cluster.etcd = Some(etcd_endpoints());
    let (db_url, _db) = databases::create_database(Engine::Postgres).await;
    let mut env = shared_env(&db_url);
    env.push(("NUBIS_KAFKA_TRIGGERS__REFRESH_MS".into(), "500".into()));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = create_key(d1.path(), &env).await;
    std::fs::copy(d1.path().join("master.key"), d2.path().join("master.key")).unwrap();
    let mut controllers =
        vec![start_controller(&cluster, "c1", "127.0.0.2", d1, &env, &key).await, start_controller(&cluster, "c2", "127.0.0.3", d2, &env, &key).await];
    let agent = cluster.agent_on("k1", "127.0.0.11", &env);
    for c in &controllers {
        wait_for_leader(&c.api).await;
        wait_for_nodes(&c.api, &[&agent.node_id], Duration::from_secs(30)).await;
    }
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (topic, group) = (format!("ck-{id}"), format!("ck-{id}"));
    create_topic(&topic, 2).await;
    let sent: Vec<(String, String)> = (0..MESSAGES).map(|i| (format!("k{}", i % 8), format!("m-{i:03}"))).collect();
    let mut ends = produce(&producer(), &topic, &sent[..FIRST]).await;

    let api = controllers[0].api.clone();
    let r = api.create_function(python_function("ksplit", PY_EXEC)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let config = json!({"eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "Topic": topic, "ConsumerGroup": group, "OffsetReset": "earliest"}}},
        "eventSinkConfig": {"deliveryOption": {"concurrency": 2}},
        "runOptions": {"batchWindow": {"CountBasedWindow": 10, "TimeBasedWindow": 1}}});
    // Through the other controller: whichever leads reads it from the database.
    let body = json!({"triggerName": "logs", "triggerType": "eventbridge", "triggerConfig": config.to_string()});
    let r = controllers[1].api.json_request("POST", "/2023-03-30/functions/ksplit/triggers", "", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let before = loop {
        let n = executions(&agent.node_id, &mut seen).await.len();
        if n >= 100 {
            break n;
        }
        assert!(Instant::now() < deadline, "only {n} messages processed after 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut leader = None;
    for (i, c) in controllers.iter().enumerate() {
        if is_leader(&c.api).await {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a controller leads");
    let survivor = controllers[1 - leader].api.clone();
    // Only the leader consumes: the follower has delivered nothing.
    assert!(batches_here(&controllers[leader].api).await > 0, "the leader delivered nothing");
    assert_eq!(batches_here(&survivor).await, 0, "a follower consumed");
    controllers[leader].proc.kill9().await;
    let killed = Instant::now();
    eventually(Duration::from_secs(30), "the other controller leads", || async { is_leader(&survivor).await.then_some(()) }).await;
    let took_over = killed.elapsed();
    produce_into(&producer(), &topic, &sent[FIRST..], &mut ends).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let e = executions(&agent.node_id, &mut seen).await;
        if e.len() >= MESSAGES {
            break e;
        }
        assert!(Instant::now() < deadline, "{} of {MESSAGES} messages processed after the takeover", e.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    all_committed(&group, &topic, 2, &ends).await;
    let total: usize = counts.values().sum();
    let missing: Vec<&String> = sent.iter().map(|(_, v)| v).filter(|v| !counts.contains_key(*v)).collect();
    println!(
        "cluster kafka trigger: produced {MESSAGES}, processed at least once {}, duplicates {} ({before} of the first {FIRST} \
         seen at the kill; the other controller led {} ms after it), missing {}",
        counts.len(),
        total - counts.len(),
        took_over.as_millis(),
        missing.len()
    );
    assert!(missing.is_empty(), "{missing:?}");
    assert!(batches_here(&survivor).await > 0, "the new leader delivered nothing");
    drop(agent);
}
