//! Function rows: CRUD, optimistic updates, unique names, paging, code references.

use nubis::model::{FunctionConfig, FunctionName, FunctionRecord, Tag};
use nubis::store::StoreError;

use crate::harness::TestDb;

pub fn function(name: &str, checksum: &str) -> FunctionRecord {
    let body = serde_json::json!({"runtime": "python3.10", "handler": "index.handler", "environmentVariables": {"K": "é ✓"}});
    FunctionRecord {
        name: FunctionName::parse(name).unwrap(),
        version: None,
        function_id: uuid::Uuid::new_v4().to_string(),
        config: FunctionConfig::from_create(body.as_object().unwrap().clone()).unwrap(),
        code_checksum: checksum.into(),
        code_size: 1234,
        revision: 1,
        tags: vec![Tag { key: "team".into(), value: "a".into() }],
        created_time: "2026-01-01T00:00:00Z".into(),
        last_modified_time: "2026-01-01T00:00:00Z".into(),
        controls: Default::default(),
    }
}

fn names(v: &[FunctionRecord]) -> Vec<&str> {
    v.iter().map(|f| f.name.as_str()).collect()
}

pub async fn function_crud_and_optimistic_updates(db: &TestDb) {
    let s = db.open().await;
    let f = function("hello", "111");
    s.insert_function(&f).await.unwrap();
    assert_eq!(s.get_function("hello").await.unwrap(), Some(f.clone()), "every field round-trips");
    assert_eq!(s.get_function("nope").await.unwrap(), None);

    let mut g = f.clone();
    g.revision = 2;
    g.code_checksum = "222".into();
    g.config.timeout = 30;
    g.last_modified_time = "2026-01-02T00:00:00Z".into();
    s.update_function(&g, 1).await.unwrap();
    // A second writer that read revision 1 loses instead of overwriting.
    let mut stale = f.clone();
    stale.revision = 2;
    assert!(matches!(s.update_function(&stale, 1).await, Err(StoreError::Conflict)));
    let got = s.get_function("hello").await.unwrap().unwrap();
    assert_eq!(got, FunctionRecord { created_time: f.created_time.clone(), tags: f.tags.clone(), ..g.clone() });
    // Updating a missing function is a conflict too (it is not at the expected revision).
    assert!(matches!(s.update_function(&function("ghost", ""), 1).await, Err(StoreError::Conflict)));

    assert_eq!(s.delete_function("hello").await.unwrap(), Some(vec![]), "no versions, no version packages");
    assert_eq!(s.delete_function("hello").await.unwrap(), None);
    assert_eq!(s.get_function("hello").await.unwrap(), None);
}

pub async fn function_names_are_unique_and_case_sensitive(db: &TestDb) {
    let s = db.open().await;
    s.insert_function(&function("dup", "1")).await.unwrap();
    assert!(matches!(s.insert_function(&function("dup", "2")).await, Err(StoreError::AlreadyExists)));
    // Names differing only in case are different functions (binary collation on every engine).
    s.insert_function(&function("Dup", "3")).await.unwrap();
    assert_eq!(s.get_function("DUP").await.unwrap(), None);
    assert_eq!(s.get_function("Dup").await.unwrap().unwrap().code_checksum, "3");
    // function_id is unique as well.
    let mut same_id = function("other", "4");
    same_id.function_id = s.get_function("dup").await.unwrap().unwrap().function_id;
    assert!(matches!(s.insert_function(&same_id).await, Err(StoreError::AlreadyExists)));
}

pub async fn functions_page_by_prefix_in_code_point_order(db: &TestDb) {
    let s = db.open().await;
    let all = ["a-1", "a_2", "a1", "aB", "ab", "b", "A", "_x", "a"];
    for n in all {
        s.insert_function(&function(n, "")).await.unwrap();
    }
    // Code point order: '-' < '1' < 'A' < 'B' < '_' < 'a' < 'b'.
    let ordered = ["A", "_x", "a", "a-1", "a1", "aB", "a_2", "ab", "b"];
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let page = s.list_functions("", &after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.name.to_string();
        pages.extend(names(&page).into_iter().map(String::from));
    }
    assert_eq!(pages, ordered);
    assert_eq!(names(&s.list_functions("a", "", 100).await.unwrap()), ["a", "a-1", "a1", "aB", "a_2", "ab"]);
    // Prefixes are literal (no LIKE wildcards) and case-sensitive.
    assert_eq!(names(&s.list_functions("a_", "", 100).await.unwrap()), ["a_2"]);
    assert_eq!(names(&s.list_functions("A", "", 100).await.unwrap()), ["A"]);
    assert_eq!(names(&s.list_functions("a", "a1", 2).await.unwrap()), ["aB", "a_2"]);
    assert!(s.list_functions("zzz", "", 100).await.unwrap().is_empty());
    assert!(s.list_functions("", "b", 100).await.unwrap().is_empty());
}

pub async fn code_references_count_sharing_functions(db: &TestDb) {
    let s = db.open().await;
    for (n, sum) in [("f1", "42"), ("f2", "42"), ("f3", "7"), ("img", "")] {
        s.insert_function(&function(n, sum)).await.unwrap();
    }
    assert_eq!(s.code_references("42").await.unwrap(), 2);
    assert_eq!(s.code_references("7").await.unwrap(), 1);
    assert_eq!(s.code_references("0").await.unwrap(), 0);
    s.delete_function("f1").await.unwrap();
    assert_eq!(s.code_references("42").await.unwrap(), 1);
}
