//! Trigger resources end to end: CRUD with `triggerConfig` echoed byte for byte, the validation
//! matrix with FC's codes, qualifiers that must exist, one http trigger per qualifier, paging,
//! and DeleteFunction refused while triggers remain.

use serde_json::{Value, json};

use crate::helpers::*;

pub fn triggers_path(name: &str) -> String {
    format!("/2023-03-30/functions/{name}/triggers")
}

pub async fn create_trigger(app: &ApiClient, name: &str, body: Value) -> Resp {
    app.json_request("POST", &triggers_path(name), "", Some(body)).await
}


fn kafka_config(topic: &str) -> Value {
    json!({"triggerEnable": true, "asyncInvocationType": false,
        "eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "Topic": topic, "ConsumerGroup": "g", "OffsetReset": "latest", "Brokers": "127.0.0.1:9092"}}},
        "runOptions": {"mode": "event-streaming", "batchWindow": {"CountBasedWindow": 100, "TimeBasedWindow": 3}}})
}

#[tokio::test]
async fn trigger_crud_validation_and_echo() {
    let app = spawn_app().await;
    let name = "trig-crud";
    let http = "{ \"methods\": [\"GET\", \"post\"],\n  \"authType\": \"anonymous\" }";
    let web = json!({"triggerName": "web", "triggerType": "http", "triggerConfig": http});
    create_trigger(&app, name, web.clone()).await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.create_function(python_function(name, PY_UPPER)).await.status, 200);

    let r = create_trigger(&app, name, web.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    // The config string comes back exactly as sent: spacing, order and case included.
    assert_eq!(t["triggerConfig"], json!(http));
    assert_eq!((&t["triggerName"], &t["triggerType"], &t["qualifier"], &t["status"]), (&json!("web"), &json!("http"), &json!("LATEST"), &json!("Success")));
    assert_eq!(t["targetArn"], json!(format!("acs:fc:cn-hangzhou:1000000000000000:functions/{name}")));
    assert!(t["triggerId"].as_str().is_some_and(|id| id.len() == 36), "{t}");
    assert!(t["createdTime"].is_string() && t["lastModifiedTime"].is_string(), "{t}");
    assert_eq!(t["httpTrigger"]["urlInternet"], json!(format!("http://{}/http/{name}/web", app.addr)));
    assert_eq!(t["httpTrigger"]["urlIntranet"], json!(format!("http://{}/http-intranet/{name}/web", app.addr)));
    let one = format!("{}/web", triggers_path(name));
    let got = app.json_request("GET", &one, "", None).await.json();
    assert_eq!((&got["triggerConfig"], &got["triggerId"]), (&json!(http), &t["triggerId"]));

    create_trigger(&app, name, web.clone()).await.assert_error(409, "TriggerAlreadyExists");
    // One http trigger per qualifier, whatever its name.
    let msg = create_trigger(&app, name, json!({"triggerName": "web2", "triggerType": "http", "triggerConfig": http}))
        .await
        .assert_error(409, "TriggerAlreadyExists");
    assert!(msg.contains("'web'") && msg.contains("at most one http trigger"), "{msg}");

    // Timer and Kafka (eventbridge) triggers; no URLs on them.
    let timer_cfg = "{\"cronExpression\":\"@every 1m\",\"payload\":\"{\\\"a\\\":1}\",\"enable\":true}";
    let r = create_trigger(&app, name, json!({"triggerName": "tick", "triggerType": "timer", "triggerConfig": timer_cfg,
        "qualifier": "LATEST", "description": "every minute"}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((&r.json()["triggerConfig"], &r.json()["description"]), (&json!(timer_cfg), &json!("every minute")));
    assert!(r.json().get("httpTrigger").is_none(), "{}", r.text());
    let kafka = kafka_config("logs").to_string();
    let r = create_trigger(&app, name, json!({"triggerName": "kafka", "triggerType": "eventbridge", "triggerConfig": kafka})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["triggerConfig"], json!(kafka));

    // The validation matrix: 400 naming the field (or the type); missing qualifiers are 404.
    let mut rocket = kafka_config("t");
    rocket["eventSourceConfig"]["eventSourceType"] = json!("RocketMQ");
    let mut big_window = kafka_config("t");
    big_window["runOptions"]["batchWindow"]["CountBasedWindow"] = json!(10001);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"triggerType": "http", "triggerConfig": http}), 400, "InvalidArgument", "triggerName"),
        (json!({"triggerName": "9x", "triggerType": "http", "triggerConfig": http}), 400, "InvalidArgument", "triggerName"),
        (json!({"triggerName": "x", "triggerType": "oss", "triggerConfig": "{}"}), 400, "InvalidArgument", "not supported by Nubis"),
        (json!({"triggerName": "x", "triggerType": "mns_topic", "triggerConfig": "{}"}), 400, "InvalidArgument", "not supported by Nubis"),
        (json!({"triggerName": "x", "triggerType": "ftp", "triggerConfig": "{}"}), 400, "InvalidArgument", "triggerType"),
        (json!({"triggerName": "x", "triggerType": "http"}), 400, "InvalidArgument", "triggerConfig"),
        (json!({"triggerName": "x", "triggerType": "http", "triggerConfig": {"methods": ["GET"]}}), 400, "InvalidArgument", "triggerConfig"),
        (json!({"triggerName": "x", "triggerType": "http", "triggerConfig": "not json"}), 400, "InvalidArgument", "not valid JSON"),
        (json!({"triggerName": "x", "triggerType": "http", "triggerConfig": "{\"methods\":[\"BREW\"]}"}), 400, "InvalidArgument", "triggerConfig.methods"),
        (json!({"triggerName": "x", "triggerType": "http", "triggerConfig": "{\"methods\":[\"GET\"],\"authType\":\"jwt\"}"}), 400, "InvalidArgument", "jwt is not supported"),
        (json!({"triggerName": "x", "triggerType": "timer", "triggerConfig": "{\"cronExpression\":\"\",\"enable\":true}"}), 400, "InvalidArgument", "cronExpression"),
        (json!({"triggerName": "x", "triggerType": "timer", "triggerConfig": "{\"cronExpression\":\"@every 1m\"}"}), 400, "InvalidArgument", "enable"),
        (json!({"triggerName": "x", "triggerType": "eventbridge", "triggerConfig": rocket.to_string()}), 400, "InvalidArgument", "only Kafka"),
        (json!({"triggerName": "x", "triggerType": "eventbridge", "triggerConfig": big_window.to_string()}), 400, "InvalidArgument", "CountBasedWindow"),
        (json!({"triggerName": "x", "triggerType": "timer", "triggerConfig": timer_cfg, "qualifier": "3"}), 404, "VersionNotFound", "3"),
        (json!({"triggerName": "x", "triggerType": "timer", "triggerConfig": timer_cfg, "qualifier": "prod"}), 404, "AliasNotFound", "prod"),
    ];
    for (body, status, code, word) in cases {
        let msg = create_trigger(&app, name, body.clone()).await.assert_error(status, code);
        assert!(msg.contains(word), "{body}: {msg}");
    }
    app.request("POST", &triggers_path(name), "", &[], b"[1]".to_vec()).await.assert_error(400, "InvalidArgument");

    // Update: partial; a new config echoed verbatim; the name and type cannot change.
    let new_cfg = "{\"methods\":[\"PUT\"] , \"authType\":\"function\"}";
    let u = app.json_request("PUT", &one, "", Some(json!({"triggerConfig": new_cfg, "description": "d2"}))).await;
    assert_eq!(u.status, 200, "{}", u.text());
    let u = u.json();
    assert_eq!((&u["triggerConfig"], &u["description"], &u["createdTime"]), (&json!(new_cfg), &json!("d2"), &t["createdTime"]));
    let u2 = app.json_request("PUT", &one, "", Some(json!({"invocationRole": "acs:ram::1:role/r"}))).await.json();
    assert_eq!((&u2["triggerConfig"], &u2["description"], &u2["invocationRole"]), (&json!(new_cfg), &json!("d2"), &json!("acs:ram::1:role/r")));
    let msg = app.json_request("PUT", &one, "", Some(json!({"triggerType": "timer"}))).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("triggerType"), "{msg}");
    let msg = app.json_request("PUT", &one, "", Some(json!({"triggerConfig": "{\"methods\":[]}"}))).await.assert_error(400, "InvalidArgument");
    assert!(msg.contains("triggerConfig.methods"), "{msg}");
    app.json_request("PUT", &one, "", Some(json!({"qualifier": "7"}))).await.assert_error(404, "VersionNotFound");
    app.json_request("PUT", &format!("{}/nope", triggers_path(name)), "", Some(json!({}))).await.assert_error(404, "TriggerNotFound");
    app.json_request("GET", &format!("{}/nope", triggers_path(name)), "", None).await.assert_error(404, "TriggerNotFound");
    app.json_request("GET", &format!("{}/web", triggers_path("ghost")), "", None).await.assert_error(404, "FunctionNotFound");

    // A function with triggers cannot be deleted (FC's FunctionNotEmpty).
    let msg = app.delete_function(name).await.assert_error(412, "FunctionNotEmpty");
    assert!(msg.contains("kafka") && msg.contains("web"), "{msg}");
    for t in ["web", "tick", "kafka"] {
        assert_eq!(app.json_request("DELETE", &format!("{}/{t}", triggers_path(name)), "", None).await.status, 204);
    }
    app.json_request("DELETE", &one, "", None).await.assert_error(404, "TriggerNotFound");
    app.json_request("DELETE", &format!("{}/web", triggers_path("ghost")), "", None).await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.delete_function(name).await.status, 204);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn triggers_list_by_prefix_with_paging_and_follow_versions() {
    let app = spawn_app().await;
    let name = "trig-list";
    app.json_request("GET", &triggers_path(name), "", None).await.assert_error(404, "FunctionNotFound");
    assert_eq!(app.create_function(python_function(name, PY_UPPER)).await.status, 200);
    let timer = |n: &str| json!({"triggerName": n, "triggerType": "timer", "triggerConfig": "{\"cronExpression\":\"@every 1m\",\"enable\":false}"});
    for n in ["t-c", "t-a", "t-b", "other", "t-d"] {
        assert_eq!(create_trigger(&app, name, timer(n)).await.status, 200);
    }
    let list = |query: String| {
        let app = app.api.clone();
        async move { app.json_request("GET", &triggers_path(name), &query, None).await }
    };
    let page = list("prefix=t-&limit=2".into()).await.json();
    let names = |v: &Value| v["triggers"].as_array().unwrap().iter().map(|t| t["triggerName"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&page), ["t-a", "t-b"]);
    let token = page["nextToken"].as_str().unwrap().to_string();
    let page2 = list(format!("prefix=t-&limit=2&nextToken={token}")).await.json();
    assert_eq!(names(&page2), ["t-c", "t-d"]);
    assert!(page2.get("nextToken").is_none(), "{page2}");
    assert_eq!(names(&list(String::new()).await.json()), ["other", "t-a", "t-b", "t-c", "t-d"]);
    list("limit=0".into()).await.assert_error(400, "InvalidArgument");
    list("nextToken=%21%21".into()).await.assert_error(400, "InvalidArgument");

    // A trigger may name a published version or an alias.
    let r = app.json_request("POST", &format!("/2023-03-30/functions/{name}/versions"), "", Some(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.json_request("POST", &format!("/2023-03-30/functions/{name}/aliases"), "", Some(json!({"aliasName": "prod", "versionId": "1"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cfg = json!({"authType": "anonymous", "methods": ["GET"]}).to_string();
    for (trigger, qualifier) in [("on-v1", "1"), ("on-prod", "prod"), ("on-latest", "LATEST")] {
        let r = create_trigger(&app, name, json!({"triggerName": trigger, "triggerType": "http", "triggerConfig": cfg, "qualifier": qualifier})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["qualifier"], json!(qualifier));
    }
    app.shutdown().await.unwrap();
}
