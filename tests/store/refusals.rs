//! Values one engine refuses: the caller's mistake (400), never "database unavailable" (503).

use nubis::store::{Engine, StoreError};

use crate::harness::TestDb;

#[tokio::test]
async fn postgres_refuses_nul_characters_as_the_callers_mistake() {
    // PostgreSQL text cannot hold U+0000 (SQLite and MySQL store it): a lookup by such a name
    // comes from a request, so it must map to InvalidArgument, not to an outage.
    let db = TestDb::fresh(Engine::Postgres).await;
    let s = db.open().await;
    match s.get_function("a\0b").await {
        Err(StoreError::Rejected(m)) => assert!(!m.is_empty()),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(matches!(s.list_functions("\0", "", 10).await, Err(StoreError::Rejected(_))));
    // The store is fine afterwards.
    assert_eq!(s.get_function("ab").await.unwrap(), None);
    s.close().await;
    db.remove().await;
}
