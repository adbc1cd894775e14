//! GetFunctionLogs, a Nubis extension (FC keeps logs in a separate log service): a function's
//! log lines (and the platform's summary of each invocation) by request id, instance, time
//! range and text, newest first, paged. Signed like every FC call. The lines come from the
//! search cluster when `[opensearch]` is enabled (every node's), else from this node's store.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, paging};
use super::error::{ApiError, ErrorBody};
use super::functions::load;
use crate::logstore::{LogQuery, StoredLine};

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    pub request_id: Option<String>,
    pub instance_id: Option<String>,
    /// Epoch ms, inclusive.
    pub start_time: Option<i64>,
    /// Epoch ms, inclusive.
    pub end_time: Option<i64>,
    /// A case-sensitive substring of the line.
    pub query: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetFunctionLogsOutput {
    pub logs: Vec<StoredLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/logs", tag = "logs",
    params(("functionName" = String, Path), LogParams),
    responses((status = 200, body = GetFunctionLogsOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn get_function_logs(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GetFunctionLogsOutput>, ApiError> {
    let Query(q) = q?;
    load(&st, &name).await?;
    let limit = paging::limit(q.limit, 100, 1000)?;
    let cursor = paging::decode(q.next_token.as_deref())?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let query = LogQuery {
        function: name,
        request_id: nonempty(q.request_id),
        instance_id: nonempty(q.instance_id),
        from_ms: q.start_time,
        to_ms: q.end_time,
        text: nonempty(q.query),
        before_id: None,
        limit,
    };
    let page = st.log_search.page(&query, cursor.as_deref()).await?;
    Ok(Json(GetFunctionLogsOutput { logs: page.lines, next_token: page.next.as_deref().map(paging::encode) }))
}
