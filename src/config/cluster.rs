//! `[cluster]`: membership and coordination in etcd, the internal listeners of agents and
//! controllers, the shared secret.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Cluster mode: membership and coordination in etcd, agents on other machines.
/// Its Debug output redacts the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints (`host:port` or URLs). Empty: a single box, no cluster.
    pub etcd_endpoints: Vec<String>,
    /// Shared secret of controllers and agents; agents refuse calls without it.
    pub secret: String,
    /// An agent that stops renewing its membership for this long is considered lost.
    pub lease_ttl_secs: u64,
    /// Prefix of every key Nubis writes in etcd (several clusters can share one etcd).
    pub key_prefix: String,
    /// The agent's internal listener (control plane ↔ agent), separate from the public API.
    pub agent_listen: std::net::SocketAddr,
    /// URL controllers use to reach this agent. Empty: `http://<agent_listen>`.
    pub agent_advertise_url: String,
    /// A controller's internal listener (the scheduler leader serves the other controllers).
    pub controller_listen: std::net::SocketAddr,
    /// URL other controllers use to reach this one. Empty: `http://<controller_listen>`.
    pub controller_advertise_url: String,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("secret", &if self.secret.is_empty() { "" } else { "<redacted>" })
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .field("key_prefix", &self.key_prefix)
            .field("agent_listen", &self.agent_listen)
            .field("agent_advertise_url", &self.agent_advertise_url)
            .field("controller_listen", &self.controller_listen)
            .field("controller_advertise_url", &self.controller_advertise_url)
            .finish()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: vec![],
            secret: String::new(),
            lease_ttl_secs: 10,
            key_prefix: "/nubis".into(),
            agent_listen: "127.0.0.1:9100".parse().expect("static address"),
            agent_advertise_url: String::new(),
            controller_listen: "127.0.0.1:9101".parse().expect("static address"),
            controller_advertise_url: String::new(),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}
