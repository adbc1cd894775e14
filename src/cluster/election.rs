//! Leadership of the resource manager, through etcd's election API.
//!
//! Every controller campaigns on `<prefix>/election/scheduler` with its internal URL as the
//! value, under a lease of `cluster.lease_ttl_secs` that it keeps alive. The winner's leader key
//! revision is its **fencing epoch**: it leads ([`ResourceManager::lead`]), runs the membership
//! mirror (which adopts the agents' instances and tells every agent the new epoch), and sends
//! the epoch on every control call, so agents refuse a deposed leader that does not know it
//! lost. The others follow the leader they observe. A leader whose lease keep-alive fails steps
//! down at once (forgetting, not stopping, its instances) and campaigns again; on shutdown it
//! resigns, so a follower takes over without waiting for the TTL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ResignOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClusterError, Keys, backoff, membership};
use crate::scheduler::ResourceManager;
use crate::scheduler::leader::LeaderClient;

#[derive(Clone)]
pub struct Election {
    /// Calls bounded in time (membership, resign, revoke).
    pub client: Client,
    /// Calls that may wait indefinitely (the campaign).
    pub campaign_client: Client,
    pub keys: Keys,
    /// This controller's internal URL: the value it campaigns with.
    pub me: String,
    pub ttl: Duration,
    pub rm: ResourceManager,
    pub secret: String,
    pub tracker: TaskTracker,
}

impl Election {
    pub fn spawn(self, cancel: CancellationToken) {
        let seen: Arc<Mutex<Option<String>>> = Arc::default();
        let (e, c, s) = (self.clone(), cancel.clone(), seen.clone());
        self.tracker.spawn(async move { e.observe(s, c).await });
        let tracker = self.tracker.clone();
        tracker.spawn(async move {
            let mut attempt = 0;
            loop {
                match self.term(&seen, &cancel).await {
                    Ok(()) => return,
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!("scheduler election: {e}; campaigning again");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        });
    }

    /// One lease: campaign, lead until the lease is lost (Err) or shutdown (Ok, resigned).
    async fn term(&self, seen: &Mutex<Option<String>>, cancel: &CancellationToken) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        let lease = client.lease_grant(self.ttl.as_secs().max(2) as i64, None).await?.id();
        // Cancellation is handled below (resign first); the keeper only reports a lost lease.
        let keeper_cancel = CancellationToken::new();
        let _stop_keeper = keeper_cancel.clone().drop_guard();
        let lost = async {
            match super::keep_lease(&self.client, lease, self.ttl, &keeper_cancel).await {
                super::LeaseEnd::Lost(e) => e,
                super::LeaseEnd::Cancelled => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        let mut campaigner = self.campaign_client.clone();
        let campaign = campaigner.campaign(self.keys.election(), self.me.clone(), lease);
        let won = tokio::select! {
            r = campaign => r?,
            e = &mut lost => return Err(e),
            _ = cancel.cancelled() => {
                let _ = self.client.clone().lease_revoke(lease).await;
                return Ok(());
            }
        };
        let key = won.leader().cloned().ok_or(ClusterError::LeaseLost)?;
        // The epoch first (the agents' listings carry it, fencing the previous leader), then
        // the first membership sync (so the table holds the agents' instances), then lead:
        // a call placed before that would find no node.
        self.rm.epoch().store(key.rev(), std::sync::atomic::Ordering::SeqCst);
        let mirror = TaskTracker::new();
        let stop_mirror = cancel.child_token();
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        membership::spawn(self.client.clone(), self.keys.clone(), self.rm.clone(), self.secret.clone(), &mirror, stop_mirror.clone(), Some(synced_tx));
        let out = tokio::select! {
            _ = synced => {
                self.rm.lead(key.rev());
                tokio::select! {
                    e = &mut lost => Err(e),
                    _ = cancel.cancelled() => Ok(()),
                }
            }
            e = &mut lost => Err(e),
            _ = cancel.cancelled() => Ok(()),
        };
        stop_mirror.cancel();
        mirror.close();
        mirror.wait().await;
        self.rm.step_down();
        if out.is_ok() {
            let mut c = self.client.clone();
            if let Err(e) = c.resign(Some(ResignOptions::new().with_leader(key))).await {
                tracing::warn!("resigning leadership: {e} (the lease expires on its own)");
            }
            let _ = c.lease_revoke(lease).await;
        } else if let Some(url) = seen.lock().expect("seen lock").clone().filter(|u| *u != self.me) {
            self.rm.follow(Some(LeaderClient::new(&url, &self.secret, self.tracker.clone())));
        }
        out
    }

    /// Follow the leader etcd reports, for as long as this controller runs.
    async fn observe(&self, seen: Arc<Mutex<Option<String>>>, cancel: CancellationToken) {
        let mut attempt = 0;
        loop {
            let mut client = self.client.clone();
            let stream = tokio::select! {
                s = client.observe(self.keys.election()) => s,
                _ = cancel.cancelled() => return,
            };
            match stream {
                Ok(mut s) => loop {
                    let msg = tokio::select! {
                        m = s.message() => m,
                        _ = cancel.cancelled() => return,
                    };
                    let Ok(Some(resp)) = msg else { break };
                    attempt = 0;
                    let Some(url) = resp.kv().and_then(|kv| kv.value_str().ok()).map(str::to_string) else { continue };
                    let changed = seen.lock().expect("seen lock").replace(url.clone()).as_deref() != Some(url.as_str());
                    if changed && url != self.me {
                        self.rm.follow(Some(LeaderClient::new(&url, &self.secret, self.tracker.clone())));
                    }
                },
                Err(e) => tracing::warn!("observing the scheduler election: {e}"),
            }
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff(attempt)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
