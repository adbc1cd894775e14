//! The database going away and coming back, for the engines that are servers: calls fail with
//! `Unavailable`/`TimedOut` (the API's 503) within the configured deadlines, never hang or
//! panic, and the same store works again once the server is back (the pool reconnects).

use std::time::{Duration, Instant};

use nubis::config::DatabaseConfig;
use nubis::store::{Engine, Store, StoreError};

use crate::harness::databases;
use crate::harness::forwarder::Forwarder;

async fn outage_and_recovery(engine: Engine) {
    let (url, name) = databases::create_database(engine).await;
    let fwd = Forwarder::start(databases::socket_of(&url)).await;
    let cfg = DatabaseConfig {
        url: databases::via(&url, fwd.addr),
        connect_timeout_secs: 1,
        query_timeout_secs: 3,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg, dir.path()).await.expect("opens through the forwarder");
    s.insert_access_key("k", b"sealed", "d", "t").await.unwrap();

    fwd.cut();
    for _ in 0..3 {
        let t0 = Instant::now();
        match s.get_access_key("k").await {
            Err(StoreError::Unavailable(_) | StoreError::TimedOut(_)) => {}
            other => panic!("expected the database to be unavailable, got {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "bounded by the timeouts: {:?}", t0.elapsed());
    }
    assert!(matches!(s.insert_access_key("k2", b"x", "d", "t").await, Err(StoreError::Unavailable(_) | StoreError::TimedOut(_))));

    fwd.restore();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match s.get_access_key("k").await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"sealed"[..]));
                break;
            }
            Err(e) => assert!(Instant::now() < end, "no recovery within 20 s: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.insert_access_key("k2", b"x", "d", "t").await.expect("writes work again");
    s.close().await;
    databases::drop_database(engine, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_unavailable_then_recovers() {
    outage_and_recovery(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_outage_gives_unavailable_then_recovers() {
    outage_and_recovery(Engine::MySql).await;
}
