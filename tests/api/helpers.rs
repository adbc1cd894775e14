//! `spawn_app()` and typed request helpers. Requests are signed with the crate's own signer
//! (the official Python SDK is exercised separately by tests/sdk).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method};
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use nubis::api::auth::sign_request;
use nubis::codestore::package::build_zip;
use nubis::config::Config;
use nubis::server::Server;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestApp {
    pub api: ApiClient,
    pub node_id: String,
    pub state: nubis::api::AppState,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Signed access to one server; cheap to clone into spawned tasks.
#[derive(Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub ak: String,
    pub sk: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of a server started some other way (a `nubis server` process).
    pub fn new(addr: SocketAddr, ak: &str, sk: &str) -> Self {
        Self { addr, ak: ak.to_string(), sk: sk.to_string(), http: reqwest::Client::new() }
    }
}

impl std::ops::Deref for TestApp {
    type Target = ApiClient;
    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Assert an FC error body with this status and code; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "expected {status} {code}, got: {}", self.text());
        let j = self.json();
        assert_eq!(j["Code"], code, "{j}");
        let rid = j["RequestId"].as_str().expect("RequestId");
        assert!(rid.starts_with("1-"), "{j}");
        assert_eq!(self.header("x-fc-request-id"), Some(rid));
        j["Message"].as_str().expect("Message").to_string()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    nubis::telemetry::init_for_tests();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.data_dir = data_dir.path().to_path_buf();
    cfg.server.shutdown_grace_secs = 10;
    cfg.agent.node_id = format!("test-{}", uuid::Uuid::new_v4().simple());
    // Tests never reach a registry: a missing image must fail, not be pulled.
    cfg.agent.pull_missing_images = false;
    // Pre-started cells in every test app would only add load; tests/api/warm_pool.rs turns it on.
    cfg.agent.warm_pool.enabled = false;
    tweak(&mut cfg);
    let node_id = cfg.agent.node_id.clone();
    let server = Server::build(cfg).await.expect("server builds (is dockerd running?)");
    let addr = server.local_addr();
    let state = server.state().clone();
    let key = state.keys.create("test").await.expect("create key");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        api: ApiClient { addr, ak: key.access_key_id, sk: key.access_key_secret, http: reqwest::Client::new() },
        node_id,
        state,
        data_dir,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// Graceful shutdown, as on SIGTERM; returns what `run` returned.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.expect("server task")
    }

    /// Graceful shutdown, then move the data directory to `to` so a new server can reuse it.
    pub async fn shutdown_keeping(mut self, to: &std::path::Path) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.expect("server task").expect("clean shutdown");
        std::fs::rename(self.data_dir.path(), to).expect("move the data directory");
    }

    /// Stop the server as a crash would: no draining, no stopping of instances. Returns the
    /// data directory, which outlives the crash.
    pub async fn crash(mut self) -> tempfile::TempDir {
        self.stop.take();
        let h = self.handle.take().unwrap();
        h.abort();
        let _ = h.await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// Containers of this app's node (optionally of one function), running or not.
    pub async fn containers(&self, function: Option<&str>) -> Vec<bollard::models::ContainerSummary> {
        containers_of(&self.node_id, function).await
    }
}

impl ApiClient {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A signed request as the official SDKs send it.
    pub async fn request(&self, method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        self.request_as(&self.ak, &self.sk, method, path, query, headers, body, |_| {}).await
    }

    /// A request signed with the given key, with a hook to tamper with the signed headers.
    #[allow(clippy::too_many_arguments)]
    pub async fn request_as(
        &self,
        ak: &str,
        sk: &str,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        tamper: impl FnOnce(&mut HeaderMap),
    ) -> Resp {
        let method: Method = method.parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(&self.addr.to_string()).unwrap());
        for (k, v) in headers {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        sign_request(ak, sk, &method, path, query, &mut h, &body, chrono::Utc::now());
        tamper(&mut h);
        self.send(method, path, query, h, body).await
    }

    pub async fn send(&self, method: Method, path: &str, query: &str, headers: HeaderMap, body: Vec<u8>) -> Resp {
        let url = if query.is_empty() { self.url(path) } else { format!("{}?{query}", self.url(path)) };
        let r = self.http.request(method, url).headers(headers).body(body).send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body read");
        Resp { status, headers, body }
    }

    pub async fn create_function(&self, body: Value) -> Resp {
        self.request("POST", "/2023-03-30/functions", "", &[("content-type", "application/json")], body.to_string().into_bytes()).await
    }

    pub async fn get_function(&self, name: &str) -> Resp {
        self.request("GET", &format!("/2023-03-30/functions/{name}"), "", &[], vec![]).await
    }

    pub async fn update_function(&self, name: &str, body: Value) -> Resp {
        self.request("PUT", &format!("/2023-03-30/functions/{name}"), "", &[("content-type", "application/json")], body.to_string().into_bytes())
            .await
    }

    pub async fn delete_function(&self, name: &str) -> Resp {
        self.request("DELETE", &format!("/2023-03-30/functions/{name}"), "", &[], vec![]).await
    }

    pub async fn invoke(&self, name: &str, payload: &[u8], headers: &[(&str, &str)]) -> Resp {
        self.invoke_qualified(name, "", payload, headers).await
    }

    /// InvokeFunction with `?qualifier=` (a version id or an alias); "" leaves it out.
    pub async fn invoke_qualified(&self, name: &str, qualifier: &str, payload: &[u8], headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("content-type", "application/octet-stream")];
        h.extend_from_slice(headers);
        let query = if qualifier.is_empty() { String::new() } else { format!("qualifier={qualifier}") };
        self.request("POST", &format!("/2023-03-30/functions/{name}/invocations"), &query, &h, payload.to_vec()).await
    }

    /// A JSON request (POST/PUT with a body, GET/DELETE without).
    pub async fn json_request(&self, method: &str, path: &str, query: &str, body: Option<Value>) -> Resp {
        match body {
            Some(b) => self.request(method, path, query, &[("content-type", "application/json")], b.to_string().into_bytes()).await,
            None => self.request(method, path, query, &[], vec![]).await,
        }
    }
}

/// Containers of a node (optionally of one function), running or not.
pub async fn containers_of(node_id: &str, function: Option<&str>) -> Vec<bollard::models::ContainerSummary> {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let mut labels = vec![format!("nubis.node={node_id}")];
    if let Some(f) = function {
        labels.push(format!("nubis.function={f}"));
    }
    let opts = ListContainersOptions { all: true, filters: Some(HashMap::from([("label".to_string(), labels)])), ..Default::default() };
    docker.list_containers(Some(opts)).await.unwrap()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that failed before `shutdown` still stops its instances.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Poll `check` until it returns Some, or panic after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let entries: Vec<(&str, &[u8], u32)> = files.iter().map(|(n, c)| (*n, c.as_bytes(), 0o755)).collect();
    build_zip(&entries)
}

/// A Python function body for CreateFunction.
pub fn python_function(name: &str, code: &str) -> Value {
    serde_json::json!({
        "functionName": name, "runtime": "python3.10", "handler": "index.handler",
        "memorySize": 128, "timeout": 10,
        "code": {"zipFile": b64(&zip_of(&[("index.py", code)]))},
    })
}

pub const PY_UPPER: &str = "def handler(event, context):\n    print('got', event.decode())\n    return event.upper()\n";

/// GET `stream_url` and read its first chunk; only then call `go_url`, which lets the server
/// write the rest; returns (first chunk, rest). Bounded by deadlines, never by sleeps.
pub async fn stream_in_two(stream_url: &str, go_url: &str) -> (String, String) {
    let deadline = std::time::Duration::from_secs(30);
    let http = reqwest::Client::new();
    let mut r = tokio::time::timeout(deadline, http.get(stream_url).send()).await.expect("stream head in time").unwrap();
    assert_eq!(r.status(), 200);
    let mut first = Vec::new();
    while !first.ends_with(b"\n") {
        let chunk = tokio::time::timeout(deadline, r.chunk()).await.expect("first chunk before the server is told to go on").unwrap();
        first.extend_from_slice(&chunk.expect("the stream ended before its first line"));
    }
    let go = http.get(go_url).send().await.unwrap();
    assert_eq!(go.status(), 207);
    let rest = tokio::time::timeout(deadline, r.bytes()).await.expect("the rest in time").unwrap();
    (String::from_utf8(first).unwrap(), String::from_utf8(rest.to_vec()).unwrap())
}
