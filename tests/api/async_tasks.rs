//! Async invocations end to end, on both queue backends (embedded SQLite queue and Kafka on a
//! real Kafka-protocol broker): accept (202), dispatch through real containers, retries,
//! expiry, destinations (function, HTTP, Kafka topic), stop, task queries, durability across a
//! crash. Every test body runs once per backend (see `on_both_backends!` at the end).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Which queue the server under test uses.
#[derive(Clone)]
pub(crate) enum Backend {
    Embedded,
    Kafka(nubis::config::KafkaConfig),
}

impl Backend {
    /// Kafka on the broker named by NUBIS_TEST_KAFKA_BROKERS, with a topic and group of its own.
    pub(crate) fn kafka() -> Self {
        let brokers = std::env::var("NUBIS_TEST_KAFKA_BROKERS")
            .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env");
        let id = uuid::Uuid::new_v4().simple().to_string();
        Backend::Kafka(nubis::config::KafkaConfig {
            brokers,
            topic: format!("async-{id}"),
            group_id: format!("dispatchers-{id}"),
            partitions: 3,
            ..Default::default()
        })
    }

    pub(crate) fn apply(&self, c: &mut nubis::config::Config) {
        if let Backend::Kafka(k) = self {
            c.dispatcher.queue = "kafka".into();
            c.kafka = k.clone();
        }
    }
}

const FAILER: &str = "def handler(event, context):\n    raise ValueError('always fails: ' + event.decode())\n";
const SLEEPER: &str = "import time\ndef handler(event, context):\n    time.sleep(float(event or b'0'))\n    return 'slept'\n";

pub(crate) fn fast_retries(c: &mut nubis::config::Config) {
    c.dispatcher.retry_base_ms = 50;
    c.dispatcher.retry_max_ms = 200;
    c.dispatcher.poll_interval_ms = 20;
}

async fn invoke_async(app: &ApiClient, name: &str, payload: &[u8], task_id: Option<&str>) -> Resp {
    let mut h = vec![("x-fc-invocation-type", "Async")];
    if let Some(t) = task_id {
        h.push(("x-fc-async-task-id", t));
    }
    app.invoke(name, payload, &h).await
}

pub(crate) async fn get_task(app: &ApiClient, name: &str, id: &str) -> Resp {
    app.request("GET", &format!("/2023-03-30/functions/{name}/async-tasks/{id}"), "", &[], vec![]).await
}

pub(crate) async fn wait_status(app: &ApiClient, name: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(40), &format!("task {id} {status}"), || async {
        let t = get_task(app, name, id).await.json();
        (t["status"] == status).then_some(t)
    })
    .await
}

pub(crate) fn statuses(task: &Value) -> Vec<String> {
    task["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_string()).collect()
}

pub(crate) async fn put_config(app: &ApiClient, name: &str, cfg: Value) -> Resp {
    app.request(
        "PUT",
        &format!("/2023-03-30/functions/{name}/async-invoke-config"),
        "",
        &[("content-type", "application/json")],
        cfg.to_string().into_bytes(),
    )
    .await
}

/// An HTTP destination on 127.0.0.1 that records what it receives.
async fn http_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

async fn async_invoke_is_accepted_queryable_at_once_and_succeeds(b: Backend) {
    let app = spawn_app_with(|c| b.apply(c)).await;
    assert_eq!(app.create_function(python_function("aok", PY_UPPER)).await.status, 200);
    let r = invoke_async(&app, "aok", b"hello", Some("task-1")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-fc-async-task-id"), Some("task-1"));
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    // Queryable the moment the 202 is sent.
    let t = get_task(&app, "aok", "task-1").await;
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.json()["requestId"], rid.as_str());

    let t = wait_status(&app, "aok", "task-1", "Succeeded").await;
    assert_eq!(t["returnPayload"], "HELLO");
    assert_eq!(t["taskPayload"], "hello");
    assert_eq!(t["alreadyRetriedTimes"], 0);
    assert!(t["startedTime"].is_i64() && t["endTime"].is_i64() && t["durationMs"].is_i64(), "{t}");
    assert!(t["functionArn"].as_str().unwrap().ends_with(":functions/aok"));
    assert_eq!(statuses(&t), ["Enqueued", "Running", "Succeeded"]);

    invoke_async(&app, "aok", b"again", Some("task-1")).await.assert_error(409, "AsyncTaskAlreadyExists");
    // Without a task id one is generated.
    let r = invoke_async(&app, "aok", b"x", None).await;
    assert_eq!(r.status, 202);
    let generated = r.header("x-fc-async-task-id").unwrap().to_string();
    wait_status(&app, "aok", &generated, "Succeeded").await;
    app.shutdown().await.unwrap();
}

async fn async_invoke_refuses_bad_input_at_the_call(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        c.limits.max_async_payload_bytes = 1024;
    })
    .await;
    assert_eq!(app.create_function(python_function("abad", PY_UPPER)).await.status, 200);
    invoke_async(&app, "nope", b"x", None).await.assert_error(404, "FunctionNotFound");
    invoke_async(&app, "abad", &[b'x'; 1025], None).await.assert_error(400, "EntityTooLarge");
    invoke_async(&app, "abad", b"x", Some("1-bad id")).await.assert_error(400, "InvalidArgument");
    get_task(&app, "abad", "never").await.assert_error(404, "AsyncTaskNotFound");
    app.shutdown().await.unwrap();
}

async fn failures_are_retried_then_fail_and_reach_the_failure_destination(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
    })
    .await;
    let (url, got) = http_sink().await;
    assert_eq!(app.create_function(python_function("afail", FAILER)).await.status, 200);
    let r = put_config(&app, "afail", json!({"maxAsyncRetryAttempts": 2, "destinationConfig": {"onFailure": {"destination": url}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(invoke_async(&app, "afail", b"payload-1", Some("f1")).await.status, 202);
    let t = wait_status(&app, "afail", "f1", "Failed").await;
    assert_eq!(t["alreadyRetriedTimes"], 2);
    assert!(t["taskErrorMessage"].as_str().unwrap().contains("always fails: payload-1"), "{t}");
    assert_eq!(statuses(&t), ["Enqueued", "Running", "Retrying", "Running", "Retrying", "Running", "Failed"]);
    assert!(t["destinationStatus"].as_str().unwrap().starts_with("Succeeded"), "{t}");
    let records = got.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "delivered once: {records:?}");
    let rec = &records[0];
    assert_eq!(rec["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(rec["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(rec["requestPayload"], "payload-1");
    assert!(rec["responsePayload"].as_str().unwrap().contains("always fails"));
    app.shutdown().await.unwrap();
}

async fn success_destination_invokes_another_function(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
    })
    .await;
    assert_eq!(app.create_function(python_function("asrc", PY_UPPER)).await.status, 200);
    assert_eq!(app.create_function(python_function("adst", PY_UPPER)).await.status, 200);
    let arn = "acs:fc:cn-hangzhou:1000000000000000:functions/adst";
    let r = put_config(&app, "asrc", json!({"destinationConfig": {"onSuccess": {"destination": arn}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["destinationConfig"]["onSuccess"]["destination"], arn);
    assert_eq!(invoke_async(&app, "asrc", b"chain me", Some("s1")).await.status, 202);
    let t = wait_status(&app, "asrc", "s1", "Succeeded").await;
    assert!(t["destinationStatus"].as_str().unwrap().contains("adst"), "{t}");
    let downstream = eventually(Duration::from_secs(30), "destination function ran", || async {
        let l = app.request("GET", "/2023-03-30/functions/adst/async-tasks", "includePayload=true", &[], vec![]).await.json();
        let tasks = l["tasks"].as_array().unwrap().clone();
        tasks.into_iter().find(|t| t["status"] == "Succeeded")
    })
    .await;
    let rec: Value = serde_json::from_str(downstream["taskPayload"].as_str().unwrap()).unwrap();
    assert_eq!(rec["requestContext"]["condition"], "Success");
    assert_eq!(rec["requestPayload"], "chain me");
    assert_eq!(rec["responsePayload"], "CHAIN ME");
    // The destination function's result is the upper-cased record.
    assert!(downstream["returnPayload"].as_str().unwrap().contains("\"CONDITION\": \"SUCCESS\"") || downstream["returnPayload"].as_str().unwrap().contains("\"CONDITION\":\"SUCCESS\""));
    app.shutdown().await.unwrap();
}

async fn old_events_expire_before_they_run(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
        c.scheduler.max_instances_per_function = 1;
    })
    .await;
    let (url, got) = http_sink().await;
    assert_eq!(app.create_function(python_function("aexp", SLEEPER)).await.status, 200);
    // Warm up first: a Kafka consumer group takes a moment to join, longer than the age limit.
    assert_eq!(invoke_async(&app, "aexp", b"0", Some("warm")).await.status, 202);
    wait_status(&app, "aexp", "warm", "Succeeded").await;
    let r = put_config(&app, "aexp", json!({"maxAsyncEventAgeInSeconds": 1, "destinationConfig": {"onFailure": {"destination": url}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One instance, busy for 3 s: the second event waits past its 1 s age limit.
    assert_eq!(invoke_async(&app, "aexp", b"3", Some("e1")).await.status, 202);
    wait_status(&app, "aexp", "e1", "Running").await;
    assert_eq!(invoke_async(&app, "aexp", b"0", Some("e2")).await.status, 202);
    wait_status(&app, "aexp", "e1", "Succeeded").await;
    let t = wait_status(&app, "aexp", "e2", "Expired").await;
    assert!(!statuses(&t).contains(&"Running".to_string()), "an expired event never ran: {t}");
    let records = got.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["requestContext"]["condition"], "EventExpired");
    app.shutdown().await.unwrap();
}

async fn stop_async_task_stops_waiting_and_running_tasks(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
        c.scheduler.max_instances_per_function = 1;
    })
    .await;
    assert_eq!(app.create_function(python_function("astop", SLEEPER)).await.status, 200);
    assert_eq!(invoke_async(&app, "astop", b"3", Some("run")).await.status, 202);
    wait_status(&app, "astop", "run", "Running").await;
    // The one instance is busy: this one waits in the queue.
    assert_eq!(invoke_async(&app, "astop", b"0", Some("wait")).await.status, 202);
    let stop = |id: &'static str| {
        let app = app.api.clone();
        async move { app.request("PUT", &format!("/2023-03-30/functions/astop/async-tasks/{id}/stop"), "", &[], vec![]).await }
    };
    assert_eq!(stop("wait").await.status, 204);
    assert_eq!(stop("run").await.status, 204);
    let t = wait_status(&app, "astop", "wait", "Stopped").await;
    assert!(!statuses(&t).contains(&"Running".to_string()), "{t}");
    let t = wait_status(&app, "astop", "run", "Stopped").await;
    assert!(statuses(&t).contains(&"Stopping".to_string()), "{t}");
    stop("run").await.assert_error(400, "InvalidArgument");
    stop("ghost").await.assert_error(404, "AsyncTaskNotFound");
    app.shutdown().await.unwrap();
}

async fn list_async_tasks_filters_and_pages(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
    })
    .await;
    assert_eq!(app.create_function(python_function("alist", PY_UPPER)).await.status, 200);
    for i in 1..=5 {
        assert_eq!(invoke_async(&app, "alist", format!("e{i}").as_bytes(), Some(&format!("p-{i}"))).await.status, 202);
    }
    assert_eq!(invoke_async(&app, "alist", b"other", Some("q-1")).await.status, 202);
    for i in 1..=5 {
        wait_status(&app, "alist", &format!("p-{i}"), "Succeeded").await;
    }
    let list = |q: String| {
        let app = app.api.clone();
        async move { app.request("GET", "/2023-03-30/functions/alist/async-tasks", &q, &[], vec![]).await }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let q = format!("prefix=p-&limit=2&sortOrderByTime=asc&status=Succeeded{}", if token.is_empty() { String::new() } else { format!("&nextToken={token}") });
        let page = list(q).await.json();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2);
        assert!(tasks.iter().all(|t| t.get("taskPayload").is_none()), "payload only when asked");
        seen.extend(tasks.iter().map(|t| t["taskId"].as_str().unwrap().to_string()));
        match page["nextToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["p-1", "p-2", "p-3", "p-4", "p-5"]);
    let desc = list("prefix=p-&limit=1&includePayload=True".into()).await.json();
    assert_eq!(desc["tasks"][0]["taskId"], "p-5", "newest first by default");
    assert_eq!(desc["tasks"][0]["taskPayload"], "e5");
    list("status=Bogus".into()).await.assert_error(400, "InvalidArgument");
    list("limit=0".into()).await.assert_error(400, "InvalidArgument");
    app.shutdown().await.unwrap();
}

async fn async_invoke_config_crud_and_validation(b: Backend) {
    let app = spawn_app_with(|c| b.apply(c)).await;
    assert_eq!(app.create_function(python_function("acfg", PY_UPPER)).await.status, 200);
    let path = "/2023-03-30/functions/acfg/async-invoke-config";
    app.request("GET", path, "", &[], vec![]).await.assert_error(404, "AsyncConfigNotExists");
    let r = put_config(&app, "acfg", json!({"maxAsyncRetryAttempts": 1, "maxAsyncEventAgeInSeconds": 600, "asyncTask": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!((j["maxAsyncRetryAttempts"].as_i64(), j["maxAsyncEventAgeInSeconds"].as_i64()), (Some(1), Some(600)));
    assert!(j["functionArn"].as_str().unwrap().ends_with(":functions/acfg"));
    assert_eq!(app.request("GET", path, "qualifier=LATEST", &[], vec![]).await.json()["asyncTask"], true);
    let l = app.request("GET", "/2023-03-30/async-invoke-configs", "functionName=acfg", &[], vec![]).await.json();
    assert_eq!(l["configs"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"maxAsyncRetryAttempts": 9}),
        json!({"maxAsyncEventAgeInSeconds": 0}),
        json!({"destinationConfig": {"onFailure": {"destination": "acs:mns:cn-hangzhou:1:/queues/q/messages"}}}),
        json!({"maxAsyncRetryAttempts": "two"}),
    ] {
        put_config(&app, "acfg", bad.clone()).await.assert_error(400, "InvalidArgument");
    }
    put_config(&app, "missing", json!({})).await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.request("DELETE", path, "", &[], vec![]).await.status, 204);
    app.request("GET", path, "", &[], vec![]).await.assert_error(404, "AsyncConfigNotExists");
    app.shutdown().await.unwrap();
}

async fn accepted_events_survive_a_crash_and_run_after_restart(b: Backend) {
    // Accept with no dispatcher running, crash, restart with one: every event runs.
    let app = spawn_app_with(|c| {
        b.apply(c);
        c.dispatcher.enabled = false;
    })
    .await;
    let node = app.node_id.clone();
    assert_eq!(app.create_function(python_function("adur", PY_UPPER)).await.status, 200);
    for i in 0..20 {
        assert_eq!(invoke_async(&app, "adur", format!("d{i}").as_bytes(), Some(&format!("d-{i}"))).await.status, 202);
    }
    let data = app.crash().await;
    let again = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
        c.agent.node_id = node.clone();
        c.server.data_dir = data.path().to_path_buf();
    })
    .await;
    for i in 0..20 {
        let t = wait_status(&again, "adur", &format!("d-{i}"), "Succeeded").await;
        assert_eq!(t["returnPayload"], format!("D{i}"));
    }
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn kafka_destinations_are_refused_without_the_kafka_backend() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("akno", PY_UPPER)).await.status, 200);
    let dest = json!({"destinationConfig": {"onSuccess": {"destination": "acs:kafka:cn-hangzhou:1:topics/t"}}});
    put_config(&app, "akno", dest).await.assert_error(400, "InvalidArgument");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn kafka_topic_destination_receives_the_record() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let b = Backend::kafka();
    let Backend::Kafka(k) = &b else { unreachable!() };
    let topic = format!("dest-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    let app = spawn_app_with(|c| {
        b.apply(c);
        fast_retries(c);
    })
    .await;
    assert_eq!(app.create_function(python_function("akd", FAILER)).await.status, 200);
    let dest = format!("acs:kafka:cn-hangzhou:1:topics/{topic}");
    let r = put_config(&app, "akd", json!({"maxAsyncRetryAttempts": 0, "destinationConfig": {"onFailure": {"destination": dest}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(invoke_async(&app, "akd", b"to kafka", Some("k1")).await.status, 202);
    let t = wait_status(&app, "akd", "k1", "Failed").await;
    assert!(t["destinationStatus"].as_str().unwrap().starts_with("Succeeded"), "{t}");
    consumer.subscribe(&[&topic]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("record on the topic").unwrap();
    assert_eq!(m.key(), Some(&b"akd"[..]));
    let rec: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(rec["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(rec["requestPayload"], "to kafka");
    app.shutdown().await.unwrap();
}

/// Runs each listed test body once per queue backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Embedded).await } )*
        }
        mod kafka {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::kafka()).await } )*
        }
    };
}

on_both_backends!(
    async_invoke_is_accepted_queryable_at_once_and_succeeds,
    async_invoke_refuses_bad_input_at_the_call,
    failures_are_retried_then_fail_and_reach_the_failure_destination,
    success_destination_invokes_another_function,
    old_events_expire_before_they_run,
    stop_async_task_stops_waiting_and_running_tasks,
    list_async_tasks_filters_and_pages,
    async_invoke_config_crud_and_validation,
    accepted_events_survive_a_crash_and_run_after_restart,
);
