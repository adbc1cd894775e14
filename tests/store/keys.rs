//! Sealed access keys.

use nubis::store::StoreError;

use crate::harness::TestDb;

pub async fn access_keys_insert_get_count(db: &TestDb) {
    let s = db.open().await;
    assert_eq!(s.count_access_keys().await.unwrap(), 0);
    // Arbitrary bytes (a nonce and ciphertext), including NUL and invalid UTF-8.
    let sealed: Vec<u8> = (0..=255u8).collect();
    s.insert_access_key("NBKEY1", &sealed, "first", "2026-01-01T00:00:00Z").await.unwrap();
    s.insert_access_key("NBKEY2", b"x", "second", "2026-01-01T00:00:00Z").await.unwrap();
    assert!(matches!(
        s.insert_access_key("NBKEY1", b"y", "again", "2026-01-01T00:00:00Z").await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.get_access_key("NBKEY1").await.unwrap(), Some(sealed));
    assert_eq!(s.get_access_key("nbkey1").await.unwrap(), None, "key ids are case-sensitive");
    assert_eq!(s.get_access_key("NBKEY3").await.unwrap(), None);
    assert_eq!(s.count_access_keys().await.unwrap(), 2);
}

/// Console sessions (migration 0009): by token hash, expired ones swept.
pub async fn console_sessions_insert_get_expire(db: &TestDb) {
    use nubis::store::SessionRow;
    let s = db.open().await;
    let row = |ak: &str, expires_ms| SessionRow { access_key_id: ak.into(), csrf_token: "c".repeat(32), created_ms: 1, expires_ms };
    let h1 = "a".repeat(64);
    let h2 = "b".repeat(64);
    s.insert_session(&h1, &row("NBKEY1", 1_000)).await.unwrap();
    s.insert_session(&h2, &row("NBKEY2", 3_000_000_000_000)).await.unwrap();
    assert!(matches!(s.insert_session(&h1, &row("NBKEY3", 5)).await, Err(StoreError::AlreadyExists)));
    assert_eq!(s.get_session(&h1).await.unwrap(), Some(row("NBKEY1", 1_000)));
    assert_eq!(s.get_session(&"c".repeat(64)).await.unwrap(), None);
    assert_eq!(s.delete_expired_sessions(2_000).await.unwrap(), 1);
    assert_eq!(s.get_session(&h1).await.unwrap(), None);
    s.delete_session(&h2).await.unwrap();
    assert_eq!(s.get_session(&h2).await.unwrap(), None);
}
