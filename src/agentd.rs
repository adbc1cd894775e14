//! Start-up and ordered shutdown of `nubis agent`: a worker node of a cluster.
//!
//! Start: data dir → log store (and shipper) → code store → Docker node (orphans removed) →
//! internal listener (the control-plane protocol, [`crate::agent::service`]) → membership in
//! etcd under a lease. Controllers find the node through etcd and reset it before use.
//! Stop (SIGTERM/SIGINT): revoke the lease (controllers stop placing here and forget the
//! node's instances at once) → stop serving, letting in-flight calls finish within the grace
//! period → stop every instance.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::service::AgentService;
use crate::cluster::{self, Keys, NodeRecord};
use crate::codestore::CodeStore;
use crate::config::Config;
use crate::metrics::Metrics;

pub struct Agent {
    cfg: Config,
    listener: TcpListener,
    service: AgentService,
    etcd: etcd_client::Client,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Agent {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.cluster.enabled(), "`nubis agent` needs cluster.etcd_endpoints (or --join)");
        let dir = &cfg.server.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
        let etcd = cluster::connect(&cfg.cluster).await.context("connecting to etcd")?;
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let logs = crate::server::open_logs(&cfg, &tracker, &cancel, &metrics).await?;
        // The controllers' code store (S3 in a cluster): agents fetch packages themselves.
        let code = CodeStore::open(&cfg.codestore, dir).await.context("opening the code store")?;
        let node = crate::server::local_node(&cfg, &code, &logs, &tracker, cancel.child_token(), metrics.clone()).await?;
        // The body limit covers the largest event plus headroom for the JSON spec of a start.
        let capacity = crate::scheduler::host_capacity();
        let service =
            AgentService::new(node, &cfg.cluster.secret, cfg.limits.max_sync_payload_bytes + (1 << 20), metrics, capacity.memory_mb);
        let listener = TcpListener::bind(cfg.cluster.agent_listen)
            .await
            .with_context(|| format!("binding the agent listener {}", cfg.cluster.agent_listen))?;
        Ok(Self { cfg, listener, service, etcd, tracker, cancel })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serve and stay registered until `shutdown` completes, then stop in order.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let advertise = cluster::advertised(&self.cfg.cluster.agent_advertise_url, addr);
        let record = NodeRecord {
            node_id: self.cfg.agent.node_id.clone(),
            address: advertise,
            capacity: crate::scheduler::host_capacity(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let stop_http = CancellationToken::new();
        let serve = axum::serve(self.listener, self.service.router()).with_graceful_shutdown(stop_http.clone().cancelled_owned());
        let mut serve = tokio::spawn(serve.into_future());
        let membership = self.cancel.child_token();
        let reg = TaskTracker::new();
        cluster::register::spawn(self.etcd.clone(), Keys::new(&self.cfg.cluster), record, self.cfg.cluster.lease_ttl(), &reg, membership.clone());
        tracing::info!(%addr, node = %self.cfg.agent.node_id, "agent listening");
        tokio::select! {
            r = &mut serve => { r??; }
            _ = shutdown => {}
        }
        tracing::info!("shutting down: leaving the cluster, draining in-flight calls");
        membership.cancel();
        reg.close();
        reg.wait().await;
        stop_http.cancel();
        if tokio::time::timeout(self.cfg.server.shutdown_grace(), &mut serve).await.is_err() {
            tracing::warn!("grace period over; stopping instances with calls still in flight");
            serve.abort();
        }
        let stopped = self.service.stop_all().await;
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.tracker.wait()).await.is_err() {
            tracing::warn!("background tasks did not finish in 10 s");
        }
        tracing::info!(stopped, "agent stopped");
        Ok(())
    }
}
