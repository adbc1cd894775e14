//! Triggers: CRUD with the config kept verbatim, qualifiers that must exist, one http trigger per
//! qualifier (also under racing creates), paging, the engines' scan by type, and triggers going
//! with their function.

use nubis::model::trigger::{TriggerInput, TriggerRecord, TriggerType};
use nubis::model::version::{AliasRecord, Routing};
use nubis::store::{AliasWrite, Publish, Store, TriggerWrite};
use serde_json::json;

use crate::functions::function;
use crate::harness::TestDb;

/// A trigger record as the API would build it (the store does not validate configs).
fn trigger(function: &str, name: &str, ty: TriggerType, qualifier: &str) -> TriggerRecord {
    let config = match ty {
        // Odd spacing and a non-ASCII payload: stored and read back byte for byte.
        TriggerType::Http => "{ \"methods\": [\"GET\"],  \"authType\":\"anonymous\" }".to_string(),
        TriggerType::Timer => json!({"cronExpression": "@every 1m", "payload": "é ✓", "enable": true}).to_string(),
        TriggerType::EventBridge => json!({"eventSourceConfig": {"eventSourceType": "Kafka"}}).to_string(),
    };
    TriggerRecord {
        function_name: function.into(),
        trigger_name: name.into(),
        trigger_id: uuid::Uuid::new_v4().to_string(),
        trigger_type: ty,
        trigger_config: config,
        qualifier: qualifier.into(),
        description: format!("trigger {name}"),
        source_arn: String::new(),
        invocation_role: "acs:ram::1:role/r".into(),
        created_time: "2026-03-01T00:00:00Z".into(),
        last_modified_time: "2026-03-01T00:00:00Z".into(),
    }
}

fn patch(v: serde_json::Value) -> TriggerInput {
    TriggerInput::parse(v.as_object().unwrap().clone()).unwrap()
}

fn names(v: &[TriggerRecord]) -> Vec<&str> {
    v.iter().map(|t| t.trigger_name.as_str()).collect()
}

/// A function `fn` with version 1 and alias `prod` → 1.
async fn function_with_version_and_alias(s: &Store) {
    s.insert_function(&function("fn", "111")).await.unwrap();
    assert!(matches!(s.publish_version("fn", "", "t").await.unwrap(), Publish::Published(_)));
    let prod = AliasRecord {
        function_name: "fn".into(),
        alias_name: "prod".into(),
        routing: Routing { version_id: 1, additional: None },
        description: String::new(),
        created_time: "t".into(),
        last_modified_time: "t".into(),
    };
    assert!(matches!(s.create_alias(&prod).await.unwrap(), AliasWrite::Done(_)));
}

pub async fn triggers_crud_keep_the_config_verbatim(db: &TestDb) {
    let s = db.open().await;
    let web = trigger("fn", "web", TriggerType::Http, "LATEST");
    assert!(matches!(s.create_trigger(&web).await.unwrap(), TriggerWrite::NoFunction));
    function_with_version_and_alias(&s).await;
    assert!(matches!(s.create_trigger(&web).await.unwrap(), TriggerWrite::Done(t) if t == web));
    assert_eq!(s.get_trigger("fn", "web").await.unwrap(), Some(web.clone()), "every field round-trips");
    assert!(matches!(s.create_trigger(&trigger("fn", "web", TriggerType::Timer, "LATEST")).await.unwrap(), TriggerWrite::Exists));
    assert_eq!(s.get_trigger("fn", "WEB").await.unwrap(), None, "names are case-sensitive");
    assert_eq!(s.get_trigger("ghost", "web").await.unwrap(), None);

    // Qualifiers: LATEST, an existing version or alias; anything else names nothing.
    let timer = trigger("fn", "tick", TriggerType::Timer, "1");
    assert!(matches!(s.create_trigger(&timer).await.unwrap(), TriggerWrite::Done(_)));
    assert_eq!(s.get_trigger("fn", "tick").await.unwrap().unwrap().trigger_config, timer.trigger_config);
    assert!(matches!(s.create_trigger(&trigger("fn", "t2", TriggerType::Timer, "prod")).await.unwrap(), TriggerWrite::Done(_)));
    assert!(matches!(s.create_trigger(&trigger("fn", "t3", TriggerType::Timer, "2")).await.unwrap(), TriggerWrite::NoVersion(v) if v == "2"));
    assert!(matches!(s.create_trigger(&trigger("fn", "t3", TriggerType::Timer, "007")).await.unwrap(), TriggerWrite::NoVersion(v) if v == "007"));
    assert!(matches!(s.create_trigger(&trigger("fn", "t3", TriggerType::Timer, "staging")).await.unwrap(), TriggerWrite::NoAlias(a) if a == "staging"));
    assert_eq!(s.get_trigger("fn", "t3").await.unwrap(), None);

    // Update: partial; the config replaced verbatim; the qualifier checked again.
    let cfg = "{\"methods\":[\"POST\"],\n\"authType\":\"function\"}";
    let TriggerWrite::Done(u) = s.update_trigger("fn", "web", &patch(json!({"triggerConfig": cfg, "description": "d2"})), "t2").await.unwrap()
    else {
        panic!()
    };
    assert_eq!((u.trigger_config.as_str(), u.description.as_str(), u.last_modified_time.as_str()), (cfg, "d2", "t2"));
    assert_eq!((u.created_time.as_str(), &u.trigger_id, u.qualifier.as_str()), (web.created_time.as_str(), &web.trigger_id, "LATEST"));
    assert_eq!(s.get_trigger("fn", "web").await.unwrap(), Some(u.clone()));
    assert!(matches!(s.update_trigger("fn", "web", &patch(json!({"qualifier": "9"})), "t").await.unwrap(), TriggerWrite::NoVersion(_)));
    assert!(matches!(s.update_trigger("fn", "web", &patch(json!({"triggerName": "other"})), "t").await.unwrap(), TriggerWrite::Invalid(_)));
    assert!(matches!(s.update_trigger("fn", "web", &patch(json!({"triggerConfig": "{\"methods\":[]}"})), "t").await.unwrap(), TriggerWrite::Invalid(_)));
    assert!(matches!(s.update_trigger("fn", "nope", &patch(json!({})), "t").await.unwrap(), TriggerWrite::NoTrigger));
    assert!(matches!(s.update_trigger("ghost", "web", &patch(json!({})), "t").await.unwrap(), TriggerWrite::NoFunction));
    let TriggerWrite::Done(moved) = s.update_trigger("fn", "web", &patch(json!({"qualifier": "prod"})), "t3").await.unwrap() else { panic!() };
    assert_eq!(moved.qualifier, "prod");
    assert_eq!(s.get_trigger("fn", "web").await.unwrap().unwrap().trigger_config, cfg, "unchanged fields stay");

    assert_eq!(s.count_triggers("fn").await.unwrap(), 3);
    assert!(s.delete_trigger("fn", "web").await.unwrap());
    assert!(!s.delete_trigger("fn", "web").await.unwrap());
    assert!(!s.delete_trigger("ghost", "web").await.unwrap());
    assert_eq!(s.get_trigger("fn", "web").await.unwrap(), None);
    assert_eq!(s.count_triggers("fn").await.unwrap(), 2);
}

pub async fn one_http_trigger_per_qualifier(db: &TestDb) {
    let s = db.open().await;
    function_with_version_and_alias(&s).await;
    assert!(matches!(s.create_trigger(&trigger("fn", "a", TriggerType::Http, "LATEST")).await.unwrap(), TriggerWrite::Done(_)));
    assert!(matches!(s.create_trigger(&trigger("fn", "b", TriggerType::Http, "LATEST")).await.unwrap(), TriggerWrite::HttpTaken(o) if o == "a"));
    // Other qualifiers, and other types on the same qualifier, are free.
    assert!(matches!(s.create_trigger(&trigger("fn", "b", TriggerType::Http, "prod")).await.unwrap(), TriggerWrite::Done(_)));
    assert!(matches!(s.create_trigger(&trigger("fn", "c", TriggerType::Http, "1")).await.unwrap(), TriggerWrite::Done(_)));
    assert!(matches!(s.create_trigger(&trigger("fn", "d", TriggerType::Timer, "LATEST")).await.unwrap(), TriggerWrite::Done(_)));
    // Moving an http trigger onto a taken qualifier is refused; an update that keeps its own is not.
    assert!(matches!(s.update_trigger("fn", "b", &patch(json!({"qualifier": "LATEST"})), "t").await.unwrap(), TriggerWrite::HttpTaken(o) if o == "a"));
    assert!(matches!(s.update_trigger("fn", "a", &patch(json!({"description": "x"})), "t").await.unwrap(), TriggerWrite::Done(_)));

    // Racing creates of http triggers on one qualifier: exactly one wins.
    s.insert_function(&function("race", "111")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create_trigger(&trigger("race", &format!("h{i}"), TriggerType::Http, "LATEST")).await })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(TriggerWrite::Done(_)) => done += 1,
            Ok(TriggerWrite::HttpTaken(_)) => {}
            // SQLite may refuse a writer that waited past its busy timeout; never a second win.
            Err(e) => panic!("racing create failed: {e}"),
            Ok(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(done, 1, "one http trigger per qualifier");
    assert_eq!(s.count_triggers("race").await.unwrap(), 1);
}

pub async fn triggers_page_and_scan_by_type(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("fn", "111")).await.unwrap();
    s.insert_function(&function("other", "111")).await.unwrap();
    for (n, ty) in [("b", TriggerType::Timer), ("a-1", TriggerType::Timer), ("aB", TriggerType::EventBridge), ("a_2", TriggerType::Timer), ("web", TriggerType::Http)] {
        assert!(matches!(s.create_trigger(&trigger("fn", n, ty, "LATEST")).await.unwrap(), TriggerWrite::Done(_)));
    }
    assert!(matches!(s.create_trigger(&trigger("other", "z", TriggerType::Timer, "LATEST")).await.unwrap(), TriggerWrite::Done(_)));
    assert_eq!(names(&s.list_triggers("fn", "", "", 10).await.unwrap()), ["a-1", "aB", "a_2", "b", "web"]);
    assert_eq!(names(&s.list_triggers("fn", "a", "a-1", 2).await.unwrap()), ["aB", "a_2"]);
    assert_eq!(names(&s.list_triggers("fn", "a_", "", 10).await.unwrap()), ["a_2"], "prefixes are literal");
    assert!(s.list_triggers("ghost", "", "", 10).await.unwrap().is_empty());

    let timers = s.list_all_triggers_of_type(TriggerType::Timer).await.unwrap();
    let keys: Vec<(&str, &str)> = timers.iter().map(|t| (t.function_name.as_str(), t.trigger_name.as_str())).collect();
    assert_eq!(keys, [("fn", "a-1"), ("fn", "a_2"), ("fn", "b"), ("other", "z")]);
    assert!(timers.iter().all(|t| t.trigger_type == TriggerType::Timer));
    assert_eq!(names(&s.list_all_triggers_of_type(TriggerType::EventBridge).await.unwrap()), ["aB"]);
    assert_eq!(names(&s.list_all_triggers_of_type(TriggerType::Http).await.unwrap()), ["web"]);

    // A deleted function takes its triggers along (the API refuses first while any remain).
    s.delete_function("fn").await.unwrap().expect("it existed");
    assert_eq!(s.count_triggers("fn").await.unwrap(), 0);
    assert_eq!(names(&s.list_all_triggers_of_type(TriggerType::Timer).await.unwrap()), ["z"]);
}
