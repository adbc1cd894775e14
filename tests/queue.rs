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
    QueueMessage::new(key, body.as_bytes().to_vec())
}

fn keyed(key: &str, group: &str, body: &str) -> QueueMessage {
    QueueMessage { group: Some(group.into()), ..msg(key, body) }
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.body.clone()).unwrap()
}

/// Receive for `window`, expecting nothing.
async fn assert_nothing_for(q: &dyn Queue, window: Duration, why: &str) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let got = q.receive(10, Duration::from_secs(30)).await.unwrap();
        assert!(got.is_empty(), "{why}: got {:?}", got.iter().map(body).collect::<Vec<_>>());
    }
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

/// A group's messages come one at a time, in enqueue order, the next only after an ack; a
/// retried head keeps its place; messages without a group are not held up.
async fn groups_hand_out_one_message_at_a_time_in_order(q: &dyn Queue) {
    for i in 0..5 {
        q.enqueue(keyed("fn", "fn/a", &format!("a{i}"))).await.unwrap();
        if i < 3 {
            q.enqueue(keyed("fn", "fn/b", &format!("b{i}"))).await.unwrap();
        }
    }
    q.enqueue(msg("fn", "u0")).await.unwrap();
    q.enqueue(msg("fn", "u1")).await.unwrap();
    let first = receive_n(q, 4, Duration::from_secs(20)).await;
    assert_eq!(bodies(&first), ["a0", "b0", "u0", "u1"].map(String::from).into());
    let a0 = first.iter().find(|d| d.body == b"a0").unwrap();
    assert_eq!((a0.group.as_deref(), a0.key.as_str()), (Some("fn/a"), "fn"));
    assert_nothing_for(q, Duration::from_millis(500), "only one message of a group at a time").await;
    // A retried head comes back before anything behind it.
    q.retry_after(a0, Duration::from_millis(300)).await.unwrap();
    assert!(q.ack(a0).await.is_err(), "the retried lease is over");
    let a0 = receive_n(q, 1, Duration::from_secs(20)).await.pop().unwrap();
    assert_eq!((body(&a0), a0.deliveries), ("a0".to_string(), 2));
    for d in first.iter().filter(|d| d.body != b"a0") {
        q.ack(d).await.unwrap();
    }
    q.ack(&a0).await.unwrap();
    // Drain: each ack lets the group's next one through, in order.
    let mut order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let end = Instant::now() + Duration::from_secs(30);
    while order.values().map(Vec::len).sum::<usize>() < 6 && Instant::now() < end {
        for d in q.receive(10, Duration::from_secs(30)).await.unwrap() {
            order.entry(d.group.clone().unwrap()).or_default().push(body(&d));
            q.ack(&d).await.unwrap();
        }
    }
    assert_eq!(order["fn/a"], ["a1", "a2", "a3", "a4"]);
    assert_eq!(order["fn/b"], ["b1", "b2"]);
}

#[tokio::test]
async fn embedded_queue_conformance() {
    let (q, _dir) = embedded().await;
    delivers_each_message_and_acks(q.as_ref()).await;
    retry_after_hides_then_returns_with_a_count(q.as_ref()).await;
    groups_hand_out_one_message_at_a_time_in_order(q.as_ref()).await;
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
    groups_hand_out_one_message_at_a_time_in_order(&q).await;
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

#[tokio::test]
async fn kafka_a_new_consumer_resumes_each_group_at_its_unacked_head() {
    let cfg = kafka_cfg("heads");
    let first = KafkaQueue::connect(cfg.clone()).await.unwrap();
    for i in 0..5 {
        first.enqueue(keyed("fn", "fn/a", &format!("a{i}"))).await.unwrap();
        first.enqueue(keyed("fn", "fn/b", &format!("b{i}"))).await.unwrap();
    }
    // a0 and a1 done; a2 in work when the consumer dies; b0 waiting for its retry.
    let mut heads = receive_n(&first, 2, Duration::from_secs(20)).await;
    heads.sort_by_key(body);
    assert_eq!(heads.iter().map(body).collect::<Vec<_>>(), ["a0", "b0"]);
    first.ack(&heads[0]).await.unwrap();
    let a1 = receive_n(&first, 1, Duration::from_secs(20)).await.pop().unwrap();
    assert_eq!(body(&a1), "a1");
    first.ack(&a1).await.unwrap();
    let a2 = receive_n(&first, 1, Duration::from_secs(20)).await.pop().unwrap();
    assert_eq!(body(&a2), "a2");
    first.retry_after(&heads[1], Duration::from_secs(60)).await.unwrap();
    drop(first);
    // The next owner starts each group at its oldest unacked message, whatever it held before.
    let second = KafkaQueue::connect(cfg).await.unwrap();
    let mut order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let end = Instant::now() + Duration::from_secs(40);
    while order.values().map(Vec::len).sum::<usize>() < 8 && Instant::now() < end {
        for d in second.receive(10, Duration::from_secs(30)).await.unwrap() {
            order.entry(d.group.clone().unwrap()).or_default().push(body(&d));
            second.ack(&d).await.unwrap();
        }
    }
    assert_eq!(order["fn/a"], ["a2", "a3", "a4"], "a0 and a1 were committed: not again");
    assert_eq!(order["fn/b"], ["b0", "b1", "b2", "b3", "b4"]);
}

/// Two consumers of one group, the second joining while the first works: the rebalance moves
/// partitions between them, and still (1) no message of an ordering group is handed out before
/// every earlier message of its group was acked, by whichever consumer held it then, and (2) a
/// group never has two messages out under live leases: when a consumer hands out a message of
/// a group whose previous message the other (or the same) consumer still holds, that older
/// lease is already dead (its partition was taken away), which `extend` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_groups_keep_their_order_across_a_rebalance() {
    const GROUPS: usize = 6;
    const PER_GROUP: usize = 20;
    const LONG: usize = 5;
    type Out = Arc<tokio::sync::Mutex<Vec<Option<(Arc<KafkaQueue>, Delivery)>>>>;
    let cfg = kafka_cfg("rebalance");
    let producer = KafkaQueue::connect(cfg.clone()).await.unwrap();
    for i in 0..PER_GROUP {
        for g in 0..GROUPS {
            producer.enqueue(keyed("fn", &format!("fn/g{g}"), &format!("g{g}:{i}"))).await.unwrap();
        }
    }
    let acked: Arc<std::sync::Mutex<Vec<BTreeSet<usize>>>> = Arc::new(std::sync::Mutex::new(vec![BTreeSet::new(); GROUPS]));
    let out: Out = Arc::new(tokio::sync::Mutex::new(vec![None; GROUPS]));
    let counts = Arc::new([(); 2].map(|_| std::sync::atomic::AtomicUsize::new(0)));
    let done = |acked: &std::sync::Mutex<Vec<BTreeSet<usize>>>| acked.lock().unwrap().iter().map(BTreeSet::len).sum::<usize>();
    // Like the dispatcher: keep receiving while earlier deliveries are worked on, so a rebalance
    // (which happens inside `receive`) finds messages in hand.
    let worker = |q: Arc<KafkaQueue>| {
        let (acked, out, counts) = (acked.clone(), out.clone(), counts.clone());
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(90);
            let permits = Arc::new(tokio::sync::Semaphore::new(16));
            let mut work = tokio::task::JoinSet::new();
            while done(&acked) < GROUPS * PER_GROUP && Instant::now() < end {
                let free = permits.available_permits().max(1);
                for d in q.receive(free, Duration::from_secs(30)).await.unwrap() {
                    let permit = permits.clone().acquire_owned().await.unwrap();
                    let parsed = body(&d);
                    let (g, i) = parsed.trim_start_matches('g').split_once(':').unwrap();
                    let (g, i): (usize, usize) = (g.parse().unwrap(), i.parse().unwrap());
                    {
                        let acked = acked.lock().unwrap();
                        let missing: Vec<usize> = (0..i).filter(|j| !acked[g].contains(j)).collect();
                        assert!(missing.is_empty(), "g{g}:{i} handed out before g{g}:{missing:?} were acked");
                    }
                    {
                        let mut out = out.lock().await;
                        if let Some((holder, held)) = &out[g] {
                            assert!(holder.extend(held, Duration::from_secs(30)).await.is_err(),
                                "g{g}:{i} handed out while {} of its group is still live", body(held));
                            counts[1].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        out[g] = Some((q.clone(), d.clone()));
                    }
                    let (q, acked, out, counts) = (q.clone(), acked.clone(), out.clone(), counts.clone());
                    work.spawn(async move {
                        // The second consumer joins while the LONG messages are in hand, and
                        // the rebalance (seconds) ends before they are done.
                        let ms = if i == LONG { 6_000 } else { 20 };
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        {
                            let mut out = out.lock().await;
                            if out[g].as_ref().is_some_and(|(_, held)| held.id == d.id) {
                                out[g] = None;
                            }
                        }
                        match q.ack(&d).await {
                            Ok(()) => {
                                acked.lock().unwrap()[g].insert(i);
                            }
                            // The partition moved: its new owner delivers it again.
                            Err(_) => {
                                counts[0].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        drop(permit);
                    });
                }
                while let Some(r) = work.try_join_next() {
                    r.unwrap();
                }
            }
            while let Some(r) = work.join_next().await {
                r.unwrap();
            }
        })
    };
    let first = worker(Arc::new(KafkaQueue::connect(cfg.clone()).await.unwrap()));
    // Add the second consumer once the first holds every group's LONG message.
    let start = Instant::now();
    while done(&acked) < GROUPS * LONG {
        assert!(start.elapsed() < Duration::from_secs(60), "the first consumer never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = worker(Arc::new(KafkaQueue::connect(cfg).await.unwrap()));
    first.await.unwrap();
    second.await.unwrap();
    for (g, done) in acked.lock().unwrap().iter().enumerate() {
        assert_eq!(done.len(), PER_GROUP, "group g{g} finished: {done:?}");
    }
    let [lost, taken_over] = [0, 1].map(|i| counts[i].load(std::sync::atomic::Ordering::SeqCst));
    println!("rebalance: {lost} acks refused after a partition moved, {taken_over} messages handed out over a dead lease");
    assert!(lost + taken_over > 0, "no rebalance happened while messages were in hand");
}
