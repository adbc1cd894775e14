//! PutProvisionConfig, GetProvisionConfig, DeleteProvisionConfig, ListProvisionConfigs.
//!
//! A provision config asks for `target` ready instances of one qualifier: LATEST or an alias
//! (the alias's own `versionId`; FC sets provisioned instances on LATEST or an alias, never on
//! a version id). This module stores the configs and reports `current`, the instances of the
//! qualifier's version that are ready now; keeping `target` instances is the resource
//! manager's work (it reads [`crate::store::Store::list_all_provision_configs`]).

use std::collections::HashMap;

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
use crate::model::scaling::{ProvisionConfig, ProvisionConfigOutput, ProvisionConfigRecord};
use crate::model::version::{LATEST, Qualifier};
use crate::scheduler::InstanceState;
use crate::store::ProvisionWrite;

#[derive(Deserialize, IntoParams)]
pub struct ProvisionQualifier {
    /// `LATEST` (default) or an alias name.
    pub qualifier: Option<String>,
}

/// PutProvisionConfigInput.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutProvisionConfigInput {
    /// Instances to keep ready, 0..=10000. Required (or give `defaultTarget`).
    pub target: Option<u32>,
    pub default_target: Option<u32>,
    /// Default true.
    #[serde(rename = "alwaysAllocateCPU")]
    pub always_allocate_cpu: Option<bool>,
    /// Default true.
    #[serde(rename = "alwaysAllocateGPU")]
    pub always_allocate_gpu: Option<bool>,
    /// Stored and returned as given; not acted on.
    #[schema(value_type = Option<Vec<Object>>)]
    pub scheduled_actions: Option<Vec<Value>>,
    /// Stored and returned as given; not acted on.
    #[schema(value_type = Option<Vec<Object>>)]
    pub target_tracking_policies: Option<Vec<Value>>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListProvisionConfigsParams {
    /// Only this function's configs.
    pub function_name: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListProvisionConfigsOutput {
    pub provision_configs: Vec<ProvisionConfigOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// The stored form of `qualifier`: `LATEST` or an alias name. A missing function is
/// FunctionNotFound first, as everywhere.
async fn provision_qualifier(st: &AppState, name: &str, q: Option<&str>) -> Result<String, ApiError> {
    match Qualifier::parse(q) {
        Ok(Qualifier::Latest) => Ok(LATEST.to_string()),
        Ok(Qualifier::Alias(a)) => Ok(a),
        Ok(Qualifier::Version(v)) => {
            load(st, name).await?;
            Err(ApiError::invalid(format!(
                "qualifier: provisioned instances are set on LATEST or an alias, not on version {v}; create an alias for it"
            )))
        }
        Err(bad) => {
            load(st, name).await?;
            Err(ApiError::invalid(format!("qualifier: {bad}")))
        }
    }
}

fn config_missing(name: &str, qualifier: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionConfigNotFound",
        format!("provision config of function '{name}' qualifier '{qualifier}' does not exist"),
    )
}

/// Why there is no config of `qualifier`: no function, no such alias, or no config.
async fn missing(st: &AppState, name: &str, qualifier: &str) -> ApiError {
    if let Err(e) = load(st, name).await {
        return e;
    }
    if qualifier != LATEST {
        match st.store.get_alias(name, qualifier).await {
            Ok(None) => return ApiError::alias_not_found(name, qualifier),
            Err(e) => return e.into(),
            Ok(Some(_)) => {}
        }
    }
    config_missing(name, qualifier)
}

/// Ready instances per pool (function, version), from the resource manager's table.
fn ready_instances(st: &AppState) -> HashMap<(String, Option<u64>), u32> {
    let mut ready = HashMap::new();
    for i in st.rm.instances().into_iter().filter(|i| i.state == InstanceState::Ready) {
        *ready.entry((i.function_name, i.version)).or_default() += 1;
    }
    ready
}

fn output(st: &AppState, r: &ProvisionConfigRecord, ready: &HashMap<(String, Option<u64>), u32>) -> ProvisionConfigOutput {
    let current = ready.get(&(r.function_name.clone(), r.version)).copied().unwrap_or(0);
    r.to_api(&st.cfg.server.region, &st.cfg.server.account_id, current)
}

/// Set how many instances of LATEST or of an alias to keep ready. `target` 0 is stored (the
/// config stays, no instance is kept). `scheduledActions` and `targetTrackingPolicies` are
/// validated as arrays of objects, stored and returned as given, but not acted on: `target`
/// alone decides how many instances are kept.
#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/provision-config", tag = "scaling",
    params(("functionName" = String, Path), ProvisionQualifier), request_body = PutProvisionConfigInput,
    responses((status = 200, body = ProvisionConfigOutput),
              (status = 400, body = ErrorBody, description = "InvalidArgument: a bad field, or a version id as qualifier"),
              (status = 404, body = ErrorBody, description = "FunctionNotFound or AliasNotFound")))]
pub async fn put_provision_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ProvisionQualifier>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<ProvisionConfigOutput>, ApiError> {
    let Query(q) = q?;
    let map: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    let cfg = ProvisionConfig::from_input(map)?;
    let qualifier = provision_qualifier(&st, &name, q.qualifier.as_deref()).await?;
    match st.store.put_provision_config(&name, &qualifier, &cfg, &crate::model::now_iso()).await? {
        ProvisionWrite::Done(r) => {
            tracing::info!(function = %name, qualifier, target = r.config.target, "provision config set");
            st.rm.provision_changed();
            Ok(Json(output(&st, &r, &ready_instances(&st))))
        }
        ProvisionWrite::NoFunction => Err(ApiError::function_not_found(&name)),
        ProvisionWrite::NoAlias => Err(ApiError::alias_not_found(&name, &qualifier)),
    }
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/provision-config", tag = "scaling",
    params(("functionName" = String, Path), ProvisionQualifier),
    responses((status = 200, body = ProvisionConfigOutput), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "FunctionNotFound, AliasNotFound or ProvisionConfigNotFound")))]
pub async fn get_provision_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ProvisionQualifier>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProvisionConfigOutput>, ApiError> {
    let Query(q) = q?;
    let qualifier = provision_qualifier(&st, &name, q.qualifier.as_deref()).await?;
    match st.store.get_provision_config(&name, &qualifier).await? {
        Some(r) => Ok(Json(output(&st, &r, &ready_instances(&st)))),
        None => Err(missing(&st, &name, &qualifier).await),
    }
}

/// Remove the config; the instances it kept are no longer kept (they serve calls until the
/// idle reaper stops them, like any other).
#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/provision-config", tag = "scaling",
    params(("functionName" = String, Path), ProvisionQualifier),
    responses((status = 204), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "FunctionNotFound, AliasNotFound or ProvisionConfigNotFound")))]
pub async fn delete_provision_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ProvisionQualifier>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let qualifier = provision_qualifier(&st, &name, q.qualifier.as_deref()).await?;
    if !st.store.delete_provision_config(&name, &qualifier).await? {
        return Err(missing(&st, &name, &qualifier).await);
    }
    tracing::info!(function = %name, qualifier, "provision config deleted");
    st.rm.provision_changed();
    Ok(no_content())
}

#[utoipa::path(get, path = "/2023-03-30/provision-configs", tag = "scaling", params(ListProvisionConfigsParams),
    responses((status = 200, body = ListProvisionConfigsOutput), (status = 400, body = ErrorBody)))]
pub async fn list_provision_configs(
    State(st): State<AppState>,
    q: Result<Query<ListProvisionConfigsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListProvisionConfigsOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    let function = q.function_name.as_deref().filter(|f| !f.is_empty());
    let mut rows = st.store.list_provision_configs(function, &after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(&rows[rows.len() - 1].cursor())
    });
    let ready = ready_instances(&st);
    Ok(Json(ListProvisionConfigsOutput { provision_configs: rows.iter().map(|r| output(&st, r, &ready)).collect(), next_token }))
}
