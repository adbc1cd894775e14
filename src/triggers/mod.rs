//! What runs triggers. The trigger resources themselves (CRUD, validation, storage) are
//! `crate::api::triggers`, `crate::model::trigger` and the store's `triggers.rs`.
//!
//! - [`http`]: HTTP triggers, served by the API's own listener under their own prefix.
//! - [`timer`]: the timer engine, firing timer triggers as async invocations (in the process
//!   that places instances).

pub mod http;
pub mod timer;
