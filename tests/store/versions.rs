//! Versions and aliases: publish (ids never reused, unchanged LATEST refused), frozen configs,
//! listing both ways, aliases and the versions they hold, code references, resolution, and
//! publishes racing on one function.

use nubis::model::version::{AliasInput, AliasRecord, Qualifier, Routing};
use nubis::store::{AliasWrite, DeleteAlias, DeleteVersion, Publish, Resolution, Store};

use crate::functions::function;
use crate::harness::TestDb;

async fn publish(s: &Store, name: &str, description: &str) -> u64 {
    match s.publish_version(name, description, "2026-02-01T00:00:00Z").await.unwrap() {
        Publish::Published(v) => v.version_id,
        other => panic!("publish of {name}: {other:?}"),
    }
}

/// Change LATEST (a new timeout and revision) so that the next publish has something to take.
async fn touch(s: &Store, name: &str, timeout: u32) {
    let mut f = s.get_function(name).await.unwrap().unwrap();
    let old = f.revision;
    f.config.timeout = timeout;
    f.revision = old + 1;
    s.update_function(&f, old).await.unwrap();
}

fn alias(name: &str, version_id: u64, additional: Option<(u64, f64)>) -> AliasRecord {
    AliasRecord {
        function_name: "fn".into(),
        alias_name: name.into(),
        routing: Routing { version_id, additional },
        description: format!("alias {name}"),
        created_time: "2026-02-01T00:00:00Z".into(),
        last_modified_time: "2026-02-01T00:00:00Z".into(),
    }
}

fn ids(v: &[nubis::model::version::VersionRecord]) -> Vec<u64> {
    v.iter().map(|v| v.version_id).collect()
}

pub async fn versions_publish_freeze_list_and_never_reuse_ids(db: &TestDb) {
    let s = db.open().await;
    assert_eq!(s.publish_version("ghost", "", "t").await.unwrap(), Publish::NoFunction);
    s.insert_function(&function("fn", "111")).await.unwrap();
    let Publish::Published(v1) = s.publish_version("fn", "first é", "2026-02-01T00:00:00Z").await.unwrap() else { panic!() };
    assert_eq!((v1.version_id, v1.description.as_str(), v1.code_checksum.as_str()), (1, "first é", "111"));
    // Nothing changed since version 1: refused, and the id is not used up.
    assert_eq!(s.publish_version("fn", "again", "t").await.unwrap(), Publish::Unchanged { latest: 1 });
    // An update that changes nothing (a new revision, the same config and code) is no change.
    let mut same = s.get_function("fn").await.unwrap().unwrap();
    same.revision += 1;
    s.update_function(&same, same.revision - 1).await.unwrap();
    assert_eq!(s.publish_version("fn", "again", "t").await.unwrap(), Publish::Unchanged { latest: 1 });
    touch(&s, "fn", 30).await;
    assert_eq!(publish(&s, "fn", "second").await, 2);

    // Version 1 is frozen: LATEST's later config does not reach it.
    let at1 = s.get_function_at("fn", 1).await.unwrap().unwrap();
    let latest = s.get_function("fn").await.unwrap().unwrap();
    assert_eq!((at1.version, at1.config.timeout, latest.config.timeout), (Some(1), 3, 30));
    assert_eq!((at1.name.as_str(), &at1.function_id, &at1.tags), ("fn", &latest.function_id, &latest.tags));
    assert!(at1.revision > 1, "a version's revision is taken at publish, above LATEST's then");
    assert_eq!(s.get_function_at("fn", 2).await.unwrap().unwrap().config.timeout, 30);
    assert_eq!(s.get_function_at("fn", 3).await.unwrap(), None);
    assert_eq!(s.get_function_at("ghost", 1).await.unwrap(), None);

    touch(&s, "fn", 40).await;
    assert_eq!(publish(&s, "fn", "third").await, 3);
    touch(&s, "fn", 50).await;
    assert_eq!(publish(&s, "fn", "fourth").await, 4);
    // Paging both ways: ascending after a cursor, descending before it.
    assert_eq!(ids(&s.list_versions("fn", None, true, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(ids(&s.list_versions("fn", Some(3), true, 3).await.unwrap()), [4]);
    assert_eq!(ids(&s.list_versions("fn", None, false, 3).await.unwrap()), [4, 3, 2]);
    assert_eq!(ids(&s.list_versions("fn", Some(2), false, 3).await.unwrap()), [1]);
    assert!(s.list_versions("ghost", None, false, 3).await.unwrap().is_empty());
    assert_eq!(s.list_versions("fn", None, false, 1).await.unwrap()[0].description, "fourth");

    // Deleting the newest version does not free its id.
    assert_eq!(s.delete_version("fn", 4).await.unwrap(), DeleteVersion::Deleted { code_checksum: "111".into() });
    assert_eq!(s.delete_version("fn", 4).await.unwrap(), DeleteVersion::NoVersion);
    assert_eq!(s.delete_version("ghost", 1).await.unwrap(), DeleteVersion::NoFunction);
    // LATEST now equals no remaining version's newest (3 has timeout 40, LATEST 50): publishes 5.
    assert_eq!(publish(&s, "fn", "fifth").await, 5);
    assert_eq!(ids(&s.list_versions("fn", None, true, 10).await.unwrap()), [1, 2, 3, 5]);
}

pub async fn aliases_route_to_versions_that_cannot_go_away(db: &TestDb) {
    let s = db.open().await;
    assert!(matches!(s.create_alias(&alias("prod", 1, None)).await.unwrap(), AliasWrite::NoFunction));
    s.insert_function(&function("fn", "111")).await.unwrap();
    publish(&s, "fn", "").await;
    touch(&s, "fn", 30).await;
    publish(&s, "fn", "").await;

    let prod = alias("prod", 1, Some((2, 0.3)));
    assert!(matches!(s.create_alias(&prod).await.unwrap(), AliasWrite::Done(a) if a == prod));
    assert_eq!(s.get_alias("fn", "prod").await.unwrap(), Some(prod.clone()), "every field round-trips");
    assert!(matches!(s.create_alias(&alias("prod", 2, None)).await.unwrap(), AliasWrite::Exists));
    assert!(matches!(s.create_alias(&alias("x", 9, None)).await.unwrap(), AliasWrite::NoVersion(9)));
    assert!(matches!(s.create_alias(&alias("x", 1, Some((7, 0.5)))).await.unwrap(), AliasWrite::NoVersion(7)));
    assert_eq!(s.get_alias("fn", "x").await.unwrap(), None);
    // Names are case-sensitive, like function names.
    assert_eq!(s.get_alias("fn", "PROD").await.unwrap(), None);
    for n in ["a-1", "a_2", "aB", "b"] {
        assert!(matches!(s.create_alias(&alias(n, 2, None)).await.unwrap(), AliasWrite::Done(_)));
    }
    let names = |v: Vec<AliasRecord>| v.into_iter().map(|a| a.alias_name).collect::<Vec<_>>();
    assert_eq!(names(s.list_aliases("fn", "", "", 10).await.unwrap()), ["a-1", "aB", "a_2", "b", "prod"]);
    assert_eq!(names(s.list_aliases("fn", "a", "a-1", 2).await.unwrap()), ["aB", "a_2"]);
    assert_eq!(names(s.list_aliases("fn", "a_", "", 10).await.unwrap()), ["a_2"], "prefixes are literal");
    assert!(s.list_aliases("ghost", "", "", 10).await.unwrap().is_empty());

    // Both the main and the additional version of an alias are held.
    assert_eq!(s.delete_version("fn", 1).await.unwrap(), DeleteVersion::InUse(vec!["prod".into()]));
    assert_eq!(
        s.delete_version("fn", 2).await.unwrap(),
        DeleteVersion::InUse(vec!["a-1".into(), "aB".into(), "a_2".into(), "b".into(), "prod".into()])
    );

    // Update: partial, validated as a whole, versions checked.
    let patch = |v: serde_json::Value| AliasInput::parse(v.as_object().unwrap().clone()).unwrap();
    let AliasWrite::Done(u) = s.update_alias("fn", "prod", &patch(serde_json::json!({"description": "d2"})), "t2").await.unwrap() else {
        panic!()
    };
    assert_eq!((u.routing, u.description.as_str(), u.last_modified_time.as_str()), (prod.routing, "d2", "t2"));
    assert!(matches!(s.update_alias("fn", "prod", &patch(serde_json::json!({"versionId": "2"})), "t").await.unwrap(), AliasWrite::Invalid(_)));
    assert!(matches!(s.update_alias("fn", "prod", &patch(serde_json::json!({"versionId": "8"})), "t").await.unwrap(), AliasWrite::NoVersion(8)));
    assert!(matches!(s.update_alias("fn", "nope", &patch(serde_json::json!({})), "t").await.unwrap(), AliasWrite::NoAlias));
    assert!(matches!(s.update_alias("ghost", "prod", &patch(serde_json::json!({})), "t").await.unwrap(), AliasWrite::NoFunction));
    let clear = patch(serde_json::json!({"additionalVersionWeight": {}}));
    assert!(matches!(s.update_alias("fn", "prod", &clear, "t3").await.unwrap(), AliasWrite::Done(a) if a.routing.additional.is_none()));
    assert_eq!(s.get_alias("fn", "prod").await.unwrap().unwrap().routing, Routing { version_id: 1, additional: None });

    for n in ["a-1", "a_2", "aB", "b"] {
        assert_eq!(s.delete_alias("fn", n).await.unwrap(), DeleteAlias::Deleted);
    }
    assert_eq!(s.delete_alias("fn", "b").await.unwrap(), DeleteAlias::NoAlias);
    assert_eq!(s.delete_alias("ghost", "b").await.unwrap(), DeleteAlias::NoAlias);
    assert_eq!(s.delete_version("fn", 2).await.unwrap(), DeleteVersion::Deleted { code_checksum: "111".into() });
    assert_eq!(s.delete_version("fn", 1).await.unwrap(), DeleteVersion::InUse(vec!["prod".into()]));
}

pub async fn versions_hold_code_and_go_with_their_function(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("fn", "A")).await.unwrap();
    s.insert_function(&function("other", "A")).await.unwrap();
    publish(&s, "fn", "").await;
    let mut f = s.get_function("fn").await.unwrap().unwrap();
    f.code_checksum = "B".into();
    f.revision += 1;
    s.update_function(&f, f.revision - 1).await.unwrap();
    publish(&s, "fn", "").await;
    s.create_alias(&alias("prod", 1, Some((2, 0.5)))).await.unwrap();
    // A: the other function and version 1; B: LATEST and version 2.
    assert_eq!(s.code_references("A").await.unwrap(), 2);
    assert_eq!(s.code_references("B").await.unwrap(), 2);
    let mut codes = s.delete_function("fn").await.unwrap().expect("it existed");
    codes.sort();
    assert_eq!(codes, ["A", "B"], "the packages its versions used");
    assert_eq!(s.code_references("A").await.unwrap(), 1);
    assert_eq!(s.code_references("B").await.unwrap(), 0);
    assert_eq!(s.get_alias("fn", "prod").await.unwrap(), None);
    assert_eq!(s.get_function_at("fn", 1).await.unwrap(), None);
    // A function created again under the name starts from version 1, with no old alias.
    s.insert_function(&function("fn", "C")).await.unwrap();
    assert!(s.list_versions("fn", None, true, 10).await.unwrap().is_empty());
    assert_eq!(publish(&s, "fn", "").await, 1);
    assert!(s.list_aliases("fn", "", "", 10).await.unwrap().is_empty());
}

pub async fn resolve_names_latest_versions_and_aliases(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("fn", "A")).await.unwrap();
    publish(&s, "fn", "").await;
    touch(&s, "fn", 30).await;
    publish(&s, "fn", "").await;
    touch(&s, "fn", 60).await;
    s.create_alias(&alias("canary", 1, Some((2, 0.25)))).await.unwrap();
    let found = |r: Resolution| match r {
        Resolution::Found(f) => (f.version, f.config.timeout),
        other => panic!("{other:?}"),
    };
    assert_eq!(found(s.resolve("fn", &Qualifier::Latest, 0.0).await.unwrap()), (None, 60));
    assert_eq!(found(s.resolve("fn", &Qualifier::Version(2), 0.0).await.unwrap()), (Some(2), 30));
    // The roll picks: below the weight the additional version, else the alias's own.
    assert_eq!(found(s.resolve("fn", &Qualifier::Alias("canary".into()), 0.1).await.unwrap()), (Some(2), 30));
    assert_eq!(found(s.resolve("fn", &Qualifier::Alias("canary".into()), 0.9).await.unwrap()), (Some(1), 3));
    assert_eq!(s.resolve("fn", &Qualifier::Version(3), 0.0).await.unwrap(), Resolution::NoVersion(3));
    assert_eq!(s.resolve("fn", &Qualifier::Alias("nope".into()), 0.0).await.unwrap(), Resolution::NoAlias("nope".into()));
    for q in [Qualifier::Latest, Qualifier::Version(1), Qualifier::Alias("canary".into())] {
        assert_eq!(s.resolve("ghost", &q, 0.0).await.unwrap(), Resolution::NoFunction);
    }
}

pub async fn concurrent_publishes_take_one_id(db: &TestDb) {
    // As controllers racing on one function: the function row's lock makes them take turns, so
    // exactly one publishes the change and the others find nothing new.
    let s = db.open().await;
    s.insert_function(&function("fn", "A")).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.publish_version("fn", &format!("racer {i}"), "t").await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap());
    }
    let published: Vec<_> = outcomes.iter().filter(|o| matches!(o, Publish::Published(_))).collect();
    assert_eq!(published.len(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Publish::Published(v) if v.version_id == 1) || *o == Publish::Unchanged { latest: 1 }));
    assert_eq!(ids(&s.list_versions("fn", None, true, 10).await.unwrap()), [1]);
}
