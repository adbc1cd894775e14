//! Cluster storage end to end: code on S3 (moto), metadata on PostgreSQL and MariaDB shared by
//! two controllers, and a database outage seen through the API (503 with an FC error body,
//! then recovery), with real Docker instances throughout.

use std::time::Duration;

use nubis::config::{Config, KafkaConfig};
use nubis::store::Engine;
use serde_json::Value;

use crate::helpers::*;
use crate::{databases, forwarder::Forwarder, s3};

/// Kafka with a topic and group of its own: the queue a shared database requires.
fn kafka(c: &mut Config) {
    let brokers = std::env::var("NUBIS_TEST_KAFKA_BROKERS")
        .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env");
    let id = uuid::Uuid::new_v4().simple().to_string();
    c.dispatcher.queue = "kafka".into();
    c.kafka = KafkaConfig { brokers, topic: format!("storage-{id}"), group_id: format!("g-{id}"), partitions: 1, ..Default::default() };
}

async fn download_code(app: &ApiClient, name: &str) -> Vec<u8> {
    let r = app.request("GET", &format!("/2023-03-30/functions/{name}/code"), "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["url"].as_str().expect("url").to_string();
    let dl = reqwest::get(&url).await.unwrap();
    assert_eq!(dl.status().as_u16(), 200);
    dl.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn code_on_s3_is_invoked_and_downloaded() {
    let s3cfg = s3::config();
    let app = spawn_app_with(|c| c.codestore = s3cfg.clone()).await;
    let zip = zip_of(&[("index.py", PY_UPPER)]);
    let body = serde_json::json!({
        "functionName": "on-s3", "runtime": "python3.10", "handler": "index.handler",
        "memorySize": 128, "timeout": 10, "code": {"zipFile": b64(&zip)},
    });
    let r = app.create_function(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let checksum = r.json()["codeChecksum"].as_str().unwrap().to_string();

    // The zip is in the bucket, and not in the data directory.
    let bucket = nubis::codestore::CodeStore::s3(&s3cfg).unwrap();
    assert_eq!(bucket.get(&checksum).await.unwrap().as_ref(), zip.as_slice());
    assert!(!app.data_dir.path().join("code").exists(), "nothing written to the local code dir");

    let r = app.invoke("on-s3", b"from s3", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "FROM S3");
    assert_eq!(download_code(&app, "on-s3").await, zip);

    // Deleting the function collects the unused zip from the bucket.
    assert_eq!(app.delete_function("on-s3").await.status, 204);
    assert!(matches!(bucket.get(&checksum).await, Err(nubis::codestore::CodeStoreError::NotFound(_))));
    app.shutdown().await.unwrap();
}

/// Two controllers on one database and one bucket, as a cluster runs them: what one writes the
/// other serves. Every controller needs the same master.key (it seals the access keys and signs
/// code links), so the second one is given the first one's.
async fn two_controllers_share_the_database_and_the_code(engine: Engine) {
    let (url, db_name) = databases::create_database(engine).await;
    let s3cfg = s3::config();
    let shared = |c: &mut Config| {
        c.database.url = url.clone();
        c.codestore = s3cfg.clone();
        kafka(c);
    };
    let a = spawn_app_with(shared).await;
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.data_dir.path().join("master.key"), b_dir.path().join("master.key")).unwrap();
    let b = spawn_app_with(|c| {
        shared(c);
        c.server.data_dir = b_dir.path().to_path_buf();
    })
    .await;

    let r = a.create_function(python_function("shared", PY_UPPER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // b knows the function, runs it with the code a uploaded, and hands out a working link.
    let got = b.get_function("shared").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["codeChecksum"], r.json()["codeChecksum"]);
    let inv = b.invoke("shared", b"on b", &[]).await;
    assert_eq!((inv.status, inv.text()), (200, "ON B".to_string()));
    assert!(!download_code(&b, "shared").await.is_empty());
    // a key made on one controller signs requests to the other.
    let mut via_b = a.api.clone();
    via_b.addr = b.addr;
    let listed = via_b.request("GET", "/2023-03-30/functions", "", &[], vec![]).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["functions"][0]["functionName"], "shared");
    // A name taken through one controller is taken for both.
    b.create_function(python_function("shared", PY_UPPER)).await.assert_error(409, "FunctionAlreadyExists");

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    databases::drop_database(engine, &db_name).await;
}

#[tokio::test]
async fn two_controllers_share_postgres_and_s3() {
    two_controllers_share_the_database_and_the_code(Engine::Postgres).await;
}

#[tokio::test]
async fn two_controllers_share_mysql_and_s3() {
    two_controllers_share_the_database_and_the_code(Engine::MySql).await;
}

#[tokio::test]
async fn a_postgres_outage_answers_503_then_recovers() {
    let (url, db_name) = databases::create_database(Engine::Postgres).await;
    let fwd = Forwarder::start(databases::socket_of(&url)).await;
    let app = spawn_app_with(|c| {
        c.database.url = databases::via(&url, fwd.addr);
        c.database.connect_timeout_secs = 1;
        c.database.query_timeout_secs = 3;
        kafka(c);
    })
    .await;
    let r = app.create_function(python_function("steady", PY_UPPER)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    fwd.cut();
    // Reads and writes alike: 503 with an FC error body, within the configured deadlines.
    for _ in 0..2 {
        let t0 = std::time::Instant::now();
        app.get_function("steady").await.assert_error(503, "ServiceUnavailable");
        assert!(t0.elapsed() < Duration::from_secs(6), "answered in {:?}", t0.elapsed());
    }
    let listed = app.request("GET", "/2023-03-30/functions", "", &[], vec![]).await;
    let msg = listed.assert_error(503, "ServiceUnavailable");
    assert!(msg.contains("metadata store"), "{msg}");
    app.create_function(python_function("during", PY_UPPER)).await.assert_error(503, "ServiceUnavailable");

    fwd.restore();
    let got: Value = eventually(Duration::from_secs(20), "the API to answer again after the database returned", || async {
        let r = app.get_function("steady").await;
        (r.status == 200).then(|| r.json())
    })
    .await;
    assert_eq!(got["functionName"], "steady");
    let r = app.create_function(python_function("after", PY_UPPER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.invoke("after", b"back", &[]).await.text(), "BACK");

    app.shutdown().await.unwrap();
    drop(fwd);
    databases::drop_database(Engine::Postgres, &db_name).await;
}

#[tokio::test]
async fn the_embedded_queue_is_refused_with_a_shared_database() {
    let mut cfg = Config::default();
    cfg.server.data_dir = tempfile::tempdir().unwrap().path().to_path_buf();
    cfg.database.url = "postgres://nubis@127.0.0.1:1/nubis".into();
    cfg.dispatcher.queue = "embedded".into();
    let err = match nubis::server::Server::build(cfg).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("the server started with the embedded queue on PostgreSQL"),
    };
    assert!(err.contains("dispatcher.queue") && err.contains("kafka"), "{err}");
}
