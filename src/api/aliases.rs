//! CreateAlias, GetAlias, UpdateAlias, ListAliases, DeleteAlias.
//!
//! An alias points at a published version (never LATEST) and may send a share of the calls to
//! one more version: `additionalVersionWeight = {"<versionId>": weight}`, weight in 0..=1, at
//! most one entry, not the alias's own version, and the version must exist. Body checks are
//! [`AliasInput`]'s; whether the versions exist is checked by the store under the function's
//! lock, so a version cannot be deleted between the check and the write.

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
use crate::model::version::{Alias, AliasInput};
use crate::store::{AliasWrite, DeleteAlias};

/// CreateAliasInput: `aliasName` and `versionId` required; `description`,
/// `additionalVersionWeight` optional. UpdateAliasInput: the same but `aliasName`, all optional.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasBody {
    pub alias_name: Option<String>,
    pub version_id: Option<String>,
    pub description: Option<String>,
    pub additional_version_weight: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListAliasesParams {
    pub prefix: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAliasesOutput {
    pub aliases: Vec<Alias>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn parse_input(body: &[u8]) -> Result<AliasInput, ApiError> {
    let map: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    Ok(AliasInput::parse(map)?)
}

fn alias_exists(name: &str, alias: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "AliasAlreadyExists", format!("alias '{alias}' of function '{name}' already exists"))
}

/// The answer to a store write, for function `name` and alias `alias`.
fn written(st: &AppState, name: &str, alias: &str, w: AliasWrite) -> Result<Json<Alias>, ApiError> {
    match w {
        AliasWrite::Done(a) => {
            // Calls through this controller route by the new alias from now on.
            st.functions.invalidate_alias(name, alias);
            Ok(Json(a.to_api()))
        }
        AliasWrite::NoFunction => Err(ApiError::function_not_found(name)),
        AliasWrite::NoVersion(v) => Err(ApiError::version_not_found(name, v)),
        AliasWrite::Exists => Err(alias_exists(name, alias)),
        AliasWrite::NoAlias => Err(ApiError::alias_not_found(name, alias)),
        AliasWrite::Invalid(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/aliases", tag = "aliases",
    params(("functionName" = String, Path)), request_body = AliasBody,
    responses((status = 200, body = Alias), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_alias(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Alias>, ApiError> {
    let alias = parse_input(&body)?.into_new(&name, &crate::model::now_iso())?;
    let w = st.store.create_alias(&alias).await?;
    written(&st, &name, &alias.alias_name, w)
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/aliases/{aliasName}", tag = "aliases",
    params(("functionName" = String, Path), ("aliasName" = String, Path)),
    responses((status = 200, body = Alias), (status = 404, body = ErrorBody)))]
pub async fn get_alias(State(st): State<AppState>, Path((name, alias)): Path<(String, String)>) -> Result<Json<Alias>, ApiError> {
    match st.store.get_alias(&name, &alias).await? {
        Some(a) => Ok(Json(a.to_api())),
        None => {
            load(&st, &name).await?;
            Err(ApiError::alias_not_found(&name, &alias))
        }
    }
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/aliases/{aliasName}", tag = "aliases",
    params(("functionName" = String, Path), ("aliasName" = String, Path)), request_body = AliasBody,
    responses((status = 200, body = Alias), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_alias(
    State(st): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Alias>, ApiError> {
    let input = parse_input(&body)?;
    let w = st.store.update_alias(&name, &alias, &input, &crate::model::now_iso()).await?;
    written(&st, &name, &alias, w)
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/aliases", tag = "aliases",
    params(("functionName" = String, Path), ListAliasesParams),
    responses((status = 200, body = ListAliasesOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_aliases(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ListAliasesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListAliasesOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let start_after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    load(&st, &name).await?;
    let mut rows = st.store.list_aliases(&name, q.prefix.as_deref().unwrap_or(""), &start_after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(&rows[rows.len() - 1].alias_name)
    });
    Ok(Json(ListAliasesOutput { aliases: rows.iter().map(|a| a.to_api()).collect(), next_token }))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/aliases/{aliasName}", tag = "aliases",
    params(("functionName" = String, Path), ("aliasName" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
              (status = 412, body = ErrorBody, description = "ProvisionConfigExist: a provision config is set on the alias")))]
pub async fn delete_alias(State(st): State<AppState>, Path((name, alias)): Path<(String, String)>) -> Result<Response, ApiError> {
    match st.store.delete_alias(&name, &alias).await? {
        DeleteAlias::Deleted => {}
        DeleteAlias::NoAlias => {
            load(&st, &name).await?;
            return Err(ApiError::alias_not_found(&name, &alias));
        }
        // FC's code for a delete refused while provisioned instances are configured.
        DeleteAlias::Provisioned => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "ProvisionConfigExist",
                format!(
                    "alias '{alias}' of function '{name}' has a provision config; \
                     delete it first (DeleteProvisionConfig with qualifier={alias})"
                ),
            ));
        }
    }
    st.functions.invalidate_alias(&name, &alias);
    if let Err(e) = st.store.delete_async_config(&name, &alias).await {
        tracing::warn!(function = %name, alias, "removing the alias's async config: {e:#}");
    }
    tracing::info!(function = %name, alias, "alias deleted");
    Ok(no_content())
}
