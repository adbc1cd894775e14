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
