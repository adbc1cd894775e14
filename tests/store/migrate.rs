//! Migrations at open: several controllers starting at once on a fresh database.

use crate::harness::TestDb;

/// Migrations each engine has (the SQLite ones include the embedded queue's table, in 0002,
/// and its ordering groups, in 0005).
const MIGRATIONS: i64 = 5;

pub async fn concurrent_opens_migrate_once(db: &TestDb) {
    // As controllers starting together: every open must succeed, and each migration must be
    // recorded once (a second run would fail on CREATE TABLE).
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let (cfg, dir) = (db.cfg.clone(), db.data_dir.clone());
            tokio::spawn(async move { nubis::store::Store::open(&cfg, &dir).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap_or_else(|e| panic!("a concurrent open failed: {e:#}")));
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await, MIGRATIONS);
    // Every store sees the one schema.
    stores[0].insert_access_key("k", b"s", "d", "t").await.unwrap();
    for s in &stores {
        assert_eq!(s.count_access_keys().await.unwrap(), 1);
    }
}

pub async fn reopening_keeps_the_data(db: &TestDb) {
    let s = db.open().await;
    s.insert_access_key("k", b"s", "d", "t").await.unwrap();
    s.close().await;
    let again = db.open().await;
    assert_eq!(again.get_access_key("k").await.unwrap(), Some(b"s".to_vec()));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await, MIGRATIONS);
}
