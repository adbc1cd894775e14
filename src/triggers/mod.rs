//! What runs triggers. The trigger resources themselves (CRUD, validation, storage) are
//! `crate::api::triggers`, `crate::model::trigger` and the store's `triggers.rs`.
//!
//! - [`http`]: HTTP triggers, served by the API's own listener under their own prefix.
//! - [`timer`]: the timer engine, firing timer triggers as async invocations (in the process
//!   that places instances).
//! - [`kafka`]: the Kafka trigger engine, consuming topics and pushing batches to functions (in
//!   the process that places instances).

pub mod http;
pub mod kafka;
pub mod timer;

use std::sync::Arc;

use tokio::sync::Notify;

/// The API's handle on an engine: wake it when one of its triggers was written or deleted
/// through this process (it reads them again at once instead of at its next refresh).
#[derive(Clone, Default)]
pub struct EngineWake(Arc<Notify>);

impl EngineWake {
    pub fn changed(&self) {
        self.0.notify_one();
    }

    /// Completes at the next [`Self::changed`] (or at once if one came since the last wait).
    pub async fn notified(&self) {
        self.0.notified().await
    }
}
