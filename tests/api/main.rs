//! Integration tests: each test starts its own server on port 0 with a fresh data directory and
//! its own node id (so its containers are its own), and runs real Docker containers.

mod helpers;

mod async_tasks;
mod auth;
mod functions;
mod invoke;
mod lifecycle;
mod log_queries;
mod logs;
mod metrics;
mod summary;
