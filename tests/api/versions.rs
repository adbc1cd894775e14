//! Versions end to end: publish, list (both directions, paging), delete, errors, and a
//! version's immutability with real instances: once LATEST changes, `?qualifier=1` still
//! runs version 1's code in instances of its own, which updates of LATEST do not retire.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

pub fn versions_path(name: &str) -> String {
    format!("/2023-03-30/functions/{name}/versions")
}

/// PublishFunctionVersion; returns the version id.
pub async fn publish(app: &ApiClient, name: &str, description: &str) -> String {
    let r = app.json_request("POST", &versions_path(name), "", Some(json!({"description": description}))).await;
    assert_eq!(r.status, 200, "publish {name}: {}", r.text());
    r.json()["versionId"].as_str().expect("versionId is a string").to_string()
}

/// Change LATEST's config so that there is something new to publish.
async fn bump(app: &ApiClient, name: &str, timeout: u32) {
    let r = app.update_function(name, json!({"timeout": timeout})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn ids(r: &Resp) -> Vec<String> {
    r.json()["versions"].as_array().unwrap().iter().map(|v| v["versionId"].as_str().unwrap().to_string()).collect()
}

async fn list(app: &ApiClient, name: &str, query: &str) -> Resp {
    app.json_request("GET", &versions_path(name), query, None).await
}

/// Every page of a listing, following nextToken.
async fn all_pages(app: &ApiClient, name: &str, query: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&nextToken={t}"),
            None => query.to_string(),
        };
        let r = list(app, name, &q).await;
        assert_eq!(r.status, 200, "{}", r.text());
        pages.push(ids(&r));
        match r.json()["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn publish_list_delete_and_their_errors() {
    let app = spawn_app().await;
    let name = "ver-crud";
    app.json_request("POST", &versions_path(name), "", Some(json!({}))).await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.create_function(python_function(name, PY_UPPER)).await.status, 200);

    let r = app.json_request("POST", &versions_path(name), "", Some(json!({"description": "first"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v1 = r.json();
    assert_eq!((v1["versionId"].as_str(), v1["description"].as_str()), (Some("1"), Some("first")));
    assert!(v1["createdTime"].as_str().is_some_and(|t| t.ends_with('Z')) && v1["lastModifiedTime"].is_string(), "{v1}");

    // Nothing changed since version 1: FC's VersionPublishError, worded as deploy tools expect.
    let msg = app.json_request("POST", &versions_path(name), "", Some(json!({}))).await.assert_error(400, "VersionPublishError");
    assert!(msg.contains("No changes were made since last publish"), "{msg}");
    let long = json!({"description": "d".repeat(257)});
    app.json_request("POST", &versions_path(name), "", Some(long)).await.assert_error(400, "InvalidArgument");
    app.request("POST", &versions_path(name), "", &[], b"{nope".to_vec()).await.assert_error(400, "InvalidArgument");

    for (timeout, expected) in [(20, "2"), (21, "3"), (22, "4"), (23, "5")] {
        bump(&app, name, timeout).await;
        // A bare POST (no body) publishes too.
        let r = app.request("POST", &versions_path(name), "", &[], vec![]).await;
        assert_eq!(r.json()["versionId"], expected, "{}", r.text());
    }

    // BACKWARD (the default) is newest first, FORWARD oldest first; both page.
    assert_eq!(all_pages(&app, name, "limit=2").await, [vec!["5", "4"], vec!["3", "2"], vec!["1"]]);
    assert_eq!(all_pages(&app, name, "direction=FORWARD&limit=3").await, [vec!["1", "2", "3"], vec!["4", "5"]]);
    let r = list(&app, name, "direction=FORWARD").await;
    assert_eq!((r.json()["direction"].as_str(), r.json().get("nextToken")), (Some("FORWARD"), None));
    assert_eq!(list(&app, name, "").await.json()["direction"], "BACKWARD");
    assert_eq!(list(&app, name, "limit=1").await.json()["versions"][0]["description"], "");
    for bad in ["direction=SIDEWAYS", "limit=0", "limit=101", "nextToken=%21%21"] {
        list(&app, name, bad).await.assert_error(400, "InvalidArgument");
    }
    list(&app, "ghost", "").await.assert_error(404, "FunctionNotFound");

    // Delete; an id is never given again.
    let v5 = format!("{}/5", versions_path(name));
    assert_eq!(app.json_request("DELETE", &v5, "", None).await.status, 204);
    app.json_request("DELETE", &v5, "", None).await.assert_error(404, "VersionNotFound");
    app.json_request("DELETE", &format!("{}/abc", versions_path(name)), "", None).await.assert_error(404, "VersionNotFound");
    app.json_request("DELETE", &format!("{}/1", versions_path("ghost")), "", None).await.assert_error(404, "FunctionNotFound");
    bump(&app, name, 24).await;
    assert_eq!(publish(&app, name, "after a delete").await, "6");

    // GetFunction shows a version's frozen config.
    let path = format!("/2023-03-30/functions/{name}");
    let get = |q: &'static str| app.json_request("GET", &path, q, None);
    assert_eq!(get("qualifier=1").await.json()["timeout"], 10);
    assert_eq!(get("qualifier=6").await.json()["timeout"], 24);
    get("qualifier=5").await.assert_error(404, "VersionNotFound");

    // Deleting the function takes its versions; a new function of that name starts at 1.
    assert_eq!(app.delete_function(name).await.status, 204);
    list(&app, name, "").await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.create_function(python_function(name, PY_UPPER)).await.status, 200);
    assert!(ids(&list(&app, name, "").await).is_empty());
    assert_eq!(publish(&app, name, "").await, "1");
    app.shutdown().await.unwrap();
}

fn code(tag: &str) -> Value {
    let src = format!("def handler(event, context):\n    return b'{tag}:' + event\n");
    json!({"zipFile": b64(&zip_of(&[("index.py", &src)]))})
}

#[tokio::test]
async fn a_version_keeps_its_code_and_instances_when_latest_changes() {
    let app = spawn_app().await;
    let name = "ver-frozen";
    let mut body = python_function(name, "");
    body["code"] = code("one");
    let created = app.create_function(body).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let one_checksum = created.json()["codeChecksum"].as_str().unwrap().to_string();
    assert_eq!(publish(&app, name, "one").await, "1");

    let r = app.invoke_qualified(name, "1", b"a", &[]).await;
    assert_eq!((r.status, r.text()), (200, "one:a".to_string()));
    assert_eq!(r.header("x-fc-invocation-service-version"), Some("1"));
    assert_eq!(r.header("x-fc-code-checksum"), Some(one_checksum.as_str()));
    let v1_instance = r.header("x-fc-instance-id").unwrap().to_string();

    // LATEST moves on twice; version 1 keeps its code and its warm instance.
    for tag in ["two", "three"] {
        let r = app.update_function(name, json!({"code": code(tag)})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = app.invoke(name, b"b", &[]).await;
        assert_eq!((r.text(), r.header("x-fc-invocation-service-version")), (format!("{tag}:b"), Some("LATEST")));
        assert_ne!(r.header("x-fc-instance-id"), Some(v1_instance.as_str()));
        let r = app.invoke_qualified(name, "1", b"c", &[]).await;
        assert_eq!((r.text(), r.header("x-fc-invocation-service-version")), ("one:c".to_string(), Some("1")));
        assert_eq!(r.header("x-fc-instance-id"), Some(v1_instance.as_str()), "an update of LATEST must not retire version 1's instance");
    }
    let views = app.state.rm.instances();
    let v1_views: Vec<_> = views.iter().filter(|i| i.version == Some(1)).collect();
    assert_eq!(v1_views.len(), 1, "{views:?}");
    assert!(views.iter().all(|i| i.function_name == name), "{views:?}");
    let labels = app.containers(Some(name)).await.into_iter().filter_map(|c| c.labels).collect::<Vec<_>>();
    assert!(labels.iter().any(|l| l.get("nubis.version").map(String::as_str) == Some("1")), "{labels:?}");
    assert!(labels.iter().any(|l| l.get("nubis.version").map(String::as_str) == Some("LATEST")), "{labels:?}");

    // Version 1's package outlives LATEST's move away from it: GetFunctionCode still serves it.
    let link = app.json_request("GET", &format!("/2023-03-30/functions/{name}/code"), "qualifier=1", None).await.json();
    assert_eq!(link["checksum"], one_checksum.as_str());
    let zip = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(zip.status(), 200, "version 1's package was collected");

    // Async through the version: the dispatcher runs version 1 too.
    let r = app.invoke_qualified(name, "1", b"d", &[("x-fc-invocation-type", "Async"), ("x-fc-async-task-id", "v1task")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let task = eventually(Duration::from_secs(40), "async task on version 1 succeeded", || async {
        let t = app.json_request("GET", &format!("/2023-03-30/functions/{name}/async-tasks/v1task"), "", None).await.json();
        (t["status"] == "Succeeded").then_some(t)
    })
    .await;
    assert_eq!((task["returnPayload"].as_str(), task["qualifier"].as_str()), (Some("one:d"), Some("1")), "{task}");

    // Deleting version 1 stops its instance and frees its package.
    assert_eq!(app.json_request("DELETE", &format!("{}/1", versions_path(name)), "", None).await.status, 204);
    app.invoke_qualified(name, "1", b"e", &[]).await.assert_error(404, "VersionNotFound");
    eventually(Duration::from_secs(15), "version 1's instance stopped", || async {
        let gone = !app.containers(Some(name)).await.iter().any(|c| c.labels.as_ref().and_then(|l| l.get("nubis.version")).map(String::as_str) == Some("1"));
        gone.then_some(())
    })
    .await;
    assert!(app.state.code.get(&one_checksum).await.is_err(), "a package no function or version uses is removed");
    assert_eq!(app.invoke(name, b"f", &[]).await.text(), "three:f", "LATEST is untouched");

    // Deleting the function stops every instance, of LATEST and of its versions.
    assert_eq!(publish(&app, name, "three").await, "2");
    assert_eq!(app.invoke_qualified(name, "2", b"g", &[]).await.text(), "three:g");
    assert_eq!(app.delete_function(name).await.status, 204);
    eventually(Duration::from_secs(15), "all instances of the deleted function stopped", || async {
        app.containers(Some(name)).await.is_empty().then_some(())
    })
    .await;
    app.invoke_qualified(name, "2", b"h", &[]).await.assert_error(404, "FunctionNotFound");
    app.shutdown().await.unwrap();
}
