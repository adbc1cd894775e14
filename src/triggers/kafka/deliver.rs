//! One batch, from its first attempt to its outcome: invoked (sync) or submitted as an async
//! invocation, tried again by the retry strategy, then after the last retry dead-lettered,
//! dropped or retried on (blocked), by `errorsTolerance`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::retry::RetryPolicy;
use crate::api::AppState;
use crate::api::qualifier::{Pick, resolve};
use crate::dispatcher::{self, DispatchError, Origin};
use crate::invoker::{self, Kind};
use crate::model::trigger::kafka::ErrorsTolerance;
use crate::store::StoreError;

/// How the function gets a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// InvokeFunction's path: the batch is settled when the function returned without error.
    Sync,
    /// An async invocation (`asyncInvocationType: true`): settled once the invocation is
    /// accepted (queued and recorded); the async config's retries then apply to it.
    Async,
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Past the last retry under `errorsTolerance: ALL`: its messages are on the dead-letter
    /// topic.
    DeadLettered,
    /// Past the last retry under `ALL` without a dead-letter queue.
    Dropped,
    /// Not settled: the engine stopped (shutdown, lost leadership, trigger changed) while it
    /// waited for a retry. Its offsets stay uncommitted: it is read again.
    Abandoned,
}

impl Outcome {
    pub fn settled(self) -> bool {
        self != Outcome::Abandoned
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Dropped => "dropped",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// From a batch's task to the trigger's runner.
#[derive(Debug)]
pub enum Report {
    /// Past its last retry under `errorsTolerance: NONE`: the stream blocks (no new batch
    /// starts) until it succeeds.
    Blocked(u64),
    Done(u64, Outcome),
}

/// Why an attempt failed.
enum Failure {
    /// The function's (or its config's): uses up a retry.
    Function(String),
    /// The platform's (no slot, queue or database down, invocation disabled): tried again
    /// after a short wait, without using up a retry.
    Platform(String),
}

/// Where dead letters go: a topic on the trigger's brokers.
pub struct DeadLetters {
    pub topic: String,
    pub brokers: String,
    producer: OnceLock<FutureProducer>,
}

impl DeadLetters {
    pub fn new(topic: String, brokers: String) -> Self {
        Self { topic, brokers, producer: OnceLock::new() }
    }
}

/// What every batch of one trigger shares.
pub struct Delivery {
    pub st: AppState,
    pub function: String,
    pub trigger: String,
    pub trigger_id: String,
    pub qualifier: String,
    pub source_topic: String,
    pub mode: Mode,
    pub policy: RetryPolicy,
    pub tolerance: ErrorsTolerance,
    pub dead_letters: Option<DeadLetters>,
    /// The payload limit of `mode` (a batch over it is a single message too large to deliver).
    pub max_bytes: usize,
}

/// At most this much of a failed function's answer goes into the log and the dead letters.
const ERROR_EXCERPT: usize = 512;

fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(ERROR_EXCERPT)]).into_owned();
    if b.len() > ERROR_EXCERPT { format!("{s}…") } else { s }
}

/// The async task id of a batch: the same for the same messages of the same trigger, so a
/// batch submitted again after a crash (before its offsets were committed) is refused as a
/// duplicate instead of running twice. Task ids are at most 128 characters: a long trigger
/// name is cut.
pub fn task_id(trigger: &str, trigger_id: &str, batch: &Batch) -> String {
    let mut h = sha2::Sha256::new();
    h.update(trigger_id.as_bytes());
    for r in &batch.records {
        h.update(r.partition.to_be_bytes());
        h.update(r.offset.to_be_bytes());
    }
    let hash = hex::encode(&h.finalize()[..8]);
    // Trigger names are ASCII (letters, digits, '-', '_'): any byte index is a boundary.
    let keep = trigger.len().min(128 - "kafka-".len() - 1 - hash.len());
    format!("kafka-{}-{hash}", &trigger[..keep])
}

impl Delivery {
    /// Deliver `batch` (the runner's batch number `id`) until it is settled or `cancel`; report
    /// to the runner.
    pub async fn run(self: Arc<Self>, id: u64, batch: Batch, tx: mpsc::Sender<Report>, cancel: CancellationToken) {
        let outcome = self.deliver(id, &batch, &tx, &cancel).await;
        // The runner outlives its batches' tasks; a send fails only if it is gone, and then
        // nobody is left to commit anything.
        let _ = tx.send(Report::Done(id, outcome)).await;
    }

    async fn deliver(&self, id: u64, batch: &Batch, tx: &mpsc::Sender<Report>, cancel: &CancellationToken) -> Outcome {
        let payload = Bytes::from(batch.payload());
        // One request id for every attempt of the batch, as an async task keeps its own.
        let request_id = crate::model::new_request_id();
        let first = Instant::now();
        let (mut retries, mut blocked) = (0u32, false);
        loop {
            let result = if payload.len() > self.max_bytes {
                Err(Failure::Function(format!(
                    "a message's event of {} bytes is over the {} byte payload limit of {} delivery",
                    payload.len() - 2,
                    self.max_bytes,
                    if self.mode == Mode::Sync { "sync" } else { "async" }
                )))
            } else {
                match self.mode {
                    Mode::Sync => self.invoke(&payload, &request_id).await,
                    Mode::Async => self.submit(batch, &payload, &request_id).await,
                }
            };
            let delay = match result {
                Ok(()) => return Outcome::Succeeded,
                Err(Failure::Platform(e)) => {
                    tracing::info!(function = %self.function, trigger = %self.trigger, %request_id, "kafka trigger: batch not delivered: {e}; trying again");
                    self.count_retry("platform");
                    self.policy.platform_delay()
                }
                Err(Failure::Function(e)) if self.policy.may_retry(retries + 1, first.elapsed()) => {
                    retries += 1;
                    tracing::info!(function = %self.function, trigger = %self.trigger, %request_id, retry = retries,
                        messages = batch.records.len(), "kafka trigger: batch failed: {e}; retrying");
                    self.count_retry("function_error");
                    self.policy.delay(retries)
                }
                Err(Failure::Function(e)) => match (self.tolerance, &self.dead_letters) {
                    (ErrorsTolerance::All, Some(dlq)) => {
                        tracing::warn!(function = %self.function, trigger = %self.trigger, %request_id, retries, topic = %dlq.topic,
                            messages = batch.records.len(), "kafka trigger: batch failed after its last retry: {e}; dead-lettering it");
                        return match self.dead_letter(dlq, batch, &e, cancel).await {
                            true => Outcome::DeadLettered,
                            false => Outcome::Abandoned,
                        };
                    }
                    (ErrorsTolerance::All, None) => {
                        tracing::warn!(function = %self.function, trigger = %self.trigger, %request_id, retries,
                            messages = batch.records.len(), "kafka trigger: batch failed after its last retry: {e}; dropped (no dead-letter queue)");
                        return Outcome::Dropped;
                    }
                    (ErrorsTolerance::None, _) => {
                        if !blocked {
                            blocked = true;
                            tracing::warn!(function = %self.function, trigger = %self.trigger, %request_id, retries,
                                "kafka trigger: batch failed after its last retry: {e}; the stream is blocked until it succeeds");
                            let _ = tx.send(Report::Blocked(id)).await;
                        } else {
                            tracing::info!(function = %self.function, trigger = %self.trigger, %request_id, "kafka trigger: blocked batch failed again: {e}");
                        }
                        self.count_retry("blocked");
                        self.policy.blocked_delay()
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Outcome::Abandoned,
            }
        }
    }

    fn count_retry(&self, cause: &str) {
        self.st.metrics.kafka_trigger_retries.with_label_values(&[&self.function, &self.trigger, cause]).inc();
    }

    /// The trigger's qualifier resolved now (an alias picks per attempt), as InvokeFunction
    /// resolves it.
    async fn resolve(&self) -> Result<crate::api::qualifier::Resolved, Failure> {
        let resolved = match resolve(&self.st, &self.function, Some(&self.qualifier), Pick::Weighted).await {
            Ok(r) => r,
            Err(e) if e.status.is_server_error() => return Err(Failure::Platform(e.message)),
            Err(e) => return Err(Failure::Function(format!("{}: {}", e.code, e.message))),
        };
        if resolved.f.controls.invocation_disabled {
            return Err(Failure::Platform("the function's invocation is disabled".into()));
        }
        Ok(resolved)
    }

    async fn invoke(&self, payload: &Bytes, request_id: &str) -> Result<(), Failure> {
        let resolved = self.resolve().await?;
        let call = invoker::Call {
            f: &resolved.f,
            qualifier: &resolved.qualifier,
            request_id,
            kind: Kind::Sync,
            body: payload.clone(),
            headers: HeaderMap::new(),
            want_logs: false,
        };
        match invoker::invoke(&self.st.rm, call).await.result {
            Ok(r) if !r.function_error => Ok(()),
            Ok(r) => Err(Failure::Function(format!("the function returned an error: {}", excerpt(&r.body)))),
            Err(e) if e.is_platform() => Err(Failure::Platform(e.to_string())),
            Err(e) => Err(Failure::Function(e.to_string())),
        }
    }

    async fn submit(&self, batch: &Batch, payload: &[u8], request_id: &str) -> Result<(), Failure> {
        let resolved = self.resolve().await?;
        let id = task_id(&self.trigger, &self.trigger_id, batch);
        let st = &self.st;
        match dispatcher::submit(&st.store, st.queue.as_ref(), &self.function, &resolved.qualifier, &id, request_id, payload, Origin::Invoke).await
        {
            // Submitted before (a batch read again after a crash): not again.
            Ok(()) | Err(DispatchError::Store(StoreError::AlreadyExists)) => Ok(()),
            Err(e) => Err(Failure::Platform(e.to_string())),
        }
    }

    /// Produce every message of the batch, raw (its own key, value, headers and timestamp),
    /// to the dead-letter topic, with headers saying where it came from and why. Tried until
    /// every send is acknowledged (`acks=all`) or `cancel`; false if cancelled. A retry may
    /// produce some messages twice.
    async fn dead_letter(&self, dlq: &DeadLetters, batch: &Batch, error: &str, cancel: &CancellationToken) -> bool {
        let error = &error[..error.floor_char_boundary(ERROR_EXCERPT)];
        loop {
            match self.produce_dead_letters(dlq, batch, error).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(function = %self.function, trigger = %self.trigger, topic = %dlq.topic, "kafka trigger: dead-lettering: {e}; trying again");
                    self.count_retry("dead_letter");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.policy.platform_delay().max(Duration::from_millis(100))) => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    async fn produce_dead_letters(&self, dlq: &DeadLetters, batch: &Batch, error: &str) -> Result<(), String> {
        let producer = match dlq.producer.get() {
            Some(p) => p,
            None => {
                let cfg = crate::config::KafkaConfig { brokers: dlq.brokers.clone(), ..self.st.cfg.kafka.clone() };
                let p = crate::queue::kafka::producer(&cfg).map_err(|e| e.to_string())?;
                dlq.producer.get_or_init(|| p)
            }
        };
        let trigger = format!("{}/{}", self.function, self.trigger);
        let sends = batch.records.iter().map(|r| {
            let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
            let mut h = OwnedHeaders::new_with_capacity(r.headers.len() + 5);
            for (k, v) in &r.headers {
                h = h.insert(Header { key: k, value: v.as_deref() });
            }
            let h = h
                .insert(Header { key: "nubis-source-topic", value: Some(&self.source_topic) })
                .insert(Header { key: "nubis-source-partition", value: Some(&partition) })
                .insert(Header { key: "nubis-source-offset", value: Some(&offset) })
                .insert(Header { key: "nubis-trigger", value: Some(&trigger) })
                .insert(Header { key: "nubis-error", value: Some(error) });
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq.topic).headers(h);
            if let Some(k) = &r.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v.as_slice());
            }
            if let Some(ts) = r.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            producer.send(rec, Duration::from_secs(10))
        });
        for result in futures_util::future::join_all(sends).await {
            result.map_err(|(e, _)| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trigger::kafka::EventSchema;
    use crate::triggers::kafka::batch::{Record, Source};

    fn batch(offsets: &[i64]) -> Batch {
        let src = Source::new("t", None, "1", EventSchema::RawData);
        let records: Vec<Record> = offsets.iter().map(|&o| Record::new(&src, 0, o, 1, None, Some(b"v"), vec![], None)).collect();
        Batch { group: None, records, bytes: 0 }
    }

    #[test]
    fn task_ids_name_the_batchs_messages() {
        let id = task_id("logs", "tid", &batch(&[1, 2, 3]));
        assert!(id.starts_with("kafka-logs-") && id.len() == "kafka-logs-".len() + 16, "{id}");
        assert_eq!(id, task_id("logs", "tid", &batch(&[1, 2, 3])));
        // Other messages (a batch cut differently after a restart), or another trigger with the
        // same name: another task.
        assert_ne!(id, task_id("logs", "tid", &batch(&[1, 2])));
        assert_ne!(id, task_id("logs", "tid2", &batch(&[1, 2, 3])));
        let long = task_id(&"t".repeat(128), "tid", &batch(&[1]));
        assert_eq!(long.len(), 128);
        assert!(crate::model::async_task::is_valid_task_id(&long), "{long}");
    }
}
