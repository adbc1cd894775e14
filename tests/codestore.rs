//! The code store on a real S3-compatible server (moto, from `scripts/test-services.sh start
//! s3`: NUBIS_TEST_S3_ENDPOINT, NUBIS_TEST_S3_BUCKET). Each test works under a prefix of its
//! own in the shared bucket. A missing endpoint fails the test, as for the other services.

use bytes::Bytes;
use nubis::codestore::{CodeStore, CodeStoreError};
use nubis::config::CodeStoreConfig;

#[path = "support/s3.rs"]
mod s3;

#[tokio::test]
async fn put_get_delete_on_s3() {
    let cfg = s3::config();
    let store = CodeStore::open(&cfg, std::path::Path::new("/nonexistent")).await.expect("bucket reachable");
    assert!(store.location().starts_with("s3://"), "{}", store.location());
    let zip = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    store.put("123", zip.clone()).await.unwrap();
    assert_eq!(store.get("123").await.unwrap(), zip);
    // Content addressed: a second put of the same checksum is harmless.
    store.put("123", zip.clone()).await.unwrap();
    assert!(matches!(store.get("456").await, Err(CodeStoreError::NotFound(_))));
    store.delete("123").await.unwrap();
    assert!(matches!(store.get("123").await, Err(CodeStoreError::NotFound(_))));
    // Deleting what is not there is not an error (a retried garbage collection).
    store.delete("123").await.unwrap();

    // The prefix keeps stores apart: another prefix does not see this one's objects.
    store.put("789", Bytes::from_static(b"zip")).await.unwrap();
    let other = CodeStore::open(&s3::config(), std::path::Path::new("/nonexistent")).await.unwrap();
    assert!(matches!(other.get("789").await, Err(CodeStoreError::NotFound(_))));
}

#[tokio::test]
async fn a_missing_bucket_or_a_bad_url_stops_the_open() {
    let missing = CodeStoreConfig { url: format!("s3://no-such-bucket-{}/p", uuid::Uuid::new_v4().simple()), ..s3::config() };
    match CodeStore::open(&missing, std::path::Path::new("/nonexistent")).await {
        Err(CodeStoreError::Unavailable(_)) => {}
        other => panic!("expected the open to fail, got {:?}", other.map(|s| s.location().to_string())),
    }
    for url in ["gs://bucket", "s3://", "s3:///prefix"] {
        let bad = CodeStoreConfig { url: url.into(), ..s3::config() };
        assert!(matches!(CodeStore::s3(&bad), Err(CodeStoreError::BadUrl(_))), "{url}");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_the_timeout() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = CodeStoreConfig { endpoint: format!("http://127.0.0.1:{port}"), timeout_secs: 2, ..s3::config() };
    let store = CodeStore::s3(&cfg).unwrap();
    let t0 = std::time::Instant::now();
    assert!(matches!(store.get("1").await, Err(CodeStoreError::Unavailable(_))));
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t0.elapsed());
}
