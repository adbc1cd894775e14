//! End-to-end async invocation throughput (issue #3): events accepted (202) → task Succeeded,
//! per second, on each queue backend, with a trivial function. Not a test: it prints a table
//! and the ratio against a baseline measured in the same run on the same server and function.
//!
//! What one run of a backend does:
//! 1. Starts the real `nubis` binary (the one cargo builds with this bench, or `NUBIS_BIN`) as a
//!    subprocess on 127.0.0.1 with a fresh data dir and node id, after `nubis admin create-key`.
//! 2. Creates a trivial function (default: `custom.debian12` running a Node.js `http` one-liner
//!    with `instanceConcurrency` 100; `--runtime python`: a python3.10 handler returning "ok").
//! 3. Baseline: N synchronous InvokeFunction calls at client concurrency C (calls/s). Sync and
//!    async share the execution path (`invoker::invoke`: slot → instance HTTP round trip), so this
//!    is the ceiling async could reach if queueing and task bookkeeping cost nothing.
//! 4. Async: N async InvokeFunction calls at the same concurrency, timed from the first submit
//!    to the `end_ms` of the last task to reach Succeeded (end-to-end events/s); the submit rate
//!    alone is reported as accept/s.
//! 5. Split (unless `--no-split`): on a second fresh server with the dispatcher disabled, N
//!    events are only accepted (accept-only/s: queue write + task insert, nothing else running);
//!    then a server with the dispatcher enabled is started on the same data dir (same Kafka
//!    topic and group) and drains them (drain/s, measured over the last 90% of completions so
//!    the instance's cold start and the consumer's group join are left out). That separates the
//!    cost of accepting from the cost of dispatching.
//!
//! Every phase also reports CPU time per event, per process: the server (`/proc/<pid>/stat`),
//! the function's containers (cgroup cpuacct), this client and, for Kafka, the local broker.
//! Events/s on a shared 2-core machine move with whatever else runs; CPU per event hardly does,
//! and cores / (CPU per event) is the most the code can do on the machine.
//!
//! Before the backends, a metadata store baseline measures, in this process and without HTTP,
//! the statements the async path is made of (`dispatcher::submit`, `Store::get_task`,
//! `Store::transition_task`) and a single-connection insert with 1 vs 64 rows per transaction
//! (what group commit would buy).
//!
//! Completion is detected by reading the server's SQLite database directly (read-only,
//! `SELECT COUNT(*) FROM async_tasks WHERE status = 'Succeeded'`). This is a measuring tool, not
//! the product: ListAsyncTasks pages of 100 would cost the server more than the thing measured.
//!
//! Only 127.0.0.1 is contacted: the server, its containers (via Docker) and, for `kafka`, the
//! local broker of `scripts/test-services.sh`. See bench/README.md and BENCHMARKS.md.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use common::{
    Api, Cpu, FUNCTION, Runtime, Server, binary_facts, broker_pid, create_trivial_function, epoch_ms,
    git_describe, loadavg, mem_total, nproc, proc_cpu, server_binary,
};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

#[derive(Parser, Debug, Clone)]
#[command(name = "async_throughput", about = "End-to-end async invocation throughput of Nubis")]
struct Args {
    /// Queue backend(s) to measure.
    #[arg(long, value_enum, default_value_t = BackendArg::Both)]
    backend: BackendArg,
    /// Events per measurement (the sync baseline makes as many calls).
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Client concurrency: requests in flight from the benchmark client.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The trivial function: a Node.js HTTP server on custom.debian12, or a python3.10 handler.
    #[arg(long, value_enum, default_value_t = Runtime::Custom)]
    runtime: Runtime,
    /// The function's instanceConcurrency (requests one instance serves at once, 1..=200).
    #[arg(long, default_value_t = 100)]
    instance_concurrency: u32,
    /// The function's vCPU limit (a multiple of 0.05). The default lets one instance use the
    /// whole 2-core machine, so the function's CPU quota is not what is measured.
    #[arg(long, default_value_t = 2.0)]
    function_cpu: f64,
    /// Server: NUBIS_DISPATCHER__MAX_IN_FLIGHT (async invocations dispatched at once).
    #[arg(long, default_value_t = 100)]
    max_in_flight: usize,
    /// Server: NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION.
    #[arg(long, default_value_t = 2)]
    max_instances: usize,
    /// Kafka bootstrap servers; default: NUBIS_TEST_KAFKA_BROKERS (scripts/test-services.sh env).
    #[arg(long, env = "NUBIS_TEST_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Skip the split accept-only / drain-only measurement.
    #[arg(long)]
    no_split: bool,
    /// Skip the in-process metadata store baseline (SQLite statements per second and CPU).
    #[arg(long)]
    no_store_baseline: bool,
    /// Worker threads of the benchmark client's runtime (it shares the cores with the server
    /// and the function; 1 keeps its share small and stable).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Give up on a measurement after this long.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The server binary; default: the `nubis` cargo built with this bench.
    #[arg(long, env = "NUBIS_BIN")]
    nubis_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Embedded,
    Kafka,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Embedded,
    Kafka,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Kafka => "kafka",
        }
    }
    /// The aim on a 2-core machine.
    fn target(self) -> f64 {
        match self {
            Backend::Embedded => 3000.0,
            Backend::Kafka => 10_000.0,
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let bin = server_binary(args.nubis_bin.as_deref())?;
    let backends: Vec<Backend> = match args.backend {
        BackendArg::Embedded => vec![Backend::Embedded],
        BackendArg::Kafka => vec![Backend::Kafka],
        BackendArg::Both => vec![Backend::Embedded, Backend::Kafka],
    };
    if backends.contains(&Backend::Kafka) && args.kafka_brokers.as_deref().is_none_or(str::is_empty) {
        bail!(
            "the kafka backend needs a broker: `bash scripts/test-services.sh start kafka` then \
             `eval \"$(bash scripts/test-services.sh env)\"` (sets NUBIS_TEST_KAFKA_BROKERS), or pass --kafka-brokers"
        );
    }
    println!("# Nubis async throughput benchmark");
    println!("server binary: {} ({}; this checkout: {})", bin.display(), binary_facts(&bin), git_describe());
    println!("machine: {} cores, {}; load average at start: {}", nproc(), mem_total(), loadavg());
    println!(
        "events {}, client concurrency {}, runtime {:?}, instanceConcurrency {}, function cpu {}, \
         max_in_flight {}, max_instances_per_function {}, client threads {}",
        args.events,
        args.concurrency,
        args.runtime,
        args.instance_concurrency,
        args.function_cpu,
        args.max_in_flight,
        args.max_instances,
        args.client_threads
    );
    let store_rows = if args.no_store_baseline {
        None
    } else {
        println!("\n## metadata store baseline");
        Some(store_baseline(&args).await.context("store baseline")?)
    };
    let mut results = Vec::new();
    for b in backends {
        println!("\n## backend {}", b.name());
        let r = bench_backend(&args, &bin, b).await.with_context(|| format!("backend {}", b.name()))?;
        results.push(r);
    }
    println!("\nload average at end: {}", loadavg());
    println!("\n## Results\n");
    println!(
        "| backend | runtime | events | concurrency | accept/s | end-to-end events/s | sync baseline calls/s | e2e / sync | accept-only/s | drain-only/s | p50 / p99 accept→Succeeded ms | target | met |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let split = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:?} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {} / {} | {:.0} | {} |",
            r.backend.name(),
            args.runtime,
            args.events,
            args.concurrency,
            r.accept_rate,
            r.e2e_rate,
            r.sync_rate,
            r.e2e_rate / r.sync_rate,
            split(r.accept_only),
            split(r.drain_only),
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.backend.target(),
            if r.e2e_rate >= r.backend.target() { "yes" } else { "no" }
        );
    }
    println!("\n## CPU per event (µs; the machine's cores / total = the most this code could do here)\n");
    println!("| backend | phase | server | function | client | broker | total | ceiling on {} cores (/s) |", nproc());
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        for (phase, cpu, n) in &r.cpu {
            let us = |s: f64| s * 1e6 / *n as f64;
            let total = us(cpu.total());
            println!(
                "| {} | {phase} | {:.0} | {:.0} | {:.0} | {:.0} | {total:.0} | {:.0} |",
                r.backend.name(),
                us(cpu.server),
                us(cpu.function),
                us(cpu.client),
                us(cpu.broker),
                nproc() as f64 * 1e6 / total
            );
        }
    }
    if let Some(rows) = &store_rows {
        println!("\n## Metadata store alone (in this process, no HTTP; the statements the async path is made of)\n");
        println!("| operation | ops | ops/s | CPU µs/op |");
        println!("|---|---|---|---|");
        for (op, ops, rate, us) in rows {
            println!("| {op} | {ops} | {rate:.0} | {us:.0} |");
        }
    }
    Ok(())
}

struct BackendResult {
    backend: Backend,
    accept_rate: f64,
    e2e_rate: f64,
    sync_rate: f64,
    accept_only: Option<f64>,
    drain_only: Option<f64>,
    latency_p50_ms: i64,
    latency_p99_ms: i64,
    /// (phase, CPU used during it, events or calls in it)
    cpu: Vec<(&'static str, Cpu, usize)>,
}

async fn bench_backend(args: &Args, bin: &Path, backend: Backend) -> Result<BackendResult> {
    let n = args.events;
    let c = args.concurrency;
    let timeout = Duration::from_secs(args.timeout_secs);

    // --- combined run: sync baseline, then async end to end, on one server ---
    let dir = tempfile::Builder::new().prefix("nubis-bench-").tempdir()?;
    let kafka = KafkaTopic::new(backend);
    let server = start_server(bin, dir.path(), args, backend, &kafka, true).await?;
    let outcome = async {
        let api = server.api(c);
        create_trivial_function(&api, args.runtime, args.function_cpu, args.instance_concurrency).await?;
        // Warm-up: start the instance and fill the connection pools, outside the timings.
        drive(2 * c, c, &api, Op::Sync).await.context("warm-up")?;

        let cpu0 = server.cpu();
        let sync_time = drive(n, c, &api, Op::Sync).await.context("sync baseline")?;
        let sync_cpu = server.cpu().since(cpu0);
        let sync_rate = n as f64 / sync_time.as_secs_f64();
        println!("sync baseline: {n} calls in {:.2} s = {sync_rate:.0} calls/s", sync_time.as_secs_f64());
        println!("  {}", sync_cpu.per_event(n));

        let db = open_db(dir.path()).await?;
        let cpu0 = server.cpu();
        let t0_ms = epoch_ms();
        let accept_time = drive(n, c, &api, Op::Async).await.context("async submit")?;
        let accept_rate = n as f64 / accept_time.as_secs_f64();
        wait_succeeded(&db, n, timeout, &server).await?;
        let async_cpu = server.cpu().since(cpu0);
        let ends = succeeded_end_times(&db).await?;
        let last_end = *ends.last().expect("n > 0");
        let e2e = Duration::from_millis((last_end - t0_ms).max(1) as u64);
        let e2e_rate = n as f64 / e2e.as_secs_f64();
        let (p50, p99) = latency_percentiles(&db).await?;
        // Which queue carried the events: the embedded queue's table has seen rows (AUTOINCREMENT
        // leaves a sequence behind) only if the embedded backend was used.
        let used_table: i64 =
            sqlx::query("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'queue_messages'").fetch_one(&db).await?.try_get(0)?;
        if (used_table > 0) != (backend == Backend::Embedded) {
            bail!("the events did not go through the {} queue (NUBIS_DISPATCHER__QUEUE ignored?)", backend.name());
        }
        println!(
            "async: {n} accepted in {:.2} s = {accept_rate:.0}/s; all Succeeded {:.2} s after the first submit = {e2e_rate:.0} events/s \
             (accept→Succeeded p50 {p50} ms, p99 {p99} ms); ratio to sync baseline {:.2}",
            accept_time.as_secs_f64(),
            e2e.as_secs_f64(),
            e2e_rate / sync_rate
        );
        println!("  {}", async_cpu.per_event(n));
        db.close().await;
        Ok::<_, anyhow::Error>((sync_rate, accept_rate, e2e_rate, p50, p99, sync_cpu, async_cpu))
    }
    .await;
    let outcome = match outcome {
        Ok(v) => v,
        Err(e) => {
            server.print_log_tail();
            server.stop().await;
            return Err(e);
        }
    };
    server.stop().await;
    let (sync_rate, accept_rate, e2e_rate, p50, p99, sync_cpu, async_cpu) = outcome;
    let mut cpu = vec![("sync baseline", sync_cpu, n), ("async end to end", async_cpu, n)];

    // --- split run: accept only (dispatcher off), then drain only (dispatcher on) ---
    let (accept_only, drain_only) = if args.no_split {
        (None, None)
    } else {
        let s = split_run(args, bin, backend).await?;
        cpu.push(("accept only", s.accept_cpu, n));
        cpu.push(("drain only", s.drain_cpu, n));
        (Some(s.accept_rate), Some(s.drain_rate))
    };
    Ok(BackendResult { backend, accept_rate, e2e_rate, sync_rate, accept_only, drain_only, latency_p50_ms: p50, latency_p99_ms: p99, cpu })
}

struct Split {
    accept_rate: f64,
    accept_cpu: Cpu,
    drain_rate: f64,
    drain_cpu: Cpu,
}

async fn split_run(args: &Args, bin: &Path, backend: Backend) -> Result<Split> {
    let n = args.events;
    let c = args.concurrency;
    let dir = tempfile::Builder::new().prefix("nubis-bench-split-").tempdir()?;
    let kafka = KafkaTopic::new(backend);

    let server = start_server(bin, dir.path(), args, backend, &kafka, false).await?;
    let accepted = async {
        let api = server.api(c);
        create_trivial_function(&api, args.runtime, args.function_cpu, args.instance_concurrency).await?;
        let cpu0 = server.cpu();
        let t = drive(n, c, &api, Op::Async).await.context("async submit (dispatcher off)")?;
        Ok::<_, anyhow::Error>((n as f64 / t.as_secs_f64(), server.cpu().since(cpu0)))
    }
    .await;
    if accepted.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let (accept_rate, accept_cpu) = accepted?;
    // The server must have run what was asked: nothing dispatched, and the messages in the
    // backend named (the embedded queue's table stays empty with Kafka).
    let db = open_db(dir.path()).await?;
    let enqueued: i64 = sqlx::query("SELECT COUNT(*) FROM async_tasks WHERE status = 'Enqueued'").fetch_one(&db).await?.try_get(0)?;
    let in_table: i64 = sqlx::query("SELECT COUNT(*) FROM queue_messages").fetch_one(&db).await?.try_get(0)?;
    db.close().await;
    let expected_in_table = if backend == Backend::Embedded { n as i64 } else { 0 };
    if enqueued != n as i64 || in_table != expected_in_table {
        bail!(
            "the server did not run with the configuration given (NUBIS_DISPATCHER__ENABLED=false, \
             NUBIS_DISPATCHER__QUEUE={}): {enqueued} of {n} tasks still Enqueued, {in_table} messages in the \
             embedded queue table (expected {expected_in_table})",
            backend.name()
        );
    }
    println!("accept only (dispatcher disabled): {accept_rate:.0}/s");
    println!("  {}", accept_cpu.per_event(n));

    let server = start_server(bin, dir.path(), args, backend, &kafka, true).await?;
    let drained = async {
        // From /health on: includes the server's own start-up work after that point and the
        // instance's cold start (a few ms of CPU spread over 5000 events).
        let cpu0 = server.cpu();
        let db = open_db(dir.path()).await?;
        wait_succeeded(&db, n, Duration::from_secs(args.timeout_secs), &server).await?;
        let cpu = server.cpu().since(cpu0);
        let ends = succeeded_end_times(&db).await?;
        db.close().await;
        // Steady state: from the 10th-percentile completion to the last one, so the instance's
        // cold start (and, on Kafka, the consumer's group join) is not counted.
        let k = ends.len() / 10;
        let span_ms = (ends[ends.len() - 1] - ends[k]).max(1);
        let rate = (ends.len() - 1 - k) as f64 / (span_ms as f64 / 1000.0);
        let whole_ms = (ends[ends.len() - 1] - ends[0]).max(1);
        println!(
            "drain only (dispatcher enabled on the backlog): {rate:.0} events/s over the last 90% \
             ({:.2} s first→last completion)",
            whole_ms as f64 / 1000.0
        );
        println!("  {}", cpu.per_event(n));
        Ok::<_, anyhow::Error>((rate, cpu))
    }
    .await;
    if drained.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let (drain_rate, drain_cpu) = drained?;
    Ok(Split { accept_rate, accept_cpu, drain_rate, drain_cpu })
}

// ---------------------------------------------------------------------------------------------
// The server subprocess (common::Server) with this backend's settings

/// Per-backend queue settings; a fresh topic and consumer group per server pair, so nothing
/// left in the broker by another run is consumed.
struct KafkaTopic {
    env: Vec<(String, String)>,
}

impl KafkaTopic {
    fn new(backend: Backend) -> Self {
        let mut env = vec![("NUBIS_DISPATCHER__QUEUE".to_string(), backend.name().to_string())];
        if backend == Backend::Kafka {
            let id = uuid::Uuid::new_v4().simple().to_string();
            env.push(("NUBIS_KAFKA__TOPIC".into(), format!("bench-{id}")));
            env.push(("NUBIS_KAFKA__GROUP_ID".into(), format!("bench-{id}")));
        }
        Self { env }
    }
}

/// Start a server for this backend over `data_dir` (see `common::Server::start`).
async fn start_server(bin: &Path, data_dir: &Path, args: &Args, backend: Backend, q: &KafkaTopic, dispatcher: bool) -> Result<Server> {
    let mut env = vec![
        ("NUBIS_DISPATCHER__ENABLED", dispatcher.to_string()),
        ("NUBIS_DISPATCHER__MAX_IN_FLIGHT", args.max_in_flight.to_string()),
        ("NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION", args.max_instances.to_string()),
    ];
    env.extend(q.env.iter().map(|(k, v)| (k.as_str(), v.clone())));
    if backend == Backend::Kafka {
        env.push(("NUBIS_KAFKA__BROKERS", args.kafka_brokers.clone().expect("checked in run")));
    }
    let mut server = Server::start(bin, data_dir, &env).await?;
    server.broker_pid = (backend == Backend::Kafka).then(broker_pid).flatten();
    Ok(server)
}

// ---------------------------------------------------------------------------------------------
// Signed FC API calls

async fn invoke_sync(api: &Api, i: usize) -> Result<()> {
    let (_, body) = api.invoke_sync(FUNCTION, event(i)).await?;
    if &body[..] != b"ok" {
        bail!("sync invoke: unexpected answer {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

fn event(i: usize) -> Vec<u8> {
    format!("{{\"i\":{i}}}").into_bytes()
}

#[derive(Clone, Copy)]
enum Op {
    Sync,
    Async,
}

/// Make calls `0..n` with at most `c` in flight; the wall time of the whole batch.
async fn drive(n: usize, c: usize, api: &Api, op: Op) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..c.max(1))
        .map(|_| {
            let (next, api) = (next.clone(), api.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    match op {
                        Op::Sync => invoke_sync(&api, i).await?,
                        Op::Async => api.invoke_async(FUNCTION, event(i)).await?,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Reading progress straight from the server's database (read-only; see the module docs)

async fn open_db(data_dir: &Path) -> Result<SqlitePool> {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", data_dir.join("nubis.db").display()))?.read_only(true);
    Ok(SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?)
}

/// Wait until `n` tasks are Succeeded; fail fast on a task in a final non-success state or when
/// nothing has progressed for a minute.
async fn wait_succeeded(db: &SqlitePool, n: usize, timeout: Duration, server: &Server) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let (mut last, mut last_change) = (0i64, Instant::now());
    loop {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM async_tasks GROUP BY status").fetch_all(db).await?;
        let mut succeeded = 0;
        let mut summary = Vec::new();
        for r in &rows {
            let (s, k): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            if s == "Succeeded" {
                succeeded = k;
            }
            if matches!(s.as_str(), "Failed" | "Expired" | "Invalid" | "Stopped") {
                server.print_log_tail();
                bail!("{k} task(s) ended {s}; statuses: {}", status_summary(&rows));
            }
            summary.push(format!("{s}={k}"));
        }
        if succeeded as usize >= n {
            return Ok(());
        }
        if succeeded != last {
            (last, last_change) = (succeeded, Instant::now());
        }
        if Instant::now() > deadline || last_change.elapsed() > Duration::from_secs(60) {
            bail!("gave up waiting: {} of {n} Succeeded ({})", succeeded, summary.join(" "));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_summary(rows: &[sqlx::sqlite::SqliteRow]) -> String {
    rows.iter()
        .map(|r| format!("{}={}", r.try_get::<String, _>(0).unwrap_or_default(), r.try_get::<i64, _>(1).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn succeeded_end_times(db: &SqlitePool) -> Result<Vec<i64>> {
    let rows = sqlx::query("SELECT end_ms FROM async_tasks WHERE status = 'Succeeded' ORDER BY end_ms").fetch_all(db).await?;
    rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
}

/// p50 and p99 of accept → Succeeded (task created_ms → end_ms), ms.
async fn latency_percentiles(db: &SqlitePool) -> Result<(i64, i64)> {
    let rows = sqlx::query("SELECT end_ms - created_ms FROM async_tasks WHERE status = 'Succeeded' ORDER BY 1").fetch_all(db).await?;
    let v: Vec<i64> = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>()?;
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

// ---------------------------------------------------------------------------------------------
// Metadata store baseline: the SQLite statements of the async path, measured alone in this
// process (same Store, same pool settings, same schema), at the client concurrency.

type StoreRow = (&'static str, usize, f64, f64);

async fn store_baseline(args: &Args) -> Result<Vec<StoreRow>> {
    use nubis::model::async_task::TaskStatus;
    use nubis::queue::EmbeddedQueue;
    use nubis::store::{Store, TaskChange};

    let n = args.events;
    let c = args.concurrency.max(1);
    let dir = tempfile::Builder::new().prefix("nubis-bench-store-").tempdir()?;
    let store = Store::open_sqlite(&dir.path().join("nubis.db")).await?;
    let queue = Arc::new(EmbeddedQueue::new(&store)?);
    let mut rows = Vec::new();

    /// Run `op(i)` for i in 0..n with c in flight; (ops/s, CPU µs per op of this process).
    async fn measure<F, Fut>(n: usize, c: usize, op: F) -> Result<(f64, f64)>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let op = Arc::new(op);
        let next = Arc::new(AtomicUsize::new(0));
        let cpu0 = proc_cpu("self");
        let t = Instant::now();
        let workers: Vec<_> = (0..c)
            .map(|_| {
                let (op, next) = (op.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok::<_, anyhow::Error>(());
                        }
                        op(i).await?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        let secs = t.elapsed().as_secs_f64();
        Ok((n as f64 / secs, (proc_cpu("self") - cpu0) * 1e6 / n as f64))
    }

    let id = |i: usize| format!("task-{i}");
    {
        let (store, queue) = (store.clone(), queue.clone());
        let (rate, us) = measure(n, c, move |i| {
            let (store, queue) = (store.clone(), queue.clone());
            async move {
                nubis::dispatcher::submit(&store, queue.as_ref(), FUNCTION, "LATEST", &id(i), "req", &event(i), nubis::dispatcher::Origin::Invoke).await?;
                Ok(())
            }
        })
        .await?;
        rows.push(("dispatcher::submit, embedded (queue INSERT + task INSERT: 2 write transactions)", n, rate, us));
    }
    {
        let store = store.clone();
        let (rate, us) = measure(n, c, move |i| {
            let store = store.clone();
            async move {
                store.get_task(FUNCTION, &id(i)).await?.ok_or_else(|| anyhow!("task missing"))?;
                Ok(())
            }
        })
        .await?;
        rows.push(("Store::get_task (1 read)", n, rate, us));
    }
    {
        let store = store.clone();
        let (rate, us) = measure(n, c, move |i| {
            let store = store.clone();
            async move {
                let change = TaskChange {
                    status: Some(TaskStatus::Running),
                    event_detail: "attempt 1".into(),
                    at_ms: epoch_ms(),
                    started_ms: Some(epoch_ms()),
                    ..Default::default()
                };
                if !store.transition_task(FUNCTION, &id(i), &[TaskStatus::Enqueued], &change).await? {
                    bail!("transition refused");
                }
                Ok(())
            }
        })
        .await?;
        rows.push(("Store::transition_task (1 write transaction)", n, rate, us));
    }
    store.close().await;

    // What batching would buy: the same kind of row (an embedded queue message) written by one
    // connection, one row per transaction vs 64 rows per transaction (group commit). Raw SQL on
    // the migrated schema; skipped with a note if the schema has moved on.
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.path().join("nubis.db").display()))?
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    const SQL: &str = "INSERT INTO queue_messages (msg_key, body, visible_at_ms, deliveries, lease_token, enqueued_ms) \
                       VALUES (?, ?, 0, 0, NULL, 0)";
    for per_tx in [1usize, 64] {
        let cpu0 = proc_cpu("self");
        let t = Instant::now();
        let mut done = 0;
        let outcome: Result<(), sqlx::Error> = async {
            while done < n {
                let k = per_tx.min(n - done);
                let mut tx = pool.begin().await?;
                for i in done..done + k {
                    sqlx::query(SQL).bind(FUNCTION).bind(event(i)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                done += k;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                let rate = n as f64 / t.elapsed().as_secs_f64();
                let us = (proc_cpu("self") - cpu0) * 1e6 / n as f64;
                let op = if per_tx == 1 {
                    "queue_messages INSERT, 1 row per transaction, 1 connection"
                } else {
                    "queue_messages INSERT, 64 rows per transaction, 1 connection"
                };
                rows.push((op, n, rate, us));
            }
            Err(e) => println!("(batched insert comparison skipped: {e})"),
        }
    }
    pool.close().await;
    for (op, _, rate, us) in &rows {
        println!("{op}: {rate:.0}/s, {us:.0} µs CPU each");
    }
    Ok(rows)
}
