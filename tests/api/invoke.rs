//! Sync invocation through real containers, for each kind of runtime.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::helpers::*;

fn log_tail(r: &Resp) -> String {
    let b64 = r.header("x-fc-log-result").expect("x-fc-log-result present");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("standard base64")).unwrap()
}

async fn running(app: &TestApp, f: &str) -> usize {
    app.containers(Some(f)).await.iter().filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING)).count()
}

#[tokio::test]
async fn python_create_invoke_update_sees_new_code_delete() {
    let app = spawn_app().await;
    let r = app.create_function(python_function("py-cycle", PY_UPPER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let checksum = r.json()["codeChecksum"].as_str().unwrap().to_string();

    let r = app.invoke("py-cycle", b"hello", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "HELLO");
    assert!(r.header("x-fc-error-type").is_none());
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    assert_eq!(r.header("x-fc-code-checksum"), Some(checksum.as_str()));
    assert_eq!(r.header("x-fc-invocation-service-version"), Some("LATEST"));
    let first_instance = r.header("x-fc-instance-id").unwrap().to_string();
    let logs = log_tail(&r);
    assert!(logs.contains(&format!("FC Invoke Start RequestId: {rid}")), "{logs}");
    assert!(logs.contains("got hello"), "{logs}");
    assert!(logs.contains(&format!("FC Invoke End RequestId: {rid}")), "{logs}");

    // Warm: same instance, and the tail holds only this invocation's lines.
    let r = app.invoke("py-cycle", b"again", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.text(), "AGAIN");
    assert_eq!(r.header("x-fc-instance-id"), Some(first_instance.as_str()));
    let logs = log_tail(&r);
    assert!(logs.contains("got again") && !logs.contains("got hello"), "{logs}");
    assert!(r.header("x-fc-log-result").is_some());
    let r = app.invoke("py-cycle", b"plain", &[]).await;
    assert!(r.header("x-fc-log-result").is_none(), "no tail unless asked");

    let lower = "def handler(event, context):\n    return event.lower()\n";
    let r = app.update_function("py-cycle", json!({"code": {"zipFile": b64(&zip_of(&[("index.py", lower)]))}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.invoke("py-cycle", b"MiXeD", &[]).await;
    assert_eq!(r.text(), "mixed", "the update is served at once");
    assert_ne!(r.header("x-fc-instance-id"), Some(first_instance.as_str()));
    // The instance of the old code is retired and stopped.
    eventually(Duration::from_secs(15), "old instance removed", || async {
        (app.containers(Some("py-cycle")).await.len() == 1).then_some(())
    })
    .await;

    assert_eq!(app.delete_function("py-cycle").await.status, 204);
    eventually(Duration::from_secs(15), "instances of a deleted function removed", || async {
        app.containers(Some("py-cycle")).await.is_empty().then_some(())
    })
    .await;
    app.invoke("py-cycle", b"x", &[]).await.assert_error(404, "FunctionNotFound");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn function_errors_are_200_with_error_type_and_env_and_context_reach_the_function() {
    let app = spawn_app().await;
    let code = "import os\n\
def handler(event, context):\n    \
    if event == b'boom':\n        raise ValueError('boom here')\n    \
    return os.environ['GREETING'] + ' ' + context.function.name + ' ' + os.environ['FC_FUNCTION_NAME'] + ' ' + str(context.function.memory)\n";
    let mut body = python_function("py-err", code);
    body["environmentVariables"] = json!({"GREETING": "hi"});
    body["memorySize"] = json!(256);
    assert_eq!(app.create_function(body).await.status, 200);

    let r = app.invoke("py-err", b"ok", &[]).await;
    assert_eq!(r.text(), "hi py-err py-err 256");

    let r = app.invoke("py-err", b"boom", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-fc-error-type"), Some("UnhandledInvocationError"));
    let j = r.json();
    assert_eq!(j["errorType"], "ValueError");
    assert_eq!(j["errorMessage"], "boom here");
    assert!(j["stackTrace"].as_array().is_some_and(|a| !a.is_empty()), "{j}");
    assert!(log_tail(&r).contains("Traceback"), "the traceback is in the log");
    // The instance survives a handled exception.
    assert_eq!(app.invoke("py-err", b"ok", &[]).await.text(), "hi py-err py-err 256");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn nodejs_handler_returns_async_result_with_logs() {
    let app = spawn_app().await;
    let code = "exports.handler = async (event, context) => {\n  console.log('node got ' + event.toString());\n  return JSON.stringify({len: event.length, rid: context.requestId});\n};\n";
    let body = json!({"functionName": "node-fn", "runtime": "nodejs20", "handler": "index.handler",
        "code": {"zipFile": b64(&zip_of(&[("index.js", code)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let r = app.invoke("node-fn", b"12345", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["len"], 5);
    assert_eq!(j["rid"].as_str(), r.header("x-fc-request-id"));
    assert!(log_tail(&r).contains("node got 12345"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn custom_runtime_runs_the_users_server_from_the_code_package() {
    let app = spawn_app().await;
    let server = r#"import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        print('custom server saw', self.headers['x-fc-request-id'], flush=True)
        out = b'custom:' + body + b':' + os.environ['FC_FUNCTION_NAME'].encode() + b':' + self.headers['x-fc-function-name'].encode()
        self.send_response(200)
        self.send_header('content-length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
HTTPServer(('0.0.0.0', int(os.environ['FC_SERVER_PORT'])), H).serve_forever()
"#;
    let body = json!({"functionName": "custom-fn", "runtime": "custom.debian12", "handler": "not.used",
        "customRuntimeConfig": {"command": ["python3", "/code/server.py"], "port": 8080},
        "code": {"zipFile": b64(&zip_of(&[("server.py", server)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let r = app.invoke("custom-fn", b"ping", &[("x-fc-log-type", "Tail")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "custom:ping:custom-fn:custom-fn", "env and x-fc-* headers reach the server");
    let rid = r.header("x-fc-request-id").unwrap();
    let logs = log_tail(&r);
    assert!(logs.contains(&format!("FC Invoke Start RequestId: {rid}")), "agent frames custom logs: {logs}");
    assert!(logs.contains(&format!("custom server saw {rid}")), "{logs}");

    // A custom server that exits at once is reported as such, with its output.
    let body = json!({"functionName": "custom-dies", "runtime": "custom.debian12", "handler": "x",
        "customRuntimeConfig": {"command": ["python3", "-c", "import sys; print('bye now'); sys.exit(3)"]},
        "code": {"zipFile": b64(&zip_of(&[("unused.txt", "x")]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let msg = app.invoke("custom-dies", b"", &[]).await.assert_error(412, "CAExited");
    assert!(msg.contains("exit code 3") && msg.contains("bye now"), "{msg}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn custom_container_runs_the_users_image() {
    let app = spawn_app().await;
    let body = json!({"functionName": "box", "runtime": "custom-container", "handler": "unused",
        "customContainerConfig": {"image": "nubis/test-echo-container:latest", "port": 9000}});
    let r = app.create_function(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.invoke("box", b"inside", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["container"], true);
    assert_eq!(j["event"], "inside");
    assert_eq!(j["requestId"].as_str(), r.header("x-fc-request-id"));

    let body = json!({"functionName": "nobox", "runtime": "custom-container", "handler": "unused",
        "customContainerConfig": {"image": "nubis/no-such-image:never"}});
    assert_eq!(app.create_function(body).await.status, 200);
    app.invoke("nobox", b"", &[]).await.assert_error(412, "ImageNotFound");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn initializer_runs_once_per_instance_and_its_failure_is_reported() {
    let app = spawn_app().await;
    let code = "calls = []\n\
def init(context):\n    calls.append(context.request_id)\n\
def handler(event, context):\n    return str(len(calls))\n\
def bad_init(context):\n    raise RuntimeError('init failed')\n";
    let mut body = python_function("init-fn", code);
    body["instanceLifecycleConfig"] = json!({"initializer": {"handler": "index.init", "timeout": 5}});
    assert_eq!(app.create_function(body).await.status, 200);
    assert_eq!(app.invoke("init-fn", b"", &[]).await.text(), "1");
    assert_eq!(app.invoke("init-fn", b"", &[]).await.text(), "1", "not run again on a warm instance");

    let mut body = python_function("init-bad", code);
    body["instanceLifecycleConfig"] = json!({"initializer": {"handler": "index.bad_init"}});
    assert_eq!(app.create_function(body).await.status, 200);
    let r = app.invoke("init-bad", b"", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-fc-error-type"), Some("InitializationError"));
    assert!(r.text().contains("init failed"), "{}", r.text());
    eventually(Duration::from_secs(10), "failed instance removed", || async {
        (running(&app, "init-bad").await == 0).then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn large_payloads_round_trip() {
    let app = spawn_app().await;
    let code = "import hashlib\ndef handler(event, context):\n    return hashlib.sha256(event).hexdigest() + ':' + str(len(event))\n";
    assert_eq!(app.create_function(python_function("big", code)).await.status, 200);
    let payload: Vec<u8> = (0..(20usize << 20)).map(|i| (i % 251) as u8).collect();
    let r = app.invoke("big", &payload, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expect = format!("{}:{}", nubis::api::auth::sha256_hex(&payload), payload.len());
    assert_eq!(r.text(), expect);
    app.shutdown().await.unwrap();
}
