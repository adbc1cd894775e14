//! Function configuration: the FC 3.0 `CreateFunctionInput` / `UpdateFunctionInput` bodies are
//! parsed here into a validated [`FunctionConfig`]. Unknown FC fields (logConfig, vpcConfig, ...)
//! are kept and echoed back so SDK users see what they set, but Nubis does not act on them.
//!
//! Update is a partial update: the stored config is turned back into JSON, the body's fields are
//! laid over it, and the result goes through the same validation as a create, so a function can
//! never hold a config that a create would have refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::runtime::{Runtime, RuntimeKind};
use super::ValidationError;

pub const DEFAULT_PORT: u16 = 9000;
/// memorySize when none is given.
pub const DEFAULT_MEMORY_MB: u32 = 128;

/// The CPU a function gets when it names none: 1 vCPU per GB of memory, in twentieths, at least 0.05.
pub fn default_cpu(memory_mb: u32) -> f64 {
    ((f64::from(memory_mb) / 1024.0) * 20.0).ceil().max(1.0) / 20.0
}
const MAX_ENV_BYTES: usize = 4096;
const MAX_DESCRIPTION: usize = 256;
const MAX_HANDLER: usize = 128;

/// `^[A-Za-z_][A-Za-z0-9_-]{0,127}$`: function, alias and trigger names and task ids.
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A function name that passed [`is_valid_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(String);

impl FunctionName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if is_valid_name(s) {
            Ok(Self(s.to_string()))
        } else {
            Err(ValidationError::new(
                "functionName",
                "must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomRuntimeConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_config: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomContainerConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_config: Option<HealthCheckConfig>,
    /// Other FC fields (registryConfig, accelerationType, ...), kept verbatim.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLifecycleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer: Option<LifecycleHook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHook>,
}

/// The validated configuration of a function (everything but its name and code).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionConfig {
    #[schema(value_type = String, example = "python3.10")]
    pub runtime: Runtime,
    pub handler: String,
    pub description: String,
    /// MB, a multiple of 64 in 128..=32768.
    pub memory_size: u32,
    /// vCPU, a multiple of 0.05 in 0.05..=16.
    pub cpu: f64,
    /// MB: 512 or 10240.
    pub disk_size: u32,
    /// Seconds, 1..=86400.
    pub timeout: u32,
    /// Requests one instance serves at once, 1..=200.
    pub instance_concurrency: u32,
    pub environment_variables: BTreeMap<String, String>,
    pub internet_access: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_runtime_config: Option<CustomRuntimeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_container_config: Option<CustomContainerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_lifecycle_config: Option<InstanceLifecycleConfig>,
    /// FC fields Nubis stores and echoes but does not act on (logConfig, role, vpcConfig, ...).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// The fields a create or (merged) update body may hold. Typed so that a wrong JSON type is an
/// InvalidArgument naming the field, not a silent default.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionInput {
    runtime: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    memory_size: Option<i64>,
    cpu: Option<f64>,
    disk_size: Option<i64>,
    timeout: Option<i64>,
    instance_concurrency: Option<i64>,
    environment_variables: Option<BTreeMap<String, String>>,
    internet_access: Option<bool>,
    custom_runtime_config: Option<CustomRuntimeConfig>,
    custom_container_config: Option<CustomContainerConfig>,
    instance_lifecycle_config: Option<InstanceLifecycleConfig>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Keys that are not configuration: handled by the caller (code, name, tags) or computed.
const NON_CONFIG_KEYS: &[&str] = &[
    "code",
    "functionName",
    "tags",
    "resourceGroupId",
    "functionId",
    "functionArn",
    "createdTime",
    "lastModifiedTime",
    "codeChecksum",
    "codeSize",
    "state",
    "stateReason",
    "stateReasonCode",
    "lastUpdateStatus",
    "lastUpdateStatusReason",
    "lastUpdateStatusReasonCode",
];

/// The Python SDK serializes every unset list field as `[]` and some clients send `null`:
/// both mean "not given".
fn strip_unset(body: &mut Map<String, Value>) {
    body.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty())));
}

impl FunctionConfig {
    /// Validate a CreateFunction body (its `code`, `functionName` and `tags` are read by the caller).
    pub fn from_create(mut body: Map<String, Value>) -> Result<Self, ValidationError> {
        strip_unset(&mut body);
        for k in NON_CONFIG_KEYS {
            body.remove(*k);
        }
        Self::from_map(body)
    }

    /// Lay an UpdateFunction body over this config and validate the result.
    pub fn merged_with(&self, mut body: Map<String, Value>) -> Result<Self, ValidationError> {
        strip_unset(&mut body);
        for k in NON_CONFIG_KEYS {
            body.remove(*k);
        }
        let Value::Object(mut current) = serde_json::to_value(self).expect("config serializes")
        else {
            unreachable!("a struct serializes to an object")
        };
        current.extend(body);
        Self::from_map(current)
    }

    fn from_map(map: Map<String, Value>) -> Result<Self, ValidationError> {
        let input: FunctionInput = serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
            // serde cannot name the field through `flatten`; every field is optional, so the
            // culprit is the one key that fails on its own (error path only).
            let field = map
                .iter()
                .find(|(k, v)| serde_json::from_value::<FunctionInput>(serde_json::json!({ k.as_str(): v })).is_err())
                .map_or("body", |(k, _)| k.as_str());
            ValidationError::new(field, e.to_string())
        })?;
        input.validate()
    }

    /// The port the instance's server listens on.
    pub fn port(&self) -> u16 {
        self.custom_container_config
            .as_ref()
            .and_then(|c| c.port)
            .or_else(|| self.custom_runtime_config.as_ref().and_then(|c| c.port))
            .unwrap_or(DEFAULT_PORT)
    }

    pub fn health_check(&self) -> Option<&HealthCheckConfig> {
        self.custom_container_config
            .as_ref()
            .and_then(|c| c.health_check_config.as_ref())
            .or_else(|| {
                self.custom_runtime_config.as_ref().and_then(|c| c.health_check_config.as_ref())
            })
    }

    pub fn initializer(&self) -> Option<&LifecycleHook> {
        self.instance_lifecycle_config
            .as_ref()
            .and_then(|l| l.initializer.as_ref())
            .filter(|h| h.handler.as_deref().is_some_and(|s| !s.is_empty()) || !h.command.is_empty())
    }
}

fn in_range(field: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> Result<u32, ValidationError> {
    let v = v.unwrap_or(default);
    if (lo..=hi).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ValidationError::new(field, format!("must be between {lo} and {hi}, got {v}")))
    }
}

fn is_builtin_handler(h: &str) -> bool {
    // module path, a dot, then an identifier: `index.handler`, `src/app.main`.
    match h.rsplit_once('.') {
        Some((module, func)) => {
            !module.is_empty()
                && module.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
                && !module.split('/').any(|seg| seg == "..")
                && func.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && func.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        }
        None => false,
    }
}

fn is_env_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() <= 128
}

fn check_health(h: &HealthCheckConfig) -> Result<(), ValidationError> {
    let f = "healthCheckConfig";
    if let Some(url) = &h.http_get_url
        && (!url.starts_with('/') || url.len() > 2048 || url.chars().any(char::is_whitespace))
    {
        return Err(ValidationError::new(f, "httpGetUrl must be a path starting with '/'"));
    }
    let checks = [
        ("initialDelaySeconds", h.initial_delay_seconds, 0, 120),
        ("periodSeconds", h.period_seconds, 1, 120),
        ("timeoutSeconds", h.timeout_seconds, 1, 3),
        ("failureThreshold", h.failure_threshold, 1, 120),
        ("successThreshold", h.success_threshold, 1, 120),
    ];
    for (name, v, lo, hi) in checks {
        if let Some(v) = v
            && !(lo..=hi).contains(&v)
        {
            return Err(ValidationError::new(
                &format!("{f}.{name}"),
                format!("must be between {lo} and {hi}"),
            ));
        }
    }
    Ok(())
}

fn check_port(field: &str, port: Option<u16>) -> Result<(), ValidationError> {
    match port {
        Some(0) => Err(ValidationError::new(field, "must be between 1 and 65535")),
        _ => Ok(()),
    }
}

impl FunctionInput {
    fn validate(self) -> Result<FunctionConfig, ValidationError> {
        let runtime_name = self.runtime.ok_or_else(|| ValidationError::missing("runtime"))?;
        let runtime: Runtime =
            runtime_name.parse().map_err(|e: super::runtime::UnknownRuntime| {
                ValidationError::new("runtime", e.to_string())
            })?;
        let handler = self.handler.ok_or_else(|| ValidationError::missing("handler"))?;
        if handler.is_empty() || handler.len() > MAX_HANDLER {
            return Err(ValidationError::new("handler", "must be 1 to 128 characters"));
        }
        if runtime.is_builtin() && !is_builtin_handler(&handler) {
            return Err(ValidationError::new(
                "handler",
                format!("'{handler}' is not of the form <module>.<function>, e.g. index.handler"),
            ));
        }
        let description = self.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(ValidationError::new("description", "must be at most 256 characters"));
        }
        let memory_size = in_range("memorySize", self.memory_size, DEFAULT_MEMORY_MB.into(), 128, 32768)?;
        if memory_size % 64 != 0 {
            return Err(ValidationError::new("memorySize", "must be a multiple of 64"));
        }
        let cpu = match self.cpu {
            // Default: 1 vCPU per GB of memory, at least 0.05.
            None => default_cpu(memory_size),
            Some(c) => {
                let twentieths = c * 20.0;
                if !(0.05..=16.0).contains(&c) || (twentieths - twentieths.round()).abs() > 1e-6 {
                    return Err(ValidationError::new(
                        "cpu",
                        "must be a multiple of 0.05 between 0.05 and 16",
                    ));
                }
                c
            }
        };
        let disk_size = in_range("diskSize", self.disk_size, 512, 512, 10240)?;
        if disk_size != 512 && disk_size != 10240 {
            return Err(ValidationError::new("diskSize", "must be 512 or 10240"));
        }
        let timeout = in_range("timeout", self.timeout, 3, 1, 86400)?;
        let instance_concurrency = in_range("instanceConcurrency", self.instance_concurrency, 1, 1, 200)?;
        let environment_variables = self.environment_variables.unwrap_or_default();
        let mut env_bytes = 0;
        for (k, v) in &environment_variables {
            if !is_env_key(k) {
                return Err(ValidationError::new(
                    "environmentVariables",
                    format!("key '{}' must match ^[A-Za-z_][A-Za-z0-9_]*$", k.chars().take(64).collect::<String>()),
                ));
            }
            if v.contains('\0') {
                return Err(ValidationError::new("environmentVariables", "values may not contain NUL"));
            }
            env_bytes += k.len() + v.len();
        }
        if env_bytes > MAX_ENV_BYTES {
            return Err(ValidationError::new(
                "environmentVariables",
                format!("total size {env_bytes} bytes exceeds the limit of {MAX_ENV_BYTES}"),
            ));
        }
        if let Some(c) = &self.custom_runtime_config {
            check_port("customRuntimeConfig.port", c.port)?;
            if let Some(h) = &c.health_check_config {
                check_health(h)?;
            }
        }
        match (&self.custom_container_config, runtime.kind()) {
            (Some(c), RuntimeKind::CustomContainer) => {
                if c.image.is_empty() || c.image.len() > 512 || c.image.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                    return Err(ValidationError::new(
                        "customContainerConfig.image",
                        "must be a non-empty image reference without spaces",
                    ));
                }
                check_port("customContainerConfig.port", c.port)?;
                if let Some(h) = &c.health_check_config {
                    check_health(h)?;
                }
            }
            (None, RuntimeKind::CustomContainer) => {
                return Err(ValidationError::missing("customContainerConfig"));
            }
            (Some(_), _) => {
                return Err(ValidationError::new(
                    "customContainerConfig",
                    "is only allowed with runtime custom-container",
                ));
            }
            (None, _) => {}
        }
        if let Some(init) = self.instance_lifecycle_config.as_ref().and_then(|l| l.initializer.as_ref())
        {
            if let Some(t) = init.timeout
                && !(1..=600).contains(&t)
            {
                return Err(ValidationError::new(
                    "instanceLifecycleConfig.initializer.timeout",
                    "must be between 1 and 600",
                ));
            }
            if let Some(h) = &init.handler
                && runtime.is_builtin()
                && !h.is_empty()
                && !is_builtin_handler(h)
            {
                return Err(ValidationError::new(
                    "instanceLifecycleConfig.initializer.handler",
                    "must be of the form <module>.<function>",
                ));
            }
        }
        Ok(FunctionConfig {
            runtime,
            handler,
            description,
            memory_size,
            cpu,
            disk_size,
            timeout,
            instance_concurrency,
            environment_variables,
            internet_access: self.internet_access.unwrap_or(true),
            custom_runtime_config: self.custom_runtime_config,
            custom_container_config: self.custom_container_config,
            instance_lifecycle_config: self.instance_lifecycle_config,
            extra: self.extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<FunctionConfig, ValidationError> {
        FunctionConfig::from_create(v.as_object().unwrap().clone())
    }

    #[test]
    fn defaults_follow_fc() {
        let c = create(json!({"runtime": "python3.10", "handler": "index.handler"})).unwrap();
        assert_eq!((c.memory_size, c.timeout, c.disk_size, c.instance_concurrency), (128, 3, 512, 1));
        assert_eq!(c.cpu, 0.15);
        assert!(c.internet_access);
        assert_eq!(c.port(), 9000);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!({"handler": "index.handler"}), "runtime"),
            (json!({"runtime": "java8", "handler": "a.b"}), "runtime"),
            (json!({"runtime": "python3"}), "handler"),
            (json!({"runtime": "python3", "handler": "nodot"}), "handler"),
            (json!({"runtime": "python3", "handler": "a.b", "memorySize": 100}), "memorySize"),
            (json!({"runtime": "python3", "handler": "a.b", "memorySize": 200}), "memorySize"),
            (json!({"runtime": "python3", "handler": "a.b", "memorySize": 65536}), "memorySize"),
            (json!({"runtime": "python3", "handler": "a.b", "memorySize": "big"}), "memorySize"),
            (json!({"runtime": "python3", "handler": "a.b", "cpu": 0.07}), "cpu"),
            (json!({"runtime": "python3", "handler": "a.b", "cpu": 17}), "cpu"),
            (json!({"runtime": "python3", "handler": "a.b", "diskSize": 1024}), "diskSize"),
            (json!({"runtime": "python3", "handler": "a.b", "timeout": 0}), "timeout"),
            (json!({"runtime": "python3", "handler": "a.b", "timeout": 86401}), "timeout"),
            (json!({"runtime": "python3", "handler": "a.b", "instanceConcurrency": 0}), "instanceConcurrency"),
            (json!({"runtime": "python3", "handler": "a.b", "environmentVariables": {"1A": "x"}}), "environmentVariables"),
            (json!({"runtime": "python3", "handler": "a.b", "environmentVariables": {"A": "x".repeat(5000)}}), "environmentVariables"),
            (json!({"runtime": "python3", "handler": "a.b", "description": "d".repeat(300)}), "description"),
            (json!({"runtime": "custom-container", "handler": "x"}), "customContainerConfig"),
            (json!({"runtime": "custom-container", "handler": "x", "customContainerConfig": {"image": ""}}), "customContainerConfig.image"),
            (json!({"runtime": "python3", "handler": "a.b", "customContainerConfig": {"image": "x"}}), "customContainerConfig"),
            (json!({"runtime": "custom.debian12", "handler": "x", "customRuntimeConfig": {"port": 0}}), "customRuntimeConfig.port"),
            (json!({"runtime": "custom.debian12", "handler": "x", "customRuntimeConfig": {"port": 70000}}), "customRuntimeConfig"),
            (json!({"runtime": "custom.debian12", "handler": "x", "customRuntimeConfig": {"healthCheckConfig": {"httpGetUrl": "nope"}}}), "healthCheckConfig"),
        ];
        for (body, field) in cases {
            let err = create(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn update_is_partial_and_revalidated() {
        let c = create(json!({"runtime": "python3", "handler": "index.handler", "memorySize": 256,
            "environmentVariables": {"A": "1"}, "logConfig": {"project": "p"}}))
        .unwrap();
        let u = c.merged_with(json!({"timeout": 30, "tags": []}).as_object().unwrap().clone()).unwrap();
        assert_eq!((u.memory_size, u.timeout), (256, 30));
        assert_eq!(u.environment_variables["A"], "1");
        assert_eq!(u.extra["logConfig"], json!({"project": "p"}));
        assert!(c.merged_with(json!({"memorySize": 129}).as_object().unwrap().clone()).is_err());
    }

    #[test]
    fn python_sdk_empty_lists_mean_unset() {
        let c = create(json!({"runtime": "python3", "handler": "a.b", "layers": [], "tags": []})).unwrap();
        assert!(!c.extra.contains_key("layers"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("demo") && is_valid_name("_a-1") && is_valid_name(&"a".repeat(128)));
        assert!(!is_valid_name("") && !is_valid_name("1a") && !is_valid_name("-a"));
        assert!(!is_valid_name("a.b") && !is_valid_name(&"a".repeat(129)) && !is_valid_name("a/b"));
    }
}
