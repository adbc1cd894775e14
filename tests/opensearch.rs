//! Log shipping to OpenSearch, and GetFunctionLogs reading from it, against a real server
//! speaking the OpenSearch REST API (`bash scripts/test-services.sh start opensearch`;
//! `scripts/test.sh` starts it for the suite). Every line stored in logs.db must end up in the
//! index exactly once, also across an outage of the cluster, and invocations must never wait
//! for it; GetFunctionLogs must answer from the cluster as it does from the local store.

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/log_queries.rs"]
mod log_queries;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use helpers::{TestApp, eventually, python_function, spawn_app_with};
use nubis::logstore::LogQuery;
use serde_json::{Value, json};

const LINES_PER_CALL: usize = 50;
const MARKER: &str = "ship-marker";

fn os_url() -> String {
    std::env::var("NUBIS_TEST_OPENSEARCH_URL").expect(
        "NUBIS_TEST_OPENSEARCH_URL is not set: start the OpenSearch-API server with \
         `bash scripts/test-services.sh start opensearch` and eval its env",
    )
}

fn code() -> String {
    format!("def handler(event, context):\n    for i in range({LINES_PER_CALL}):\n        print('{MARKER}', i, flush=True)\n    return b'ok'\n")
}

/// The tests that pause the OpenSearch-API server take turns (one's SIGCONT would end the
/// other's outage) and hold it exclusively; the tests that need it answering hold it shared,
/// so no query of theirs meets another test's outage.
static OUTAGE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn pid_of_cluster() -> String {
    let pid_file = std::env::var("NUBIS_TEST_OPENSEARCH_PID_FILE").unwrap_or_else(|_| {
        format!("{}/opensearch.pid", std::env::var("NUBIS_RUN_DIR").unwrap_or_else(|_| "/tmp/nubis-run".into()))
    });
    std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("reading the OpenSearch-API server's PID from {pid_file}: {e}"))
        .trim()
        .to_string()
}

async fn app(prefix: &str) -> TestApp {
    app_on(prefix, None).await
}

/// A server shipping to `<prefix>-*`; `reuse`: the data directory and node id of an earlier one.
async fn app_on(prefix: &str, reuse: Option<(std::path::PathBuf, String)>) -> TestApp {
    let (url, prefix) = (os_url(), prefix.to_string());
    spawn_app_with(move |c| {
        if let Some((dir, node)) = reuse {
            c.server.data_dir = dir;
            c.agent.node_id = node;
        }
        c.opensearch.enabled = true;
        c.opensearch.url = url;
        c.opensearch.index_prefix = prefix;
        c.opensearch.timeout_secs = 2;
    })
    .await
}

fn unique_prefix(tag: &str) -> String {
    format!("nubis-test-{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// All stored lines of a function (from logs.db), oldest first.
async fn stored(app: &TestApp, function: &str) -> Vec<nubis::logstore::StoredLine> {
    let q = LogQuery { function: function.into(), limit: 1_000_000, ..Default::default() };
    let mut v = app.state.logs.query(&q).await.expect("query logs.db");
    v.reverse();
    v
}

async fn os_post(path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}/{path}", os_url())).json(&body).send().await.expect("reach OpenSearch");
    let status = r.status();
    let v: Value = r.json().await.expect("JSON answer");
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Documents in `<prefix>-*` matching `query`, after a refresh.
async fn os_count(prefix: &str, query: Value) -> u64 {
    let c = reqwest::Client::new();
    let _ = c.post(format!("{}/{prefix}-*/_refresh", os_url())).send().await;
    let r = c.post(format!("{}/{prefix}-*/_count", os_url())).json(&json!({"query": query})).send().await.expect("reach OpenSearch");
    if !r.status().is_success() {
        return 0; // no index yet
    }
    r.json::<Value>().await.unwrap()["count"].as_u64().unwrap_or(0)
}

/// Wait until logs.db holds every marker line and summary of `calls` calls and the index holds
/// exactly the function's stored lines; returns that count.
async fn wait_all_shipped(app: &TestApp, prefix: &str, function: &str, calls: usize) -> usize {
    eventually(Duration::from_secs(90), "every stored line is in OpenSearch", || async {
        let lines = stored(app, function).await;
        let markers = lines.iter().filter(|l| l.message.contains(MARKER)).count();
        let summaries = lines.iter().filter(|l| l.stream == "platform").count();
        if markers < calls * LINES_PER_CALL || summaries < calls {
            return None;
        }
        let in_index = os_count(prefix, json!({"term": {"functionName": function}})).await;
        (in_index == lines.len() as u64).then_some(lines.len())
    })
    .await
}

async fn invoke_ok(app: &TestApp, function: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = app.invoke(function, b"x", &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    (r.header("x-fc-request-id").expect("request id").to_string(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_line_is_shipped_once_and_searchable_by_request() {
    let _answering = OUTAGE.read().await;
    let prefix = unique_prefix("ship");
    let app = app(&prefix).await;
    let f = "shipper";
    assert_eq!(app.create_function(python_function(f, &code())).await.status, 200);
    let calls = 6;
    let mut rids = Vec::new();
    for _ in 0..calls {
        rids.push(invoke_ok(&app, f).await.0);
    }
    let total = wait_all_shipped(&app, &prefix, f, calls).await;
    println!("stored lines {total}, documents in {prefix}-* {total}");
    // One invocation's lines, by requestId: exactly those, and their content.
    let rid = &rids[2];
    let local: Vec<_> = stored(&app, f).await.into_iter().filter(|l| &l.request_id == rid).collect();
    assert!(local.len() >= LINES_PER_CALL, "{}", local.len());
    let hits = os_post(
        &format!("{prefix}-*/_search"),
        json!({"query": {"term": {"requestId": rid}}, "size": 1000, "sort": [{"@timestamp": "asc"}]}),
    )
    .await;
    let hits = hits["hits"]["hits"].as_array().expect("hits").clone();
    assert_eq!(hits.len(), local.len(), "search by requestId returns exactly that invocation's lines");
    for h in &hits {
        let s = &h["_source"];
        assert_eq!(s["requestId"], rid.as_str());
        assert_eq!(s["functionName"], f);
        assert_eq!(s["qualifier"], "LATEST");
        assert_eq!(s["node"], app.node_id.as_str());
        assert!(h["_id"].as_str().unwrap().starts_with(&format!("{}-", app.node_id)), "{h}");
        assert!(s["@timestamp"].as_str().unwrap().ends_with('Z'), "{s}");
        assert!(h["_index"].as_str().unwrap().starts_with(&format!("{prefix}-")), "{h}");
    }
    let mut msgs: Vec<_> = hits.iter().map(|h| h["_source"]["message"].as_str().unwrap().to_string()).collect();
    let mut want: Vec<_> = local.iter().map(|l| l.message.clone()).collect();
    msgs.sort();
    want.sort();
    assert_eq!(msgs, want);
    // The invocation's summary is a document of its own, with its fields structured.
    let summaries: Vec<_> = hits.iter().filter(|h| h["_source"]["stream"] == "platform").collect();
    assert_eq!(summaries.len(), 1, "one summary document per invocation");
    let s = &summaries[0]["_source"]["summary"];
    assert_eq!((s["requestId"].as_str(), s["outcome"].as_str(), s["memorySizeMB"].as_u64()), (Some(rid.as_str()), Some("success"), Some(128)), "{s}");
    assert!(s["maxMemoryUsedMB"].as_f64().is_some_and(|m| m > 0.0) && s["durationMs"].as_f64().is_some_and(|d| d > 0.0), "{s}");
    let by_field = os_count(&prefix, json!({"bool": {"filter": [
        {"term": {"summary.outcome": "success"}}, {"term": {"functionName": f}}, {"range": {"summary.durationMs": {"gt": 0}}}
    ]}}))
    .await;
    assert_eq!(by_field, calls as u64, "summaries are searchable by their fields");
    // The documents are searchable a moment before the shipper records the batch as done.
    eventually(Duration::from_secs(10), "nubis_log_lines_shipped_total counts every line", || async {
        (app.state.metrics.log_lines_shipped.get() >= total as u64).then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

/// Sends SIGCONT when dropped, so a failing test never leaves the server paused.
struct Paused(String);

fn signal(sig: &str, pid: &str) {
    let ok = std::process::Command::new("kill").args([sig, pid]).status().expect("run kill").success();
    assert!(ok, "kill {sig} {pid}");
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_cluster_delays_shipping_but_loses_and_duplicates_nothing() {
    // The outage is a paused process (SIGSTOP), not a stopped one: the test server keeps its
    // data in memory, so a restart would lose what it already held. Paused, it accepts
    // connections but answers nothing, which is the harder case (requests time out).
    let pid = pid_of_cluster();
    let _turn = OUTAGE.write().await;
    let prefix = unique_prefix("outage");
    let app = app(&prefix).await;
    let f = "outage";
    assert_eq!(app.create_function(python_function(f, &code())).await.status, 200);
    let mut rids = Vec::new();
    for _ in 0..3 {
        rids.push(invoke_ok(&app, f).await.0);
    }
    let before = wait_all_shipped(&app, &prefix, f, 3).await;
    println!("before the outage: {before} lines shipped");

    signal("-STOP", &pid);
    let paused = Paused(pid);
    let errors_before = app.state.metrics.log_shipping_errors.get();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let (rid, took) = invoke_ok(&app, f).await;
        rids.push(rid);
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Long enough for bulk requests to time out (timeout_secs = 2) and be retried.
    eventually(Duration::from_secs(20), "the shipper notices the outage", || async {
        (app.state.metrics.log_shipping_errors.get() > errors_before).then_some(())
    })
    .await;
    let backlog = app.state.metrics.log_shipping_backlog.get();
    println!("during the outage: slowest invocation {slowest:?}, backlog {backlog} lines, errors {}", app.state.metrics.log_shipping_errors.get());
    assert!(slowest < Duration::from_secs(2), "invocations must not wait for the cluster: {slowest:?}");
    drop(paused); // SIGCONT

    let calls = rids.len();
    let total = wait_all_shipped(&app, &prefix, f, calls).await;
    // Exactly once, per invocation: documents per requestId == lines stored for it.
    let aggs = os_post(
        &format!("{prefix}-*/_search"),
        json!({"size": 0, "query": {"term": {"functionName": f}},
               "aggs": {"by_request": {"terms": {"field": "requestId", "size": 1000}}}}),
    )
    .await;
    let in_index: BTreeMap<String, u64> = aggs["aggregations"]["by_request"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| (b["key"].as_str().unwrap().to_string(), b["doc_count"].as_u64().unwrap()))
        .collect();
    let mut local: BTreeMap<String, u64> = BTreeMap::new();
    for l in stored(&app, f).await {
        *local.entry(l.request_id).or_default() += 1;
    }
    println!("after the outage: {total} lines stored, {total} documents, {} request ids", local.len());
    assert_eq!(in_index, local, "documents per requestId == lines stored per requestId");
    for rid in &rids {
        assert!(local[rid] >= LINES_PER_CALL as u64, "{rid}: {}", local[rid]);
    }
    eventually(Duration::from_secs(10), "the backlog gauge is back to 0", || async {
        (app.state.metrics.log_shipping_backlog.get() == 0).then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_left_unshipped_at_shutdown_are_shipped_after_a_restart() {
    let pid = pid_of_cluster();
    let _turn = OUTAGE.write().await;
    let prefix = unique_prefix("restart");
    let app = app(&prefix).await;
    let f = "restart";
    assert_eq!(app.create_function(python_function(f, &code())).await.status, 200);
    invoke_ok(&app, f).await;
    let before = wait_all_shipped(&app, &prefix, f, 1).await;
    signal("-STOP", &pid);
    let paused = Paused(pid);
    invoke_ok(&app, f).await;
    invoke_ok(&app, f).await;
    eventually(Duration::from_secs(10), "the lines are stored", || async {
        let n = stored(&app, f).await.iter().filter(|l| l.message.contains(MARKER)).count();
        (n == 3 * LINES_PER_CALL).then_some(())
    })
    .await;
    // Shutdown makes a last, bounded attempt (it times out: the cluster is paused), keeping
    // the cursor in logs.db.
    let node = app.node_id.clone();
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("data");
    let t = Instant::now();
    app.shutdown_keeping(&dir).await;
    println!("shutdown with the cluster paused took {:?}; {before} lines shipped before", t.elapsed());
    drop(paused); // SIGCONT
    let app = app_on(&prefix, Some((dir, node))).await;
    let total = wait_all_shipped(&app, &prefix, f, 3).await;
    println!("after the restart: {total} lines stored, {total} documents");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_function_logs_reads_every_nodes_lines_from_the_cluster() {
    let _answering = OUTAGE.read().await;
    let prefix = unique_prefix("query");
    let a = app(&prefix).await;
    // A second node shipping to the same indices, whose own logs.db never sees the function run.
    let b = app(&prefix).await;
    for app in [&a, &b] {
        assert_eq!(app.create_function(python_function("talk", log_queries::TALKER)).await.status, 200);
    }
    let before = chrono::Utc::now().timestamp_millis() - 1;
    let rids = log_queries::talk(&a, "talk").await;
    log_queries::wait_visible(&b, "talk", &rids).await;
    assert!(stored(&b, "talk").await.is_empty(), "node b ran nothing: what it answers comes from the cluster");
    log_queries::check(&b, "talk", &rids, before).await;
    log_queries::check(&a, "talk", &rids, before).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_function_logs_answers_503_when_the_cluster_cannot_be_reached() {
    // Refused: a port nothing listens on (bound, then let go).
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Silent: a listener that accepts connections (the kernel does) but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    for url in [format!("http://{refused}"), format!("http://{}", silent.local_addr().unwrap())] {
        let app = spawn_app_with(|c| {
            c.opensearch.enabled = true;
            c.opensearch.url = url.clone();
            c.opensearch.timeout_secs = 1;
        })
        .await;
        assert_eq!(app.create_function(python_function("f", log_queries::TALKER)).await.status, 200);
        let t = Instant::now();
        let msg = log_queries::logs(&app, "f", "").await.assert_error(503, "ServiceUnavailable");
        println!("{url}: 503 after {:?}: {msg}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by opensearch.timeout_secs");
        // The caller's mistakes are still theirs.
        log_queries::logs(&app, "nope", "").await.assert_error(404, "FunctionNotFound");
        log_queries::logs(&app, "f", "nextToken=%21%21").await.assert_error(400, "InvalidArgument");
        app.shutdown().await.unwrap();
    }
}
