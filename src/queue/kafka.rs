//! Kafka backend of the async queue (rdkafka), for clusters: any Kafka-protocol broker.
//!
//! - `enqueue` produces to one topic keyed by function name, so a function's events share a
//!   partition and different functions spread over partitions (`acks=all`; returns once the
//!   broker has the message). A message of an ordering group is keyed by its group instead, so
//!   a group lives in one partition, in enqueue order (its function name travels in a header).
//! - The dispatchers of a cluster form one consumer group. The consumer is created on the
//!   first `receive`, so an API-only process never joins the group (it would be handed
//!   partitions it never reads).
//! - Offsets are committed by hand, only after `ack`, and only up to the lowest offset of the
//!   partition still in work: a dispatcher that dies (or loses a partition in a rebalance)
//!   leaves every unfinished message to be delivered again.
//! - Kafka cannot hide one message for a while, so `retry_after` produces a copy carrying a
//!   `not-before` time and a delivery count, then acks the original. A copy read before its
//!   time waits in memory (its offset stays uncommitted) until it is due.
//! - Leases are the group's session: `extend` only checks that the message is still ours.
//! - Every assignment of a partition starts a new generation, part of each delivery id. When a
//!   rebalance takes a partition away, everything this consumer held of it (copies waiting for
//!   their time, ordering groups) is forgotten and its deliveries' leases end: their acks,
//!   retries and extends answer `LeaseLost`, and the partition's new owner reads the
//!   uncommitted messages again from the committed offset.
//! - Ordering groups are kept by the owner of their partition: it hands out a group's first
//!   message and holds the ones read after it, in offset order, until the head is acked. A
//!   group's head is never produced again: `retry_after` keeps it in memory with its offset
//!   uncommitted until it is due, so a retried head cannot be overtaken by the later messages
//!   of its group, and a new owner (after a rebalance or a crash) starts from it again, since
//!   the committed offset never passes an unacked message.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::OnceCell;

use super::offsets::PartitionOffsets;
use super::{Delivery, Queue, QueueError, QueueMessage, now_ms};
use crate::config::KafkaConfig;

const NOT_BEFORE: &str = "nubis-not-before";
const DELIVERIES: &str = "nubis-deliveries";
const ENQUEUED: &str = "nubis-enqueued-ms";
/// The message's ordering group (its record key is the group too).
const GROUP: &str = "nubis-group";
/// The message's queue key when the record key is its group.
const KEY: &str = "nubis-key";

pub struct KafkaQueue {
    cfg: KafkaConfig,
    producer: FutureProducer,
    consumer: OnceCell<StreamConsumer<Rebalancer>>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The partitions assigned to this consumer.
    parts: BTreeMap<i32, Part>,
    /// Assignments so far: each assignment of a partition gets the next number.
    generations: u64,
    /// Leases handed out so far: the last part of a delivery id, so an old lease of a group's
    /// head (before a retry) cannot act on the current one.
    leases: u64,
    /// Copies of messages without a group read before their time: (due ms, delivery).
    delayed: Vec<(i64, Delivery)>,
    /// The ordering groups with a message in this consumer's hands, by (partition, group).
    groups: HashMap<(i32, String), Group>,
}

/// One assigned partition.
struct Part {
    generation: u64,
    /// Offsets received and not yet acked, and the commit point.
    offsets: PartitionOffsets,
}

/// An ordering group's messages in this consumer: the head and those read after it.
struct Group {
    /// The current lease of the group's oldest unacked message.
    head: Delivery,
    /// None: handed out. Some(ms): to be handed out (again) at that time.
    due: Option<i64>,
    /// Read after the head, in offset order.
    waiting: VecDeque<Delivery>,
}

/// A delivery id: `partition:offset:generation:lease`.
struct DeliveryId {
    partition: i32,
    offset: i64,
    generation: u64,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn parse_id(id: &str) -> Result<DeliveryId, QueueError> {
    let lost = || QueueError::LeaseLost(id.to_string());
    let mut parts = id.split(':');
    let mut next = || parts.next().ok_or_else(lost);
    let partition = next()?.parse().map_err(|_| lost())?;
    let offset = next()?.parse().map_err(|_| lost())?;
    let generation = next()?.parse().map_err(|_| lost())?;
    next()?;
    Ok(DeliveryId { partition, offset, generation })
}

fn header<'a>(h: Option<&'a rdkafka::message::BorrowedHeaders>, name: &str) -> Option<&'a str> {
    h?.iter().find(|x| x.key == name).and_then(|x| std::str::from_utf8(x.value?).ok())
}

fn header_i64(h: Option<&rdkafka::message::BorrowedHeaders>, name: &str) -> Option<i64> {
    header(h, name)?.parse().ok()
}

impl State {
    fn next_lease(&mut self) -> u64 {
        self.leases += 1;
        self.leases
    }

    fn assign(&mut self, partition: i32) {
        self.generations += 1;
        let part = Part { generation: self.generations, offsets: PartitionOffsets::default() };
        self.parts.insert(partition, part);
    }

    /// Forget a partition taken away: its leases end, its held messages go back to Kafka.
    fn revoke(&mut self, partition: i32) {
        self.parts.remove(&partition);
        self.delayed.retain(|(_, d)| parse_id(&d.id).ok().map(|id| id.partition) != Some(partition));
        self.groups.retain(|(p, _), _| *p != partition);
    }

    /// The partition of a live lease `id` (current generation, not yet acked), else LeaseLost.
    fn live(&mut self, id: &str) -> Result<(&mut Part, DeliveryId), QueueError> {
        let parsed = parse_id(id)?;
        match self.parts.get_mut(&parsed.partition) {
            Some(p) if p.generation == parsed.generation && p.offsets.in_work(parsed.offset) => Ok((p, parsed)),
            _ => Err(QueueError::LeaseLost(id.to_string())),
        }
    }

    /// The group of `d` if `d` is the current, handed-out lease of its head.
    fn group_of(&mut self, d: &Delivery, partition: i32) -> Result<&mut Group, QueueError> {
        let group = d.group.clone().unwrap_or_default();
        match self.groups.get_mut(&(partition, group)) {
            Some(g) if g.head.id == d.id && g.due.is_none() => Ok(g),
            _ => Err(QueueError::LeaseLost(d.id.clone())),
        }
    }

    /// Heads and copies that are due, up to `max`.
    fn take_due(&mut self, now: i64, max: usize, out: &mut Vec<Delivery>) {
        for g in self.groups.values_mut() {
            if out.len() >= max {
                return;
            }
            if g.due.is_some_and(|t| t <= now) {
                g.due = None;
                out.push(g.head.clone());
            }
        }
        let mut i = 0;
        while i < self.delayed.len() && out.len() < max {
            if self.delayed[i].0 <= now { out.push(self.delayed.swap_remove(i).1) } else { i += 1 }
        }
    }

    /// A message read from the topic: hand it out now, later (a copy before its time), or after
    /// the messages before it in its group.
    fn take(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<Delivery>) {
        let (partition, offset) = (m.partition(), m.offset());
        if !self.parts.contains_key(&partition) {
            // Assignments arrive through the rebalance callback before their messages; this is
            // only a fallback.
            self.assign(partition);
        }
        let lease = self.next_lease();
        let part = self.parts.get_mut(&partition).expect("assigned above");
        part.offsets.received(offset);
        let headers = m.headers();
        let group = header(headers, GROUP).map(str::to_string);
        let key = match header(headers, KEY) {
            Some(k) => k.to_string(),
            None => m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        };
        let d = Delivery {
            id: format!("{partition}:{offset}:{}:{lease}", part.generation),
            key,
            body: m.payload().unwrap_or_default().to_vec(),
            deliveries: header_i64(headers, DELIVERIES).unwrap_or(1) as u32,
            enqueued_ms: header_i64(headers, ENQUEUED).unwrap_or_else(now_ms),
            group: group.clone(),
        };
        if let Some(group) = group {
            match self.groups.get_mut(&(partition, group.clone())) {
                Some(g) => g.waiting.push_back(d),
                None => {
                    self.groups.insert((partition, group), Group { head: d.clone(), due: None, waiting: VecDeque::new() });
                    out.push(d);
                }
            }
            return;
        }
        let due = header_i64(headers, NOT_BEFORE).unwrap_or(0);
        if due > now_ms() {
            self.delayed.push((due, d));
        } else {
            out.push(d);
        }
    }

    /// After an ack: the offset to commit the partition to (its lowest offset still in work),
    /// if that moves it forward.
    fn commit_point(&mut self, partition: i32) -> Option<i64> {
        self.parts.get_mut(&partition)?.offsets.commit_point()
    }
}

/// Keeps [`State`] in step with the partitions the group gives this consumer. Runs inside the
/// consumer's poll (`recv`), never while `State`'s lock is held by the same task.
struct Rebalancer {
    state: Arc<Mutex<State>>,
}

impl ClientContext for Rebalancer {}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut st = self.state.lock().expect("kafka state lock");
        match rebalance {
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    st.revoke(e.partition());
                }
                tracing::info!(partitions = tpl.count(), "async queue: partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    st.assign(e.partition());
                }
                tracing::info!(partitions = tpl.count(), "async queue: partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!("async queue: rebalance failed: {e}"),
        }
    }
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
        Ok(Self { cfg, producer, consumer: OnceCell::new(), state: Arc::new(Mutex::new(State::default())) })
    }

    async fn consumer(&self) -> Result<&StreamConsumer<Rebalancer>, QueueError> {
        self.consumer
            .get_or_try_init(|| async {
                let c: StreamConsumer<Rebalancer> = ClientConfig::new()
                    .set("bootstrap.servers", &self.cfg.brokers)
                    .set("group.id", &self.cfg.group_id)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", self.cfg.session_timeout_ms.to_string())
                    .create_with_context(Rebalancer { state: self.state.clone() })
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("kafka state lock")
    }
}

#[async_trait::async_trait]
impl Queue for KafkaQueue {
    async fn enqueue(&self, msg: QueueMessage) -> Result<(), QueueError> {
        let now = now_ms().to_string();
        let h = OwnedHeaders::new().insert(Header { key: ENQUEUED, value: Some(now.as_str()) });
        match &msg.group {
            None => self.produce(&msg.key, &msg.body, h).await,
            // Keyed by the group: the whole group in one partition, in the order produced.
            Some(group) => {
                let h = h
                    .insert(Header { key: GROUP, value: Some(group.as_str()) })
                    .insert(Header { key: KEY, value: Some(msg.key.as_str()) });
                self.produce(group, &msg.body, h).await
            }
        }
    }

    async fn receive(&self, max: usize, _lease: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        self.lock().take_due(now_ms(), max, &mut out);
        let consumer = self.consumer().await?;
        // Wait a little for the first message (unless due ones are at hand), then take what is
        // already there.
        let mut wait = Duration::from_millis(if out.is_empty() { 50 } else { 1 });
        while out.len() < max {
            let m = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return if out.is_empty() { Err(unavailable(e)) } else { Ok(out) },
                Ok(Ok(m)) => m,
            };
            wait = Duration::from_millis(1);
            self.lock().take(&m, &mut out);
        }
        Ok(out)
    }

    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        let (partition, commit) = {
            let mut st = self.lock();
            let (_, id) = st.live(&d.id)?;
            if let Some(group) = &d.group {
                let g = st.group_of(d, id.partition)?;
                // The group's next message (if this consumer has read it) is due at once.
                match g.waiting.pop_front() {
                    Some(next) => {
                        g.head = next;
                        g.due = Some(0);
                    }
                    None => {
                        st.groups.remove(&(id.partition, group.clone()));
                    }
                }
            }
            let (part, _) = st.live(&d.id)?;
            part.offsets.settled(id.offset);
            (id.partition, st.commit_point(id.partition))
        };
        if let Some(next) = commit {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.cfg.topic, partition, Offset::Offset(next)).map_err(unavailable)?;
            // Async: a lost commit only means a re-delivery, which the task history records.
            self.consumer().await?.commit(&tpl, CommitMode::Async).map_err(unavailable)?;
        }
        Ok(())
    }

    async fn retry_after(&self, d: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let due = now_ms() + delay.as_millis() as i64;
        if d.group.is_some() {
            // Kept in memory, offset uncommitted: the head keeps its place in its group.
            let mut st = self.lock();
            let (part, id) = st.live(&d.id)?;
            let generation = part.generation;
            let lease = st.next_lease();
            let g = st.group_of(d, id.partition)?;
            g.head = Delivery {
                id: format!("{}:{}:{generation}:{lease}", id.partition, id.offset),
                deliveries: d.deliveries + 1,
                ..d.clone()
            };
            g.due = Some(due);
            return Ok(());
        }
        self.lock().live(&d.id)?;
        let due = due.to_string();
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

    /// Nothing to extend (the group session is the lease); says whether the lease still holds.
    async fn extend(&self, d: &Delivery, _lease: Duration) -> Result<(), QueueError> {
        let mut st = self.lock();
        let (_, id) = st.live(&d.id)?;
        if d.group.is_some() {
            st.group_of(d, id.partition)?;
        }
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
