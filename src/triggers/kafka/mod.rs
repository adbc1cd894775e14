//! The Kafka trigger engine: consumes the topic of every enabled `eventbridge` trigger with a
//! Kafka source and pushes its messages to the function in batches (fc-triggers.md §3).
//!
//! **Who consumes.** Only the process that places instances: the all-in-one server, or in a
//! cluster the scheduler leader ([`ResourceManager::is_leading`]), as for timers. A process that
//! stops leading stops its triggers' consumers (they leave their groups); the new leader's
//! consumers join the same groups and start from the committed offsets, so every trigger is
//! consumed by one process, and what the old one had not settled is read again.
//!
//! **Changes** (create, update, `triggerEnable: false`, delete) are read from the store every
//! `kafka_triggers.refresh_ms`; a write through this process wakes the engine at once
//! ([`EngineWake`]). A changed trigger's runner is stopped, and its successor starts only once it
//! has stopped (its batches in flight settled or given up), so a trigger never has two runners
//! in one process.
//!
//! The parts:
//! - [`batch`]: the events (CloudEvents or RawData) and the batch windows (count, time, size);
//! - [`order`]: which batch starts next (per-key ordering);
//! - [`retry`]: the retry strategies;
//! - [`deliver`]: one batch, from its first attempt to its outcome (sync invocation, async
//!   submit, retries, dead letters, blocking);
//! - [`runner`]: one trigger's consumers, batches in flight and commits.
//!
//! **Guarantee.** At least once, per message: a message's offset is committed only after its
//! batch is settled (succeeded, or dead-lettered or dropped under `errorsTolerance: ALL`), so a
//! crash, a lost leadership or a rebalance delivers every unsettled message again, and no
//! message is skipped. With `orderingKey`, the messages of one key run one batch at a time, in
//! offset order (see [`order`] and docs/architecture.md, "Kafka triggers").

pub mod batch;
pub mod deliver;
pub mod order;
pub mod retry;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::deliver::{DeadLetters, Delivery, Mode};
use self::retry::RetryPolicy;
use self::runner::Runner;
use super::EngineWake;
use crate::api::AppState;
use crate::model::trigger::kafka::KafkaTriggerConfig;
use crate::model::trigger::{TriggerRecord, TriggerType};

/// A trigger's runner as the engine holds it.
struct Running {
    /// What it was started from: a change of any of these restarts it.
    trigger_id: String,
    config: String,
    qualifier: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct KafkaEngine {
    st: AppState,
    wake: EngineWake,
    tracker: TaskTracker,
    /// By (function, trigger name).
    running: BTreeMap<(String, String), Running>,
    /// Runners told to stop and maybe still stopping: a successor waits for its predecessor.
    stopping: BTreeMap<(String, String), JoinHandle<()>>,
    /// Triggers whose stored config does not parse, with that config (logged once).
    invalid: BTreeMap<(String, String), String>,
    /// When the triggers were last read; None: read at the next pass.
    loaded: Option<Instant>,
}

impl KafkaEngine {
    /// `tracker` tracks the runners and their batches' tasks (the server waits for it).
    pub fn new(st: AppState, wake: EngineWake, tracker: TaskTracker) -> Self {
        Self { st, wake, tracker, running: BTreeMap::new(), stopping: BTreeMap::new(), invalid: BTreeMap::new(), loaded: None }
    }

    /// Run until `cancel`: while this process places instances, keep one runner per enabled
    /// Kafka trigger; otherwise none. At `cancel` every runner stops (batches in an instance
    /// finish and are committed; the others are read again later).
    pub fn spawn(mut self, cancel: CancellationToken) {
        let tracker = self.tracker.clone();
        tracker.spawn(async move {
            tracing::info!("kafka trigger engine running");
            let refresh = self.st.cfg.kafka_triggers.refresh();
            loop {
                if self.st.rm.is_leading() {
                    if self.loaded.is_none_or(|l| l.elapsed() >= refresh) {
                        self.reconcile().await;
                    }
                } else if !self.running.is_empty() {
                    tracing::info!(triggers = self.running.len(), "kafka triggers: not leading; stopping their consumers");
                    self.stop_all();
                    self.loaded = None;
                }
                let wake = self.wake.clone();
                tokio::select! {
                    _ = tokio::time::sleep(refresh) => {}
                    _ = wake.notified() => self.loaded = None,
                    _ = self.st.rm.role_changed() => self.loaded = None,
                    _ = cancel.cancelled() => break,
                }
            }
            self.stop_all();
            for (_, task) in std::mem::take(&mut self.stopping) {
                let _ = task.await;
            }
            tracing::info!("kafka trigger engine stopped");
        });
    }

    fn stop_all(&mut self) {
        for (key, r) in std::mem::take(&mut self.running) {
            r.stop.cancel();
            self.stopping.insert(key, r.task);
        }
    }

    /// Read the triggers and make the runners match them.
    async fn reconcile(&mut self) {
        let rows = match self.st.store.list_all_triggers_of_type(TriggerType::EventBridge).await {
            Ok(rows) => rows,
            Err(e) => {
                // Keep what runs; read again after the refresh interval.
                tracing::warn!("reading kafka triggers: {e}");
                self.loaded = Some(Instant::now());
                return;
            }
        };
        self.loaded = Some(Instant::now());
        self.stopping.retain(|_, t| !t.is_finished());
        let mut wanted = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        for rec in rows {
            let key = (rec.function_name.clone(), rec.trigger_name.clone());
            match KafkaTriggerConfig::parse(&rec.trigger_config) {
                Ok(c) if c.trigger_enable => {
                    wanted.insert(key, (rec, c));
                }
                Ok(_) => {}
                Err(e) => {
                    // It was valid when written (a newer version may read it differently).
                    if self.invalid.get(&key) != Some(&rec.trigger_config) {
                        tracing::error!(function = %key.0, trigger = %key.1, "kafka trigger not run: its stored config is invalid: {e}");
                    }
                    invalid.insert(key, rec.trigger_config);
                }
            }
        }
        self.invalid = invalid;
        // Stop what went away or changed.
        let changed: Vec<_> = self
            .running
            .iter()
            .filter(|(k, r)| {
                wanted.get(*k).is_none_or(|(rec, _)| rec.trigger_id != r.trigger_id || rec.trigger_config != r.config || rec.qualifier != r.qualifier)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in changed {
            let r = self.running.remove(&key).expect("listed");
            tracing::info!(function = %key.0, trigger = %key.1, "kafka trigger changed or removed: stopping its consumers");
            r.stop.cancel();
            self.stopping.insert(key, r.task);
        }
        for (key, (rec, cfg)) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            let previous = self.stopping.remove(&key);
            let task = self.tracker.spawn(run(self.st.clone(), rec.clone(), cfg, stop.clone(), self.tracker.clone(), previous));
            self.running.insert(key, Running { trigger_id: rec.trigger_id, config: rec.trigger_config, qualifier: rec.qualifier, stop, task });
        }
    }
}

/// One trigger's runner, after its predecessor has stopped; a runner that fails (its consumers
/// cannot be made) is made again after the refresh interval.
async fn run(
    st: AppState,
    rec: TriggerRecord,
    cfg: KafkaTriggerConfig,
    stop: CancellationToken,
    tracker: TaskTracker,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(p) = previous {
        let _ = p.await;
    }
    if stop.is_cancelled() {
        return;
    }
    let src = cfg.source();
    let brokers = src.brokers.clone().unwrap_or_else(|| st.cfg.kafka.brokers.clone());
    let mode = if cfg.async_invocation_type { Mode::Async } else { Mode::Sync };
    let delivery = Arc::new(Delivery {
        function: rec.function_name.clone(),
        trigger: rec.trigger_name.clone(),
        trigger_id: rec.trigger_id.clone(),
        qualifier: rec.qualifier.clone(),
        source_topic: src.topic.clone(),
        mode,
        policy: RetryPolicy::new(&cfg.run_options.retry_strategy, st.cfg.kafka_triggers.retry_interval_scale),
        tolerance: cfg.run_options.errors_tolerance,
        dead_letters: cfg.dead_letter_topic().map(|t| DeadLetters::new(t, brokers.clone())),
        max_bytes: match mode {
            Mode::Sync => st.cfg.limits.max_sync_payload_bytes,
            Mode::Async => st.cfg.limits.max_async_payload_bytes,
        },
        st: st.clone(),
    });
    let labels = [rec.function_name.as_str(), rec.trigger_name.as_str()];
    let k = &st.cfg.kafka_triggers;
    loop {
        let mut runner = Runner::new(
            delivery.clone(),
            &cfg,
            brokers.clone(),
            &st.cfg.server.account_id,
            st.cfg.kafka.session_timeout_ms,
            (k.max_unsettled_messages, k.max_unsettled_bytes),
            tracker.clone(),
        );
        match runner.consume(&stop).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(function = %rec.function_name, trigger = %rec.trigger_name, "kafka trigger: consuming failed: {e:#}; trying again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(k.refresh()) => {}
            _ = stop.cancelled() => break,
        }
    }
    // Gauges of a trigger that no longer runs here.
    let _ = st.metrics.kafka_trigger_lag.remove_label_values(&labels);
    let _ = st.metrics.kafka_trigger_blocked.remove_label_values(&labels);
}
