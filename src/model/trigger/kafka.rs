//! The config of an `eventbridge` trigger with a Kafka source (fc-triggers.md §3.1, §3.2).
//! Keys inside the source parameters, `retryStrategy`, `deadLetterQueue` and `batchWindow` are
//! PascalCase, as FC spells them; the rest camelCase. Unknown keys are accepted (and kept in
//! the stored string).
//!
//! **Brokers** (a Nubis extension): FC names an Alibaba Kafka instance (`InstanceId`) and
//! resolves its brokers itself. Nubis has no such registry, so `sourceKafkaParameters` may
//! carry `"Brokers": "host:port,host:port"`; without it the trigger consumes from the server's
//! `[kafka] brokers`.
//!
//! **Per-key ordering** (a Nubis extension): `runOptions.orderingKey: "messageKey"` makes the
//! messages of one Kafka message key run one at a time, in offset order (see
//! `crate::triggers::kafka`). It needs sync delivery.
//!
//! **Dead letters** go to a Kafka topic on the trigger's brokers: `deadLetterQueue.Arn` is
//! `kafka://<topic>` (Nubis) or FC's ARN shape `acs:kafka:<region>:<account>:topics/<topic>`
//! (the form async destinations take). FC's other targets (MNS, RocketMQ, EventBridge) name
//! services Nubis does not have and are refused.
//!
//! Checked here: the fields, their types and ranges. What the Kafka engine does with them
//! (batching, retries, dead letters) is its own.

use serde::Deserialize;

use super::from_config_str;
use crate::model::ValidationError;
use crate::model::async_task::is_valid_topic;

/// A validated Kafka trigger config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTriggerConfig {
    /// False: the trigger is kept but consumes nothing. Default true.
    #[serde(default = "yes")]
    pub trigger_enable: bool,
    /// True: each batch is an async invocation; false (the default): sync, at most
    /// `deliveryOption.concurrency` at once (fc-triggers.md §3.2 on the conflicting docs).
    #[serde(default)]
    pub async_invocation_type: bool,
    pub event_source_config: EventSourceConfig,
    #[serde(default)]
    pub event_sink_config: EventSinkConfig,
    #[serde(default)]
    pub run_options: RunOptions,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceConfig {
    /// Only `Kafka` is accepted.
    pub event_source_type: String,
    #[serde(default)]
    pub event_source_parameters: EventSourceParameters,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceParameters {
    /// Required for a Kafka source.
    #[serde(default)]
    pub source_kafka_parameters: Option<SourceKafkaParameters>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceKafkaParameters {
    pub topic: String,
    pub consumer_group: String,
    #[serde(default)]
    pub offset_reset: OffsetReset,
    /// Nubis extension: `host:port,...`; absent: the server's `[kafka] brokers`.
    #[serde(default)]
    pub brokers: Option<String>,
    // FC's own: accepted and ignored by Nubis.
    #[serde(default)]
    pub region_id: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub vpc_id: Option<String>,
    #[serde(default, rename = "VSwitchIds")]
    pub vswitch_ids: Option<String>,
    #[serde(default)]
    pub security_group_id: Option<String>,
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    #[default]
    Latest,
    Earliest,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSinkConfig {
    #[serde(default)]
    pub delivery_option: DeliveryOption,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOption {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub event_schema: EventSchema,
    /// Most sync deliveries in flight at once, 1..=300. Default 1.
    #[serde(default = "one")]
    pub concurrency: u32,
}

impl Default for DeliveryOption {
    fn default() -> Self {
        Self { mode: None, event_schema: EventSchema::default(), concurrency: 1 }
    }
}

fn one() -> u32 {
    1
}

/// What each element of a batch is: a whole CloudEvent, or only its `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum EventSchema {
    #[default]
    CloudEvents,
    RawData,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// `event-streaming` (Kafka supports nothing else); absent means the same.
    #[serde(default)]
    pub mode: Option<String>,
    /// Consumers, ≥ 1 (FC: at most the topic's partitions). Default 1.
    #[serde(default = "one")]
    pub maximum_tasks: u32,
    #[serde(default)]
    pub errors_tolerance: ErrorsTolerance,
    #[serde(default)]
    pub retry_strategy: RetryStrategy,
    #[serde(default)]
    pub dead_letter_queue: Option<DeadLetterQueue>,
    #[serde(default)]
    pub batch_window: BatchWindow,
    /// Nubis extension: per-key ordering. Absent: none (batches run in any order, up to the
    /// concurrency).
    #[serde(default)]
    pub ordering_key: Option<OrderingKey>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            mode: None,
            maximum_tasks: 1,
            errors_tolerance: ErrorsTolerance::default(),
            retry_strategy: RetryStrategy::default(),
            dead_letter_queue: None,
            batch_window: BatchWindow::default(),
            ordering_key: None,
        }
    }
}

/// What the messages of one ordering group share (`runOptions.orderingKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OrderingKey {
    /// The Kafka message key; a message without one counts as the empty key.
    #[serde(rename = "messageKey")]
    MessageKey,
}

/// After the last retry: `NONE` blocks the stream (the default), `ALL` dead-letters (or drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ErrorsTolerance {
    #[serde(rename = "NONE")]
    #[default]
    None,
    #[serde(rename = "ALL")]
    All,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryStrategy {
    #[serde(default)]
    pub push_retry_strategy: PushRetryStrategy,
    #[serde(default)]
    pub maximum_event_age_in_seconds: Option<u64>,
    #[serde(default)]
    pub maximum_retry_attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PushRetryStrategy {
    /// Up to 3 retries, 10–20 s apart.
    #[default]
    BackoffRetry,
    /// Up to 176 retries, 1 s doubling to 512 s.
    ExponentialDecayRetry,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterQueue {
    pub arn: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchWindow {
    /// Messages per batch, 1..=10000. Default 1.
    #[serde(default = "one")]
    pub count_based_window: u32,
    /// Seconds to wait for a batch to fill, 0..=15 (0: push at once). Default 0.
    #[serde(default)]
    pub time_based_window: u32,
}

impl Default for BatchWindow {
    fn default() -> Self {
        Self { count_based_window: 1, time_based_window: 0 }
    }
}

impl KafkaTriggerConfig {
    pub fn parse(config: &str) -> Result<Self, ValidationError> {
        let c: Self = from_config_str(config)?;
        let bad = |field: &str, msg: String| Err(ValidationError::new(&format!("triggerConfig.{field}"), msg));
        let source = &c.event_source_config;
        if source.event_source_type != "Kafka" {
            return bad(
                "eventSourceConfig.eventSourceType",
                format!("'{}' is not supported: Nubis supports only Kafka sources for eventbridge triggers", source.event_source_type),
            );
        }
        let p = "eventSourceConfig.eventSourceParameters.sourceKafkaParameters";
        let Some(kafka) = &source.event_source_parameters.source_kafka_parameters else {
            return bad(p, "is required for a Kafka source".into());
        };
        if kafka.topic.trim().is_empty() {
            return bad(&format!("{p}.Topic"), "must not be empty".into());
        }
        if kafka.consumer_group.trim().is_empty() {
            return bad(&format!("{p}.ConsumerGroup"), "must not be empty".into());
        }
        if let Some(b) = &kafka.brokers
            && b.split(',').any(|hp| hp.trim().rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()))
        {
            return bad(&format!("{p}.Brokers"), "must be host:port[,host:port...]".into());
        }
        if let Some(mode) = &c.run_options.mode
            && mode != "event-streaming"
        {
            return bad("runOptions.mode", format!("'{mode}' is not supported: Kafka sources run in event-streaming mode"));
        }
        let concurrency = c.event_sink_config.delivery_option.concurrency;
        if !(1..=300).contains(&concurrency) {
            return bad("eventSinkConfig.deliveryOption.concurrency", "must be between 1 and 300".into());
        }
        if c.run_options.maximum_tasks < 1 {
            return bad("runOptions.maximumTasks", "must be at least 1".into());
        }
        let w = &c.run_options.batch_window;
        if !(1..=10_000).contains(&w.count_based_window) {
            return bad("runOptions.batchWindow.CountBasedWindow", "must be between 1 and 10000".into());
        }
        if w.time_based_window > 15 {
            return bad("runOptions.batchWindow.TimeBasedWindow", "must be between 0 and 15 (seconds)".into());
        }
        if let Some(dlq) = &c.run_options.dead_letter_queue {
            dead_letter_topic(&dlq.arn)?;
        }
        if c.run_options.ordering_key.is_some() && c.async_invocation_type {
            return bad(
                "runOptions.orderingKey",
                "needs sync delivery (asyncInvocationType: false): async invocations of one key would run in any order".into(),
            );
        }
        Ok(c)
    }

    /// The topic dead letters go to, if any (the config was validated).
    pub fn dead_letter_topic(&self) -> Option<String> {
        self.run_options.dead_letter_queue.as_ref().and_then(|d| dead_letter_topic(&d.arn).ok())
    }

    /// The source parameters (present in a validated config).
    pub fn source(&self) -> &SourceKafkaParameters {
        self.event_source_config.event_source_parameters.source_kafka_parameters.as_ref().expect("validated: a Kafka source")
    }
}

/// The topic of a dead-letter ARN: `kafka://<topic>` or `acs:kafka:<region>:<account>:topics/<topic>`.
pub fn dead_letter_topic(arn: &str) -> Result<String, ValidationError> {
    let bad = |why: String| {
        ValidationError::new(
            "triggerConfig.runOptions.deadLetterQueue.Arn",
            format!(
                "{why}: Nubis dead-letters to a Kafka topic on the trigger's brokers, named kafka://<topic> or \
                 acs:kafka:<region>:<account>:topics/<topic>"
            ),
        )
    };
    let arn = arn.trim();
    let topic = match arn.strip_prefix("kafka://") {
        Some(topic) => topic,
        // acs:kafka:<region>:<account>:<resource>; region and account are not checked.
        None => match arn.splitn(5, ':').collect::<Vec<_>>().as_slice() {
            ["acs", "kafka", _, _, resource] => resource.strip_prefix("topics/").ok_or_else(|| bad(format!("'{arn}' names no topics/<topic>")))?,
            _ => return Err(bad(format!("'{arn}' is not supported"))),
        },
    };
    if !is_valid_topic(topic) {
        return Err(bad(format!("'{topic}' is not a valid topic (1 to 249 of A-Z a-z 0-9 . _ -)")));
    }
    Ok(topic.to_string())
}
