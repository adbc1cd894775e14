//! Every platform log line emitted while serving an invocation carries its request id (api →
//! scheduler → agent → dispatcher), also from the tasks spawned on its behalf: the instance
//! start, the stop of a discarded instance, the memory reading for its summary (inline or in a
//! task of its own). A test binary of its own, because it installs the process-wide tracing
//! subscriber and reads what it writes; real containers.

#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use helpers::{TestApp, eventually, python_function, spawn_app};

/// Everything the subscriber wrote, formatted as on stderr.
static OUT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        OUT.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn mark() -> usize {
    OUT.lock().unwrap().len()
}

/// The lines written since `mark` by the modules that serve invocations.
fn platform_lines_since(mark: usize) -> Vec<String> {
    let out = OUT.lock().unwrap()[mark..].to_vec();
    let targets = ["nubis::scheduler", "nubis::agent", "nubis::invoker", "nubis::dispatcher"];
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| targets.iter().any(|t| l.contains(&format!(" {t}"))))
        .map(str::to_string)
        .collect()
}

/// The invocation's summary is stored (its memory reading, the last platform line, is done).
async fn summary_stored(app: &TestApp, function: &str, rid: &str) {
    eventually(Duration::from_secs(15), "the summary is stored", || async {
        let page = app.request("GET", &format!("/2023-03-30/functions/{function}/logs"), &format!("requestId={rid}"), &[], vec![]).await;
        page.json()["logs"].as_array().unwrap().iter().any(|l| l["stream"] == "platform").then_some(())
    })
    .await;
}

#[track_caller]
fn assert_all_carry(lines: &[String], rid: &str, expected: &[&str]) {
    for want in expected {
        assert!(lines.iter().any(|l| l.contains(want)), "a line '{want}' among:\n{}", lines.join("\n"));
    }
    let tag = format!("request_id={rid}");
    let strays: Vec<_> = lines.iter().filter(|l| !l.contains(&tag)).collect();
    assert!(strays.is_empty(), "lines without {tag}:\n{}", strays.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_lines_of_an_invocation_carry_its_request_id() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("nubis=debug"))
        .with_ansi(false)
        .with_writer(|| Capture)
        .init();
    let app = spawn_app().await;
    let code = "import time\ndef handler(event, context):\n    if event == b'sleep':\n        time.sleep(30)\n    return 'ok'\n";
    let mut f = python_function("spans", code);
    f["timeout"] = serde_json::json!(1);
    assert_eq!(app.create_function(f).await.status, 200);

    // A sync cold start: placement, the start in its own task, readiness, the memory reading.
    let m = mark();
    let r = app.invoke("spans", b"hi", &[]).await;
    assert_eq!(r.text(), "ok");
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    summary_stored(&app, "spans", &rid).await;
    let lines = platform_lines_since(m);
    assert_all_carry(&lines, &rid, &["starting an instance", "container created", "waiting until it is ready", "instance ready", "instance memory read"]);
    println!("cold start, {} lines:\n{}", lines.len(), lines.join("\n"));

    // A timeout: the failure, and the stop of the discarded instance in a spawned task.
    let m = mark();
    let r = app.invoke("spans", b"sleep", &[]).await;
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    summary_stored(&app, "spans", &rid).await;
    eventually(Duration::from_secs(10), "the timed-out instance is removed", || async {
        app.containers(Some("spans")).await.is_empty().then_some(())
    })
    .await;
    let lines = platform_lines_since(m);
    assert_all_carry(&lines, &rid, &["invocation failed: function timed out", "removing the container"]);

    // An async cold start: the dispatcher's lines and everything under them carry the id the
    // API gave the call.
    let m = mark();
    let r = app.invoke("spans", b"hi", &[("x-fc-invocation-type", "Async")]).await;
    assert_eq!(r.status, 202);
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    summary_stored(&app, "spans", &rid).await;
    let lines = platform_lines_since(m);
    assert_all_carry(&lines, &rid, &["starting an instance", "instance ready", "instance memory read"]);
    app.shutdown().await.unwrap();
}
