//! Crash test of async invocations: accept 2,000 of them, `kill -9` the process that runs them
//! at random moments while they are being processed, restart it, and show that every accepted
//! task reaches a final state, none is missing, and every duplicate execution is accounted for
//! by a recorded re-delivery. Prints the counts.
//!
//! The system runs as real `nubis server` processes (the binary under test) on one data
//! directory, with real Docker instances. Executions are counted twice:
//! - from the task records: one `Running` event is written before every execution, so
//!   `runs == 1 + alreadyRetriedTimes + re-deliveries (+ attempts recorded as "not run")` must
//!   hold for each task;
//! - by a witness: the function prints `EXEC <payload>` before it does its work, and the test
//!   reads every instance's stdout from Docker (which keeps a container's log whatever happens
//!   to the server process), before each restart removes the killed process's containers and
//!   before the final stop; an execution the records missed would show up as `witnessed > runs`.
//!   (No network path from the containers to the test: the test only talks to 127.0.0.1 and to
//!   its own containers' Docker logs.)
//!
//! Parameterised by [`Scenario`]: the queue backend's settings (env vars for every server
//! process) and whether the API and the dispatcher run as separate processes (then only the
//! dispatcher is killed). Needs dockerd and the `nubis/runtime-python3` image, like tests/api;
//! the Kafka variant also a broker (NUBIS_TEST_KAFKA_BROKERS, as tests/api/async_tasks.rs).
//!
//! [`crash_kafka_trigger_loses_no_message`] does the same to a Kafka trigger: 2,000 messages in
//! a topic, the server consuming them killed three times mid-batch; every message must be
//! processed at least once (witnessed) and the group's offsets committed to the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use futures_util::stream::{self, StreamExt};
use nubis::api::auth::sign_request;
use nubis::dispatcher::REDELIVERED;
use serde_json::{Value, json};

const TASKS: usize = 2000;
const KILLS: usize = 3;
const SUBMIT_CONCURRENCY: usize = 32;
const FETCH_CONCURRENCY: usize = 32;
const MAX_INSTANCES: usize = 8;
const FUNCTION: &str = "crash-upper";
/// The random time the dispatcher gets to work before each kill, from its first execution.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 500..=3000;
const FINAL_DEADLINE: Duration = Duration::from_secs(300);
const START_DEADLINE: Duration = Duration::from_secs(60);
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
const FINAL_STATUSES: [&str; 5] = ["Succeeded", "Failed", "Stopped", "Expired", "Invalid"];
const LIVE_STATUSES: [&str; 5] = ["Enqueued", "Dequeued", "Running", "Retrying", "Stopping"];

/// How the system under test is deployed.
struct Scenario {
    /// Shown in the summary line.
    name: &'static str,
    /// Queue backend settings, passed to every server process (e.g. NUBIS_DISPATCHER__QUEUE).
    queue_env: Vec<(String, String)>,
    /// true: the API and the dispatcher are separate processes (two `nubis server`s on the same
    /// data directory, the API one with the dispatcher disabled) and the kills hit the
    /// dispatcher alone. false: one all-in-one server, killed whole.
    split: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_embedded_whole_server() {
    run(Scenario { name: "embedded", queue_env: vec![], split: false }).await;
}

/// The same on Kafka, with the dispatcher in a process of its own, killed alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kafka_dispatcher_alone() {
    let brokers = std::env::var("NUBIS_TEST_KAFKA_BROKERS")
        .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let env = [
        ("NUBIS_DISPATCHER__QUEUE", "kafka".to_string()),
        ("NUBIS_KAFKA__BROKERS", brokers),
        ("NUBIS_KAFKA__TOPIC", format!("crash-{id}")),
        ("NUBIS_KAFKA__GROUP_ID", format!("crash-{id}")),
    ];
    run(Scenario { name: "kafka", queue_env: env.map(|(k, v)| (k.to_string(), v)).into(), split: true }).await;
}

/// Prints each execution for the witness before working (the attempt
/// is a failure and is retried, so it is still accounted for).
const FUNCTION_CODE: &str = r#"
def handler(event, context):
    print("EXEC " + event.decode(), flush=True)
    return event.upper()
"#;

fn payload(i: usize) -> String {
    format!("payload-{i:04}")
}

fn task_id(i: usize) -> String {
    format!("t-{i:04}")
}

async fn run(sc: Scenario) {
    let started = Instant::now();
    let mut h = Harness::new(&sc);
    let key = h.create_key();
    let witness = Witness::default();

    // Intake: an API-only server (dispatcher off), so the whole backlog is queued before the
    // first kill and every kill lands while there is work in progress.
    let api_node = h.node_id("api");
    let api = h.start("api", &api_node, false).await;
    let client = Client::new(api.addr, &key);
    create_function(&client).await;
    let t = Instant::now();
    let refused: Vec<String> = stream::iter(0..TASKS)
        .map(|i| {
            let c = client.clone();
            async move {
                let id = task_id(i);
                let r = c
                    .request(
                        "POST",
                        &format!("/2023-03-30/functions/{FUNCTION}/invocations"),
                        "",
                        &[("content-type", "application/octet-stream"), ("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", &id)],
                        payload(i).into_bytes(),
                    )
                    .await;
                let accepted = r.status == 202 && r.header("x-fc-async-task-id") == Some(id.as_str());
                (!accepted).then(|| format!("{id}: {} {}", r.status, r.text()))
            }
        })
        .buffer_unordered(SUBMIT_CONCURRENCY)
        .filter_map(|refused| async move { refused })
        .collect()
        .await;
    assert!(refused.is_empty(), "{} of {TASKS} async invocations not accepted, e.g. {:?}", refused.len(), &refused[..refused.len().min(5)]);
    let accepted = TASKS;
    println!("crash test ({}): accepted {accepted} async invocations in {:.1}s", sc.name, t.elapsed().as_secs_f64());
    let early: Vec<_> = client.list_statuses().await.into_iter().filter(|(_, s)| s != "Enqueued").collect();
    assert!(
        early.is_empty(),
        "the intake server runs no dispatcher (NUBIS_DISPATCHER__ENABLED=false), yet {} tasks left Enqueued, e.g. {:?}: \
         are NUBIS_* settings ignored?",
        early.len(),
        &early[..early.len().min(5)]
    );

    let mut api = Some(api);
    if !sc.split {
        // All-in-one: the API server becomes the worker (same data dir, dispatcher on).
        let status = h.terminate(api.take().unwrap());
        assert!(status.success(), "intake server exited with {status}\n{}", h.logs());
    }
    let worker_node = h.node_id("worker");
    let mut worker = h.start("worker", &worker_node, true).await;
    let mut kills_mid_processing = 0;
    for k in 1..=KILLS {
        let observer = Client::new(api.as_ref().map_or(worker.addr, |a| a.addr), &key);
        // The random moment counts from when this dispatcher has started executing (a fresh
        // process may first wait for its instances, or for its share of a Kafka group).
        let (up, executed) = (Instant::now(), witness.scan(&h.node_ids).await);
        let deadline = up + START_DEADLINE;
        while witness.scan(&h.node_ids).await == executed && observer.any_live_task().await {
            assert!(Instant::now() < deadline, "no execution {START_DEADLINE:?} after the worker (re)started\n{}", h.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let resumed = up.elapsed();
        let wait = rand::random_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let pending = observer.any_live_task().await;
        h.kill(worker);
        kills_mid_processing += usize::from(pending);
        // Read the killed process's instances before the restart removes them as orphans.
        witness.scan(&h.node_ids).await;
        println!(
            "crash test ({}): kill -9 #{k} of the {}, {wait} ms after it began executing ({} ms after it was up){}",
            sc.name,
            if sc.split { "dispatcher" } else { "server" },
            resumed.as_millis(),
            if pending { "" } else { " (every task was already final)" }
        );
        worker = h.start("worker", &worker_node, true).await;
    }
    let client = Client::new(api.as_ref().map_or(worker.addr, |a| a.addr), &key);
    let restarted = Instant::now();

    // Every accepted task reaches a final state.
    let deadline = restarted + FINAL_DEADLINE;
    let final_count = loop {
        let statuses = client.list_statuses().await;
        let fin = statuses.values().filter(|s| FINAL_STATUSES.contains(&s.as_str())).count();
        if fin == TASKS && statuses.len() == TASKS {
            println!("crash test ({}): all tasks final {:.1}s after the last restart", sc.name, restarted.elapsed().as_secs_f64());
            break fin;
        }
        if Instant::now() >= deadline {
            let mut live: Vec<_> = statuses.iter().filter(|(_, s)| !FINAL_STATUSES.contains(&s.as_str())).collect();
            live.sort();
            let sample: Vec<_> = live.iter().take(5).map(|(id, _)| client.get_task(id)).collect();
            let sample = futures_util::future::join_all(sample).await;
            panic!(
                "after {FINAL_DEADLINE:?}: {} tasks listed, {fin} final; not final: {:?}\nsample: {sample:#?}\n{}",
                statuses.len(),
                &live[..live.len().min(20)],
                h.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The witness first, then the records: every execution witnessed here had its Running
    // event written before it started, so the records read afterwards include it.
    witness.scan(&h.node_ids).await;
    let witnessed = witness.counts();
    let tasks: Vec<(usize, Option<Value>)> = stream::iter(0..TASKS)
        .map(|i| {
            let c = client.clone();
            async move { (i, c.get_task(&task_id(i)).await) }
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;

    let (mut missing, mut succeeded, mut fin) = (Vec::new(), 0, 0);
    let (mut runs_total, mut redeliveries, mut retries, mut not_run, mut duplicates) = (0, 0, 0, 0, 0);
    let (mut witnessed_total, mut witnessed_duplicates) = (0, 0);
    let mut problems = Vec::new();
    for (i, t) in &tasks {
        let id = task_id(*i);
        let Some(t) = t else {
            missing.push(id);
            continue;
        };
        let status = t["status"].as_str().unwrap_or_default();
        fin += usize::from(FINAL_STATUSES.contains(&status));
        let events = t["events"].as_array().cloned().unwrap_or_default();
        let detail = |e: &Value| e["eventDetail"].as_str().unwrap_or_default().to_string();
        let runs = events.iter().filter(|e| e["status"] == "Running").count();
        let redelivered = events.iter().filter(|e| e["status"] == "Running" && detail(e).starts_with(REDELIVERED)).count();
        // A platform failure (no instance, ...) is recorded as "not run" and does not use up a retry.
        let unrun = events.iter().filter(|e| e["status"] == "Retrying" && detail(e).starts_with("not run")).count();
        let retried = t["alreadyRetriedTimes"].as_u64().expect("alreadyRetriedTimes") as usize;
        let seen = witnessed.get(&payload(*i)).copied().unwrap_or(0);
        runs_total += runs;
        redeliveries += redelivered;
        retries += retried;
        not_run += unrun;
        duplicates += runs.saturating_sub(1 + retried + unrun);
        witnessed_total += seen;
        witnessed_duplicates += seen.saturating_sub(1);
        let expected = payload(*i).to_uppercase();
        if status == "Succeeded" && t["returnPayload"] == expected.as_str() {
            succeeded += 1;
        } else {
            problems.push(format!("{id}: status {status}, returnPayload {}, expected {expected}", t["returnPayload"]));
        }
        if runs != 1 + retried + redelivered + unrun {
            problems.push(format!("{id}: {runs} runs recorded, but 1 + {retried} retries + {redelivered} re-deliveries + {unrun} not run: {t}"));
        }
        if seen == 0 || seen > runs {
            problems.push(format!("{id}: witnessed {seen} executions, {runs} recorded: {t}"));
        }
    }
    let kill_word = if sc.split { "dispatcher kills" } else { "kills" };
    println!(
        "crash test ({}): accepted {accepted}, final {fin} (succeeded {succeeded}), missing {}, {kill_word} {KILLS} \
         ({kills_mid_processing} mid-processing), duplicate executions {duplicates}, recorded re-deliveries {redeliveries} \
         (runs {runs_total}, retries {retries}, not run {not_run}; witnessed executions {witnessed_total}, \
         of them duplicates {witnessed_duplicates}), {:.0}s",
        sc.name,
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(final_count, TASKS);
    assert!(missing.is_empty(), "accepted tasks missing: {missing:?}");
    assert!(problems.is_empty(), "{} problems, e.g.:\n{}", problems.len(), problems[..problems.len().min(10)].join("\n"));
    assert_eq!((fin, succeeded), (TASKS, TASKS));
    assert_eq!(duplicates, redeliveries, "every duplicate execution is a recorded re-delivery");
    assert!(witnessed_duplicates <= redeliveries + retries + not_run);

    // Graceful stop still works after the crashes.
    let status = h.terminate(worker);
    assert!(status.success(), "worker exited with {status} on SIGTERM\n{}", h.logs());
    if let Some(api) = api.take() {
        let status = h.terminate(api);
        assert!(status.success(), "API server exited with {status} on SIGTERM\n{}", h.logs());
    }
    let left = remove_containers(&h.node_ids).await;
    println!("crash test ({}): containers left after the last graceful stop: {} (removed) {left:?}", sc.name, left.len());
    h.finish();
}

async fn create_function(c: &Client) {
    use base64::Engine;
    let zip = nubis::codestore::package::build_zip(&[("index.py", FUNCTION_CODE.as_bytes(), 0o755)]);
    let body = json!({
        "functionName": FUNCTION, "runtime": "python3.10", "handler": "index.handler",
        "memorySize": 128, "timeout": 10,
        "code": {"zipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
    });
    let r = c.request("POST", "/2023-03-30/functions", "", &[("content-type", "application/json")], body.to_string().into_bytes()).await;
    assert!((200..300).contains(&r.status), "CreateFunction: {} {}", r.status, r.text());
}

/// The server processes of one test and what they leave behind.
struct Harness {
    /// Data directory, logs and the processes' working directory (kept if the test fails).
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    run_id: String,
    /// Live processes by pid, killed if the test fails.
    live: Vec<(u32, Arc<Mutex<Child>>)>,
    logs: Vec<PathBuf>,
    node_ids: Vec<String>,
    starts: usize,
}

struct Proc {
    role: &'static str,
    child: Arc<Mutex<Child>>,
    pid: u32,
    addr: SocketAddr,
}

impl Harness {
    fn new(sc: &Scenario) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        let mut env = [
            // Leases short enough that messages of a killed dispatcher come back within seconds
            // (the lease of a running message is the function's timeout plus this).
            ("NUBIS_DISPATCHER__LEASE_SECS", "2"),
            ("NUBIS_DISPATCHER__RETRY_BASE_MS", "200"),
            ("NUBIS_DISPATCHER__RETRY_MAX_MS", "1000"),
            ("NUBIS_SERVER__SHUTDOWN_GRACE_SECS", "10"),
            ("NUBIS_AGENT__PULL_MISSING_IMAGES", "false"),
            ("NUBIS_AGENT__WARM_POOL__ENABLED", "false"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        env.push(("NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION".into(), MAX_INSTANCES.to_string()));
        env.extend(sc.queue_env.iter().cloned());
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Self { dir: Some(dir), root, data_dir, env, run_id, live: Vec::new(), logs: Vec::new(), node_ids: Vec::new(), starts: 0 }
    }

    /// A node id unique to this run (its containers are ours alone).
    fn node_id(&mut self, role: &str) -> String {
        let id = format!("crash-{}-{role}", self.run_id);
        self.node_ids.push(id.clone());
        id
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nubis"));
        // Not the repository's config/nubis.toml, nor NUBIS_* settings of the caller's
        // environment: only defaults and our env.
        c.current_dir(&self.root);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("NUBIS_") {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "info");
        }
        c
    }

    fn create_key(&self) -> (String, String) {
        let out = self.command().args(["admin", "create-key", "--output", "json", "--data-dir"]).arg(&self.data_dir).output().expect("running nubis admin");
        assert!(out.status.success(), "create-key: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("create-key prints JSON");
        (v["accessKeyId"].as_str().unwrap().to_string(), v["accessKeySecret"].as_str().unwrap().to_string())
    }

    /// Start `nubis server` on a free port and wait until it answers /health.
    async fn start(&mut self, role: &'static str, node_id: &str, dispatcher: bool) -> Proc {
        self.starts += 1;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let out = self.root.join(format!("{:02}-{role}.stdout", self.starts));
        let err = self.root.join(format!("{:02}-{role}.stderr", self.starts));
        let child = self
            .command()
            .env("NUBIS_DISPATCHER__ENABLED", dispatcher.to_string())
            .args(["server", "--listen", &addr.to_string(), "--node-id", node_id, "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("starting nubis server");
        self.logs.extend([out, err]);
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        self.live.push((pid, child.clone()));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = child.lock().unwrap().try_wait().unwrap() {
                panic!("{role} server exited at start with {status}\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "{role} server not healthy after {START_DEADLINE:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Proc { role, child, pid, addr }
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self, p: Proc) {
        let mut c = p.child.lock().unwrap();
        c.kill().expect("SIGKILL");
        c.wait().expect("reaping the killed server");
        self.live.retain(|(pid, _)| *pid != p.pid);
    }

    /// SIGTERM, then wait for the exit.
    fn terminate(&mut self, p: Proc) -> ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &p.pid.to_string()]).status().expect("running kill");
        assert!(ok.success(), "kill -TERM {}", p.pid);
        let deadline = Instant::now() + EXIT_DEADLINE;
        let status = loop {
            if let Some(s) = p.child.lock().unwrap().try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{} server still running {EXIT_DEADLINE:?} after SIGTERM\n{}", p.role, self.logs());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.live.retain(|(pid, _)| *pid != p.pid);
        status
    }

    /// The tails of every process's output, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for path in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            s += &format!("----- {} (last {} of {} lines)\n", path.display(), lines.len() - from, lines.len());
            for l in &lines[from..] {
                s += l;
                s.push('\n');
            }
        }
        s
    }

    /// Passed: the temp dir goes.
    fn finish(mut self) {
        assert!(self.live.is_empty());
        self.dir.take();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (_, c) in self.live.drain(..) {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.node_ids.is_empty() {
            // Possibly inside the test's runtime: clean up from a thread with its own.
            let ids = self.node_ids.clone();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(remove_containers(&ids))
            })
            .join();
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("crash test failed; kept {} (data dir, process logs)", dir.keep().display());
        }
    }
}

/// Remove every container of these nodes; returns what there was (name, state, created).
async fn remove_containers(node_ids: &[String]) -> Vec<String> {
    use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let mut removed = Vec::new();
    for node in node_ids {
        let filters = HashMap::from([("label".to_string(), vec![format!("nubis.node={node}")])]);
        let list = docker.list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() })).await.unwrap();
        for c in list {
            if let Some(id) = &c.id {
                let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
                let _ = docker.remove_container(id, Some(opts)).await;
                let created = chrono::DateTime::from_timestamp(c.created.unwrap_or_default(), 0).unwrap_or_default();
                removed.push(format!("{} ({:?}, created {created})", c.names.unwrap_or_default().join(","), c.state));
            }
        }
    }
    removed
}

/// Counts the function's execution reports by payload.
/// Counts executions from the instances' own stdout, as Docker keeps it: per container, the
/// latest full count of `EXEC <payload>` lines (a container's log only grows until it is
/// removed, and the test scans before anything it cares about is removed).
#[derive(Default)]
struct Witness {
    per_container: Mutex<HashMap<String, HashMap<String, usize>>>,
}

impl Witness {
    /// Re-read every container of these nodes; returns the total executions seen so far.
    async fn scan(&self, node_ids: &[String]) -> usize {
        use bollard::query_parameters::{ListContainersOptions, LogsOptions};
        let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
        for node in node_ids {
            let filters = HashMap::from([("label".to_string(), vec![format!("nubis.node={node}")])]);
            let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
                let Some(id) = c.id else { continue };
                let mut counts: HashMap<String, usize> = HashMap::new();
                let mut logs = docker.logs(&id, Some(LogsOptions { stdout: true, ..Default::default() }));
                let mut text = String::new();
                while let Some(Ok(chunk)) = logs.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
                for line in text.lines() {
                    if let Some(p) = line.trim().strip_prefix("EXEC ") {
                        *counts.entry(p.to_string()).or_default() += 1;
                    }
                }
                // A container being removed may answer with less (or nothing): logs only grow.
                let mut all = self.per_container.lock().unwrap();
                let total = |c: &HashMap<String, usize>| c.values().sum::<usize>();
                if all.get(&id).is_none_or(|before| total(before) <= total(&counts)) {
                    all.insert(id, counts);
                }
            }
        }
        self.counts().values().sum()
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut all: HashMap<String, usize> = HashMap::new();
        for counts in self.per_container.lock().unwrap().values() {
            for (p, n) in counts {
                *all.entry(p.clone()).or_default() += n;
            }
        }
        all
    }
}

/// Signed requests to one server.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    ak: String,
    sk: String,
    http: reqwest::Client,
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Client {
    fn new(addr: SocketAddr, (ak, sk): &(String, String)) -> Self {
        Self { addr, ak: ak.clone(), sk: sk.clone(), http: reqwest::Client::new() }
    }

    async fn request(&self, method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let method: Method = method.parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(&self.addr.to_string()).unwrap());
        for (k, v) in headers {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        sign_request(&self.ak, &self.sk, &method, path, query, &mut h, &body, chrono::Utc::now());
        let url = if query.is_empty() { format!("http://{}{path}", self.addr) } else { format!("http://{}{path}?{query}", self.addr) };
        let r = self.http.request(method, url).headers(h).body(body).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        Resp { status, headers, body: r.bytes().await.expect("body read") }
    }

    /// One page of ListAsyncTasks (query keys in canonical order).
    async fn list_page(&self, status: Option<&str>, limit: u32, next: Option<&str>) -> Value {
        let mut q = format!("limit={limit}");
        if let Some(n) = next {
            q += &format!("&nextToken={n}");
        }
        if let Some(s) = status {
            q += &format!("&status={s}");
        }
        let r = self.request("GET", &format!("/2023-03-30/functions/{FUNCTION}/async-tasks"), &q, &[], vec![]).await;
        assert_eq!(r.status, 200, "ListAsyncTasks {q}: {}", r.text());
        r.json()
    }

    /// Task id → status of every task, read page by page.
    async fn list_statuses(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.list_page(None, 100, next.as_deref()).await;
            for t in page["tasks"].as_array().expect("tasks") {
                out.insert(t["taskId"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string());
            }
            match page["nextToken"].as_str() {
                Some(n) if !n.is_empty() => next = Some(n.to_string()),
                _ => return out,
            }
        }
    }

    /// Whether any task is not final yet (one short request per live status).
    async fn any_live_task(&self) -> bool {
        for s in LIVE_STATUSES {
            if !self.list_page(Some(s), 1, None).await["tasks"].as_array().expect("tasks").is_empty() {
                return true;
            }
        }
        false
    }

    async fn get_task(&self, id: &str) -> Option<Value> {
        let r = self.request("GET", &format!("/2023-03-30/functions/{FUNCTION}/async-tasks/{id}"), "", &[], vec![]).await;
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GetAsyncTask {id}: {s} {}", r.text()),
        }
    }
}

/// A Kafka trigger's server killed with `kill -9` three times while it works through a topic:
/// nothing is lost. Messages are keyed over 4 partitions; the function prints `EXEC <value>` for
/// each message of its batch before it works (200 ms a batch), so a batch cut off by a kill is
/// witnessed and then delivered again (its offsets were not committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kafka_trigger_loses_no_message() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    const MESSAGES: usize = 2000;
    const PARTITIONS: i32 = 4;
    const TRIGGER_FUNCTION: &str = "crash-kafka";
    const CODE: &str = "import json, time\n\
def handler(event, context):\n    \
for e in json.loads(event):\n        print('EXEC ' + e['data']['value'], flush=True)\n    \
time.sleep(0.2)\n    \
return 'ok'\n";
    let started = Instant::now();
    let brokers = std::env::var("NUBIS_TEST_KAFKA_BROKERS")
        .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (topic, group) = (format!("trigger-crash-{id}"), format!("trigger-crash-{id}"));
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let new = rdkafka::admin::NewTopic::new(&topic, PARTITIONS, rdkafka::admin::TopicReplication::Fixed(1));
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    assert!(admin.create_topics([&new], &opts).await.unwrap()[0].is_ok());
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).set("acks", "all").create().unwrap();
    let values: Vec<String> = (0..MESSAGES).map(|i| format!("msg-{i:04}")).collect();
    let sends = values.iter().enumerate().map(|(i, v)| {
        let key = format!("k{}", i % 16);
        let p = producer.clone();
        let (topic, v) = (topic.clone(), v.clone());
        async move { p.send(FutureRecord::to(&topic).key(&key).payload(&v), Duration::from_secs(10)).await }
    });
    // Where each partition ends, from the producer's acknowledgements.
    let mut ends = vec![0i64; PARTITIONS as usize];
    for r in futures_util::future::join_all(sends).await {
        let d = r.unwrap_or_else(|(e, _)| panic!("producing: {e}"));
        ends[d.partition as usize] = ends[d.partition as usize].max(d.offset + 1);
    }
    assert_eq!(ends.iter().sum::<i64>() as usize, MESSAGES);

    let env = [("NUBIS_KAFKA__BROKERS", brokers.clone()), ("NUBIS_KAFKA_TRIGGERS__REFRESH_MS", "500".to_string())];
    let sc = Scenario { name: "kafka trigger", queue_env: env.map(|(k, v)| (k.to_string(), v)).into(), split: false };
    let mut h = Harness::new(&sc);
    let key = h.create_key();
    let node = h.node_id("trigger");
    let mut server = h.start("trigger", &node, true).await;
    let client = Client::new(server.addr, &key);
    use base64::Engine;
    let zip = nubis::codestore::package::build_zip(&[("index.py", CODE.as_bytes(), 0o755)]);
    let f = json!({"functionName": TRIGGER_FUNCTION, "runtime": "python3.10", "handler": "index.handler", "memorySize": 128,
        "timeout": 10, "code": {"zipFile": base64::engine::general_purpose::STANDARD.encode(zip)}});
    let r = client.request("POST", "/2023-03-30/functions", "", &[("content-type", "application/json")], f.to_string().into_bytes()).await;
    assert_eq!(r.status, 200, "CreateFunction: {}", r.text());
    let config = json!({"eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "Topic": topic, "ConsumerGroup": group, "OffsetReset": "earliest"}}},
        "eventSinkConfig": {"deliveryOption": {"concurrency": 4}},
        "runOptions": {"batchWindow": {"CountBasedWindow": 20, "TimeBasedWindow": 1}}});
    let t = json!({"triggerName": "crash", "triggerType": "eventbridge", "triggerConfig": config.to_string()});
    let path = format!("/2023-03-30/functions/{TRIGGER_FUNCTION}/triggers");
    let r = client.request("POST", &path, "", &[("content-type", "application/json")], t.to_string().into_bytes()).await;
    assert_eq!(r.status, 200, "CreateTrigger: {}", r.text());

    let witness = Witness::default();
    let mut kills_mid_processing = 0;
    for k in 1..=KILLS {
        // The random moment counts from when this process has started executing (it first
        // waits for its share of the consumer group and a cold start).
        let (up, executed) = (Instant::now(), witness.scan(&h.node_ids).await);
        while witness.scan(&h.node_ids).await == executed {
            assert!(up.elapsed() < START_DEADLINE, "no execution {START_DEADLINE:?} after the server (re)started\n{}", h.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let resumed = up.elapsed();
        let wait = rand::random_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        witness.scan(&h.node_ids).await;
        let pending = witness.counts().len() < MESSAGES;
        h.kill(server);
        kills_mid_processing += usize::from(pending);
        // Read the killed process's instances before the restart removes them as orphans.
        let seen = witness.scan(&h.node_ids).await;
        println!(
            "crash test (kafka trigger): kill -9 #{k}, {wait} ms after it began executing ({} ms after it was up); {} of {MESSAGES} messages seen, {seen} executions{}",
            resumed.as_millis(),
            witness.counts().len(),
            if pending { "" } else { " (all were already seen)" }
        );
        server = h.start("trigger", &node, true).await;
    }
    let restarted = Instant::now();
    while witness.counts().len() < MESSAGES {
        assert!(restarted.elapsed() < FINAL_DEADLINE, "{} of {MESSAGES} messages seen after {FINAL_DEADLINE:?}\n{}", witness.counts().len(), h.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
        witness.scan(&h.node_ids).await;
    }
    println!("crash test (kafka trigger): every message seen {:.1}s after the last restart", restarted.elapsed().as_secs_f64());
    // Nothing left uncommitted: the group's offsets reach the end of every partition.
    let committed = |group: String, topic: String, brokers: String| {
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", &group).create().unwrap();
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition(&topic, p);
            }
            let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
            (0..PARTITIONS)
                .map(|p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                })
                .collect::<Vec<i64>>()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = committed(group.clone(), topic.clone(), brokers.clone()).await.unwrap();
        if c == ends {
            break;
        }
        assert!(Instant::now() < deadline, "committed {c:?}, partitions end at {ends:?}\n{}", h.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    witness.scan(&h.node_ids).await;
    let counts = witness.counts();
    let missing: Vec<&String> = values.iter().filter(|v| !counts.contains_key(*v)).collect();
    let strangers: Vec<&String> = counts.keys().filter(|v| !values.contains(v)).collect();
    let executions: usize = counts.values().sum();
    let duplicates = executions - counts.len();
    println!(
        "crash test (kafka trigger): produced {MESSAGES}, processed at least once {}, duplicates {duplicates} \
         (executions {executions}), missing {}, kills {KILLS} ({kills_mid_processing} mid-processing), offsets committed to the end {ends:?}, {:.0}s",
        counts.len(),
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(missing.is_empty(), "messages never processed: {:?}", &missing[..missing.len().min(20)]);
    assert!(strangers.is_empty(), "{strangers:?}");
    let status = h.terminate(server);
    assert!(status.success(), "server exited with {status} on SIGTERM\n{}", h.logs());
    remove_containers(&h.node_ids).await;
    h.finish();
}
