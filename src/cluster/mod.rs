//! Cluster membership in etcd.
//!
//! Keys (under `cluster.key_prefix`, default `/nubis`):
//! - `nodes/<node_id>`: a [`NodeRecord`] (address, capacity, incarnation), written by the agent
//!   under its own lease. The agent keeps the lease alive; when it stops (killed, partitioned)
//!   the lease expires after `lease_ttl_secs`, etcd deletes the key, and every watcher sees the
//!   node leave.
//! - `cordon/<node_id>`: present while an operator has the node cordoned. Not leased: a cordon
//!   outlives agent restarts.
//!
//! Controllers list both prefixes, then watch them from the next revision, so no change between
//! the list and the watch is missed; when the watch breaks they list again.

pub mod controller;
pub mod election;
pub mod membership;
pub mod register;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::scheduler::nodes::Capacity;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the membership lease expired or its keep-alive stream ended")]
    LeaseLost,
    #[error("the etcd watch ended or was cancelled")]
    WatchEnded,
    #[error("cluster.secret is empty: controllers and agents need a shared secret in cluster mode")]
    NoSecret,
}

/// What an agent announces about its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node_id: String,
    /// The agent's internal URL.
    pub address: String,
    pub capacity: Capacity,
    /// Changes each time the agent process starts: a controller that sees a new incarnation
    /// knows the node's instances are gone.
    pub incarnation: String,
    pub version: String,
}

/// Key layout under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cfg: &ClusterConfig) -> Self {
        Self { prefix: cfg.key_prefix.trim_end_matches('/').to_string() }
    }
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }
    pub fn cordons(&self) -> String {
        format!("{}/cordon/", self.prefix)
    }
    pub fn cordon(&self, id: &str) -> String {
        format!("{}/cordon/{id}", self.prefix)
    }
    /// The resource manager's election (etcd's election API keys live under it).
    pub fn election(&self) -> String {
        format!("{}/election/scheduler", self.prefix)
    }
}

/// Connect to etcd (the client balances over the endpoints and reconnects on its own). Every
/// call is bounded by 5 s, so an unreachable etcd becomes an error, not a hang.
pub async fn connect(cfg: &ClusterConfig) -> Result<etcd_client::Client, ClusterError> {
    connect_with(cfg, Some(Duration::from_secs(5))).await
}

/// A client whose calls may block as long as they need: a campaign waits until this process
/// is elected, which may be never. (Liveness comes from the lease's keep-alive instead.)
pub async fn connect_unbounded(cfg: &ClusterConfig) -> Result<etcd_client::Client, ClusterError> {
    connect_with(cfg, None).await
}

async fn connect_with(cfg: &ClusterConfig, timeout: Option<Duration>) -> Result<etcd_client::Client, ClusterError> {
    if cfg.secret.is_empty() {
        return Err(ClusterError::NoSecret);
    }
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(t) = timeout {
        opts = opts.with_timeout(t);
    }
    Ok(etcd_client::Client::connect(&cfg.etcd_endpoints, Some(opts)).await?)
}

/// The URL others reach a listener at: the configured one, or `http://<bound address>` (the
/// port actually bound, so port 0 works).
pub fn advertised(configured: &str, bound: std::net::SocketAddr) -> String {
    if configured.is_empty() { format!("http://{bound}") } else { configured.to_string() }
}

/// Backoff between attempts after an etcd error: 200 ms doubling to 2 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(4)).min(2000))
}

/// How a kept lease ended.
#[derive(Debug)]
pub enum LeaseEnd {
    /// Shutdown asked for it (the caller revokes the lease).
    Cancelled,
    /// The lease could not be renewed within its TTL, or etcd says it expired.
    Lost(ClusterError),
}

/// Keep `lease` alive until cancelled or lost, renewing every TTL/3. A broken keep-alive
/// stream (an etcd member dies, a connection resets) is opened again on the same lease, through
/// whichever member answers: the lease is only given up when no renewal has been confirmed for
/// a whole TTL, which is when etcd itself may expire it.
pub async fn keep_lease(client: &etcd_client::Client, lease: i64, ttl: Duration, cancel: &tokio_util::sync::CancellationToken) -> LeaseEnd {
    let mut confirmed = tokio::time::Instant::now();
    let period = ttl / 3;
    loop {
        if confirmed.elapsed() >= ttl {
            return LeaseEnd::Lost(ClusterError::LeaseLost);
        }
        let mut c = client.clone();
        let opened = tokio::select! {
            o = c.lease_keep_alive(lease) => o,
            _ = cancel.cancelled() => return LeaseEnd::Cancelled,
        };
        if let Ok((mut keeper, mut stream)) = opened {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return LeaseEnd::Cancelled,
                }
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(period, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => confirmed = tokio::time::Instant::now(),
                    // etcd answered: the lease is gone.
                    Ok(Ok(Some(_))) => return LeaseEnd::Lost(ClusterError::LeaseLost),
                    _ => break,
                }
                if confirmed.elapsed() >= ttl {
                    return LeaseEnd::Lost(ClusterError::LeaseLost);
                }
            }
        }
        tracing::debug!(lease, "lease keep-alive interrupted; reopening it");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = cancel.cancelled() => return LeaseEnd::Cancelled,
        }
    }
}
