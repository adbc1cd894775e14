//! An HTTP trigger of a custom container on a remote agent: the request's method and path
//! travel controller → agent → instance (the agent protocol's `x-nubis-http-*` headers), and the
//! instance's own answers come back unchanged; a response streams back as the instance writes
//! it.

use std::time::Duration;

use serde_json::json;

use crate::helpers::stream_in_two;
use crate::helpers::ApiClient;
use crate::{Cluster, echo_function, wait_for_nodes};

#[tokio::test]
async fn http_triggers_pass_requests_through_remote_agents() {
    let cluster = Cluster::new();
    let a = cluster.agent("a");
    let app = cluster.controller().await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("web-remote")).await.status, 200);
    let url = anonymous_http_trigger(&app.api, "web-remote", &["GET", "POST", "PUT"]).await;
    let http = reqwest::Client::new();

    // The echo container answers GET on any path, POST only on /invoke, and no PUT at all.
    let r = http.get(format!("{url}/any/path?x=1")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "ok\n".to_string()));
    let r = http.post(format!("{url}/invoke")).body("hi there").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!((&j["container"], &j["event"]), (&json!(true), &json!("hi there")), "{j}");
    let r = http.post(format!("{url}/elsewhere")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 404, "the server's own 404, relayed");
    let r = http.put(format!("{url}/invoke")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 501, "PUT reached the server as PUT");
    app.shutdown().await.unwrap();
}

/// The HTTP trigger tests' custom server (tests/support/custom_echo.py), run as a custom
/// container from the custom runtime's image: agents of this cluster have no code store.
#[tokio::test]
async fn http_trigger_responses_stream_through_remote_agents() {
    let cluster = Cluster::new();
    let a = cluster.agent("a");
    let app = cluster.controller_with(|c| c.limits.max_sync_payload_bytes = 8 << 20).await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    // Several calls per instance: `/go` must reach the instance that is streaming `/stream`.
    let f = json!({"functionName": "web-stream", "runtime": "custom-container", "handler": "unused", "memorySize": 128,
        "timeout": 60, "instanceConcurrency": 4,
        "customContainerConfig": {"image": "nubis/runtime-custom-debian12:latest", "port": 9000,
            "entrypoint": ["python3", "-c"], "command": [include_str!("../support/custom_echo.py")]}});
    let r = app.api.create_function(f).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = anonymous_http_trigger(&app.api, "web-stream", &["GET", "POST"]).await;

    let (first, rest) = stream_in_two(&format!("{url}/stream"), &format!("{url}/go")).await;
    assert_eq!((first.as_str(), rest.as_str()), ("first\n", "second\n"));
    // An upload of several MB streams through the agent and back, unchanged.
    let big: Vec<u8> = (0..6 << 20).map(|i| (i % 251) as u8).collect();
    let r = reqwest::Client::new().post(format!("{url}/upload")).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 207);
    assert!(r.bytes().await.unwrap() == big, "the body came back changed");
    // Over the limit and chunked (no length to refuse up front): the stream to the agent is
    // broken off at the limit, and the caller gets 400 EntityTooLarge.
    let over = vec![b'z'; (8 << 20) + 1];
    let chunks = futures_util::stream::iter(over.chunks(1 << 20).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let r = reqwest::Client::new().post(format!("{url}/upload")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["Code"], "EntityTooLarge", "{j}");
    app.shutdown().await.unwrap();
}

/// An anonymous HTTP trigger `web` on `function` for `methods`; its URL.
async fn anonymous_http_trigger(api: &ApiClient, function: &str, methods: &[&str]) -> String {
    let cfg = json!({"authType": "anonymous", "methods": methods}).to_string();
    let body = json!({"triggerName": "web", "triggerType": "http", "triggerConfig": cfg});
    let r = api.json_request("POST", &format!("/2023-03-30/functions/{function}/triggers"), "", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["httpTrigger"]["urlInternet"].as_str().unwrap().to_string()
}
