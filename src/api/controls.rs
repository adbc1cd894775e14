//! A function's controls: PutConcurrencyConfig, GetConcurrencyConfig, DeleteConcurrencyConfig,
//! ListConcurrencyConfigs, EnableFunctionInvocation, DisableFunctionInvocation.
//!
//! Both are columns of the function's row, not part of its config: setting them makes no new
//! revision, so running instances keep serving. Every record of the function (LATEST and its
//! versions) carries them, so each write drops the function's cached records, and the next call
//! through this controller reads the new value (other controllers within their cache's TTL).
//!
//! While invocation is disabled, every call of the function is refused, sync and async, on
//! any qualifier: 412 `FunctionInvocationDisabled` with the reason in the message
//! ([`ApiError::invocation_disabled`]; FC documents no code for it, and 412 is FC's status for
//! calls that the function's present state does not allow, as `CAExited`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::functions::load;
use super::{AppState, no_content, paging};
use crate::model::scaling::{ConcurrencyConfig, ConcurrencyConfigRecord, DisableInvocation, parse_reserved_concurrency};

/// PutConcurrencyInput.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutConcurrencyInput {
    /// Most calls of the function (all versions) in flight at once; required, 0..=1000000.
    pub reserved_concurrency: Option<u32>,
}

/// DisableFunctionInvocation's body (may be empty).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisableFunctionInvocationInput {
    /// Also take the function's instances out of service: they take no new call (calls
    /// already running finish) and are stopped once idle.
    pub abort_ongoing_request: Option<bool>,
    /// Told to callers in the refusal; at most 256 characters.
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SwitchOutput {
    pub success: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListConcurrencyConfigsParams {
    /// Only this function's config.
    pub function_name: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListConcurrencyConfigsOutput {
    pub configs: Vec<ConcurrencyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// A JSON object body; an empty body is an empty object (the SDKs send none for some calls).
fn object_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

fn config_missing(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ConcurrencyConfigNotFound",
        format!("function '{name}' has no reserved concurrency"),
    )
}

fn concurrency_output(st: &AppState, name: &str, reserved: u32) -> ConcurrencyConfig {
    ConcurrencyConfigRecord { function_name: name.to_string(), reserved_concurrency: reserved }
        .to_api(&st.cfg.server.region, &st.cfg.server.account_id)
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/concurrency", tag = "scaling",
    params(("functionName" = String, Path)), request_body = PutConcurrencyInput,
    responses((status = 200, body = ConcurrencyConfig), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_concurrency_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ConcurrencyConfig>, ApiError> {
    let reserved = parse_reserved_concurrency(&object_body(&body)?)?;
    if !st.store.set_reserved_concurrency(&name, Some(reserved)).await? {
        return Err(ApiError::function_not_found(&name));
    }
    st.functions.invalidate_controls(&name);
    tracing::info!(function = %name, reserved, "reserved concurrency set");
    Ok(Json(concurrency_output(&st, &name, reserved)))
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/concurrency", tag = "scaling",
    params(("functionName" = String, Path)),
    responses((status = 200, body = ConcurrencyConfig),
              (status = 404, body = ErrorBody, description = "FunctionNotFound or ConcurrencyConfigNotFound")))]
pub async fn get_concurrency_config(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<ConcurrencyConfig>, ApiError> {
    let f = load(&st, &name).await?;
    let reserved = f.controls.reserved_concurrency.ok_or_else(|| config_missing(&name))?;
    Ok(Json(concurrency_output(&st, &name, reserved)))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/concurrency", tag = "scaling",
    params(("functionName" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody, description = "FunctionNotFound or ConcurrencyConfigNotFound")))]
pub async fn delete_concurrency_config(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if load(&st, &name).await?.controls.reserved_concurrency.is_none() {
        return Err(config_missing(&name));
    }
    if !st.store.set_reserved_concurrency(&name, None).await? {
        return Err(ApiError::function_not_found(&name));
    }
    st.functions.invalidate_controls(&name);
    tracing::info!(function = %name, "reserved concurrency removed");
    Ok(no_content())
}

#[utoipa::path(get, path = "/2023-03-30/concurrency-configs", tag = "scaling", params(ListConcurrencyConfigsParams),
    responses((status = 200, body = ListConcurrencyConfigsOutput), (status = 400, body = ErrorBody)))]
pub async fn list_concurrency_configs(
    State(st): State<AppState>,
    q: Result<Query<ListConcurrencyConfigsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListConcurrencyConfigsOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    let function = q.function_name.as_deref().filter(|f| !f.is_empty());
    let mut rows = st.store.list_concurrency_configs(function, &after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(&rows[rows.len() - 1].function_name)
    });
    let (region, account) = (&st.cfg.server.region, &st.cfg.server.account_id);
    Ok(Json(ListConcurrencyConfigsOutput { configs: rows.iter().map(|r| r.to_api(region, account)).collect(), next_token }))
}

#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/invoke/enable", tag = "scaling",
    params(("functionName" = String, Path)),
    responses((status = 200, body = SwitchOutput), (status = 404, body = ErrorBody)))]
pub async fn enable_function_invocation(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<SwitchOutput>, ApiError> {
    if !st.store.set_invocation_disabled(&name, false, "").await? {
        return Err(ApiError::function_not_found(&name));
    }
    st.functions.invalidate_controls(&name);
    tracing::info!(function = %name, "invocation enabled");
    Ok(Json(SwitchOutput { success: true }))
}

/// Refuse every call of the function until EnableFunctionInvocation. With
/// `abortOngoingRequest`, its instances are also taken out of service: calls already running
/// in them finish (an instance cannot be interrupted mid-call here), and they are stopped once
/// idle.
#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/invoke/disable", tag = "scaling",
    params(("functionName" = String, Path)), request_body = DisableFunctionInvocationInput,
    responses((status = 200, body = SwitchOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn disable_function_invocation(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SwitchOutput>, ApiError> {
    let input = DisableInvocation::from_input(&object_body(&body)?)?;
    if !st.store.set_invocation_disabled(&name, true, &input.reason).await? {
        return Err(ApiError::function_not_found(&name));
    }
    st.functions.invalidate_controls(&name);
    if input.abort_ongoing_request {
        // Revision 0 leaves every pool's revision as it is (the code did not change, and a
        // later one would make the pools refuse the function's current records); it only
        // drains the instances of LATEST and of every version.
        st.rm.retire_function(&name, 0);
    }
    tracing::info!(function = %name, reason = %input.reason, abort = input.abort_ongoing_request, "invocation disabled");
    Ok(Json(SwitchOutput { success: true }))
}
