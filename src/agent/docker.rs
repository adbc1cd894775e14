//! The Docker node: instances are hardened containers on the local engine (bollard only; never
//! the `docker` CLI). The agent reaches an instance at its bridge IP and the function's port,
//! over pooled keep-alive connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, Request};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;
use axum::body::Body;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codecache::CodeCache;
use super::logs::LogCapture;
use super::memory::{self, EngineReading};
use super::pool::{self, Cell, Shape, WarmPool};
use super::{AgentError, InstanceInfo, InstanceSpec, InvokeRequest, InvokeResponse, Node, StreamRequest, StreamResponse};
use crate::config::AgentConfig;
use crate::logstore::{InvocationSummary, LogStore};
use crate::metrics::Metrics;

pub const LABEL_MANAGED: &str = "nubis.managed";
pub const LABEL_NODE: &str = "nubis.node";
pub const LABEL_FUNCTION: &str = "nubis.function";
pub const LABEL_INSTANCE: &str = "nubis.instance";
pub const LABEL_REVISION: &str = "nubis.revision";
/// `LATEST` or the published version the instance runs.
pub const LABEL_VERSION: &str = "nubis.version";
/// On warm-pool cells: the shape the cell was started for (it keeps the label once it serves).
pub const LABEL_CELL: &str = "nubis.cell";

/// Runtime families whose bootstrap can wait as a warm-pool cell.
const CELL_FAMILIES: [&str; 2] = ["python3", "nodejs"];
/// Deadline of the specialize call into a cell (a local HTTP round trip).
const SPECIALIZE_TIMEOUT: Duration = Duration::from_secs(2);

struct Running {
    container_id: String,
    capture: Arc<LogCapture>,
    memory_mb: u32,
    /// The function's x-fc-* headers, sent on every call into the instance.
    base_headers: HeaderMap,
    /// The cgroup file of its memory peak, when the agent can see it (see [`super::memory`]).
    /// Held open for the instance's life: the kernel still removes the cgroup with the container
    /// (a read then fails: no reading), and Nubis never restarts a container (a new cgroup).
    cgroup_peak: Option<std::fs::File>,
    /// Otherwise: held (read) by each summary still waiting for the engine's memory reading;
    /// `stop_instance` takes it (write) before removing the container, so a discarded instance
    /// is measured first. Holds the engine's last reading of the instance.
    measuring: Arc<tokio::sync::RwLock<EngineReading>>,
    /// A former warm-pool cell's own code directory, removed with the instance.
    cell_dir: Option<std::path::PathBuf>,
}

pub struct DockerNode {
    docker: Docker,
    node_id: String,
    cfg: AgentConfig,
    code: CodeCache,
    logs: LogStore,
    /// One pool for events and streamed trigger requests alike.
    http: Client<HttpConnector, Body>,
    max_response_bytes: usize,
    running: Arc<Mutex<HashMap<String, Arc<Running>>>>,
    tracker: TaskTracker,
    pool: Option<Arc<WarmPool>>,
    metrics: Arc<Metrics>,
    /// Instances whose container exited without being stopped (see [`Node::take_exited`]).
    exited: Arc<Mutex<Vec<String>>>,
}

/// How a start through a warm-pool cell ended.
enum HandOff {
    Served(SocketAddr),
    /// The function's own failure (its initializer): reported as for any start.
    Failed(AgentError),
    /// The cell could not take the function (it died, the link failed): start fresh instead.
    Unusable(String),
}

/// Connect to the engine named in config (or DOCKER_HOST / the local socket) and agree on an
/// API version, so an older engine (Debian's 20.10 speaks 1.41) works.
pub async fn connect(cfg: &AgentConfig) -> Result<Docker, AgentError> {
    let docker = if cfg.docker_host.is_empty() {
        Docker::connect_with_local_defaults()
    } else if let Some(path) = cfg.docker_host.strip_prefix("unix://") {
        Docker::connect_with_socket(path, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(&cfg.docker_host, 120, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|e| AgentError::Unavailable(e.to_string()))?;
    docker.negotiate_version().await.map_err(|e| AgentError::Unavailable(format!("{e} (is dockerd running?)")))
}

fn docker_err(e: bollard::errors::Error) -> AgentError {
    AgentError::Unavailable(e.to_string())
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerNode {
    pub fn new(
        docker: Docker,
        cfg: AgentConfig,
        code: CodeCache,
        logs: LogStore,
        max_response_bytes: usize,
        tracker: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut conn = HttpConnector::new();
        // Small request/response pairs: Nagle would add up to 40 ms per call.
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(conn);
        let pool = cfg.warm_pool.enabled.then(|| {
            let images: Vec<String> = CELL_FAMILIES.iter().filter_map(|f| cfg.images.get(*f).cloned()).collect();
            let prewarm = cfg
                .warm_pool
                .prewarm
                .iter()
                .filter_map(|family| cfg.images.get(family).filter(|_| CELL_FAMILIES.contains(&family.as_str())))
                .map(|image| {
                    let memory_mb = crate::model::function::DEFAULT_MEMORY_MB;
                    let cpu = crate::model::function::default_cpu(memory_mb);
                    Shape { image: image.clone(), memory_mb, millicpu: (cpu * 1000.0).round() as u32, port: crate::model::function::DEFAULT_PORT }
                })
                .collect();
            // Per node: several nodes may share a data directory's code cache.
            let dir = code.dir().join(format!(".cells-{}", sanitize(&cfg.node_id)));
            Arc::new(WarmPool::new(cfg.warm_pool.clone(), dir, images, prewarm))
        });
        Self {
            docker,
            node_id: cfg.node_id.clone(),
            cfg,
            code,
            logs,
            http,
            max_response_bytes,
            running: Arc::default(),
            tracker,
            pool,
            metrics,
            exited: Arc::default(),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn ensure_image(&self, image: &str) -> Result<(), AgentError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if !is_not_found(&e) => return Err(docker_err(e)),
            Err(_) if !self.cfg.pull_missing_images => return Err(AgentError::ImageNotFound(image.to_string())),
            Err(_) => {}
        }
        let opts = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
        let mut pull = self.docker.create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                tracing::warn!(image, "pull failed: {e}");
                return Err(AgentError::ImageNotFound(image.to_string()));
            }
        }
        Ok(())
    }

    fn container_body(&self, spec: &InstanceSpec, code_dir: Option<String>) -> ContainerCreateBody {
        let working_dir = code_dir.as_ref().map(|_| "/code".to_string());
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NODE.to_string(), self.node_id.clone()),
            (LABEL_FUNCTION.to_string(), spec.function_name.clone()),
            (LABEL_INSTANCE.to_string(), spec.instance_id.clone()),
            (LABEL_REVISION.to_string(), spec.revision.to_string()),
            (LABEL_VERSION.to_string(), spec.version.map_or_else(|| "LATEST".to_string(), |v| v.to_string())),
        ]);
        let memory = i64::from(spec.memory_mb) << 20;
        let host_config = HostConfig {
            memory: Some(memory),
            // Equal to memory: no swap, so the limit is a real limit.
            memory_swap: Some(memory),
            nano_cpus: Some((spec.cpu * 1e9) as i64),
            pids_limit: Some(self.cfg.pids_limit),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}m,mode=1777", self.cfg.tmp_size_mb),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            binds: code_dir.map(|d| vec![format!("{d}:/code:ro")]),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "2".to_string()),
                ])),
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: Some(self.cfg.run_as.clone()),
            working_dir,
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Follow the container's output into `capture`; until it is set (a cell waiting in the
    /// pool), lines are dropped: no function is running there yet.
    fn follow_logs(&self, container_id: String, capture: Arc<std::sync::OnceLock<Arc<LogCapture>>>) {
        let (docker, running, exited) = (self.docker.clone(), self.running.clone(), self.exited.clone());
        // The follower outlives the invocation that started the instance: a span of its own,
        // not that request's.
        let span = tracing::info_span!(parent: None, "logs", container = %&container_id[..12.min(container_id.len())]);
        self.tracker.spawn(async move {
            let opts = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
            let mut stream = docker.logs(&container_id, Some(opts));
            let mut partial = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let (name, msg) = match chunk {
                    bollard::container::LogOutput::StdOut { message } => ("stdout", message),
                    bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                    _ => continue,
                };
                partial.push_str(&String::from_utf8_lossy(&msg));
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    if let Some(c) = capture.get() {
                        c.line(name, &line);
                    }
                }
                if partial.len() > super::logs::MAX_LINE {
                    let line = std::mem::take(&mut partial);
                    if let Some(c) = capture.get() {
                        c.line(name, &line);
                    }
                }
            }
            if let Some(c) = capture.get().filter(|_| !partial.is_empty()) {
                c.line("stdout", &partial);
            }
            // The output ends with the container. An instance still in the table was not
            // stopped by us: it exited on its own (unless only the stream broke).
            let instance = running.lock().expect("running lock").iter().find(|(_, r)| r.container_id == container_id).map(|(id, _)| id.clone());
            if let Some(instance) = instance {
                let alive = docker.inspect_container(&container_id, None::<InspectContainerOptions>).await
                    .ok().and_then(|i| i.state).and_then(|s| s.running).unwrap_or(false);
                if !alive {
                    tracing::warn!(%instance, "instance exited on its own");
                    exited.lock().expect("exited lock").push(instance);
                }
            }
        }.instrument(span));
    }

    async fn container_state(&self, id: &str) -> Option<(bool, bool, Option<i64>)> {
        let info = self.docker.inspect_container(id, None::<InspectContainerOptions>).await.ok()?;
        let st = info.state?;
        Some((st.running.unwrap_or(false), st.oom_killed.unwrap_or(false), st.exit_code))
    }

    async fn recent_logs(&self, id: &str) -> String {
        let opts = LogsOptions { stdout: true, stderr: true, tail: "20".into(), ..Default::default() };
        let mut out = String::new();
        let mut s = self.docker.logs(id, Some(opts));
        while let Some(Ok(chunk)) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        super::logs::tail(out.trim(), 2048).to_string()
    }

    /// Poll until the instance accepts connections (and answers its health check), or fail
    /// early if the container exits.
    async fn wait_ready(&self, container_id: &str, addr: SocketAddr, spec: &InstanceSpec) -> Result<(), AgentError> {
        let timeout = self.cfg.start_timeout();
        let deadline = Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            let connected = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr))
                .await
                .is_ok_and(|r| r.is_ok());
            if connected {
                match &spec.health_path {
                    None => return Ok(()),
                    Some(path) => {
                        let req = Request::get(format!("http://{addr}{path}")).body(Body::empty()).expect("valid request");
                        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), self.http.request(req)).await
                            && r.status().is_success()
                        {
                            return Ok(());
                        }
                    }
                }
            }
            attempt += 1;
            if attempt.is_multiple_of(10) {
                match self.container_state(container_id).await {
                    Some((true, _, _)) => {}
                    Some((false, _, code)) => {
                        return Err(AgentError::Exited { exit_code: code, logs: self.recent_logs(container_id).await });
                    }
                    None => return Err(AgentError::Exited { exit_code: None, logs: String::new() }),
                }
            }
            if Instant::now() >= deadline {
                return Err(AgentError::NotReady { port: addr.port(), secs: timeout.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(if attempt < 100 { 5 } else { 50 })).await;
        }
    }

    async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Result<InvokeResponse, hyper_util::client::legacy::Error>, tokio::time::error::Elapsed> {
        self.send(addr, Method::POST, path, headers, body, timeout).await
    }

    /// One request into an instance; `path` is origin-form (path and query).
    async fn send(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Result<InvokeResponse, hyper_util::client::legacy::Error>, tokio::time::error::Elapsed> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Body::from(body))
            .expect("valid request");
        *req.headers_mut() = headers;
        let max = self.max_response_bytes;
        tokio::time::timeout(timeout, async {
            let resp = self.http.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = match Limited::new(body, max).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(InvokeResponse {
                        status: 502,
                        headers: HeaderMap::new(),
                        body: Bytes::from(format!("response unreadable or larger than {max} bytes: {e}")),
                        function_error: true,
                        logs: None,
                    });
                }
            };
            let function_error = parts.headers.get("x-fc-status").is_some_and(|v| v == "404") || parts.status.is_server_error();
            Ok(InvokeResponse { status: parts.status.as_u16(), headers: parts.headers, body, function_error, logs: None })
        })
        .await
    }

    /// After a failed request: find out whether the container died and why.
    async fn diagnose(&self, container_id: &str, memory_mb: u32, err: String) -> AgentError {
        // The engine records the exit a moment after the connection drops.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.container_state(container_id).await {
                Some((false, true, _)) => return AgentError::OutOfMemory(memory_mb),
                Some((false, false, Some(137))) => {
                    // cgroup v1 may report the OOM kill only as SIGKILL.
                    return AgentError::OutOfMemory(memory_mb);
                }
                Some((false, false, code)) => return AgentError::Crashed(code),
                None => return AgentError::Crashed(None),
                Some((true, _, _)) if Instant::now() >= deadline => return AgentError::BadResponse(err),
                Some((true, _, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Create and start a container and wait until it is ready; removed again on failure.
    async fn launch(
        &self,
        name: String,
        body: ContainerCreateBody,
        spec: &InstanceSpec,
        capture: Arc<std::sync::OnceLock<Arc<LogCapture>>>,
    ) -> Result<(String, SocketAddr), AgentError> {
        self.ensure_image(&spec.image).await?;
        let opts = CreateContainerOptions { name: Some(name), ..Default::default() };
        let created = self.docker.create_container(Some(opts), body).await.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => AgentError::ImageNotFound(spec.image.clone()),
            e => docker_err(e),
        })?;
        let id = created.id;
        tracing::debug!(instance = %spec.instance_id, container = %id, image = %spec.image, "container created");
        let started = async {
            self.docker.start_container(&id, None).await.map_err(docker_err)?;
            self.follow_logs(id.clone(), capture);
            let info = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await.map_err(docker_err)?;
            let Some(ip) = container_ip(&info) else {
                // A process that exits at once can be gone (and its network with it) before
                // the inspect: that is the function's exit, not a platform fault.
                if info.state.as_ref().and_then(|s| s.running) == Some(false) {
                    let exit_code = info.state.as_ref().and_then(|s| s.exit_code);
                    return Err(AgentError::Exited { exit_code, logs: self.recent_logs(&id).await });
                }
                return Err(AgentError::Internal("container has no bridge IP".into()));
            };
            let addr = SocketAddr::new(ip, spec.port);
            tracing::debug!(instance = %spec.instance_id, %addr, "container started; waiting until it is ready");
            self.wait_ready(&id, addr, spec).await?;
            Ok(addr)
        }
        .await;
        match started {
            Ok(addr) => Ok((id, addr)),
            Err(e) => {
                self.remove(&id).await;
                Err(e)
            }
        }
    }

    /// Call the function's initializer, if it has one, before the instance serves.
    async fn initialize(&self, container_id: &str, addr: SocketAddr, spec: &InstanceSpec) -> Result<(), AgentError> {
        let Some(timeout) = spec.initializer_timeout else { return Ok(()) };
        tracing::debug!(instance = %spec.instance_id, "calling the initializer");
        let mut headers = spec.base_headers.clone();
        let request_id = crate::model::new_request_id();
        headers.insert("x-fc-request-id", HeaderValue::from_str(&request_id).expect("ascii id"));
        headers.insert("x-fc-control-path", HeaderValue::from_static("/initialize"));
        match self.post(addr, "/initialize", headers, Bytes::new(), timeout).await {
            Ok(Ok(r)) if r.status < 300 && !r.function_error => Ok(()),
            Ok(Ok(r)) => Err(AgentError::Initialization(r)),
            Ok(Err(e)) => Err(self.diagnose(container_id, spec.memory_mb, e.to_string()).await),
            Err(_) => Err(AgentError::Timeout(timeout.as_secs())),
        }
    }

    fn add_running(&self, spec: &InstanceSpec, container_id: String, capture: Arc<LogCapture>, cell_dir: Option<std::path::PathBuf>) {
        let cgroup_peak = memory::open_cgroup_peak(&container_id);
        let running = Arc::new(Running {
            container_id,
            capture,
            memory_mb: spec.memory_mb,
            base_headers: spec.base_headers.clone(),
            cgroup_peak,
            measuring: Arc::default(),
            cell_dir,
        });
        self.running.lock().expect("running lock").insert(spec.instance_id.clone(), running);
    }

    /// Turn a waiting cell into an instance of `spec`'s function: link the code into the cell's
    /// directory, hand it the function's environment, initialize it.
    async fn hand_off(&self, cell: Cell, code: &std::path::Path, spec: &InstanceSpec) -> HandOff {
        let t0 = Instant::now();
        let (src, dest) = (code.to_path_buf(), cell.dir.clone());
        let linked = tokio::task::spawn_blocking(move || pool::link_tree(&src, &dest)).await;
        let ready = match linked {
            Ok(Ok(())) => self.specialize(&cell, spec).await,
            Ok(Err(e)) => Err(format!("linking the code: {e}")),
            Err(e) => Err(format!("linking the code: {e}")),
        };
        if let Err(why) = ready {
            self.remove_cell(cell).await;
            return HandOff::Unusable(why);
        }
        let capture = Arc::new(LogCapture::new(
            spec.function_name.clone(),
            spec.instance_id.clone(),
            spec.prints_log_markers,
            self.logs.clone(),
        ));
        let _ = cell.capture.set(capture.clone());
        if let Err(e) = self.initialize(&cell.container_id, cell.addr, spec).await {
            self.remove_cell(cell).await;
            return HandOff::Failed(e);
        }
        tracing::debug!(cell = %cell.id, instance = %spec.instance_id, ms = t0.elapsed().as_millis() as u64, "warm-pool cell handed off");
        self.add_running(spec, cell.container_id, capture, Some(cell.dir));
        HandOff::Served(cell.addr)
    }

    async fn specialize(&self, cell: &Cell, spec: &InstanceSpec) -> Result<(), String> {
        let env: serde_json::Map<String, serde_json::Value> =
            spec.env.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "env": env })).expect("JSON of strings");
        let mut headers = HeaderMap::new();
        headers.insert("x-nubis-cell-token", HeaderValue::from_str(&cell.token).map_err(|e| e.to_string())?);
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        match self.post(cell.addr, "/nubis/specialize", headers, Bytes::from(body), SPECIALIZE_TIMEOUT).await {
            Ok(Ok(r)) if r.status == 200 => Ok(()),
            Ok(Ok(r)) => Err(format!("specialize answered {}: {}", r.status, String::from_utf8_lossy(&r.body))),
            Ok(Err(e)) => Err(format!("specialize failed: {e}")),
            Err(_) => Err("specialize timed out".into()),
        }
    }

    /// Start one cell of `shape`: the runtime's bootstrap with only the shape's environment, an
    /// empty code directory of its own, and a one-time token.
    async fn create_cell(&self, pool: &WarmPool, shape: &Shape) -> Result<Cell, AgentError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dir = pool.dir().join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::Internal(format!("cell directory {}: {e}", dir.display())))?;
        // The runtime user reads (and lists) the directory the code is linked into.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| AgentError::Internal(format!("cell directory {}: {e}", dir.display())))?;
        let port = shape.port.to_string();
        let spec = InstanceSpec {
            instance_id: format!("cell-{id}"),
            function_name: String::new(),
            version: None,
            revision: 0,
            image: shape.image.clone(),
            entrypoint: None,
            cmd: None,
            code_checksum: None,
            env: vec![
                ("FC_SERVER_PORT".into(), port.clone()),
                ("FC_CUSTOM_LISTEN_PORT".into(), port),
                ("FC_FUNC_CODE_PATH".into(), "/code/".into()),
                ("PYTHONUNBUFFERED".into(), "1".into()),
                ("NUBIS_CELL_TOKEN".into(), token.clone()),
            ],
            memory_mb: shape.memory_mb,
            cpu: shape.cpu(),
            concurrency: 1,
            port: shape.port,
            health_path: None,
            prints_log_markers: true,
            initializer_timeout: None,
            base_headers: HeaderMap::new(),
        };
        let mut body = self.container_body(&spec, Some(dir.display().to_string()));
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_CELL.to_string(), shape.label());
        }
        let capture = Arc::new(std::sync::OnceLock::new());
        match self.launch(format!("nubis-cell-{id}"), body, &spec, capture.clone()).await {
            Ok((container_id, addr)) => Ok(Cell { id, container_id, addr, token, dir, capture }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn remove_cell(&self, cell: Cell) {
        self.remove(&cell.container_id).await;
        let _ = tokio::fs::remove_dir_all(&cell.dir).await;
    }

    /// Keep the warm pool filled (and trimmed) until `cancel`, then remove its idle cells.
    /// One cell starts at a time: the pool must not compete with the cold starts it serves.
    pub fn spawn_warm_pool(self: &Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let Some(pool) = self.pool.clone() else { return };
        let node = self.clone();
        let span = tracing::info_span!(parent: None, "warm_pool", node = %self.node_id);
        self.tracker.spawn(
            async move {
                let mut failures = 0u32;
                while !cancel.is_cancelled() {
                    match pool.next_work(Instant::now()) {
                        pool::Work::Fill(shape) => match node.create_cell(&pool, &shape).await {
                            Ok(cell) => {
                                failures = 0;
                                tracing::debug!(cell = %cell.id, shape = %shape.label(), "warm-pool cell ready");
                                if let Some(cell) = pool.put(&shape, cell) {
                                    node.remove_cell(cell).await;
                                }
                            }
                            Err(e) => {
                                failures += 1;
                                tracing::warn!(shape = %shape.label(), "warm-pool cell failed to start: {e}");
                                // Backing off: a missing image or a full node will not fix itself at once.
                                let pause = Duration::from_secs(1u64 << failures.min(6));
                                tokio::select! {
                                    _ = tokio::time::sleep(pause) => {}
                                    _ = cancel.cancelled() => {}
                                }
                            }
                        },
                        pool::Work::Trim(cells) => {
                            for cell in cells {
                                node.remove_cell(cell).await;
                            }
                        }
                        pool::Work::Nothing => {
                            // The tick lets idle shapes shrink; hand-offs wake the loop at once.
                            tokio::select! {
                                _ = pool.wake.notified() => {}
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = cancel.cancelled() => {}
                            }
                        }
                    }
                    node.metrics.warm_pool_cells.set(pool.idle_count() as i64);
                }
                for cell in pool.drain() {
                    node.remove_cell(cell).await;
                }
                node.metrics.warm_pool_cells.set(0);
            }
            .instrument(span),
        );
    }

    fn get_running(&self, id: &str) -> Option<Arc<Running>> {
        self.running.lock().expect("running lock").get(id).cloned()
    }

    async fn remove(&self, container_id: &str) {
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container_id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(container_id, "removing container: {e}"),
        }
    }
}

/// A node id as a path component.
/// Closes an invocation's log record when dropped (the response body ended or was dropped).
struct CaptureEnd {
    capture: Arc<LogCapture>,
    request_id: String,
}

impl Drop for CaptureEnd {
    fn drop(&mut self) {
        let (capture, id) = (self.capture.clone(), std::mem::take(&mut self.request_id));
        // Without a waiter `end` does not wait; it is async only for the waiter's sake.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { capture.end(&id, None).await });
        }
    }
}

/// True when a request into an instance failed because the body we were sending (the
/// caller's) broke off, not because of the instance.
fn caller_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<axum::Error>().is_some() || s.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_user()) {
            return true;
        }
        source = s.source();
    }
    false
}

fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn container_ip(info: &bollard::models::ContainerInspectResponse) -> Option<IpAddr> {
    let ns = info.network_settings.as_ref()?;
    ns.networks
        .as_ref()
        .and_then(|n| n.values().find_map(|e| e.ip_address.as_deref().filter(|s| !s.is_empty()).and_then(|s| s.parse().ok())))
}

#[async_trait::async_trait]
impl Node for DockerNode {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<InstanceInfo, AgentError> {
        let code_dir = match &spec.code_checksum {
            Some(sum) => Some(self.code.ensure(sum).await.map_err(|e| AgentError::Internal(format!("{e:#}")))?),
            None => None,
        };
        if let (Some(pool), Some(code)) = (&self.pool, &code_dir)
            && let Some(shape) = Shape::of(&spec, pool.images())
        {
            let cell = pool.take(&shape);
            self.metrics.warm_pool_handoffs.with_label_values(&[if cell.is_some() { "hit" } else { "miss" }]).inc();
            if let Some(cell) = cell {
                let cell_id = cell.id.clone();
                match self.hand_off(cell, code, &spec).await {
                    HandOff::Served(addr) => return Ok(InstanceInfo { instance_id: spec.instance_id, node_id: self.node_id.clone(), addr }),
                    HandOff::Failed(e) => return Err(e),
                    HandOff::Unusable(why) => {
                        tracing::warn!(cell = %cell_id, instance = %spec.instance_id, "warm-pool cell unusable, starting a new container: {why}");
                    }
                }
            }
        }
        let capture = Arc::new(std::sync::OnceLock::new());
        let _ = capture.set(Arc::new(LogCapture::new(
            spec.function_name.clone(),
            spec.instance_id.clone(),
            spec.prints_log_markers,
            self.logs.clone(),
        )));
        let name = format!("nubis-{}", spec.instance_id);
        let body = self.container_body(&spec, code_dir.map(|d| d.display().to_string()));
        let (id, addr) = self.launch(name, body, &spec, capture.clone()).await?;
        if let Err(e) = self.initialize(&id, addr, &spec).await {
            self.remove(&id).await;
            return Err(e);
        }
        let capture = capture.get().expect("set above").clone();
        self.add_running(&spec, id, capture, None);
        Ok(InstanceInfo { instance_id: spec.instance_id, node_id: self.node_id.clone(), addr })
    }

    async fn invoke(&self, instance: &InstanceInfo, req: InvokeRequest) -> Result<InvokeResponse, AgentError> {
        let running = self
            .get_running(&instance.instance_id)
            .ok_or_else(|| AgentError::Internal(format!("instance {} is not running here", instance.instance_id)))?;
        let mut headers = running.base_headers.clone();
        headers.extend(req.headers);
        headers.insert("x-fc-request-id", HeaderValue::from_str(&req.request_id).expect("ascii id"));
        headers.insert("x-fc-control-path", HeaderValue::from_static("/invoke"));
        headers.insert("content-type", HeaderValue::from_static("application/octet-stream"));
        let waiter = running.capture.begin(&req.request_id, req.want_logs);
        match self.send(instance.addr, Method::POST, "/invoke", headers, req.body, req.timeout).await {
            Ok(Ok(mut resp)) => {
                resp.logs = running.capture.end(&req.request_id, waiter).await;
                Ok(resp)
            }
            Ok(Err(e)) => {
                running.capture.abandon(&req.request_id);
                Err(self.diagnose(&running.container_id, running.memory_mb, e.to_string()).await)
            }
            Err(_) => {
                running.capture.abandon(&req.request_id);
                Err(AgentError::Timeout(req.timeout.as_secs()))
            }
        }
    }

    async fn invoke_stream(&self, instance: &InstanceInfo, req: StreamRequest) -> Result<StreamResponse, AgentError> {
        let running = self
            .get_running(&instance.instance_id)
            .ok_or_else(|| AgentError::Internal(format!("instance {} is not running here", instance.instance_id)))?;
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut headers = running.base_headers.clone();
        headers.extend(req.headers);
        headers.insert("x-fc-request-id", HeaderValue::from_str(&req.request_id).expect("ascii id"));
        // The request keeps its method, path and content type (FC's control path for an HTTP
        // trigger's request is /http-invoke).
        headers.insert("x-fc-control-path", HeaderValue::from_static("/http-invoke"));
        if let Some(n) = req.content_length {
            // hyper sends a body of unknown size chunked unless the length is declared.
            headers.insert("content-length", HeaderValue::from(n));
        }
        let mut request =
            Request::builder().method(req.http.method).uri(format!("http://{}{}", instance.addr, req.http.path_and_query)).body(req.body).expect("valid request");
        *request.headers_mut() = headers;
        let waiter = running.capture.begin(&req.request_id, false);
        let resp = match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                running.capture.abandon(&req.request_id);
                // The caller's body failing is not the instance's fault: keep the instance.
                if caller_body_failed(&e) {
                    return Err(AgentError::RequestBody(e.to_string()));
                }
                return Err(self.diagnose(&running.container_id, running.memory_mb, e.to_string()).await);
            }
            Err(_) => {
                running.capture.abandon(&req.request_id);
                return Err(AgentError::Timeout(req.timeout.as_secs()));
            }
        };
        drop(waiter);
        // Ends the invocation's log record when the body is done (or dropped: the caller left).
        let logs = CaptureEnd { capture: running.capture.clone(), request_id: req.request_id.clone() };
        let (parts, body) = resp.into_parts();
        let function_error = parts.status.is_server_error();
        let body = super::bounded_body(body.into_data_stream(), deadline, req.timeout, self.max_response_bytes, logs);
        Ok(StreamResponse { status: parts.status.as_u16(), headers: parts.headers, function_error, body })
    }

    fn report(&self, mut summary: InvocationSummary) {
        summary.node_id = self.node_id.clone();
        let running = self.get_running(&summary.instance_id);
        if let Some(file) = running.as_ref().and_then(|r| r.cgroup_peak.as_ref()) {
            // One pread: cheaper than handing the record to a task.
            let peak = memory::read_cgroup_peak(file);
            tracing::debug!(bytes = peak, "instance memory read");
            summary.set_memory(peak);
            self.logs.append(summary.into_line());
            return;
        }
        let ended = Instant::now();
        // Taken now, before the caller can discard the instance: its stop waits for the reading.
        let Some((container_id, guard)) =
            running.and_then(|r| r.measuring.clone().try_read_owned().ok().map(|guard| (r.container_id.clone(), guard)))
        else {
            // Nothing to measure (no instance, or it is being stopped): stored now.
            summary.set_memory(None);
            self.logs.append(summary.into_line());
            return;
        };
        let (docker, logs) = (self.docker.clone(), self.logs.clone());
        self.tracker.spawn(
            async move {
                let t = Instant::now();
                let peak = guard.peak(&docker, &container_id, ended).await;
                tracing::debug!(ms = t.elapsed().as_millis() as u64, bytes = peak, "instance memory read");
                summary.set_memory(peak);
                logs.append(summary.into_line());
                // Held until the record is stored: shutdown stops instances (waiting for this)
                // before it closes the log store.
                drop(guard);
            }
            .in_current_span(),
        );
    }

    async fn stop_instance(&self, instance_id: &str) {
        let running = self.running.lock().expect("running lock").remove(instance_id);
        if let Some(r) = running {
            // Summaries still reading its memory go first (each bounded by memory::STATS_TIMEOUT).
            let _measured = r.measuring.write().await;
            tracing::debug!(instance = instance_id, "removing the container");
            self.remove(&r.container_id).await;
            if let Some(dir) = &r.cell_dir {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
        }
    }

    fn take_exited(&self) -> Vec<String> {
        std::mem::take(&mut *self.exited.lock().expect("exited lock"))
    }

    async fn remove_orphans(&self) -> Result<usize, AgentError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_NODE}={}", self.node_id)],
        )]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self.docker.list_containers(Some(opts)).await.map_err(docker_err)?;
        let mut known: Vec<String> = self.running.lock().expect("running lock").values().map(|r| r.container_id.clone()).collect();
        if let Some(pool) = &self.pool {
            known.extend(pool.container_ids());
            // Code directories of cells an earlier run left behind (their containers go below).
            let live: Vec<std::path::PathBuf> = self.running.lock().expect("running lock").values().filter_map(|r| r.cell_dir.clone()).collect();
            if let Ok(entries) = std::fs::read_dir(pool.dir()) {
                for e in entries.flatten() {
                    if !live.contains(&e.path()) && !pool.has_dir(&e.path()) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let mut removed = 0;
        for c in list {
            if let Some(id) = c.id.filter(|id| !known.contains(id)) {
                self.remove(&id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
