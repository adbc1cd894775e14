//! Scaling benchmarks of issue #6: warm sync invoke, cold start and burst, each measured in the
//! same run as a baseline on the same machine, with the ratio or difference and the issue's
//! target. Not a test: it prints tables.
//!
//! - **warm**: one server (warm pool off, one instance per function), a trivial custom-runtime
//!   function (a Node.js `http` one-liner on `custom.debian12`) and a trivial Python function
//!   (python3.10, returns "ok"), both with `instanceConcurrency` 100 so one instance serves every
//!   call. Baseline: the SAME instance called directly, `POST http://<bridge ip>:9000/invoke`
//!   with the headers of the instance contract (docs/contract.md), from this process with the
//!   same HTTP client. And the floor of any proxy: the same calls through a minimal forwarding
//!   process (this bench re-executed with `--floor-proxy`), so the report shows what one HTTP
//!   hop costs here, apart from what the platform adds. Latency p50/p99 at client concurrency 1,
//!   calls/s at `--concurrency` (16 and 32 by default), direct, floor and Nubis in alternating
//!   rounds. CPU per call of each part: the server (or the floor proxy), the instance's
//!   container (cgroup), the container engine (dockerd, containerd and the shims, machine-wide)
//!   and this client.
//! - **cold**: first-invoke latency of a new zip Python function, `--cold-runs` times, each time
//!   a new function name and new code (so the code is unpacked too), at the default size
//!   (128 MB, the shape the warm pool keeps ready). One server with the warm pool off, then one
//!   with it on (`NUBIS_AGENT__WARM_POOL__ENABLED`). Baseline: Docker create + start + ready
//!   (TCP accept on port 9000) of the same runtime image with the same hardening options
//!   (`DockerNode::container_body`) done by the bench through bollard, interleaved with the
//!   Nubis runs; also timed up to its first `/invoke` answer. Whether a cold start took a pool
//!   cell is read from the server's `nubis_warm_pool_handoffs_total{result="hit"}`.
//! - **burst**: `--burst` (20) concurrent callers start at once on a new Python function whose
//!   handler records its start time (`time.time()`, returned as the body) and then sleeps
//!   (`--burst-sleep-ms`), with `instanceConcurrency` 1 and
//!   `NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION` = the burst size. Time to N busy instances =
//!   the latest handler start − the moment the callers were released; instances created =
//!   the function's containers plus the pool cells handed to it (a cell keeps its empty
//!   function label). Baseline: N raw Docker create + start + ready in parallel.
//!
//! The server is the real `nubis` binary (the one cargo builds with this bench, or `NUBIS_BIN`)
//! started as a subprocess on 127.0.0.1 with a fresh data dir and node id. Only 127.0.0.1 and
//! the containers of that server and of this bench are contacted. See bench/README.md.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions};
use clap::{Parser, ValueEnum};
use common::{
    Api, NODE_SERVER, PY_HANDLER, Runtime, Server, b64, binary_facts, container_cpu, git_describe, loadavg, mem_total, nproc, proc_cpu,
    server_binary,
};
// LABEL_CELL: on warm-pool cells (kept once a cell serves a function; an idle cell has an empty
// function label). The bench does not depend on it to wait for the pool: it waits until the
// number of the node's containers stops growing (`wait_settled`), and only reports the cells.
use nubis::agent::docker::{LABEL_CELL, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_MANAGED, LABEL_NODE};
use nubis::codestore::package::build_zip;
use nubis::config::AgentConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// On the containers this bench creates itself for the Docker baselines.
const BENCH_LABEL: &str = "nubis.bench";

/// The port of the built-in runtimes (and the one the bench's custom runtime listens on).
const FUNCTION_PORT: u16 = 9000;

/// The targets.
const TARGET_ADDED_P50_MS: f64 = 0.3;
const TARGET_THROUGHPUT_RATIO: f64 = 0.6;
const TARGET_POOL_P50_MS: f64 = 50.0;
const TARGET_NO_POOL_OVER_BASELINE_MS: f64 = 50.0;

#[derive(Parser, Debug, Clone)]
#[command(name = "scaling", about = "Warm invoke, cold start and burst of Nubis against Docker and direct baselines")]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// warm: calls per throughput measurement (per path, round and concurrency).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// warm: calls per latency measurement at client concurrency 1 (per path and round).
    #[arg(long, default_value_t = 1000)]
    latency_requests: usize,
    /// warm: client concurrencies of the throughput measurements (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 32])]
    concurrency: Vec<usize>,
    /// warm: rounds per measurement; direct, floor and Nubis alternate, so drift in the
    /// machine's load hits all three. Latencies are pooled over the rounds, calls/s is the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// warm: the functions measured (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Runtime::Custom, Runtime::Python])]
    runtimes: Vec<Runtime>,
    /// warm: the functions' vCPU limit. The default lets one instance use the whole 2-core
    /// machine, so the function's CPU quota is not what is measured.
    #[arg(long, default_value_t = 2.0)]
    function_cpu: f64,
    /// cold: first invokes per server (each a new function), and as many baseline starts.
    #[arg(long, default_value_t = 10)]
    cold_runs: usize,
    /// cold and burst: servers with the warm pool off, on, or one of each (off first).
    #[arg(long, value_enum, default_value_t = PoolArg::Both)]
    pool: PoolArg,
    /// cold and burst, pool on: longest wait for the pool to fill (the node's container count
    /// to stop growing) before timing.
    #[arg(long, default_value_t = 90)]
    pool_fill_secs: u64,
    /// The node's container count must stay unchanged this long to count as settled.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// burst: concurrent callers, and the function's (and server's) instance limit.
    #[arg(long, default_value_t = 20)]
    burst: usize,
    /// burst: how long each call keeps its instance busy. Long enough that no instance frees
    /// up before the last one has started (on a busy 2-core machine 20 starts took up to
    /// 5.7 s), or fewer than --burst instances are needed and the bench says so.
    #[arg(long, default_value_t = 10000)]
    burst_sleep_ms: u64,
    /// burst: server's NUBIS_SCHEDULER__MAX_STARTS_PER_NODE (default: the server's default).
    #[arg(long)]
    max_starts_per_node: Option<usize>,
    /// Worker threads of the benchmark client's runtime (it shares the cores with the server
    /// and the function; 1 keeps its share small and stable).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The server binary; default: the `nubis` cargo built with this bench.
    #[arg(long, env = "NUBIS_BIN")]
    nubis_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: serve as the warm scenario's floor proxy in front of this instance address.
    #[arg(long, hide = true)]
    floor_proxy: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Warm,
    Cold,
    Burst,
    All,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Custom => "custom.debian12 (Node http)",
            Runtime::Python => "python3.10",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PoolArg {
    Off,
    On,
    Both,
}

impl PoolArg {
    fn servers(self) -> Vec<bool> {
        match self {
            PoolArg::Off => vec![false],
            PoolArg::On => vec![true],
            PoolArg::Both => vec![false, true],
        }
    }
}

fn pool_name(on: bool) -> &'static str {
    if on { "pool on" } else { "pool off" }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(instance) = args.floor_proxy {
        return floor_proxy(instance);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let bin = server_binary(args.nubis_bin.as_deref())?;
    let docker = nubis::agent::docker::connect(&AgentConfig::default()).await.map_err(|e| anyhow!("connecting to Docker: {e}"))?;
    let python_image = AgentConfig::default().images.get("python3").cloned().ok_or_else(|| anyhow!("no default python3 image"))?;
    docker
        .inspect_image(&python_image)
        .await
        .with_context(|| format!("image {python_image} (build the runtime images: bash scripts/build-images.sh)"))?;
    let all = args.scenario == Scenario::All;
    println!("# Nubis scaling benchmark (issue #6)");
    println!("server binary: {} ({}; this checkout: {})", bin.display(), binary_facts(&bin), git_describe());
    println!("machine: {} cores, {}; load average at start: {}", nproc(), mem_total(), loadavg());
    let mut report = Vec::new();
    if all || args.scenario == Scenario::Warm {
        println!("\n## warm sync invoke");
        report.push(warm(&args, &bin, &docker).await.context("warm scenario")?);
    }
    if all || args.scenario == Scenario::Cold {
        println!("\n## cold start");
        report.push(cold(&args, &bin, &docker, &python_image).await.context("cold scenario")?);
    }
    if all || args.scenario == Scenario::Burst {
        println!("\n## burst");
        report.push(burst(&args, &bin, &docker, &python_image).await.context("burst scenario")?);
    }
    println!("\nload average at end: {}", loadavg());
    println!("\n# Results");
    for section in report {
        println!("\n{section}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Warm sync invoke: Nubis vs the same instance called directly

/// One call into a function, through Nubis, straight into its instance, or through the floor
/// proxy (a `Direct` pointed at the proxy).
#[derive(Clone)]
enum Caller {
    Nubis { api: Api, function: String },
    Direct(Direct),
    Floor(Direct),
}

impl Caller {
    fn name(&self) -> &'static str {
        match self {
            Caller::Nubis { .. } => "Nubis",
            Caller::Direct(_) => "direct",
            Caller::Floor(_) => "floor",
        }
    }

    async fn call(&self, i: usize) -> Result<()> {
        let body = match self {
            Caller::Nubis { api, function } => api.invoke_sync(function, event(i)).await?.1,
            Caller::Direct(d) | Caller::Floor(d) => d.invoke(event(i)).await?,
        };
        if &body[..] != b"ok" {
            bail!("{} call: unexpected answer {}", self.name(), String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

fn event(i: usize) -> Vec<u8> {
    format!("{{\"i\":{i}}}").into_bytes()
}

/// Calls into an instance without the platform: `POST /invoke` with the contract's headers
/// (what `DockerNode::invoke` sends: the function's base headers, a request id, the control
/// path and the content type).
#[derive(Clone)]
struct Direct {
    url: String,
    headers: HeaderMap,
    http: reqwest::Client,
}

impl Direct {
    fn new(addr: SocketAddr, function: &str, handler: &str, memory_mb: u32, timeout_secs: u32, max_idle: usize) -> Result<Self> {
        let agent = nubis::config::ServerConfig::default();
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("x-fc-function-name", function.to_string()),
            ("x-fc-function-handler", handler.to_string()),
            ("x-fc-function-memory", memory_mb.to_string()),
            ("x-fc-function-timeout", timeout_secs.to_string()),
            ("x-fc-region", agent.region.clone()),
            ("x-fc-account-id", agent.account_id.clone()),
            ("x-fc-qualifier", "LATEST".into()),
            ("x-fc-version-id", "LATEST".into()),
            ("x-fc-control-path", "/invoke".into()),
            ("content-type", "application/octet-stream".into()),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_str(&v)?);
        }
        // Like the platform's client: keep-alive, no Nagle (reqwest's default).
        let http = reqwest::Client::builder().pool_max_idle_per_host(max_idle).build()?;
        Ok(Self { url: format!("http://{addr}/invoke"), headers, http })
    }

    async fn invoke(&self, event: Vec<u8>) -> Result<bytes::Bytes> {
        let mut h = self.headers.clone();
        h.insert("x-fc-request-id", HeaderValue::from_str(&nubis::model::new_request_id())?);
        let r = self.http.post(&self.url).headers(h).body(event).send().await?;
        let status = r.status();
        let failed = r.headers().get("x-fc-status").is_some_and(|v| v == "404");
        let body = r.bytes().await?;
        if !status.is_success() || failed {
            bail!("direct invoke: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

// ---------------------------------------------------------------------------------------------
// The floor: what any HTTP proxy in front of the instance costs on this machine. A separate
// process, so its CPU is read from its pid like the server's; none of the platform's work (auth,
// routing, logs, metrics), only what every forwarding server must do per call.

/// The bench re-executed with `--floor-proxy <instance>`: serves `POST /invoke` on 127.0.0.1
/// and forwards it to the instance. Killed when dropped, so an error path leaves no proxy.
struct FloorProxy {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl FloorProxy {
    async fn start(instance: SocketAddr) -> Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--floor-proxy")
            .arg(instance.to_string())
            // Held open by `child`: the proxy exits when it closes, even if this process dies
            // without dropping the guard.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the floor proxy")?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        tokio::time::timeout(Duration::from_secs(10), tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .context("the floor proxy did not print its address within 10 s")??;
        let addr = line.trim().parse().with_context(|| format!("the floor proxy printed {line:?}"))?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> Option<String> {
        self.child.id().map(|p| p.to_string())
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

type ProxyClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, axum::body::Body>;

fn floor_proxy(instance: SocketAddr) -> Result<()> {
    // Like the server's #[tokio::main]: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        tokio::spawn(async {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
            std::process::exit(0);
        });
        // The agent's client (DockerNode::new): keep-alive pool, no Nagle.
        let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
        conn.set_nodelay(true);
        let http: ProxyClient = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(conn);
        let uri: axum::http::Uri = format!("http://{instance}/invoke").parse()?;
        let app = axum::Router::new().route("/invoke", axum::routing::post(floor_forward)).with_state((http, uri));
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The client's headers (the contract's, as the direct path sends them) and body go to the
/// instance; its answer comes back. Both bodies are read whole, as `DockerNode::send` does.
async fn floor_forward(
    axum::extract::State((http, uri)): axum::extract::State<(ProxyClient, axum::http::Uri)>,
    mut headers: HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    // The proxy's own Host would be wrong for the instance; the client sets the right one.
    headers.remove(reqwest::header::HOST);
    let mut req = axum::http::Request::post(uri).body(axum::body::Body::from(body)).expect("valid request");
    *req.headers_mut() = headers;
    let answer = async {
        let (parts, body) = http.request(req).await?.into_parts();
        Ok::<_, anyhow::Error>(axum::response::Response::from_parts(parts, axum::body::Body::from(body.collect().await?.to_bytes())))
    };
    answer.await.unwrap_or_else(|e| (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

/// CPU seconds used so far by each part of a warm call.
#[derive(Clone, Copy, Default)]
struct Usage {
    server: f64,
    /// The instance's container.
    function: f64,
    /// dockerd, containerd and the containerd shims (machine-wide: other containers' engine
    /// work counts too).
    engine: f64,
    client: f64,
}

impl Usage {
    fn add(self, b: Usage) -> Usage {
        Usage {
            server: self.server + b.server,
            function: self.function + b.function,
            engine: self.engine + b.engine,
            client: self.client + b.client,
        }
    }
    fn total(self) -> f64 {
        self.server + self.function + self.engine + self.client
    }
}

/// CPU seconds so far of each part; the engine's per process, as its shims come and go.
struct Snapshot {
    server: f64,
    function: f64,
    client: f64,
    /// pid → CPU seconds of dockerd, containerd and every shim (`containerd-shim-runc-v2`,
    /// whose comm is cut to 15 characters).
    engine: HashMap<String, f64>,
}

impl Snapshot {
    fn take(server_pid: Option<&str>, container_id: &str) -> Self {
        let engine = match std::fs::read_dir("/proc") {
            Ok(dir) => dir
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
                .filter(|pid| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    matches!(comm.trim(), "dockerd" | "containerd" | "containerd-shim")
                })
                .map(|pid| {
                    let cpu = proc_cpu(&pid);
                    (pid, cpu)
                })
                .collect(),
            Err(_) => HashMap::new(),
        };
        Snapshot {
            server: server_pid.map(proc_cpu).unwrap_or(0.0),
            function: container_cpu(container_id),
            client: proc_cpu("self"),
            engine,
        }
    }

    /// What each part used since `before`. An engine process that ended in between is not
    /// counted (a shim of a container removed meanwhile: little).
    fn since(&self, before: &Snapshot) -> Usage {
        let engine = self.engine.iter().map(|(pid, cpu)| cpu - before.engine.get(pid).copied().unwrap_or(0.0)).sum();
        Usage {
            server: self.server - before.server,
            function: self.function - before.function,
            engine,
            client: self.client - before.client,
        }
    }
}

/// One measurement: `n` calls with at most `c` in flight.
struct Sample {
    n: usize,
    secs: f64,
    latencies_ms: Vec<f64>,
    cpu: Usage,
}

async fn measure(caller: &Caller, n: usize, c: usize, server_pid: Option<&str>, container_id: &str) -> Result<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = Snapshot::take(server_pid, container_id);
    let started = Instant::now();
    let workers: Vec<_> = (0..c.max(1))
        .map(|_| {
            let (next, caller) = (next.clone(), caller.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n / c.max(1) + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(lat);
                    }
                    let t = Instant::now();
                    caller.call(i).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
            })
        })
        .collect();
    let mut latencies_ms = Vec::with_capacity(n);
    for w in workers {
        latencies_ms.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Sample { n, secs, latencies_ms, cpu: Snapshot::take(server_pid, container_id).since(&cpu0) })
}

/// The rounds of one path at one concurrency, summed up.
struct PathResult {
    p50: f64,
    p99: f64,
    /// Median of the rounds' calls/s.
    rate: f64,
    /// Rounds' calls/s, in order.
    rates: Vec<f64>,
    /// CPU µs per call over all rounds.
    cpu_us: Usage,
}

impl PathResult {
    fn of(samples: &[Sample]) -> Self {
        let mut lat: Vec<f64> = samples.iter().flat_map(|s| s.latencies_ms.iter().copied()).collect();
        lat.sort_by(f64::total_cmp);
        let rates: Vec<f64> = samples.iter().map(|s| s.n as f64 / s.secs).collect();
        let n: usize = samples.iter().map(|s| s.n).sum();
        let cpu = samples.iter().fold(Usage::default(), |a, s| a.add(s.cpu));
        let per = |v: f64| v * 1e6 / n as f64;
        Self {
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            rate: median(&rates),
            rates,
            cpu_us: Usage { server: per(cpu.server), function: per(cpu.function), engine: per(cpu.engine), client: per(cpu.client) },
        }
    }
}

struct WarmRow {
    runtime: Runtime,
    concurrency: usize,
    direct: PathResult,
    floor: PathResult,
    nubis: PathResult,
}

async fn warm(args: &Args, bin: &Path, docker: &Docker) -> Result<String> {
    let dir = tempfile::Builder::new().prefix("nubis-bench-warm-").tempdir()?;
    let env = [
        // One instance per function: the direct baseline calls the instance Nubis uses.
        ("NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION", "1".to_string()),
        ("NUBIS_AGENT__WARM_POOL__ENABLED", "false".to_string()),
    ];
    let server = Server::start(bin, dir.path(), &env).await?;
    let outcome = warm_on(args, docker, &server).await;
    if outcome.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let rows = outcome?;

    let mut out =
        String::from("## Warm sync invoke (Nubis = signed InvokeFunction over HTTP; direct = POST /invoke into the same instance)\n\n");
    out.push_str(&format!(
        "Rounds: {}; {} calls per round at concurrency 1, {} at the others. Latency percentiles pooled over the rounds; calls/s is the median round.\n\n",
        args.rounds, args.latency_requests, args.requests
    ));
    out.push_str(
        "floor = the same POST /invoke through the cheapest proxy hop: a separate process (this bench re-executed; \
         multi-threaded tokio, axum in, hyper keep-alive client out) that forwards headers and body and returns the answer, \
         with no auth, logs or bookkeeping. What any server forwarding each call over HTTP costs on this machine.\n\n",
    );
    out.push_str("| function | client concurrency | direct p50 / p99 ms | Nubis p50 / p99 ms | added p50 ms | direct calls/s | Nubis calls/s | Nubis / direct | target | met | floor p50 / p99 ms | floor calls/s | floor / direct | Nubis / floor |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        let added = r.nubis.p50 - r.direct.p50;
        let ratio = r.nubis.rate / r.direct.rate;
        let (target, ok) = if r.concurrency == 1 {
            (format!("added p50 ≤ {TARGET_ADDED_P50_MS} ms"), added <= TARGET_ADDED_P50_MS)
        } else {
            (format!("≥ {:.0}% of direct", TARGET_THROUGHPUT_RATIO * 100.0), ratio >= TARGET_THROUGHPUT_RATIO)
        };
        out.push_str(&format!(
            "| {} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {added:+.3} | {:.0} | {:.0} | {ratio:.2} | {target} | {} | {:.3} / {:.3} | {:.0} | {:.2} | {:.2} |\n",
            r.runtime.name(),
            r.concurrency,
            r.direct.p50,
            r.direct.p99,
            r.nubis.p50,
            r.nubis.p99,
            r.direct.rate,
            r.nubis.rate,
            met(ok),
            r.floor.p50,
            r.floor.p99,
            r.floor.rate,
            r.floor.rate / r.direct.rate,
            r.nubis.rate / r.floor.rate
        ));
    }
    out.push_str(&format!(
        "\nCPU per call, µs (server = the nubis process, the floor proxy on the floor rows; function = the instance's container; \
         engine = dockerd + containerd + shims, machine-wide; client = this bench). Ceiling = {} cores / total.\n\n",
        nproc()
    ));
    out.push_str("| function | client concurrency | path | server | function | engine | client | total | ceiling calls/s |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        for (path, p) in [("direct", &r.direct), ("floor", &r.floor), ("Nubis", &r.nubis)] {
            let c = p.cpu_us;
            out.push_str(&format!(
                "| {} | {} | {path} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                r.runtime.name(),
                r.concurrency,
                c.server,
                c.function,
                c.engine,
                c.client,
                c.total(),
                nproc() as f64 * 1e6 / c.total()
            ));
        }
    }
    Ok(out)
}

async fn warm_on(args: &Args, docker: &Docker, server: &Server) -> Result<Vec<WarmRow>> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let api = server.api(max_c);
    let server_pid = server.pid();
    let mut rows = Vec::new();
    for &runtime in &args.runtimes {
        let function = match runtime {
            Runtime::Custom => "warm-custom",
            Runtime::Python => "warm-python",
        };
        let (mut body, handler) = match runtime {
            Runtime::Custom => (
                json!({
                    "runtime": "custom.debian12", "handler": "not.used",
                    "customRuntimeConfig": {"command": ["node", "/code/server.js"], "port": FUNCTION_PORT},
                    "code": {"zipFile": b64(&build_zip(&[("server.js", NODE_SERVER.as_bytes(), 0o644)]))},
                }),
                "not.used",
            ),
            Runtime::Python => (
                json!({
                    "runtime": "python3.10", "handler": "index.handler",
                    "code": {"zipFile": b64(&build_zip(&[("index.py", PY_HANDLER.as_bytes(), 0o644)]))},
                }),
                "index.handler",
            ),
        };
        let (memory_mb, timeout_secs) = (512, 30);
        let extra = json!({
            "functionName": function, "memorySize": memory_mb, "cpu": args.function_cpu, "timeout": timeout_secs,
            "instanceConcurrency": 100,
        });
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        api.create_function(&body).await?;
        let (h, _) = api.invoke_sync(function, event(0)).await.context("first (cold) call")?;
        let served_by = h.get("x-fc-instance-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let inst = find_instance(docker, &server.node_id, function).await?;
        if !served_by.is_empty() && served_by != inst.instance_id {
            bail!("the call was served by instance {served_by}, but the container found is {}", inst.instance_id);
        }
        println!("{}: instance {} at {} (container {})", runtime.name(), inst.instance_id, inst.addr, &inst.container_id[..12]);
        let nubis = Caller::Nubis { api: api.clone(), function: function.to_string() };
        let direct = Caller::Direct(Direct::new(inst.addr, function, handler, memory_mb, timeout_secs, max_c)?);
        let proxy = FloorProxy::start(inst.addr).await?;
        let proxy_pid = proxy.pid();
        let floor = Caller::Floor(Direct::new(proxy.addr, function, handler, memory_mb, timeout_secs, max_c)?);
        // Warm-up: connections opened, code paths and the runtime's imports hot.
        for caller in [&direct, &floor, &nubis] {
            measure(caller, 500, max_c, None, &inst.container_id).await.with_context(|| format!("{} warm-up", caller.name()))?;
        }
        for c in std::iter::once(1).chain(args.concurrency.iter().copied()) {
            let n = if c == 1 { args.latency_requests } else { args.requests };
            let (mut d, mut f, mut s) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..args.rounds.max(1) {
                for caller in [&direct, &floor, &nubis] {
                    // The `server` column: the floor proxy's CPU on its rounds, the server's on the others.
                    let pid = if matches!(caller, Caller::Floor(_)) { proxy_pid.as_deref() } else { server_pid.as_deref() };
                    let sample = measure(caller, n, c, pid, &inst.container_id)
                        .await
                        .with_context(|| format!("{} calls at concurrency {c}", caller.name()))?;
                    let mut lat = sample.latencies_ms.clone();
                    lat.sort_by(f64::total_cmp);
                    println!(
                        "  {} c={c} round {}: {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, CPU µs/call: server {:.0} function {:.0} engine {:.0} client {:.0}",
                        caller.name(),
                        round + 1,
                        n as f64 / sample.secs,
                        percentile(&lat, 0.5),
                        percentile(&lat, 0.99),
                        sample.cpu.server * 1e6 / n as f64,
                        sample.cpu.function * 1e6 / n as f64,
                        sample.cpu.engine * 1e6 / n as f64,
                        sample.cpu.client * 1e6 / n as f64,
                    );
                    match caller {
                        Caller::Direct(_) => d.push(sample),
                        Caller::Floor(_) => f.push(sample),
                        Caller::Nubis { .. } => s.push(sample),
                    }
                }
            }
            let row = WarmRow { runtime, concurrency: c, direct: PathResult::of(&d), floor: PathResult::of(&f), nubis: PathResult::of(&s) };
            println!(
                "{} c={c}: direct {:.0}/s (rounds {}), floor {:.0}/s (rounds {}), Nubis {:.0}/s (rounds {}); p50 direct {:.3} ms, floor {:.3} ms, Nubis {:.3} ms",
                runtime.name(),
                row.direct.rate,
                fmt_rates(&row.direct.rates),
                row.floor.rate,
                fmt_rates(&row.floor.rates),
                row.nubis.rate,
                fmt_rates(&row.nubis.rates),
                row.direct.p50,
                row.floor.p50,
                row.nubis.p50
            );
            rows.push(row);
        }
        proxy.stop().await;
        api.delete_function(function).await?;
        wait_gone(docker, &server.node_id, function).await?;
    }
    Ok(rows)
}

fn fmt_rates(r: &[f64]) -> String {
    r.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
}

struct FoundInstance {
    instance_id: String,
    container_id: String,
    addr: SocketAddr,
}

/// The one running container of `function` on this node, and its bridge address.
async fn find_instance(docker: &Docker, node_id: &str, function: &str) -> Result<FoundInstance> {
    let list = list_containers(docker, &[format!("{LABEL_NODE}={node_id}"), format!("{LABEL_FUNCTION}={function}")], false).await?;
    let [c] = list.as_slice() else {
        bail!("expected one running container of {function} on node {node_id}, found {}", list.len());
    };
    let container_id = c.id.clone().ok_or_else(|| anyhow!("container without id"))?;
    let instance_id = c.labels.as_ref().and_then(|l| l.get(LABEL_INSTANCE)).cloned().unwrap_or_default();
    let info = docker.inspect_container(&container_id, None::<InspectContainerOptions>).await?;
    let ip = container_ip(&info).ok_or_else(|| anyhow!("container {container_id} has no bridge IP"))?;
    Ok(FoundInstance { instance_id, container_id, addr: SocketAddr::new(ip, FUNCTION_PORT) })
}

fn container_ip(info: &bollard::models::ContainerInspectResponse) -> Option<IpAddr> {
    let nets = info.network_settings.as_ref()?.networks.as_ref()?;
    nets.values().find_map(|e| e.ip_address.as_deref().filter(|s| !s.is_empty()).and_then(|s| s.parse().ok()))
}

async fn list_containers(docker: &Docker, labels: &[String], all: bool) -> Result<Vec<bollard::models::ContainerSummary>> {
    let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
    let opts = ListContainersOptions { all, filters: Some(filters), ..Default::default() };
    Ok(docker.list_containers(Some(opts)).await?)
}

/// Wait (at most 20 s) until no container of `function` is left on the node: the next
/// measurement does not share the machine with a container being removed.
async fn wait_gone(docker: &Docker, node_id: &str, function: &str) -> Result<()> {
    let labels = [format!("{LABEL_NODE}={node_id}"), format!("{LABEL_FUNCTION}={function}")];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !list_containers(docker, &labels, true).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("the containers of deleted function {function} were not removed within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The Docker baseline: a container of a runtime image started by the bench itself

/// Raw Docker starts are hardened like an instance; this says how.
struct RawSpec<'a> {
    image: &'a str,
    /// Bind-mounted read-only at /code (the function's unpacked code).
    code_dir: &'a Path,
    handler: &'a str,
    memory_mb: u32,
    cpu: f64,
}

/// The create body of an instance, as `DockerNode::container_body` builds it (keep in step):
/// memory = swap = memorySize, CPU quota, pids limit, read-only root, tmpfs /tmp, all
/// capabilities dropped, no-new-privileges, json-file logs, the non-root user, the code
/// read-only at /code and the contract's environment.
fn raw_body(spec: &RawSpec<'_>) -> ContainerCreateBody {
    let cfg = AgentConfig::default();
    let platform = nubis::config::ServerConfig::default();
    let memory = i64::from(spec.memory_mb) << 20;
    let port = FUNCTION_PORT.to_string();
    let env = [
        ("FC_SERVER_PORT", port.clone()),
        ("FC_CUSTOM_LISTEN_PORT", port),
        ("FC_FUNCTION_NAME", "bench-raw".into()),
        ("FC_FUNCTION_HANDLER", spec.handler.into()),
        ("FC_FUNCTION_MEMORY_SIZE", spec.memory_mb.to_string()),
        ("FC_TIMEOUT", "30".into()),
        ("FC_RUNTIME", "python3.10".into()),
        ("FC_REGION", platform.region.clone()),
        ("FC_ACCOUNT_ID", platform.account_id.clone()),
        ("FC_INSTANCE_ID", "bench-raw".into()),
        ("FC_FUNC_CODE_PATH", "/code/".into()),
        ("FC_QUALIFIER", "LATEST".into()),
        ("PYTHONUNBUFFERED", "1".into()),
    ];
    let host_config = HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some((spec.cpu * 1e9) as i64),
        pids_limit: Some(cfg.pids_limit),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([("/tmp".to_string(), format!("rw,nosuid,nodev,size={}m,mode=1777", cfg.tmp_size_mb))])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        binds: Some(vec![format!("{}:/code:ro", spec.code_dir.display())]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".to_string(), "10m".to_string()), ("max-file".to_string(), "2".to_string())])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.to_string()),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(cfg.run_as.clone()),
        working_dir: Some("/code".into()),
        labels: Some(HashMap::from([(BENCH_LABEL.to_string(), "scaling".to_string())])),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Timings of one raw start, from the moment given to `raw_start`.
struct RawStart {
    container_id: String,
    ready: Duration,
    /// Up to the answer of the first `/invoke` (when asked for).
    invoked: Option<Duration>,
}

/// Create, start and wait until port 9000 accepts a connection (polled like the agent's
/// `wait_ready`: connect with a 200 ms timeout, 5 ms apart); then, if `invoke`, the first
/// `/invoke`. Timed from `t0`. The caller removes the container (`remove_raw`); on an error it
/// is removed here.
async fn raw_start(docker: &Docker, spec: &RawSpec<'_>, invoke: bool, t0: Instant) -> Result<RawStart> {
    let name = format!("nubis-bench-{}", uuid::Uuid::new_v4().simple());
    let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
    let id = docker.create_container(Some(opts), raw_body(spec)).await.context("create")?.id;
    let outcome = async {
        docker.start_container(&id, None).await.context("start")?;
        let info = docker.inspect_container(&id, None::<InspectContainerOptions>).await?;
        let ip = container_ip(&info).ok_or_else(|| anyhow!("container has no bridge IP"))?;
        let addr = SocketAddr::new(ip, FUNCTION_PORT);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connected =
                tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await.is_ok_and(|r| r.is_ok());
            if connected {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = t0.elapsed();
        let invoked = if invoke {
            let d = Direct::new(addr, "bench-raw", spec.handler, spec.memory_mb, 30, 1)?;
            let body = d.invoke(event(0)).await?;
            if &body[..] != b"ok" {
                bail!("raw container answered {}", String::from_utf8_lossy(&body));
            }
            Some(t0.elapsed())
        } else {
            None
        };
        Ok((ready, invoked))
    }
    .await;
    match outcome {
        Ok((ready, invoked)) => Ok(RawStart { container_id: id, ready, invoked }),
        Err(e) => {
            remove_raw(docker, &id).await;
            Err(e)
        }
    }
}

async fn remove_raw(docker: &Docker, id: &str) {
    let _ = docker.remove_container(id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
}

/// A directory the instance user (10001) can read, holding `index.py`.
fn code_dir(source: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("nubis-bench-code-").tempdir()?;
    std::fs::write(dir.path().join("index.py"), source)?;
    std::fs::set_permissions(dir.path().join("index.py"), std::fs::Permissions::from_mode(0o644))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Remove any container of this bench left behind (an interrupted earlier run).
async fn remove_bench_containers(docker: &Docker) -> Result<()> {
    for c in list_containers(docker, &[BENCH_LABEL.to_string()], true).await? {
        if let Some(id) = c.id {
            remove_raw(docker, &id).await;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The warm pool: wait until it has filled

/// This node's running containers, and how many of them are idle warm-pool cells (labelled
/// LABEL_CELL, no function yet).
async fn node_containers(docker: &Docker, node_id: &str) -> Result<(usize, usize)> {
    let list = list_containers(docker, &[format!("{LABEL_MANAGED}=true"), format!("{LABEL_NODE}={node_id}")], false).await?;
    let idle_cell = |l: &HashMap<String, String>| l.contains_key(LABEL_CELL) && l.get(LABEL_FUNCTION).is_none_or(|f| f.is_empty());
    let cells = list.iter().filter(|c| c.labels.as_ref().is_some_and(idle_cell)).count();
    Ok((list.len(), cells))
}

/// The server's count of warm-pool hand-offs (`nubis_warm_pool_handoffs_total{result="hit"}`
/// on /metrics), 0 when it has none.
async fn pool_hits(server: &Server) -> Result<u64> {
    let text = reqwest::get(format!("http://{}/metrics", server.addr)).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("nubis_warm_pool_handoffs_total") && l.contains("result=\"hit\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Wait until the number of this node's running containers has not changed for `settle`
/// (the pool has filled, or refilled after a hand-off), at most `deadline`. Returns the
/// containers and the cells among them; a pool that never settles is reported, not fatal.
async fn wait_settled(docker: &Docker, node_id: &str, settle: Duration, deadline: Duration) -> Result<(usize, usize)> {
    let end = Instant::now() + deadline;
    let mut last = node_containers(docker, node_id).await?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = node_containers(docker, node_id).await?;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= settle {
            return Ok(now);
        }
        if Instant::now() > end {
            println!("  (the node's containers did not settle within {} s; timing anyway)", deadline.as_secs());
            return Ok(now);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cold start

async fn cold(args: &Args, bin: &Path, docker: &Docker, image: &str) -> Result<String> {
    remove_bench_containers(docker).await?;
    let code = code_dir(PY_HANDLER)?;
    let mut baseline: Vec<RawStart> = Vec::new();
    let mut nubis: Vec<ColdRuns> = Vec::new();
    for pool in args.pool.servers() {
        let dir = tempfile::Builder::new().prefix("nubis-bench-cold-").tempdir()?;
        let server = Server::start(bin, dir.path(), &[("NUBIS_AGENT__WARM_POOL__ENABLED", pool.to_string())]).await?;
        let outcome = cold_on(args, docker, image, &server, pool, code.path(), &mut baseline).await;
        if outcome.is_err() {
            server.print_log_tail();
        }
        server.stop().await;
        nubis.push(outcome?);
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut ready: Vec<f64> = baseline.iter().map(|r| ms(r.ready)).collect();
    let mut invoked: Vec<f64> = baseline.iter().filter_map(|r| r.invoked.map(ms)).collect();
    ready.sort_by(f64::total_cmp);
    invoked.sort_by(f64::total_cmp);
    let mut out = String::from("## Cold start (first invoke of a new Python zip function, default size: 128 MB, 0.15 vCPU)\n\n");
    out.push_str("| measurement | runs | p50 ms | p90 ms | min ms | max ms |\n|---|---|---|---|---|---|\n");
    let row = |name: &str, v: &[f64]| {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.9),
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    out.push_str(&row("baseline: raw Docker create + start + ready (TCP accept)", &ready));
    out.push_str(&row("raw Docker create + start + ready + first /invoke answered", &invoked));
    for r in &nubis {
        let mut v = r.times.clone();
        v.sort_by(f64::total_cmp);
        let note = if r.pool {
            format!(
                " ({} of {} from a pool cell; before timing: {} containers of the node, {} idle cells)",
                r.hits,
                v.len(),
                r.seen.0,
                r.seen.1
            )
        } else {
            String::new()
        };
        out.push_str(&row(&format!("Nubis first invoke, {}{note}", pool_name(r.pool)), &v));
    }
    out.push_str("\n| target | value | met |\n|---|---|---|\n");
    let base_p50 = percentile(&ready, 0.5);
    for r in &nubis {
        let mut v = r.times.clone();
        v.sort_by(f64::total_cmp);
        let p50 = percentile(&v, 0.5);
        if r.pool {
            out.push_str(&format!("| pool on: p50 ≤ {TARGET_POOL_P50_MS} ms | {p50:.1} ms | {} |\n", met(p50 <= TARGET_POOL_P50_MS)));
            if r.hits == 0 {
                out.push_str(
                    "\nNo cold start with the pool on was served by a pool cell (the server's nubis_warm_pool_handoffs_total \
                     {result=\"hit\"} did not move): this build has no warm pool, or none for this shape, so 'pool on' timed \
                     ordinary cold starts.\n",
                );
            }
        } else {
            let d = p50 - base_p50;
            out.push_str(&format!(
                "| pool off: p50 − baseline p50 ≤ {TARGET_NO_POOL_OVER_BASELINE_MS} ms | {p50:.1} − {base_p50:.1} = {d:+.1} ms | {} |\n",
                met(d <= TARGET_NO_POOL_OVER_BASELINE_MS)
            ));
        }
    }
    Ok(out)
}

/// The first invokes of `--cold-runs` new functions on one server, each after a raw Docker
/// start of the baseline (interleaved, so both see the same machine). Returns the latencies
/// (ms) and the node's containers/cells seen before the first timed call.
async fn cold_on(
    args: &Args,
    docker: &Docker,
    image: &str,
    server: &Server,
    pool: bool,
    code: &Path,
    baseline: &mut Vec<RawStart>,
) -> Result<ColdRuns> {
    let api = server.api(1);
    let settle = Duration::from_millis(args.settle_ms);
    let mut seen = (0, 0);
    if pool {
        let t = Instant::now();
        seen = wait_settled(docker, &server.node_id, settle, Duration::from_secs(args.pool_fill_secs)).await?;
        println!(
            "{}: the node's containers settled at {} ({} idle pool cells) after {:.1} s",
            pool_name(pool),
            seen.0,
            seen.1,
            t.elapsed().as_secs_f64()
        );
    }
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut times = Vec::new();
    let mut hits = 0;
    for k in 0..args.cold_runs {
        let function = format!("cold-{run_id}-{k}");
        // New code for each function, so its package is unpacked on its cold start too.
        let source = format!("# {function}\n{PY_HANDLER}");
        let body = json!({
            "functionName": function, "runtime": "python3.10", "handler": "index.handler",
            "code": {"zipFile": b64(&build_zip(&[("index.py", source.as_bytes(), 0o644)]))},
        });
        api.create_function(&body).await?;
        let (_, _, got) = api.call(axum::http::Method::GET, &format!("/2023-03-30/functions/{function}"), &[], Vec::new()).await?;
        let cfg: Value = serde_json::from_slice(&got)?;
        let spec = RawSpec {
            image,
            code_dir: code,
            handler: "index.handler",
            memory_mb: cfg["memorySize"].as_u64().unwrap_or(128) as u32,
            cpu: cfg["cpu"].as_f64().unwrap_or(0.15),
        };
        let raw = raw_start(docker, &spec, true, Instant::now()).await.context("raw Docker start")?;
        remove_raw(docker, &raw.container_id).await;
        if pool {
            // The pool refills after each hand-off (and after the baseline's engine work).
            wait_settled(docker, &server.node_id, settle, Duration::from_secs(args.pool_fill_secs)).await?;
        }
        let hits0 = pool_hits(server).await?;
        let t = Instant::now();
        let (_, answer) = api.invoke_sync(&function, event(k)).await.with_context(|| format!("first invoke of {function}"))?;
        let took = t.elapsed().as_secs_f64() * 1e3;
        let hit = pool_hits(server).await? > hits0;
        if &answer[..] != b"ok" {
            bail!("{function} answered {}", String::from_utf8_lossy(&answer));
        }
        println!(
            "  {} run {}: Nubis first invoke {took:.1} ms{}; raw Docker ready {:.1} ms, + first /invoke {:.1} ms",
            pool_name(pool),
            k + 1,
            if hit { " (a pool cell)" } else { "" },
            raw.ready.as_secs_f64() * 1e3,
            raw.invoked.unwrap_or_default().as_secs_f64() * 1e3
        );
        times.push(took);
        hits += usize::from(hit);
        baseline.push(raw);
        api.delete_function(&function).await?;
        wait_gone(docker, &server.node_id, &function).await?;
    }
    Ok(ColdRuns { pool, times, seen, hits })
}

/// The first invokes on one server.
struct ColdRuns {
    pool: bool,
    /// Latencies, ms, in order.
    times: Vec<f64>,
    /// The node's containers and idle cells before the first timed call.
    seen: (usize, usize),
    /// Runs served by a warm-pool cell (the server's hand-off counter went up).
    hits: usize,
}

// ---------------------------------------------------------------------------------------------
// Burst

struct BurstResult {
    pool: bool,
    /// Latest handler start − release of the callers, ms.
    to_all_busy_ms: f64,
    /// Median handler start − release, ms.
    start_p50_ms: f64,
    /// All calls answered − release, ms.
    all_done_ms: f64,
    /// The function's containers, plus the pool cells handed to it.
    containers: usize,
    distinct_instances: usize,
    /// Instances that were warm-pool cells.
    hits: usize,
}

async fn burst(args: &Args, bin: &Path, docker: &Docker, image: &str) -> Result<String> {
    remove_bench_containers(docker).await?;
    let n = args.burst.max(1);
    // Baseline: N raw starts in parallel.
    let code = code_dir(PY_HANDLER)?;
    let spec = RawSpec { image, code_dir: code.path(), handler: "index.handler", memory_mb: 128, cpu: 0.15 };
    // All timed from one moment; every container stays until the last is ready, as a burst's
    // instances do.
    let t0 = Instant::now();
    let starts = futures_util::future::join_all((0..n).map(|_| raw_start(docker, &spec, false, t0))).await;
    let mut ready: Vec<f64> = Vec::new();
    let mut failed = None;
    for s in starts {
        match s {
            Ok(s) => {
                ready.push(s.ready.as_secs_f64() * 1e3);
                remove_raw(docker, &s.container_id).await;
            }
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        return Err(e.context("raw Docker start (burst baseline)"));
    }
    ready.sort_by(f64::total_cmp);
    println!(
        "baseline: {n} raw Docker starts in parallel: last ready after {:.0} ms (p50 {:.0} ms)",
        ready[n - 1],
        percentile(&ready, 0.5)
    );

    let mut results = Vec::new();
    for pool in args.pool.servers() {
        let dir = tempfile::Builder::new().prefix("nubis-bench-burst-").tempdir()?;
        let mut env =
            vec![("NUBIS_AGENT__WARM_POOL__ENABLED", pool.to_string()), ("NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION", n.to_string())];
        if let Some(m) = args.max_starts_per_node {
            env.push(("NUBIS_SCHEDULER__MAX_STARTS_PER_NODE", m.to_string()));
        }
        let server = Server::start(bin, dir.path(), &env).await?;
        let outcome = burst_on(args, docker, &server, pool).await;
        if outcome.is_err() {
            server.print_log_tail();
        }
        server.stop().await;
        results.push(outcome?);
    }

    let mut out = format!(
        "## Burst: {n} concurrent first calls, instanceConcurrency 1, handler sleeps {} ms, 128 MB, max instances {n}, \
         max starts per node {}\n\n",
        args.burst_sleep_ms,
        args.max_starts_per_node.map_or_else(|| "server default".to_string(), |m| m.to_string())
    );
    out.push_str("| measurement | time to all busy / ready ms | median start ms | instances | vs baseline | instances = callers |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| baseline: {n} raw Docker create + start + ready in parallel | {:.0} | {:.0} | {n} | 1.00 | – |\n",
        ready[n - 1],
        percentile(&ready, 0.5)
    ));
    for r in &results {
        out.push_str(&format!(
            "| Nubis, {} (all answered after {:.0} ms; {} distinct instance ids, {} from pool cells) | {:.0} | {:.0} | {} | {:.2} | {} |\n",
            pool_name(r.pool),
            r.all_done_ms,
            r.distinct_instances,
            r.hits,
            r.to_all_busy_ms,
            r.start_p50_ms,
            r.containers,
            r.to_all_busy_ms / ready[n - 1],
            met(r.containers == n)
        ));
    }
    Ok(out)
}

async fn burst_on(args: &Args, docker: &Docker, server: &Server, pool: bool) -> Result<BurstResult> {
    let n = args.burst.max(1);
    let api = server.api(n);
    let function = format!("burst-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let handler = format!(
        "import time\n\ndef handler(event, context):\n    started = time.time()\n    time.sleep({})\n    return '%.6f' % started\n",
        args.burst_sleep_ms as f64 / 1000.0
    );
    let body = json!({
        "functionName": function, "runtime": "python3.10", "handler": "index.handler",
        "memorySize": 128, "timeout": 60 + args.burst_sleep_ms / 1000, "instanceConcurrency": 1,
        "code": {"zipFile": b64(&build_zip(&[("index.py", handler.as_bytes(), 0o644)]))},
    });
    api.create_function(&body).await?;
    if pool {
        let seen =
            wait_settled(docker, &server.node_id, Duration::from_millis(args.settle_ms), Duration::from_secs(args.pool_fill_secs)).await?;
        println!("{}: the node's containers settled at {} ({} idle pool cells)", pool_name(pool), seen.0, seen.1);
    }
    let hits0 = pool_hits(server).await?;
    let release = epoch_secs();
    let t = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (api, function) = (api.clone(), function.clone());
            tokio::spawn(async move { api.invoke_sync(&function, event(i)).await })
        })
        .collect();
    let mut starts = Vec::new();
    let mut instances = std::collections::HashSet::new();
    for c in calls {
        let (h, body) = c.await??;
        let s: f64 = String::from_utf8_lossy(&body).trim().parse().with_context(|| format!("handler answer {body:?}"))?;
        starts.push((s - release) * 1e3);
        if let Some(i) = h.get("x-fc-instance-id").and_then(|v| v.to_str().ok()) {
            instances.insert(i.to_string());
        }
    }
    let all_done_ms = t.elapsed().as_secs_f64() * 1e3;
    let hits = (pool_hits(server).await? - hits0) as usize;
    starts.sort_by(f64::total_cmp);
    // A cell handed to the function keeps its empty function label: counted by the hand-offs.
    let containers =
        list_containers(docker, &[format!("{LABEL_NODE}={}", server.node_id), format!("{LABEL_FUNCTION}={function}")], true).await?.len()
            + hits;
    let r = BurstResult {
        pool,
        to_all_busy_ms: starts[n - 1],
        start_p50_ms: percentile(&starts, 0.5),
        all_done_ms,
        containers,
        distinct_instances: instances.len(),
        hits,
    };
    println!(
        "{}: {n} busy after {:.0} ms (median start {:.0} ms), all answered after {:.0} ms; {} containers, {} distinct instance ids, {} from pool cells",
        pool_name(pool),
        r.to_all_busy_ms,
        r.start_p50_ms,
        r.all_done_ms,
        r.containers,
        r.distinct_instances,
        r.hits
    );
    Ok(r)
}

fn epoch_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of sorted values (NaN when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}
