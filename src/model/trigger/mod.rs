//! Triggers (FC 3.0 §4.3; fc-triggers.md §0): a named source of invocations under a function,
//! aimed at one qualifier (LATEST, a version or an alias).
//!
//! `triggerConfig` travels as a **JSON string**. It is stored exactly as the caller sent it and
//! echoed back byte for byte (the fc3 tool diffs `JSON.parse(triggerConfig)` against its own
//! config), and it is validated into a typed [`TriggerConfig`] at every write; the engines that
//! run triggers parse the stored string again ([`TriggerRecord::config`]).
//!
//! Nubis runs three kinds: `http` ([`http`]), `timer` ([`timer`]) and `eventbridge` with a Kafka
//! source ([`kafka`]). The other FC types name cloud services Nubis does not have (OSS, SLS,
//! MNS, Tablestore, CDN) and are refused with a message saying so. Each kind's module owns its
//! config type and its `parse(&str)`, so a kind can grow without touching this file.

pub mod http;
pub mod kafka;
pub mod timer;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::ValidationError;
use super::function::is_valid_name;
use super::version::{Qualifier, check_description};

/// FC's trigger types; only the first three run on Nubis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerType {
    Http,
    Timer,
    /// An EventBridge event stream; Nubis supports Kafka sources only.
    EventBridge,
}

/// FC types that exist but name a cloud service Nubis has no counterpart of.
const FOREIGN_TYPES: [&str; 5] = ["oss", "log", "mns_topic", "tablestore", "cdn_events"];

impl TriggerType {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "http" => Ok(Self::Http),
            "timer" => Ok(Self::Timer),
            "eventbridge" => Ok(Self::EventBridge),
            s if FOREIGN_TYPES.contains(&s) => Err(ValidationError::new(
                "triggerType",
                format!("'{s}' triggers are not supported by Nubis; supported types: http, timer, eventbridge (Kafka sources)"),
            )),
            s => Err(ValidationError::new(
                "triggerType",
                format!("'{s}' is not a trigger type; expected one of http, timer, eventbridge, {}", FOREIGN_TYPES.join(", ")),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Timer => "timer",
            Self::EventBridge => "eventbridge",
        }
    }
}

impl std::fmt::Display for TriggerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated `triggerConfig`, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerConfig {
    Http(http::HttpTriggerConfig),
    Timer(timer::TimerTriggerConfig),
    /// `eventbridge` with `eventSourceType: Kafka` (boxed: several times the others' size).
    Kafka(Box<kafka::KafkaTriggerConfig>),
}

impl TriggerConfig {
    /// Validate `config` (the JSON string) as the config of a `trigger_type` trigger. Errors
    /// name the field, prefixed `triggerConfig.`.
    pub fn parse(trigger_type: TriggerType, config: &str) -> Result<Self, ValidationError> {
        match trigger_type {
            TriggerType::Http => http::HttpTriggerConfig::parse(config).map(Self::Http),
            TriggerType::Timer => timer::TimerTriggerConfig::parse(config).map(Self::Timer),
            TriggerType::EventBridge => kafka::KafkaTriggerConfig::parse(config).map(|k| Self::Kafka(Box::new(k))),
        }
    }
}

/// Deserialize a config string into `T`, with errors naming the field path inside
/// `triggerConfig` (`triggerConfig.runOptions.batchWindow: ...`). Shared by the kinds' parsers.
pub(crate) fn from_config_str<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, ValidationError> {
    if config.trim().is_empty() {
        return Err(ValidationError::new("triggerConfig", "is required (a JSON object, sent as a string)"));
    }
    let not_json = |e: serde_json::Error| ValidationError::new("triggerConfig", format!("is not valid JSON: {e}"));
    // serde reads a struct from an array too; FC's configs are objects.
    if !config.trim_start().starts_with('{') {
        serde_json::from_str::<serde::de::IgnoredAny>(config).map_err(not_json)?;
        return Err(ValidationError::new("triggerConfig", "must be a JSON object (sent as a string)"));
    }
    let mut de = serde_json::Deserializer::from_str(config);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return not_json(inner);
        }
        let field = if path == "." || path.is_empty() { "triggerConfig".to_string() } else { format!("triggerConfig.{path}") };
        ValidationError::new(&field, inner.to_string())
    })?;
    de.end().map_err(not_json)?;
    Ok(parsed)
}

/// A stored trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    pub function_name: String,
    pub trigger_name: String,
    pub trigger_id: String,
    pub trigger_type: TriggerType,
    /// The `triggerConfig` JSON string exactly as the caller sent it.
    pub trigger_config: String,
    /// `LATEST`, a version id or an alias name, in canonical form.
    pub qualifier: String,
    pub description: String,
    pub source_arn: String,
    pub invocation_role: String,
    pub created_time: String,
    pub last_modified_time: String,
}

/// The URLs of an HTTP trigger (`httpTrigger` in the Trigger document).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTriggerUrls {
    pub url_internet: String,
    pub url_intranet: String,
}

/// The FC `Trigger` document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub trigger_id: String,
    pub trigger_name: String,
    pub trigger_type: String,
    /// The JSON string as sent at create or the last update.
    pub trigger_config: String,
    pub qualifier: String,
    pub description: String,
    pub source_arn: String,
    pub invocation_role: String,
    /// Always `Success`: Nubis applies a trigger when it is written.
    pub status: String,
    /// The function's ARN.
    pub target_arn: String,
    pub created_time: String,
    pub last_modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_trigger: Option<HttpTriggerUrls>,
}

impl TriggerRecord {
    /// The stored config, parsed (it was validated when written).
    pub fn config(&self) -> Result<TriggerConfig, ValidationError> {
        TriggerConfig::parse(self.trigger_type, &self.trigger_config)
    }

    /// `urls`: for http triggers, where Nubis serves them (see `crate::triggers::http`).
    pub fn to_api(&self, region: &str, account_id: &str, urls: Option<HttpTriggerUrls>) -> Trigger {
        Trigger {
            trigger_id: self.trigger_id.clone(),
            trigger_name: self.trigger_name.clone(),
            trigger_type: self.trigger_type.to_string(),
            trigger_config: self.trigger_config.clone(),
            qualifier: self.qualifier.clone(),
            description: self.description.clone(),
            source_arn: self.source_arn.clone(),
            invocation_role: self.invocation_role.clone(),
            status: "Success".into(),
            target_arn: super::function_arn(region, account_id, &self.function_name),
            created_time: self.created_time.clone(),
            last_modified_time: self.last_modified_time.clone(),
            http_trigger: urls.filter(|_| self.trigger_type == TriggerType::Http),
        }
    }
}

/// The fields of a CreateTrigger/UpdateTrigger body; `None` = not given. Typed here, field by
/// field, so a wrong JSON type is an InvalidArgument naming the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerInput {
    pub trigger_name: Option<String>,
    pub trigger_type: Option<String>,
    pub trigger_config: Option<String>,
    pub qualifier: Option<String>,
    pub description: Option<String>,
    pub source_arn: Option<String>,
    pub invocation_role: Option<String>,
}

impl TriggerInput {
    pub fn parse(mut body: Map<String, Value>) -> Result<Self, ValidationError> {
        // The SDKs send unset fields as null or leave them out; both mean "not given".
        body.retain(|_, v| !v.is_null());
        let string = |field: &str| match body.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) if field == "triggerConfig" => {
                Err(ValidationError::new(field, "must be a string holding the JSON config (FC sends the object serialized)"))
            }
            Some(_) => Err(ValidationError::new(field, "must be a string")),
        };
        Ok(Self {
            trigger_name: string("triggerName")?,
            trigger_type: string("triggerType")?,
            trigger_config: string("triggerConfig")?,
            qualifier: string("qualifier")?,
            description: string("description")?,
            source_arn: string("sourceArn")?,
            invocation_role: string("invocationRole")?,
        })
    }

    /// A new trigger from a CreateTrigger body, config validated. Whether the qualifier names
    /// an existing version or alias is the store's check (under the function's lock).
    pub fn into_new(self, function_name: &str, now: &str) -> Result<TriggerRecord, ValidationError> {
        let trigger_name = self.trigger_name.ok_or_else(|| ValidationError::missing("triggerName"))?;
        check_name(&trigger_name)?;
        let trigger_type = TriggerType::parse(&self.trigger_type.ok_or_else(|| ValidationError::missing("triggerType"))?)?;
        let trigger_config = self.trigger_config.ok_or_else(|| ValidationError::missing("triggerConfig"))?;
        TriggerConfig::parse(trigger_type, &trigger_config)?;
        check_description(self.description.as_deref())?;
        Ok(TriggerRecord {
            function_name: function_name.to_string(),
            trigger_name,
            trigger_id: uuid::Uuid::new_v4().to_string(),
            trigger_type,
            trigger_config,
            qualifier: canonical_qualifier(self.qualifier.as_deref()),
            description: self.description.unwrap_or_default(),
            source_arn: self.source_arn.unwrap_or_default(),
            invocation_role: self.invocation_role.unwrap_or_default(),
            created_time: now.to_string(),
            last_modified_time: now.to_string(),
        })
    }

    /// An UpdateTrigger body laid over the stored trigger: `triggerConfig`, `qualifier`,
    /// `description` and `invocationRole` change; the name, the type and `sourceArn` cannot.
    pub fn merged_into(&self, old: &TriggerRecord, now: &str) -> Result<TriggerRecord, ValidationError> {
        for (field, given, stored) in [
            ("triggerName", &self.trigger_name, old.trigger_name.as_str()),
            ("triggerType", &self.trigger_type, old.trigger_type.as_str()),
            ("sourceArn", &self.source_arn, old.source_arn.as_str()),
        ] {
            if given.as_deref().is_some_and(|g| g != stored) {
                return Err(ValidationError::new(field, "cannot be changed; delete the trigger and create it again"));
            }
        }
        let trigger_config = match &self.trigger_config {
            Some(c) => {
                TriggerConfig::parse(old.trigger_type, c)?;
                c.clone()
            }
            None => old.trigger_config.clone(),
        };
        check_description(self.description.as_deref())?;
        Ok(TriggerRecord {
            trigger_config,
            qualifier: self.qualifier.as_deref().map_or_else(|| old.qualifier.clone(), |q| canonical_qualifier(Some(q))),
            description: self.description.clone().unwrap_or_else(|| old.description.clone()),
            invocation_role: self.invocation_role.clone().unwrap_or_else(|| old.invocation_role.clone()),
            last_modified_time: now.to_string(),
            ..old.clone()
        })
    }
}

/// fc-triggers.md §0: 1–128 characters, letters, digits, `-` and `_`, not starting with a digit
/// or `-` (the function name rule).
pub fn check_name(name: &str) -> Result<(), ValidationError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ValidationError::new("triggerName", "must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$"))
    }
}

/// `LATEST` when absent or empty; a version id or alias name as given. A qualifier that can
/// name nothing (`007`, `a/b`) is kept as given and found missing by the store, as for calls.
fn canonical_qualifier(q: Option<&str>) -> String {
    Qualifier::parse(q).map_or_else(|bad| bad.0, |q| q.to_string())
}

#[cfg(test)]
mod tests;
