//! Kafka triggers end to end: real servers, real Docker instances, the real Kafka-protocol
//! broker of NUBIS_TEST_KAFKA_BROKERS. Each test uses topics and consumer groups of its own.
//!
//! The function ([`PY_BATCH`]) prints one `BATCH {json}` line per invocation: how many events
//! it got, the payload's size, when it started and ended, and each message's key, value (cut),
//! partition and offset. A witness reads those lines from Docker (the instances' own stdout), so
//! what the function really received is checked, not what the server says it sent.
//!
//! Retries run with `kafka_triggers.retry_interval_scale = 0.01` (BACKOFF_RETRY: 100–200 ms).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nubis::config::Config;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kafka_support::*;

/// Prints what it got; fails when a value starts with `$FAIL` (if set); sleeps `$DELAY_MS`.
const PY_BATCH: &str = r#"import json, os, time
def handler(event, context):
    start = time.time()
    batch = json.loads(event)
    msgs = []
    for e in batch:
        d = e['data'] if 'specversion' in e else e
        msgs.append([d['key'], (d['value'] or '')[:40], d['partition'], d['offset']])
    delay = float(os.environ.get('DELAY_MS') or 0) / 1000
    if delay:
        time.sleep(delay)
    prefix = os.environ.get('FAIL') or ''
    fail = bool(prefix) and any((m[1] or '').startswith(prefix) for m in msgs)
    print('BATCH ' + json.dumps({'n': len(batch), 'bytes': len(event), 'start': start, 'end': time.time(),
        'failed': fail, 'first': batch[0], 'msgs': msgs}), flush=True)
    if fail:
        raise Exception('failing on purpose')
    return 'ok'
"#;

fn fast(c: &mut Config) {
    c.kafka.brokers = brokers();
    c.kafka_triggers.refresh_ms = 500;
    c.kafka_triggers.retry_interval_scale = 0.01;
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A trigger config: topic and group of its own, from the earliest offset, sync, one consumer;
/// `tweak` changes the rest.
fn trigger_config(topic: &str, group: &str, tweak: impl FnOnce(&mut Value)) -> String {
    let mut c = json!({"triggerEnable": true, "asyncInvocationType": false,
        "eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "RegionId": "cn-hangzhou", "InstanceId": "", "Topic": topic, "ConsumerGroup": group, "OffsetReset": "earliest",
            "Brokers": brokers()}}},
        "eventSinkConfig": {"deliveryOption": {"mode": "event-streaming", "eventSchema": "CloudEvents", "concurrency": 1}},
        "runOptions": {"mode": "event-streaming", "maximumTasks": 1, "errorsTolerance": "ALL",
            "retryStrategy": {"PushRetryStrategy": "BACKOFF_RETRY"},
            "batchWindow": {"CountBasedWindow": 10, "TimeBasedWindow": 1}}});
    tweak(&mut c);
    c.to_string()
}

async fn create_trigger(app: &ApiClient, function: &str, name: &str, config: &str) {
    let body = json!({"triggerName": name, "triggerType": "eventbridge", "triggerConfig": config});
    let r = app.json_request("POST", &format!("/2023-03-30/functions/{function}/triggers"), "", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn create_batch_function(app: &ApiClient, name: &str, env: Value) {
    let mut f = python_function(name, PY_BATCH);
    f["environmentVariables"] = env;
    let r = app.create_function(f).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// One invocation as the function reported it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub n: usize,
    pub bytes: usize,
    pub start: f64,
    pub end: f64,
    pub failed: bool,
    pub first: Value,
    /// (key, value) of each message, in the batch's order.
    pub msgs: Vec<(String, String)>,
}

/// The function's `BATCH` lines from the instances' stdout, as Docker keeps it: per container,
/// the latest full read (a container's log only grows until it is removed; tests scan before
/// anything they care about is removed).
#[derive(Default)]
pub struct Witness {
    per_container: Mutex<HashMap<String, Vec<Seen>>>,
}

impl Witness {
    /// Read every container of `node` again; returns every invocation seen so far, by start.
    pub async fn scan(&self, node: &str) -> Vec<Seen> {
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
            let seen: Vec<Seen> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("BATCH "))
                .map(|j| {
                    let v: Value = serde_json::from_str(j).unwrap_or_else(|e| panic!("a BATCH line ({e}): {j}"));
                    Seen {
                        n: v["n"].as_u64().unwrap() as usize,
                        bytes: v["bytes"].as_u64().unwrap() as usize,
                        start: v["start"].as_f64().unwrap(),
                        end: v["end"].as_f64().unwrap(),
                        failed: v["failed"].as_bool().unwrap(),
                        first: v["first"].clone(),
                        msgs: v["msgs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| (m[0].as_str().unwrap_or_default().to_string(), m[1].as_str().unwrap_or_default().to_string()))
                            .collect(),
                    }
                })
                .collect();
            // A container being removed may answer with less (or nothing): logs only grow.
            let mut all = self.per_container.lock().unwrap();
            if all.get(&id).is_none_or(|before| before.len() <= seen.len()) {
                all.insert(id, seen);
            }
        }
        let mut all: Vec<Seen> = self.per_container.lock().unwrap().values().flatten().cloned().collect();
        all.sort_by(|a, b| a.start.total_cmp(&b.start));
        all
    }

    /// Poll until `done` holds for what was seen.
    pub async fn until(&self, node: &str, what: &str, deadline: Duration, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        eventually(deadline, what, || async {
            let seen = self.scan(node).await;
            done(&seen).then_some(seen)
        })
        .await
    }
}

/// How many times each value was seen (in invocations that did not fail, or in all).
fn values(seen: &[Seen], only_ok: bool) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in seen.iter().filter(|s| !only_ok || !s.failed) {
        for (_, v) in &s.msgs {
            *out.entry(v.clone()).or_default() += 1;
        }
    }
    out
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The value of one sample line of /metrics, matched on the name and the given label pairs.
pub async fn metric(app: &ApiClient, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, "}"));
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok())?
    })
}

fn msgs(prefix: &str, n: usize, value: impl Fn(usize) -> String) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("{prefix}{}", i % 4), value(i))).collect()
}

#[tokio::test]
async fn batches_respect_the_count_and_time_windows_with_fcs_cloud_events() {
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "kw", json!({})).await;
    let p = producer();

    // Count: 35 messages already in the topic, 10 a batch, 2 s to fill: 10, 10, 10 at once,
    // then the last 5 when their window ends.
    let (count_topic, count_group) = (unique("kt-count"), unique("kg-count"));
    create_topic(&count_topic, 1).await;
    let ends = produce(&p, &count_topic, &msgs("c", 35, |i| format!("count-{i:02}"))).await;
    let created = epoch_secs();
    create_trigger(&app, "kw", "count", &trigger_config(&count_topic, &count_group, |c| {
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 10, "TimeBasedWindow": 2});
    }))
    .await;
    let w = Witness::default();
    let seen = w.until(&app.node_id, "35 messages", Duration::from_secs(60), |s| values(s, false).len() >= 35).await;
    let count: Vec<&Seen> = seen.iter().filter(|s| s.msgs[0].1.starts_with("count-")).collect();
    assert_eq!(count.iter().map(|s| s.n).collect::<Vec<_>>(), [10, 10, 10, 5], "batch sizes");
    // In offset order, each once.
    let order: Vec<String> = count.iter().flat_map(|s| s.msgs.iter().map(|m| m.1.clone())).collect();
    assert_eq!(order, (0..35).map(|i| format!("count-{i:02}")).collect::<Vec<_>>());
    assert!(count[3].start >= created + 2.0, "the last 5 waited for their window: {:.2} s after the create", count[3].start - created);
    all_committed(&count_group, &count_topic, 1, &ends).await;

    // FC's CloudEvent, fields as fc-triggers.md §3.3 shows them.
    let e = &count[0].first;
    assert_eq!((e["specversion"].as_str(), e["source"].as_str(), e["type"].as_str()), (Some("1.0"), Some("acs:alikafka"), Some("alikafka:Topic:Message")));
    assert_eq!(e["subject"], format!("acs:alikafka_nubis:topic:{count_topic}"));
    assert_eq!(e["aliyunaccountid"], "1000000000000000");
    let d = &e["data"];
    assert_eq!((d["topic"].as_str(), d["partition"].as_i64(), d["offset"].as_i64()), (Some(count_topic.as_str()), Some(0), Some(0)));
    assert_eq!((d["key"].as_str(), d["value"].as_str()), (Some("c0"), Some("count-00")));
    assert!(d["timestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{d}");
    assert_eq!(d["headers"], json!({"headers": [], "isReadOnly": false}));

    // Time: 100 a batch, 2 s to fill. A message to warm up (and see the consumer is at work),
    // then 3 more: one batch of 3, 2 s after the first of them was produced.
    let (time_topic, time_group) = (unique("kt-time"), unique("kg-time"));
    create_topic(&time_topic, 1).await;
    create_trigger(&app, "kw", "time", &trigger_config(&time_topic, &time_group, |c| {
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 100, "TimeBasedWindow": 2});
        c["eventSinkConfig"]["deliveryOption"]["eventSchema"] = json!("RawData");
    }))
    .await;
    produce(&p, &time_topic, &[("w".into(), "time-warm".into())]).await;
    w.until(&app.node_id, "the warm-up message", Duration::from_secs(60), |s| values(s, false).contains_key("time-warm")).await;
    let sent = epoch_secs();
    produce(&p, &time_topic, &(0..3).map(|i| ("t".to_string(), format!("time-{i}"))).collect::<Vec<_>>()).await;
    let seen = w.until(&app.node_id, "the batch of 3", Duration::from_secs(30), |s| values(s, false).contains_key("time-2")).await;
    let b = seen.iter().find(|s| s.msgs.iter().any(|m| m.1 == "time-0")).unwrap();
    assert_eq!(b.n, 3, "{b:?}");
    let waited = b.start - sent;
    assert!((2.0..6.0).contains(&waited), "the batch started {waited:.2} s after its first message (window 2 s)");
    // RawData: each element is the `data` object alone.
    assert!(b.first.get("specversion").is_none() && b.first["value"] == "time-0", "{}", b.first);

    // TimeBasedWindow 0: pushed as soon as nothing more is at hand.
    let (now_topic, now_group) = (unique("kt-now"), unique("kg-now"));
    create_topic(&now_topic, 1).await;
    create_trigger(&app, "kw", "now", &trigger_config(&now_topic, &now_group, |c| {
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 100, "TimeBasedWindow": 0});
    }))
    .await;
    produce(&p, &now_topic, &[("w".into(), "now-warm".into())]).await;
    w.until(&app.node_id, "the warm-up message", Duration::from_secs(60), |s| values(s, false).contains_key("now-warm")).await;
    let sent = epoch_secs();
    produce(&p, &now_topic, &[("n".into(), "now-1".into())]).await;
    let seen = w.until(&app.node_id, "now-1", Duration::from_secs(30), |s| values(s, false).contains_key("now-1")).await;
    let b = seen.iter().find(|s| s.msgs[0].1 == "now-1").unwrap();
    println!("kafka trigger: TimeBasedWindow 0 pushed a message {:.0} ms after it was produced", (b.start - sent) * 1000.0);
    assert!(b.start - sent < 1.5, "TimeBasedWindow 0 waited {:.2} s", b.start - sent);
    let m = metric(&app, "nubis_kafka_trigger_messages_total", &[("function", "kw"), ("trigger", "count"), ("outcome", "succeeded")]).await;
    assert_eq!(m, Some(35.0));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn async_batches_are_split_at_the_async_payload_limit() {
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "ksize", json!({})).await;
    let (topic, group) = (unique("kt-size"), unique("kg-size"));
    create_topic(&topic, 1).await;
    // FC's example (fc-triggers.md §3.2): 100 messages of 2 KB, pushed async (128 KB a push).
    let p = producer();
    let ends = produce(&p, &topic, &(0..100).map(|i| ("s".to_string(), format!("size-{i:03}-{}", "x".repeat(2000)))).collect::<Vec<_>>()).await;
    create_trigger(&app, "ksize", "size", &trigger_config(&topic, &group, |c| {
        c["asyncInvocationType"] = json!(true);
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 10000, "TimeBasedWindow": 2});
    }))
    .await;
    let w = Witness::default();
    let seen = w.until(&app.node_id, "100 messages", Duration::from_secs(90), |s| s.iter().map(|s| s.n).sum::<usize>() >= 100).await;
    let limit = 128 * 1024;
    let sizes: Vec<(usize, usize)> = seen.iter().map(|s| (s.n, s.bytes)).collect();
    println!("kafka trigger: 100 messages of 2 KB, async: pushes of (messages, bytes) {sizes:?}");
    assert_eq!(sizes.iter().map(|s| s.0).sum::<usize>(), 100);
    assert!(sizes.len() >= 2 && sizes.iter().all(|&(_, b)| b <= limit), "{sizes:?}");
    // Every push but the last was full: one more event would have passed the limit.
    let (n, bytes) = sizes[0];
    let event = (bytes - 1) / n - 1;
    assert!(bytes + event + 1 > limit, "{sizes:?}");
    let order: Vec<String> = seen.iter().flat_map(|s| s.msgs.iter().map(|m| m.1[..8].to_string())).collect();
    assert_eq!(order, (0..100).map(|i| format!("size-{i:03}")).collect::<Vec<_>>());
    // Each push is an async task named after the trigger and its messages.
    let r = app.request("GET", "/2023-03-30/functions/ksize/async-tasks", "limit=100", &[], vec![]).await;
    let tasks = r.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), sizes.len(), "{}", r.text());
    assert!(tasks.iter().all(|t| t["taskId"].as_str().unwrap().starts_with("kafka-size-")), "{}", r.text());
    all_committed(&group, &topic, 1, &ends).await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_batch_is_retried_then_dead_lettered_or_dropped_under_all() {
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "kdlq", json!({"FAIL": "bad"})).await;
    let (topic, group, dlq) = (unique("kt-all"), unique("kg-all"), unique("kt-dlq"));
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let p = producer();
    let ends = produce(&p, &topic, &[("k1".into(), "ok-1".into()), ("k2".into(), "bad-2".into()), ("k3".into(), "ok-3".into())]).await;
    create_trigger(&app, "kdlq", "all", &trigger_config(&topic, &group, |c| {
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 1, "TimeBasedWindow": 0});
        c["runOptions"]["retryStrategy"] = json!({"PushRetryStrategy": "BACKOFF_RETRY", "MaximumRetryAttempts": 2});
        c["runOptions"]["deadLetterQueue"] = json!({"Arn": format!("kafka://{dlq}")});
    }))
    .await;

    // The dead letter: the message itself (key, value), with where it came from and why.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    reader.subscribe(&[&dlq]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(60), reader.recv()).await.expect("a dead letter").unwrap();
    assert_eq!((m.key(), m.payload()), (Some(&b"k2"[..]), Some(&b"bad-2"[..])));
    let h: HashMap<String, String> =
        m.headers().unwrap().iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect();
    assert_eq!((h["nubis-source-topic"].as_str(), h["nubis-source-partition"].as_str(), h["nubis-source-offset"].as_str()), (topic.as_str(), "0", "1"));
    assert_eq!(h["nubis-trigger"], "kdlq/all");
    assert!(h["nubis-error"].contains("failing on purpose"), "{h:?}");

    // Tried 1 + 2 times; the messages around it went through once each, in order; nothing
    // was left uncommitted.
    all_committed(&group, &topic, 1, &ends).await;
    let w = Witness::default();
    let seen = w.until(&app.node_id, "ok-3", Duration::from_secs(30), |s| values(s, false).contains_key("ok-3")).await;
    let order: Vec<&str> = seen.iter().map(|s| s.msgs[0].1.as_str()).collect();
    assert_eq!(order, ["ok-1", "bad-2", "bad-2", "bad-2", "ok-3"]);
    let labels = |o| [("function", "kdlq"), ("trigger", "all"), ("outcome", o)];
    assert_eq!(metric(&app, "nubis_kafka_trigger_batches_total", &labels("dead_lettered")).await, Some(1.0));
    assert_eq!(metric(&app, "nubis_kafka_trigger_batches_total", &labels("succeeded")).await, Some(2.0));
    let retries = [("function", "kdlq"), ("trigger", "all"), ("cause", "function_error")];
    assert_eq!(metric(&app, "nubis_kafka_trigger_retries_total", &retries).await, Some(2.0));

    // Without a dead-letter queue the batch is dropped after its last retry; the stream goes on.
    let (topic2, group2) = (unique("kt-drop"), unique("kg-drop"));
    create_topic(&topic2, 1).await;
    let ends2 = produce(&p, &topic2, &[("k".into(), "bad-drop".into()), ("k".into(), "ok-after-drop".into())]).await;
    create_trigger(&app, "kdlq", "drop", &trigger_config(&topic2, &group2, |c| {
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 1, "TimeBasedWindow": 0});
        c["runOptions"]["retryStrategy"] = json!({"PushRetryStrategy": "EXPONENTIAL_DECAY_RETRY", "MaximumRetryAttempts": 3});
    }))
    .await;
    all_committed(&group2, &topic2, 1, &ends2).await;
    let seen = w.until(&app.node_id, "ok-after-drop", Duration::from_secs(30), |s| values(s, false).contains_key("ok-after-drop")).await;
    assert_eq!(values(&seen, false).get("bad-drop"), Some(&4), "1 + 3 retries");
    let dropped = [("function", "kdlq"), ("trigger", "drop"), ("outcome", "dropped")];
    assert_eq!(metric(&app, "nubis_kafka_trigger_batches_total", &dropped).await, Some(1.0));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_batch_blocks_the_stream_under_none_until_it_succeeds() {
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "knone", json!({"FAIL": "bad"})).await;
    let (topic, group) = (unique("kt-none"), unique("kg-none"));
    create_topic(&topic, 1).await;
    let p = producer();
    let sent: Vec<(String, String)> =
        ["ok-0", "bad-1", "ok-2", "ok-3"].iter().enumerate().map(|(i, v)| (format!("k{i}"), v.to_string())).collect();
    let ends = produce(&p, &topic, &sent).await;
    create_trigger(&app, "knone", "none", &trigger_config(&topic, &group, |c| {
        c["runOptions"]["errorsTolerance"] = json!("NONE");
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 1, "TimeBasedWindow": 0});
        c["runOptions"]["retryStrategy"] = json!({"PushRetryStrategy": "BACKOFF_RETRY", "MaximumRetryAttempts": 1});
    }))
    .await;
    // Past its last retry (2 attempts), the batch is tried again and again (100–200 ms apart
    // here); nothing after it runs.
    let w = Witness::default();
    let labels = [("function", "knone"), ("trigger", "none")];
    eventually(Duration::from_secs(60), "the stream blocked", || async {
        (metric(&app, "nubis_kafka_trigger_blocked", &labels).await == Some(1.0)).then_some(())
    })
    .await;
    let seen = w.until(&app.node_id, "5 attempts of bad-1", Duration::from_secs(30), |s| values(s, false).get("bad-1") >= Some(&5)).await;
    let v = values(&seen, false);
    assert_eq!((v.get("ok-0"), v.get("ok-2"), v.get("ok-3")), (Some(&1), None, None), "{v:?}");
    let c = committed(&group, &topic, 1).await;
    assert_eq!(c, [1], "committed up to the blocked batch, not past it");

    // The function is fixed: the blocked batch succeeds on its next attempt, then the rest
    // runs, in order.
    let r = app.update_function("knone", json!({"environmentVariables": {"FAIL": ""}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    all_committed(&group, &topic, 1, &ends).await;
    let seen = w.until(&app.node_id, "ok-3", Duration::from_secs(30), |s| values(s, false).contains_key("ok-3")).await;
    let ok: Vec<&str> = seen.iter().filter(|s| !s.failed).map(|s| s.msgs[0].1.as_str()).collect();
    assert_eq!(ok, ["ok-0", "bad-1", "ok-2", "ok-3"], "{seen:#?}");
    assert_eq!(metric(&app, "nubis_kafka_trigger_blocked", &labels).await, Some(0.0));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn per_key_ordering_holds_under_concurrency_while_keys_run_in_parallel() {
    const KEYS: usize = 10;
    const PER_KEY: usize = 50;
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "korder", json!({"DELAY_MS": "30"})).await;
    let (topic, group) = (unique("kt-order"), unique("kg-order"));
    create_topic(&topic, 4).await;
    // Interleaved: key-0 #0, key-1 #0, …, key-9 #0, key-0 #1, …
    let sent: Vec<(String, String)> =
        (0..PER_KEY).flat_map(|i| (0..KEYS).map(move |k| (format!("key-{k}"), format!("key-{k}/{i:03}")))).collect();
    let ends = produce(&producer(), &topic, &sent).await;
    create_trigger(&app, "korder", "ordered", &trigger_config(&topic, &group, |c| {
        c["eventSinkConfig"]["deliveryOption"]["concurrency"] = json!(8);
        c["eventSinkConfig"]["deliveryOption"]["eventSchema"] = json!("RawData");
        c["runOptions"]["orderingKey"] = json!("messageKey");
        c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 5, "TimeBasedWindow": 0});
    }))
    .await;
    let w = Witness::default();
    let seen = w.until(&app.node_id, "every message", Duration::from_secs(120), |s| values(s, false).len() >= KEYS * PER_KEY).await;
    all_committed(&group, &topic, 4, &ends).await;

    let mut per_key: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        let key = &s.msgs[0].0;
        assert!(s.msgs.iter().all(|m| &m.0 == key), "a batch holds one key: {s:?}");
        per_key.entry(key.clone()).or_default().push(s);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, batches) in &per_key {
        // The key's sequence, in the order its batches started: every message once, in order.
        let got: Vec<&str> = batches.iter().flat_map(|s| s.msgs.iter().map(|m| m.1.as_str())).collect();
        let want: Vec<String> = (0..PER_KEY).map(|i| format!("{key}/{i:03}")).collect();
        assert_eq!(got, want, "{key}");
        // One at a time: each batch of the key started after the previous one ended.
        for pair in batches.windows(2) {
            assert!(pair[1].start >= pair[0].end, "{key}: a batch started {:.3} s before the previous one ended", pair[0].end - pair[1].start);
        }
    }
    // Different keys at once: the most batches of distinct keys running at the same moment.
    let most = seen.iter().map(|s| seen.iter().filter(|o| o.start <= s.start && s.start < o.end).map(|o| &o.msgs[0].0).collect::<std::collections::BTreeSet<_>>().len()).max().unwrap();
    let batches = seen.len();
    println!("kafka trigger ordering: {KEYS} keys × {PER_KEY} messages in {batches} batches; every key in order, no overlap within a key; up to {most} keys at once (concurrency 8)");
    assert!(most >= 2, "keys never ran in parallel");
    assert!(most <= 8, "more than the concurrency at once: {most}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn kafka_trigger_changes_take_effect_and_a_deleted_trigger_stops() {
    let app = spawn_app_with(fast).await;
    create_batch_function(&app, "kchg", json!({})).await;
    let (topic, group) = (unique("kt-chg"), unique("kg-chg"));
    create_topic(&topic, 1).await;
    let p = producer();
    let cfg = |enable: bool| {
        trigger_config(&topic, &group, |c| {
            c["triggerEnable"] = json!(enable);
            c["runOptions"]["batchWindow"] = json!({"CountBasedWindow": 1, "TimeBasedWindow": 0});
        })
    };
    create_trigger(&app, "kchg", "chg", &cfg(true)).await;
    let ends = produce(&p, &topic, &[("k".into(), "chg-1".into())]).await;
    let w = Witness::default();
    w.until(&app.node_id, "chg-1", Duration::from_secs(60), |s| values(s, false).contains_key("chg-1")).await;
    all_committed(&group, &topic, 1, &ends).await;
    // Disabled: what comes now waits in the topic; enabled again, it is consumed.
    let path = "/2023-03-30/functions/kchg/triggers/chg";
    let r = app.json_request("PUT", path, "", Some(json!({"triggerConfig": cfg(false)}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The runner stops within the engine's next pass (woken by the update), and leaves the group.
    eventually(Duration::from_secs(30), "the trigger's gauges gone", || async {
        metric(&app, "nubis_kafka_trigger_lag_messages", &[("function", "kchg"), ("trigger", "chg")]).await.is_none().then_some(())
    })
    .await;
    produce(&p, &topic, &[("k".into(), "chg-2".into())]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!values(&w.scan(&app.node_id).await, false).contains_key("chg-2"), "a disabled trigger consumed");
    let r = app.json_request("PUT", path, "", Some(json!({"triggerConfig": cfg(true)}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    w.until(&app.node_id, "chg-2", Duration::from_secs(60), |s| values(s, false).contains_key("chg-2")).await;
    // Deleted: the function can go too.
    assert_eq!(app.request("DELETE", path, "", &[], vec![]).await.status, 204);
    assert_eq!(app.delete_function("kchg").await.status, 204);
    let started = Instant::now();
    app.shutdown().await.unwrap();
    println!("kafka trigger: shutdown took {:.1} s", started.elapsed().as_secs_f64());
}
