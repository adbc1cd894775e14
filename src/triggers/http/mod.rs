//! HTTP triggers: a function reached over plain HTTP at a URL Nubis serves.
//!
//! **Routing is by path**, on the API listener, under a fixed prefix, so a plain reverse proxy
//! (or none) can pass it through unchanged:
//!
//! - `<base>/http/<functionName>/<triggerName>[/<path>][?<query>]`: the public URL
//!   (`httpTrigger.urlInternet`); refused with 403 when the trigger sets `disableURLInternet`;
//! - `<base>/http-intranet/<functionName>/<triggerName>[/...]`: the intranet URL
//!   (`httpTrigger.urlIntranet`), always served. Publish only `/http/` through a proxy that
//!   faces the internet, and the intranet prefix stays inside.
//!
//! `<base>` is `server.public_url`, or `http://` and the Host header the trigger was read
//! with. The function sees the path after `<triggerName>` (`/` when none): code written for
//! FC's `https://<id>.<region>.fcapp.run/<path>` sees the same path here.

use crate::model::trigger::HttpTriggerUrls;

/// Prefix of the public trigger URLs.
pub const INTERNET_PREFIX: &str = "/http";
/// Prefix of the intranet trigger URLs.
pub const INTRANET_PREFIX: &str = "/http-intranet";

/// The URLs of trigger `trigger` of function `function`, under `base` (no trailing slash).
pub fn urls(base: &str, function: &str, trigger: &str) -> HttpTriggerUrls {
    HttpTriggerUrls {
        url_internet: format!("{base}{INTERNET_PREFIX}/{function}/{trigger}"),
        url_intranet: format!("{base}{INTRANET_PREFIX}/{function}/{trigger}"),
    }
}
