//! Function CRUD: CreateFunction, GetFunction, ListFunctions, UpdateFunction, DeleteFunction,
//! GetFunctionCode.
//!
//! Order of work in a write: validate everything (config, code zip) before touching storage;
//! store the code blob (content-addressed, so a retry is harmless); then one metadata write.
//! If that write fails, the blob is removed again unless another function uses it, so a
//! refused create leaves nothing behind.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::qualifier;
use super::{AppState, no_content, paging};
use crate::codestore::package;
use crate::model::{Function, FunctionConfig, FunctionName, FunctionRecord, RuntimeKind, Tag};
use crate::store::StoreError;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputCode {
    /// The code zip, base64.
    pub zip_file: Option<String>,
    /// CRC-64/XZ of the zip as a decimal string; verified when given.
    pub checksum: Option<String>,
    pub oss_bucket_name: Option<String>,
    pub oss_object_name: Option<String>,
}

/// CreateFunctionInput: `functionName`, `code`, `tags`, and every field of [`FunctionConfig`].
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateFunctionInput {
    pub function_name: String,
    pub code: Option<InputCode>,
    pub tags: Option<Vec<Tag>>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

/// UpdateFunctionInput: any config field (absent ones keep their value) and `code`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFunctionInput {
    pub code: Option<InputCode>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    pub prefix: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct QualifierParam {
    /// `LATEST` (default), a version id, or an alias (its `versionId`).
    pub qualifier: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListFunctionsOutput {
    pub functions: Vec<Function>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OutputFuncCode {
    /// Directly downloadable for a limited time, no signature needed.
    pub url: String,
    pub checksum: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}


/// Revisions are microseconds since the epoch, forced upward: a function deleted and created
/// again never shares a revision with instances of its previous life.
fn next_revision(prev: Option<i64>) -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    prev.map_or(now, |p| now.max(p + 1))
}

fn api(st: &AppState, f: &FunctionRecord) -> Function {
    f.to_api(&st.cfg.server.region, &st.cfg.server.account_id)
}

/// Decode and check a code zip off the async runtime. Returns (checksum, size, zip).
async fn accept_code(st: &AppState, code: &InputCode) -> Result<(String, u64, Bytes), ApiError> {
    if code.oss_bucket_name.is_some() || code.oss_object_name.is_some() {
        return Err(ApiError::invalid("code from OSS buckets is not supported by Nubis; send code.zipFile"));
    }
    let zip_b64 = code.zip_file.clone().ok_or_else(|| ApiError::invalid("code.zipFile is required"))?;
    let limits = package::Limits {
        max_zip_bytes: st.cfg.limits.max_code_zip_bytes,
        max_unzipped_bytes: st.cfg.limits.max_code_unzipped_bytes,
        max_entries: st.cfg.limits.max_code_zip_entries,
    };
    let given = code.checksum.clone().filter(|c| !c.is_empty());
    tokio::task::spawn_blocking(move || {
        let zip = base64::engine::general_purpose::STANDARD
            .decode(zip_b64.trim())
            .map_err(|_| package::PackageError::NotBase64)?;
        package::inspect(&zip, limits)?;
        let sum = package::checksum(&zip);
        if let Some(given) = given
            && given != sum
        {
            return Err(package::PackageError::ChecksumMismatch { given, actual: sum });
        }
        Ok((sum, zip.len() as u64, Bytes::from(zip)))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// How long a cluster keeps a package after the last function stopped using it: other
/// controllers may still start instances of the old revision for as long as their function
/// cache holds it (1 s), and agents may be fetching it for a start already under way.
const CODE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// A package the function (or a deleted version) no longer uses: removed now on a single box;
/// in a cluster after [`CODE_GRACE`] (references counted again then; a package left by a
/// restart meanwhile is never read again and only takes space).
pub(super) async fn retire_code(st: &AppState, checksum: String) {
    if st.etcd.is_none() {
        return collect_code(st, &checksum).await;
    }
    let st = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(CODE_GRACE).await;
        collect_code(&st, &checksum).await;
    });
}

/// Remove a code blob no function and no version references any more (best effort: an orphan
/// blob is only wasted space, never wrong data).
async fn collect_code(st: &AppState, checksum: &str) {
    if checksum.is_empty() {
        return;
    }
    let _gc = st.code_gc.lock().await;
    match st.store.code_references(checksum).await {
        Ok(0) => {
            if let Err(e) = st.code.delete(checksum).await {
                tracing::warn!(checksum, "removing unused code package: {e:#}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(checksum, "counting code references: {e:#}"),
    }
}

#[utoipa::path(post, path = "/2023-03-30/functions", tag = "functions",
    request_body = CreateFunctionInput,
    responses((status = 200, body = Function), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_function(State(st): State<AppState>, body: Bytes) -> Result<Json<Function>, ApiError> {
    let input: CreateFunctionInput = parse_json(&body)?;
    let name = FunctionName::parse(&input.function_name)?;
    let config = FunctionConfig::from_create(input.config)?;
    let (checksum, size, zip) = match (&input.code, config.runtime.kind()) {
        (Some(code), _) => accept_code(&st, code).await?,
        (None, RuntimeKind::CustomContainer) => (String::new(), 0, Bytes::new()),
        (None, _) => return Err(ApiError::invalid("code is required for this runtime")),
    };
    if st.store.get_function(name.as_str()).await?.is_some() {
        return Err(already_exists(&name));
    }
    let now = crate::model::now_iso();
    let record = FunctionRecord {
        name,
        version: None,
        function_id: uuid::Uuid::new_v4().to_string(),
        config,
        code_checksum: checksum.clone(),
        code_size: size,
        revision: next_revision(None),
        tags: input.tags.unwrap_or_default(),
        created_time: now.clone(),
        last_modified_time: now,
        controls: Default::default(),
    };
    let gc = st.code_gc.lock().await;
    if !checksum.is_empty() {
        st.code.put(&checksum, zip).await?;
    }
    let inserted = st.store.insert_function(&record).await;
    drop(gc);
    if let Err(e) = inserted {
        collect_code(&st, &checksum).await;
        return Err(match e {
            StoreError::AlreadyExists => already_exists(&record.name),
            e => e.into(),
        });
    }
    tracing::info!(function = %record.name, runtime = %record.config.runtime, "function created");
    Ok(Json(api(&st, &record)))
}

fn already_exists(name: &FunctionName) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, "FunctionAlreadyExists", format!("function '{name}' already exists"))
}

pub async fn load(st: &AppState, name: &str) -> Result<FunctionRecord, ApiError> {
    st.store.get_function(name).await?.ok_or_else(|| ApiError::function_not_found(name))
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}", tag = "functions",
    params(("functionName" = String, Path), QualifierParam),
    responses((status = 200, body = Function), (status = 404, body = ErrorBody)))]
pub async fn get_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<QualifierParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Function>, ApiError> {
    let Query(q) = q?;
    let f = qualifier::resolve_for_read(&st, &name, q.qualifier.as_deref()).await?.f;
    Ok(Json(api(&st, &f)))
}

#[utoipa::path(get, path = "/2023-03-30/functions", tag = "functions", params(ListParams),
    responses((status = 200, body = ListFunctionsOutput), (status = 400, body = ErrorBody)))]
pub async fn list_functions(
    State(st): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListFunctionsOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let start_after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    let mut rows = st.store.list_functions(q.prefix.as_deref().unwrap_or(""), &start_after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(rows[rows.len() - 1].name.as_str())
    });
    Ok(Json(ListFunctionsOutput { functions: rows.iter().map(|f| api(&st, f)).collect(), next_token }))
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}", tag = "functions",
    params(("functionName" = String, Path)), request_body = UpdateFunctionInput,
    responses((status = 200, body = Function), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn update_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Function>, ApiError> {
    let input: UpdateFunctionInput = parse_json(&body)?;
    let old = load(&st, &name).await?;
    if let Some(n) = input.config.get("functionName")
        && n.as_str() != Some(name.as_str())
    {
        return Err(ApiError::invalid("functionName cannot be changed"));
    }
    let config = old.config.merged_with(input.config)?;
    let code = match &input.code {
        Some(c) => Some(accept_code(&st, c).await?),
        None => None,
    };
    let mut new = FunctionRecord { config, revision: next_revision(Some(old.revision)), last_modified_time: crate::model::now_iso(), ..old.clone() };
    let gc = st.code_gc.lock().await;
    if let Some((checksum, size, zip)) = code {
        st.code.put(&checksum, zip).await?;
        new.code_checksum = checksum;
        new.code_size = size;
    }
    let updated = st.store.update_function(&new, old.revision).await;
    drop(gc);
    if let Err(e) = updated {
        if new.code_checksum != old.code_checksum {
            collect_code(&st, &new.code_checksum).await;
        }
        return Err(e.into());
    }
    st.functions.invalidate(&name);
    // LATEST's pool only: the versions' instances run their frozen config and code.
    st.rm.retire(&crate::scheduler::pool_key(&name, None), new.revision);
    if new.code_checksum != old.code_checksum {
        retire_code(&st, old.code_checksum.clone()).await;
    }
    tracing::info!(function = %name, "function updated");
    Ok(Json(api(&st, &new)))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}", tag = "functions",
    params(("functionName" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
              (status = 412, body = ErrorBody, description = "FunctionNotEmpty: the function still has triggers")))]
pub async fn delete_function(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let f = load(&st, &name).await?;
    super::triggers::refuse_if_triggered(&st, &name).await?;
    // Its versions and aliases go in the same transaction.
    let Some(version_codes) = st.store.delete_function(&name).await? else {
        return Err(ApiError::function_not_found(&name));
    };
    st.functions.invalidate_function(&name);
    st.rm.retire_function(&name, next_revision(Some(f.revision)));
    // Queued events of the function end Invalid when the dispatcher meets them.
    if let Err(e) = st.store.delete_async_state_of_function(&name).await {
        tracing::warn!(function = %name, "removing async tasks and configs: {e:#}");
    }
    retire_code(&st, f.code_checksum.clone()).await;
    for checksum in version_codes.into_iter().filter(|c| *c != f.code_checksum) {
        retire_code(&st, checksum).await;
    }
    tracing::info!(function = %name, "function deleted");
    Ok(no_content())
}

/// The HMAC that makes a code link valid: over name, checksum and expiry.
pub fn code_link_mac(key: &[u8; 32], name: &str, checksum: &str, expires: i64) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{name}\n{checksum}\n{expires}").as_bytes());
    mac
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/code", tag = "functions",
    params(("functionName" = String, Path), QualifierParam),
    responses((status = 200, body = OutputFuncCode), (status = 404, body = ErrorBody)))]
pub async fn get_function_code(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<QualifierParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OutputFuncCode>, ApiError> {
    let Query(q) = q?;
    let f = qualifier::resolve_for_read(&st, &name, q.qualifier.as_deref()).await?.f;
    if f.code_checksum.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "CodeNotFound",
            format!("function '{name}' runs a container image and has no code package"),
        ));
    }
    let base = super::public_base_url(&st, &headers);
    let expires = chrono::Utc::now().timestamp() + st.cfg.auth.code_url_ttl().as_secs() as i64;
    let sig = hex::encode(code_link_mac(&st.code_url_key, &name, &f.code_checksum, expires).finalize().into_bytes());
    Ok(Json(OutputFuncCode {
        url: format!("{base}/nubis/code/{name}?checksum={}&expires={expires}&signature={sig}", f.code_checksum),
        checksum: f.code_checksum.clone(),
    }))
}

/// Cached record for the invoke path; loads and caches on a miss.
pub async fn cached(st: &AppState, name: &str) -> Result<Arc<FunctionRecord>, ApiError> {
    if let Some(f) = st.functions.get(name) {
        return Ok(f);
    }
    match load(st, name).await {
        Ok(f) => {
            let f = Arc::new(f);
            st.functions.put(f.clone());
            Ok(f)
        }
        // An expired entry (cluster mode) is still the last known record: while the database
        // is unreachable, warm calls go on with it instead of failing.
        Err(e) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE => match st.functions.get_stale(name) {
            Some(f) => {
                tracing::warn!(function = %name, "database unavailable; invoking with the last known function record");
                Ok(f)
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}
