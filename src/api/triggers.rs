//! CreateTrigger, GetTrigger, UpdateTrigger, ListTriggers, DeleteTrigger.
//!
//! A trigger aims at one qualifier of its function (LATEST by default, or an existing version
//! or alias); a function version or alias has at most one http trigger. Body checks, the type
//! and the typed config are [`TriggerInput`]'s; whether the qualifier exists and whether its
//! http trigger is taken is checked by the store under the function's lock. `triggerConfig` is
//! stored and echoed exactly as sent.
//!
//! The header `x-fc-disable-list-remote-eb-triggers` (and its `alb` twin) that the fc3 tool
//! sends with ListTriggers is ignored: Nubis has no remote EventBridge triggers to hide.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::functions::load;
use super::{AppState, no_content, paging};
use crate::model::trigger::timer::TimerTriggerConfig;
use crate::model::trigger::{Trigger, TriggerConfig, TriggerInput, TriggerRecord, TriggerType};
use crate::store::TriggerWrite;

/// CreateTriggerInput: `triggerName`, `triggerType`, `triggerConfig` (a JSON string) required;
/// `qualifier` (default LATEST), `description`, `sourceArn`, `invocationRole` optional.
/// UpdateTriggerInput: `triggerConfig`, `qualifier`, `description`, `invocationRole`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerBody {
    pub trigger_name: Option<String>,
    /// `http`, `timer` or `eventbridge` (Kafka sources).
    pub trigger_type: Option<String>,
    /// The config as a JSON string, stored and returned verbatim.
    pub trigger_config: Option<String>,
    pub qualifier: Option<String>,
    pub description: Option<String>,
    pub source_arn: Option<String>,
    pub invocation_role: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListTriggersParams {
    pub prefix: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListTriggersOutput {
    pub triggers: Vec<Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn parse_input(body: &[u8]) -> Result<TriggerInput, ApiError> {
    let map: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    Ok(TriggerInput::parse(map)?)
}

pub fn trigger_not_found(name: &str, trigger: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "TriggerNotFound", format!("trigger '{trigger}' of function '{name}' does not exist"))
}

/// The Trigger document; an http trigger's URLs are built from where this request came in
/// (or `server.public_url`).
fn api(st: &AppState, headers: &HeaderMap, t: &TriggerRecord) -> Trigger {
    let urls = crate::triggers::http::urls(&super::public_base_url(st, headers), &t.function_name, &t.trigger_name);
    t.to_api(&st.cfg.server.region, &st.cfg.server.account_id, Some(urls))
}

/// The answer to a store write, for function `name` and trigger `trigger`.
fn written(st: &AppState, headers: &HeaderMap, name: &str, trigger: &str, w: TriggerWrite) -> Result<Json<Trigger>, ApiError> {
    match w {
        TriggerWrite::Done(t) => {
            // HTTP calls through this controller see the new config from now on.
            st.functions.invalidate_trigger(name, trigger);
            match t.trigger_type {
                TriggerType::Timer => st.timers.changed(),
                TriggerType::EventBridge => st.kafka_triggers.changed(),
                TriggerType::Http => {}
            }
            Ok(Json(api(st, headers, &t)))
        }
        TriggerWrite::NoFunction => Err(ApiError::function_not_found(name)),
        TriggerWrite::NoVersion(v) => Err(ApiError::version_not_found(name, v)),
        TriggerWrite::NoAlias(a) => Err(ApiError::alias_not_found(name, &a)),
        TriggerWrite::Exists => Err(ApiError::new(
            StatusCode::CONFLICT,
            "TriggerAlreadyExists",
            format!("trigger '{trigger}' of function '{name}' already exists"),
        )),
        TriggerWrite::NoTrigger => Err(trigger_not_found(name, trigger)),
        // FC allows one http trigger per function version or alias; its code for the refusal
        // is not documented, so the conflict is answered like a taken name.
        TriggerWrite::HttpTaken(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "TriggerAlreadyExists",
            format!(
                "function '{name}' already has the http trigger '{other}' on this qualifier; \
                 a function version or alias has at most one http trigger"
            ),
        )),
        TriggerWrite::Invalid(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/2023-03-30/functions/{functionName}/triggers", tag = "triggers",
    params(("functionName" = String, Path)), request_body = TriggerBody,
    responses((status = 200, body = Trigger), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_trigger(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Trigger>, ApiError> {
    let t = parse_input(&body)?.into_new(&name, &crate::model::now_iso())?;
    if let TriggerConfig::Timer(c) = t.config()? {
        c.check_min_interval(st.cfg.timers.min_interval())?;
    }
    let w = st.store.create_trigger(&t).await?;
    if matches!(w, TriggerWrite::Done(_)) {
        tracing::info!(function = %name, trigger = %t.trigger_name, r#type = %t.trigger_type, qualifier = %t.qualifier, "trigger created");
    }
    written(&st, &headers, &name, &t.trigger_name, w)
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/triggers/{triggerName}", tag = "triggers",
    params(("functionName" = String, Path), ("triggerName" = String, Path)),
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody)))]
pub async fn get_trigger(
    State(st): State<AppState>,
    Path((name, trigger)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Trigger>, ApiError> {
    match st.store.get_trigger(&name, &trigger).await? {
        Some(t) => Ok(Json(api(&st, &headers, &t))),
        None => {
            load(&st, &name).await?;
            Err(trigger_not_found(&name, &trigger))
        }
    }
}

#[utoipa::path(put, path = "/2023-03-30/functions/{functionName}/triggers/{triggerName}", tag = "triggers",
    params(("functionName" = String, Path), ("triggerName" = String, Path)), request_body = TriggerBody,
    responses((status = 200, body = Trigger), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn update_trigger(
    State(st): State<AppState>,
    Path((name, trigger)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Trigger>, ApiError> {
    let input = parse_input(&body)?;
    // The minimum interval is a setting, not part of the config's validation: checked here, on
    // the new expression of a timer trigger.
    if let Some(config) = &input.trigger_config
        && st.store.get_trigger(&name, &trigger).await?.is_some_and(|t| t.trigger_type == TriggerType::Timer)
    {
        TimerTriggerConfig::parse(config)?.check_min_interval(st.cfg.timers.min_interval())?;
    }
    let w = st.store.update_trigger(&name, &trigger, &input, &crate::model::now_iso()).await?;
    if matches!(w, TriggerWrite::Done(_)) {
        tracing::info!(function = %name, trigger = %trigger, "trigger updated");
    }
    written(&st, &headers, &name, &trigger, w)
}

#[utoipa::path(get, path = "/2023-03-30/functions/{functionName}/triggers", tag = "triggers",
    params(("functionName" = String, Path), ListTriggersParams),
    responses((status = 200, body = ListTriggersOutput), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_triggers(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ListTriggersParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListTriggersOutput>, ApiError> {
    let Query(q) = q?;
    let limit = paging::limit(q.limit, 20, 100)?;
    let start_after = paging::decode(q.next_token.as_deref())?.unwrap_or_default();
    load(&st, &name).await?;
    let mut rows = st.store.list_triggers(&name, q.prefix.as_deref().unwrap_or(""), &start_after, limit + 1).await?;
    let next_token = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        paging::encode(&rows[rows.len() - 1].trigger_name)
    });
    Ok(Json(ListTriggersOutput { triggers: rows.iter().map(|t| api(&st, &headers, t)).collect(), next_token }))
}

#[utoipa::path(delete, path = "/2023-03-30/functions/{functionName}/triggers/{triggerName}", tag = "triggers",
    params(("functionName" = String, Path), ("triggerName" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_trigger(State(st): State<AppState>, Path((name, trigger)): Path<(String, String)>) -> Result<Response, ApiError> {
    if !st.store.delete_trigger(&name, &trigger).await? {
        load(&st, &name).await?;
        return Err(trigger_not_found(&name, &trigger));
    }
    st.functions.invalidate_trigger(&name, &trigger);
    st.timers.changed();
    st.kafka_triggers.changed();
    tracing::info!(function = %name, trigger = %trigger, "trigger deleted");
    Ok(no_content())
}

/// DeleteFunction's precondition: FC refuses to delete a function that still has triggers
/// (`FunctionNotEmpty`; the fc3 tool removes triggers before the function for this reason).
pub async fn refuse_if_triggered(st: &AppState, name: &str) -> Result<(), ApiError> {
    let n = st.store.count_triggers(name).await?;
    if n == 0 {
        return Ok(());
    }
    let some: Vec<String> = st.store.list_triggers(name, "", "", 5).await?.into_iter().map(|t| t.trigger_name).collect();
    let more = if n > some.len() as i64 { format!(" and {} more", n - some.len() as i64) } else { String::new() };
    Err(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "FunctionNotEmpty",
        format!("function '{name}' still has triggers ({}{more}); delete them first", some.join(", ")),
    ))
}
