//! The warm pool: cold starts of built-in runtimes take a pre-started cell, which then serves
//! that function's code only and is removed with it (never handed to another function).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bollard::query_parameters::ListContainersOptions;
use serde_json::json;

use crate::helpers::*;

/// Returns who served: the function's marker, the container's hostname (Docker sets it to the
/// first 12 characters of the container id), its environment and what its initializer set.
const WHO: &str = r#"import os, socket
STATE = {}
def init(context):
    STATE['init'] = 'ran-' + os.environ['FC_FUNCTION_NAME']
def handler(event, context):
    print('serving', os.environ['MARK'])
    return '%s|%s|%s|%s|%s' % (open('/code/marker.txt').read().strip(), socket.gethostname(),
        os.environ['MARK'], os.environ['FC_FUNCTION_NAME'], STATE.get('init', 'no-init'))
"#;

fn who_function(name: &str, mark: &str) -> serde_json::Value {
    let zip = zip_of(&[("index.py", WHO), ("marker.txt", &format!("code-of-{name}"))]);
    json!({"functionName": name, "runtime": "python3.10", "handler": "index.handler", "timeout": 10,
        "environmentVariables": {"MARK": mark},
        "instanceLifecycleConfig": {"initializer": {"handler": "index.init", "timeout": 5}},
        "code": {"zipFile": b64(&zip)}})
}

async fn pool_app() -> TestApp {
    spawn_app_with(|c| {
        c.agent.warm_pool.enabled = true;
        c.agent.warm_pool.prewarm = vec!["python3".into()];
    })
    .await
}

/// Running warm-pool cells of this node that have not been handed out, by container id.
/// A handed-out cell keeps its label; idle ones are those not serving (the test tracks that).
async fn cell_ids(node_id: &str) -> Vec<String> {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let labels = vec![format!("nubis.node={node_id}"), "nubis.cell".to_string()];
    let opts = ListContainersOptions { all: false, filters: Some(HashMap::from([("label".to_string(), labels)])), ..Default::default() };
    docker.list_containers(Some(opts)).await.unwrap().into_iter().filter_map(|c| c.id).collect()
}

async fn container_exists(id_prefix: &str) -> bool {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let opts = ListContainersOptions { all: true, ..Default::default() };
    docker.list_containers(Some(opts)).await.unwrap().iter().any(|c| c.id.as_deref().is_some_and(|id| id.starts_with(id_prefix)))
}

/// The pool's idle cells, as its gauge on /metrics says.
async fn idle_cells(app: &TestApp) -> usize {
    let text = app.request("GET", "/metrics", "", &[], vec![]).await.text();
    let line = text.lines().find(|l| l.starts_with("nubis_warm_pool_cells ")).unwrap_or("x 0");
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Wait until a cell that is not one of `served` is ready in the pool (a running container is
/// not enough: it may still be starting), and no other cell is still on its way.
async fn fresh_cell(app: &TestApp, served: &[String]) -> String {
    eventually(Duration::from_secs(60), "a ready warm-pool cell", || async {
        let unserved: Vec<String> =
            cell_ids(&app.node_id).await.into_iter().filter(|id| !served.iter().any(|h| id.starts_with(h.as_str()))).collect();
        let idle = idle_cells(app).await;
        (idle >= 1 && unserved.len() == idle).then(|| unserved[0].clone())
    })
    .await
}

fn parts(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().split('|').map(str::to_string).collect()
}

#[tokio::test]
async fn a_cell_serves_one_function_its_own_code_and_is_never_reused() {
    let app = pool_app().await;
    let mut served: Vec<String> = Vec::new();
    let cell_a = fresh_cell(&app, &served).await;
    assert_eq!(app.create_function(who_function("pool-a", "mark-a")).await.status, 200);
    assert_eq!(app.create_function(who_function("pool-b", "mark-b")).await.status, 200);

    // The cold start of A takes the waiting cell: its code, its environment, its initializer.
    let r = app.invoke("pool-a", b"", &[("x-fc-log-type", "Tail")]).await;
    let a = parts(&r);
    assert_eq!(a[0], "code-of-pool-a");
    assert!(cell_a.starts_with(&a[1]), "served by the pooled container {cell_a}, not {}", a[1]);
    assert_eq!(&a[2..], ["mark-a", "pool-a", "ran-pool-a"]);
    let tail = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(r.header("x-fc-log-result").unwrap()).unwrap()).unwrap();
    assert!(tail.contains("serving mark-a"), "the cell's output is captured as the function's: {tail}");
    served.push(a[1].clone());

    // The pool refills with a new container; B's cold start takes that one, never A's.
    let cell_b = fresh_cell(&app, &served).await;
    let b = parts(&app.invoke("pool-b", b"", &[]).await);
    assert_eq!(b[0], "code-of-pool-b");
    assert!(cell_b.starts_with(&b[1]), "served by the new cell {cell_b}, not {}", b[1]);
    assert_ne!(a[1], b[1]);
    assert_eq!(&b[2..], ["mark-b", "pool-b", "ran-pool-b"]);
    served.push(b[1].clone());

    // Warm calls stay on their own instances.
    assert_eq!(parts(&app.invoke("pool-a", b"", &[]).await)[..3], a[..3]);
    assert_eq!(parts(&app.invoke("pool-b", b"", &[]).await)[..3], b[..3]);

    // A's container goes with A: removed, not returned to the pool.
    assert_eq!(app.delete_function("pool-a").await.status, 204);
    let gone = a[1].clone();
    eventually(Duration::from_secs(30), "A's container removed", || async { (!container_exists(&gone).await).then_some(()) }).await;

    // Two more functions start at once: each is served by its own container, never a used one.
    let _ = fresh_cell(&app, &served).await;
    assert_eq!(app.create_function(who_function("pool-c", "mark-c")).await.status, 200);
    assert_eq!(app.create_function(who_function("pool-d", "mark-d")).await.status, 200);
    let (rc, rd) = tokio::join!(app.invoke("pool-c", b"", &[]), app.invoke("pool-d", b"", &[]));
    let (c, d) = (parts(&rc), parts(&rd));
    assert_eq!((c[0].as_str(), c[2].as_str()), ("code-of-pool-c", "mark-c"));
    assert_eq!((d[0].as_str(), d[2].as_str()), ("code-of-pool-d", "mark-d"));
    for host in [&c[1], &d[1]] {
        assert!(!served.contains(host), "container {host} served two functions");
    }
    assert_ne!(c[1], d[1]);

    // The hand-offs are counted; shutdown removes the idle cells too.
    let metrics = app.request("GET", "/metrics", "", &[], vec![]).await.text();
    let hits = metrics.lines().find(|l| l.starts_with("nubis_warm_pool_handoffs_total{result=\"hit\"}")).unwrap_or_default().to_string();
    assert!(hits.ends_with(" 3") || hits.ends_with(" 4"), "three or four hand-offs (C and D race for one cell): {hits}");
    let node = app.node_id.clone();
    app.shutdown().await.unwrap();
    assert!(cell_ids(&node).await.is_empty(), "shutdown removes idle cells");
    assert!(containers_of(&node, None).await.is_empty(), "and every instance");
}

#[tokio::test]
async fn custom_runtimes_and_other_sizes_start_fresh_and_the_pool_learns_the_size() {
    let app = pool_app().await;
    let cell = fresh_cell(&app, &[]).await;
    let server = r#"import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length') or 0))
        out = os.uname().nodename.encode()
        self.send_response(200)
        self.send_header('content-length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
HTTPServer(('0.0.0.0', int(os.environ['FC_SERVER_PORT'])), H).serve_forever()
"#;
    let body = json!({"functionName": "pool-custom", "runtime": "custom.debian12", "handler": "x",
        "customRuntimeConfig": {"command": ["python3", "/code/server.py"], "port": 8080},
        "code": {"zipFile": b64(&zip_of(&[("server.py", server)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let r = app.invoke("pool-custom", b"", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!cell.starts_with(&r.text()), "a custom runtime never takes a cell");
    assert_eq!(cell_ids(&app.node_id).await, vec![cell.clone()], "the cell still waits");

    // A 256 MB python function misses (no such cell yet); the pool then keeps one of that size.
    let mut big = who_function("pool-big", "mark-big");
    big["memorySize"] = json!(256);
    assert_eq!(app.create_function(big).await.status, 200);
    let first = parts(&app.invoke("pool-big", b"", &[]).await);
    assert!(!cell.starts_with(&first[1]), "the 128 MB cell does not serve a 256 MB function");
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    eventually(Duration::from_secs(60), "a 256 MB cell", || async {
        for id in cell_ids(&app.node_id).await {
            let info = docker.inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>).await.ok()?;
            if info.host_config.and_then(|h| h.memory) == Some(256 << 20) {
                return Some(());
            }
        }
        None
    })
    .await;
}
