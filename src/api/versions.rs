//! PublishFunctionVersion, ListFunctionVersions, DeleteFunctionVersion.
//!
//! A version is LATEST's config and code frozen at publish (the code package is kept for as
//! long as any version uses it). Publishing when LATEST has not changed since the newest
//! version is refused as FC does, with 400 `VersionPublishError` "No changes were made since
//! last publish": deploy tools look for that code and message to reuse the newest version
//! instead of failing, and a second identical version would only add a number.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::functions::{load, retire_code};
use super::{AppState, no_content, paging};
use crate::model::version::{Version, check_description, parse_version_id};
use crate::store::{DeleteVersion, Publish};

#[derive(Default, Deserialize, ToSchema)]
pub struct PublishVersionInput {
    /// At most 256 characters.
    pub description: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListVersionsParams {
    /// `BACKWARD` (default: newest first) or `FORWARD` (oldest first).
    pub direction: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListVersionsOutput {
    pub versions: Vec<Version>,
    pub direction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/versions", tag = "versions",
    params(("functionName" = String, Path)), request_body = PublishVersionInput,
    responses((status = 200, body = Version),
              (status = 400, body = ErrorBody, description = "InvalidArgument, or VersionPublishError: nothing changed since the newest version"),
              (status = 404, body = ErrorBody)))]
pub async fn publish_function_version(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Version>, ApiError> {
    // The SDKs send `{}` without a description; a bare POST is the same request.
    let input: PublishVersionInput = if body.iter().all(u8::is_ascii_whitespace) {
        PublishVersionInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?
    };
    check_description(input.description.as_deref())?;
    match st.store.publish_version(&name, input.description.as_deref().unwrap_or(""), &crate::model::now_iso()).await? {
        Publish::Published(v) => {
            tracing::info!(function = %name, version = v.version_id, "version published");
            Ok(Json(v.to_api()))
        }
        Publish::Unchanged { latest } => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "VersionPublishError",
            format!("No changes were made since last publish: LATEST of function '{name}' is the same as version {latest}"),
        )),
        Publish::NoFunction => Err(ApiError::function_not_found(&name)),
    }
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/versions", tag = "versions",
    params(("functionName" = String, Path), ListVersionsParams),
    responses((status = 200, body = ListVersionsOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_function_versions(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ListVersionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListVersionsOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let forward = match q.direction.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("BACKWARD") => false,
        Some("FORWARD") => true,
        Some(_) => return Err(ApiError::invalid("direction must be BACKWARD or FORWARD")),
    };
    let after = paging::decode(q.next_token.as_deref())?
        .map(|t| parse_version_id(&t).ok_or_else(paging::bad_token))
        .transpose()?;
    load(&st, &name).await?;
    let mut rows = st.store.list_versions(&name, after, forward, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(&rows[rows.len() - 1].version_id.to_string())
    });
    Ok(Json(ListVersionsOutput {
        versions: rows.iter().map(|v| v.to_api()).collect(),
        direction: if forward { "FORWARD" } else { "BACKWARD" }.to_string(),
        next_token,
    }))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/versions/{versionId}", tag = "versions",
    params(("functionName" = String, Path), ("versionId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "VersionInUse: an alias routes to the version")))]
pub async fn delete_function_version(
    State(st): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(v) = parse_version_id(&version) else {
        load(&st, &name).await?;
        return Err(ApiError::version_not_found(&name, &version));
    };
    match st.store.delete_version(&name, v).await? {
        DeleteVersion::Deleted { code_checksum } => {
            st.functions.invalidate_version(&name, v);
            // A revision later than any the version had: callers holding it read it again (gone).
            st.rm.retire(&crate::scheduler::pool_key(&name, Some(v)), chrono::Utc::now().timestamp_micros());
            if let Err(e) = st.store.delete_async_config(&name, &version).await {
                tracing::warn!(function = %name, version = v, "removing the version's async config: {e:#}");
            }
            retire_code(&st, code_checksum).await;
            tracing::info!(function = %name, version = v, "version deleted");
            Ok(no_content())
        }
        DeleteVersion::InUse(aliases) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "VersionInUse",
            format!(
                "version {v} of function '{name}' is routed to by alias(es) {}; update or delete them first",
                aliases.join(", ")
            ),
        )),
        DeleteVersion::NoVersion => Err(ApiError::version_not_found(&name, v)),
        DeleteVersion::NoFunction => Err(ApiError::function_not_found(&name)),
    }
}
