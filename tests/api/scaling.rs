//! Provision configs, reserved concurrency and the invocation switch end to end: CRUD, paging,
//! validation with FC's codes, `current` counted from real instances, configs going with their
//! function and holding their alias, and a disabled function refusing sync and async calls on
//! every qualifier until it is enabled again (with abortOngoingRequest, its instances drain
//! while the call already running finishes).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::versions::publish;

fn provision_path(name: &str) -> String {
    format!("/2023-03-30/functions/{name}/provision-config")
}

fn concurrency_path(name: &str) -> String {
    format!("/2023-03-30/functions/{name}/concurrency")
}

async fn put_provision(app: &ApiClient, name: &str, qualifier: &str, body: Value) -> Resp {
    app.json_request("PUT", &provision_path(name), &qualifier_query(qualifier), Some(body)).await
}

async fn get_provision(app: &ApiClient, name: &str, qualifier: &str) -> Resp {
    app.json_request("GET", &provision_path(name), &qualifier_query(qualifier), None).await
}

async fn delete_provision(app: &ApiClient, name: &str, qualifier: &str) -> Resp {
    app.json_request("DELETE", &provision_path(name), &qualifier_query(qualifier), None).await
}

fn qualifier_query(q: &str) -> String {
    if q.is_empty() { String::new() } else { format!("qualifier={q}") }
}

async fn create(app: &ApiClient, name: &str, code: &str) {
    let r = app.create_function(python_function(name, code)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Every page of a list route, following nextToken; `key` names the array.
async fn all_pages(app: &ApiClient, path: &str, query: &str, key: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&nextToken={t}"),
            None => query.to_string(),
        };
        let r = app.json_request("GET", path, &q, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        pages.push(j[key].as_array().unwrap().clone());
        match j["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 20, "paging does not end");
    }
}

fn provision_keys(pages: &[Vec<Value>]) -> Vec<Vec<(String, String)>> {
    let key = |c: &Value| {
        let arn = c["functionArn"].as_str().unwrap();
        (arn.rsplit('/').next().unwrap().to_string(), c["qualifier"].as_str().unwrap().to_string())
    };
    pages.iter().map(|p| p.iter().map(key).collect()).collect()
}

fn pair(f: &str, q: &str) -> (String, String) {
    (f.to_string(), q.to_string())
}

#[tokio::test]
async fn provision_configs_crud_paging_validation_and_current() {
    let app = spawn_app().await;
    put_provision(&app, "prov", "", json!({"target": 1})).await.assert_error(404, "FunctionNotFound");
    get_provision(&app, "prov", "").await.assert_error(404, "FunctionNotFound");
    create(&app, "prov", PY_UPPER).await;
    get_provision(&app, "prov", "").await.assert_error(404, "ProvisionConfigNotFound");

    let r = put_provision(&app, "prov", "", json!({"target": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["functionArn"], format!("acs:fc:{}:{}:functions/prov", app.state.cfg.server.region, app.state.cfg.server.account_id));
    // `current` moves by itself: the provisioner starts the instances as soon as the config is in.
    assert_eq!(
        (&c["qualifier"], &c["target"], &c["currentError"], &c["defaultTarget"]),
        (&json!("LATEST"), &json!(2), &json!(""), &json!(2))
    );
    assert!(c["current"].as_u64().is_some_and(|n| n <= 2), "{c}");
    assert_eq!((&c["alwaysAllocateCPU"], &c["alwaysAllocateGPU"]), (&json!(true), &json!(true)));
    assert_eq!((&c["scheduledActions"], &c["targetTrackingPolicies"]), (&json!([]), &json!([])));
    assert_eq!(without_current(get_provision(&app, "prov", "LATEST").await.json()), without_current(c), "LATEST is the default qualifier");

    // Policies are kept as given (and not acted on); target 0 is a config like any other.
    let actions = json!([{"name": "night", "scheduleExpression": "cron(0 0 22 * * *)", "target": 0, "timeZone": "Asia/Shanghai"}]);
    let policies = json!([{"name": "cpu", "metricType": "CPUUtilization", "metricTarget": 0.6, "minCapacity": 0, "maxCapacity": 3}]);
    let r = put_provision(&app, "prov", "", json!({"target": 0, "defaultTarget": 1, "alwaysAllocateCPU": false,
        "scheduledActions": actions, "targetTrackingPolicies": policies}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!((&c["target"], &c["defaultTarget"], &c["alwaysAllocateCPU"]), (&json!(0), &json!(1), &json!(false)));
    assert_eq!((&c["scheduledActions"], &c["targetTrackingPolicies"]), (&actions, &policies));
    assert_eq!(without_current(get_provision(&app, "prov", "").await.json()), without_current(c));

    // Validation: 400 InvalidArgument naming the field; a version id is not a qualifier here.
    let cases: [(Value, &str); 6] = [
        (json!({}), "target"),
        (json!({"target": -1}), "target"),
        (json!({"target": 10001}), "target"),
        (json!({"target": "2"}), "target"),
        (json!({"target": 1, "scheduledActions": "daily"}), "scheduledActions"),
        (json!({"target": 1, "alwaysAllocateCPU": 1}), "alwaysAllocateCPU"),
    ];
    for (body, field) in cases {
        let msg = put_provision(&app, "prov", "", body.clone()).await.assert_error(400, "InvalidArgument");
        assert!(msg.contains(field), "{body}: {msg}");
    }
    let r = app.request("PUT", &provision_path("prov"), "", &[("content-type", "application/json")], b"{".to_vec()).await;
    r.assert_error(400, "InvalidArgument");
    assert_eq!(publish(&app, "prov", "v1").await, "1");
    let msg = put_provision(&app, "prov", "1", json!({"target": 1})).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("LATEST or an alias"), "{msg}");
    get_provision(&app, "prov", "1").await.assert_error(400, "InvalidArgument");
    put_provision(&app, "prov", "01", json!({"target": 1})).await.assert_error(400, "InvalidArgument");
    put_provision(&app, "prov", "prod", json!({"target": 1})).await.assert_error(404, "AliasNotFound");
    get_provision(&app, "prov", "prod").await.assert_error(404, "AliasNotFound");

    // On an alias: `current` counts the ready instances of the alias's version.
    let r = app.json_request("POST", "/2023-03-30/functions/prov/aliases", "", Some(json!({"aliasName": "prod", "versionId": "1"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    get_provision(&app, "prov", "prod").await.assert_error(404, "ProvisionConfigNotFound");
    let r = put_provision(&app, "prov", "prod", json!({"target": 1})).await;
    assert_eq!((r.status, r.json()["qualifier"].clone()), (200, json!("prod")));
    eventually(Duration::from_secs(60), "the alias's version provisioned, without a call", || async {
        (get_provision(&app, "prov", "prod").await.json()["current"] == 1).then_some(())
    })
    .await;
    assert_eq!(app.invoke_qualified("prov", "prod", b"a", &[]).await.text(), "A");
    assert_eq!(get_provision(&app, "prov", "prod").await.json()["current"], 1, "the call used the provisioned instance");
    assert_eq!(app.invoke("prov", b"b", &[]).await.text(), "B");
    assert!(get_provision(&app, "prov", "").await.json()["current"].as_u64().unwrap() >= 1, "LATEST counts its own instances");

    // The alias is held by its config.
    let msg = app.json_request("DELETE", "/2023-03-30/functions/prov/aliases/prod", "", None).await.assert_error(412, "ProvisionConfigExist");
    assert!(msg.contains("prod"), "{msg}");

    // Listing: (function, qualifier) order, paged by nextToken, filtered by function.
    create(&app, "prov2", PY_UPPER).await;
    assert_eq!(put_provision(&app, "prov2", "", json!({"target": 3})).await.status, 200);
    let want = [pair("prov", "LATEST"), pair("prov", "prod"), pair("prov2", "LATEST")];
    let pages = all_pages(&app, "/2023-03-30/provision-configs", "limit=1", "provisionConfigs").await;
    assert_eq!(provision_keys(&pages), want.iter().map(|k| vec![k.clone()]).collect::<Vec<_>>());
    let pages = all_pages(&app, "/2023-03-30/provision-configs", "limit=2", "provisionConfigs").await;
    assert_eq!(provision_keys(&pages), vec![want[..2].to_vec(), want[2..].to_vec()]);
    let listed = &all_pages(&app, "/2023-03-30/provision-configs", "", "provisionConfigs").await[0];
    assert!(listed[0]["current"].as_u64().unwrap() >= 1, "listing counts instances too: {}", listed[0]);
    let pages = all_pages(&app, "/2023-03-30/provision-configs", "functionName=prov2", "provisionConfigs").await;
    assert_eq!(provision_keys(&pages), vec![vec![pair("prov2", "LATEST")]]);
    for bad in ["limit=0", "limit=101", "nextToken=%25%25"] {
        app.json_request("GET", "/2023-03-30/provision-configs", bad, None).await.assert_error(400, "InvalidArgument");
    }

    // Delete: 204, then 404; the alias can go once its config is gone.
    assert_eq!(delete_provision(&app, "prov", "prod").await.status, 204);
    delete_provision(&app, "prov", "prod").await.assert_error(404, "ProvisionConfigNotFound");
    assert_eq!(app.json_request("DELETE", "/2023-03-30/functions/prov/aliases/prod", "", None).await.status, 204);
    delete_provision(&app, "prov", "prod").await.assert_error(404, "AliasNotFound");
    delete_provision(&app, "ghost", "").await.assert_error(404, "FunctionNotFound");

    // The function's configs go with it; a function created again under the name has none.
    assert_eq!(app.delete_function("prov").await.status, 204);
    let pages = all_pages(&app, "/2023-03-30/provision-configs", "", "provisionConfigs").await;
    assert_eq!(provision_keys(&pages), vec![vec![pair("prov2", "LATEST")]]);
    create(&app, "prov", PY_UPPER).await;
    get_provision(&app, "prov", "").await.assert_error(404, "ProvisionConfigNotFound");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrency_configs_crud_and_list() {
    let app = spawn_app().await;
    let put = |name: &'static str, body: Value| {
        let app = app.api.clone();
        async move { app.json_request("PUT", &concurrency_path(name), "", Some(body)).await }
    };
    put("conc-a", json!({"reservedConcurrency": 1})).await.assert_error(404, "FunctionNotFound");
    for n in ["conc-a", "conc-b", "conc-c"] {
        create(&app, n, PY_UPPER).await;
    }
    let get = |name: &'static str| {
        let app = app.api.clone();
        async move { app.json_request("GET", &concurrency_path(name), "", None).await }
    };
    get("conc-a").await.assert_error(404, "ConcurrencyConfigNotFound");
    for body in [json!({}), json!({"reservedConcurrency": -1}), json!({"reservedConcurrency": "3"}), json!({"reservedConcurrency": 1.5})] {
        let msg = put("conc-a", body.clone()).await.assert_error(400, "InvalidArgument");
        assert!(msg.contains("reservedConcurrency"), "{body}: {msg}");
    }

    let before = app.get_function("conc-a").await.json();
    let r = put("conc-a", json!({"reservedConcurrency": 10})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let arn = before["functionArn"].clone();
    assert_eq!(r.json(), json!({"functionArn": arn, "reservedConcurrency": 10}));
    assert_eq!(get("conc-a").await.json(), r.json());
    // Not a change of the function's config.
    assert_eq!(app.get_function("conc-a").await.json()["lastModifiedTime"], before["lastModifiedTime"]);
    assert_eq!(put("conc-c", json!({"reservedConcurrency": 0})).await.json()["reservedConcurrency"], 0, "0 is allowed");

    let names = |pages: Vec<Vec<Value>>| -> Vec<Vec<(String, i64)>> {
        pages
            .iter()
            .map(|p| {
                p.iter()
                    .map(|c| (c["functionArn"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), c["reservedConcurrency"].as_i64().unwrap()))
                    .collect()
            })
            .collect()
    };
    let a = ("conc-a".to_string(), 10);
    let c = ("conc-c".to_string(), 0);
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "", "configs").await), vec![vec![a.clone(), c.clone()]]);
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "limit=1", "configs").await), vec![vec![a.clone()], vec![c.clone()]]);
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "functionName=conc-c", "configs").await), vec![vec![c.clone()]]);
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "functionName=conc-b", "configs").await), vec![vec![]]);
    app.json_request("GET", "/2023-03-30/concurrency-configs", "limit=0", None).await.assert_error(400, "InvalidArgument");

    let delete = |name: &'static str| {
        let app = app.api.clone();
        async move { app.json_request("DELETE", &concurrency_path(name), "", None).await }
    };
    assert_eq!(delete("conc-a").await.status, 204);
    delete("conc-a").await.assert_error(404, "ConcurrencyConfigNotFound");
    delete("ghost").await.assert_error(404, "FunctionNotFound");
    get("conc-a").await.assert_error(404, "ConcurrencyConfigNotFound");
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "", "configs").await), vec![vec![c]]);
    // The config goes with its function.
    assert_eq!(app.delete_function("conc-c").await.status, 204);
    assert_eq!(names(all_pages(&app, "/2023-03-30/concurrency-configs", "", "configs").await), vec![vec![]]);
    app.shutdown().await.unwrap();
}

const SLEEPER: &str = "import time\ndef handler(event, context):\n    time.sleep(float(event or b'0'))\n    return 'slept'\n";

async fn switch(app: &ApiClient, name: &str, on: bool, body: Option<Value>) -> Resp {
    let path = format!("/2023-03-30/functions/{name}/invoke/{}", if on { "enable" } else { "disable" });
    app.json_request("POST", &path, "", body).await
}

#[tokio::test]
async fn disabled_function_refuses_every_call_until_enabled() {
    let app = spawn_app().await;
    // An empty body is a valid disable (it gets as far as the function lookup).
    switch(&app, "sw", false, None).await.assert_error(404, "FunctionNotFound");
    switch(&app, "sw", true, None).await.assert_error(404, "FunctionNotFound");
    create(&app, "sw", SLEEPER).await;
    assert_eq!(publish(&app, "sw", "v1").await, "1");
    let r = app.json_request("POST", "/2023-03-30/functions/sw/aliases", "", Some(json!({"aliasName": "prod", "versionId": "1"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Warm: the function's record is cached on the invoke path, so the switch must reach it.
    let first = app.invoke("sw", b"0", &[]).await;
    assert_eq!(first.text(), "slept");

    let msg = switch(&app, "sw", false, Some(json!({"reason": 7}))).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("reason"), "{msg}");
    let r = switch(&app, "sw", false, Some(json!({"reason": "maintenance window"}))).await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})));
    let f = app.get_function("sw").await.json();
    assert_eq!(f["invocationRestriction"], json!({"disable": true, "reason": "maintenance window"}));

    for q in ["", "LATEST", "1", "prod"] {
        let msg = app.invoke_qualified("sw", q, b"0", &[]).await.assert_error(412, "FunctionInvocationDisabled");
        assert!(msg.contains("maintenance window") && msg.contains("'sw'"), "{q}: {msg}");
        let msg = app.invoke_qualified("sw", q, b"0", &[("x-fc-invocation-type", "Async")]).await.assert_error(412, "FunctionInvocationDisabled");
        assert!(msg.contains("maintenance window"), "async {q}: {msg}");
    }
    // A qualifier that names nothing is still answered as such.
    app.invoke_qualified("sw", "9", b"0", &[]).await.assert_error(404, "VersionNotFound");
    // Without abortOngoingRequest the instance stays in service (only calls are refused).
    assert!(app.state.rm.instances().iter().any(|i| i.function_name == "sw" && i.state == nubis::scheduler::InstanceState::Ready));

    let r = switch(&app, "sw", true, None).await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})));
    assert!(app.get_function("sw").await.json().get("invocationRestriction").is_none());
    let again = app.invoke("sw", b"0", &[]).await;
    assert_eq!((again.status, again.text()), (200, "slept".to_string()));
    assert_eq!(again.header("x-fc-instance-id"), first.header("x-fc-instance-id"), "the same warm instance serves");
    assert_eq!(app.invoke_qualified("sw", "prod", b"0", &[]).await.status, 200);
    let r = app.invoke("sw", b"0", &[("x-fc-invocation-type", "Async")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    // Done before the next step, which needs the only call in flight to be its own.
    let task = format!("/2023-03-30/functions/sw/async-tasks/{}", r.header("x-fc-async-task-id").unwrap());
    eventually(Duration::from_secs(40), "the async call succeeded", || {
        let api = app.api.clone();
        let task = task.clone();
        async move { (api.json_request("GET", &task, "", None).await.json()["status"] == "Succeeded").then_some(()) }
    })
    .await;

    // abortOngoingRequest: the call already running finishes, the instances drain, nothing new
    // gets in; once enabled, a new instance serves.
    let running = {
        let api = app.api.clone();
        tokio::spawn(async move { api.invoke("sw", b"1.5", &[]).await })
    };
    let st = app.state.clone();
    eventually(Duration::from_secs(20), "a call in flight", || {
        let st = st.clone();
        async move { st.rm.instances().iter().any(|i| i.function_name == "sw" && i.inflight == 1).then_some(()) }
    })
    .await;
    let r = switch(&app, "sw", false, Some(json!({"abortOngoingRequest": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let draining = app.state.rm.instances();
    assert!(
        draining.iter().filter(|i| i.function_name == "sw").all(|i| i.state == nubis::scheduler::InstanceState::Draining),
        "{draining:?}"
    );
    let msg = app.invoke("sw", b"0", &[]).await.assert_error(412, "FunctionInvocationDisabled");
    assert!(msg.contains("'sw' is disabled;"), "no reason given: {msg}");
    let done = running.await.unwrap();
    assert_eq!((done.status, done.text()), (200, "slept".to_string()), "the running call finished");
    assert_eq!(switch(&app, "sw", true, None).await.status, 200);
    let fresh = app.invoke("sw", b"0", &[]).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    assert_ne!(fresh.header("x-fc-instance-id"), first.header("x-fc-instance-id"), "a new instance after the drain");
    app.shutdown().await.unwrap();
}

/// A ProvisionConfig document without `current`, which changes as instances start.
fn without_current(mut v: Value) -> Value {
    v.as_object_mut().expect("a JSON object").remove("current");
    v
}

#[tokio::test]
async fn events_accepted_before_a_disable_wait_until_enabled() {
    // Accepted by a server without a dispatcher, so the event is still queued when the
    // function is disabled; a server with a dispatcher on the same data then holds it.
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let app = spawn_app_with(|c| c.dispatcher.enabled = false).await;
    create(&app, "held", SLEEPER).await;
    let r = app.invoke("held", b"0", &[("x-fc-invocation-type", "Async")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let task = format!("/2023-03-30/functions/held/async-tasks/{}", r.header("x-fc-async-task-id").unwrap());
    assert_eq!(switch(&app, "held", false, Some(json!({"reason": "hold"}))).await.status, 200);
    app.shutdown_keeping(&data).await;

    let app = spawn_app_with(|c| {
        c.server.data_dir = data.clone();
        c.dispatcher.poll_interval_ms = 20;
    })
    .await;
    let since = std::time::Instant::now();
    eventually(Duration::from_secs(20), "3 s of the event held", || async {
        let status = app.json_request("GET", &task, "", None).await.json()["status"].clone();
        assert!(status != "Succeeded" && status != "Failed", "ran while disabled: {status}");
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .await;
    assert!(app.containers(Some("held")).await.is_empty(), "no instance started for it");
    assert_eq!(switch(&app, "held", true, None).await.status, 200);
    eventually(Duration::from_secs(60), "the held event ran once enabled", || async {
        (app.json_request("GET", &task, "", None).await.json()["status"] == "Succeeded").then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}
