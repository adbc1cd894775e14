//! Integration tests: each test starts its own server on port 0 with a fresh data directory and
//! its own node id (so its containers are its own), and runs real Docker containers.

mod helpers;

// Shared with the other test binaries: fresh databases, a cuttable TCP forwarder, S3 config.
#[path = "../support/databases.rs"]
mod databases;
#[path = "../support/forwarder.rs"]
mod forwarder;
#[path = "../support/kafka.rs"]
mod kafka_support;
#[path = "../support/s3.rs"]
mod s3;
#[path = "../support/timers.rs"]
mod timer_support;

mod aliases;
mod async_ordering;
mod async_tasks;
mod auth;
mod cli;
mod console;
mod console_browser;
mod functions;
mod http_triggers;
mod invoke;
mod kafka_triggers;
mod lifecycle;
mod log_queries;
mod logs;
mod metrics;
mod provisioned;
mod scaling;
mod storage;
mod summary;
mod timers;
mod triggers;
mod versions;
mod warm_pool;
mod webdriver;
