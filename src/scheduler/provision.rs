//! Provisioned instances (PutProvisionConfig): a pool keeps `target` ready instances of its
//! function's current revision whatever the traffic. The reaper leaves that many alone
//! ([`super::reaper`]); the provisioner starts what is missing, so instances lost to a crash,
//! a dead node or an update (which retires the old revision's) are replaced.
//!
//! Only the process that places instances (the all-in-one server, or the cluster's leader) runs
//! it; the configs are read from the metadata store on every pass, so a new leader picks them up
//! without any hand-over.

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{InstanceState, ResourceManager, pool_key};
use crate::model::FunctionRecord;
use crate::store::Store;

/// How often the configs are read again when nothing wakes the provisioner sooner.
const PASS_EVERY: Duration = Duration::from_secs(2);

impl ResourceManager {
    /// Make the pools match `targets` (a function record, LATEST or a version, and how many
    /// instances to keep): start what is missing now; every other pool keeps none.
    /// Returns how many starts it launched.
    pub fn provision(&self, targets: &[(FunctionRecord, usize)]) -> usize {
        let inner = &self.inner;
        if !self.is_leading() || inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return 0;
        }
        let mut starts = Vec::new();
        {
            let mut pools = inner.pools.lock().expect("pools lock");
            let wanted: HashSet<String> = targets.iter().map(|(f, _)| pool_key(f.name.as_str(), f.version)).collect();
            for (key, pool) in pools.iter_mut() {
                if !wanted.contains(key) {
                    pool.provisioned = 0;
                }
            }
            for (f, target) in targets {
                let key = pool_key(f.name.as_str(), f.version);
                let missing = {
                    let pool = pools.entry(key.clone()).or_default();
                    if !pool.catch_up(f.revision) {
                        // Read before the function's latest update: the next pass reads it again.
                        continue;
                    }
                    pool.provisioned = *target;
                    let ready =
                        pool.instances.iter().filter(|i| i.state == InstanceState::Ready && i.revision == f.revision).count();
                    target.saturating_sub(ready + pool.starting)
                };
                for _ in 0..missing {
                    match inner.reserve_start(&mut pools, &key, f) {
                        Ok(placed) => starts.push((f.clone(), placed)),
                        Err(e) => {
                            tracing::warn!(pool = %key, target, "cannot start a provisioned instance: {e}");
                            break;
                        }
                    }
                }
            }
        }
        let n = starts.len();
        for (f, placed) in starts {
            let rm = self.clone();
            let span = tracing::info_span!(parent: None, "provision", function = %f.name, version = %f.version_name());
            inner.tracker.spawn(tracing::Instrument::instrument(
                async move {
                    if let Err(e) = rm.start_instance(&f, placed).await {
                        tracing::warn!("provisioned instance failed to start: {e}");
                    }
                },
                span,
            ));
        }
        n
    }

    /// Wake the provisioner now (a config changed through this controller).
    pub fn provision_changed(&self) {
        self.inner.provision_wake.notify_one();
    }

    /// Read the provision configs and apply them every [`PASS_EVERY`] (or when woken) until
    /// `cancel`.
    pub fn spawn_provisioner(&self, store: Store, cancel: CancellationToken) {
        let rm = self.clone();
        self.inner.tracker.spawn(async move {
            loop {
                if rm.is_leading() {
                    match wanted(&store).await {
                        Ok(targets) => {
                            rm.provision(&targets);
                        }
                        Err(e) => tracing::warn!("reading provision configs: {e}"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(PASS_EVERY) => {}
                    _ = rm.inner.provision_wake.notified() => {}
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }
}

/// Every provision config, resolved to the record of the version it keeps warm: LATEST, or the
/// main version of an alias (resolved by the store as it reads). Configs whose function or
/// alias is gone are left out.
async fn wanted(store: &Store) -> Result<Vec<(FunctionRecord, usize)>, crate::store::StoreError> {
    let mut out = Vec::new();
    for c in store.list_all_provision_configs().await? {
        let record = match (c.qualifier.as_str(), c.version) {
            ("LATEST", _) => store.get_function(&c.function_name).await?,
            (_, Some(v)) => store.get_function_at(&c.function_name, v).await?,
            (_, None) => None,
        };
        if let Some(f) = record {
            out.push((f, c.config.target as usize));
        }
    }
    Ok(out)
}
