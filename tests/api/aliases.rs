//! Aliases end to end: CRUD, the validation matrix with FC's codes, a version held by an
//! alias, and weighted routing over real instances (the response header names the version
//! that ran).

use serde_json::{Value, json};

use crate::helpers::*;
use crate::versions::{publish, versions_path};

fn aliases_path(name: &str) -> String {
    format!("/2023-03-30/functions/{name}/aliases")
}

async fn create_alias(app: &ApiClient, name: &str, body: Value) -> Resp {
    app.json_request("POST", &aliases_path(name), "", Some(body)).await
}

/// A function whose LATEST says `tag`, published as the next version.
async fn publish_code(app: &ApiClient, name: &str, tag: &str) -> String {
    let src = format!("def handler(event, context):\n    return b'{tag}'\n");
    let code = json!({"zipFile": b64(&zip_of(&[("index.py", &src)]))});
    let r = if app.get_function(name).await.status == 404 {
        let mut body = python_function(name, "");
        body["code"] = code;
        app.create_function(body).await
    } else {
        app.update_function(name, json!({"code": code})).await
    };
    assert_eq!(r.status, 200, "{}", r.text());
    publish(app, name, tag).await
}

#[tokio::test]
async fn alias_crud_and_validation() {
    let app = spawn_app().await;
    let name = "alias-crud";
    create_alias(&app, name, json!({"aliasName": "prod", "versionId": "1"})).await.assert_error(404, "FunctionNotFound");
    assert_eq!(publish_code(&app, name, "v1").await, "1");
    assert_eq!(publish_code(&app, name, "v2").await, "2");

    let r = create_alias(&app, name, json!({"aliasName": "prod", "versionId": "1", "description": "canary",
        "additionalVersionWeight": {"2": 0.3}}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let prod = r.json();
    assert_eq!(
        (&prod["aliasName"], &prod["versionId"], &prod["description"], &prod["additionalVersionWeight"]),
        (&json!("prod"), &json!("1"), &json!("canary"), &json!({"2": 0.3}))
    );
    assert!(prod["createdTime"].is_string() && prod["lastModifiedTime"].is_string(), "{prod}");
    let msg = create_alias(&app, name, json!({"aliasName": "prod", "versionId": "2"})).await.assert_error(409, "AliasAlreadyExists");
    assert!(msg.contains("prod"), "{msg}");

    // The validation matrix: malformed input is 400 naming the field; a version that does not
    // exist is 404 VersionNotFound.
    let cases: [(Value, u16, &str, &str); 14] = [
        (json!({"versionId": "1"}), 400, "InvalidArgument", "aliasName"),
        (json!({"aliasName": "1st", "versionId": "1"}), 400, "InvalidArgument", "aliasName"),
        (json!({"aliasName": "LATEST", "versionId": "1"}), 400, "InvalidArgument", "aliasName"),
        (json!({"aliasName": "a"}), 400, "InvalidArgument", "versionId"),
        (json!({"aliasName": "a", "versionId": "LATEST"}), 400, "InvalidArgument", "versionId"),
        (json!({"aliasName": "a", "versionId": 1}), 400, "InvalidArgument", "versionId"),
        (json!({"aliasName": "a", "versionId": "9"}), 404, "VersionNotFound", "9"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"1": 0.5}}), 400, "InvalidArgument", "additionalVersionWeight"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": 1.5}}), 400, "InvalidArgument", "additionalVersionWeight"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": -0.5}}), 400, "InvalidArgument", "additionalVersionWeight"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": 0.1, "3": 0.1}}), 400, "InvalidArgument", "at most one"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"x": 0.1}}), 400, "InvalidArgument", "additionalVersionWeight"),
        (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"9": 0.1}}), 404, "VersionNotFound", "9"),
        (json!({"aliasName": "a", "versionId": "1", "description": "d".repeat(257)}), 400, "InvalidArgument", "description"),
    ];
    for (body, status, code, word) in cases {
        let msg = create_alias(&app, name, body.clone()).await.assert_error(status, code);
        assert!(msg.contains(word), "{body}: {msg}");
    }
    app.request("POST", &aliases_path(name), "", &[], b"[1]".to_vec()).await.assert_error(400, "InvalidArgument");

    // Get, update (partial, re-validated), list.
    let one = format!("{}/prod", aliases_path(name));
    assert_eq!(app.json_request("GET", &one, "", None).await.json()["additionalVersionWeight"], json!({"2": 0.3}));
    app.json_request("GET", &format!("{}/nope", aliases_path(name)), "", None).await.assert_error(404, "AliasNotFound");
    app.json_request("GET", &format!("{}/prod", aliases_path("ghost")), "", None).await.assert_error(404, "FunctionNotFound");
    let r = app.json_request("PUT", &one, "", Some(json!({"description": "d2"}))).await;
    assert_eq!((&r.json()["description"], &r.json()["versionId"], &r.json()["additionalVersionWeight"]), (&json!("d2"), &json!("1"), &json!({"2": 0.3})));
    let msg = app.json_request("PUT", &one, "", Some(json!({"versionId": "2"}))).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("additionalVersionWeight"), "moving onto the canary's version: {msg}");
    app.json_request("PUT", &one, "", Some(json!({"versionId": "7"}))).await.assert_error(404, "VersionNotFound");
    app.json_request("PUT", &format!("{}/nope", aliases_path(name)), "", Some(json!({}))).await.assert_error(404, "AliasNotFound");
    for a in ["a1", "a2", "b1"] {
        assert_eq!(create_alias(&app, name, json!({"aliasName": a, "versionId": "2"})).await.status, 200);
    }
    let r = app.json_request("GET", &aliases_path(name), "prefix=a&limit=1", None).await.json();
    assert_eq!(r["aliases"][0]["aliasName"], "a1");
    let token = r["nextToken"].as_str().expect("a second page").to_string();
    let r = app.json_request("GET", &aliases_path(name), &format!("prefix=a&limit=1&nextToken={token}"), None).await.json();
    assert_eq!((r["aliases"][0]["aliasName"].as_str(), r.get("nextToken")), (Some("a2"), None));
    let all = app.json_request("GET", &aliases_path(name), "", None).await.json();
    let names: Vec<_> = all["aliases"].as_array().unwrap().iter().map(|a| a["aliasName"].as_str().unwrap()).collect();
    assert_eq!(names, ["a1", "a2", "b1", "prod"]);
    app.json_request("GET", &aliases_path(name), "limit=0", None).await.assert_error(400, "InvalidArgument");
    app.json_request("GET", &aliases_path("ghost"), "", None).await.assert_error(404, "FunctionNotFound");

    // A version an alias routes to (main or additional) cannot be deleted.
    let v = |id: &str| format!("{}/{id}", versions_path(name));
    let msg = app.json_request("DELETE", &v("1"), "", None).await.assert_error(409, "VersionInUse");
    assert!(msg.contains("prod"), "{msg}");
    app.json_request("DELETE", &v("2"), "", None).await.assert_error(409, "VersionInUse");
    assert_eq!(app.json_request("PUT", &one, "", Some(json!({"additionalVersionWeight": {}}))).await.json()["additionalVersionWeight"], json!({}));
    for a in ["a1", "a2", "b1"] {
        assert_eq!(app.json_request("DELETE", &format!("{}/{a}", aliases_path(name)), "", None).await.status, 204);
    }
    assert_eq!(app.json_request("DELETE", &v("2"), "", None).await.status, 204, "no alias routes to version 2 any more");
    assert_eq!(app.json_request("DELETE", &one, "", None).await.status, 204);
    app.json_request("DELETE", &one, "", None).await.assert_error(404, "AliasNotFound");
    app.invoke_qualified(name, "prod", b"", &[]).await.assert_error(404, "AliasNotFound");
    assert_eq!(app.json_request("DELETE", &v("1"), "", None).await.status, 204);

    // Deleting the function takes its aliases.
    assert_eq!(create_alias(&app, name, json!({"aliasName": "x", "versionId": "1"})).await.status, 404, "version 1 is gone");
    assert_eq!(publish_code(&app, name, "v3").await, "3");
    assert_eq!(create_alias(&app, name, json!({"aliasName": "x", "versionId": "3"})).await.status, 200);
    assert_eq!(app.delete_function(name).await.status, 204);
    assert_eq!(publish_code(&app, name, "again").await, "1");
    app.json_request("GET", &format!("{}/x", aliases_path(name)), "", None).await.assert_error(404, "AliasNotFound");
    app.shutdown().await.unwrap();
}

/// The weight of the alias's additional version in `alias_routes_calls_by_weight`, and the
/// accepted range of calls it serves out of `CALLS`.
///
/// Each call picks version 2 independently with p = 0.3, so the count is Binomial(400, 0.3):
/// mean 120, standard deviation sqrt(400 · 0.3 · 0.7) ≈ 9.17. The normal approximation (fine
/// at n·p·(1−p) = 84) puts 99.99 % of counts within 3.89 σ ≈ 35.7 of the mean, so [85, 155]
/// fails a correct router about once in 10,000 runs, while a router that ignores the weight
/// (0 or 400), inverts it (280) or splits evenly (200) is far outside.
const WEIGHT: f64 = 0.3;
const CALLS: usize = 400;
const ACCEPTED: std::ops::RangeInclusive<usize> = 85..=155;

#[tokio::test]
async fn alias_routes_calls_by_weight() {
    let app = spawn_app().await;
    let name = "alias-route";
    assert_eq!(publish_code(&app, name, "v1").await, "1");
    assert_eq!(publish_code(&app, name, "v2").await, "2");
    let r = create_alias(&app, name, json!({"aliasName": "canary", "versionId": "1", "additionalVersionWeight": {"2": WEIGHT}})).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut to_v2 = 0;
    for _ in 0..CALLS {
        let r = app.invoke_qualified(name, "canary", b"", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // The header names the version that ran, and that version's code answered.
        match (r.header("x-fc-invocation-service-version"), r.text().as_str()) {
            (Some("1"), "v1") => {}
            (Some("2"), "v2") => to_v2 += 1,
            other => panic!("header and body disagree: {other:?}"),
        }
    }
    assert!(ACCEPTED.contains(&to_v2), "{to_v2} of {CALLS} calls went to version 2 with weight {WEIGHT}; expected {ACCEPTED:?}");
    // Each version served from its own instances.
    let versions: std::collections::BTreeSet<_> = app.state.rm.instances().iter().map(|i| i.version).collect();
    assert_eq!(versions, [Some(1), Some(2)].into());

    // The extremes are exact: weight 1 sends everything to version 2, an empty map nothing.
    let one = format!("{}/canary", aliases_path(name));
    assert_eq!(app.json_request("PUT", &one, "", Some(json!({"additionalVersionWeight": {"2": 1.0}}))).await.status, 200);
    for _ in 0..20 {
        assert_eq!(app.invoke_qualified(name, "canary", b"", &[]).await.header("x-fc-invocation-service-version"), Some("2"));
    }
    assert_eq!(app.json_request("PUT", &one, "", Some(json!({"additionalVersionWeight": {}}))).await.status, 200);
    for _ in 0..20 {
        assert_eq!(app.invoke_qualified(name, "canary", b"", &[]).await.text(), "v1");
    }
    // GetFunction through an alias shows the alias's own version; LATEST is still LATEST.
    let f = app.json_request("GET", &format!("/2023-03-30/functions/{name}"), "qualifier=canary", None).await;
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(app.invoke(name, b"", &[]).await.header("x-fc-invocation-service-version"), Some("LATEST"));
    app.shutdown().await.unwrap();
}
