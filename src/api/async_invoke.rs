//! Async invocation API: accepting async invokes (202), async invoke configs
//! (Put/Get/Delete/ListAsyncInvokeConfigs) and async tasks (Get/List/StopAsyncTask).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, current_request_id};
use super::functions::load;
use super::qualifier::resolve_for_read;
use super::{AppState, no_content, paging};
use crate::dispatcher::{self, DispatchError};
use crate::model::async_task::{
    AsyncConfig, DestinationTarget, ORDERING_KEY_HEADER, OrderingKey, TaskStatus, is_valid_task_id, new_task_id,
};
use crate::store::{StoreError, TaskQuery};


impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(e) => e.into(),
            DispatchError::Queue(e) => ApiError::unavailable("async queue", e),
        }
    }
}

/// The Async branch of InvokeFunction: validate, queue, record, answer 202.
pub async fn accept(st: &AppState, name: &str, qualifier: &str, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let limit = st.cfg.limits.max_async_payload_bytes;
    if body.len() > limit {
        return Err(ApiError::too_large("asynchronous invocation payload", limit));
    }
    let task_id = match headers.get("x-fc-async-task-id").map(|v| v.to_str().unwrap_or("")) {
        None | Some("") => new_task_id(),
        Some(id) if is_valid_task_id(id) => id.to_string(),
        Some(_) => return Err(ApiError::invalid("x-fc-async-task-id must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$")),
    };
    // Bytes that are not even text fail the same check as any other bad key.
    let ordering_key = headers
        .get(ORDERING_KEY_HEADER)
        .map(|v| OrderingKey::parse(ORDERING_KEY_HEADER, std::str::from_utf8(v.as_bytes()).unwrap_or("\u{fffd}")))
        .transpose()?;
    // No read for duplicates first: the task row's key refuses them, and the message queued
    // before that is recognised as a ghost (another request id) and dropped by the dispatcher.
    let request_id = current_request_id();
    let ev = dispatcher::NewEvent {
        function: name,
        qualifier,
        task_id: &task_id,
        request_id: &request_id,
        payload: &body,
        ordering_key: ordering_key.as_ref(),
        origin: dispatcher::Origin::Invoke,
    };
    match dispatcher::submit_event(&st.store, st.queue.as_ref(), &ev).await {
        Ok(()) => {}
        Err(DispatchError::Store(StoreError::AlreadyExists)) => return Err(task_exists(&task_id)),
        Err(e) => return Err(e.into()),
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut().insert("x-fc-async-task-id", HeaderValue::from_str(&task_id).expect("validated id"));
    Ok(resp)
}

fn task_exists(id: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "AsyncTaskAlreadyExists", format!("async task '{id}' already exists"))
}

#[derive(Deserialize, IntoParams)]
pub struct QualifierQuery {
    /// `LATEST` (default), a version id, or an alias: each has a config of its own.
    pub qualifier: Option<String>,
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/async-invoke-config", tag = "async",
    params(("functionName" = String, Path), QualifierQuery), request_body = AsyncConfig,
    responses((status = 200, description = "AsyncConfig"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_async_invoke_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<QualifierQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let map: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    let cfg = AsyncConfig::from_input(map)?;
    for t in [cfg.on_success(), cfg.on_failure()].into_iter().flatten() {
        if let DestinationTarget::KafkaTopic { topic } = t
            && st.cfg.dispatcher.queue != "kafka"
        {
            return Err(ApiError::invalid(format!(
                "destination topic '{topic}': Kafka destinations need the Kafka queue backend, which is not configured"
            )));
        }
    }
    let qualifier = resolve_for_read(&st, &name, q.qualifier.as_deref()).await?.qualifier;
    let rec = st.store.put_async_config(&name, &qualifier, &cfg).await?;
    Ok(Json(rec.to_api(&st.cfg.server.region, &st.cfg.server.account_id)))
}

fn config_missing(name: &str, qualifier: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AsyncConfigNotExists",
        format!("async invoke config of function '{name}' qualifier '{qualifier}' does not exist"),
    )
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/async-invoke-config", tag = "async",
    params(("functionName" = String, Path), QualifierQuery),
    responses((status = 200, description = "AsyncConfig"), (status = 404, body = ErrorBody)))]
pub async fn get_async_invoke_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<QualifierQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let qualifier = resolve_for_read(&st, &name, q.qualifier.as_deref()).await?.qualifier;
    let rec = st.store.get_async_config(&name, &qualifier).await?.ok_or_else(|| config_missing(&name, &qualifier))?;
    Ok(Json(rec.to_api(&st.cfg.server.region, &st.cfg.server.account_id)))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/async-invoke-config", tag = "async",
    params(("functionName" = String, Path), QualifierQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_async_invoke_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<QualifierQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let qualifier = resolve_for_read(&st, &name, q.qualifier.as_deref()).await?.qualifier;
    if !st.store.delete_async_config(&name, &qualifier).await? {
        return Err(config_missing(&name, &qualifier));
    }
    Ok(no_content())
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListConfigsQuery {
    pub function_name: Option<String>,
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAsyncInvokeConfigsOutput {
    #[schema(value_type = Vec<Object>)]
    pub configs: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[utoipa::path(get, path = "/2023-03-30/async-invoke-configs", tag = "async", params(ListConfigsQuery),
    responses((status = 200, body = ListAsyncInvokeConfigsOutput), (status = 400, body = ErrorBody)))]
pub async fn list_async_invoke_configs(
    State(st): State<AppState>,
    q: Result<Query<ListConfigsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListAsyncInvokeConfigsOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    let function = q.function_name.as_deref().filter(|f| !f.is_empty());
    let mut rows = st.store.list_async_configs(function, &after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        let last = &rows[rows.len() - 1];
        paging::encode(&format!("{}\0{}", last.function_name, last.qualifier))
    });
    let (region, account) = (&st.cfg.server.region, &st.cfg.server.account_id);
    Ok(Json(ListAsyncInvokeConfigsOutput { configs: rows.iter().map(|r| r.to_api(region, account)).collect(), next_token }))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksQuery {
    pub qualifier: Option<String>,
    pub status: Option<String>,
    /// Task id prefix.
    pub prefix: Option<String>,
    pub limit: Option<u32>,
    pub next_token: Option<String>,
    /// `true`/`True`: include each task's payload.
    pub include_payload: Option<String>,
    /// `asc` or `desc` (default).
    pub sort_order_by_time: Option<String>,
    /// Epoch ms, inclusive.
    pub started_time_begin: Option<i64>,
    pub started_time_end: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAsyncTaskOutput {
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn parse_bool(field: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!("{field} must be true or false, got '{other}'"))),
    }
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/async-tasks", tag = "async",
    params(("functionName" = String, Path), ListTasksQuery),
    responses((status = 200, body = ListAsyncTaskOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_async_tasks(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ListTasksQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListAsyncTaskOutput>, ApiError> {
    let Query(q) = q?;
    load(&st, &name).await?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty()).map(str::parse::<TaskStatus>).transpose()?;
    let descending = match q.sort_order_by_time.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("desc") => true,
        Some("asc") => false,
        Some(o) => return Err(ApiError::invalid(format!("sortOrderByTime must be asc or desc, got '{o}'"))),
    };
    let after = match paging::decode(q.next_token.as_deref())? {
        None => None,
        Some(t) => {
            let (ms, id) = t.split_once(':').ok_or_else(paging::bad_token)?;
            Some((ms.parse().map_err(|_| paging::bad_token())?, id.to_string()))
        }
    };
    let include_payload = parse_bool("includePayload", q.include_payload.as_deref())?;
    let query = TaskQuery {
        function: name.clone(),
        qualifier: q.qualifier.filter(|s| !s.is_empty()),
        status,
        prefix: q.prefix.filter(|s| !s.is_empty()),
        started_from_ms: q.started_time_begin,
        started_to_ms: q.started_time_end,
        limit: limit + 1,
        after,
        descending,
        include_payload,
    };
    let mut rows = st.store.list_tasks(&query).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        let last = &rows[rows.len() - 1];
        paging::encode(&format!("{}:{}", last.created_ms, last.task_id))
    });
    let (region, account) = (&st.cfg.server.region, &st.cfg.server.account_id);
    Ok(Json(ListAsyncTaskOutput { tasks: rows.iter().map(|t| t.to_api(region, account, include_payload)).collect(), next_token }))
}

fn task_missing(name: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "AsyncTaskNotFound", format!("async task '{id}' of function '{name}' does not exist"))
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/async-tasks/{taskId}", tag = "async",
    params(("functionName" = String, Path), ("taskId" = String, Path), QualifierQuery),
    responses((status = 200, description = "AsyncTask"), (status = 404, body = ErrorBody)))]
pub async fn get_async_task(
    State(st): State<AppState>,
    Path((name, task_id)): Path<(String, String)>,
    q: Result<Query<QualifierQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    q?;
    load(&st, &name).await?;
    let t = st.store.get_task(&name, &task_id).await?.ok_or_else(|| task_missing(&name, &task_id))?;
    Ok(Json(t.to_api(&st.cfg.server.region, &st.cfg.server.account_id, true)))
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/async-tasks/{taskId}/stop", tag = "async",
    params(("functionName" = String, Path), ("taskId" = String, Path), QualifierQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop_async_task(
    State(st): State<AppState>,
    Path((name, task_id)): Path<(String, String)>,
    q: Result<Query<QualifierQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    q?;
    load(&st, &name).await?;
    let now = dispatcher::now_ms();
    let waiting = [TaskStatus::Enqueued, TaskStatus::Dequeued, TaskStatus::Retrying];
    let stop = crate::store::TaskChange {
        status: Some(TaskStatus::Stopped),
        event_detail: "stopped by StopAsyncTask".into(),
        at_ms: now,
        end_ms: Some(now),
        ..Default::default()
    };
    if st.store.transition_task(&name, &task_id, &waiting, &stop).await? {
        return Ok(no_content());
    }
    // Running: it cannot be recalled from the instance; it ends Stopped when the attempt ends
    // and is not retried.
    let stopping = crate::store::TaskChange {
        status: Some(TaskStatus::Stopping),
        event_detail: "stop requested while running".into(),
        at_ms: now,
        ..Default::default()
    };
    if st.store.transition_task(&name, &task_id, &[TaskStatus::Running], &stopping).await? {
        return Ok(no_content());
    }
    match st.store.get_task(&name, &task_id).await? {
        None => Err(task_missing(&name, &task_id)),
        Some(t) if t.status == TaskStatus::Stopping => Ok(no_content()),
        Some(t) => Err(ApiError::invalid(format!("async task '{task_id}' has already finished ({})", t.status.as_str()))),
    }
}
