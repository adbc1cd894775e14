//! A claimed place on an instance, freed exactly once when dropped.
//!
//! A slot is owned either by this process's resource manager (the all-in-one server, or the
//! cluster's leader) or by the leader in another controller ([`super::leader`]): then freeing
//! it is a release call to the leader, sent in the background. If that call is lost the
//! leader's lease on the slot expires on its own.

use std::sync::Arc;
use std::time::Instant;

use super::Inner;
use super::leader::LeaderClient;
use crate::agent::{InstanceInfo, Node};

/// A claimed place on an instance. Dropping it frees the place.
pub struct Slot {
    pub(super) owner: Owner,
    pub(super) info: InstanceInfo,
    pub(super) node: Arc<dyn Node>,
    /// This caller waited for a new instance to start.
    pub cold_start: bool,
}

pub(super) enum Owner {
    /// `_ticket`: the call's admission under its function's reserved concurrency, given back
    /// with the slot.
    Local { inner: Arc<Inner>, function: String, _ticket: Option<Ticket> },
    Remote { leader: LeaderClient, lease: String, released: bool },
}

impl Slot {
    pub fn instance(&self) -> &InstanceInfo {
        &self.info
    }

    /// The node that hosts the instance.
    pub fn node(&self) -> &Arc<dyn Node> {
        &self.node
    }

    /// The instance is broken (timed out, crashed): take it out of service and stop it.
    pub fn discard(mut self) {
        match &mut self.owner {
            Owner::Local { inner, function, .. } => {
                let removed = {
                    let mut pools = inner.pools.lock().expect("pools lock");
                    pools.get_mut(function.as_str()).and_then(|p| {
                        let i = p.instances.iter().position(|i| i.info.instance_id == self.info.instance_id)?;
                        p.notify.notify_waiters();
                        Some(p.instances.swap_remove(i))
                    })
                };
                if let Some(inst) = removed {
                    inner.stop_later(&inst.info);
                }
                // Drop runs next and finds the instance gone: nothing more to free.
            }
            Owner::Remote { leader, lease, released } => {
                leader.release_later(lease.clone(), true);
                *released = true;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match &mut self.owner {
            Owner::Local { inner, function, .. } => {
                let mut pools = inner.pools.lock().expect("pools lock");
                if let Some(pool) = pools.get_mut(function.as_str())
                    && let Some(inst) = pool.instances.iter_mut().find(|i| i.info.instance_id == self.info.instance_id)
                {
                    // Saturating: an instance adopted by a new leader starts at zero in flight.
                    inst.inflight = inst.inflight.saturating_sub(1);
                    inst.last_used = Instant::now();
                    pool.notify.notify_waiters();
                }
            }
            Owner::Remote { leader, lease, released } => {
                if !*released {
                    leader.release_later(std::mem::take(lease), false);
                }
            }
        }
    }
}

/// One call admitted under its function's reserved concurrency; dropping it gives the place back.
pub(super) struct Ticket {
    pub(super) inner: Arc<Inner>,
    pub(super) function: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut admitted = self.inner.admitted.lock().expect("admitted lock");
        if let Some(n) = admitted.get_mut(&self.function) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                admitted.remove(&self.function);
            }
        }
    }
}

/// Counts a caller as waiting for as long as it exists, even if the caller is cancelled.
pub(super) struct Waiting<'a> {
    pub(super) inner: &'a Inner,
    pub(super) function: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.inner.pools.lock().expect("pools lock").get_mut(self.function) {
            p.waiting = p.waiting.saturating_sub(1);
        }
    }
}
