//! Start-up and ordered shutdown of the all-in-one server: every role in one process.
//!
//! Start: data dir → metadata store (SQLite, PostgreSQL or MySQL; migrated) → keys → code store
//! (local or S3) → log store (and its
//! shipper to OpenSearch, if enabled) → Docker node
//! (orphans of an earlier run removed) → resource manager + reaper → async queue + dispatcher
//! → timer engine → Kafka trigger engine → listener.
//! Stop (SIGTERM/SIGINT): stop accepting → drain in-flight requests (bounded by
//! `server.shutdown_grace_secs`) → stop the timer engine → stop the Kafka trigger engine
//! (batches in an instance finish and are committed) → stop the dispatcher (unfinished
//! messages back to the queue)
//! → stop every instance → stop background tasks (the log writer flushes) → close the DB.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::codecache::CodeCache;
use crate::agent::docker::{self, DockerNode};
use crate::api::keys::{self, Keyring};
use crate::api::{self, AppState, FunctionCache};
use crate::codestore::{CodeStore, package};
use crate::cluster;
use crate::config::{Config, redact_url_password};
use crate::dispatcher::Dispatcher;
use crate::queue::{Queue, embedded::EmbeddedQueue, kafka::KafkaQueue};
use crate::logstore::{LogSearch, LogStore, shipper};
use crate::metrics::Metrics;
use crate::scheduler::{ResourceManager, spec::Platform};
use crate::store::Store;
use crate::triggers::EngineWake;
use crate::triggers::kafka::KafkaEngine;
use crate::triggers::timer::{TimerEngine, TimerWake};

pub struct Server {
    listener: TcpListener,
    state: AppState,
    tracker: TaskTracker,
    /// Stops background tasks (reaper, log writer).
    cancel: CancellationToken,
    /// The dispatcher and its in-flight messages: stopped before the instances they use.
    dispatch: TaskTracker,
    stop_dispatch: CancellationToken,
    /// The timer engine: stopped before the dispatcher (ticks fire while requests drain).
    timers: TaskTracker,
    stop_timers: CancellationToken,
    /// The Kafka trigger engine, its runners and their batches: stopped after the timers,
    /// before the dispatcher (async deliveries submit to the queue).
    kafka_triggers: TaskTracker,
    stop_kafka_triggers: CancellationToken,
    /// Cluster mode: the internal listener for the other controllers, and the election
    /// (cancelled first at shutdown: resigning lets a follower take over at once).
    internal: Option<(TcpListener, axum::Router)>,
    stop_election: CancellationToken,
}

/// The roles of this process (`server.roles`), checked against the cluster settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub dispatcher: bool,
    pub agent: bool,
}

impl Roles {
    pub fn of(cfg: &Config) -> anyhow::Result<Self> {
        let has = |r: &str| cfg.server.roles.iter().any(|x| x == r);
        if let Some(bad) = cfg.server.roles.iter().find(|r| !["api", "scheduler", "dispatcher", "agent"].contains(&r.as_str())) {
            anyhow::bail!("server.roles: unknown role '{bad}' (known: api, scheduler, dispatcher, agent)");
        }
        // The API and the resource manager run together until controllers can reach a
        // scheduler in another process.
        if !has("api") || !has("scheduler") {
            anyhow::bail!("server.roles must include 'api' and 'scheduler' (agents run as `nubis agent`)");
        }
        match (has("agent"), cfg.cluster.enabled()) {
            (true, true) => anyhow::bail!(
                "server.roles includes 'agent' with cluster.etcd_endpoints set: in a cluster, run agents as `nubis agent`"
            ),
            (false, false) => {
                anyhow::bail!("server.roles without 'agent' needs cluster.etcd_endpoints: there would be no node to run functions on")
            }
            _ => {}
        }
        Ok(Self { dispatcher: has("dispatcher"), agent: has("agent") })
    }
}

/// Open the local log store, and its shipper to OpenSearch when enabled.
pub async fn open_logs(cfg: &Config, tracker: &TaskTracker, cancel: &CancellationToken, metrics: &Metrics) -> anyhow::Result<LogStore> {
    let logs = LogStore::open(
        &cfg.server.data_dir.join("logs.db"),
        cfg.logs.clone(),
        tracker,
        cancel.child_token(),
        metrics.log_lines_dropped.clone(),
        if cfg.opensearch.enabled { vec![shipper::TARGET.to_string()] } else { vec![] },
        metrics.log_lines_unshipped_dropped.clone(),
    )
    .await
    .context("opening the log store")?;
    if cfg.opensearch.enabled {
        // Reads logs.db only: an unreachable cluster never delays start-up or invocations.
        let m = shipper::ShipMetrics {
            backlog: metrics.log_shipping_backlog.clone(),
            shipped: metrics.log_lines_shipped.clone(),
            errors: metrics.log_shipping_errors.clone(),
        };
        let s = shipper::Shipper::new(&logs, cfg.opensearch.clone(), cfg.agent.node_id.clone(), m)
            .await
            .context("starting the log shipper")?;
        s.spawn(logs.clone(), tracker, cancel.child_token());
        tracing::info!(url = %cfg.opensearch.url, index_prefix = %cfg.opensearch.index_prefix, "shipping logs to OpenSearch");
    }
    Ok(logs)
}

/// The Docker node of this machine, with orphans of an earlier run removed.
/// Its warm pool runs until `cancel`.
pub async fn local_node(
    cfg: &Config,
    code: &CodeStore,
    logs: &LogStore,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<DockerNode>> {
    let limits = package::Limits {
        max_zip_bytes: cfg.limits.max_code_zip_bytes,
        max_unzipped_bytes: cfg.limits.max_code_unzipped_bytes,
        max_entries: cfg.limits.max_code_zip_entries,
    };
    let cache = CodeCache::new(cfg.server.data_dir.join("code-cache"), code.clone(), limits)?;
    let docker = docker::connect(&cfg.agent).await.context("connecting to Docker")?;
    let node = DockerNode::new(docker, cfg.agent.clone(), cache, logs.clone(), cfg.limits.max_response_bytes, tracker.clone(), metrics);
    let removed = crate::agent::Node::remove_orphans(&node).await.context("removing orphaned instances")?;
    tracing::info!(node = %cfg.agent.node_id, removed, "node agent ready");
    let node = Arc::new(node);
    node.spawn_warm_pool(cancel);
    Ok(node)
}

/// Open the metadata store and keyring of a data directory (also used by `nubis admin`).
pub async fn open_keys(cfg: &Config) -> anyhow::Result<(Store, Keyring)> {
    let dir = &cfg.server.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let store = Store::open(&cfg.database, dir)
        .await
        .with_context(|| format!("opening the metadata store ({})", redact_url_password(&cfg.database.url)))?;
    let master = keys::load_or_create_master_key(dir)?;
    Ok((store.clone(), Keyring::new(store, master)))
}

impl Server {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let roles = Roles::of(&cfg)?;
        let cfg = Arc::new(cfg);
        let dir = cfg.server.data_dir.clone();
        // Before connecting anything: the embedded queue is a table of the SQLite database.
        if cfg.dispatcher.queue == "embedded" && !cfg.database.is_sqlite() {
            anyhow::bail!(
                "dispatcher.queue = \"embedded\" keeps async invocations in the SQLite metadata database, but \
                 database.url names another database; set dispatcher.queue = \"kafka\" (and [kafka]) to run \
                 several controllers on a shared database"
            );
        }
        let (store, keyring) = open_keys(&cfg).await?;
        tracing::info!(data_dir = %dir.display(), engine = store.engine().name(), "metadata store ready");
        if keyring.count().await? == 0 {
            let k = keyring.create("admin (created at first start)").await?;
            // stdout, once: the only time the secret is shown.
            println!(
                "Nubis created the first admin access key. Keep the secret now; it is not shown again.\n  \
                 AccessKeyId:     {}\n  AccessKeySecret: {}",
                k.access_key_id, k.access_key_secret
            );
        }
        let code = CodeStore::open(&cfg.codestore, &dir).await.context("opening the code store")?;
        tracing::info!(location = %code.location(), "code store ready");
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let logs = open_logs(&cfg, &tracker, &cancel, &metrics).await?;
        let log_search = LogSearch::new(&cfg.opensearch, logs.clone()).context("connecting the log search")?;
        let platform = Platform {
            region: cfg.server.region.clone(),
            account_id: cfg.server.account_id.clone(),
            images: cfg.agent.images.clone(),
        };
        let rm = ResourceManager::new(cfg.scheduler.clone(), platform, tracker.clone(), metrics.clone());
        rm.set_local_logs(logs.clone(), cfg.agent.node_id.clone());
        rm.set_store(store.clone());
        if roles.agent {
            let node = local_node(&cfg, &code, &logs, &tracker, cancel.child_token(), metrics.clone()).await?;
            rm.add_node(node, crate::scheduler::host_capacity(), String::new());
        }
        // Cluster: other controllers update functions too; bound how long a change takes to
        // reach this one's invoke path (and its scheduler, when it leads).
        let functions = Arc::new(FunctionCache::with_ttl(cfg.cluster.enabled().then_some(std::time::Duration::from_secs(1))));
        let stop_election = CancellationToken::new();
        let (etcd, internal) = if cfg.cluster.enabled() {
            let client = cluster::connect(&cfg.cluster).await.context("connecting to etcd")?;
            let keys = cluster::Keys::new(&cfg.cluster);
            let listener = TcpListener::bind(cfg.cluster.controller_listen)
                .await
                .with_context(|| format!("binding the controller listener {}", cfg.cluster.controller_listen))?;
            let me = cluster::advertised(&cfg.cluster.controller_advertise_url, listener.local_addr()?);
            rm.join_cluster();
            let service = cluster::controller::ControllerService::new(rm.clone(), store.clone(), &cfg.cluster.secret, functions.clone());
            service.spawn_sweeper(&tracker, cancel.child_token());
            let campaign_client = cluster::connect_unbounded(&cfg.cluster).await.context("connecting to etcd")?;
            let election = cluster::election::Election {
                client: client.clone(),
                campaign_client,
                keys: keys.clone(),
                me: me.clone(),
                ttl: cfg.cluster.lease_ttl(),
                rm: rm.clone(),
                secret: cfg.cluster.secret.clone(),
                tracker: tracker.clone(),
            };
            election.spawn(stop_election.clone());
            tracing::info!(endpoints = ?cfg.cluster.etcd_endpoints, internal = %me, "cluster mode: campaigning for the scheduler");
            (Some((client, keys)), Some((listener, service.router())))
        } else {
            (None, None)
        };
        rm.spawn_reaper(cancel.child_token());
        rm.spawn_provisioner(store.clone(), cancel.child_token());
        let (queue, kafka): (Arc<dyn Queue>, _) = match cfg.dispatcher.queue.as_str() {
            "embedded" => (Arc::new(EmbeddedQueue::new(&store)?), None),
            "kafka" => {
                let q = KafkaQueue::connect(cfg.kafka.clone()).await.context("connecting to Kafka")?;
                let p = q.destination_producer();
                (Arc::new(q), Some(p))
            }
            other => anyhow::bail!("dispatcher.queue = '{other}' is not a known queue backend (embedded, kafka)"),
        };
        let (dispatch, stop_dispatch) = (TaskTracker::new(), CancellationToken::new());
        if cfg.dispatcher.enabled && roles.dispatcher {
            let d = Dispatcher::new(
                store.clone(),
                queue.clone(),
                rm.clone(),
                cfg.dispatcher.clone(),
                cfg.server.region.clone(),
                cfg.server.account_id.clone(),
                cfg.scheduler.max_instances_per_function,
                kafka,
            );
            d.spawn(&dispatch, stop_dispatch.clone());
            tracing::info!(queue = %cfg.dispatcher.queue, "async dispatcher running");
        }
        let (timers, stop_timers, timer_wake) = (TaskTracker::new(), CancellationToken::new(), TimerWake::default());
        if cfg.timers.enabled {
            // Idle unless this process places instances (leads, in a cluster).
            TimerEngine::new(store.clone(), queue.clone(), rm.clone(), cfg.timers.clone(), metrics.clone(), timer_wake.clone())
                .spawn(&timers, stop_timers.clone());
        }
        let listener = TcpListener::bind(cfg.server.listen).await.with_context(|| format!("binding {}", cfg.server.listen))?;
        let code_url_key = keyring.derived_key("code-links");
        let cfg_samples_kept = cfg.console.samples_kept;
        let state = AppState::new(crate::api::Handles {
            cfg,
            store,
            code,
            keys: Arc::new(keyring),
            rm,
            queue,
            metrics,
            logs,
            log_search,
            functions,
            code_url_key,
            code_gc: Arc::default(),
            etcd,
            timers: timer_wake,
            kafka_triggers: EngineWake::default(),
            samples: Arc::new(crate::console::Samples::new(cfg_samples_kept)),
        });
        if state.cfg.console.enabled {
            crate::console::spawn_sampler(&state, &tracker, cancel.child_token());
        }
        let (kafka_triggers, stop_kafka_triggers) = (TaskTracker::new(), CancellationToken::new());
        if state.cfg.kafka_triggers.enabled {
            // Idle unless this process places instances (leads, in a cluster).
            KafkaEngine::new(state.clone(), state.kafka_triggers.clone(), kafka_triggers.clone()).spawn(stop_kafka_triggers.clone());
        }
        Ok(Self {
            listener,
            state,
            tracker,
            cancel,
            dispatch,
            stop_dispatch,
            timers,
            stop_timers,
            kafka_triggers,
            stop_kafka_triggers,
            internal,
            stop_election,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` completes, then stop in order.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let app = api::router(self.state.clone());
        let stop_http = CancellationToken::new();
        // With the peer's address: HTTP triggers tell it to functions (`sourceIp`).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, app).with_graceful_shutdown(stop_http.clone().cancelled_owned());
        let mut serve = tokio::spawn(serve.into_future());
        tracing::info!(%addr, "listening");
        let stop_internal = CancellationToken::new();
        if let Some((listener, router)) = self.internal {
            let s = axum::serve(listener, router).with_graceful_shutdown(stop_internal.clone().cancelled_owned());
            self.tracker.spawn(async move {
                if let Err(e) = s.await {
                    tracing::error!("controller listener: {e}");
                }
            });
        }
        tokio::select! {
            r = &mut serve => { r??; }
            _ = shutdown => {}
        }
        tracing::info!("shutting down: refusing new requests, draining in-flight ones");
        stop_http.cancel();
        let grace = self.state.cfg.server.shutdown_grace();
        if tokio::time::timeout(grace, &mut serve).await.is_err() {
            tracing::warn!(?grace, "grace period over; stopping instances with requests still in flight");
            serve.abort();
        }
        // No more ticks; a step under way finishes its submits (bounded by the store's timeout).
        self.stop_timers.cancel();
        self.timers.close();
        if tokio::time::timeout(grace, self.timers.wait()).await.is_err() {
            tracing::warn!("the timer engine did not stop within the grace period");
        }
        // No more batches; those in an instance finish and are committed, the others (waiting
        // for a retry, or not started) are read again by the next consumer.
        self.stop_kafka_triggers.cancel();
        self.kafka_triggers.close();
        if tokio::time::timeout(grace, self.kafka_triggers.wait()).await.is_err() {
            tracing::warn!("kafka trigger batches still running after the grace period; they will be read again");
        }
        // Unfinished async messages go back to the queue (at least once: they run again later).
        self.stop_dispatch.cancel();
        self.dispatch.close();
        if tokio::time::timeout(grace, self.dispatch.wait()).await.is_err() {
            tracing::warn!("async dispatches still running after the grace period; their leases will return them");
        }
        // Leadership goes first (resigned: a follower takes over now), then the rest.
        self.stop_election.cancel();
        stop_internal.cancel();
        if self.state.cfg.cluster.enabled() {
            // Instances belong to the cluster: the next leader adopts them.
            tracing::info!("leaving instances running for the cluster");
        } else {
            // Instances first, while the log store still takes lines: their last output, and
            // the summaries of their last invocations (a stop waits for those), are stored.
            self.state.rm.stop_all().await;
        }
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.tracker.wait()).await.is_err() {
            tracing::warn!("background tasks did not finish in 10 s");
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
