//! Async dispatcher: consumes async invocations from the queue and runs them through the same
//! invoke path as sync calls ([`crate::invoker`]), with retries, event expiry, destinations
//! and a task record of every step.
//!
//! Delivery guarantee (at least once): an event is accepted (202) only after its message is
//! durably queued and its task row written. A message is acked only after the task's final
//! state is recorded (and its destination delivered). A dispatcher that dies, or a lease that
//! runs out, returns the message to the queue; the next delivery records a `re-delivered`
//! event on the task, so every duplicate execution is visible in its history.
//!
//! Ordering keys: an event submitted with an ordering key joins the queue's ordering group of
//! (function, key), so the queue hands out that key's events one at a time, in accept order,
//! the next only after the previous one's message is acked, i.e. after its task is final.
//! Here, a keyed event whose task is found `Running` or `Stopping` (an earlier attempt never
//! recorded its outcome: its dispatcher died, or lost the message to a rebalance while the
//! attempt may still run) waits until that attempt's deadline before it runs again, and a keyed
//! attempt starts only through a guarded transition that one contender alone can win. See
//! docs/architecture.md, "Ordering keys", for the guarantee and its limits.

pub mod destinations;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Instrument;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DispatcherConfig;
use crate::invoker::{self, InvokeFailure};
use crate::model::async_task::{AsyncConfig, AsyncTask, OrderingKey, TaskStatus};
use crate::model::FunctionRecord;
use crate::model::version::Qualifier;
use crate::queue::{Delivery, Queue, QueueError, QueueMessage};
use crate::scheduler::ResourceManager;
use crate::store::{Resolution, Store, StoreError, TaskChange};

/// Event detail prefix of a run that repeats one whose outcome was lost.
pub const REDELIVERED: &str = "re-delivered";
/// Largest function result kept on a task (`returnPayload`).
/// How often an event of a function whose invocation is disabled is looked at again.
const DISABLED_RECHECK: Duration = Duration::from_secs(2);
const MAX_RETURN_PAYLOAD: usize = 128 << 10;
/// A message whose task row is missing this long after it was queued was orphaned by a crash
/// between queueing and recording; the dispatcher records the task itself.
const ORPHAN_AFTER_MS: i64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The queued form of one async invocation. Self-contained, so a message can rebuild its task.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncMessage {
    pub function_name: String,
    pub qualifier: String,
    pub task_id: String,
    pub request_id: String,
    /// base64
    pub payload: String,
    pub enqueued_ms: i64,
    /// Who submitted it (absent in messages from before the field: an invoke).
    #[serde(default, skip_serializing_if = "Origin::is_invoke")]
    pub origin: Origin,
    /// Events of the function with the same key run one at a time, in accept order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

/// One async invocation to accept: what [`submit_event`] queues and records.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub function: &'a str,
    /// As the caller named it (LATEST, a version id or an alias); resolved when it runs.
    pub qualifier: &'a str,
    pub task_id: &'a str,
    pub request_id: &'a str,
    pub payload: &'a [u8],
    /// The event runs after every earlier-accepted event of the function with the same key has
    /// finished, and before any later one starts (docs/architecture.md, "Ordering keys").
    pub ordering_key: Option<&'a OrderingKey>,
    pub origin: Origin,
}

/// How long a keyed event found `Running` (an earlier attempt whose outcome was never
/// recorded) waits at most between two looks at its task, while that attempt may still run.
const PREVIOUS_ATTEMPT_RECHECK: Duration = Duration::from_secs(1);
/// Beyond the function's timeout, the time an attempt may take to really end: the instance is
/// removed after a timeout, and controllers' clocks may differ a little.
const ATTEMPT_END_GRACE_MS: i64 = 5_000;

/// The queue's ordering group of a function's key. Function names have no '/', so no two
/// (function, key) pairs share a group.
pub fn ordering_group(function: &str, key: &str) -> String {
    format!("{function}/{key}")
}

/// What submitted an async invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// InvokeFunction with `x-fc-invocation-type: Async`, or a function destination.
    #[default]
    Invoke,
    /// A timer trigger's tick. FC does not invoke async destinations for timer-triggered calls
    /// (fc-triggers.md §2); retries and the event age still apply.
    Timer,
}

impl Origin {
    fn is_invoke(&self) -> bool {
        *self == Origin::Invoke
    }

    /// Whether the async config's destinations apply to events of this origin.
    pub fn has_destinations(self) -> bool {
        self == Origin::Invoke
    }
}

/// Epoch ms of task events (and of everything compared with them): [`crate::clock::now_ms`],
/// so a wall clock stepped back cannot stamp an event older than one it followed.
pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// Accept one async invocation without an ordering key; see [`submit_event`].
pub async fn submit(
    store: &Store,
    queue: &dyn Queue,
    function: &str,
    qualifier: &str,
    task_id: &str,
    request_id: &str,
    payload: &[u8],
    origin: Origin,
) -> Result<(), DispatchError> {
    let ev = NewEvent { function, qualifier, task_id, request_id, payload, ordering_key: None, origin };
    submit_event(store, queue, &ev).await
}

/// Accept one async invocation: queue the message durably, then record the task (status
/// Enqueued). Order matters: a crash between the two leaves a message without a task, which
/// the dispatcher repairs; the reverse would leave a task nobody runs. A keyed event's place
/// among its key's events is fixed when the queue takes the message, so an event accepted
/// (this returned) before another of its key was submitted runs before it.
///
/// A task id the function already has is refused with `Store(AlreadyExists)` after the
/// message was queued; that message is then a ghost (its request id is not the task's) and the
/// dispatcher drops it. So submitting one task id twice, with distinct request ids, runs it
/// once: the timer engine relies on this for its deterministic per-tick ids.
pub async fn submit_event(store: &Store, queue: &dyn Queue, ev: &NewEvent<'_>) -> Result<(), DispatchError> {
    let now = now_ms();
    let msg = AsyncMessage {
        function_name: ev.function.to_string(),
        qualifier: ev.qualifier.to_string(),
        task_id: ev.task_id.to_string(),
        request_id: ev.request_id.to_string(),
        payload: base64::engine::general_purpose::STANDARD.encode(ev.payload),
        enqueued_ms: now,
        origin: ev.origin,
        ordering_key: ev.ordering_key.map(|k| k.as_str().to_string()),
    };
    let body = serde_json::to_vec(&msg).expect("message serializes");
    let group = ev.ordering_key.map(|k| ordering_group(ev.function, k.as_str()));
    queue.enqueue(QueueMessage { group, ..QueueMessage::new(ev.function, body) }).await?;
    store.insert_task(&new_task(&msg, ev.payload.to_vec(), "accepted")).await?;
    Ok(())
}

fn new_task(msg: &AsyncMessage, payload: Vec<u8>, detail: &str) -> AsyncTask {
    AsyncTask {
        function_name: msg.function_name.clone(),
        qualifier: msg.qualifier.clone(),
        task_id: msg.task_id.clone(),
        request_id: msg.request_id.clone(),
        status: TaskStatus::Enqueued,
        payload,
        return_payload: None,
        error_message: None,
        already_retried_times: 0,
        destination_status: None,
        instance_id: None,
        created_ms: msg.enqueued_ms,
        started_ms: None,
        end_ms: None,
        events: vec![crate::model::async_task::TaskEvent {
            event_id: 1,
            status: TaskStatus::Enqueued,
            timestamp: msg.enqueued_ms,
            event_detail: detail.to_string(),
        }],
        ordering_key: msg.ordering_key.clone(),
    }
}

/// What one message came to; returned by [`Dispatcher::handle`] so tests can drive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleOutcome {
    Finished(TaskStatus),
    /// Back in the queue for a later attempt.
    Requeued,
    /// Acked without running (duplicate delivery of a finished task, ghost, bad message).
    Dropped,
    /// Left leased (store or queue unavailable); the lease will return it.
    Abandoned,
}

struct Shared {
    store: Store,
    queue: Arc<dyn Queue>,
    rm: ResourceManager,
    cfg: DispatcherConfig,
    region: String,
    account_id: String,
    http: reqwest::Client,
    /// For Kafka-topic destinations; present when the queue backend is Kafka.
    kafka: Option<rdkafka::producer::FutureProducer>,
    /// Per function: dispatches running, and a bounded queue of those waiting behind them, so one
    /// hot function cannot take every permit.
    per_function: Mutex<HashMap<String, Arc<Gate>>>,
    per_function_limit: usize,
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Shared>,
}

/// One function's share of the dispatcher: `limit` may run; as many again may wait for them
/// (a waiter is cheaper than a message sent back to the queue and read again), the rest go back.
struct Gate {
    limit: usize,
    running: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// How long a dispatch waits behind its function's running ones before it gives its message back.
const GATE_WAIT: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub fn new(
        store: Store,
        queue: Arc<dyn Queue>,
        rm: ResourceManager,
        cfg: DispatcherConfig,
        region: String,
        account_id: String,
        per_function_limit: usize,
        kafka: Option<rdkafka::producer::FutureProducer>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.destination_timeout_secs))
            .build()
            .expect("http client builds");
        Self {
            inner: Arc::new(Shared {
                store,
                queue,
                rm,
                cfg,
                region,
                account_id,
                http,
                kafka,
                per_function: Mutex::new(HashMap::new()),
                per_function_limit: per_function_limit.max(1),
            }),
        }
    }

    /// Consume until cancelled. Each message runs in its own tracked task, at most
    /// `max_in_flight` at once; on cancel, messages not yet finished go back to the queue.
    pub fn spawn(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let this = self.clone();
        let t = tracker.clone();
        tracker.spawn(async move {
            let permits = Arc::new(Semaphore::new(this.inner.cfg.max_in_flight.max(1)));
            loop {
                let first = tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                    _ = cancel.cancelled() => break,
                };
                let free = permits.available_permits() + 1;
                let batch = match this.inner.queue.receive(free.min(64), this.inner.cfg.lease()).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!("receiving from the async queue: {e}");
                        Vec::new()
                    }
                };
                if batch.is_empty() {
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::sleep(this.inner.cfg.poll_interval()) => continue,
                        _ = cancel.cancelled() => break,
                    }
                }
                let mut first = Some(first);
                for d in batch {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => permits.clone().acquire_owned().await.expect("semaphore never closed"),
                    };
                    let (me, cancel) = (this.clone(), cancel.clone());
                    t.spawn(async move {
                        me.handle(d, &cancel).await;
                        drop(permit);
                    });
                }
            }
            tracing::info!("dispatcher stopped receiving");
        });
    }

    /// Process one delivered message to its next resting point.
    pub async fn handle(&self, d: Delivery, cancel: &CancellationToken) -> HandleOutcome {
        // The same request id as the API's span for this event, so every platform log line of
        // an async invocation (dispatcher, scheduler, agent) can be found by it.
        let Ok(msg) = serde_json::from_slice::<AsyncMessage>(&d.body) else {
            tracing::error!(message = %d.id, "dropping an unreadable async message");
            return match self.inner.queue.ack(&d).await {
                Ok(()) => HandleOutcome::Dropped,
                Err(_) => HandleOutcome::Abandoned,
            };
        };
        let span = tracing::info_span!("async", request_id = %msg.request_id, task_id = %msg.task_id, function = %msg.function_name);
        // A keyed event's delivery and what became of it, by lease (Finished or Dropped: acked,
        // so the key's next event may be delivered from now on): from a debug log these two
        // lines tell whether a key's events ever overlapped, and which ack released the next.
        if let Some(group) = &d.group {
            span.in_scope(|| tracing::debug!(delivery = %d.id, group, deliveries = d.deliveries, "keyed event delivered"));
        }
        let outcome = self.try_handle(&d, &msg, cancel).instrument(span.clone()).await;
        if let Some(group) = &d.group {
            span.in_scope(|| tracing::debug!(delivery = %d.id, group, outcome = ?outcome.as_ref().ok(), "keyed event handled"));
        }
        match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(message = %d.id, "async dispatch interrupted, the message will return: {e}");
                HandleOutcome::Abandoned
            }
        }
    }

    async fn try_handle(&self, d: &Delivery, msg: &AsyncMessage, cancel: &CancellationToken) -> Result<HandleOutcome, DispatchError> {
        let s = &self.inner;
        // What the event runs: LATEST, a version, or the version its alias picks now (per
        // attempt, by the alias's weights).
        let resolved = match Qualifier::parse(Some(&msg.qualifier)) {
            Ok(q) => s.store.resolve(&msg.function_name, &q, rand::random::<f64>()).await?,
            Err(_) => Resolution::NoAlias(msg.qualifier.clone()),
        };
        let f = match resolved {
            Resolution::Found(f) => *f,
            Resolution::NoFunction => {
                // Deleted since: its tasks went with it (or are marked invalid if still there).
                let change = change(TaskStatus::Invalid, "the function no longer exists");
                s.store.transition_task(&msg.function_name, &msg.task_id, &[], &TaskChange { end_ms: Some(now_ms()), ..change }).await?;
                s.queue.ack(d).await?;
                return Ok(HandleOutcome::Dropped);
            }
            Resolution::NoVersion(_) | Resolution::NoAlias(_) => {
                // The version or alias was deleted after the event was accepted: nothing to run.
                let detail = format!("version or alias '{}' of the function no longer exists", msg.qualifier);
                let unfinished: Vec<TaskStatus> = TaskStatus::ALL.into_iter().filter(|t| !t.is_final()).collect();
                let change = TaskChange { end_ms: Some(now_ms()), ..change(TaskStatus::Invalid, &detail) };
                s.store.transition_task(&msg.function_name, &msg.task_id, &unfinished, &change).await?;
                s.queue.ack(d).await?;
                return Ok(HandleOutcome::Finished(TaskStatus::Invalid));
            }
        };
        let task = match s.store.get_task(&msg.function_name, &msg.task_id).await? {
            Some(t) if t.request_id != msg.request_id => {
                // A message whose task id was refused as a duplicate at submit time.
                s.queue.ack(d).await?;
                return Ok(HandleOutcome::Dropped);
            }
            Some(t) => t,
            None if now_ms() - msg.enqueued_ms < ORPHAN_AFTER_MS => {
                // The submitter may still be writing the task row.
                s.queue.retry_after(d, Duration::from_secs(1)).await?;
                return Ok(HandleOutcome::Requeued);
            }
            None => {
                let payload = decode(&msg.payload);
                let t = new_task(msg, payload, "recovered from the queue: the task record was missing");
                match s.store.insert_task(&t).await {
                    Ok(()) => t,
                    Err(StoreError::AlreadyExists) => match s.store.get_task(&msg.function_name, &msg.task_id).await? {
                        // Another delivery of this very message recovered it first.
                        Some(row) if row.request_id == msg.request_id => row,
                        // Another message of the task id (two submits of one id that both
                        // crashed before their row, e.g. two controllers firing one timer
                        // tick) or its late submitter wrote the row: that row's message runs.
                        _ => {
                            s.queue.ack(d).await?;
                            return Ok(HandleOutcome::Dropped);
                        }
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if task.status.is_final() {
            s.queue.ack(d).await?;
            return Ok(HandleOutcome::Dropped);
        }
        // A keyed event found Running or Stopping is a re-delivery while an earlier attempt may
        // still be running (its dispatcher lost the message, e.g. to a rebalance, and cannot be
        // told): look again until that attempt has recorded its outcome or must have ended.
        // Going on earlier could overlap it, or (Stopping) let the key's next event start.
        let keyed = msg.ordering_key.is_some();
        if keyed
            && matches!(task.status, TaskStatus::Running | TaskStatus::Stopping)
            && let Some(wait) = previous_attempt_wait(&task, f.config.timeout, now_ms())
        {
            tracing::debug!(status = %task.status, "keyed event delivered again while an earlier attempt may still run: waiting");
            s.queue.retry_after(d, wait).await?;
            return Ok(HandleOutcome::Requeued);
        }
        if task.status == TaskStatus::Stopping {
            self.finish(&task, TaskStatus::Stopped, "stopped before it ran", None, None).await?;
            s.queue.ack(d).await?;
            return Ok(HandleOutcome::Finished(TaskStatus::Stopped));
        }
        let mut cfg = s.store.get_async_config(&msg.function_name, &msg.qualifier).await?.map(|r| r.config).unwrap_or_default();
        if !msg.origin.has_destinations() {
            cfg.destination_config = None;
        }
        if now_ms() - task.created_ms > i64::from(cfg.max_async_event_age_in_seconds) * 1000 {
            return self.expire(d, &task, &cfg).await;
        }
        if f.controls.invocation_disabled {
            // Accepted before DisableFunctionInvocation: held (not failed) until the function is
            // enabled again, or its age expires it.
            s.queue.retry_after(d, DISABLED_RECHECK).await?;
            return Ok(HandleOutcome::Requeued);
        }
        let Some(_fp) = self.function_permit(&f).await else {
            // The function has as many dispatches running and waiting as it can use; make room.
            s.queue.retry_after(d, Duration::from_millis(200)).await?;
            return Ok(HandleOutcome::Requeued);
        };
        // From here a slot wait and then the function's own timeout bound the work: lease it
        // once for both.
        let work = s.rm.acquire_timeout() + Duration::from_secs(u64::from(f.config.timeout));
        s.queue.extend(d, work + s.cfg.lease()).await?;
        let started = std::time::Instant::now();
        // Shutting down cancels the wait for a slot (the message goes back at once, the task
        // keeps its state), never an event already in an instance: that one finishes within
        // the shutdown grace period.
        let acquired = tokio::select! {
            a = s.rm.acquire(&f) => a,
            _ = cancel.cancelled() => {
                s.queue.retry_after(d, Duration::ZERO).await?;
                return Ok(HandleOutcome::Requeued);
            }
        };
        // Age counts until the run starts, and waiting for the gate or a slot takes time.
        if now_ms() - task.created_ms > i64::from(cfg.max_async_event_age_in_seconds) * 1000 {
            drop(acquired);
            return self.expire(d, &task, &cfg).await;
        }
        // Label the run by the state it starts from, decided by the guarded write itself (not by
        // the snapshot read above: two live deliveries of one task may both have read Enqueued).
        // From Running it repeats a run whose outcome was never recorded (its dispatcher died, or
        // its lease ran out): a duplicate, recorded as such.
        let started_ms = task.started_ms.or(Some(now_ms()));
        let first = TaskChange {
            started_ms,
            ..change(TaskStatus::Running, &format!("attempt {}", task.already_retried_times + 1))
        };
        let waiting = [TaskStatus::Enqueued, TaskStatus::Dequeued, TaskStatus::Retrying];
        let repeat = TaskChange {
            started_ms,
            ..change(
                TaskStatus::Running,
                &format!("{REDELIVERED} (delivery {}): the previous attempt ended without a recorded outcome", d.deliveries),
            )
        };
        let (function, id) = (&task.function_name, &task.task_id);
        let recorded = if !keyed {
            s.store.transition_task(function, id, &waiting, &first).await?
                || s.store.transition_task(function, id, &[TaskStatus::Running], &repeat).await?
        } else if task.status == TaskStatus::Running {
            // Past the previous attempt's deadline. Only if nothing changed since the snapshot,
            // so of two deliveries holding the same snapshot, one alone runs.
            let repeat = TaskChange { expected_events: u32::try_from(task.events.len()).ok(), ..repeat };
            s.store.transition_task(function, id, &[TaskStatus::Running], &repeat).await?
        } else {
            s.store.transition_task(function, id, &waiting, &first).await?
        };
        if !recorded && keyed {
            // Another delivery started it, or it was stopped or finished meanwhile: decide
            // again from its state as it is now (never run beside another attempt).
            s.queue.retry_after(d, Duration::ZERO).await?;
            return Ok(HandleOutcome::Requeued);
        }
        if !recorded {
            // Stopped or finished in the meantime.
            s.queue.ack(d).await?;
            return Ok(HandleOutcome::Dropped);
        }
        let payload = Bytes::from(decode(&msg.payload));
        let call = invoker::Call {
            f: &f,
            qualifier: &msg.qualifier,
            request_id: &task.request_id,
            kind: invoker::Kind::Async,
            body: payload,
            headers: axum::http::HeaderMap::new(),
            want_logs: false,
        };
        let inv = match acquired {
            Ok(slot) => invoker::run(&s.rm, slot, call, started).await,
            Err(e) => invoker::not_run(&s.rm, &call, e, started),
        };
        match inv.result {
            Ok(r) if !r.function_error => {
                let mut out = r.body.to_vec();
                out.truncate(MAX_RETURN_PAYLOAD);
                let dest = destinations::deliver(self, &task, &cfg, destinations::Condition::Success, Some(&r.body)).await;
                // Clear an error an earlier attempt left (the store only overwrites, never unsets).
                let task = AsyncTask { error_message: Some(String::new()), ..task };
                self.finish(&task, TaskStatus::Succeeded, "succeeded", Some(out), dest).await?;
                s.queue.ack(d).await?;
                Ok(HandleOutcome::Finished(TaskStatus::Succeeded))
            }
            Ok(r) => {
                let err = String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]).into_owned();
                self.failed(d, &task, &cfg, err, Some(r.body)).await
            }
            Err(e) if e.is_platform() => {
                // Not the function's fault: try again later without using up its retries.
                let detail = format!("not run: {e}");
                s.store.transition_task(&task.function_name, &task.task_id, &[TaskStatus::Running], &change(TaskStatus::Retrying, &detail)).await?;
                s.queue.retry_after(d, s.cfg.retry_delay(1)).await?;
                Ok(HandleOutcome::Requeued)
            }
            Err(e) => self.failed(d, &task, &cfg, failure_message(&e), None).await,
        }
    }

    async fn function_permit(&self, f: &FunctionRecord) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        let s = &self.inner;
        // A reserved concurrency caps the function's calls in flight (sync ones included): events
        // past it wait here, then in the queue, instead of being refused by the scheduler.
        let mut limit = s.per_function_limit * f.config.instance_concurrency as usize;
        if let Some(reserved) = f.controls.reserved_concurrency {
            limit = limit.min((reserved as usize).max(1));
        }
        let gate = {
            let mut m = s.per_function.lock().expect("per-function lock");
            let g = m.entry(f.name.to_string()).or_insert_with(|| {
                Arc::new(Gate { limit, running: Arc::new(Semaphore::new(limit)), waiting: Default::default() })
            });
            if g.limit != limit {
                // The function's concurrency changed: a new gate (the old one drains by itself).
                *g = Arc::new(Gate { limit, running: Arc::new(Semaphore::new(limit)), waiting: Default::default() });
            }
            g.clone()
        };
        if let Ok(p) = gate.running.clone().try_acquire_owned() {
            return Some(p);
        }
        if gate.waiting.fetch_add(1, Ordering::SeqCst) >= gate.limit {
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let permit = tokio::time::timeout(GATE_WAIT, gate.running.clone().acquire_owned()).await;
        gate.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.ok()?.ok()
    }

    async fn failed(
        &self,
        d: &Delivery,
        task: &AsyncTask,
        cfg: &AsyncConfig,
        error: String,
        response: Option<Bytes>,
    ) -> Result<HandleOutcome, DispatchError> {
        let s = &self.inner;
        if task.already_retried_times < cfg.max_async_retry_attempts {
            let retried = task.already_retried_times + 1;
            let c = TaskChange {
                already_retried_times: Some(retried),
                error_message: Some(error.clone()),
                ..change(TaskStatus::Retrying, &format!("failed, retry {retried} of {}: {error}", cfg.max_async_retry_attempts))
            };
            if s.store.transition_task(&task.function_name, &task.task_id, &[TaskStatus::Running], &c).await? {
                s.queue.retry_after(d, s.cfg.retry_delay(retried)).await?;
                return Ok(HandleOutcome::Requeued);
            }
            // Stopping: fall through to a final state.
        }
        let dest = destinations::deliver(self, task, cfg, destinations::Condition::RetriesExhausted, response.as_ref()).await;
        let t = AsyncTask { error_message: Some(error.clone()), ..task.clone() };
        let status = self.finish(&t, TaskStatus::Failed, &format!("failed: {error}"), None, dest).await?;
        s.queue.ack(d).await?;
        Ok(HandleOutcome::Finished(status))
    }

    async fn expire(&self, d: &Delivery, task: &AsyncTask, cfg: &AsyncConfig) -> Result<HandleOutcome, DispatchError> {
        let dest = destinations::deliver(self, task, cfg, destinations::Condition::EventExpired, None).await;
        let detail = format!("expired: older than maxAsyncEventAgeInSeconds ({} s) before it could run", cfg.max_async_event_age_in_seconds);
        let status = self.finish(task, TaskStatus::Expired, &detail, None, dest).await?;
        self.inner.queue.ack(d).await?;
        Ok(HandleOutcome::Finished(status))
    }

    /// Record a final state. A task being stopped ends Stopped whatever the outcome.
    async fn finish(
        &self,
        task: &AsyncTask,
        status: TaskStatus,
        detail: &str,
        return_payload: Option<Vec<u8>>,
        destination_status: Option<String>,
    ) -> Result<TaskStatus, DispatchError> {
        let store = &self.inner.store;
        let c = TaskChange {
            end_ms: Some(now_ms()),
            return_payload,
            destination_status,
            error_message: task.error_message.clone(),
            ..change(status, detail)
        };
        let live = [TaskStatus::Enqueued, TaskStatus::Dequeued, TaskStatus::Running, TaskStatus::Retrying];
        let finished = |status: TaskStatus| {
            self.inner.rm.metrics().async_tasks_finished.with_label_values(&[&task.function_name, status.as_str()]).inc();
            Ok(status)
        };
        if store.transition_task(&task.function_name, &task.task_id, &live, &c).await? {
            return finished(status);
        }
        // Stopped whatever the outcome, and then without the run's return payload: a stopped
        // task shows no result, even when its run got to finish before the stop took hold.
        let stopped = TaskChange {
            status: Some(TaskStatus::Stopped),
            event_detail: format!("stopped ({detail})"),
            return_payload: None,
            ..c
        };
        if store.transition_task(&task.function_name, &task.task_id, &[TaskStatus::Stopping], &stopped).await? {
            return finished(TaskStatus::Stopped);
        }
        Ok(TaskStatus::Stopped)
    }

    pub(crate) fn shared_parts(&self) -> (&Store, &dyn Queue, &reqwest::Client, &str, &str) {
        let s = &self.inner;
        (&s.store, s.queue.as_ref(), &s.http, &s.region, &s.account_id)
    }

    pub(crate) fn kafka(&self) -> Option<&rdkafka::producer::FutureProducer> {
        self.inner.kafka.as_ref()
    }
}

/// For a keyed event whose task shows an attempt without a recorded outcome: how long to wait
/// before looking at the task again, or None once that attempt must have ended (its last
/// `Running` event + the function's timeout + [`ATTEMPT_END_GRACE_MS`]).
fn previous_attempt_wait(task: &AsyncTask, timeout_secs: u32, now_ms: i64) -> Option<Duration> {
    let started = task.events.iter().rev().find(|e| e.status == TaskStatus::Running)?.timestamp;
    let left = started + i64::from(timeout_secs) * 1000 + ATTEMPT_END_GRACE_MS - now_ms;
    (left > 0).then(|| Duration::from_millis(left as u64).min(PREVIOUS_ATTEMPT_RECHECK))
}

fn change(status: TaskStatus, detail: &str) -> TaskChange {
    TaskChange { status: Some(status), event_detail: detail.to_string(), at_ms: now_ms(), ..Default::default() }
}

fn decode(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default()
}

fn failure_message(e: &InvokeFailure) -> String {
    use crate::agent::AgentError as A;
    use crate::scheduler::AcquireError as Q;
    match e {
        InvokeFailure::Acquire(Q::Start(A::Initialization(r))) => {
            format!("initializer failed: {}", String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]))
        }
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::async_task::TaskEvent;

    fn task_with(events: &[(TaskStatus, i64)]) -> AsyncTask {
        let msg = AsyncMessage {
            function_name: "f".into(),
            qualifier: "LATEST".into(),
            task_id: "t".into(),
            request_id: "r".into(),
            payload: String::new(),
            enqueued_ms: 0,
            origin: Origin::Invoke,
            ordering_key: Some("k".into()),
        };
        let mut t = new_task(&msg, Vec::new(), "accepted");
        for (i, (status, at)) in events.iter().enumerate() {
            t.events.push(TaskEvent { event_id: i as i64 + 2, status: *status, timestamp: *at, event_detail: String::new() });
        }
        t
    }

    #[test]
    fn a_keyed_redelivery_waits_for_the_previous_attempts_deadline() {
        use TaskStatus::*;
        // Last attempt started at 10_000, timeout 3 s: it must have ended by 18_000.
        let t = task_with(&[(Running, 1_000), (Retrying, 2_000), (Running, 10_000), (Stopping, 11_000)]);
        assert_eq!(previous_attempt_wait(&t, 3, 10_500), Some(PREVIOUS_ATTEMPT_RECHECK), "looks again after a while");
        assert_eq!(previous_attempt_wait(&t, 3, 17_700), Some(Duration::from_millis(300)));
        assert_eq!(previous_attempt_wait(&t, 3, 18_000), None);
        assert_eq!(previous_attempt_wait(&task_with(&[]), 3, 0), None, "never ran");
    }

    #[test]
    fn ordering_groups_are_per_function_and_key() {
        assert_eq!(ordering_group("f", "a/b"), "f/a/b");
        // Old messages (before ordering keys) still read.
        let old = r#"{"functionName":"f","qualifier":"LATEST","taskId":"t","requestId":"r","payload":"","enqueuedMs":1}"#;
        assert_eq!(serde_json::from_str::<AsyncMessage>(old).unwrap().ordering_key, None);
    }
}
