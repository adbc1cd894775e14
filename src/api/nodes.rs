//! The nodes of the cluster, a Nubis admin extension (signed like every call): list nodes with
//! capacity, usage and instances; cordon (no new instances), uncordon, drain (cordon and retire
//! the node's instances: they finish what they serve, new calls start elsewhere).
//!
//! In a cluster a cordon is stored in etcd (`<prefix>/cordon/<node>`), so every controller
//! applies it and it outlives agent restarts; on a single box it lasts until the restart.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::scheduler::nodes::NodeView;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListNodesOutput {
    pub nodes: Vec<NodeView>,
}

fn node_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NodeNotFound", format!("node '{id}' is not a live member of this cluster"))
}

fn view(st: &AppState, id: &str) -> Result<Json<NodeView>, ApiError> {
    st.rm.nodes().into_iter().find(|n| n.node_id == id).map(Json).ok_or_else(|| node_not_found(id))
}

#[utoipa::path(get, path = "/nubis/admin/v1/nodes", tag = "nodes",
    responses((status = 200, body = ListNodesOutput)))]
pub async fn list_nodes(State(st): State<AppState>) -> Json<ListNodesOutput> {
    Json(ListNodesOutput { nodes: st.rm.nodes() })
}

/// Record the cordon in etcd (cluster) before applying it here, so a controller that fails
/// half-way leaves the durable state authoritative.
async fn set_cordon(st: &AppState, id: &str, on: bool) -> Result<(), ApiError> {
    if !st.rm.nodes().iter().any(|n| n.node_id == id) {
        return Err(node_not_found(id));
    }
    if let Some((client, keys)) = &st.etcd {
        let mut c = client.clone();
        let r = if on { c.put(keys.cordon(id), "1", None).await.map(drop) } else { c.delete(keys.cordon(id), None).await.map(drop) };
        r.map_err(|e| ApiError::unavailable("etcd", e))?;
    }
    st.rm.set_cordoned(id, on);
    Ok(())
}

#[utoipa::path(post, path = "/nubis/admin/v1/nodes/{nodeId}/cordon", tag = "nodes",
    params(("nodeId" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cordon_node(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    set_cordon(&st, &id, true).await?;
    view(&st, &id)
}

#[utoipa::path(post, path = "/nubis/admin/v1/nodes/{nodeId}/uncordon", tag = "nodes",
    params(("nodeId" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn uncordon_node(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    set_cordon(&st, &id, false).await?;
    view(&st, &id)
}

#[utoipa::path(post, path = "/nubis/admin/v1/nodes/{nodeId}/drain", tag = "nodes",
    params(("nodeId" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drain_node(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    set_cordon(&st, &id, true).await?;
    st.rm.drain(&id).ok_or_else(|| node_not_found(&id))?;
    view(&st, &id)
}
