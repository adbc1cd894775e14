//! The agent's side of membership: announce the node under a lease and keep the lease alive.
//! If the lease is lost (etcd unreachable longer than the TTL, or it expired), register again
//! with a new one once etcd answers; controllers then see the node join afresh and reset it.
//! On shutdown the lease is revoked, so controllers see the node leave at once instead of
//! after the TTL.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClusterError, Keys, LeaseEnd, NodeRecord, backoff};

pub fn spawn(client: Client, keys: Keys, record: NodeRecord, ttl: Duration, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        let mut attempt = 0;
        loop {
            let mut c = client.clone();
            match session(&mut c, &keys, &record, ttl, &cancel).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(node = %record.node_id, "membership lease lost or not obtained: {e}; registering again");
                    attempt += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff(attempt)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    });
}

/// One lease's life: grant, put the record under it, renew every TTL/3 until cancelled (Ok)
/// or the lease is lost (Err).
async fn session(client: &mut Client, keys: &Keys, record: &NodeRecord, ttl: Duration, cancel: &CancellationToken) -> Result<(), ClusterError> {
    let lease = client.lease_grant(ttl.as_secs().max(2) as i64, None).await?.id();
    let value = serde_json::to_vec(record).expect("record serializes");
    client.put(keys.node(&record.node_id), value, Some(PutOptions::new().with_lease(lease))).await?;
    tracing::info!(node = %record.node_id, address = %record.address, lease, "node registered in etcd");
    match super::keep_lease(client, lease, ttl, cancel).await {
        LeaseEnd::Cancelled => {
            if let Err(e) = client.lease_revoke(lease).await {
                tracing::warn!("revoking the membership lease: {e} (it expires on its own)");
            }
            Ok(())
        }
        LeaseEnd::Lost(e) => Err(e),
    }
}
