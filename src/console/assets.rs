//! The console's files, embedded at build time with `include_bytes!` (no crate, no npm step:
//! `cargo build` is the whole build). Plain ES modules and one CSS file; uPlot (MIT, see
//! `uPlot.LICENSE`) is vendored as its released minified file.

use std::collections::HashMap;
use std::sync::LazyLock;

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Quoted strong ETag: the content's hash, so browsers revalidate with a 304.
    pub etag: String,
}

macro_rules! assets {
    ($($name:literal => $ty:expr),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("assets/", $name)) as &[u8], $ty)),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const FILES: &[(&str, &[u8], &str)] = assets![
    "index.html" => "text/html; charset=utf-8",
    "login.html" => "text/html; charset=utf-8",
    "console.css" => "text/css; charset=utf-8",
    "lib.js" => JS,
    "zip.js" => JS,
    "login.js" => JS,
    "app.js" => JS,
    "functions.js" => JS,
    "function.js" => JS,
    "config.js" => JS,
    "testing.js" => JS,
    "related.js" => JS,
    "tasks.js" => JS,
    "logs.js" => JS,
    "charts.js" => JS,
    "nodes.js" => JS,
    "uPlot.iife.min.js" => JS,
    "uPlot.min.css" => "text/css; charset=utf-8",
    "uPlot.LICENSE" => "text/plain; charset=utf-8",
];

static TABLE: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, body, ty)| {
            let etag = format!("\"{}\"", &crate::api::auth::sha256_hex(body)[..16]);
            (*name, Asset { body, content_type: ty, etag })
        })
        .collect()
});

pub fn get(name: &str) -> Option<&'static Asset> {
    TABLE.get(name)
}
