//! Where state lives: the metadata database (`[database]`) and the code store (`[codestore]`).
//! Both hold credentials, so their Debug output redacts them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The metadata database (functions, access keys, async configs and tasks). Its Debug output
/// redacts the password in the URL.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: SQLite, `<data_dir>/nubis.db`. Otherwise `sqlite://PATH`,
    /// `postgres://user:password@host:port/db` or `mysql://user:password@host:port/db`.
    pub url: String,
    /// Most open connections to the database (per process).
    pub max_connections: u32,
    /// Deadline to get a connection (including opening one); at start, to reach the database.
    pub connect_timeout_secs: u64,
    /// Deadline of one store call (waiting for a connection included); past it the request
    /// gets 503.
    pub query_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 8, connect_timeout_secs: 5, query_timeout_secs: 10 }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("query_timeout_secs", &self.query_timeout_secs)
            .finish()
    }
}

impl DatabaseConfig {
    /// True when the metadata database is SQLite (the default file, or a `sqlite:` URL).
    pub fn is_sqlite(&self) -> bool {
        let url = self.url.trim();
        url.is_empty() || url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"))
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }
}

/// `scheme://user:password@host/...` with the password replaced; anything else unchanged.
pub fn redact_url_password(url: &str) -> String {
    let Some(password) = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string)) else {
        return url.to_string();
    };
    // The password as written sits between the user's ':' and the '@'; if the parser's form
    // differs from the input's, hide the whole URL rather than risk showing it.
    let shown = url.replacen(&format!(":{password}@"), ":<redacted>@", 1);
    if shown == url { "<a URL with a password, redacted>".to_string() } else { shown }
}

/// Where code packages (zips) are kept. Its Debug output redacts the secret key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeStoreConfig {
    /// Empty: the local directory `<data_dir>/code`. Otherwise `s3://bucket` or
    /// `s3://bucket/prefix` on S3 or an S3-compatible server (`endpoint`).
    pub url: String,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000`; empty: AWS S3 in `region`.
    pub endpoint: String,
    pub region: String,
    /// Empty: credentials from the environment's default chain (instance profile, web identity).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Permit a plain `http://` endpoint.
    pub allow_http: bool,
    /// `https://bucket.endpoint/key` instead of `https://endpoint/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Deadline of one request to the object store, retries included.
    pub timeout_secs: u64,
}

impl Default for CodeStoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            timeout_secs: 30,
        }
    }
}

impl std::fmt::Debug for CodeStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeStoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "<redacted>" })
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl CodeStoreConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}
