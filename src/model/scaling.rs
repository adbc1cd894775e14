//! Provisioned instances and reserved concurrency (FC 3.0 §4.5), validated at the edge.
//!
//! A **provision config** asks for `target` instances of one qualifier (LATEST or an alias) to
//! be kept running whether or not calls come; one per (function, qualifier). A **concurrency
//! config** caps the calls of a function (all its versions) in flight at once; it is a column
//! of the function (see [`super::FunctionControls`]), not a record of its own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::ValidationError;

/// FC's bound on `target` and `defaultTarget`.
pub const MAX_PROVISION_TARGET: u32 = 10_000;
/// Far above what one cluster can run at once; the bound keeps the value an integer on every
/// engine and refuses typos such as an extra digit group.
pub const MAX_RESERVED_CONCURRENCY: u32 = 1_000_000;
/// The longest `reason` DisableFunctionInvocation keeps.
pub const MAX_DISABLE_REASON: usize = 256;

/// PutProvisionConfigInput, validated. Only `target` is acted on; the scaling policies are kept
/// as given so that a Get shows what was put.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionConfig {
    /// Instances to keep, 0..=10000 (0 keeps the config but no instance).
    pub target: u32,
    /// FC's newer name for the target when no policy is active; echoed, `target` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_target: Option<u32>,
    #[serde(rename = "alwaysAllocateCPU")]
    pub always_allocate_cpu: bool,
    #[serde(rename = "alwaysAllocateGPU")]
    pub always_allocate_gpu: bool,
    /// `[{name, scheduleExpression, target, startTime, endTime, timeZone}]`, as given.
    #[serde(default)]
    pub scheduled_actions: Vec<Value>,
    /// `[{name, metricType, metricTarget, minCapacity, maxCapacity, ...}]`, as given.
    #[serde(default)]
    pub target_tracking_policies: Vec<Value>,
}

impl ProvisionConfig {
    /// From a PutProvisionConfig body. `target` is required; a body with only `defaultTarget`
    /// (the field FC now recommends) takes it as the target.
    pub fn from_input(body: Map<String, Value>) -> Result<Self, ValidationError> {
        let set = |k: &str| body.get(k).filter(|v| !v.is_null());
        let default_target = set("defaultTarget").map(|v| count_in("defaultTarget", v, MAX_PROVISION_TARGET)).transpose()?;
        let target = match (set("target"), default_target) {
            (Some(v), _) => count_in("target", v, MAX_PROVISION_TARGET)?,
            (None, Some(d)) => d,
            (None, None) => return Err(ValidationError::missing("target")),
        };
        Ok(Self {
            target,
            default_target,
            always_allocate_cpu: set("alwaysAllocateCPU").map(|v| boolean("alwaysAllocateCPU", v)).transpose()?.unwrap_or(true),
            always_allocate_gpu: set("alwaysAllocateGPU").map(|v| boolean("alwaysAllocateGPU", v)).transpose()?.unwrap_or(true),
            scheduled_actions: objects("scheduledActions", set("scheduledActions"))?,
            target_tracking_policies: objects("targetTrackingPolicies", set("targetTrackingPolicies"))?,
        })
    }
}

/// A stored provision config, with the version its qualifier serves at the time of reading.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionConfigRecord {
    pub function_name: String,
    /// `LATEST` or an alias name.
    pub qualifier: String,
    pub config: ProvisionConfig,
    /// The pool to keep warm: None for LATEST, the alias's `versionId` for an alias (an
    /// alias's additional version gets no provisioned instances).
    pub version: Option<u64>,
    pub created_time: String,
    pub last_modified_time: String,
}

/// The FC `ProvisionConfig` document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionConfigOutput {
    /// The function's ARN (without qualifier: the qualifier is its own field).
    pub function_arn: String,
    pub qualifier: String,
    pub target: u32,
    /// Instances of the qualifier's version that are ready now.
    pub current: u32,
    /// Why instances could not be kept, if they could not; empty otherwise.
    pub current_error: String,
    #[serde(rename = "alwaysAllocateCPU")]
    pub always_allocate_cpu: bool,
    #[serde(rename = "alwaysAllocateGPU")]
    pub always_allocate_gpu: bool,
    pub default_target: u32,
    #[schema(value_type = Vec<Object>)]
    pub scheduled_actions: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub target_tracking_policies: Vec<Value>,
}

impl ProvisionConfigRecord {
    pub fn to_api(&self, region: &str, account_id: &str, current: u32) -> ProvisionConfigOutput {
        let c = &self.config;
        ProvisionConfigOutput {
            function_arn: super::function_arn(region, account_id, &self.function_name),
            qualifier: self.qualifier.clone(),
            target: c.target,
            current,
            current_error: String::new(),
            always_allocate_cpu: c.always_allocate_cpu,
            always_allocate_gpu: c.always_allocate_gpu,
            default_target: c.default_target.unwrap_or(c.target),
            scheduled_actions: c.scheduled_actions.clone(),
            target_tracking_policies: c.target_tracking_policies.clone(),
        }
    }

    /// The `start_after` cursor of `Store::list_provision_configs` that resumes after this
    /// record. Contains a NUL byte: encode it before putting it in a nextToken.
    pub fn cursor(&self) -> String {
        format!("{}\0{}", self.function_name, self.qualifier)
    }
}

/// A function's reserved concurrency, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyConfigRecord {
    pub function_name: String,
    pub reserved_concurrency: u32,
}

/// The FC `ConcurrencyConfig` document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyConfig {
    pub function_arn: String,
    pub reserved_concurrency: u32,
}

impl ConcurrencyConfigRecord {
    pub fn to_api(&self, region: &str, account_id: &str) -> ConcurrencyConfig {
        ConcurrencyConfig {
            function_arn: super::function_arn(region, account_id, &self.function_name),
            reserved_concurrency: self.reserved_concurrency,
        }
    }
}

/// PutConcurrencyConfig's `reservedConcurrency`: required, 0..=[`MAX_RESERVED_CONCURRENCY`]
/// (0 lets no call in).
pub fn parse_reserved_concurrency(body: &Map<String, Value>) -> Result<u32, ValidationError> {
    match body.get("reservedConcurrency").filter(|v| !v.is_null()) {
        Some(v) => count_in("reservedConcurrency", v, MAX_RESERVED_CONCURRENCY),
        None => Err(ValidationError::missing("reservedConcurrency")),
    }
}

/// DisableFunctionInvocation's body: `abortOngoingRequest` (default false) and `reason`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisableInvocation {
    pub abort_ongoing_request: bool,
    pub reason: String,
}

impl DisableInvocation {
    pub fn from_input(body: &Map<String, Value>) -> Result<Self, ValidationError> {
        let set = |k: &str| body.get(k).filter(|v| !v.is_null());
        let abort_ongoing_request =
            set("abortOngoingRequest").map(|v| boolean("abortOngoingRequest", v)).transpose()?.unwrap_or(false);
        let reason = match set("reason") {
            None => String::new(),
            Some(Value::String(s)) if s.chars().count() <= MAX_DISABLE_REASON => s.clone(),
            Some(Value::String(_)) => {
                return Err(ValidationError::new("reason", format!("must be at most {MAX_DISABLE_REASON} characters")));
            }
            Some(v) => return Err(ValidationError::new("reason", format!("must be a string, got {v}"))),
        };
        Ok(Self { abort_ongoing_request, reason })
    }
}

fn count_in(field: &str, v: &Value, max: u32) -> Result<u32, ValidationError> {
    match v.as_i64() {
        Some(n) if (0..=i64::from(max)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ValidationError::new(field, format!("must be between 0 and {max}, got {n}"))),
        None => Err(ValidationError::new(field, format!("must be an integer, got {v}"))),
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, ValidationError> {
    v.as_bool().ok_or_else(|| ValidationError::new(field, format!("must be a boolean, got {v}")))
}

/// An array of objects (kept as given), or empty when absent.
fn objects(field: &str, v: Option<&Value>) -> Result<Vec<Value>, ValidationError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if let Some((i, bad)) = items.iter().enumerate().find(|(_, x)| !x.is_object()) {
                return Err(ValidationError::new(&format!("{field}[{i}]"), format!("must be an object, got {bad}")));
            }
            Ok(items.clone())
        }
        Some(other) => Err(ValidationError::new(field, format!("must be an array, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(v: Value) -> Result<ProvisionConfig, ValidationError> {
        ProvisionConfig::from_input(v.as_object().unwrap().clone())
    }

    #[test]
    fn provision_input_defaults_bounds_and_fields() {
        let c = input(json!({"target": 3})).unwrap();
        assert_eq!((c.target, c.default_target, c.always_allocate_cpu, c.always_allocate_gpu), (3, None, true, true));
        assert!(c.scheduled_actions.is_empty() && c.target_tracking_policies.is_empty());
        assert_eq!(input(json!({"target": 0})).unwrap().target, 0);
        assert_eq!(input(json!({"target": 10000})).unwrap().target, 10000);
        assert_eq!(input(json!({"defaultTarget": 2})).unwrap().target, 2, "defaultTarget alone is the target");
        let both = input(json!({"target": 1, "defaultTarget": 2, "alwaysAllocateCPU": false})).unwrap();
        assert_eq!((both.target, both.default_target, both.always_allocate_cpu), (1, Some(2), false));
        let policies = json!({"target": 1, "scheduledActions": [{"name": "a", "target": 5}],
            "targetTrackingPolicies": [{"name": "t", "metricType": "CPUUtilization"}]});
        let p = input(policies).unwrap();
        assert_eq!((p.scheduled_actions.len(), p.target_tracking_policies.len()), (1, 1));

        for (body, field) in [
            (json!({}), "target"),
            (json!({"target": null}), "target"),
            (json!({"target": -1}), "target"),
            (json!({"target": 10001}), "target"),
            (json!({"target": 1.5}), "target"),
            (json!({"target": "3"}), "target"),
            (json!({"target": 1, "defaultTarget": 10001}), "defaultTarget"),
            (json!({"target": 1, "alwaysAllocateCPU": "yes"}), "alwaysAllocateCPU"),
            (json!({"target": 1, "scheduledActions": {}}), "scheduledActions"),
            (json!({"target": 1, "targetTrackingPolicies": [1]}), "targetTrackingPolicies[0]"),
        ] {
            let e = input(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn stored_form_round_trips_and_answers_default_target() {
        let c = input(json!({"target": 4, "scheduledActions": [{"name": "a"}]})).unwrap();
        let back: ProvisionConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let r = ProvisionConfigRecord {
            function_name: "f".into(),
            qualifier: "LATEST".into(),
            config: c,
            version: None,
            created_time: String::new(),
            last_modified_time: String::new(),
        };
        let out = serde_json::to_value(r.to_api("cn-hangzhou", "123", 2)).unwrap();
        assert_eq!(out["functionArn"], "acs:fc:cn-hangzhou:123:functions/f");
        assert_eq!((out["target"].as_u64(), out["defaultTarget"].as_u64(), out["current"].as_u64()), (Some(4), Some(4), Some(2)));
        assert_eq!(out["alwaysAllocateCPU"], true);
    }

    #[test]
    fn concurrency_and_disable_inputs() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(parse_reserved_concurrency(&m(json!({"reservedConcurrency": 0}))).unwrap(), 0);
        assert_eq!(parse_reserved_concurrency(&m(json!({"reservedConcurrency": 7}))).unwrap(), 7);
        for bad in [json!({}), json!({"reservedConcurrency": -1}), json!({"reservedConcurrency": "2"}), json!({"reservedConcurrency": 1_000_001})] {
            assert_eq!(parse_reserved_concurrency(&m(bad.clone())).expect_err(&bad.to_string()).field, "reservedConcurrency");
        }
        assert_eq!(DisableInvocation::from_input(&m(json!({}))).unwrap(), DisableInvocation::default());
        let d = DisableInvocation::from_input(&m(json!({"abortOngoingRequest": true, "reason": "offline"}))).unwrap();
        assert_eq!((d.abort_ongoing_request, d.reason.as_str()), (true, "offline"));
        assert_eq!(DisableInvocation::from_input(&m(json!({"reason": 3}))).unwrap_err().field, "reason");
        assert_eq!(DisableInvocation::from_input(&m(json!({"reason": "x".repeat(257)}))).unwrap_err().field, "reason");
        assert_eq!(DisableInvocation::from_input(&m(json!({"abortOngoingRequest": 1}))).unwrap_err().field, "abortOngoingRequest");
    }
}
