//! The leader's side of membership: mirror the live nodes and cordons of etcd into the
//! resource manager. Runs only while this controller leads (see [`super::election`]).
//!
//! A node that appears (or comes back with a new incarnation or address) is asked for its
//! instances, which the resource manager adopts (this call carries the leader's fencing epoch,
//! so from then on the agent refuses the previous leader), and then added; a node whose key
//! disappears (lease expired or revoked) is removed with its instances. A full list is taken
//! at start, after any watch error, and every [`RESYNC`] as a safety net: a node whose listing
//! failed is tried again then, and instances the table lost track of are adopted again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClusterError, Keys, NodeRecord, backoff};
use crate::agent::remote::RemoteNode;
use crate::scheduler::ResourceManager;

const RESYNC: Duration = Duration::from_secs(30);
const LIST_DEADLINE: Duration = Duration::from_secs(15);

struct Mirror {
    keys: Keys,
    rm: ResourceManager,
    secret: String,
    /// Nodes in the resource manager, as last announced.
    joined: BTreeMap<String, NodeRecord>,
    cordoned: BTreeSet<String>,
    synced: Option<tokio::sync::oneshot::Sender<()>>,
}

/// `synced` is told once the first listing has been applied (every live node joined).
pub fn spawn(
    client: Client,
    keys: Keys,
    rm: ResourceManager,
    secret: String,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    synced: Option<tokio::sync::oneshot::Sender<()>>,
) {
    tracker.spawn(async move {
        let mut m = Mirror { keys, rm, secret, joined: BTreeMap::new(), cordoned: BTreeSet::new(), synced };
        let mut attempt = 0;
        loop {
            let mut c = client.clone();
            match m.list_and_watch(&mut c, &cancel).await {
                Ok(()) if cancel.is_cancelled() => return,
                Ok(()) => attempt = 0,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!("watching cluster membership: {e}; listing again");
                }
            }
            if attempt > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    });
}

impl Mirror {
    /// List, reconcile, then follow changes until an error, cancellation, or the resync time.
    async fn list_and_watch(&mut self, client: &mut Client, cancel: &CancellationToken) -> Result<(), ClusterError> {
        let nodes = client.get(self.keys.nodes(), Some(GetOptions::new().with_prefix())).await?;
        let cordons = client.get(self.keys.cordons(), Some(GetOptions::new().with_revision(revision(&nodes)).with_prefix())).await?;
        let live: BTreeMap<String, NodeRecord> =
            nodes.kvs().iter().filter_map(|kv| parse(kv.value())).map(|r| (r.node_id.clone(), r)).collect();
        self.cordoned = cordons.kvs().iter().filter_map(|kv| Some(last_segment(kv.key_str().ok()?).to_string())).collect();
        for gone in self.joined.keys().filter(|id| !live.contains_key(*id)).cloned().collect::<Vec<_>>() {
            self.leave(&gone);
        }
        for record in live.into_values() {
            self.join(record, true).await;
        }
        for id in self.joined.keys() {
            self.rm.set_cordoned(id, self.cordoned.contains(id));
        }
        if let Some(tx) = self.synced.take() {
            let _ = tx.send(());
        }

        let prefix = self.keys.nodes().trim_end_matches("nodes/").to_string();
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision(&nodes) + 1);
        let mut stream = client.watch(prefix, Some(opts)).await?;
        let resync = tokio::time::sleep(RESYNC);
        tokio::pin!(resync);
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = &mut resync => return Ok(()),
                m = stream.message() => m?,
            };
            let Some(resp) = msg else { return Err(ClusterError::WatchEnded) };
            if resp.canceled() {
                return Err(ClusterError::WatchEnded);
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let id = last_segment(key).to_string();
                let is_node = key.starts_with(&self.keys.nodes());
                let is_cordon = key.starts_with(&self.keys.cordons());
                match (ev.event_type(), is_node, is_cordon) {
                    (EventType::Put, true, _) => {
                        if let Some(r) = parse(kv.value()) {
                            self.join(r, false).await;
                        }
                    }
                    (EventType::Delete, true, _) => self.leave(&id),
                    (t, _, true) => {
                        let on = t == EventType::Put;
                        if on { self.cordoned.insert(id.clone()) } else { self.cordoned.remove(&id) };
                        self.rm.set_cordoned(&id, on);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Add (or, with `resync`, re-check) a node: adopt what its agent runs.
    async fn join(&mut self, record: NodeRecord, resync: bool) {
        let same = self.joined.get(&record.node_id).is_some_and(|r| r.incarnation == record.incarnation && r.address == record.address);
        if same && !resync {
            return;
        }
        let node = RemoteNode::new(&record.node_id, &record.address, &self.secret, self.rm.epoch());
        let reports = match tokio::time::timeout(LIST_DEADLINE, node.list()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return tracing::warn!(node = %record.node_id, "node not added, listing its instances failed: {e}"),
            Err(_) => return tracing::warn!(node = %record.node_id, "node not added, listing its instances timed out"),
        };
        if !same {
            self.rm.add_node(Arc::new(node), record.capacity, record.address.clone());
            self.rm.set_cordoned(&record.node_id, self.cordoned.contains(&record.node_id));
        }
        let adopted = self.rm.adopt(reports);
        if !same || adopted > 0 {
            tracing::info!(node = %record.node_id, adopted, "node joined; its instances adopted");
        }
        self.joined.insert(record.node_id.clone(), record);
    }

    fn leave(&mut self, node_id: &str) {
        if self.joined.remove(node_id).is_some() {
            self.rm.remove_node(node_id);
        }
    }
}

fn revision(r: &etcd_client::GetResponse) -> i64 {
    r.header().map_or(0, |h| h.revision())
}

fn parse(value: &[u8]) -> Option<NodeRecord> {
    serde_json::from_slice(value).map_err(|e| tracing::warn!("ignoring a malformed node record: {e}")).ok()
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
