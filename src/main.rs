//! `nubis`: parse the command line, load config, run the chosen role, or run a client command
//! (`nubis::cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nubis::config::Config;

#[derive(Parser)]
#[command(name = "nubis", version, about = "Nubis: a self-hosted Function Compute (FC 3.0 API)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Config file (TOML). Default: config/nubis.toml if it exists. Every key can also be set
    /// with NUBIS_<SECTION>__<KEY>, e.g. NUBIS_SCHEDULER__IDLE_KEEP_ALIVE_SECS=60.
    #[arg(long, env = "NUBIS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite metadata, code, logs). Overrides server.data_dir.
    #[arg(long, env = "NUBIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the all-in-one server: API, resource manager and node agent in one process, with
    /// embedded defaults (SQLite, local code store, local Docker).
    Server {
        #[command(flatten)]
        common: Common,
        /// Public listener. Overrides server.listen.
        #[arg(long, env = "NUBIS_LISTEN")]
        listen: Option<SocketAddr>,
        /// This node's id (labels its containers). Overrides agent.node_id.
        #[arg(long, env = "NUBIS_NODE_ID")]
        node_id: Option<String>,
        /// Roles of this process, comma-separated: api, scheduler, dispatcher, agent (default:
        /// all four, the all-in-one server). A cluster controller: api,scheduler,dispatcher.
        /// Overrides server.roles.
        #[arg(long, env = "NUBIS_ROLES", value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// etcd endpoints of the cluster, comma-separated. Overrides cluster.etcd_endpoints.
        #[arg(long, env = "NUBIS_ETCD", value_delimiter = ',')]
        etcd: Option<Vec<String>>,
    },
    /// Run a worker node of a cluster: runs instances on the local Docker engine for the
    /// controllers, registered in etcd. The shared secret comes from cluster.secret (or env
    /// NUBIS_CLUSTER__SECRET; never a flag, which other users could read in the process list).
    Agent {
        #[command(flatten)]
        common: Common,
        /// etcd endpoints of the cluster to join, comma-separated. Overrides
        /// cluster.etcd_endpoints.
        #[arg(long, env = "NUBIS_JOIN", value_delimiter = ',')]
        join: Option<Vec<String>>,
        /// Internal listener for controllers. Overrides cluster.agent_listen.
        #[arg(long, env = "NUBIS_AGENT_LISTEN")]
        listen: Option<SocketAddr>,
        /// URL controllers use to reach this agent. Overrides cluster.agent_advertise_url.
        #[arg(long, env = "NUBIS_ADVERTISE_URL")]
        advertise_url: Option<String>,
        /// This node's id. Overrides agent.node_id.
        #[arg(long, env = "NUBIS_NODE_ID")]
        node_id: Option<String>,
    },
    /// Administration of a data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The client commands (deploy, invoke, logs, tasks, versions, aliases, functions,
    /// configure): see `nubis::cli`.
    #[command(flatten)]
    Client(nubis::cli::Command),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an access key pair and print it (the secret is shown only now).
    CreateKey {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "created with nubis admin create-key")]
        description: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn load(common: &Common) -> anyhow::Result<Config> {
    let mut cfg = Config::load(common.config.as_deref()).context("loading configuration")?;
    if let Some(d) = &common.data_dir {
        cfg.server.data_dir = d.clone();
    }
    Ok(cfg)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // No tracing subscriber for client commands: their stderr is for their own messages.
    if !matches!(command, Command::Client(_)) {
        nubis::telemetry::init();
    }
    match command {
        // The exit status is the command's (0 or 1); stdout is already flushed.
        Command::Client(c) => std::process::exit(nubis::cli::run(c).await),
        Command::Server { common, listen, node_id, roles, etcd } => {
            let mut cfg = load(&common)?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(n) = node_id {
                cfg.agent.node_id = n;
            }
            if let Some(r) = roles {
                cfg.server.roles = r;
            }
            if let Some(e) = etcd {
                cfg.cluster.etcd_endpoints = e;
            }
            let server = nubis::server::Server::build(cfg).await?;
            server.run(shutdown_signal()).await
        }
        Command::Agent { common, join, listen, advertise_url, node_id } => {
            let mut cfg = load(&common)?;
            if let Some(j) = join {
                cfg.cluster.etcd_endpoints = j;
            }
            if let Some(l) = listen {
                cfg.cluster.agent_listen = l;
            }
            if let Some(u) = advertise_url {
                cfg.cluster.agent_advertise_url = u;
            }
            if let Some(n) = node_id {
                cfg.agent.node_id = n;
            }
            let agent = nubis::agentd::Agent::build(cfg).await?;
            agent.run(shutdown_signal()).await
        }
        Command::Admin { command: AdminCommand::CreateKey { common, description, output } } => {
            let cfg = load(&common)?;
            let (store, keys) = nubis::server::open_keys(&cfg).await?;
            let k = keys.create(&description).await?;
            store.close().await;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"accessKeyId": k.access_key_id, "accessKeySecret": k.access_key_secret})
                ),
                Output::Text => println!("AccessKeyId:     {}\nAccessKeySecret: {}", k.access_key_id, k.access_key_secret),
            }
            Ok(())
        }
    }
}
