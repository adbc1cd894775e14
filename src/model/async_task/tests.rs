//! Parsing, validation and JSON shape of the async model.

use super::*;

fn input(v: Value) -> Result<AsyncConfig, ValidationError> {
    AsyncConfig::from_input(v.as_object().unwrap().clone())
}

#[test]
fn status_names_round_trip() {
    for s in TaskStatus::ALL {
        assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    assert_eq!("running".parse::<TaskStatus>().unwrap_err().field, "status");
    let finals: Vec<_> = TaskStatus::ALL.into_iter().filter(|s| s.is_final()).collect();
    use TaskStatus::*;
    assert_eq!(finals, [Succeeded, Failed, Stopped, Expired, Invalid]);
}

#[test]
fn task_ids() {
    let id = new_task_id();
    assert!(is_valid_task_id(&id), "{id}");
    assert_ne!(id, new_task_id());
    assert!(!is_valid_task_id("1abc") && !is_valid_task_id("a b") && !is_valid_task_id(""));
}

#[test]
fn ordering_keys() {
    for ok in ["k", "order-42", "a b", "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", &"x".repeat(256)] {
        assert_eq!(OrderingKey::parse("h", ok).unwrap().as_str(), ok);
    }
    for bad in ["", &"x".repeat(257), "tab\there", "new\nline", "caf\u{e9}", "\u{7f}", "nul\0"] {
        let e = OrderingKey::parse("x-nubis-ordering-key", bad).unwrap_err();
        assert_eq!(e.field, "x-nubis-ordering-key", "{bad:?}");
    }
}

#[test]
fn destinations() {
    use DestinationTarget::*;
    let ok = [
        ("acs:fc:cn-hangzhou:123:functions/dst", Function { name: "dst".into(), qualifier: None }),
        ("acs:fc:r:a:functions/dst/LATEST", Function { name: "dst".into(), qualifier: Some("LATEST".into()) }),
        ("acs:fc:r:a:functions/dst/3", Function { name: "dst".into(), qualifier: Some("3".into()) }),
        ("https://example.com/hook?x=1", Http { url: "https://example.com/hook?x=1".into() }),
        ("http://10.0.0.1:8080", Http { url: "http://10.0.0.1:8080".into() }),
        ("http://[::1]:80/x", Http { url: "http://[::1]:80/x".into() }),
        ("acs:kafka:r:a:topics/results.v1", KafkaTopic { topic: "results.v1".into() }),
    ];
    for (s, want) in ok {
        assert_eq!(DestinationTarget::parse("d", s).unwrap(), want, "{s}");
    }
    let bad = [
        "acs:mns:r:a:/queues/q/messages",
        "acs:eventbridge:r:a:eventbus/b",
        "acs:fc:r:a:functions/1bad",
        "acs:fc:r:a:functions/f/q/x",
        "acs:fc:r:a:services/s",
        "acs:kafka:r:a:topics/",
        "acs:kafka:r:a:topics/a b",
        "http://",
        "https:///path",
        "http://host:99999/",
        "ftp://host/",
        "",
    ];
    for s in bad {
        let e = DestinationTarget::parse("destinationConfig.onSuccess.destination", s).expect_err(s);
        assert_eq!(e.field, "destinationConfig.onSuccess.destination");
        assert!(e.message.contains("acs:kafka:"), "{e}");
    }
}

#[test]
fn config_defaults_and_values() {
    assert_eq!(input(json!({})).unwrap(), AsyncConfig::default());
    assert_eq!(
        input(json!({"maxAsyncRetryAttempts": null, "destinationConfig": {}, "x": 1})).unwrap(),
        AsyncConfig::default()
    );
    let c = input(json!({"maxAsyncRetryAttempts": 0, "maxAsyncEventAgeInSeconds": 604800, "asyncTask": true,
        "destinationConfig": {"onFailure": {"destination": "acs:fc:r:a:functions/dlq"}, "onSuccess": []}}))
    .unwrap();
    assert_eq!((c.max_async_retry_attempts, c.max_async_event_age_in_seconds, c.async_task), (0, 604800, true));
    assert_eq!(c.on_failure(), Some(DestinationTarget::Function { name: "dlq".into(), qualifier: None }));
    assert_eq!(c.on_success(), None);
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({"maxAsyncRetryAttempts": 9}), "maxAsyncRetryAttempts"),
        (json!({"maxAsyncRetryAttempts": -1}), "maxAsyncRetryAttempts"),
        (json!({"maxAsyncRetryAttempts": "3"}), "maxAsyncRetryAttempts"),
        (json!({"maxAsyncRetryAttempts": 1.5}), "maxAsyncRetryAttempts"),
        (json!({"maxAsyncEventAgeInSeconds": 0}), "maxAsyncEventAgeInSeconds"),
        (json!({"maxAsyncEventAgeInSeconds": 604801}), "maxAsyncEventAgeInSeconds"),
        (json!({"asyncTask": "yes"}), "asyncTask"),
        (json!({"destinationConfig": "x"}), "destinationConfig"),
        (json!({"destinationConfig": {"onSuccess": "x"}}), "destinationConfig.onSuccess"),
        (json!({"destinationConfig": {"onSuccess": {}}}), "destinationConfig.onSuccess.destination"),
        (json!({"destinationConfig": {"onFailure": {"destination": 5}}}), "destinationConfig.onFailure.destination"),
        (json!({"destinationConfig": {"onFailure": {"destination": "acs:mns:r:a:/queues/q/messages"}}}),
            "destinationConfig.onFailure.destination"),
    ];
    for (body, field) in cases {
        let e = input(body.clone()).expect_err(&body.to_string());
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

#[test]
fn config_json_shape() {
    let cfg = input(json!({"asyncTask": true, "destinationConfig": {"onSuccess": {"destination": "http://h/x"}}})).unwrap();
    let rec = AsyncConfigRecord {
        function_name: "f".into(),
        qualifier: "LATEST".into(),
        config: cfg.clone(),
        created_time: "2024-01-01T00:00:00Z".into(),
        last_modified_time: "2024-01-02T00:00:00Z".into(),
    };
    assert_eq!(
        rec.to_api("r", "1"),
        json!({"maxAsyncRetryAttempts": 3, "maxAsyncEventAgeInSeconds": 86400, "asyncTask": true,
            "destinationConfig": {"onSuccess": {"destination": "http://h/x"}},
            "functionArn": "acs:fc:r:1:functions/f", "qualifier": "LATEST",
            "createdTime": "2024-01-01T00:00:00Z", "lastModifiedTime": "2024-01-02T00:00:00Z"})
    );
    // What the store writes reads back, including rows written before a field existed.
    let stored: AsyncConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    assert_eq!(stored, cfg);
    assert_eq!(serde_json::from_value::<AsyncConfig>(json!({})).unwrap(), AsyncConfig::default());
}

#[test]
fn task_json_shape() {
    let mut t = AsyncTask {
        function_name: "f".into(),
        qualifier: "LATEST".into(),
        task_id: "t1".into(),
        request_id: "1-abc".into(),
        status: TaskStatus::Succeeded,
        payload: b"in\xff".to_vec(),
        return_payload: Some(b"out".to_vec()),
        error_message: None,
        already_retried_times: 1,
        destination_status: Some("Succeeded".into()),
        instance_id: Some("c-1".into()),
        created_ms: 900,
        started_ms: Some(1000),
        end_ms: Some(1250),
        events: vec![TaskEvent { event_id: 1, status: TaskStatus::Enqueued, timestamp: 900, event_detail: "".into() }],
        ordering_key: None,
    };
    assert_eq!(
        t.to_api("r", "1", true),
        json!({"taskId": "t1", "requestId": "1-abc", "functionArn": "acs:fc:r:1:functions/f",
            "qualifier": "LATEST", "status": "Succeeded", "startedTime": 1000, "endTime": 1250,
            "durationMs": 250, "alreadyRetriedTimes": 1, "destinationStatus": "Succeeded",
            "taskPayload": "in\u{fffd}", "returnPayload": "out", "instanceId": "c-1",
            "events": [{"eventId": 1, "status": "Enqueued", "timestamp": 900, "eventDetail": ""}]})
    );
    t.end_ms = None;
    t.error_message = Some("boom".into());
    let v = t.to_api("r", "1", false);
    assert!(v.get("taskPayload").is_none() && v.get("endTime").is_none() && v.get("durationMs").is_none());
    assert_eq!(v["taskErrorMessage"], "boom");
    assert!(v.get("orderingKey").is_none());
    t.ordering_key = Some("order-42".into());
    assert_eq!(t.to_api("r", "1", false)["orderingKey"], "order-42");
}
