//! Typed, layered configuration: built-in defaults → `config/nubis.toml` (or `--config FILE`)
//! → `NUBIS_<SECTION>__<KEY>` environment variables → command-line flags.
//!
//! Every field is documented in `config/nubis.toml`; durations are whole seconds or milliseconds,
//! named by their suffix, and read through accessor methods returning [`Duration`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod cluster;
mod console;
mod kafka_triggers;
mod storage;
mod timers;
pub use cluster::ClusterConfig;
pub use console::ConsoleConfig;
pub use kafka_triggers::KafkaTriggersConfig;
pub use timers::TimersConfig;
pub use storage::{CodeStoreConfig, DatabaseConfig, redact_url_password};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub codestore: CodeStoreConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub scheduler: SchedulerConfig,
    pub agent: AgentConfig,
    pub dispatcher: DispatcherConfig,
    pub kafka: KafkaConfig,
    pub logs: LogsConfig,
    pub opensearch: OpenSearchConfig,
    pub cluster: ClusterConfig,
    pub timers: TimersConfig,
    pub kafka_triggers: KafkaTriggersConfig,
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public API listener.
    pub listen: SocketAddr,
    /// Where the SQLite database, code packages, unpacked code and logs live.
    pub data_dir: PathBuf,
    /// Base URL clients use to reach this server (for GetFunctionCode URLs). Empty: taken from
    /// the request's Host header.
    pub public_url: String,
    /// Region and account id reported in ARNs and to functions.
    pub region: String,
    pub account_id: String,
    /// How long SIGTERM waits for in-flight invocations before stopping instances anyway.
    pub shutdown_grace_secs: u64,
    /// Roles this process plays: `api`, `scheduler`, `dispatcher`, `agent`. All four: the
    /// all-in-one server. A cluster controller runs `api`, `scheduler`, `dispatcher`; agents run
    /// as `nubis agent`.
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests whose x-acs-date is further than this from the server clock are refused.
    pub max_clock_skew_secs: u64,
    /// Lifetime of GetFunctionCode download URLs.
    pub code_url_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest code zip accepted (decoded bytes).
    pub max_code_zip_bytes: u64,
    /// Largest total uncompressed size of a code zip (zip-bomb guard).
    pub max_code_unzipped_bytes: u64,
    /// Most entries in a code zip.
    pub max_code_zip_entries: usize,
    /// Largest synchronous invocation payload (FC: 32 MB).
    pub max_sync_payload_bytes: usize,
    /// Largest function response accepted from an instance.
    pub max_response_bytes: usize,
    /// Largest asynchronous invocation payload (FC: 128 KB for API events).
    pub max_async_payload_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Most instances of one function at once; further concurrent calls wait for a slot.
    pub max_instances_per_function: usize,
    /// An instance idle this long is stopped (scale to zero).
    pub idle_keep_alive_secs: u64,
    /// How often the reaper looks for idle instances.
    pub reap_interval_ms: u64,
    /// How long a call waits for a free slot before it is throttled (429).
    pub acquire_timeout_secs: u64,
    /// Most instance starts in flight on one node at once; a burst's further starts queue for
    /// the node instead of all hitting its container engine together.
    pub max_starts_per_node: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's id; containers are labelled with it, and orphans with it are removed at start.
    pub node_id: String,
    /// Docker endpoint: empty for the local default socket (or DOCKER_HOST).
    pub docker_host: String,
    /// Runtime family → image (families: python3, nodejs, custom.debian12).
    pub images: BTreeMap<String, String>,
    /// Max processes per instance.
    pub pids_limit: i64,
    /// Size of the writable /tmp of an instance, MB.
    pub tmp_size_mb: u64,
    /// Deadline for a new instance to accept connections on its port.
    pub start_timeout_secs: u64,
    /// Uid:gid instances run as (never root).
    pub run_as: String,
    /// Pull a custom-container image that is not present on the node. Off: such a function
    /// fails to start with ImageNotFound (machines without a registry, tests).
    pub pull_missing_images: bool,
    /// Pre-started runtime containers waiting to be handed a function (`[agent.warm_pool]`).
    pub warm_pool: WarmPoolConfig,
}

/// The node's pool of pre-started generic runtime containers ("stem cells"): a cold start of a
/// built-in runtime takes one instead of creating a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmPoolConfig {
    pub enabled: bool,
    /// Most idle cells on the node, all shapes together.
    pub max_cells: usize,
    /// Most idle cells of one shape (runtime image, memory, CPU).
    pub max_per_shape: usize,
    /// Runtime families kept ready from the start, at the default function size (128 MB);
    /// other shapes join the pool when a cold start asks for them.
    pub prewarm: Vec<String>,
    /// A shape that hands out no cell for this long shrinks by one (to none, unless prewarmed).
    pub idle_secs: u64,
}

impl Default for WarmPoolConfig {
    fn default() -> Self {
        Self { enabled: true, max_cells: 8, max_per_shape: 4, prewarm: vec!["python3".into(), "nodejs".into()], idle_secs: 600 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Run the async dispatcher in this process.
    pub enabled: bool,
    /// Queue backend: `embedded` (a durable queue in the metadata database) or `kafka`
    /// (see [kafka]).
    pub queue: String,
    /// Most async invocations in flight at once (all functions).
    pub max_in_flight: usize,
    /// How long an empty queue is left alone before it is asked again.
    pub poll_interval_ms: u64,
    /// Lease on a received message before its function is known; extended to the function's
    /// timeout once it is. A dispatcher that dies loses its leases and the messages return.
    pub lease_secs: u64,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Deadline of one delivery attempt to an HTTP destination.
    pub destination_timeout_secs: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue: "embedded".into(),
            max_in_flight: 64,
            poll_interval_ms: 50,
            lease_secs: 30,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            destination_timeout_secs: 10,
        }
    }
}

/// The local log store (`<data_dir>/logs.db`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Lines older than this are deleted.
    pub retention_days: u32,
    /// At most this many lines are kept (the oldest go first).
    pub max_lines: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self { retention_days: 7, max_lines: 10_000_000 }
    }
}

/// Shipping of invocation logs to Elasticsearch/OpenSearch (the local store is the spill).
/// Its Debug output redacts the password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenSearchConfig {
    pub enabled: bool,
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`; several nodes comma-separated
    /// (requests rotate over them, so one node down only costs a retry).
    pub url: String,
    /// Basic-auth user; empty: no authentication.
    pub username: String,
    pub password: String,
    /// Lines go to `<index_prefix>-YYYY.MM.DD` (UTC day of the line).
    pub index_prefix: String,
    /// Most lines per `_bulk` request.
    pub batch_size: usize,
    /// Deadline of one request to the cluster.
    pub timeout_secs: u64,
    /// PEM file of the CA (or CAs) that signed the cluster's certificate, for https URLs; empty:
    /// the system's trusted roots.
    pub ca_cert_file: String,
    /// Accept any certificate from the cluster (no verification at all). For a test cluster
    /// only: anyone in the path can read the logs and the credentials.
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for OpenSearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSearchConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "<redacted>" })
            .field("index_prefix", &self.index_prefix)
            .field("batch_size", &self.batch_size)
            .field("timeout_secs", &self.timeout_secs)
            .field("ca_cert_file", &self.ca_cert_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "http://127.0.0.1:9200".into(),
            username: String::new(),
            password: String::new(),
            index_prefix: "nubis-logs".into(),
            batch_size: 1000,
            timeout_secs: 10,
            ca_cert_file: String::new(),
            insecure_skip_verify: false,
        }
    }
}

impl OpenSearchConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The node URLs of `url`, in order, blanks dropped.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }
}

/// The Kafka cluster behind `dispatcher.queue = "kafka"`, and the default brokers of Kafka
/// triggers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Topic of async invocations; created with `partitions` partitions if missing.
    pub topic: String,
    /// Consumer group of the dispatchers.
    pub group_id: String,
    pub partitions: i32,
    pub replication: i32,
    /// A dispatcher (or a Kafka trigger's consumer) silent this long loses its partitions to
    /// the others.
    pub session_timeout_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "nubis-async".into(),
            group_id: "nubis-dispatchers".into(),
            partitions: 8,
            replication: 1,
            session_timeout_ms: 6000,
        }
    }
}

impl DispatcherConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    /// Delay before retry number `attempt` (1-based): exponential and capped, then a random
    /// point in its upper half, so a burst of failures does not come back as a burst.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let exp = self.retry_base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.retry_max_ms).max(1);
        Duration::from_millis(cap / 2 + rand::random_range(0..=cap / 2))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9000".parse().expect("valid literal"),
            data_dir: PathBuf::from("./data"),
            public_url: String::new(),
            region: "cn-hangzhou".into(),
            account_id: "1000000000000000".into(),
            shutdown_grace_secs: 30,
            roles: ["api", "scheduler", "dispatcher", "agent"].map(String::from).to_vec(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { max_clock_skew_secs: 15 * 60, code_url_ttl_secs: 10 * 60 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_code_zip_bytes: 100 << 20,
            max_code_unzipped_bytes: 500 << 20,
            max_code_zip_entries: 50_000,
            max_sync_payload_bytes: 32 << 20,
            max_response_bytes: 32 << 20,
            max_async_payload_bytes: 128 << 10,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_instances_per_function: 10,
            idle_keep_alive_secs: 300,
            reap_interval_ms: 1000,
            acquire_timeout_secs: 30,
            max_starts_per_node: 4,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        let images = [
            ("python3", "nubis/runtime-python3:latest"),
            ("nodejs", "nubis/runtime-nodejs:latest"),
            ("custom.debian12", "nubis/runtime-custom-debian12:latest"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            node_id: "local".into(),
            docker_host: String::new(),
            images,
            pids_limit: 512,
            tmp_size_mb: 512,
            start_timeout_secs: 30,
            run_as: "10001:10001".into(),
            pull_missing_images: true,
            warm_pool: WarmPoolConfig::default(),
        }
    }
}

impl ServerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl AuthConfig {
    pub fn max_clock_skew(&self) -> Duration {
        Duration::from_secs(self.max_clock_skew_secs)
    }
    pub fn code_url_ttl(&self) -> Duration {
        Duration::from_secs(self.code_url_ttl_secs)
    }
}

impl SchedulerConfig {
    pub fn idle_keep_alive(&self) -> Duration {
        Duration::from_secs(self.idle_keep_alive_secs)
    }
    pub fn reap_interval(&self) -> Duration {
        Duration::from_millis(self.reap_interval_ms)
    }
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }
}

impl AgentConfig {
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs)
    }
}

/// `NUBIS_SECTION__KEY` → `section.key`. Only double-underscore names: single-underscore ones
/// (`NUBIS_DATA_DIR`, `NUBIS_LISTEN`) are command-line flags' env forms. The filter must run
/// before `split`, which turns `__` into `.`.
fn env_provider() -> Env {
    Env::prefixed("NUBIS_").filter(|k| k.as_str().contains("__")).split("__")
}

impl Config {
    /// Defaults, then the TOML file (if it exists; an explicit path must exist), then
    /// `NUBIS_SECTION__KEY` env vars.
    pub fn load(file: Option<&Path>) -> Result<Self, figment::Error> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None => fig = fig.merge(Toml::file("config/nubis.toml")),
        }
        fig.merge(env_provider()).extract()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_override_sections_and_flag_forms_are_left_alone() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NUBIS_SERVER__LISTEN", "127.0.0.1:18999");
            jail.set_env("NUBIS_SCHEDULER__IDLE_KEEP_ALIVE_SECS", "7");
            jail.set_env("NUBIS_KAFKA__BROKERS", "10.0.0.1:9092,10.0.0.2:9092");
            jail.set_env("NUBIS_DISPATCHER__ENABLED", "false");
            jail.set_env("NUBIS_DATA_DIR", "/ignored/here");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:18999");
            assert_eq!(c.scheduler.idle_keep_alive_secs, 7);
            assert_eq!(c.kafka.brokers, "10.0.0.1:9092,10.0.0.2:9092");
            assert!(!c.dispatcher.enabled);
            assert_eq!(c.server.data_dir, PathBuf::from("./data"));
            Ok(())
        });
    }

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        // In a Jail too: Jail serializes the tests that touch the process environment.
        figment::Jail::expect_with(|_| {
            let shipped = Config::load(Some(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/nubis.toml")))).unwrap();
            let defaults = Config::default();
            assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut c = Config::default();
        c.database.url = "postgres://nubis:hunter2@db.internal:5432/nubis".into();
        c.codestore.secret_access_key = "s3cr3t-key".into();
        c.opensearch.password = "os-pass".into();
        let shown = format!("{c:?}");
        for secret in ["hunter2", "s3cr3t-key", "os-pass"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("postgres://nubis:<redacted>@db.internal:5432/nubis"), "{shown}");
        // A URL without a password, or not a URL at all, is shown as it is.
        assert_eq!(redact_url_password("mysql://root@127.0.0.1/x"), "mysql://root@127.0.0.1/x");
        assert_eq!(redact_url_password(""), "");
    }
}
