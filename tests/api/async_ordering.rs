//! Ordering keys on async invocations (`x-nubis-ordering-key`), end to end on both queue
//! backends: events of one key run one at a time in accept order (also with two dispatchers,
//! the second joining mid-run, which on Kafka moves partitions in a rebalance), a failing event
//! holds its key until it has succeeded, failed for good or been stopped, other keys run
//! meanwhile, and a bad key is refused at the call.
//!
//! What ran is read from the function's own words: it prints `ORDER <key> <seq> <attempt>
//! <ok|fail> <start> <end>` (epoch seconds, taken inside the container; containers share the
//! host's clock) and the test reads those lines back through GetFunctionLogs. The task records
//! are checked too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::async_tasks::{Backend, get_task, put_config, statuses, wait_status};
use crate::helpers::*;
use crate::log_queries::{logs, messages};

const HEADER: &str = "x-nubis-ordering-key";

/// Sleeps `sleep` seconds, fails the first `fail` attempts of each event (counted per instance:
/// the retry test keeps to one instance), and reports every attempt.
const RECORDER: &str = r#"
import json, sys, threading, time
attempts = {}
lock = threading.Lock()
def handler(event, context):
    e = json.loads(event)
    name = "%s/%d" % (e["key"], e["seq"])
    with lock:
        n = attempts.get(name, 0) + 1
        attempts[name] = n
    start = time.time()
    time.sleep(e.get("sleep", 0.0))
    ok = n > e.get("fail", 0)
    # One write per line: print() writes the newline separately, and concurrent calls would
    # interleave on the instance's stdout.
    sys.stdout.write("ORDER %s %d %d %s %.6f %.6f\n" % (e["key"], e["seq"], n, "ok" if ok else "fail", start, time.time()))
    sys.stdout.flush()
    if not ok:
        raise Exception("attempt %d of %s fails on purpose" % (n, name))
    return "ok"
"#;

/// One attempt as the function reported it.
#[derive(Debug, Clone)]
struct Run {
    key: String,
    seq: usize,
    attempt: u32,
    ok: bool,
    start: f64,
    end: f64,
}

fn task_id(key: &str, seq: usize) -> String {
    format!("{key}-{seq:02}")
}

async fn invoke_keyed(app: &ApiClient, name: &str, key: &str, seq: usize, extra: Value) -> Resp {
    let mut payload = json!({"key": key, "seq": seq});
    payload.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let id = task_id(key, seq);
    let headers = [("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", id.as_str()), (HEADER, key)];
    app.invoke(name, payload.to_string().as_bytes(), &headers).await
}

/// Every `ORDER` line of the function, once at least `want` are stored.
async fn runs(app: &ApiClient, name: &str, want: usize) -> Vec<Run> {
    eventually(Duration::from_secs(60), &format!("{want} ORDER lines in the function's logs"), || async {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let next = if token.is_empty() { String::new() } else { format!("&nextToken={token}") };
            let page = logs(app, name, &format!("query=ORDER%20&limit=1000{next}")).await.json();
            for m in messages(&page) {
                let f: Vec<&str> = m.split_whitespace().collect();
                if f.len() != 7 || f[0] != "ORDER" {
                    continue;
                }
                all.push(Run {
                    key: f[1].to_string(),
                    seq: f[2].parse().unwrap(),
                    attempt: f[3].parse().unwrap(),
                    ok: f[4] == "ok",
                    start: f[5].parse().unwrap(),
                    end: f[6].parse().unwrap(),
                });
            }
            match page["nextToken"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        (all.len() >= want).then_some(all)
    })
    .await
}

/// How many of the function's tasks are in `status` (ListAsyncTasks, all pages).
async fn count_in(app: &ApiClient, name: &str, status: &str) -> usize {
    let (mut n, mut token) = (0, String::new());
    loop {
        let next = if token.is_empty() { String::new() } else { format!("&nextToken={token}") };
        let page = app.request("GET", &format!("/2023-03-30/functions/{name}/async-tasks"), &format!("status={status}&limit=100{next}"), &[], vec![]).await.json();
        n += page["tasks"].as_array().unwrap().len();
        match page["nextToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => return n,
        }
    }
}

/// Runs by key, in the order they started.
fn by_key(runs: &[Run]) -> BTreeMap<String, Vec<Run>> {
    let mut m: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for r in runs {
        m.entry(r.key.clone()).or_default().push(r.clone());
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| a.start.total_cmp(&b.start));
    }
    m
}

/// When the task's last event (its final state) was recorded, and when its first attempt
/// started (its first `Running` event).
fn first_running_and_end(task: &Value) -> (i64, i64) {
    let events = task["events"].as_array().unwrap();
    let running = events.iter().find(|e| e["status"] == "Running").unwrap_or_else(|| panic!("never ran: {task}"));
    (running["timestamp"].as_i64().unwrap(), events.last().unwrap()["timestamp"].as_i64().unwrap())
}

fn ordering_config(c: &mut nubis::config::Config) {
    c.dispatcher.poll_interval_ms = 20;
    c.dispatcher.retry_base_ms = 50;
    c.dispatcher.retry_max_ms = 200;
    c.scheduler.max_instances_per_function = 3;
}

fn recorder(name: &str, instance_concurrency: u32) -> Value {
    let mut f = python_function(name, RECORDER);
    f["instanceConcurrency"] = json!(instance_concurrency);
    f
}

/// 8 keys × 25 events, submitted concurrently across keys and one after another within a key
/// (each waits for the previous one's 202, so the accept order is known), the first half
/// through server A alone, the second half alternating between A and a second server B (its
/// own dispatcher and instances, same database and queue) started in between.
async fn each_key_runs_one_at_a_time_in_accept_order_while_keys_run_in_parallel(b: Backend) {
    const KEYS: usize = 8;
    const PER_KEY: usize = 25;
    let a = spawn_app_with(|c| {
        b.apply(c);
        ordering_config(c);
    })
    .await;
    assert_eq!(a.create_function(recorder("ordered", 4)).await.status, 200);
    let submit = |apps: Vec<ApiClient>, seqs: std::ops::Range<usize>| {
        let tasks: Vec<_> = (0..KEYS)
            .map(|k| {
                let (apps, seqs) = (apps.clone(), seqs.clone());
                tokio::spawn(async move {
                    let key = format!("k{k}");
                    for seq in seqs {
                        let app = &apps[seq % apps.len()];
                        let r = invoke_keyed(app, "ordered", &key, seq, json!({"sleep": 0.1})).await;
                        assert_eq!(r.status, 202, "{key} {seq}: {}", r.text());
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    submit(vec![a.api.clone()], 0..PER_KEY / 2).await;
    let second = spawn_app_with(|c| {
        b.apply(c);
        ordering_config(c);
        c.server.data_dir = a.data_dir.path().to_path_buf();
    })
    .await;
    submit(vec![a.api.clone(), second.api.clone()], PER_KEY / 2..PER_KEY).await;

    let start = std::time::Instant::now();
    eventually(Duration::from_secs(180), "every event Succeeded", || async {
        let n = count_in(&a, "ordered", "Succeeded").await;
        println!("{:.1}s: {n} succeeded", start.elapsed().as_secs_f64());
        (n == KEYS * PER_KEY).then_some(())
    })
    .await;
    let all = runs(&a, "ordered", KEYS * PER_KEY).await;
    assert_eq!(all.len(), KEYS * PER_KEY, "one run per event, none repeated");
    let keys = by_key(&all);
    assert_eq!(keys.len(), KEYS);
    for (key, runs) in &keys {
        let seqs: Vec<usize> = runs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..PER_KEY).collect::<Vec<_>>(), "{key} ran in accept order");
        assert!(runs.iter().all(|r| r.ok && r.attempt == 1));
        for w in runs.windows(2) {
            assert!(w[0].end <= w[1].start, "{key}: {} started at {:.3} before {} ended at {:.3}", w[1].seq, w[1].start, w[0].seq, w[0].end);
        }
    }
    // Different keys did run at the same time.
    let overlapping = all
        .iter()
        .flat_map(|x| all.iter().map(move |y| (x, y)))
        .filter(|(x, y)| x.key < y.key && x.start < y.end && y.start < x.end)
        .count();
    assert!(overlapping > 0, "keys never overlapped: no parallelism");

    // The records agree: each event of a key started after the previous one was final.
    for k in 0..KEYS {
        let key = format!("k{k}");
        let mut previous_end = i64::MIN;
        for seq in 0..PER_KEY {
            let t = wait_status(&a, "ordered", &task_id(&key, seq), "Succeeded").await;
            assert_eq!(t["orderingKey"], key.as_str());
            assert_eq!(statuses(&t), ["Enqueued", "Running", "Succeeded"], "{t}");
            let (running, end) = first_running_and_end(&t);
            assert!(running >= previous_end, "{key} {seq} started at {running}, before {} ended at {previous_end}", seq - 1);
            previous_end = end;
        }
    }
    // Both dispatchers took part (each started instances of its own).
    let (on_a, on_b) = (a.containers(Some("ordered")).await.len(), second.containers(Some("ordered")).await.len());
    println!("{KEYS} keys × {PER_KEY} events in order; {overlapping} overlapping pairs of runs of different keys; instances: A {on_a}, B {on_b}");
    assert!(on_a > 0 && on_b > 0, "instances: A {on_a}, B {on_b}");
    second.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Key K: K0 fails twice then succeeds, K1 fails for good (retries exhausted), K2 succeeds, K3
/// fails and is stopped while waiting for its retry, K4 succeeds. Each must start only after
/// the one before it is final. Key L runs meanwhile.
async fn a_failing_event_holds_its_key_until_it_is_final_while_other_keys_run(b: Backend) {
    let app = spawn_app_with(|c| {
        b.apply(c);
        ordering_config(c);
        // Retries 0.5-1 s apart: time for key L to run while K waits.
        c.dispatcher.retry_base_ms = 1_000;
        c.dispatcher.retry_max_ms = 1_000;
        // One instance: the function counts attempts in its memory.
        c.scheduler.max_instances_per_function = 1;
    })
    .await;
    assert_eq!(app.create_function(recorder("held", 4)).await.status, 200);
    let r = put_config(&app, "held", json!({"maxAsyncRetryAttempts": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let k = [json!({"fail": 2}), json!({"fail": 99}), json!({}), json!({"fail": 99, "sleep": 0.2}), json!({})];
    for (seq, extra) in k.iter().enumerate() {
        assert_eq!(invoke_keyed(&app, "held", "K", seq, extra.clone()).await.status, 202);
    }
    for seq in 0..3 {
        assert_eq!(invoke_keyed(&app, "held", "L", seq, json!({"sleep": 0.05})).await.status, 202);
    }
    // Stop K3 between its attempts.
    wait_status(&app, "held", "K-03", "Retrying").await;
    let stop = app.request("PUT", "/2023-03-30/functions/held/async-tasks/K-03/stop", "", &[], vec![]).await;
    assert_eq!(stop.status, 204, "{}", stop.text());

    let mut tasks = Vec::new();
    for (id, status) in [("K-00", "Succeeded"), ("K-01", "Failed"), ("K-02", "Succeeded"), ("K-03", "Stopped"), ("K-04", "Succeeded")] {
        tasks.push(wait_status(&app, "held", id, status).await);
    }
    for seq in 0..3 {
        wait_status(&app, "held", &task_id("L", seq), "Succeeded").await;
    }
    assert_eq!(tasks[0]["alreadyRetriedTimes"], 2);
    assert_eq!(statuses(&tasks[0]), ["Enqueued", "Running", "Retrying", "Running", "Retrying", "Running", "Succeeded"]);
    assert_eq!(tasks[1]["alreadyRetriedTimes"], 2);
    // Stopped between attempts, or (if the stop met its second attempt) when that one ended.
    let k3_attempts = statuses(&tasks[3]).iter().filter(|s| *s == "Running").count() as u32;
    assert!((1..=2).contains(&k3_attempts), "{}", tasks[3]);
    // The records: each K event started after the one before it was final.
    for w in tasks.windows(2) {
        let (_, end) = first_running_and_end(&w[0]);
        let (running, _) = first_running_and_end(&w[1]);
        assert!(running >= end, "{} started at {running}, before {} ended at {end}", w[1]["taskId"], w[0]["taskId"]);
    }

    // The function's view: 3 + 3 + 1 + (1 or 2) + 1 attempts of K, in this order, none
    // overlapping.
    let mut want = vec![(0, 1, false), (0, 2, false), (0, 3, true), (1, 1, false), (1, 2, false), (1, 3, false), (2, 1, true)];
    want.extend((1..=k3_attempts).map(|n| (3, n, false)));
    want.push((4, 1, true));
    let all = runs(&app, "held", want.len() + 3).await;
    let keys = by_key(&all);
    let k_runs: Vec<(usize, u32, bool)> = keys["K"].iter().map(|r| (r.seq, r.attempt, r.ok)).collect();
    assert_eq!(k_runs, want);
    for w in keys["K"].windows(2) {
        assert!(w[0].end <= w[1].start, "K {}#{} overlapped K {}#{}", w[1].seq, w[1].attempt, w[0].seq, w[0].attempt);
    }
    let l: Vec<usize> = keys["L"].iter().map(|r| r.seq).collect();
    assert_eq!(l, [0, 1, 2]);
    // L was not held up by K: it ran while K0 waited for its retries.
    let (k0_first_end, k0_last_start) = (keys["K"][0].end, keys["K"][2].start);
    assert!(
        keys["L"].iter().any(|r| r.start > k0_first_end && r.end < k0_last_start),
        "no L event ran while K0 waited between its attempts: K0 {k0_first_end:.3}..{k0_last_start:.3}, L {:?}",
        keys["L"]
    );
    app.shutdown().await.unwrap();
}

/// Kafka: a rebalance while keyed events run (a second dispatcher joins; with the eager
/// protocol every partition is revoked and read again from the committed offsets) delivers
/// each running event again while its attempt is still in the first dispatcher's instance (9 s
/// of work outlast the rebalance, about 3 s on the test broker, within the 10 s timeout). The
/// new delivery must neither run it a second time beside that attempt nor let the key's next
/// event start before it ends: it waits, then finds the task final and drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_a_rebalance_during_a_keyed_attempt_neither_repeats_it_nor_lets_the_next_start() {
    const KEYS: usize = 4;
    let b = Backend::kafka();
    let a = spawn_app_with(|c| {
        b.apply(c);
        ordering_config(c);
    })
    .await;
    assert_eq!(a.create_function(recorder("rebal", 4)).await.status, 200);
    for k in 0..KEYS {
        let key = format!("r{k}");
        assert_eq!(invoke_keyed(&a, "rebal", &key, 0, json!({"sleep": 9.0})).await.status, 202);
        assert_eq!(invoke_keyed(&a, "rebal", &key, 1, json!({})).await.status, 202);
    }
    for k in 0..KEYS {
        wait_status(&a, "rebal", &task_id(&format!("r{k}"), 0), "Running").await;
    }
    let second = spawn_app_with(|c| {
        b.apply(c);
        ordering_config(c);
        c.server.data_dir = a.data_dir.path().to_path_buf();
    })
    .await;
    let all = runs(&a, "rebal", KEYS * 2).await;
    let keys = by_key(&all);
    for k in 0..KEYS {
        let key = format!("r{k}");
        let long = wait_status(&a, "rebal", &task_id(&key, 0), "Succeeded").await;
        assert_eq!(statuses(&long), ["Enqueued", "Running", "Succeeded"], "run once: {long}");
        let short = wait_status(&a, "rebal", &task_id(&key, 1), "Succeeded").await;
        assert_eq!(statuses(&short), ["Enqueued", "Running", "Succeeded"], "{short}");
        assert!(first_running_and_end(&short).0 >= first_running_and_end(&long).1, "{key}: 1 started before 0 ended");
        let seqs: Vec<usize> = keys[&key].iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1], "{key}: each event ran once, in order");
        assert!(keys[&key][0].end <= keys[&key][1].start);
    }
    second.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_ordering_key_is_checked_at_the_call_and_shown_on_the_task() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("okey", PY_UPPER)).await.status, 200);
    let call = |key: Vec<u8>| {
        let app = app.api.clone();
        async move {
            let (ak, sk) = (app.ak.clone(), app.sk.clone());
            let headers = [("content-type", "application/octet-stream"), ("x-fc-invocation-type", "Async")];
            app.request_as(&ak, &sk, "POST", "/2023-03-30/functions/okey/invocations", "", &headers, b"x".to_vec(), |h| {
                h.insert(HEADER, axum::http::HeaderValue::from_bytes(&key).unwrap());
            })
            .await
        }
    };
    for bad in [&b""[..], &[b'k'; 257][..], b"tab\there", "caf\u{e9}".as_bytes(), b"\xff"] {
        let msg = call(bad.to_vec()).await.assert_error(400, "InvalidArgument");
        assert!(msg.contains(HEADER), "the message names the header: {msg}");
    }
    let key = format!("order 42/{}", "~".repeat(247));
    assert_eq!(key.len(), 256);
    let r = call(key.clone().into_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("x-fc-async-task-id").unwrap().to_string();
    let t = wait_status(&app, "okey", &id, "Succeeded").await;
    assert_eq!(t["orderingKey"], key.as_str());
    let listed = app.request("GET", "/2023-03-30/functions/okey/async-tasks", "", &[], vec![]).await.json();
    assert_eq!(listed["tasks"][0]["orderingKey"], key.as_str());
    // Without the header: no key, and the field is absent.
    let r = app.invoke("okey", b"y", &[("x-fc-invocation-type", "Async")]).await;
    let plain = get_task(&app, "okey", r.header("x-fc-async-task-id").unwrap()).await.json();
    assert!(plain.get("orderingKey").is_none(), "{plain}");
    app.shutdown().await.unwrap();
}

/// Runs each listed test body once per queue backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(crate::async_tasks::Backend::Embedded).await } )*
        }
        mod kafka {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(crate::async_tasks::Backend::kafka()).await } )*
        }
    };
}

on_both_backends!(
    each_key_runs_one_at_a_time_in_accept_order_while_keys_run_in_parallel,
    a_failing_event_holds_its_key_until_it_is_final_while_other_keys_run,
);
