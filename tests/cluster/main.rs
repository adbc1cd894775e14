//! Cluster mode against a real etcd, with agents as separate `nubis agent` processes and a
//! controller (`api,scheduler,dispatcher`) in this process: membership, spreading, cordon and
//! drain, failover when an agent is killed, leaving on SIGTERM.
//!
//! Needs etcd: `bash scripts/test-services.sh start etcd` and eval its env
//! (NUBIS_TEST_ETCD_ENDPOINTS). Each test uses its own key prefix, so tests share one etcd.

#[path = "../api/helpers.rs"]
mod helpers;

#[path = "../support/databases.rs"]
mod databases;
#[path = "../support/kafka.rs"]
mod kafka_support;
#[path = "../support/s3.rs"]
mod s3;
#[path = "../support/timers.rs"]
mod timer_support;

mod etcd;
mod failover;
mod ha;
mod kafka_triggers;
mod logs;
mod membership;
mod timers;
mod triggers;

use std::process::Stdio;
use std::time::{Duration, Instant};

use helpers::{ApiClient, TestApp, eventually, spawn_app_with};
use serde_json::{Value, json};

pub const SECRET: &str = "cluster-test-secret";
pub const TTL_SECS: u64 = 3;

pub fn etcd_endpoints() -> String {
    std::env::var("NUBIS_TEST_ETCD_ENDPOINTS")
        .expect("NUBIS_TEST_ETCD_ENDPOINTS is not set: start etcd with `bash scripts/test-services.sh start etcd` and eval its env")
}

/// One test's cluster: a key prefix of its own in the shared etcd.
pub struct Cluster {
    pub prefix: String,
    pub tag: String,
    /// etcd endpoints of this cluster's own etcd, when it has one (else the shared one).
    pub etcd: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Self { prefix: format!("/nubis-test-{tag}"), tag, etcd: None }
    }

    pub async fn controller(&self) -> TestApp {
        self.controller_with(|_| {}).await
    }

    /// A controller in this process, with extra settings.
    pub async fn controller_with(&self, tweak: impl FnOnce(&mut nubis::config::Config)) -> TestApp {
        let (prefix, endpoints) = (self.prefix.clone(), self.etcd.clone().unwrap_or_else(etcd_endpoints));
        let app = spawn_app_with(move |c| {
            c.server.roles = ["api", "scheduler", "dispatcher"].map(String::from).to_vec();
            c.cluster.etcd_endpoints = endpoints.split(',').map(String::from).collect();
            c.cluster.secret = SECRET.into();
            c.cluster.key_prefix = prefix;
            c.cluster.lease_ttl_secs = TTL_SECS;
            c.cluster.controller_listen = "127.0.0.1:0".parse().unwrap();
            // Instances are stopped by the reaper; a short interval lets drain tests see it.
            c.scheduler.reap_interval_ms = 200;
            tweak(c);
        })
        .await;
        wait_for_leader(&app.api).await;
        app
    }

    /// Start `nubis agent` as its own process, on 127.0.0.1.
    pub fn agent(&self, name: &str) -> NubisProcess {
        self.agent_on(name, "127.0.0.1", &[])
    }

    /// Start `nubis agent` listening on `ip` (any 127.0.0.x), with extra environment.
    pub fn agent_on(&self, name: &str, ip: &str, env: &[(String, String)]) -> NubisProcess {
        let node_id = format!("{}-{name}", self.tag);
        let endpoints = self.etcd.clone().unwrap_or_else(etcd_endpoints);
        let args = ["agent", "--listen", &format!("{ip}:0"), "--join", &endpoints, "--node-id", &node_id].map(String::from);
        NubisProcess::start(&node_id, &args, &self.env(env))
    }

    /// The environment every process of this cluster shares.
    pub fn env(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("NUBIS_CLUSTER__SECRET".to_string(), SECRET.to_string()),
            ("NUBIS_CLUSTER__KEY_PREFIX".to_string(), self.prefix.clone()),
            ("NUBIS_CLUSTER__LEASE_TTL_SECS".to_string(), TTL_SECS.to_string()),
            ("NUBIS_AGENT__PULL_MISSING_IMAGES".to_string(), "false".to_string()),
            // Cells would only add load here; the pool is tested in tests/api/warm_pool.rs.
            ("NUBIS_AGENT__WARM_POOL__ENABLED".to_string(), "false".to_string()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ];
        env.extend_from_slice(extra);
        env
    }
}

/// A `nubis` process of the test (agent or controller), killed with the test.
pub struct NubisProcess {
    /// The node id (agents) or a name (controllers).
    pub node_id: String,
    pub child: tokio::process::Child,
    pub dir: tempfile::TempDir,
}

impl NubisProcess {
    pub fn start(name: &str, args: &[String], env: &[(String, String)]) -> Self {
        Self::start_in(name, tempfile::tempdir().unwrap(), args, env)
    }

    /// Start with `dir` as the data directory (stderr goes to `dir/nubis.log`).
    pub fn start_in(name: &str, dir: tempfile::TempDir, args: &[String], env: &[(String, String)]) -> Self {
        let log = std::fs::File::create(dir.path().join("nubis.log")).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nubis"));
        cmd.args(args).arg("--data-dir").arg(dir.path()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start nubis");
        Self { node_id: name.to_string(), child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nubis.log")).unwrap_or_default()
    }

    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("kill -9");
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("process running") as i32;
        // Through the `kill` command: keeps the test free of libc.
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM");
    }
}

impl Drop for NubisProcess {
    fn drop(&mut self) {
        // A killed agent leaves its containers; remove them so tests do not leak.
        let node = self.node_id.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(remove_containers(&node));
        })
        .join()
        .ok();
    }
}

pub async fn remove_containers(node_id: &str) {
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    for c in helpers::containers_of(node_id, None).await {
        let opts = bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() };
        let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(opts)).await;
    }
}

/// The controller's view of the election: `leader`, or `follower` with the leader's URL.
pub async fn cluster_role(api: &ApiClient) -> Value {
    let r = api.request("GET", "/nubis/admin/v1/cluster", "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Wait until this controller leads or knows who does.
pub async fn wait_for_leader(api: &ApiClient) {
    eventually(Duration::from_secs(30), "a scheduler leader", || async {
        let c = cluster_role(api).await;
        (c["role"] == "leader" || c["leader"].is_string()).then_some(())
    })
    .await;
}

/// The node table. A 503 (no leader for a moment: a loaded machine can delay a lease renewal
/// past the short test TTL, and an election follows) is retried; anything else fails.
pub async fn nodes(api: &ApiClient) -> Vec<Value> {
    eventually(Duration::from_secs(15), "the node table", || async {
        let r = api.request("GET", "/nubis/admin/v1/nodes", "", &[], vec![]).await;
        if r.status == 503 {
            return None;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        Some(r.json()["nodes"].as_array().cloned().unwrap_or_default())
    })
    .await
}

/// Wait until exactly these node ids are live members (in any order).
pub async fn wait_for_nodes(api: &ApiClient, ids: &[&str], deadline: Duration) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(deadline, &format!("nodes {want:?}"), || {
        let want = want.clone();
        async move {
            let mut have: Vec<String> = nodes(api).await.iter().map(|n| n["nodeId"].as_str().unwrap().to_string()).collect();
            have.sort();
            (have == want).then_some(())
        }
    })
    .await;
}

pub fn echo_function(name: &str) -> Value {
    json!({"functionName": name, "runtime": "custom-container", "handler": "unused", "memorySize": 128,
           "customContainerConfig": {"image": "nubis/test-echo-container:latest", "port": 9000}})
}

/// The node that hosts an instance, from the admin API.
pub async fn node_of(api: &ApiClient, instance_id: &str) -> Option<String> {
    nodes(api).await.iter().find_map(|n| {
        n["instances"]
            .as_array()?
            .iter()
            .any(|i| i["instanceId"] == instance_id)
            .then(|| n["nodeId"].as_str().unwrap().to_string())
    })
}

pub fn elapsed_ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}
