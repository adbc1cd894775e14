//! The async invocation queue: an outside seam with two backends, [`embedded::EmbeddedQueue`]
//! (a table in the metadata SQLite database) and [`kafka::KafkaQueue`] (a topic and a consumer
//! group on any Kafka-protocol broker).
//!
//! Delivery is at-least-once with leases: a received message is invisible to other receivers
//! until it is acked (done), put back with [`Queue::retry_after`], or its lease runs out, after
//! which it is delivered again with `deliveries` counting up (Kafka: the consumer group's
//! session is the lease, and an uncommitted offset is read again). Consumers must therefore be
//! idempotent; the async dispatcher gets that from the task record's guarded transitions.
//!
//! The `key` partitions the queue so one busy function cannot starve the others: a receive
//! takes at most a fair share of the batch from each key.
//!
//! **Ordering groups.** A message may belong to a `group`. Within a group the queue hands out
//! one message at a time, in enqueue order: the group's oldest unacked message (its head) is
//! the only one that can be received, and the next becomes receivable only once the head is
//! acked. `retry_after` and an expired lease keep the head where it is (it comes back, the
//! others keep waiting behind it). Each backend keeps this across receivers, restarts and
//! re-delivery: the embedded queue in its table, Kafka by putting a group in one partition and
//! keeping the group's order in the partition's owner (see each module). Messages without a
//! group are independent, as before.

pub mod embedded;
pub mod kafka;
pub mod offsets;

use std::time::Duration;

pub use embedded::EmbeddedQueue;

/// What is enqueued: `key` partitions the queue (the function name), `body` is opaque bytes.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub key: String,
    pub body: Vec<u8>,
    /// The ordering group, if any (see the module doc).
    pub group: Option<String>,
}

impl QueueMessage {
    /// A message of no ordering group.
    pub fn new(key: impl Into<String>, body: Vec<u8>) -> Self {
        Self { key: key.into(), body, group: None }
    }
}

/// A leased message: invisible to other receivers until acked, retried, released, or until its
/// lease expires (then redelivered).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Opaque and backend-specific; names this lease, not just the message.
    pub id: String,
    pub key: String,
    pub body: Vec<u8>,
    /// 1 on first delivery.
    pub deliveries: u32,
    /// Epoch ms when the message was enqueued.
    pub enqueued_ms: i64,
    /// The message's ordering group, if any.
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The lease expired and the message went to another receiver (or was acked meanwhile):
    /// drop the work's outcome, the other receiver owns it now.
    #[error("message {0} is no longer leased by this receiver")]
    LeaseLost(String),
    /// The embedded queue lives in the SQLite metadata database and has no other engine.
    #[error("the embedded queue needs the SQLite metadata database, not {0}: use dispatcher.queue = \"kafka\"")]
    NeedsSqlite(&'static str),
}

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Durable when it returns.
    async fn enqueue(&self, msg: QueueMessage) -> Result<(), QueueError>;
    /// Up to `max` visible messages, leased for `lease`; fair across keys (at most
    /// ceil(max / number of keys with visible messages), min 1, per key per call, oldest first
    /// within a key).
    async fn receive(&self, max: usize, lease: Duration) -> Result<Vec<Delivery>, QueueError>;
    /// Done: remove the message (and let the next message of its group be received).
    async fn ack(&self, d: &Delivery) -> Result<(), QueueError>;
    /// Put it back, visible again after `delay` (`deliveries` keeps counting). A zero delay
    /// releases it at once. A group's head stays its head (the rest of the group waits).
    async fn retry_after(&self, d: &Delivery, delay: Duration) -> Result<(), QueueError>;
    /// Still working: the lease now ends `lease` from now.
    async fn extend(&self, d: &Delivery, lease: Duration) -> Result<(), QueueError>;
    /// Messages not yet acked (visible, leased or delayed).
    async fn depth(&self) -> Result<u64, QueueError>;
    /// When the oldest unfinished message was first enqueued (epoch ms), if the backend can say
    /// cheaply; the queue's age is now minus this. None: empty, or not known (Kafka).
    async fn oldest_enqueued_ms(&self) -> Result<Option<i64>, QueueError> {
        Ok(None)
    }
}

/// Epoch milliseconds from the system clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
