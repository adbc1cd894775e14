//! Async invoke configs and task records: guarded transitions, event history, listing.

use std::sync::Arc;

use nubis::model::async_task::{
    AsyncConfig, AsyncConfigRecord, AsyncTask, Destination, DestinationConfig, TaskEvent, TaskStatus,
};
use nubis::store::{StoreError, TaskChange, TaskQuery};

use crate::harness::TestDb;

fn task(function: &str, id: &str, created_ms: i64) -> AsyncTask {
    AsyncTask {
        function_name: function.into(),
        qualifier: "LATEST".into(),
        task_id: id.into(),
        request_id: format!("req-{id}"),
        status: TaskStatus::Enqueued,
        payload: format!("payload of {id}").into_bytes(),
        return_payload: None,
        error_message: None,
        already_retried_times: 0,
        destination_status: None,
        instance_id: None,
        created_ms,
        started_ms: None,
        end_ms: None,
        events: vec![TaskEvent { event_id: 1, status: TaskStatus::Enqueued, timestamp: created_ms, event_detail: "".into() }],
        ordering_key: None,
    }
}

fn to(status: TaskStatus, at_ms: i64) -> TaskChange {
    TaskChange { status: Some(status), at_ms, event_detail: format!("to {status}"), ..Default::default() }
}

pub async fn insert_get_and_duplicates(db: &TestDb) {
    let s = db.open().await;
    let mut t = task("f", "t1", 100);
    t.return_payload = Some(vec![0, 255]);
    t.error_message = Some("e".into());
    t.started_ms = Some(101);
    s.insert_task(&t).await.unwrap();
    assert_eq!(s.get_task("f", "t1").await.unwrap(), Some(t.clone()));
    assert!(matches!(s.insert_task(&t).await, Err(StoreError::AlreadyExists)));
    // The same task id under another function is another task.
    s.insert_task(&task("g", "t1", 100)).await.unwrap();
    // An ordering key (256 ASCII characters at most) reads back as written.
    let keyed = AsyncTask { ordering_key: Some(format!("k {}", "~".repeat(254))), ..task("f", "t2", 100) };
    s.insert_task(&keyed).await.unwrap();
    assert_eq!(s.get_task("f", "t2").await.unwrap(), Some(keyed));
    assert_eq!(s.get_task("f", "nope").await.unwrap(), None);
    assert_eq!(s.get_task("h", "t1").await.unwrap(), None);
}

pub async fn list_filters_and_pages_both_ways(db: &TestDb) {
    let s = db.open().await;
    // created_ms repeats every 3 tasks so the task id must break ties.
    let mut all = Vec::new();
    for i in 0..20 {
        let mut t = task("f", &format!("t{i:02}"), 1000 + (i / 3) * 10);
        t.qualifier = if i % 2 == 0 { "LATEST".into() } else { "prod".into() };
        t.status = if i % 5 == 0 { TaskStatus::Failed } else { TaskStatus::Enqueued };
        s.insert_task(&t).await.unwrap();
        all.push(t);
    }
    s.insert_task(&task("other", "t00", 1000)).await.unwrap();
    for id in ["T_up", "t%x", "t_y"] {
        s.insert_task(&task("g", id, 5)).await.unwrap();
    }

    let ids = |v: &[AsyncTask]| v.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>();
    let base = TaskQuery { function: "f".into(), limit: 100, ..Default::default() };
    let page_all = |descending: bool| {
        let s = s.clone();
        let base = base.clone();
        async move {
            let mut got = Vec::new();
            let mut q = TaskQuery { limit: 7, descending, ..base };
            loop {
                let page = s.list_tasks(&q).await.unwrap();
                got.extend(page.iter().map(|t| t.task_id.clone()));
                match page.last() {
                    Some(last) if page.len() == 7 => q.after = Some((last.created_ms, last.task_id.clone())),
                    _ => return got,
                }
            }
        }
    };
    let expected = ids(&all);
    assert_eq!(page_all(false).await, expected);
    assert_eq!(page_all(true).await, expected.iter().rev().cloned().collect::<Vec<_>>());

    let full = s.list_tasks(&TaskQuery { include_payload: true, ..base.clone() }).await.unwrap();
    assert_eq!(full, all);
    let light = s.list_tasks(&base).await.unwrap();
    assert!(light.iter().all(|t| t.payload.is_empty()));

    let q = TaskQuery { qualifier: Some("prod".into()), status: Some(TaskStatus::Failed), ..base.clone() };
    assert_eq!(ids(&s.list_tasks(&q).await.unwrap()), ["t05", "t15"]);
    let q = TaskQuery { prefix: Some("t1".into()), started_from_ms: Some(1030), started_to_ms: Some(1040), ..base.clone() };
    assert_eq!(ids(&s.list_tasks(&q).await.unwrap()), ["t10", "t11", "t12", "t13", "t14"]);
    let q = TaskQuery { descending: true, limit: 2, started_to_ms: Some(1000), ..base.clone() };
    assert_eq!(ids(&s.list_tasks(&q).await.unwrap()), ["t02", "t01"]);
    // Prefixes are literal and case-sensitive: no LIKE wildcards.
    let g = |p: &str| TaskQuery { function: "g".into(), prefix: Some(p.into()), ..base.clone() };
    assert_eq!(ids(&s.list_tasks(&g("t%")).await.unwrap()), ["t%x"]);
    assert_eq!(ids(&s.list_tasks(&g("t_")).await.unwrap()), ["t_y"]);
    assert_eq!(ids(&s.list_tasks(&g("T")).await.unwrap()), ["T_up"]);
    assert_eq!(s.list_tasks(&g("")).await.unwrap().len(), 3);
}

/// `expected_events`: of two contenders holding the same snapshot, one alone wins.
pub async fn transitions_can_require_an_unchanged_history(db: &TestDb) {
    use TaskStatus::*;
    let s = db.open().await;
    s.insert_task(&task("f", "t", 100)).await.unwrap();
    assert!(s.transition_task("f", "t", &[Enqueued], &to(Running, 110)).await.unwrap());
    let seen = s.get_task("f", "t").await.unwrap().unwrap();
    assert_eq!(seen.events.len(), 2);
    let again = TaskChange { expected_events: Some(2), ..to(Running, 120) };
    assert!(s.transition_task("f", "t", &[Running], &again).await.unwrap());
    assert!(!s.transition_task("f", "t", &[Running], &again).await.unwrap(), "the history moved on");
    let stale = TaskChange { expected_events: Some(1), ..to(Running, 130) };
    assert!(!s.transition_task("f", "t", &[], &stale).await.unwrap());
    let now = TaskChange { expected_events: Some(3), ..to(Succeeded, 140) };
    assert!(s.transition_task("f", "t", &[Running], &now).await.unwrap());
    let t = s.get_task("f", "t").await.unwrap().unwrap();
    assert_eq!(t.events.iter().map(|e| e.status).collect::<Vec<_>>(), [Enqueued, Running, Running, Succeeded]);
}

pub async fn transitions_are_guarded_and_recorded(db: &TestDb) {
    use TaskStatus::*;
    let s = db.open().await;
    s.insert_task(&task("f", "t", 100)).await.unwrap();
    const STOPPABLE: &[TaskStatus] = &[Enqueued, Retrying, Running];

    let start = TaskChange { started_ms: Some(110), instance_id: Some("c-1".into()), ..to(Running, 110) };
    assert!(s.transition_task("f", "t", &[Enqueued, Retrying], &start).await.unwrap());
    // A second dispatcher racing for the same task loses.
    assert!(!s.transition_task("f", "t", &[Enqueued, Retrying], &start).await.unwrap());
    let done = TaskChange {
        end_ms: Some(150),
        return_payload: Some(b"ok".to_vec()),
        already_retried_times: Some(2),
        destination_status: Some("Succeeded".into()),
        ..to(Succeeded, 150)
    };
    assert!(s.transition_task("f", "t", &[Running], &done).await.unwrap());
    assert!(!s.transition_task("f", "t", STOPPABLE, &to(Stopping, 160)).await.unwrap());
    assert!(!s.transition_task("f", "missing", &[], &to(Stopping, 160)).await.unwrap());

    let t = s.get_task("f", "t").await.unwrap().unwrap();
    assert_eq!(t.status, Succeeded);
    assert_eq!((t.started_ms, t.end_ms, t.already_retried_times), (Some(110), Some(150), 2));
    assert_eq!(t.return_payload.as_deref(), Some(&b"ok"[..]));
    assert_eq!((t.instance_id.as_deref(), t.destination_status.as_deref()), (Some("c-1"), Some("Succeeded")));
    assert_eq!(t.error_message, None, "fields not in the change are kept");
    let events: Vec<_> = t.events.iter().map(|e| (e.event_id, e.status, e.timestamp, e.event_detail.as_str())).collect();
    assert_eq!(events, [(1, Enqueued, 100, ""), (2, Running, 110, "to Running"), (3, Succeeded, 150, "to Succeeded")]);

    // Stop from Enqueued; a status-less change records an event in the current status.
    s.insert_task(&task("f", "u", 100)).await.unwrap();
    assert!(s.transition_task("f", "u", STOPPABLE, &to(Stopping, 120)).await.unwrap());
    let note = TaskChange { event_detail: "note".into(), at_ms: 121, ..Default::default() };
    assert!(s.transition_task("f", "u", &[], &note).await.unwrap());
    let u = s.get_task("f", "u").await.unwrap().unwrap();
    assert_eq!(u.status, Stopping);
    assert_eq!(u.events.last().unwrap(), &TaskEvent { event_id: 3, status: Stopping, timestamp: 121, event_detail: "note".into() });
}

pub async fn concurrent_transitions_lose_no_event(db: &TestDb) {
    let s = db.open().await;
    s.insert_task(&task("f", "t", 0)).await.unwrap();
    let s = Arc::new(s);
    let writers: Vec<_> = (1..=50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let change = TaskChange { event_detail: format!("w{i}"), ..to(TaskStatus::Running, i) };
                assert!(s.transition_task("f", "t", &[], &change).await.unwrap());
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let t = s.get_task("f", "t").await.unwrap().unwrap();
    assert_eq!(t.events.len(), 51);
    assert!(t.events.iter().enumerate().all(|(i, e)| e.event_id == i as i64 + 1));
    let mut details: Vec<_> = t.events[1..].iter().map(|e| e.event_detail.clone()).collect();
    details.sort();
    let mut want: Vec<_> = (1..=50).map(|i| format!("w{i}")).collect();
    want.sort();
    assert_eq!(details, want);
}

pub async fn configs_upsert_list_delete(db: &TestDb) {
    let s = db.open().await;
    let mut cfg = AsyncConfig { async_task: true, ..Default::default() };
    let first = s.put_async_config("f", "LATEST", &cfg).await.unwrap();
    assert_eq!((first.function_name.as_str(), first.qualifier.as_str(), &first.config), ("f", "LATEST", &cfg));
    // Backdate the row: an update must keep createdTime and move lastModifiedTime.
    db.exec("UPDATE async_invoke_configs SET created_time = '2020-01-01T00:00:00Z', last_modified_time = '2020-01-01T00:00:00Z'")
        .await;
    cfg.max_async_retry_attempts = 0;
    cfg.destination_config = Some(DestinationConfig {
        on_failure: Some(Destination { destination: "acs:fc:r:a:functions/dlq".into() }),
        on_success: None,
    });
    let updated = s.put_async_config("f", "LATEST", &cfg).await.unwrap();
    assert_eq!(updated.created_time, "2020-01-01T00:00:00Z");
    assert_ne!(updated.last_modified_time, "2020-01-01T00:00:00Z");
    assert_eq!(s.get_async_config("f", "LATEST").await.unwrap(), Some(updated.clone()));
    assert_eq!(s.get_async_config("f", "prod").await.unwrap(), None);

    for (f, q) in [("f", "prod"), ("f", "1"), ("g", "LATEST"), ("e", "LATEST")] {
        s.put_async_config(f, q, &AsyncConfig::default()).await.unwrap();
    }
    let keys = |v: Vec<AsyncConfigRecord>| v.into_iter().map(|r| format!("{}/{}", r.function_name, r.qualifier)).collect::<Vec<_>>();
    assert_eq!(keys(s.list_async_configs(None, "", 100).await.unwrap()), ["e/LATEST", "f/1", "f/LATEST", "f/prod", "g/LATEST"]);
    assert_eq!(keys(s.list_async_configs(Some("f"), "", 100).await.unwrap()), ["f/1", "f/LATEST", "f/prod"]);
    // Page with the cursor of each page's last record.
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let page = s.list_async_configs(None, &after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.cursor();
        pages.push(keys(page));
    }
    assert_eq!(pages, [vec!["e/LATEST", "f/1"], vec!["f/LATEST", "f/prod"], vec!["g/LATEST"]]);
    assert_eq!(keys(s.list_async_configs(Some("f"), "f\0LATEST", 100).await.unwrap()), ["f/prod"]);

    assert!(s.delete_async_config("f", "prod").await.unwrap());
    assert!(!s.delete_async_config("f", "prod").await.unwrap());
}

pub async fn delete_function_state_and_counts(db: &TestDb) {
    let s = db.open().await;
    for (f, id) in [("f", "a"), ("f", "b"), ("f", "c"), ("g", "a")] {
        s.insert_task(&task(f, id, 1)).await.unwrap();
    }
    assert!(s.transition_task("f", "b", &[], &to(TaskStatus::Failed, 2)).await.unwrap());
    s.put_async_config("f", "LATEST", &AsyncConfig::default()).await.unwrap();
    s.put_async_config("g", "LATEST", &AsyncConfig::default()).await.unwrap();
    assert_eq!(s.count_tasks_by_status(None).await.unwrap(), [(TaskStatus::Enqueued, 3), (TaskStatus::Failed, 1)]);
    assert_eq!(s.count_tasks_by_status(Some("g")).await.unwrap(), [(TaskStatus::Enqueued, 1)]);

    s.delete_async_state_of_function("f").await.unwrap();
    assert_eq!(s.get_task("f", "a").await.unwrap(), None);
    assert_eq!(s.get_async_config("f", "LATEST").await.unwrap(), None);
    assert!(s.get_task("g", "a").await.unwrap().is_some());
    assert!(s.get_async_config("g", "LATEST").await.unwrap().is_some());
    assert_eq!(s.count_tasks_by_status(None).await.unwrap(), [(TaskStatus::Enqueued, 1)]);
}
