//! Nubis: a self-hosted Function Compute speaking the FC 3.0 REST API (2023-03-30).
//!
//! # Layout
//! One crate, one binary (`nubis`), one module per role and one per outside seam:
//!
//! - [`api`]: the API controller: FC 3.0 REST routes, request signing, FC error bodies,
//!   the sync invoke path, `/openapi.json`, `/health`.
//! - [`scheduler`]: the resource manager: the instance table, slots, placement, idle reaping.
//! - [`dispatcher`]: consumes async invocations from the queue: retries, expiry,
//!   destinations, task records. [`invoker`]: the one invoke path both share.
//! - [`agent`]: the node agent: runs instances as Docker containers (bollard), captures logs,
//!   proxies invocations into containers; in a cluster, served to controllers over HTTP
//!   ([`agent::service`], [`agent::remote`]).
//! - [`cluster`]: membership in etcd: agents register under leases, controllers mirror the live
//!   nodes into the resource manager.
//! - [`model`]: domain types, validated at the edge; no I/O.
//! - [`triggers`]: what runs triggers: HTTP triggers served on the API listener, the timer
//!   engine and the Kafka trigger engine.
//! - [`store`]: all SQL (function metadata, access keys, async tasks): SQLite by default,
//!   PostgreSQL or MySQL/MariaDB when controllers share a database.
//! - [`queue`]: the async invocation queue seam ([`queue::Queue`]); embedded in SQLite for now.
//! - [`codestore`]: code packages in object storage (object_store: a local directory or S3),
//!   zip checks and unpacking.
//! - [`logstore`]: per-invocation log records.
//! - [`console`]: the admin web console: sign-in sessions, the embedded front end, chart series.
//! - [`metrics`]: Prometheus counters and histograms, `/metrics`.
//! - [`clock`]: the epoch-ms clock of task events (never goes backwards in a process).
//! - [`config`], [`telemetry`], [`server`], [`agentd`]: typed config, tracing, start-up and
//!   ordered shutdown of `nubis server` and `nubis agent`.
//! - [`cli`]: the user CLI (`nubis deploy`, `invoke`, `logs`, …), a signed client of any
//!   Nubis endpoint.

pub mod agent;
pub mod agentd;
pub mod api;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod codestore;
pub mod config;
pub mod console;
pub mod dispatcher;
pub mod invoker;
pub mod logstore;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod triggers;
