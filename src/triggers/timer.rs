//! The timer engine: fires every enabled timer trigger's ticks as async invocations.
//!
//! **Who fires.** Only the process that places instances: the all-in-one server, or in a
//! cluster the scheduler leader elected through etcd ([`ResourceManager::is_leading`]). The
//! others keep the engine idle and take over when they win the election.
//!
//! **A tick** is fired through [`dispatcher::submit`], the path of an async InvokeFunction, on
//! the trigger's qualifier, with FC's timer event
//! `{"triggerTime":"2023-12-26T07:49:00Z","triggerName":"<name>","payload":"<payload>"}`
//! (`triggerTime`: the tick, UTC, whole seconds) and [`Origin::Timer`], so the async config's
//! retries and event age apply but its destinations do not (FC does not invoke destinations for
//! timer calls). Its task id is derived from the trigger name and the tick ([`task_id`]).
//!
//! **Exactly once per tick, cluster-wide.** The task id is the guard: a second submit of the
//! same tick (a new leader after a failover, a restart mid-tick, a deposed leader that has not
//! noticed yet) is refused by the task row's key, and its queued message is dropped by the
//! dispatcher as a ghost (its request id is not the row's). A crash between queueing and the
//! row leaves a message that the dispatcher recovers into the task after 30 s, unless a second
//! submit wrote the row first; either way one message runs. Each trigger's last tick (fired,
//! refused as a duplicate, or skipped) is kept in its row (`timer_last_tick_ms`), so a restart
//! or a new leader knows what was missed.
//!
//! **Missed ticks** (the process was down, no leader for a while): of the ticks after the last
//! one recorded, only the most recent is fired, late but with its own `triggerTime`, and only if
//! it is at most `timers.missed_tick_grace_secs` old; older ones are skipped (counted and
//! logged). Ticks at or before the trigger's last write (create, update, enable) never fire.
//!
//! **Changes** (create, update, `enable: false`, delete) are read from the store every
//! `timers.refresh_ms`; a write through this process wakes the engine at once ([`TimerWake`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::Digest;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TimersConfig;
use crate::dispatcher::{self, DispatchError, Origin};
use crate::metrics::Metrics;
use crate::model::trigger::timer::{Schedule, TimerTriggerConfig};
use crate::queue::Queue;
use crate::scheduler::ResourceManager;
use crate::store::{Store, StoreError, TimerRecord};

/// Most submits in flight at once (one store and queue round trip each): many triggers on one
/// tick (`0 0 * * * *`) go out together without flooding the database.
const MAX_CONCURRENT_FIRES: usize = 16;
/// A tick whose submit failed (queue or store unavailable) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Missed ticks are counted one by one up to this many (the count is for logs and metrics).
const MAX_COUNTED: u64 = 10_000;

/// The API's handle on the engine: wake it when a timer trigger was written or deleted.
pub use super::EngineWake as TimerWake;

/// FC's timer event (fields in FC's order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerEvent<'a> {
    pub trigger_time: String,
    pub trigger_name: &'a str,
    pub payload: &'a str,
}

/// `triggerTime`: UTC, whole seconds.
pub fn trigger_time(tick: DateTime<Utc>) -> String {
    tick.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The async task id of `trigger`'s `tick`: `timer-20231226T074900Z-<trigger name>`, the same
/// in every process, so a second submit of the tick is refused as a duplicate. Task ids are
/// per function and at most 128 characters: a trigger name too long to fit is cut and
/// followed by a hash of the whole name.
pub fn task_id(trigger: &str, tick: DateTime<Utc>) -> String {
    let head = format!("timer-{}-", tick.format("%Y%m%dT%H%M%SZ"));
    if head.len() + trigger.len() <= 128 {
        return format!("{head}{trigger}");
    }
    let hash = hex::encode(&sha2::Sha256::digest(trigger.as_bytes())[..8]);
    // Trigger names are ASCII (letters, digits, '-', '_'), so any byte index is a boundary.
    let keep = 128 - head.len() - 1 - hash.len();
    format!("{head}{}-{hash}", &trigger[..keep])
}

/// What is due for one trigger at `now`, given that ticks at or before `after` are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Fire `tick`; `skipped` older missed ticks are given up (the missed-tick policy).
    Fire { tick: DateTime<Utc>, skipped: u64 },
    /// Even the most recent missed tick is older than the grace period: give up `skipped`
    /// ticks, the last of them `tick`.
    Stale { tick: DateTime<Utc>, skipped: u64 },
}

/// The missed-tick policy, pure: the most recent tick after `after` and at or before `now` is
/// fired if it is at most `grace` old; every other tick in between is skipped.
pub fn due(schedule: &Schedule, after: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> Due {
    let Some(latest) = schedule.last_at_or_before(now) else { return Due::Nothing };
    if latest <= after {
        return Due::Nothing;
    }
    let mut older = 0;
    let mut t = after;
    while older < MAX_COUNTED {
        match schedule.next_after(t) {
            Some(n) if n < latest => {
                older += 1;
                t = n;
            }
            _ => break,
        }
    }
    if (now - latest).to_std().unwrap_or_default() > grace {
        Due::Stale { tick: latest, skipped: older + 1 }
    } else {
        Due::Fire { tick: latest, skipped: older }
    }
}

/// What one submit came to (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// Queued and recorded: it runs.
    Fired,
    /// The tick's task already existed: fired before (by a previous leader, or before a
    /// restart). Not run again.
    Duplicate,
    /// Queue or store unavailable; tried again while the policy allows.
    Failed,
}

impl FireOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Duplicate => "duplicate",
            Self::Failed => "failed",
        }
    }
}

/// One timer trigger as the engine holds it.
struct Timer {
    rec: TimerRecord,
    /// None: the stored config no longer parses (it was valid when written); never fires.
    config: Option<(TimerTriggerConfig, Schedule)>,
    /// Ticks at or before this are done: the later of the last tick recorded and the trigger's
    /// last write.
    after: DateTime<Utc>,
    /// After a failed submit: not before this.
    retry_at: Option<Instant>,
}

impl Timer {
    fn enabled(&self) -> Option<&(TimerTriggerConfig, Schedule)> {
        self.config.as_ref().filter(|(c, _)| c.enable)
    }
}

/// What a step did; returned so tests can drive the engine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub fired: usize,
    pub duplicates: usize,
    pub skipped: u64,
    pub failed: usize,
    /// When the next tick of any enabled timer is due.
    pub next_tick: Option<DateTime<Utc>>,
}

pub struct TimerEngine {
    store: Store,
    queue: Arc<dyn Queue>,
    rm: ResourceManager,
    cfg: TimersConfig,
    metrics: Arc<Metrics>,
    wake: TimerWake,
    /// By (function, trigger name).
    timers: BTreeMap<(String, String), Timer>,
    /// When the triggers were last read; None: read at the next step.
    loaded: Option<Instant>,
}

impl TimerEngine {
    pub fn new(store: Store, queue: Arc<dyn Queue>, rm: ResourceManager, cfg: TimersConfig, metrics: Arc<Metrics>, wake: TimerWake) -> Self {
        Self { store, queue, rm, cfg, metrics, wake, timers: BTreeMap::new(), loaded: None }
    }

    /// Run until `cancel`: while this process places instances, fire what is due and sleep
    /// until the next tick, the next read of the triggers, a wake or a change of role. A step
    /// under way when `cancel` comes finishes first (its submits are not cut in half).
    pub fn spawn(mut self, tracker: &TaskTracker, cancel: CancellationToken) {
        tracker.spawn(async move {
            tracing::info!(min_interval_secs = self.cfg.min_interval_secs, grace_secs = self.cfg.missed_tick_grace_secs, "timer engine running");
            loop {
                let wait = if self.rm.is_leading() {
                    let report = self.step(Utc::now()).await;
                    self.until_next(&report)
                } else {
                    // A new term starts from the store: another leader may have fired since.
                    self.loaded = None;
                    self.cfg.refresh()
                };
                let wake = self.wake.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => self.loaded = None,
                    _ = self.rm.role_changed() => self.loaded = None,
                    _ = cancel.cancelled() => break,
                }
            }
            tracing::info!("timer engine stopped");
        });
    }

    /// How long to sleep after a step: until the next tick, a retry or the next read.
    fn until_next(&self, report: &StepReport) -> Duration {
        let mut wait = self.cfg.refresh().saturating_sub(self.loaded.map_or(Duration::ZERO, |l| l.elapsed()));
        if let Some(next) = report.next_tick {
            wait = wait.min((next - Utc::now()).to_std().unwrap_or_default());
        }
        if let Some(r) = self.timers.values().filter_map(|t| t.retry_at).min() {
            wait = wait.min(r.saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// One pass at `now`: read the triggers again if it is time (or a change woke the engine),
    /// then fire or skip what is due. Public so tests can drive it.
    pub async fn step(&mut self, now: DateTime<Utc>) -> StepReport {
        if self.loaded.is_none_or(|l| l.elapsed() >= self.cfg.refresh()) {
            match self.store.list_timer_triggers().await {
                Ok(rows) => self.load(rows),
                Err(e) => {
                    // Keep firing what is known; read again after the refresh interval (not at
                    // once: a database that is down is not asked in a loop).
                    tracing::warn!("reading timer triggers: {e}");
                    self.loaded = Some(Instant::now());
                }
            }
        }
        let mut report = StepReport::default();
        let mut fires = Vec::new();
        let grace = self.cfg.missed_tick_grace();
        for (key, t) in &mut self.timers {
            let Some((cfg, schedule)) = t.enabled() else { continue };
            if t.retry_at.is_some_and(|r| r > Instant::now()) {
                continue;
            }
            match due(schedule, t.after, now, grace) {
                Due::Nothing => {}
                Due::Fire { tick, skipped } => {
                    if skipped > 0 {
                        tracing::info!(function = %key.0, trigger = %key.1, skipped, tick = %trigger_time(tick),
                            "timer: missed ticks skipped; firing the most recent one");
                        self.metrics.timer_firings.with_label_values(&[&key.0, "skipped"]).inc_by(skipped);
                        report.skipped += skipped;
                    }
                    fires.push((key.clone(), t.rec.trigger_id.clone(), t.rec.qualifier.clone(), cfg.payload.clone().unwrap_or_default(), tick));
                }
                Due::Stale { tick, skipped } => {
                    tracing::info!(function = %key.0, trigger = %key.1, skipped, last = %trigger_time(tick),
                        grace_secs = grace.as_secs(), "timer: missed ticks older than the grace period skipped");
                    self.metrics.timer_firings.with_label_values(&[&key.0, "skipped"]).inc_by(skipped);
                    report.skipped += skipped;
                    t.after = tick;
                    if let Err(e) = self.store.advance_timer(&key.0, &key.1, &t.rec.trigger_id, tick.timestamp_millis()).await {
                        tracing::warn!(function = %key.0, trigger = %key.1, "recording a skipped timer tick: {e}");
                    }
                }
            }
        }
        let (store, queue, metrics) = (&self.store, self.queue.as_ref(), &self.metrics);
        let results: Vec<_> = futures_util::stream::iter(fires)
            .map(|((function, trigger), trigger_id, qualifier, payload, tick)| async move {
                let outcome = fire(store, queue, &function, &trigger, &trigger_id, &qualifier, &payload, tick).await;
                metrics.timer_firings.with_label_values(&[&function, outcome.as_str()]).inc();
                ((function, trigger), tick, outcome)
            })
            .buffer_unordered(MAX_CONCURRENT_FIRES)
            .collect()
            .await;
        for (key, tick, outcome) in results {
            let Some(t) = self.timers.get_mut(&key) else { continue };
            match outcome {
                FireOutcome::Fired | FireOutcome::Duplicate => {
                    t.after = t.after.max(tick);
                    t.retry_at = None;
                    if outcome == FireOutcome::Fired {
                        report.fired += 1;
                    } else {
                        report.duplicates += 1;
                    }
                }
                FireOutcome::Failed => {
                    t.retry_at = Some(Instant::now() + RETRY_AFTER);
                    report.failed += 1;
                }
            }
        }
        report.next_tick =
            self.timers.values().filter_map(|t| t.enabled().and_then(|(_, s)| s.next_after(t.after.max(now)))).min();
        report
    }

    /// Replace the known triggers with `rows`, keeping what this process knows beyond the
    /// store (a tick it fired whose record failed to write).
    fn load(&mut self, rows: Vec<TimerRecord>) {
        let mut timers = BTreeMap::new();
        for rec in rows {
            let key = (rec.function_name.clone(), rec.trigger_name.clone());
            let old = self.timers.remove(&key).filter(|o| o.rec.trigger_id == rec.trigger_id);
            let config = match TimerTriggerConfig::parse(&rec.trigger_config).and_then(|c| c.schedule().map(|s| (c, s))) {
                Ok(c) => Some(c),
                Err(e) => {
                    if old.as_ref().is_none_or(|o| o.rec.trigger_config != rec.trigger_config) {
                        tracing::error!(function = %key.0, trigger = %key.1, "timer trigger not run: its stored config is invalid: {e}");
                    }
                    None
                }
            };
            let written = DateTime::parse_from_rfc3339(&rec.last_modified_time).map(|t| t.with_timezone(&Utc)).unwrap_or_default();
            let recorded = rec.timer_last_tick_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()).unwrap_or_default();
            let mut after = written.max(recorded);
            if let Some(o) = &old {
                after = after.max(o.after);
            }
            let retry_at = old.and_then(|o| o.retry_at);
            timers.insert(key, Timer { rec, config, after, retry_at });
        }
        self.timers = timers;
        self.loaded = Some(Instant::now());
    }
}

/// Submit one tick, then record it as the trigger's last. A tick refused as a duplicate was
/// fired before: recorded the same way, not run again.
#[allow(clippy::too_many_arguments)]
async fn fire(
    store: &Store,
    queue: &dyn Queue,
    function: &str,
    trigger: &str,
    trigger_id: &str,
    qualifier: &str,
    payload: &str,
    tick: DateTime<Utc>,
) -> FireOutcome {
    let id = task_id(trigger, tick);
    let event = TimerEvent { trigger_time: trigger_time(tick), trigger_name: trigger, payload };
    let body = serde_json::to_vec(&event).expect("event serializes");
    // A fresh request id per submit: a second submit of the tick must not pass for the first
    // one's message (the dispatcher tells them apart by it).
    let request_id = crate::model::new_request_id();
    let outcome = match dispatcher::submit(store, queue, function, qualifier, &id, &request_id, &body, Origin::Timer).await {
        Ok(()) => {
            tracing::info!(function, trigger, tick = %event.trigger_time, task_id = %id, %request_id, "timer fired");
            FireOutcome::Fired
        }
        Err(DispatchError::Store(StoreError::AlreadyExists)) => {
            tracing::info!(function, trigger, tick = %event.trigger_time, task_id = %id, "timer tick already fired; not again");
            FireOutcome::Duplicate
        }
        Err(e) => {
            tracing::warn!(function, trigger, tick = %event.trigger_time, "firing a timer tick: {e}");
            return FireOutcome::Failed;
        }
    };
    if let Err(e) = store.advance_timer(function, trigger, trigger_id, tick.timestamp_millis()).await {
        // Kept in memory; a later reader of the store may submit the tick again and be refused.
        tracing::warn!(function, trigger, "recording a timer tick: {e}");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const GRACE: Duration = Duration::from_secs(600);

    #[test]
    fn the_tick_that_is_due_fires() {
        let s = Schedule::parse("@every 1m").unwrap();
        // On time (a little after the tick), and nothing again until the next one.
        assert_eq!(due(&s, at("2023-12-26T07:48:00Z"), at("2023-12-26T07:49:00.010Z"), GRACE), Due::Fire {
            tick: at("2023-12-26T07:49:00Z"),
            skipped: 0
        });
        assert_eq!(due(&s, at("2023-12-26T07:49:00Z"), at("2023-12-26T07:49:59Z"), GRACE), Due::Nothing);
        // A trigger written after the tick does not fire it.
        assert_eq!(due(&s, at("2023-12-26T07:49:30Z"), at("2023-12-26T07:49:40Z"), GRACE), Due::Nothing);
    }

    #[test]
    fn after_downtime_only_the_most_recent_missed_tick_fires() {
        let s = Schedule::parse("@every 1m").unwrap();
        // Down from 07:48:30 to 07:53:20: 07:49 … 07:53 missed; 07:53 fires, 4 are skipped.
        assert_eq!(due(&s, at("2023-12-26T07:48:00Z"), at("2023-12-26T07:53:20Z"), GRACE), Due::Fire {
            tick: at("2023-12-26T07:53:00Z"),
            skipped: 4
        });
        // Past the grace period, none fires.
        assert_eq!(due(&s, at("2023-12-26T07:48:00Z"), at("2023-12-26T07:53:20Z"), Duration::from_secs(10)), Due::Stale {
            tick: at("2023-12-26T07:53:00Z"),
            skipped: 5
        });
        let daily = Schedule::parse("CRON_TZ=Asia/Shanghai 0 0 4 * * *").unwrap();
        // 04:00 Shanghai = 20:00 UTC; down over it, back 5 minutes later: fired late.
        assert_eq!(due(&daily, at("2023-12-25T21:00:00Z"), at("2023-12-26T20:05:00Z"), GRACE), Due::Fire {
            tick: at("2023-12-26T20:00:00Z"),
            skipped: 0
        });
        // Back the next morning: too late.
        assert!(matches!(due(&daily, at("2023-12-25T21:00:00Z"), at("2023-12-27T08:00:00Z"), GRACE), Due::Stale { skipped: 1, .. }));
    }

    #[test]
    fn task_ids_are_deterministic_and_valid() {
        let tick = at("2023-12-26T07:49:00Z");
        assert_eq!(task_id("tick", tick), "timer-20231226T074900Z-tick");
        assert_eq!(task_id("tick", tick), task_id("tick", tick));
        assert_ne!(task_id("tick", tick), task_id("tick", at("2023-12-26T07:49:01Z")));
        let long = "t".repeat(128);
        let other = format!("{}u", "t".repeat(127));
        let (a, b) = (task_id(&long, tick), task_id(&other, tick));
        assert_ne!(a, b);
        for id in [a, b, task_id("tick", tick)] {
            assert!(crate::model::async_task::is_valid_task_id(&id), "{id}");
        }
        assert_eq!(trigger_time(at("2023-12-26T07:49:00.999Z")), "2023-12-26T07:49:00Z");
    }

    #[test]
    fn the_event_has_fcs_shape() {
        let e = TimerEvent { trigger_time: "2023-12-26T07:49:00Z".into(), trigger_name: "tick", payload: "{\"a\":1}" };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"triggerTime":"2023-12-26T07:49:00Z","triggerName":"tick","payload":"{\"a\":1}"}"#
        );
    }
}
