//! Timer triggers' last tick (`triggers.timer_last_tick_ms`): listed with the timers, moved
//! forwards only and only for the same trigger id, untouched by UpdateTrigger, gone with the
//! trigger.

use nubis::model::trigger::{TriggerInput, TriggerRecord, TriggerType};
use nubis::store::{Store, TriggerWrite};
use serde_json::json;

use crate::functions::function;
use crate::harness::TestDb;

fn timer(name: &str, id: &str) -> TriggerRecord {
    TriggerRecord {
        function_name: "fn".into(),
        trigger_name: name.into(),
        trigger_id: id.into(),
        trigger_type: TriggerType::Timer,
        trigger_config: json!({"cronExpression": "@every 1m", "enable": true}).to_string(),
        qualifier: "LATEST".into(),
        description: String::new(),
        source_arn: String::new(),
        invocation_role: String::new(),
        created_time: "2026-03-01T00:00:00Z".into(),
        last_modified_time: "2026-03-01T00:00:00Z".into(),
    }
}

async fn last_ticks(s: &Store) -> Vec<(String, Option<i64>)> {
    s.list_timer_triggers().await.unwrap().into_iter().map(|t| (t.trigger_name, t.timer_last_tick_ms)).collect()
}

pub async fn timer_ticks_move_forward_only(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("fn", "111")).await.unwrap();
    for (n, id) in [("b", "id-b"), ("a", "id-a")] {
        assert!(matches!(s.create_trigger(&timer(n, id)).await.unwrap(), TriggerWrite::Done(_)));
    }
    let mut web = timer("web", "id-w");
    (web.trigger_type, web.trigger_config) = (TriggerType::Http, "{}".into());
    assert!(matches!(s.create_trigger(&web).await.unwrap(), TriggerWrite::Done(_)));
    let listed = s.list_timer_triggers().await.unwrap();
    assert_eq!(listed.iter().map(|t| (t.trigger_name.as_str(), t.trigger_id.as_str())).collect::<Vec<_>>(), [("a", "id-a"), ("b", "id-b")]);
    assert_eq!((listed[0].last_modified_time.as_str(), listed[0].timer_last_tick_ms), ("2026-03-01T00:00:00Z", None));

    let t = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    assert!(s.advance_timer("fn", "a", "id-a", t).await.unwrap());
    assert!(!s.advance_timer("fn", "a", "id-a", t).await.unwrap(), "not later");
    assert!(!s.advance_timer("fn", "a", "id-a", t - 60_000).await.unwrap(), "never back");
    assert!(!s.advance_timer("fn", "a", "another-id", t + 60_000).await.unwrap(), "another trigger of the name");
    assert!(!s.advance_timer("fn", "ghost", "id-a", t + 60_000).await.unwrap());
    assert!(s.advance_timer("fn", "a", "id-a", t + 60_000).await.unwrap());
    assert_eq!(last_ticks(&s).await, [("a".to_string(), Some(t + 60_000)), ("b".to_string(), None)]);

    // UpdateTrigger leaves the tick alone.
    let patch = TriggerInput::parse(json!({"triggerConfig": "{\"cronExpression\":\"@every 2m\",\"enable\":false}"}).as_object().unwrap().clone()).unwrap();
    assert!(matches!(s.update_trigger("fn", "a", &patch, "2026-03-02T00:00:00Z").await.unwrap(), TriggerWrite::Done(_)));
    assert_eq!(last_ticks(&s).await[0], ("a".to_string(), Some(t + 60_000)));

    // Created again under its name: a new id, no tick.
    assert!(s.delete_trigger("fn", "a").await.unwrap());
    assert!(matches!(s.create_trigger(&timer("a", "id-a2")).await.unwrap(), TriggerWrite::Done(_)));
    assert_eq!(last_ticks(&s).await[0], ("a".to_string(), None));
}
