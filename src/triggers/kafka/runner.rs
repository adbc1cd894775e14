//! One Kafka trigger at work: its consumers, its batches and its commits, all owned by one task.
//!
//! - `maximumTasks` consumers (at most the topic's partitions) join the trigger's consumer
//!   group (`ConsumerGroup`) and subscribe to its topic; the group spreads the partitions over
//!   them (and over the consumers of an earlier leader that has not left yet).
//! - Messages read go through the [`Batcher`] into the [`Scheduler`]; a batch that may start
//!   runs in a task of its own ([`Delivery::run`]), at most `deliveryOption.concurrency` at
//!   once, and reports its outcome back here.
//! - A partition's offset is committed only up to its lowest message not yet settled
//!   ([`PartitionOffsets`], shared with the async queue): a batch that succeeded, or was
//!   dead-lettered or dropped under `errorsTolerance: ALL`. Commits are asynchronous and go out
//!   at most every 50 ms (what settles meanwhile goes together); a lost one only means the
//!   messages after it are read again. Whatever was not settled when the
//!   process died is read again by the group's next owner of the partition.
//! - A partition taken away by a rebalance is forgotten: its messages waiting in batches are
//!   dropped (its new owner reads them from the committed offset), and the outcomes of its
//!   batches in flight are not committed here.
//! - Reading pauses while too much is read and not yet settled
//!   (`kafka_triggers.max_unsettled_messages` and `_bytes`), and resumes below three quarters of
//!   that; the consumers keep polling, so they stay in the group.
//! - `errorsTolerance: NONE`: once a batch is past its last retry, no new batch starts until it
//!   succeeds (the stream is blocked; batches already in flight finish).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::{Batcher, Group, Record, Source, Windows};
use super::deliver::{Delivery, Outcome, Report};
use super::order::Scheduler;
use crate::model::trigger::kafka::{KafkaTriggerConfig, OffsetReset};
use crate::queue::offsets::PartitionOffsets;

/// How often the consumers report their statistics (librdkafka's `statistics.interval.ms`),
/// from which the lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// Commits go out at most this often (those settled meanwhile wait and go together): with small
/// batches a commit per batch would cost the broker more than the batch. A crash loses at most
/// this much of commits, i.e. re-delivers a little more.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// At most one log line per this interval for the consumers' read errors (a broker down
/// makes one per poll).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// A partition assignment change seen by one consumer's rebalance callback.
#[derive(Debug)]
enum Rebalanced {
    Assigned(usize, Vec<i32>),
    Revoked(usize, Vec<i32>),
}

/// Records what the group does to one consumer, for the runner to apply (the callbacks run
/// inside that consumer's poll, i.e. inside the runner's own task).
struct GroupEvents {
    index: usize,
    events: Arc<Mutex<Vec<Rebalanced>>>,
    notify: Arc<Notify>,
    /// This consumer's lag from its last statistics: high watermark − committed offset, summed
    /// over the partitions it fetches.
    lag: Arc<AtomicI64>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for GroupEvents {
    fn stats(&self, s: Statistics) {
        let lag = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.fetch_state == "active")
            .map(|p| p.consumer_lag.max(0))
            .sum();
        self.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for GroupEvents {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Revoke(tpl) => self.events.lock().expect("events lock").push(Rebalanced::Revoked(self.index, partitions(tpl))),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!("kafka trigger: rebalance failed: {e}"),
        }
        self.notify.notify_one();
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            self.events.lock().expect("events lock").push(Rebalanced::Assigned(self.index, partitions(tpl)));
        }
        self.notify.notify_one();
    }
}

type TriggerConsumer = StreamConsumer<GroupEvents>;

/// One partition as this runner holds it.
struct Part {
    /// Which assignment this is: records read under an earlier one are not committed.
    generation: u64,
    /// The consumer it is assigned to (commits go through it).
    owner: usize,
    offsets: PartitionOffsets,
}

/// A batch in flight.
struct InFlight {
    group: Group,
    /// (partition, generation, offset) of each message.
    offsets: Vec<(i32, u64, i64)>,
    messages: usize,
    cost: usize,
}

pub struct Runner {
    delivery: Arc<Delivery>,
    brokers: String,
    group_id: String,
    topic: String,
    offset_reset: OffsetReset,
    session_timeout_ms: u64,
    maximum_tasks: usize,
    concurrency: usize,
    source: Source,
    batcher: Batcher,
    scheduler: Scheduler,
    parts: BTreeMap<i32, Part>,
    generations: u64,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    /// Batches past their last retry under `errorsTolerance: NONE`.
    blocked: HashSet<u64>,
    /// Partitions with offsets settled since their last commit.
    dirty: BTreeSet<i32>,
    last_commit: Option<Instant>,
    /// Read and not yet settled (or forgotten): counted against the bounds below.
    unsettled_messages: usize,
    unsettled_bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    paused: bool,
    tracker: TaskTracker,
    last_error_log: Option<Instant>,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        delivery: Arc<Delivery>,
        cfg: &KafkaTriggerConfig,
        brokers: String,
        account_id: &str,
        session_timeout_ms: u64,
        max_unsettled: (usize, usize),
        tracker: TaskTracker,
    ) -> Self {
        let src = cfg.source();
        let run = &cfg.run_options;
        let windows = Windows {
            count: run.batch_window.count_based_window as usize,
            time: Duration::from_secs(run.batch_window.time_based_window.into()),
            max_bytes: delivery.max_bytes,
        };
        let ordered = run.ordering_key.is_some();
        Self {
            brokers,
            group_id: src.consumer_group.clone(),
            topic: src.topic.clone(),
            offset_reset: src.offset_reset,
            session_timeout_ms,
            maximum_tasks: run.maximum_tasks as usize,
            concurrency: cfg.event_sink_config.delivery_option.concurrency as usize,
            source: Source::new(&src.topic, src.instance_id.as_deref(), account_id, cfg.event_sink_config.delivery_option.event_schema),
            batcher: Batcher::new(windows, ordered),
            scheduler: Scheduler::new(ordered),
            parts: BTreeMap::new(),
            generations: 0,
            in_flight: HashMap::new(),
            next_batch: 0,
            blocked: HashSet::new(),
            dirty: BTreeSet::new(),
            last_commit: None,
            unsettled_messages: 0,
            unsettled_bytes: 0,
            // Always room for one full batch (its events, and the raw messages beside them).
            max_messages: max_unsettled.0.max(windows.count),
            max_bytes: max_unsettled.1.max(windows.max_bytes.saturating_mul(2)),
            paused: false,
            tracker,
            last_error_log: None,
            delivery,
        }
    }

    fn labels(&self) -> [&str; 2] {
        [&self.delivery.function, &self.delivery.trigger]
    }

    /// How many consumers: `maximumTasks`, at most the topic's partitions (extra ones would
    /// sit idle). A topic whose metadata cannot be read gets `maximumTasks`.
    async fn consumer_count(&self) -> usize {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().ok()?;
            let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5)).ok()?;
            md.topics().first().map(|t| t.partitions().len()).filter(|&n| n > 0)
        })
        .await
        .ok()
        .flatten();
        match partitions {
            Some(n) => self.maximum_tasks.min(n),
            None => self.maximum_tasks,
        }
    }

    fn consumer(&self, index: usize, events: &Arc<Mutex<Vec<Rebalanced>>>, notify: &Arc<Notify>, lag: Arc<AtomicI64>) -> anyhow::Result<TriggerConsumer> {
        let reset = match self.offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let c: TriggerConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", format!("nubis-trigger-{}-{}", self.delivery.function, self.delivery.trigger))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("statistics.interval.ms", LAG_EVERY.as_millis().to_string())
            .create_with_context(GroupEvents { index, events: events.clone(), notify: notify.clone(), lag })?;
        c.subscribe(&[&self.topic])?;
        Ok(c)
    }

    /// Consume until `cancel`, then stop: no new batch; batches waiting for a retry give up at
    /// once (unsettled: read again later), those in an instance finish and are committed.
    pub async fn consume(&mut self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let n = tokio::select! {
            n = self.consumer_count() => n,
            _ = cancel.cancelled() => return Ok(()),
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let lags: Vec<Arc<AtomicI64>> = (0..n).map(|_| Arc::default()).collect();
        let consumers = (0..n).map(|i| self.consumer(i, &events, &notify, lags[i].clone())).collect::<anyhow::Result<Vec<_>>>()?;
        tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, topic = %self.topic, group = %self.group_id,
            consumers = n, "kafka trigger consuming");
        let mut merged = futures_util::stream::select_all(consumers.iter().enumerate().map(|(i, c)| c.stream().map(move |m| (i, m))));
        // Each batch in flight sends at most two reports (blocked, done).
        let (tx, mut rx) = mpsc::channel(self.concurrency * 2 + 1);
        let batches = cancel.child_token();
        let mut lag = tokio::time::interval(LAG_EVERY);
        let mut ended = false;
        loop {
            self.apply_rebalances(&events, &consumers);
            self.start_batches(&tx, &batches);
            self.pause_or_resume(&consumers);
            let deadline = self.batcher.next_deadline();
            let commit_at = (!self.dirty.is_empty()).then(|| self.last_commit.map_or_else(Instant::now, |t| t + COMMIT_EVERY));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(report) = rx.recv() => self.report(report, &consumers),
                m = merged.next() => {
                    // A rebalance seen in this poll comes before the message.
                    self.apply_rebalances(&events, &consumers);
                    match m {
                        Some((i, Ok(m))) => self.read(i, &m),
                        Some((_, Err(e))) => self.read_error(e),
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.flush_due(),
                _ = sleep_until(commit_at), if commit_at.is_some() => self.commit(&consumers, true),
                _ = notify.notified() => {}
                _ = lag.tick() => {
                    let total = lags.iter().map(|l| l.load(Ordering::Relaxed)).sum();
                    self.delivery.st.metrics.kafka_trigger_lag.with_label_values(&self.labels()).set(total);
                }
            }
        }
        batches.cancel();
        while !self.in_flight.is_empty() {
            match rx.recv().await {
                Some(report) => self.report(report, &consumers),
                None => break,
            }
        }
        // Flush the commits, then leave the group (blocking calls: off the runtime's threads).
        self.commit(&consumers, true);
        drop(merged);
        let finals = self.final_commits();
        let left = tokio::task::spawn_blocking(move || {
            for (i, tpl) in finals {
                if let Err(e) = consumers[i].commit(&tpl, CommitMode::Sync) {
                    tracing::info!("kafka trigger: last commit: {e}");
                }
            }
            drop(consumers);
        });
        let _ = left.await;
        if ended {
            anyhow::bail!("the consumers' streams ended");
        }
        tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, "kafka trigger stopped");
        Ok(())
    }

    fn read_error(&mut self, e: rdkafka::error::KafkaError) {
        if self.last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            self.last_error_log = Some(Instant::now());
            tracing::warn!(function = %self.delivery.function, trigger = %self.delivery.trigger, topic = %self.topic, "kafka trigger: reading: {e}");
        }
    }

    fn assign(&mut self, owner: usize, partition: i32) {
        self.generations += 1;
        self.parts.insert(partition, Part { generation: self.generations, owner, offsets: PartitionOffsets::default() });
    }

    fn forget(&mut self, partition: i32) {
        self.parts.remove(&partition);
        let (n1, c1) = self.batcher.drop_partition(partition);
        let (n2, c2) = self.scheduler.drop_partition(partition);
        self.unsettled_messages -= n1 + n2;
        self.unsettled_bytes -= c1 + c2;
    }

    fn apply_rebalances(&mut self, events: &Mutex<Vec<Rebalanced>>, consumers: &[TriggerConsumer]) {
        let events = std::mem::take(&mut *events.lock().expect("events lock"));
        for e in events {
            tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, "kafka trigger: {e:?}");
            match e {
                Rebalanced::Revoked(i, ps) => {
                    for p in ps {
                        if self.parts.get(&p).is_some_and(|part| part.owner == i) {
                            self.forget(p);
                        }
                    }
                }
                Rebalanced::Assigned(i, ps) => {
                    for p in ps {
                        // Kept if this consumer already holds it: its first messages were read
                        // before this event was applied (a new generation would orphan them).
                        if self.parts.get(&p).is_none_or(|part| part.owner != i) {
                            self.assign(i, p);
                        }
                    }
                    if self.paused {
                        // A new assignment starts unpaused.
                        pause(&consumers[i], true);
                    }
                }
            }
        }
    }

    fn read(&mut self, consumer: usize, m: &BorrowedMessage<'_>) {
        let p = m.partition();
        match self.parts.get(&p) {
            Some(part) if part.owner == consumer => {}
            // A message of a partition taken from this consumer, read before the callback.
            Some(_) => return,
            // Assignments arrive through the callback before their messages; a fallback.
            None => self.assign(consumer, p),
        }
        let part = self.parts.get_mut(&p).expect("assigned above");
        part.offsets.received(m.offset());
        let headers = m
            .headers()
            .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        let r = Record::new(&self.source, p, m.offset(), part.generation, m.key(), m.payload(), headers, m.timestamp().to_millis());
        self.unsettled_messages += 1;
        self.unsettled_bytes += r.cost();
        let mut out = Vec::new();
        self.batcher.add(r, Instant::now(), &mut out);
        for b in out {
            self.scheduler.push(b);
        }
    }

    fn flush_due(&mut self) {
        let mut out = Vec::new();
        self.batcher.due(Instant::now(), &mut out);
        for b in out {
            self.scheduler.push(b);
        }
    }

    fn start_batches(&mut self, tx: &mpsc::Sender<Report>, cancel: &CancellationToken) {
        while self.blocked.is_empty() && self.in_flight.len() < self.concurrency {
            let Some(b) = self.scheduler.take() else { break };
            self.next_batch += 1;
            let id = self.next_batch;
            self.in_flight.insert(
                id,
                InFlight {
                    group: b.group.clone(),
                    offsets: b.records.iter().map(|r| (r.partition, r.generation, r.offset)).collect(),
                    messages: b.records.len(),
                    cost: b.cost(),
                },
            );
            self.tracker.spawn(self.delivery.clone().run(id, b, tx.clone(), cancel.clone()));
        }
    }

    fn report(&mut self, report: Report, consumers: &[TriggerConsumer]) {
        let metrics = self.delivery.st.metrics.clone();
        let (id, outcome) = match report {
            Report::Blocked(id) => {
                self.blocked.insert(id);
                metrics.kafka_trigger_blocked.with_label_values(&self.labels()).set(1);
                return;
            }
            Report::Done(id, outcome) => (id, outcome),
        };
        let Some(b) = self.in_flight.remove(&id) else { return };
        if self.blocked.remove(&id) && self.blocked.is_empty() {
            metrics.kafka_trigger_blocked.with_label_values(&self.labels()).set(0);
            tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, "kafka trigger: the blocked batch succeeded; the stream goes on");
        }
        self.scheduler.finished(&b.group);
        self.unsettled_messages -= b.messages;
        self.unsettled_bytes -= b.cost;
        let [f, t] = self.labels();
        metrics.kafka_trigger_batches.with_label_values(&[f, t, outcome.as_str()]).inc();
        metrics.kafka_trigger_messages.with_label_values(&[f, t, outcome.as_str()]).inc_by(b.messages as u64);
        if outcome == Outcome::Abandoned {
            return;
        }
        for (p, generation, offset) in b.offsets {
            if let Some(part) = self.parts.get_mut(&p).filter(|part| part.generation == generation) {
                part.offsets.settled(offset);
                self.dirty.insert(p);
            }
        }
        self.commit(consumers, false);
    }

    /// Commit the partitions with newly settled offsets, each up to its lowest offset still
    /// unsettled; unless `now`, only if the last commit is `COMMIT_EVERY` old (the loop comes
    /// back for the rest).
    fn commit(&mut self, consumers: &[TriggerConsumer], now: bool) {
        if self.dirty.is_empty() || (!now && self.last_commit.is_some_and(|t| t.elapsed() < COMMIT_EVERY)) {
            return;
        }
        self.last_commit = Some(Instant::now());
        let mut commits: BTreeMap<usize, TopicPartitionList> = BTreeMap::new();
        for p in std::mem::take(&mut self.dirty) {
            let Some(part) = self.parts.get_mut(&p) else { continue };
            if let Some(next) = part.offsets.commit_point() {
                let tpl = commits.entry(part.owner).or_default();
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(next)).expect("a valid offset");
            }
        }
        for (i, tpl) in commits {
            // Async: a lost commit only means a re-delivery.
            if let Err(e) = consumers[i].commit(&tpl, CommitMode::Async) {
                tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, "kafka trigger: commit: {e}");
            }
        }
    }

    /// The commit point of every partition held, by consumer: committed once more,
    /// synchronously, when the runner stops.
    fn final_commits(&self) -> Vec<(usize, TopicPartitionList)> {
        let mut by: BTreeMap<usize, TopicPartitionList> = BTreeMap::new();
        for (p, part) in &self.parts {
            if let Some(o) = part.offsets.committed() {
                by.entry(part.owner).or_default().add_partition_offset(&self.topic, *p, Offset::Offset(o)).expect("a valid offset");
            }
        }
        by.into_iter().collect()
    }

    fn pause_or_resume(&mut self, consumers: &[TriggerConsumer]) {
        let over = self.unsettled_messages >= self.max_messages || self.unsettled_bytes >= self.max_bytes;
        let under = self.unsettled_messages <= self.max_messages / 4 * 3 && self.unsettled_bytes <= self.max_bytes / 4 * 3;
        if over && !self.paused {
            self.paused = true;
            tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, messages = self.unsettled_messages,
                bytes = self.unsettled_bytes, "kafka trigger: pausing reads (too much read and not yet settled)");
            consumers.iter().for_each(|c| pause(c, true));
        } else if under && self.paused {
            self.paused = false;
            tracing::info!(function = %self.delivery.function, trigger = %self.delivery.trigger, "kafka trigger: resuming reads");
            consumers.iter().for_each(|c| pause(c, false));
        }
    }
}

fn pause(c: &TriggerConsumer, on: bool) {
    let Ok(tpl) = c.assignment() else { return };
    let r = if on { c.pause(&tpl) } else { c.resume(&tpl) };
    if let Err(e) = r {
        tracing::warn!("kafka trigger: pause/resume: {e}");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
