//! Domain types, validated at the edge. No I/O here.

pub mod async_task;
pub mod function;
pub mod runtime;
pub mod scaling;
pub mod trigger;
pub mod version;

use serde::Serialize;
use utoipa::ToSchema;

pub use function::{FunctionConfig, FunctionName};
pub use runtime::{Runtime, RuntimeKind};

/// A caller's mistake in one field; becomes a 400 InvalidArgument naming the field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_string(), message: message.into() }
    }
    pub fn missing(field: &str) -> Self {
        Self::new(field, "is required")
    }
}

/// A stored function: its validated config plus what the platform computed.
/// `revision` increases on every update; instances serve exactly one revision.
///
/// The same shape carries a published version's frozen config and code (`version` is then
/// `Some`), so everything that runs a function (scheduler, invoker, instance spec) runs a
/// version the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRecord {
    pub name: FunctionName,
    /// None: LATEST, the function as it is now. Some(id): the immutable version `id`.
    pub version: Option<u64>,
    pub function_id: String,
    pub config: FunctionConfig,
    /// CRC-64/XZ of the code zip as a decimal string; empty for custom containers without code.
    pub code_checksum: String,
    pub code_size: u64,
    pub revision: i64,
    pub tags: Vec<Tag>,
    pub created_time: String,
    pub last_modified_time: String,
    /// Function-wide switches that are not part of its code or config: changing them makes no
    /// new revision (instances keep running). A version's record carries its function's.
    pub controls: FunctionControls,
}

/// Set by PutConcurrencyConfig and Enable/DisableFunctionInvocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionControls {
    /// Most calls of the function (all versions) in flight at once; beyond it sync calls are
    /// throttled and async ones wait in the queue. None: no reservation.
    pub reserved_concurrency: Option<u32>,
    /// DisableFunctionInvocation: calls are refused until it is enabled again.
    pub invocation_disabled: bool,
    pub disabled_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct Tag {
    #[serde(rename = "Key", alias = "key")]
    pub key: String,
    #[serde(rename = "Value", alias = "value", default)]
    pub value: String,
}

/// The FC `Function` document returned by Create/Get/Update/List.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Function {
    pub function_name: String,
    pub function_id: String,
    pub function_arn: String,
    pub code_checksum: String,
    pub code_size: u64,
    pub created_time: String,
    pub last_modified_time: String,
    /// Always `Active` once stored: Nubis creates synchronously.
    pub state: String,
    pub last_update_status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Present while DisableFunctionInvocation holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_restriction: Option<InvocationRestriction>,
    #[serde(flatten)]
    pub config: FunctionConfig,
}

/// FC's `FunctionRestriction`: why calls of the function are refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvocationRestriction {
    pub disable: bool,
    pub reason: String,
}

impl FunctionRecord {
    pub fn arn(&self, region: &str, account_id: &str) -> String {
        function_arn(region, account_id, self.name.as_str())
    }

    /// What runs: `LATEST` or the version id (`x-fc-invocation-service-version`).
    pub fn version_name(&self) -> String {
        self.version.map_or_else(|| version::LATEST.to_string(), |v| v.to_string())
    }

    pub fn to_api(&self, region: &str, account_id: &str) -> Function {
        Function {
            function_name: self.name.to_string(),
            function_id: self.function_id.clone(),
            function_arn: self.arn(region, account_id),
            code_checksum: self.code_checksum.clone(),
            code_size: self.code_size,
            created_time: self.created_time.clone(),
            last_modified_time: self.last_modified_time.clone(),
            state: "Active".into(),
            last_update_status: "Successful".into(),
            tags: self.tags.clone(),
            invocation_restriction: self.controls.invocation_disabled.then(|| InvocationRestriction {
                disable: true,
                reason: self.controls.disabled_reason.clone(),
            }),
            config: self.config.clone(),
        }
    }
}

/// `acs:fc:<region>:<account>:functions/<name>`: a function's ARN, whatever the qualifier.
pub fn function_arn(region: &str, account_id: &str, function: &str) -> String {
    format!("acs:fc:{region}:{account_id}:functions/{function}")
}

/// FC 3.0 style request id: `1-<8 hex seconds>-<8 hex>-<12 hex>`.
pub fn new_request_id() -> String {
    let secs = chrono::Utc::now().timestamp() as u32;
    let r: u128 = rand::random();
    format!("1-{secs:08x}-{:08x}-{:012x}", (r >> 64) as u32, (r as u64) & 0xffff_ffff_ffff)
}

/// ISO-8601 UTC with seconds, as FC prints times: `2023-04-01T08:15:27Z`.
pub fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
