//! The nodes of the cluster, a Nubis admin extension (signed like every call): list nodes with
//! capacity, usage and instances; cordon (no new instances), uncordon, drain (cordon and retire
//! the node's instances: they finish what they serve, new calls start elsewhere).
//!
//! In a cluster a cordon is stored in etcd (`<prefix>/cordon/<node>`), so every controller
//! applies it and it outlives agent restarts; on a single box it lasts until the restart.
//! Any controller answers: a follower asks the scheduler leader, which holds the table.

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

/// The node table, from this process or from the leader.
pub(crate) async fn table(st: &AppState) -> Result<Vec<NodeView>, ApiError> {
    if st.rm.is_leading() {
        return Ok(st.rm.nodes());
    }
    let leader = st.rm.leader().ok_or_else(|| ApiError::unavailable("the cluster's scheduler", "no leader elected yet"))?;
    leader.nodes().await.map_err(ApiError::from)
}

async fn view(st: &AppState, id: &str) -> Result<Json<NodeView>, ApiError> {
    table(st).await?.into_iter().find(|n| n.node_id == id).map(Json).ok_or_else(|| node_not_found(id))
}

#[utoipa::path(get, path = "/nubis/admin/v1/nodes", tag = "nodes",
    responses((status = 200, body = ListNodesOutput), (status = 503, body = ErrorBody)))]
pub async fn list_nodes(State(st): State<AppState>) -> Result<Json<ListNodesOutput>, ApiError> {
    Ok(Json(ListNodesOutput { nodes: table(&st).await? }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOutput {
    /// `single` (one box), `leader` or `follower`.
    pub role: &'static str,
    /// The leader's internal URL, when another controller leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// This controller's fencing epoch while it leads.
    pub epoch: i64,
}

#[utoipa::path(get, path = "/nubis/admin/v1/cluster", tag = "nodes",
    responses((status = 200, body = ClusterOutput)))]
pub async fn get_cluster(State(st): State<AppState>) -> Json<ClusterOutput> {
    let epoch = st.rm.epoch().load(std::sync::atomic::Ordering::SeqCst);
    let role = match (st.etcd.is_some(), st.rm.is_leading()) {
        (false, _) => "single",
        (true, true) => "leader",
        (true, false) => "follower",
    };
    Json(ClusterOutput { role, leader: st.rm.leader().map(|l| l.url().to_string()), epoch })
}

/// Record the cordon in etcd (cluster) before applying it here, so a controller that fails
/// half-way leaves the durable state authoritative.
async fn set_cordon(st: &AppState, id: &str, on: bool) -> Result<(), ApiError> {
    if !table(st).await?.iter().any(|n| n.node_id == id) {
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
    view(&st, &id).await
}

#[utoipa::path(post, path = "/nubis/admin/v1/nodes/{nodeId}/uncordon", tag = "nodes",
    params(("nodeId" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn uncordon_node(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    set_cordon(&st, &id, false).await?;
    view(&st, &id).await
}

#[utoipa::path(post, path = "/nubis/admin/v1/nodes/{nodeId}/drain", tag = "nodes",
    params(("nodeId" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drain_node(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    set_cordon(&st, &id, true).await?;
    if st.rm.is_leading() {
        st.rm.drain(&id).ok_or_else(|| node_not_found(&id))?;
    } else {
        let leader = st.rm.leader().ok_or_else(|| ApiError::unavailable("the cluster's scheduler", "no leader elected yet"))?;
        leader.drain(&id).await?.ok_or_else(|| node_not_found(&id))?;
    }
    view(&st, &id).await
}
