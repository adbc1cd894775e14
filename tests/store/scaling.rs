//! Scaling: the function's controls (reserved concurrency, the invocation switch) stored on
//! its row without a new revision and carried by every version's record; provision configs
//! (upsert, paging, the alias they name and its version, going with their function), and
//! DeleteAlias refused while a config is set on the alias, also when the two race.

use nubis::model::{FunctionControls, FunctionRecord};
use nubis::model::scaling::{ConcurrencyConfigRecord, ProvisionConfig, ProvisionConfigRecord};
use nubis::model::version::{AliasInput, AliasRecord, Routing};
use nubis::store::{AliasWrite, DeleteAlias, ProvisionWrite, Publish, Store};

use crate::functions::function;
use crate::harness::TestDb;

async fn publish(s: &Store, name: &str) -> u64 {
    match s.publish_version(name, "", "2026-02-01T00:00:00Z").await.unwrap() {
        Publish::Published(v) => v.version_id,
        other => panic!("publish of {name}: {other:?}"),
    }
}

/// Change LATEST's config (a new revision) so that the next publish has something to take.
async fn touch(s: &Store, name: &str, timeout: u32) {
    let mut f = s.get_function(name).await.unwrap().unwrap();
    let old = f.revision;
    f.config.timeout = timeout;
    f.revision = old + 1;
    s.update_function(&f, old).await.unwrap();
}

fn alias(function: &str, name: &str, version_id: u64) -> AliasRecord {
    AliasRecord {
        function_name: function.into(),
        alias_name: name.into(),
        routing: Routing { version_id, additional: None },
        description: String::new(),
        created_time: "2026-02-01T00:00:00Z".into(),
        last_modified_time: "2026-02-01T00:00:00Z".into(),
    }
}

fn provision(v: serde_json::Value) -> ProvisionConfig {
    ProvisionConfig::from_input(v.as_object().unwrap().clone()).unwrap()
}

async fn put(s: &Store, function: &str, qualifier: &str, cfg: &ProvisionConfig, now: &str) -> ProvisionConfigRecord {
    match s.put_provision_config(function, qualifier, cfg, now).await.unwrap() {
        ProvisionWrite::Done(r) => r,
        other => panic!("put {function}/{qualifier}: {other:?}"),
    }
}

fn keys(v: &[ProvisionConfigRecord]) -> Vec<(&str, &str)> {
    v.iter().map(|r| (r.function_name.as_str(), r.qualifier.as_str())).collect()
}

pub async fn controls_are_stored_without_a_new_revision(db: &TestDb) {
    let s = db.open().await;
    assert!(!s.set_reserved_concurrency("ghost", Some(1)).await.unwrap());
    assert!(!s.set_invocation_disabled("ghost", true, "x").await.unwrap());
    s.insert_function(&function("fn", "111")).await.unwrap();
    s.insert_function(&function("other", "111")).await.unwrap();
    let before = s.get_function("fn").await.unwrap().unwrap();
    assert_eq!(before.controls, FunctionControls::default(), "a new function has no controls");

    assert!(s.set_reserved_concurrency("fn", Some(5)).await.unwrap());
    assert!(s.set_invocation_disabled("fn", true, "maintenance é").await.unwrap());
    let after = s.get_function("fn").await.unwrap().unwrap();
    let disabled = FunctionControls { reserved_concurrency: Some(5), invocation_disabled: true, disabled_reason: "maintenance é".into() };
    assert_eq!(after.controls, disabled);
    // Not a change of the function: instances of its revision keep serving.
    assert_eq!((after.revision, &after.last_modified_time), (before.revision, &before.last_modified_time));
    assert_eq!(FunctionRecord { controls: FunctionControls::default(), ..after.clone() }, before);
    assert_eq!(s.get_function("other").await.unwrap().unwrap().controls, FunctionControls::default());

    // An update of the config keeps the controls (update_function never writes them).
    touch(&s, "fn", 30).await;
    assert_eq!(s.get_function("fn").await.unwrap().unwrap().controls, disabled);
    // Listing reads them too.
    let listed = s.list_functions("", "", 10).await.unwrap();
    assert_eq!(listed.iter().map(|f| (f.name.as_str(), f.controls.reserved_concurrency)).collect::<Vec<_>>(), [("fn", Some(5)), ("other", None)]);

    // A version's record carries the function's controls as they are now, not as published.
    assert_eq!(publish(&s, "fn").await, 1);
    assert_eq!(s.get_function_at("fn", 1).await.unwrap().unwrap().controls, disabled);
    assert!(s.set_invocation_disabled("fn", false, "ignored when enabling").await.unwrap());
    assert!(s.set_reserved_concurrency("fn", Some(0)).await.unwrap());
    let enabled = FunctionControls { reserved_concurrency: Some(0), invocation_disabled: false, disabled_reason: String::new() };
    assert_eq!(s.get_function_at("fn", 1).await.unwrap().unwrap().controls, enabled);
    assert_eq!(s.get_function("fn").await.unwrap().unwrap().controls, enabled);
    assert!(s.set_reserved_concurrency("fn", None).await.unwrap());
    assert_eq!(s.get_function("fn").await.unwrap().unwrap().controls.reserved_concurrency, None);

    // A function deleted and created again starts without controls.
    assert!(s.set_invocation_disabled("fn", true, "").await.unwrap());
    s.delete_function("fn").await.unwrap();
    s.insert_function(&function("fn", "111")).await.unwrap();
    assert_eq!(s.get_function("fn").await.unwrap().unwrap().controls, FunctionControls::default());
}

pub async fn concurrency_configs_list_and_page(db: &TestDb) {
    let s = db.open().await;
    for (name, reserved) in [("a", Some(1)), ("b", None), ("c", Some(0)), ("d", Some(1_000_000))] {
        s.insert_function(&function(name, "")).await.unwrap();
        assert!(s.set_reserved_concurrency(name, reserved).await.unwrap());
    }
    let rec = |n: &str, r: u32| ConcurrencyConfigRecord { function_name: n.into(), reserved_concurrency: r };
    assert_eq!(s.list_concurrency_configs(None, "", 10).await.unwrap(), [rec("a", 1), rec("c", 0), rec("d", 1_000_000)]);
    assert_eq!(s.list_concurrency_configs(None, "", 2).await.unwrap(), [rec("a", 1), rec("c", 0)]);
    assert_eq!(s.list_concurrency_configs(None, "c", 2).await.unwrap(), [rec("d", 1_000_000)]);
    assert_eq!(s.list_concurrency_configs(Some("c"), "", 10).await.unwrap(), [rec("c", 0)]);
    assert!(s.list_concurrency_configs(Some("b"), "", 10).await.unwrap().is_empty(), "b has none");
    assert!(s.list_concurrency_configs(Some("ghost"), "", 10).await.unwrap().is_empty());
}

pub async fn provision_configs_upsert_page_and_follow_aliases(db: &TestDb) {
    let s = db.open().await;
    let three = provision(serde_json::json!({"target": 3, "alwaysAllocateCPU": false,
        "scheduledActions": [{"name": "night", "scheduleExpression": "cron(0 0 22 * * *)", "target": 0}]}));
    assert_eq!(s.put_provision_config("ghost", "LATEST", &three, "t1").await.unwrap(), ProvisionWrite::NoFunction);
    s.insert_function(&function("fn", "111")).await.unwrap();
    s.insert_function(&function("gn", "111")).await.unwrap();
    assert_eq!(s.put_provision_config("fn", "prod", &three, "t1").await.unwrap(), ProvisionWrite::NoAlias);

    let latest = put(&s, "fn", "LATEST", &three, "t1").await;
    assert_eq!(
        latest,
        ProvisionConfigRecord {
            function_name: "fn".into(),
            qualifier: "LATEST".into(),
            config: three.clone(),
            version: None,
            created_time: "t1".into(),
            last_modified_time: "t1".into(),
        },
        "every field round-trips; LATEST serves no version"
    );
    assert_eq!(s.get_provision_config("fn", "LATEST").await.unwrap(), Some(latest.clone()));
    // Replacing keeps the creation time; target 0 is a config like any other.
    let zero = provision(serde_json::json!({"target": 0}));
    let replaced = put(&s, "fn", "LATEST", &zero, "t2").await;
    assert_eq!((replaced.config.clone(), replaced.created_time.as_str(), replaced.last_modified_time.as_str()), (zero, "t1", "t2"));

    // On an alias: the record says which version the alias serves, as of the read.
    publish(&s, "fn").await;
    touch(&s, "fn", 30).await;
    publish(&s, "fn").await;
    assert!(matches!(s.create_alias(&alias("fn", "prod", 1)).await.unwrap(), AliasWrite::Done(_)));
    assert_eq!(put(&s, "fn", "prod", &three, "t3").await.version, Some(1));
    let to2 = AliasInput::parse(serde_json::json!({"versionId": "2"}).as_object().unwrap().clone()).unwrap();
    assert!(matches!(s.update_alias("fn", "prod", &to2, "t4").await.unwrap(), AliasWrite::Done(_)));
    assert_eq!(s.get_provision_config("fn", "prod").await.unwrap().unwrap().version, Some(2));
    assert_eq!(s.get_provision_config("fn", "PROD").await.unwrap(), None, "qualifiers are case-sensitive");
    put(&s, "gn", "LATEST", &three, "t5").await;

    // Paging in (function, qualifier) order, by the cursor of the last record.
    let all = s.list_provision_configs(None, "", 10).await.unwrap();
    assert_eq!(keys(&all), [("fn", "LATEST"), ("fn", "prod"), ("gn", "LATEST")]);
    let first = s.list_provision_configs(None, "", 1).await.unwrap();
    let second = s.list_provision_configs(None, &first[0].cursor(), 1).await.unwrap();
    let third = s.list_provision_configs(None, &second[0].cursor(), 1).await.unwrap();
    assert_eq!([keys(&first), keys(&second), keys(&third)].concat(), keys(&all));
    assert!(s.list_provision_configs(None, &third[0].cursor(), 1).await.unwrap().is_empty());
    assert_eq!(keys(&s.list_provision_configs(Some("fn"), "", 10).await.unwrap()), [("fn", "LATEST"), ("fn", "prod")]);
    assert_eq!(keys(&s.list_provision_configs(Some("fn"), "fn\0LATEST", 10).await.unwrap()), [("fn", "prod")]);
    assert!(s.list_provision_configs(Some("ghost"), "", 10).await.unwrap().is_empty());
    assert_eq!(s.list_all_provision_configs().await.unwrap(), all, "the maintainer's read sees the same");

    // An alias with a config cannot go; once the config is gone it can.
    assert_eq!(s.delete_alias("fn", "prod").await.unwrap(), DeleteAlias::Provisioned);
    assert!(s.get_alias("fn", "prod").await.unwrap().is_some());
    assert!(s.delete_provision_config("fn", "prod").await.unwrap());
    assert!(!s.delete_provision_config("fn", "prod").await.unwrap());
    assert_eq!(s.delete_alias("fn", "prod").await.unwrap(), DeleteAlias::Deleted);

    // The function's configs go with it, and only its own.
    s.delete_function("fn").await.unwrap();
    assert_eq!(keys(&s.list_all_provision_configs().await.unwrap()), [("gn", "LATEST")]);
    s.insert_function(&function("fn", "111")).await.unwrap();
    assert_eq!(s.get_provision_config("fn", "LATEST").await.unwrap(), None, "a new function of the name has none");
}

pub async fn alias_deletes_racing_provision_puts_leave_no_orphan(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("fn", "111")).await.unwrap();
    publish(&s, "fn").await;
    let cfg = provision(serde_json::json!({"target": 1}));
    for round in 0..10 {
        let name = format!("a{round}");
        assert!(matches!(s.create_alias(&alias("fn", &name, 1)).await.unwrap(), AliasWrite::Done(_)));
        let (put, del) = tokio::join!(
            {
                let (s, name, cfg) = (s.clone(), name.clone(), cfg.clone());
                tokio::spawn(async move { s.put_provision_config("fn", &name, &cfg, "t").await.unwrap() })
            },
            {
                let (s, name) = (s.clone(), name.clone());
                tokio::spawn(async move { s.delete_alias("fn", &name).await.unwrap() })
            }
        );
        let (put, del) = (put.unwrap(), del.unwrap());
        let config = s.get_provision_config("fn", &name).await.unwrap();
        let alias = s.get_alias("fn", &name).await.unwrap();
        // One went first: the put (the delete is then refused) or the delete (the put then
        // finds no alias). Never a config on an alias that is gone.
        match (&put, del) {
            (ProvisionWrite::Done(_), DeleteAlias::Provisioned) => assert!(config.is_some() && alias.is_some()),
            (ProvisionWrite::NoAlias, DeleteAlias::Deleted) => assert!(config.is_none() && alias.is_none()),
            other => panic!("round {round}: impossible outcome {other:?}"),
        }
    }
}
