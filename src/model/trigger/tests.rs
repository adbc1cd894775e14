use serde_json::{Value, json};

use super::http::AuthType;
use super::kafka::{ErrorsTolerance, OffsetReset};
use super::*;

fn input(v: Value) -> Result<TriggerInput, ValidationError> {
    TriggerInput::parse(v.as_object().unwrap().clone())
}

fn create(v: Value) -> Result<TriggerRecord, ValidationError> {
    input(v).and_then(|i| i.into_new("f", "t0"))
}

/// The Kafka config of fc-triggers.md §3.1, with a broker list.
fn kafka_config() -> Value {
    json!({"triggerEnable": true, "asyncInvocationType": false, "eventRuleFilterPattern": "{}",
        "eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "RegionId": "cn-hangzhou", "InstanceId": "alikafka_1", "Topic": "t", "ConsumerGroup": "g",
            "OffsetReset": "earliest", "Network": "Default", "VpcId": "", "VSwitchIds": "", "SecurityGroupId": "",
            "Brokers": "127.0.0.1:9092,kafka-2:9093"}}},
        "eventSinkConfig": {"deliveryOption": {"mode": "event-streaming", "eventSchema": "CloudEvents", "concurrency": 4}},
        "runOptions": {"mode": "event-streaming", "maximumTasks": 2, "errorsTolerance": "ALL",
            "retryStrategy": {"PushRetryStrategy": "EXPONENTIAL_DECAY_RETRY", "MaximumEventAgeInSeconds": 0, "MaximumRetryAttempts": 0},
            "deadLetterQueue": {"Arn": "kafka://dlq-topic"},
            "batchWindow": {"CountBasedWindow": 100, "TimeBasedWindow": 3}}})
}

#[test]
fn types() {
    assert_eq!(TriggerType::parse("http").unwrap(), TriggerType::Http);
    assert_eq!(TriggerType::parse("eventbridge").unwrap().as_str(), "eventbridge");
    for foreign in ["oss", "log", "mns_topic", "tablestore", "cdn_events"] {
        let e = TriggerType::parse(foreign).unwrap_err();
        assert!(e.message.contains("not supported by Nubis"), "{e}");
    }
    assert!(TriggerType::parse("HTTP").unwrap_err().message.contains("not a trigger type"));
}

#[test]
fn the_config_string_is_kept_verbatim() {
    // Spacing and key order of the caller's string survive (the fc3 tool diffs what it reads).
    let cfg = "{ \"methods\" : [\"post\", \"GET\"],\n \"authType\":\"anonymous\" }";
    let t = create(json!({"triggerName": "web", "triggerType": "http", "triggerConfig": cfg})).unwrap();
    assert_eq!(t.trigger_config, cfg);
    assert_eq!((t.qualifier.as_str(), t.description.as_str()), ("LATEST", ""));
    let TriggerConfig::Http(h) = t.config().unwrap() else { panic!() };
    assert_eq!((h.auth_type, h.methods.clone()), (AuthType::Anonymous, vec!["POST".to_string(), "GET".to_string()]));
    let api = t.to_api("r", "1", Some(HttpTriggerUrls { url_internet: "i".into(), url_intranet: "n".into() }));
    assert_eq!(api.trigger_config, cfg);
    assert_eq!((api.status.as_str(), api.target_arn.as_str()), ("Success", "acs:fc:r:1:functions/f"));
    // The captured SDK request's config (fc-api.md §3): authType defaults to function.
    let sdk = create(json!({"triggerName": "web", "triggerType": "http",
        "triggerConfig": "{\"authType\":\"function\",\"methods\":[\"GET\",\"POST\"]}"}))
    .unwrap();
    assert!(matches!(sdk.config().unwrap(), TriggerConfig::Http(h) if h.auth_type == AuthType::Function));
}

#[test]
fn timer_and_kafka_configs() {
    let timer = create(json!({"triggerName": "every-minute", "triggerType": "timer", "qualifier": "LATEST",
        "triggerConfig": "{\"cronExpression\":\"@every 1m\",\"payload\":\"{\\\"a\\\":1}\",\"enable\":true}"}))
    .unwrap();
    let TriggerConfig::Timer(t) = timer.config().unwrap() else { panic!() };
    assert_eq!((t.cron_expression.as_str(), t.payload.as_deref(), t.enable), ("@every 1m", Some("{\"a\":1}"), true));

    let k = create(json!({"triggerName": "k", "triggerType": "eventbridge", "triggerConfig": kafka_config().to_string()})).unwrap();
    let TriggerConfig::Kafka(k) = k.config().unwrap() else { panic!() };
    let src = k.event_source_config.event_source_parameters.source_kafka_parameters.as_ref().unwrap();
    assert_eq!((src.topic.as_str(), src.consumer_group.as_str(), src.offset_reset), ("t", "g", OffsetReset::Earliest));
    assert_eq!(src.brokers.as_deref(), Some("127.0.0.1:9092,kafka-2:9093"));
    assert_eq!((k.run_options.batch_window.count_based_window, k.run_options.batch_window.time_based_window), (100, 3));
    assert_eq!((k.run_options.errors_tolerance, k.run_options.maximum_tasks), (ErrorsTolerance::All, 2));
    assert_eq!(k.event_sink_config.delivery_option.concurrency, 4);
    // Minimal: topic and group; the rest defaults.
    let min = json!({"eventSourceConfig": {"eventSourceType": "Kafka",
        "eventSourceParameters": {"sourceKafkaParameters": {"Topic": "t", "ConsumerGroup": "g"}}}});
    let m = kafka::KafkaTriggerConfig::parse(&min.to_string()).unwrap();
    assert!(m.trigger_enable && !m.async_invocation_type);
    assert_eq!((m.run_options.batch_window.count_based_window, m.run_options.errors_tolerance), (1, ErrorsTolerance::None));
}

/// `base` with `runOptions.orderingKey: "messageKey"`.
fn with_ordering(base: &Value) -> Value {
    let mut c = base.clone();
    c["runOptions"]["orderingKey"] = json!("messageKey");
    c
}

#[test]
fn kafka_extensions_ordering_key_and_dead_letter_topics() {
    let k = kafka::KafkaTriggerConfig::parse(&with_ordering(&kafka_config()).to_string()).unwrap();
    assert_eq!(k.run_options.ordering_key, Some(kafka::OrderingKey::MessageKey));
    assert_eq!(k.dead_letter_topic().as_deref(), Some("dlq-topic"));
    assert_eq!(kafka::KafkaTriggerConfig::parse(&kafka_config().to_string()).unwrap().run_options.ordering_key, None);
    for (arn, topic) in [("kafka://dead.letters_1", "dead.letters_1"), ("acs:kafka:cn-hangzhou:123:topics/dlq", "dlq")] {
        assert_eq!(kafka::dead_letter_topic(arn).unwrap(), topic);
    }
    let e = kafka::dead_letter_topic("acs:mns:cn-qingdao:123:/queues/q").unwrap_err();
    assert!(e.message.contains("not supported") && e.message.contains("kafka://<topic>"), "{e}");
}

/// Set `path` (a `/`-separated JSON pointer) in a copy of `base` to `v`.
fn with(base: &Value, path: &str, v: Value) -> String {
    let mut c = base.clone();
    *c.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = v;
    c.to_string()
}

#[test]
fn invalid_configs_name_the_field() {
    let k = kafka_config();
    let src = "/eventSourceConfig/eventSourceParameters/sourceKafkaParameters";
    let cases: Vec<(&str, String, &str)> = vec![
        ("http", "".into(), "triggerConfig"),
        ("http", "{".into(), "triggerConfig"),
        ("http", "[]".into(), "triggerConfig"),
        ("http", "\"x\"".into(), "triggerConfig"),
        ("http", "{} x".into(), "triggerConfig"),
        ("http", r#"{"methods":[]}"#.into(), "triggerConfig.methods"),
        ("http", r#"{"methods":["FETCH"]}"#.into(), "triggerConfig.methods"),
        ("http", r#"{"methods":"GET"}"#.into(), "triggerConfig.methods"),
        ("http", r#"{"methods":["GET"],"authType":"jwt"}"#.into(), "triggerConfig.authType"),
        ("http", r#"{"methods":["GET"],"authType":"none"}"#.into(), "triggerConfig.authType"),
        ("http", r#"{"methods":["GET"],"disableURLInternet":"yes"}"#.into(), "triggerConfig.disableURLInternet"),
        ("http", r#"{"methods":["GET"],"corsConfig":{"maxAge":-1}}"#.into(), "triggerConfig.corsConfig.maxAge"),
        ("http", r#"{"methods":["GET"],"corsConfig":{"allowMethods":["BREW"]}}"#.into(), "triggerConfig.corsConfig.allowMethods"),
        ("http", r#"{"methods":["GET"],"corsConfig":{"allowOrigins":["a,b"]}}"#.into(), "triggerConfig.corsConfig.allowOrigins"),
        ("timer", r#"{"payload":"p","enable":true}"#.into(), "triggerConfig"),
        ("timer", r#"{"cronExpression":" ","enable":true}"#.into(), "triggerConfig.cronExpression"),
        ("timer", r#"{"cronExpression":"@every 1m"}"#.into(), "triggerConfig"),
        ("timer", r#"{"cronExpression":"@every 1m","enable":"true"}"#.into(), "triggerConfig.enable"),
        ("timer", json!({"cronExpression": "@every 1m", "enable": true, "payload": "x".repeat(128 * 1024 + 1)}).to_string(), "triggerConfig.payload"),
        ("eventbridge", with(&k, "/eventSourceConfig/eventSourceType", json!("RocketMQ")), "triggerConfig.eventSourceConfig.eventSourceType"),
        ("eventbridge", with(&k, "/eventSourceConfig/eventSourceParameters", json!({})), "triggerConfig.eventSourceConfig.eventSourceParameters.sourceKafkaParameters"),
        ("eventbridge", with(&k, &format!("{src}/Topic"), json!("")), "sourceKafkaParameters.Topic"),
        ("eventbridge", with(&k, &format!("{src}/ConsumerGroup"), json!(7)), "sourceKafkaParameters.ConsumerGroup"),
        ("eventbridge", with(&k, &format!("{src}/OffsetReset"), json!("middle")), "sourceKafkaParameters.OffsetReset"),
        ("eventbridge", with(&k, &format!("{src}/Brokers"), json!("nohost")), "sourceKafkaParameters.Brokers"),
        ("eventbridge", with(&k, "/runOptions/batchWindow/CountBasedWindow", json!(0)), "runOptions.batchWindow.CountBasedWindow"),
        ("eventbridge", with(&k, "/runOptions/batchWindow/CountBasedWindow", json!(10001)), "runOptions.batchWindow.CountBasedWindow"),
        ("eventbridge", with(&k, "/runOptions/batchWindow/TimeBasedWindow", json!(16)), "runOptions.batchWindow.TimeBasedWindow"),
        ("eventbridge", with(&k, "/eventSinkConfig/deliveryOption/concurrency", json!(301)), "eventSinkConfig.deliveryOption.concurrency"),
        ("eventbridge", with(&k, "/eventSinkConfig/deliveryOption/concurrency", json!(0)), "eventSinkConfig.deliveryOption.concurrency"),
        ("eventbridge", with(&k, "/runOptions/maximumTasks", json!(0)), "runOptions.maximumTasks"),
        ("eventbridge", with(&k, "/runOptions/errorsTolerance", json!("SOME")), "runOptions.errorsTolerance"),
        ("eventbridge", with(&k, "/runOptions/mode", json!("event-driven")), "runOptions.mode"),
        ("eventbridge", with(&k, "/runOptions/deadLetterQueue/Arn", json!("acs:mns:cn-qingdao:123:/queues/q")), "runOptions.deadLetterQueue.Arn"),
        ("eventbridge", with(&k, "/runOptions/deadLetterQueue/Arn", json!("kafka://")), "runOptions.deadLetterQueue.Arn"),
        ("eventbridge", with(&k, "/runOptions/deadLetterQueue/Arn", json!("acs:kafka:r:1:groups/g")), "runOptions.deadLetterQueue.Arn"),
        ("eventbridge", with(&k, "/runOptions/deadLetterQueue/Arn", json!("kafka://no spaces")), "runOptions.deadLetterQueue.Arn"),
        ("eventbridge", with(&with_ordering(&k), "/runOptions/orderingKey", json!("value")), "runOptions.orderingKey"),
        ("eventbridge", with(&with_ordering(&k), "/asyncInvocationType", json!(true)), "runOptions.orderingKey"),
    ];
    assert_eq!(TriggerConfig::parse(TriggerType::Http, "[]").unwrap_err().field, "triggerConfig");
    for (ty, cfg, field) in cases {
        let err = TriggerConfig::parse(TriggerType::parse(ty).unwrap(), &cfg).expect_err(&cfg);
        assert!(err.field.contains(field), "{ty} {cfg}: expected the field {field}, got {err}");
        assert!(err.field.starts_with("triggerConfig"), "{err}");
    }
}

#[test]
fn create_and_update_validation() {
    let http = json!({"authType": "anonymous", "methods": ["GET"]}).to_string();
    let cases = [
        (json!({"triggerType": "http", "triggerConfig": http}), "triggerName"),
        (json!({"triggerName": "1st", "triggerType": "http", "triggerConfig": http}), "triggerName"),
        (json!({"triggerName": "-x", "triggerType": "http", "triggerConfig": http}), "triggerName"),
        (json!({"triggerName": "a".repeat(129), "triggerType": "http", "triggerConfig": http}), "triggerName"),
        (json!({"triggerName": "a", "triggerConfig": http}), "triggerType"),
        (json!({"triggerName": "a", "triggerType": "oss", "triggerConfig": "{}"}), "triggerType"),
        (json!({"triggerName": "a", "triggerType": "http"}), "triggerConfig"),
        (json!({"triggerName": "a", "triggerType": "http", "triggerConfig": {"methods": ["GET"]}}), "triggerConfig"),
        (json!({"triggerName": "a", "triggerType": "http", "triggerConfig": http, "description": "d".repeat(257)}), "description"),
        (json!({"triggerName": "a", "triggerType": "http", "triggerConfig": http, "qualifier": 1}), "qualifier"),
    ];
    for (body, field) in cases {
        let err = create(body.clone()).expect_err(&body.to_string());
        assert_eq!(err.field, field, "{body}: {err}");
    }
    assert_eq!(create(json!({"triggerName": "a", "triggerType": "http", "triggerConfig": http, "qualifier": ""})).unwrap().qualifier, "LATEST");

    let old = create(json!({"triggerName": "a", "triggerType": "http", "triggerConfig": http, "qualifier": "prod",
        "sourceArn": "s", "invocationRole": "r", "description": "d"}))
    .unwrap();
    let u = input(json!({"description": "new"})).unwrap().merged_into(&old, "t1").unwrap();
    assert_eq!((u.description.as_str(), u.qualifier.as_str(), u.trigger_config.as_str()), ("new", "prod", http.as_str()));
    assert_eq!((u.created_time.as_str(), u.last_modified_time.as_str(), &u.trigger_id), ("t0", "t1", &old.trigger_id));
    let u = input(json!({"triggerConfig": "{\"methods\":[\"PUT\"]}", "qualifier": "3", "invocationRole": "r2"}))
        .unwrap()
        .merged_into(&old, "t1")
        .unwrap();
    assert_eq!((u.trigger_config.as_str(), u.qualifier.as_str(), u.invocation_role.as_str()), ("{\"methods\":[\"PUT\"]}", "3", "r2"));
    // The same name, type or ARN restated is no change; another is refused.
    assert!(input(json!({"triggerName": "a", "triggerType": "http", "sourceArn": "s"})).unwrap().merged_into(&old, "t1").is_ok());
    for body in [json!({"triggerName": "b"}), json!({"triggerType": "timer"}), json!({"sourceArn": "x"})] {
        assert!(input(body.clone()).unwrap().merged_into(&old, "t1").is_err(), "{body}");
    }
    let err = input(json!({"triggerConfig": "{\"methods\":[]}"})).unwrap().merged_into(&old, "t1").unwrap_err();
    assert_eq!(err.field, "triggerConfig.methods");
}

#[test]
fn cors_origins() {
    let c = http::CorsConfig { allow_origins: vec!["https://a.example".into()], ..Default::default() };
    assert_eq!(c.allowed_origin("https://A.example").as_deref(), Some("https://A.example"));
    assert_eq!(c.allowed_origin("https://b.example"), None);
    let any = http::CorsConfig { allow_origins: vec!["*".into()], ..Default::default() };
    assert_eq!(any.allowed_origin("https://b.example").as_deref(), Some("*"));
    let cred = http::CorsConfig { allow_credentials: true, ..any };
    assert_eq!(cred.allowed_origin("https://b.example").as_deref(), Some("https://b.example"));
}
