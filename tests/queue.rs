//! One conformance suite for the async queue seam, run on every backend: the embedded queue
//! (SQLite) and Kafka (a real Kafka-protocol broker; `scripts/test-services.sh start kafka`
//! starts one and `scripts/test.sh` does so for the suite).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nubis::config::KafkaConfig;
use nubis::queue::{Delivery, EmbeddedQueue, Queue, QueueMessage, kafka::KafkaQueue};
use nubis::store::Store;

fn kafka_brokers() -> String {
    std::env::var("NUBIS_TEST_KAFKA_BROKERS")
        .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env")
}

fn kafka_cfg(tag: &str) -> KafkaConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    KafkaConfig {
        brokers: kafka_brokers(),
        topic: format!("t-{tag}-{id}"),
        group_id: format!("g-{tag}-{id}"),
        partitions: 3,
        replication: 1,
        session_timeout_ms: 6000,
    }
}

async fn embedded() -> (Arc<dyn Queue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("q.db")).await.unwrap();
    (Arc::new(EmbeddedQueue::new(&store).unwrap()), dir)
}

/// Receive until `n` messages arrived or the deadline passed.
async fn receive_n(q: &dyn Queue, n: usize, deadline: Duration) -> Vec<Delivery> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < end {
        got.extend(q.receive(n - got.len(), Duration::from_secs(30)).await.unwrap());
    }
    got
}

fn msg(key: &str, body: &str) -> QueueMessage {
    QueueMessage { key: key.into(), body: body.as_bytes().to_vec() }
}

fn bodies(ds: &[Delivery]) -> BTreeSet<String> {
    ds.iter().map(|d| String::from_utf8(d.body.clone()).unwrap()).collect()
}

async fn delivers_each_message_and_acks(q: &dyn Queue) {
    for i in 0..50 {
        q.enqueue(msg(&format!("fn-{}", i % 5), &format!("m{i}"))).await.unwrap();
    }
    let got = receive_n(q, 50, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 50);
    assert_eq!(bodies(&got).len(), 50, "no message twice");
    assert!(got.iter().all(|d| d.deliveries == 1 && d.enqueued_ms > 0));
    for d in &got {
        q.ack(d).await.unwrap();
    }
    assert!(q.receive(10, Duration::from_secs(30)).await.unwrap().is_empty());
    // Acking twice is refused: the message is no longer ours.
    assert!(q.ack(&got[0]).await.is_err());
}

async fn retry_after_hides_then_returns_with_a_count(q: &dyn Queue) {
    q.enqueue(msg("fn", "again")).await.unwrap();
    let d = receive_n(q, 1, Duration::from_secs(20)).await.pop().unwrap();
    q.retry_after(&d, Duration::from_millis(700)).await.unwrap();
    let early = q.receive(1, Duration::from_secs(30)).await.unwrap();
    assert!(early.is_empty(), "invisible until its delay has passed");
    let start = Instant::now();
    let back = receive_n(q, 1, Duration::from_secs(20)).await.pop().expect("returned after the delay");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(back.body, b"again");
    assert_eq!(back.deliveries, 2);
    assert_eq!(back.enqueued_ms, d.enqueued_ms, "keeps its original enqueue time (for expiry)");
    q.ack(&back).await.unwrap();
}

#[tokio::test]
async fn embedded_queue_conformance() {
    let (q, _dir) = embedded().await;
    delivers_each_message_and_acks(q.as_ref()).await;
    retry_after_hides_then_returns_with_a_count(q.as_ref()).await;
}

#[tokio::test]
async fn embedded_queue_reports_its_oldest_message() {
    let (q, _dir) = embedded().await;
    assert_eq!(q.oldest_enqueued_ms().await.unwrap(), None);
    q.enqueue(msg("a", "first")).await.unwrap();
    q.enqueue(msg("b", "second")).await.unwrap();
    let got = receive_n(q.as_ref(), 2, Duration::from_secs(5)).await;
    let first = got.iter().find(|d| d.body == b"first").unwrap();
    assert_eq!(q.oldest_enqueued_ms().await.unwrap(), Some(first.enqueued_ms), "leased messages count: unfinished");
    // A retried message keeps its place: it is still the oldest.
    q.retry_after(first, Duration::from_millis(1)).await.unwrap();
    assert_eq!(q.oldest_enqueued_ms().await.unwrap(), Some(first.enqueued_ms));
    let second = got.iter().find(|d| d.body == b"second").unwrap();
    q.ack(second).await.unwrap();
    let again = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await.pop().unwrap();
    q.ack(&again).await.unwrap();
    assert_eq!(q.oldest_enqueued_ms().await.unwrap(), None);
}

#[tokio::test]
async fn kafka_queue_conformance() {
    let q = KafkaQueue::connect(kafka_cfg("conf")).await.expect("broker reachable");
    delivers_each_message_and_acks(&q).await;
    retry_after_hides_then_returns_with_a_count(&q).await;
}

#[tokio::test]
async fn kafka_redelivers_what_a_dead_dispatcher_did_not_ack() {
    let cfg = kafka_cfg("dead");
    let first = KafkaQueue::connect(cfg.clone()).await.unwrap();
    for i in 0..20 {
        first.enqueue(msg(&format!("fn-{}", i % 4), &format!("m{i}"))).await.unwrap();
    }
    let got = receive_n(&first, 20, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 20);
    // Finish half, then die with the other half in work.
    let (done, unfinished): (Vec<_>, Vec<_>) = got.into_iter().partition(|d| d.body.ends_with(b"0") || d.body.ends_with(b"2") || d.body.ends_with(b"4") || d.body.ends_with(b"6") || d.body.ends_with(b"8"));
    for d in &done {
        first.ack(d).await.unwrap();
    }
    drop(first);
    let second = KafkaQueue::connect(cfg).await.unwrap();
    // Offsets are committed only up to the first unfinished message of each partition, so the
    // unfinished ones come back (and some finished ones after them may too: at least once).
    let want = bodies(&unfinished);
    let end = Instant::now() + Duration::from_secs(30);
    let mut back = BTreeSet::new();
    while !want.is_subset(&back) && Instant::now() < end {
        back.extend(bodies(&second.receive(20, Duration::from_secs(30)).await.unwrap()));
    }
    assert!(want.is_subset(&back), "every unfinished message is delivered again: missing {:?}", want.difference(&back).collect::<Vec<_>>());
}
