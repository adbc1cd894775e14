//! Kafka for tests, shared by tests/api and tests/cluster: the broker of
//! NUBIS_TEST_KAFKA_BROKERS, topics, producing, and a consumer group's committed offsets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("NUBIS_TEST_KAFKA_BROKERS")
        .expect("NUBIS_TEST_KAFKA_BROKERS is not set: start a broker with `bash scripts/test-services.sh start kafka` and eval its env")
}

pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = admin.create_topics([&t], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))).await.unwrap();
    assert!(r[0].is_ok(), "creating {topic}: {r:?}");
}

pub fn producer() -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers()).set("acks", "all").set("linger.ms", "5").create().unwrap()
}

/// Where each partition of a topic ends, as the producer's acknowledgements said (the broker's
/// own high watermarks are not trusted: the test broker reports the start of the last record
/// batch of a partition).
pub type Ends = BTreeMap<i32, i64>;

/// Produce `(key, value)`s to `topic`, in order (keyed messages: a key's messages share a
/// partition, in order); `ends` learns where each partition now ends.
pub async fn produce_into(p: &FutureProducer, topic: &str, msgs: &[(String, String)], ends: &mut Ends) {
    let sends: Vec<_> = msgs
        .iter()
        .map(|(k, v)| p.send(FutureRecord::to(topic).key(k.as_str()).payload(v.as_str()), Duration::from_secs(10)))
        .collect();
    for r in futures_util::future::join_all(sends).await {
        let d = r.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        let end = ends.entry(d.partition).or_default();
        *end = (*end).max(d.offset + 1);
    }
}

/// [`produce_into`] a fresh [`Ends`].
pub async fn produce(p: &FutureProducer, topic: &str, msgs: &[(String, String)]) -> Ends {
    let mut ends = Ends::new();
    produce_into(p, topic, msgs, &mut ends).await;
    ends
}

/// The offsets `group` committed on `topic`, by partition (-1: none).
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let (group, topic) = (group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", &group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
        (0..partitions)
            .map(|p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Wait until `group` has committed every partition of `topic` to its end (an empty partition
/// has nothing to commit).
pub async fn all_committed(group: &str, topic: &str, partitions: i32, ends: &Ends) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: Vec<i64> = (0..partitions).map(|p| ends.get(&p).copied().unwrap_or(0)).collect();
    loop {
        let c = committed(group, topic, partitions).await;
        if c.iter().zip(&want).all(|(&c, &end)| c.max(0) == end) {
            return;
        }
        let ends = &want;
        assert!(Instant::now() < deadline, "{group} on {topic}: committed {c:?}, ends {ends:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
