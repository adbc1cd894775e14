//! Kafka backend of the async queue (rdkafka), for clusters: any Kafka-protocol broker.
//!
//! - `enqueue` produces to one topic keyed by function name, so a function's events share a
//!   partition and different functions spread over partitions (`acks=all`; returns once the
//!   broker has the message).
//! - The dispatchers of a cluster form one consumer group. The consumer is created on the
//!   first `receive`, so an API-only process never joins the group (it would be handed
//!   partitions it never reads).
//! - Offsets are committed by hand, only after `ack`, and only up to the lowest offset of the
//!   partition still in work: a dispatcher that dies (or loses a partition in a rebalance)
//!   leaves every unfinished message to be delivered again.
//! - Kafka cannot hide one message for a while, so `retry_after` produces a copy carrying a
//!   `not-before` time and a delivery count, then acks the original. A copy read before its
//!   time waits in memory (its offset stays uncommitted) until it is due.
//! - Leases are the group's session: `extend` has nothing to do.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::OnceCell;

use super::offsets::PartitionOffsets;
use super::{Delivery, Queue, QueueError, QueueMessage, now_ms};
use crate::config::KafkaConfig;

const NOT_BEFORE: &str = "nubis-not-before";
const DELIVERIES: &str = "nubis-deliveries";
const ENQUEUED: &str = "nubis-enqueued-ms";

pub struct KafkaQueue {
    cfg: KafkaConfig,
    producer: FutureProducer,
    consumer: OnceCell<StreamConsumer>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per partition: offsets received and not yet acked, and the commit point.
    offsets: BTreeMap<i32, PartitionOffsets>,
    /// Copies read before their time: (due ms, delivery).
    delayed: Vec<(i64, Delivery)>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// `partition:offset`
fn parse_id(id: &str) -> Result<(i32, i64), QueueError> {
    let (p, o) = id.split_once(':').ok_or_else(|| QueueError::LeaseLost(id.to_string()))?;
    Ok((p.parse().map_err(|_| QueueError::LeaseLost(id.to_string()))?, o.parse().map_err(|_| QueueError::LeaseLost(id.to_string()))?))
}

fn header_i64(h: Option<&rdkafka::message::BorrowedHeaders>, name: &str) -> Option<i64> {
    h?.iter().find(|x| x.key == name).and_then(|x| std::str::from_utf8(x.value?).ok()?.parse().ok())
}

/// A producer that waits for every in-sync replica (`acks=all`): a send that returns is durable.
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, QueueError> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(unavailable)
}

/// Publish one record to any topic (destinations), waiting for the broker's acknowledgement.
pub async fn publish(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(), QueueError> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| unavailable(e))?;
    Ok(())
}

impl KafkaQueue {
    /// Connect the producer and make sure the topic exists (created with `partitions`).
    pub async fn connect(cfg: KafkaConfig) -> Result<Self, QueueError> {
        let producer = producer(&cfg)?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &cfg.brokers).create().map_err(unavailable)?;
        let topic = NewTopic::new(&cfg.topic, cfg.partitions, TopicReplication::Fixed(cfg.replication));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics([&topic], &opts).await.map_err(unavailable)?.pop() {
            Some(Ok(_)) | None => {}
            Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => {}
            Some(Err((t, code))) => return Err(unavailable(format!("creating topic {t}: {code}"))),
        }
        Ok(Self { cfg, producer, consumer: OnceCell::new(), state: Mutex::new(State::default()) })
    }

    async fn consumer(&self) -> Result<&StreamConsumer, QueueError> {
        self.consumer
            .get_or_try_init(|| async {
                let c: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &self.cfg.brokers)
                    .set("group.id", &self.cfg.group_id)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", self.cfg.session_timeout_ms.to_string())
                    .create()
                    .map_err(unavailable)?;
                c.subscribe(&[&self.cfg.topic]).map_err(unavailable)?;
                Ok(c)
            })
            .await
    }

    pub fn destination_producer(&self) -> FutureProducer {
        self.producer.clone()
    }

    async fn produce(&self, key: &str, body: &[u8], headers: OwnedHeaders) -> Result<(), QueueError> {
        let record = FutureRecord::to(&self.cfg.topic).key(key).payload(body).headers(headers);
        self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| unavailable(e))?;
        Ok(())
    }

    /// After an ack: commit the partition up to its lowest offset still in work.
    fn commit_point(&self, partition: i32) -> Option<i64> {
        self.state.lock().expect("kafka state lock").offsets.get_mut(&partition)?.commit_point()
    }
}

#[async_trait::async_trait]
impl Queue for KafkaQueue {
    async fn enqueue(&self, msg: QueueMessage) -> Result<(), QueueError> {
        let now = now_ms().to_string();
        let h = OwnedHeaders::new().insert(Header { key: ENQUEUED, value: Some(now.as_str()) });
        self.produce(&msg.key, &msg.body, h).await
    }

    async fn receive(&self, max: usize, _lease: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        {
            let mut st = self.state.lock().expect("kafka state lock");
            let now = now_ms();
            let mut i = 0;
            while i < st.delayed.len() && out.len() < max {
                if st.delayed[i].0 <= now { out.push(st.delayed.swap_remove(i).1) } else { i += 1 }
            }
        }
        let consumer = self.consumer().await?;
        // Wait a little for the first message, then take what is already there.
        let mut wait = Duration::from_millis(50);
        while out.len() < max {
            let m = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return if out.is_empty() { Err(unavailable(e)) } else { Ok(out) },
                Ok(Ok(m)) => m,
            };
            wait = Duration::from_millis(1);
            let headers = m.headers();
            let d = Delivery {
                id: format!("{}:{}", m.partition(), m.offset()),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                body: m.payload().unwrap_or_default().to_vec(),
                deliveries: header_i64(headers, DELIVERIES).unwrap_or(1) as u32,
                enqueued_ms: header_i64(headers, ENQUEUED).unwrap_or_else(now_ms),
            };
            let due = header_i64(headers, NOT_BEFORE).unwrap_or(0);
            let mut st = self.state.lock().expect("kafka state lock");
            st.offsets.entry(m.partition()).or_default().received(m.offset());
            if due > now_ms() {
                st.delayed.push((due, d));
            } else {
                out.push(d);
            }
        }
        Ok(out)
    }

    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        let (partition, offset) = parse_id(&d.id)?;
        {
            let mut st = self.state.lock().expect("kafka state lock");
            let known = st.offsets.get_mut(&partition).is_some_and(|p| p.settled(offset));
            if !known {
                return Err(QueueError::LeaseLost(d.id.clone()));
            }
        }
        if let Some(next) = self.commit_point(partition) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.cfg.topic, partition, Offset::Offset(next)).map_err(unavailable)?;
            // Async: a lost commit only means a re-delivery, which the task history records.
            self.consumer().await?.commit(&tpl, CommitMode::Async).map_err(unavailable)?;
        }
        Ok(())
    }

    async fn retry_after(&self, d: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let due = (now_ms() + delay.as_millis() as i64).to_string();
        let deliveries = (d.deliveries + 1).to_string();
        let enqueued = d.enqueued_ms.to_string();
        let h = OwnedHeaders::new()
            .insert(Header { key: NOT_BEFORE, value: Some(due.as_str()) })
            .insert(Header { key: DELIVERIES, value: Some(deliveries.as_str()) })
            .insert(Header { key: ENQUEUED, value: Some(enqueued.as_str()) });
        // The copy is durable before the original is let go: never neither.
        self.produce(&d.key, &d.body, h).await?;
        self.ack(d).await
    }

    async fn extend(&self, _d: &Delivery, _lease: Duration) -> Result<(), QueueError> {
        Ok(())
    }

    /// Approximate (for tests and metrics): messages past the committed offsets, so a copy made
    /// by `retry_after` counts until its original's offset is committed. Blocking metadata
    /// calls: not for the hot path.
    async fn depth(&self) -> Result<u64, QueueError> {
        let consumer = self.consumer().await?;
        let md = consumer.fetch_metadata(Some(&self.cfg.topic), Duration::from_secs(5)).map_err(unavailable)?;
        let parts: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(&self.cfg.topic, *p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).map_err(unavailable)?;
        let mut depth = 0u64;
        for p in parts {
            let (_, high) = consumer.fetch_watermarks(&self.cfg.topic, p, Duration::from_secs(5)).map_err(unavailable)?;
            let done = committed
                .find_partition(&self.cfg.topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            depth += (high - done).max(0) as u64;
        }
        Ok(depth)
    }
}
