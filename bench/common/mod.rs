//! What the benches share (each includes this file with `#[path = "common/mod.rs"] mod common;`):
//! the `nubis` server subprocess, signed FC API calls, the trivial functions, CPU accounting
//! and the machine facts printed with the results.

// Each bench uses a part of this module; the rest would warn as dead code in that bench.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;
use nubis::api::auth::sign_request;
use serde_json::{Value, json};

/// A minimal HTTP/1.1 keep-alive server answering every request with "ok". keepAliveTimeout 0:
/// never close an idle pooled connection under the platform (Node's default is 5 s).
pub const NODE_SERVER: &str = r#"const http = require('http');
const s = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => { res.writeHead(200, {'content-type': 'text/plain', 'content-length': 2}); res.end('ok'); });
});
s.keepAliveTimeout = 0;
s.listen(Number(process.env.FC_SERVER_PORT || 9000), '0.0.0.0');
"#;

/// The trivial Python function.
pub const PY_HANDLER: &str = "def handler(event, context):\n    return 'ok'\n";

/// The server binary: `--nubis-bin` / `NUBIS_BIN`, else the `nubis` cargo built with the bench.
pub fn server_binary(given: Option<&Path>) -> Result<PathBuf> {
    let bin = given.map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nubis")), Path::to_path_buf);
    if !bin.exists() {
        bail!("server binary {} not found (build it: cargo build --release --bin nubis, or set NUBIS_BIN)", bin.display());
    }
    Ok(bin)
}

/// "42.3 MB, modified 2026-11-24 09:04:33 UTC": which build of the server ran. With a target
/// directory shared between checkouts, `target/release/nubis` is whichever checkout built it
/// last, whatever `git describe` of this one says: copy it and pass `--nubis-bin` to be sure.
pub fn binary_facts(bin: &Path) -> String {
    let Ok(meta) = std::fs::metadata(bin) else { return "unreadable".into() };
    let modified = meta.modified().map(|t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M:%S UTC").to_string());
    format!("{:.1} MB, modified {}", meta.len() as f64 / 1e6, modified.unwrap_or_else(|_| "?".into()))
}

// ---------------------------------------------------------------------------------------------
// The server subprocess

pub struct Server {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub node_id: String,
    log: PathBuf,
    ak: String,
    sk: String,
    /// A process whose CPU time is counted as the broker's (the Kafka broker of
    /// scripts/test-services.sh), if any.
    pub broker_pid: Option<String>,
}

impl Server {
    /// Start `nubis server` on a free 127.0.0.1 port over `data_dir` (a key is created the first
    /// time) with a fresh node id, and wait for /health. Besides `env`, the server gets
    /// `RUST_LOG` (default `warn`), a 10 s shutdown grace and no image pulls; any other
    /// `NUBIS_*` variable of the bench's environment reaches it too.
    pub async fn start(bin: &Path, data_dir: &Path, env: &[(&str, String)]) -> Result<Self> {
        let key_file = data_dir.join("bench-key.json");
        if !key_file.exists() {
            let out = tokio::process::Command::new(bin)
                .args(["admin", "create-key", "--output", "json", "--data-dir"])
                .arg(data_dir)
                .current_dir(data_dir)
                .env_remove("NUBIS_CONFIG")
                .env("RUST_LOG", "warn")
                .output()
                .await
                .context("running nubis admin create-key")?;
            if !out.status.success() {
                bail!("nubis admin create-key failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::fs::write(&key_file, &out.stdout)?;
        }
        let key: Value = serde_json::from_slice(&std::fs::read(&key_file)?)?;
        let ak = key["accessKeyId"].as_str().ok_or_else(|| anyhow!("no accessKeyId in {key}"))?.to_string();
        let sk = key["accessKeySecret"].as_str().ok_or_else(|| anyhow!("no accessKeySecret"))?.to_string();

        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let node_id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let log = data_dir.join(format!("server-{port}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["server", "--listen", &addr.to_string(), "--node-id", &node_id, "--data-dir"])
            .arg(data_dir)
            // Not the repository root: config/nubis.toml must not be picked up.
            .current_dir(data_dir)
            .env_remove("NUBIS_CONFIG")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .env("NUBIS_SERVER__SHUTDOWN_GRACE_SECS", "10")
            .env("NUBIS_AGENT__PULL_MISSING_IMAGES", "false")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server { child, addr, node_id, log, ak, sk, broker_pid: None };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                server.print_log_tail();
                bail!("the server exited during start-up ({status})");
            }
            if let Ok(r) = http.get(format!("http://{addr}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                server.print_log_tail();
                server.stop().await;
                bail!("the server did not answer /health within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    pub fn api(&self, concurrency: usize) -> Api {
        let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client builds");
        Api { base: format!("http://{}", self.addr), host: self.addr.to_string(), ak: self.ak.clone(), sk: self.sk.clone(), http }
    }

    /// The server process's pid as a /proc name.
    pub fn pid(&self) -> Option<String> {
        self.child.id().map(|p| p.to_string())
    }

    pub fn cpu(&self) -> Cpu {
        let server = self.pid().map(|p| proc_cpu(&p)).unwrap_or(0.0);
        let broker = self.broker_pid.as_deref().map(proc_cpu).unwrap_or(0.0);
        Cpu { server, function: containers_cpu(&self.node_id), client: proc_cpu("self"), broker }
    }

    pub fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- last lines of the server log {}:", self.log.display());
        for l in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("    {l}");
        }
    }

    /// SIGTERM (the server stops its instances), then SIGKILL if it lingers; any container of
    /// this node id still there is removed.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
        let out =
            std::process::Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=nubis.node={}", self.node_id)]).output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).stdout(Stdio::null()).status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signed FC API calls

#[derive(Clone)]
pub struct Api {
    base: String,
    host: String,
    ak: String,
    sk: String,
    http: reqwest::Client,
}

impl Api {
    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<(u16, HeaderMap, Bytes)> {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(&self.host)?);
        for (k, v) in headers {
            h.insert(HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?);
        }
        sign_request(&self.ak, &self.sk, &method, path, "", &mut h, &body, chrono::Utc::now());
        let r = self.http.request(method, format!("{}{path}", self.base)).headers(h).body(body).send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Ok((status, headers, r.bytes().await?))
    }

    /// CreateFunction with this body (a JSON object with `functionName`).
    pub async fn create_function(&self, body: &Value) -> Result<()> {
        let (status, _, resp) = self
            .call(Method::POST, "/2023-03-30/functions", &[("content-type", "application/json")], body.to_string().into_bytes())
            .await?;
        if status != 200 {
            bail!("CreateFunction: {status} {}", String::from_utf8_lossy(&resp));
        }
        Ok(())
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        let (status, _, resp) = self.call(Method::DELETE, &format!("/2023-03-30/functions/{name}"), &[], Vec::new()).await?;
        if status != 204 {
            bail!("DeleteFunction: {status} {}", String::from_utf8_lossy(&resp));
        }
        Ok(())
    }

    /// A synchronous InvokeFunction that must succeed (200, no `x-fc-error-type`): its headers
    /// and body.
    pub async fn invoke_sync(&self, function: &str, event: Vec<u8>) -> Result<(HeaderMap, Bytes)> {
        let path = format!("/2023-03-30/functions/{function}/invocations");
        let (status, h, body) = self.call(Method::POST, &path, &[("content-type", "application/octet-stream")], event).await?;
        if status != 200 || h.contains_key("x-fc-error-type") {
            bail!("sync invoke: {status} {:?} {}", h.get("x-fc-error-type"), String::from_utf8_lossy(&body));
        }
        Ok((h, body))
    }

    /// An asynchronous InvokeFunction that must be accepted (202).
    pub async fn invoke_async(&self, function: &str, event: Vec<u8>) -> Result<()> {
        let path = format!("/2023-03-30/functions/{function}/invocations");
        let headers = [("content-type", "application/octet-stream"), ("x-fc-invocation-type", "Async")];
        let (status, _, body) = self.call(Method::POST, &path, &headers, event).await?;
        if status != 202 {
            bail!("async invoke: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: CPU time per call does not depend on what else the machine runs, unlike
// calls/s, and cores / (CPU per call) is the ceiling the code allows on the machine.

/// CPU seconds used so far by the server process, the function's containers and this client.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub server: f64,
    pub function: f64,
    pub client: f64,
    /// The Kafka broker (kafka backend, when its pid is known), else 0.
    pub broker: f64,
}

impl Cpu {
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server - before.server,
            function: self.function - before.function,
            client: self.client - before.client,
            broker: self.broker - before.broker,
        }
    }
    pub fn total(self) -> f64 {
        self.server + self.function + self.client + self.broker
    }
    /// "server 812 + function 95 + client 130 + broker 0 = 1037 µs (ceiling on 2 cores: 1929/s)"
    pub fn per_event(self, n: usize) -> String {
        let us = |s: f64| s * 1e6 / n as f64;
        let total = us(self.total());
        format!(
            "CPU per event: server {:.0} + function {:.0} + client {:.0} + broker {:.0} = {total:.0} µs (ceiling on {} cores: {:.0}/s)",
            us(self.server),
            us(self.function),
            us(self.client),
            us(self.broker),
            nproc(),
            nproc() as f64 * 1e6 / total
        )
    }
}

/// utime + stime of a process (all its threads), seconds.
pub fn proc_cpu(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// CPU used by the containers of a node id (cgroup v1 cpuacct or v2 cpu.stat), seconds.
pub fn containers_cpu(node_id: &str) -> f64 {
    let Ok(out) =
        std::process::Command::new("docker").args(["ps", "-q", "--no-trunc", "--filter", &format!("label=nubis.node={node_id}")]).output()
    else {
        return 0.0;
    };
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(container_cpu).sum()
}

/// CPU used by one container (full id), seconds; 0 when its cgroup is not found.
pub fn container_cpu(id: &str) -> f64 {
    if let Ok(ns) = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage")) {
        return ns.trim().parse::<f64>().unwrap_or(0.0) / 1e9;
    }
    for p in [format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"), format!("/sys/fs/cgroup/docker/{id}/cpu.stat")] {
        if let Ok(stat) = std::fs::read_to_string(p) {
            let usec = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse::<f64>().ok());
            return usec.unwrap_or(0.0) / 1e6;
        }
    }
    0.0
}

// ---------------------------------------------------------------------------------------------
// Machine facts for the report

pub fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `git describe --always --dirty` of the repository this bench was built from.
pub fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

pub fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB memory", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "memory unknown".into())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The trivial function every bench calls: a Node.js HTTP server on `custom.debian12`, or a
/// Python handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Custom,
    Python,
}

pub const FUNCTION: &str = "bench-trivial";

/// Create [`FUNCTION`] with the trivial code of `runtime` (512 MB, 30 s).
pub async fn create_trivial_function(api: &Api, runtime: Runtime, cpu: f64, instance_concurrency: u32) -> Result<()> {
    let mut body = match runtime {
        Runtime::Custom => json!({
            "runtime": "custom.debian12", "handler": "not.used",
            "customRuntimeConfig": {"command": ["node", "/code/server.js"], "port": 9000},
            "code": {"zipFile": b64(&nubis::codestore::package::build_zip(&[("server.js", NODE_SERVER.as_bytes(), 0o644)]))},
        }),
        Runtime::Python => json!({
            "runtime": "python3.10", "handler": "index.handler",
            "code": {"zipFile": b64(&nubis::codestore::package::build_zip(&[("index.py", PY_HANDLER.as_bytes(), 0o644)]))},
        }),
    };
    let extra = json!({
        "functionName": FUNCTION, "memorySize": 512, "cpu": cpu, "timeout": 30,
        "instanceConcurrency": instance_concurrency,
    });
    body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    api.create_function(&body).await
}

/// The pid of the broker started by `scripts/test-services.sh start kafka`, if it is running.
pub fn broker_pid() -> Option<String> {
    let run = std::env::var("NUBIS_RUN_DIR").unwrap_or_else(|_| "/tmp/nubis-run".into());
    let pid = std::fs::read_to_string(Path::new(&run).join("kafka.pid")).ok()?.trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}
