//! Timer triggers, end to end: real servers, real Docker instances, real time. The servers run
//! with `timers.min_interval_secs = 1`, so schedules tick every second or few and a test takes
//! seconds. Executions are counted by a witness (the function prints each event; Docker keeps
//! the output), ticks fired by the async tasks they became.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use nubis::config::Config;
use nubis::dispatcher::{AsyncMessage, Origin};
use nubis::queue::QueueMessage;
use nubis::triggers::timer::{TimerEvent, task_id, trigger_time};
use serde_json::{Value, json};

use super::helpers::{ApiClient, eventually, python_function, spawn_app, spawn_app_with};
use super::timer_support::{PY_TIMER, TickTask, firings, secs, tick_tasks, witnessed};

fn fast(c: &mut Config) {
    c.timers.min_interval_secs = 1;
    c.timers.refresh_ms = 500;
}

fn config(expr: &str, payload: Option<&str>, enable: bool) -> String {
    let mut c = json!({"cronExpression": expr, "enable": enable});
    if let Some(p) = payload {
        c["payload"] = json!(p);
    }
    c.to_string()
}

async fn create_timer(api: &ApiClient, function: &str, name: &str, config: &str) -> super::helpers::Resp {
    let body = json!({"triggerName": name, "triggerType": "timer", "triggerConfig": config});
    api.json_request("POST", &format!("/2023-03-30/functions/{function}/triggers"), "", Some(body)).await
}

async fn update_timer(api: &ApiClient, function: &str, name: &str, config: &str) -> super::helpers::Resp {
    let body = json!({"triggerConfig": config});
    api.json_request("PUT", &format!("/2023-03-30/functions/{function}/triggers/{name}"), "", Some(body)).await
}

/// Wait until every task of `function` is final (a tick cut off by a crash comes back after its
/// lease), then return them.
async fn settled(api: &ApiClient, function: &str) -> Vec<TickTask> {
    eventually(Duration::from_secs(90), "every tick's task final", || async {
        let tasks = tick_tasks(api, function).await;
        tasks.iter().all(|t| ["Succeeded", "Failed", "Stopped", "Expired", "Invalid"].contains(&t.status.as_str())).then_some(tasks)
    })
    .await
}

/// Sleep until `at` (wall clock).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(d) = (at - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

/// Every tick's executions, from the witness: exactly one each, except that an attempt cut off
/// by a crash may run again (recorded on its task as a re-delivery: at-least-once delivery).
fn assert_each_ran_once(tasks: &[TickTask], trigger: &str, seen: &HashMap<(String, String), usize>) {
    let mut problems = Vec::new();
    for t in tasks {
        let n = seen.get(&(trigger.to_string(), trigger_time(t.tick))).copied().unwrap_or(0);
        if n == 0 || n > 1 + t.redeliveries {
            problems.push(format!("{}: executed {n} times, re-delivered {}: {}", trigger_time(t.tick), t.redeliveries, t.raw));
        }
    }
    let fired: Vec<String> = tasks.iter().map(|t| trigger_time(t.tick)).collect();
    for ((name, time), n) in seen {
        if name == trigger && !fired.contains(time) {
            problems.push(format!("{time}: executed {n} times without a task"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn an_every_second_timer_fires_each_tick_once_with_fcs_event_until_disabled() {
    let app = spawn_app_with(fast).await;
    assert_eq!(app.create_function(python_function("clock", PY_TIMER)).await.status, 200);
    // FC does not invoke async destinations for timer calls: this one (a function that does not
    // exist) would leave a failed destinationStatus on every task if it were tried.
    let dest = json!({"destinationConfig": {"onSuccess": {"destination": "acs:fc:cn-hangzhou:1000000000000000:functions/nowhere"}}});
    let r = app.json_request("PUT", "/2023-03-30/functions/clock/async-invoke-config", "", Some(dest)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let created = Utc::now();
    let r = create_timer(&app, "clock", "tick", &config("@every 1s", Some("hello ✓"), true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let disabled = Utc::now();
    let r = update_timer(&app, "clock", "tick", &config("@every 1s", Some("hello ✓"), false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Disabled: no tick after the update (a step under way may still fire the one of its second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = tick_tasks(&app, "clock").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = settled(&app, "clock").await;
    assert_eq!(tasks.len(), n, "a disabled timer fired");

    let ticks = secs(&tasks);
    println!("timer: {} ticks fired in {:.1} s", ticks.len(), (disabled - created).as_seconds_f64());
    // Each second after the create (whose time is kept to the second) up to the disable, once:
    // ±1 at the edges.
    let expected = disabled.timestamp() - created.timestamp();
    assert!((ticks.len() as i64 - expected).abs() <= 1, "{} ticks in {expected} s: {ticks:?}", ticks.len());
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "ticks not consecutive: {ticks:?}");
    assert!(ticks[0] > created.timestamp() - 1 && *ticks.last().unwrap() <= disabled.timestamp() + 1, "{ticks:?}");
    for t in &tasks {
        assert_eq!(t.status, "Succeeded", "{}", t.raw);
        // FC's event, fields in FC's order, triggerTime in UTC on the whole second.
        let expected = serde_json::to_string(&TimerEvent { trigger_time: trigger_time(t.tick), trigger_name: "tick", payload: "hello ✓" }).unwrap();
        assert_eq!(t.raw["taskPayload"], expected.as_str());
        assert_eq!(t.event["triggerTime"].as_str().unwrap().len(), "2023-12-26T07:49:00Z".len());
        assert_eq!(t.task_id, task_id("tick", t.tick));
        assert_eq!(t.raw["qualifier"], "LATEST");
        assert_eq!(t.raw["returnPayload"], expected.as_str());
        assert!(t.raw.get("destinationStatus").is_none(), "a destination was invoked: {}", t.raw);
    }
    assert_each_ran_once(&tasks, "tick", &witnessed(std::slice::from_ref(&app.node_id)).await);
    let m = firings(&app).await;
    assert_eq!(m.get(&("clock".into(), "fired".into())), Some(&(tasks.len() as u64)), "{m:?}");
    assert_eq!(m.get(&("clock".into(), "duplicate".into())), None, "{m:?}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_updated_expression_takes_effect_at_once_and_delete_stops_the_timer() {
    let app = spawn_app_with(fast).await;
    assert_eq!(app.create_function(python_function("cron", PY_TIMER)).await.status, 200);
    // Seconds divisible by 2, then by 3 (a second-precision cron, then an interval).
    let r = create_timer(&app, "cron", "beat", &config("*/2 * * * * *", None, true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(20), "3 even ticks", || async { (tick_tasks(&app, "cron").await.len() >= 3).then_some(()) }).await;
    let updated = Utc::now();
    let r = update_timer(&app, "cron", "beat", &config("@every 3s", Some("p"), true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(20), "2 ticks of the new schedule", || async {
        (tick_tasks(&app, "cron").await.iter().filter(|t| t.tick > updated).count() >= 2).then_some(())
    })
    .await;
    let deleted = Utc::now();
    let r = app.request("DELETE", "/2023-03-30/functions/cron/triggers/beat", "", &[], vec![]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tasks = settled(&app, "cron").await;
    let (before, after): (Vec<&TickTask>, Vec<&TickTask>) = tasks.iter().partition(|t| t.tick.timestamp() <= updated.timestamp());
    assert!(before.iter().all(|t| t.tick.timestamp() % 2 == 0 && t.event["payload"] == ""), "{:?}", secs(&tasks));
    assert!(after.iter().all(|t| t.tick.timestamp() % 3 == 0 && t.event["payload"] == "p"), "{:?}", secs(&tasks));
    assert!(tasks.iter().all(|t| t.tick.timestamp() <= deleted.timestamp() + 1), "fired after the delete: {:?}", secs(&tasks));
    assert_each_ran_once(&tasks, "beat", &witnessed(std::slice::from_ref(&app.node_id)).await);
    // The function can go now that its trigger has.
    assert_eq!(app.delete_function("cron").await.status, 204);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn timer_expressions_are_validated_with_fcs_one_minute_minimum() {
    let app = spawn_app().await;
    assert_eq!(app.create_function(python_function("v", PY_TIMER)).await.status, 200);
    for bad in [
        "0 0 4 * *",
        "0 0 4 * * * 2024",
        "@every 5x",
        "@every",
        "CRON_TZ=Nowhere/Else 0 0 4 * * *",
        "@reboot",
        "61 * * * * *",
        // Below the minimum (one minute by default).
        "@every 30s",
        "*/10 * * * * *",
    ] {
        let msg = create_timer(&app, "v", "bad", &config(bad, None, true)).await.assert_error(400, "InvalidArgument");
        assert!(msg.contains("cronExpression"), "{bad}: {msg}");
    }
    let big = "x".repeat(128 * 1024 + 1);
    let msg = create_timer(&app, "v", "bad", &config("@every 1m", Some(&big), true)).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("payload"), "{msg}");
    for (i, good) in [
        "@every 5m",
        "@every 1h30m",
        "0 0 4 * * *",
        "0 */5 * * * ?",
        "30 15 10 ? * MON-FRI",
        "CRON_TZ=Asia/Shanghai 0 0 4 1 * *",
        "@daily",
        "@hourly",
    ]
    .into_iter()
    .enumerate()
    {
        let r = create_timer(&app, "v", &format!("good{i}"), &config(good, Some("p"), false)).await;
        assert_eq!(r.status, 200, "{good}: {}", r.text());
    }
    let msg = update_timer(&app, "v", "good0", &config("@every 10s", None, true)).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("cronExpression") && msg.contains("minimum"), "{msg}");
    let r = update_timer(&app, "v", "good0", &config("@every 2m", None, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.shutdown().await.unwrap();
}

/// The queued form of a tick as a controller that crashed right after queueing it would have
/// left it: a message and no task row.
fn orphan(function: &str, trigger: &str, tick: DateTime<Utc>, enqueued_ms: i64) -> QueueMessage {
    use base64::Engine;
    let event = serde_json::to_vec(&TimerEvent { trigger_time: trigger_time(tick), trigger_name: trigger, payload: "" }).unwrap();
    let msg = AsyncMessage {
        function_name: function.into(),
        qualifier: "LATEST".into(),
        task_id: task_id(trigger, tick),
        request_id: nubis::model::new_request_id(),
        payload: base64::engine::general_purpose::STANDARD.encode(event),
        enqueued_ms,
        origin: Origin::Timer,
        ordering_key: None,
    };
    QueueMessage::new(function, serde_json::to_vec(&msg).unwrap())
}

/// A tick submitted again (a new leader after a failover, a restart mid-tick) runs once: what
/// a crash between queueing a tick and recording its task leaves is repaired or dropped, never
/// run beside the tick's own submit.
#[tokio::test]
async fn a_tick_submitted_twice_runs_once() {
    let app = spawn_app_with(fast).await;
    assert_eq!(app.create_function(python_function("twice", PY_TIMER)).await.status, 200);
    let r = create_timer(&app, "twice", "tick", &config("@every 1s", None, true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let base = Utc.timestamp_opt(Utc::now().timestamp() + 4, 0).unwrap();
    let at = |i: i64| base + chrono::Duration::seconds(i);
    let long_ago = nubis::dispatcher::now_ms() - 60_000;
    // Ticks 0 and 1: orphans old enough to be recovered at once, before the engine fires them.
    // Tick 2: two of them (two submitters that both crashed before their row). Tick 3: a fresh
    // one, which waits for its row while the engine's own submit of the tick writes it.
    let mut orphans = vec![orphan("twice", "tick", at(0), long_ago), orphan("twice", "tick", at(1), long_ago)];
    orphans.push(orphan("twice", "tick", at(2), long_ago));
    orphans.push(orphan("twice", "tick", at(2), long_ago));
    orphans.push(orphan("twice", "tick", at(3), nubis::dispatcher::now_ms()));
    for m in orphans {
        app.state.queue.enqueue(m).await.unwrap();
    }
    sleep_until(at(3) + chrono::Duration::seconds(2)).await;
    let r = update_timer(&app, "twice", "tick", &config("@every 1s", None, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = settled(&app, "twice").await;
    let ticks = secs(&tasks);
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "ticks not consecutive: {ticks:?}");
    for i in 0..4 {
        let t = tasks.iter().find(|t| t.tick == at(i)).unwrap_or_else(|| panic!("tick {i} missing: {ticks:?}"));
        assert_eq!(t.status, "Succeeded", "{}", t.raw);
        let recovered = t.raw["events"][0]["eventDetail"].as_str().unwrap().starts_with("recovered from the queue");
        assert_eq!(recovered, i < 3, "tick {i}: {}", t.raw);
    }
    assert_each_ran_once(&tasks, "tick", &witnessed(std::slice::from_ref(&app.node_id)).await);
    let m = firings(&app).await;
    assert!(m.get(&("twice".into(), "duplicate".into())).copied().unwrap_or(0) >= 3, "{m:?}");
    app.shutdown().await.unwrap();
}

/// A `nubis server` process on a data directory; killed with the test.
struct ServerProcess {
    child: tokio::process::Child,
    api: ApiClient,
}

async fn admin_key(dir: &Path) -> (String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nubis"))
        .args(["admin", "create-key", "--output", "json", "--data-dir"])
        .arg(dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    (j["accessKeyId"].as_str().unwrap().to_string(), j["accessKeySecret"].as_str().unwrap().to_string())
}

async fn start_server(dir: &Path, node_id: &str, key: &(String, String)) -> ServerProcess {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nubis.log")).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nubis"))
        .args(["server", "--listen", &addr.to_string(), "--node-id", node_id, "--data-dir"])
        .arg(dir)
        .envs([
            ("NUBIS_AGENT__PULL_MISSING_IMAGES", "false"),
            ("NUBIS_AGENT__WARM_POOL__ENABLED", "false"),
            ("NUBIS_TIMERS__MIN_INTERVAL_SECS", "1"),
            ("NUBIS_TIMERS__REFRESH_MS", "500"),
            ("RUST_LOG", "info"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(60), "the server answers", || async {
        reqwest::get(format!("http://{addr}/health")).await.ok()?.status().is_success().then_some(())
    })
    .await;
    ServerProcess { child, api: ApiClient::new(addr, &key.0, &key.1) }
}

async fn remove_containers(node_id: &str) {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    for c in super::helpers::containers_of(node_id, None).await {
        let opts = bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() };
        let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(opts)).await;
    }
}

/// `kill -9` of the server right after a tick, back after two more ticks went by: nothing runs
/// twice, the tick it was killed after is not fired again, the older missed tick is skipped
/// and the most recent one is fired late (the missed-tick policy).
#[tokio::test]
async fn a_server_killed_mid_schedule_fires_no_tick_twice_and_fires_the_latest_missed_tick_late() {
    nubis::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(dir.path()).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let nodes = [format!("timer-a-{}", &tag[..8]), format!("timer-b-{}", &tag[..8])];
    let mut a = start_server(dir.path(), &nodes[0], &key).await;
    assert_eq!(a.api.create_function(python_function("survivor", PY_TIMER)).await.status, 200);
    let r = create_timer(&a.api, "survivor", "tick", &config("@every 3s", None, true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(30), "two ticks", || async { (tick_tasks(&a.api, "survivor").await.len() >= 2).then_some(()) }).await;
    // Kill it as soon as the next tick is recorded.
    let n = tick_tasks(&a.api, "survivor").await.len();
    let t0 = eventually(Duration::from_secs(10), "the next tick", || async {
        let tasks = tick_tasks(&a.api, "survivor").await;
        (tasks.len() > n).then(|| tasks.last().unwrap().tick)
    })
    .await;
    a.child.kill().await.unwrap();
    let secs3 = |k: i64| t0 + chrono::Duration::seconds(3 * k);
    // Down over t0+3 and t0+6; back 0.3 s after t0+6.
    sleep_until(secs3(2) + chrono::Duration::milliseconds(300)).await;
    let b = start_server(dir.path(), &nodes[1], &key).await;
    eventually(Duration::from_secs(30), "ticks after the restart", || async {
        (tick_tasks(&b.api, "survivor").await.last().is_some_and(|t| t.tick >= secs3(4))).then_some(())
    })
    .await;
    let r = update_timer(&b.api, "survivor", "tick", &config("@every 3s", None, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tasks = settled(&b.api, "survivor").await;
    let ticks = secs(&tasks);
    println!("killed after {}; fired: {:?}", trigger_time(t0), ticks.iter().map(|s| s - t0.timestamp()).collect::<Vec<_>>());
    let before: Vec<i64> = ticks.iter().copied().filter(|s| *s <= t0.timestamp()).collect();
    assert!(before.windows(2).all(|w| w[1] == w[0] + 3), "{ticks:?}");
    assert!(!ticks.contains(&secs3(1).timestamp()), "the older missed tick was fired: {ticks:?}");
    let late = tasks.iter().find(|t| t.tick == secs3(2)).unwrap_or_else(|| panic!("the latest missed tick was not fired: {ticks:?}"));
    assert!(late.created_ms >= secs3(2).timestamp_millis() + 250, "not fired late: {}", late.raw);
    let after: Vec<i64> = ticks.iter().copied().filter(|s| *s >= secs3(2).timestamp()).collect();
    assert!(after.windows(2).all(|w| w[1] == w[0] + 3) && after.len() >= 3, "{ticks:?}");
    assert_each_ran_once(&tasks, "tick", &witnessed(&nodes).await);
    let m = firings(&b.api).await;
    assert!(m.get(&("survivor".into(), "skipped".into())).copied().unwrap_or(0) >= 1, "{m:?}");
    drop(b);
    for n in &nodes {
        remove_containers(n).await;
    }
}
