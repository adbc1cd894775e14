//! Kafka trigger throughput (issue #8): messages per second from a topic into a trivial
//! function, for batch sizes 1, 100 and 1,000, against baselines measured in the same run.
//!
//! What one run does:
//! 1. Starts the real `nubis` binary (the one cargo builds with this bench, or `NUBIS_BIN`) as a
//!    subprocess on 127.0.0.1 with a fresh data dir and node id, its Kafka triggers' default
//!    brokers set to the local broker.
//! 2. Creates a trivial function (default: `custom.debian12` running a Node.js `http` one-liner
//!    with `instanceConcurrency` 100; `--runtime python`: a python3.10 handler returning "ok")
//!    and warms it up.
//! 3. **Sync baseline**: synchronous InvokeFunction calls at the trigger's concurrency, each
//!    with the event a batch of one message makes: the invocation ceiling a batch size of 1
//!    cannot pass (calls/s).
//! 4. Per batch size B: produces N messages (`--value-bytes` each, 64 keys) to a fresh topic,
//!    then creates a Kafka trigger on it (`CountBasedWindow` B, `TimeBasedWindow` 1 s, the
//!    concurrency, earliest offset, sync delivery) and polls the trigger's consumer group until
//!    its committed offsets reach the end of the topic, i.e. every message was delivered to
//!    the function and settled. Reported: end to end (from the CreateTrigger to the last
//!    commit, so it includes the group join and the first batch) and steady (from the first
//!    commit seen to the last).
//! 5. **Raw consume baseline**, on each topic before its trigger: an rdkafka consumer in this
//!    process reads the same N messages (its own group, from the earliest offset) and does
//!    nothing with them: the ceiling of reading alone, from this broker on this machine, with
//!    the same group join in its end-to-end time.
//!
//! Each topic is deleted after its batch size (the test broker keeps everything in memory).
//!
//! Every phase reports CPU time per message: the server process, the function's containers,
//! this client and the broker (its pid from `scripts/test-services.sh`). Messages/s on a shared
//! 2-core machine move with whatever else runs; CPU per message hardly does.
//!
//! Only 127.0.0.1 is contacted: the server, its containers (via Docker) and the local broker.
//! See bench/README.md and BENCHMARKS.md.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::{
    Api, Cpu, FUNCTION, Runtime, Server, binary_facts, broker_pid, create_trivial_function, git_describe,
    loadavg, mem_total, nproc, server_binary,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(name = "kafka_trigger", about = "Kafka trigger throughput of Nubis: messages/s into a trivial function")]
struct Args {
    /// Messages for batch size 1.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Messages for the batch sizes above 1 (they go through far faster: more messages keep
    /// the steady rate from being a few polls).
    #[arg(long, default_value_t = 500_000)]
    messages_large: usize,
    /// Batch sizes (CountBasedWindow), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    batch_sizes: Vec<usize>,
    /// The trigger's deliveryOption.concurrency (batches in flight), and the sync baseline's.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Bytes of each message's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Partitions of each topic (one consumer reads them all: maximumTasks 1).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// The trivial function: a Node.js HTTP server on custom.debian12, or a python3.10 handler.
    #[arg(long, value_enum, default_value_t = Runtime::Custom)]
    runtime: Runtime,
    /// The function's instanceConcurrency (1..=200).
    #[arg(long, default_value_t = 100)]
    instance_concurrency: u32,
    /// The function's vCPU limit.
    #[arg(long, default_value_t = 2.0)]
    function_cpu: f64,
    /// Server: NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION.
    #[arg(long, default_value_t = 2)]
    max_instances: usize,
    /// Sync baseline calls.
    #[arg(long, default_value_t = 5000)]
    sync_calls: usize,
    /// Kafka bootstrap servers; default: NUBIS_TEST_KAFKA_BROKERS (scripts/test-services.sh env).
    #[arg(long, env = "NUBIS_TEST_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Give up on a measurement after this long.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Worker threads of the benchmark client's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The server binary; default: the `nubis` cargo built with this bench.
    #[arg(long, env = "NUBIS_BIN")]
    nubis_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    rt.block_on(run(args))
}

/// One batch size's result.
struct Row {
    batch: usize,
    messages: usize,
    /// The raw consume baseline on the same messages: end to end, steady, CPU.
    raw: (f64, f64, Cpu),
    e2e: f64,
    steady: f64,
    batches: f64,
    cpu: Cpu,
}

async fn run(args: Args) -> Result<()> {
    let bin = server_binary(args.nubis_bin.as_deref())?;
    let Some(brokers) = args.kafka_brokers.clone().filter(|b| !b.is_empty()) else {
        bail!(
            "a broker is needed: `bash scripts/test-services.sh start kafka` then \
             `eval \"$(bash scripts/test-services.sh env)\"` (sets NUBIS_TEST_KAFKA_BROKERS), or pass --kafka-brokers"
        );
    };
    println!("# Nubis Kafka trigger benchmark");
    println!("server binary: {} ({}; this checkout: {})", bin.display(), binary_facts(&bin), git_describe());
    println!("machine: {} cores, {}; load average at start: {}", nproc(), mem_total(), loadavg());
    println!(
        "messages {} (batch size 1) and {} (larger) of {} bytes, batch sizes {:?}, concurrency {}, partitions {}, runtime {:?}, \
         instanceConcurrency {}, function cpu {}, max_instances_per_function {}; rustc processes running: {}",
        args.messages,
        args.messages_large,
        args.value_bytes,
        args.batch_sizes,
        args.concurrency,
        args.partitions,
        args.runtime,
        args.instance_concurrency,
        args.function_cpu,
        args.max_instances,
        rustc_running()
    );
    let dir = tempfile::Builder::new().prefix("nubis-bench-kafka-").tempdir()?;
    let env = [
        ("NUBIS_KAFKA__BROKERS", brokers.clone()),
        ("NUBIS_KAFKA_TRIGGERS__REFRESH_MS", "200".to_string()),
        ("NUBIS_SCHEDULER__MAX_INSTANCES_PER_FUNCTION", args.max_instances.to_string()),
    ];
    let mut server = Server::start(&bin, dir.path(), &env).await?;
    server.broker_pid = broker_pid();
    let outcome = measure(&args, &server, &brokers).await;
    if outcome.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let (sync, rows) = outcome?;

    println!("\nload average at end: {}; rustc processes running: {}", loadavg(), rustc_running());
    println!("\n## Results\n");
    println!(
        "| measurement | messages | concurrency | messages/s end to end | messages/s steady | invocations | end to end / raw | CPU µs per message: server + function + client + broker = total |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let us = |cpu: &Cpu, n: usize| {
        let u = |s: f64| s * 1e6 / n as f64;
        format!("{:.1} + {:.1} + {:.1} + {:.1} = {:.1}", u(cpu.server), u(cpu.function), u(cpu.client), u(cpu.broker), u(cpu.total()))
    };
    println!(
        "| sync InvokeFunction with one message's event (baseline) | {} | {} | {:.0} calls/s | - | {} | - | {} |",
        args.sync_calls,
        args.concurrency,
        sync.0,
        args.sync_calls,
        us(&sync.1, args.sync_calls)
    );
    for r in &rows {
        println!(
            "| raw rdkafka consume of the batch-size-{} topic (baseline) | {} | - | {:.0} | {:.0} | - | 1 | {} |",
            r.batch,
            r.messages,
            r.raw.0,
            r.raw.1,
            us(&r.raw.2, r.messages)
        );
        println!(
            "| **trigger, batch size {}** | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            r.batch,
            r.messages,
            args.concurrency,
            r.e2e,
            r.steady,
            r.batches,
            r.e2e / r.raw.0,
            us(&r.cpu, r.messages)
        );
    }
    Ok(())
}

type Measured = ((f64, Cpu), Vec<Row>);

async fn measure(args: &Args, server: &Server, brokers: &str) -> Result<Measured> {
    let api = server.api(args.concurrency);
    create_trivial_function(&api, args.runtime, args.function_cpu, args.instance_concurrency).await?;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("acks", "all").set("linger.ms", "5").create()?;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];

    // The event of a batch of one message, as the trigger builds it.
    let value = "v".repeat(args.value_bytes);
    let one = json!([{"specversion": "1.0", "id": "8e215af8-0000-0000-0000-000000000000", "source": "acs:alikafka",
        "type": "alikafka:Topic:Message", "subject": "acs:alikafka_nubis:topic:t", "datacontenttype": "application/json; charset=utf-8",
        "time": "2026-11-24T00:00:00.000Z", "aliyunaccountid": "1000000000000000",
        "data": {"topic": "t", "partition": 0, "offset": 0, "timestamp": 0, "headers": {"headers": [], "isReadOnly": false},
            "key": "k0", "value": value}}])
    .to_string();
    drive(2 * args.concurrency, args.concurrency, &api, one.as_bytes()).await.context("warm-up")?;
    let cpu0 = server.cpu();
    let t = drive(args.sync_calls, args.concurrency, &api, one.as_bytes()).await.context("sync baseline")?;
    let sync = (args.sync_calls as f64 / t.as_secs_f64(), server.cpu().since(cpu0));
    println!("sync baseline: {} calls in {:.2} s = {:.0} calls/s", args.sync_calls, t.as_secs_f64(), sync.0);
    println!("  {}", sync.1.per_event(args.sync_calls));

    let mut rows = Vec::new();
    for &b in &args.batch_sizes {
        let n = if b > 1 { args.messages_large } else { args.messages };
        let topic = format!("bench-trigger-{id}-{b}");
        create_topic(brokers, &topic, args.partitions).await?;
        let t = Instant::now();
        let ends = produce(&producer, &topic, n, &value).await?;
        println!("\nbatch size {b}: produced {n} messages in {:.2} s", t.elapsed().as_secs_f64());
        let cpu0 = server.cpu();
        let (total, steady) = raw_consume(brokers, &topic, n).await?;
        let cpu = server.cpu().since(cpu0);
        println!("raw consume: {:.0} messages/s from subscribe, {steady:.0} messages/s from the first message", n as f64 / total);
        println!("  {}", cpu.per_event(n));
        let raw = (n as f64 / total, steady, cpu);
        let row = trigger_run(args, server, &api, brokers, &topic, b, n, &ends).await.with_context(|| format!("batch size {b}"))?;
        rows.push(Row { raw, ..row });
        delete_topic(brokers, &topic).await;
    }
    Ok((sync, rows))
}

#[allow(clippy::too_many_arguments)]
async fn trigger_run(args: &Args, server: &Server, api: &Api, brokers: &str, topic: &str, b: usize, n: usize, ends: &[i64]) -> Result<Row> {
    let group = format!("{topic}-group");
    let config = json!({"triggerEnable": true, "asyncInvocationType": false,
        "eventSourceConfig": {"eventSourceType": "Kafka", "eventSourceParameters": {"sourceKafkaParameters": {
            "Topic": topic, "ConsumerGroup": group, "OffsetReset": "earliest"}}},
        "eventSinkConfig": {"deliveryOption": {"concurrency": args.concurrency}},
        "runOptions": {"maximumTasks": 1, "batchWindow": {"CountBasedWindow": b, "TimeBasedWindow": 1}}});
    let name = format!("bench{b}");
    let body = json!({"triggerName": name, "triggerType": "eventbridge", "triggerConfig": config.to_string()});
    let path = format!("/2023-03-30/functions/{FUNCTION}/triggers");
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let (status, _, resp) =
        api.call(axum::http::Method::POST, &path, &[("content-type", "application/json")], body.to_string().into_bytes()).await?;
    if status != 200 {
        bail!("CreateTrigger: {status} {}", String::from_utf8_lossy(&resp));
    }
    let total: i64 = ends.iter().sum();
    let checker = Arc::new(committed_reader(brokers, &group)?);
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut first: Option<(Instant, i64)> = None;
    let (mut last, mut last_change) = (0, Instant::now());
    let end = loop {
        let c = committed(&checker, topic, ends.len() as i32).await?;
        let done: i64 = c.iter().zip(ends).map(|(c, e)| (*c).clamp(0, *e)).sum();
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done >= total {
            break now;
        }
        if done != last {
            (last, last_change) = (done, now);
        }
        if now > deadline || last_change.elapsed() > Duration::from_secs(60) {
            bail!("{done} of {total} messages committed after {:.0} s", t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let cpu = server.cpu().since(cpu0);
    let e2e = n as f64 / (end - t0).as_secs_f64();
    let (t1, c1) = first.expect("done > 0 before the end");
    let steady = if end > t1 { (total - c1) as f64 / (end - t1).as_secs_f64() } else { e2e };
    let text = reqwest::get(format!("http://{}/metrics", server.addr)).await?.text().await?;
    let batches = text
        .lines()
        .filter(|l| l.starts_with("nubis_kafka_trigger_batches_total{"))
        .filter(|l| l.contains(&format!("trigger=\"{name}\"")) && l.contains("outcome=\"succeeded\""))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .unwrap_or(f64::NAN);
    println!(
        "trigger, batch size {b}: every offset committed {:.2} s after CreateTrigger = {e2e:.0} messages/s; steady {steady:.0} messages/s \
         (after the first commit at {:.2} s); {batches} invocations",
        (end - t0).as_secs_f64(),
        (t1 - t0).as_secs_f64()
    );
    println!("  {}", cpu.per_event(n));
    // Stop the consumer before the next batch size.
    let (status, _, resp) = api.call(axum::http::Method::DELETE, &format!("{path}/{name}"), &[], Vec::new()).await?;
    if status != 204 {
        bail!("DeleteTrigger: {status} {}", String::from_utf8_lossy(&resp));
    }
    Ok(Row { batch: b, messages: n, raw: (0.0, 0.0, Cpu::default()), e2e, steady, batches, cpu })
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = admin.create_topics([&t], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))).await?;
    if let Some(Err((t, e))) = r.into_iter().next() {
        bail!("creating topic {t}: {e}");
    }
    Ok(())
}

/// Best effort: the test broker keeps every topic in memory.
async fn delete_topic(brokers: &str, topic: &str) {
    let Ok(admin) = ClientConfig::new().set("bootstrap.servers", brokers).create::<AdminClient<DefaultClientContext>>() else { return };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = admin.delete_topics(&[topic], &opts).await {
        eprintln!("deleting topic {topic}: {e}");
    }
}

/// Produce `n` messages (64 keys); returns where each partition ends, from the acknowledgements.
async fn produce(p: &FutureProducer, topic: &str, n: usize, value: &str) -> Result<Vec<i64>> {
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("k{}", i % 64);
            let p = p.clone();
            let (topic, value) = (topic.to_string(), value.to_string());
            async move { p.send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(30)).await }
        })
        .collect();
    let mut ends: Vec<i64> = Vec::new();
    for r in futures_util::future::join_all(sends).await {
        let d = r.map_err(|(e, _)| e).context("producing")?;
        let p = d.partition as usize;
        if ends.len() <= p {
            ends.resize(p + 1, 0);
        }
        ends[p] = ends[p].max(d.offset + 1);
    }
    Ok(ends)
}

/// Read `n` messages with a consumer of a group of its own; (seconds from subscribe to the
/// last message, messages/s from the first message to the last).
async fn raw_consume(brokers: &str, topic: &str, n: usize) -> Result<(f64, f64)> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    let t0 = Instant::now();
    c.subscribe(&[topic])?;
    let mut first = None;
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv()).await.context("raw consume: no message for 60 s")??;
        std::hint::black_box(rdkafka::Message::payload(&m));
        first.get_or_insert_with(Instant::now);
    }
    let end = Instant::now();
    let first = first.expect("n > 0");
    Ok(((end - t0).as_secs_f64(), (n - 1) as f64 / (end - first).as_secs_f64().max(1e-9)))
}

fn committed_reader(brokers: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create()?)
}

/// The group's committed offsets of `topic` (-1: none yet).
async fn committed(c: &Arc<BaseConsumer>, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let (c, topic) = (c.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(5))?;
        Ok((0..partitions)
            .map(|p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect())
    })
    .await?
}

/// Other builds on the machine (the benchmark shares it): how many `rustc` processes run now.
fn rustc_running() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "rustc"))
                .count()
        })
        .unwrap_or(0)
}

/// `n` sync calls with `event`, at most `c` in flight; the wall time.
async fn drive(n: usize, c: usize, api: &Api, event: &[u8]) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..c.max(1))
        .map(|_| {
            let (next, api, event) = (next.clone(), api.clone(), event.to_vec());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    api.invoke_sync(FUNCTION, event.clone()).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed())
}
