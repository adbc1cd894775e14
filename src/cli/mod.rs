//! The user CLI: `nubis deploy`, `invoke`, `logs`, `tasks`, `versions`, `aliases`,
//! `functions` and `configure`, talking to any Nubis endpoint over the FC 3.0 API, signed with
//! an access key from the environment or a profile (see [`config`]).
//!
//! One file per command group; [`client`] signs and sends, [`output`] prints. Every command
//! prints human output by default and the API's JSON with `--output json`; a failure is one
//! `error: …` line on stderr (with the API's `Code`, `Message` and `RequestId` when the server
//! answered) and exit status 1.

pub mod aliases;
pub mod client;
pub mod config;
pub mod deploy;
pub mod error;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod output;
pub mod pack;
pub mod tasks;
pub mod versions;

use std::io::Write;

use serde_json::Value;

pub use error::CliError;
use output::Format;

/// Connection and output flags every API command takes (after its name, at any depth).
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// API endpoint, `http(s)://host:port` or `host:port`. Default: the profile's, else
    /// http://127.0.0.1:9000. The access key comes from env NUBIS_ACCESS_KEY_ID and
    /// NUBIS_ACCESS_KEY_SECRET or the profile (never a flag: command lines are visible in ps).
    #[arg(long, global = true, env = "NUBIS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Profile of the CLI config file (~/.config/nubis/cli.toml, or env NUBIS_CLI_CONFIG).
    #[arg(long, global = true, env = "NUBIS_PROFILE")]
    pub profile: Option<String>,
    /// Output: human-readable text, or the API's JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// The client commands, flattened into `nubis`'s own subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Save an endpoint and access key in a profile of the CLI config file (mode 0600).
    Configure(config_cmd::ConfigureArgs),
    /// Zip a folder and create or update the function from it.
    Deploy(deploy::DeployArgs),
    /// Invoke a function, synchronously (prints its result) or with --async (prints the task id).
    Invoke(invoke::InvokeArgs),
    /// Show a function's log lines; -f follows new ones.
    Logs(logs::LogsArgs),
    /// Async tasks of a function: `tasks <fn>` lists them; `tasks get|stop <fn> <taskId>`.
    Tasks(tasks::TasksArgs),
    /// Function versions: ls, publish, rm.
    Versions(versions::VersionsArgs),
    /// Aliases: ls, get, set (with an additional version's weight), rm.
    Aliases(aliases::AliasesArgs),
    /// Functions: ls, get, rm.
    Functions(functions::FunctionsArgs),
}

/// What an API command runs with.
pub struct Ctx {
    pub client: client::Client,
    pub format: Format,
}

impl Ctx {
    pub fn new(conn: &ConnArgs) -> Result<Self, CliError> {
        let env = |k: &str| std::env::var(k).ok();
        let profiles = match config::config_path(&env) {
            Some(p) => config::read_profiles(&p)?,
            None => Default::default(),
        };
        let profile = conn.profile.as_deref().filter(|p| !p.is_empty());
        let creds = config::resolve(
            conn.endpoint.as_deref().filter(|e| !e.is_empty()),
            &env,
            &profiles,
            profile.unwrap_or(config::DEFAULT_PROFILE),
            profile.is_some(),
        )?;
        Ok(Self { client: client::Client::new(creds)?, format: conn.output })
    }
}

/// Runs one command; returns the process exit status (0 ok, 1 on any error).
pub async fn run(cmd: Command) -> i32 {
    let result = dispatch(cmd).await;
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn dispatch(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Configure(a) => config_cmd::run(a),
        Command::Deploy(a) => deploy::run(&Ctx::new(&a.conn)?, a).await,
        Command::Invoke(a) => invoke::run(&Ctx::new(&a.conn)?, a).await,
        Command::Logs(a) => logs::run(&Ctx::new(&a.conn)?, a).await,
        Command::Tasks(a) => tasks::run(&Ctx::new(&a.conn)?, a).await,
        Command::Versions(a) => versions::run(&Ctx::new(&a.conn)?, a).await,
        Command::Aliases(a) => aliases::run(&Ctx::new(&a.conn)?, a).await,
        Command::Functions(a) => functions::run(&Ctx::new(&a.conn)?, a).await,
    }
}

/// Epoch ms (a JSON number) as RFC 3339, "-" when absent.
pub fn ms_time(v: &Value) -> String {
    v.as_i64().map(crate::logstore::rfc3339_ms).unwrap_or_else(|| "-".into())
}

/// Tells a person that a list has more pages (stderr, so stdout stays the table).
/// One page of a list: the API's JSON, or its table and, on stderr, the token of the next page.
pub fn print_page(ctx: &Ctx, page: &Value, table: fn(&Value) -> output::Table) {
    match ctx.format {
        Format::Json => output::print_json(page),
        Format::Text => {
            print!("{}", table(page).render());
            if let Some(t) = page["nextToken"].as_str().filter(|t| !t.is_empty()) {
                eprintln!("(more: --next-token {t})");
            }
        }
    }
}

/// `nubis configure`.
pub mod config_cmd {
    use std::io::{BufRead, IsTerminal, Write};

    use super::CliError;
    use super::config::{self, Profile};

    #[derive(clap::Args, Debug)]
    pub struct ConfigureArgs {
        /// Profile to write.
        #[arg(long, env = "NUBIS_PROFILE", default_value = config::DEFAULT_PROFILE)]
        pub profile: String,
        /// Endpoint to save (asked for when absent on a terminal).
        #[arg(long)]
        pub endpoint: Option<String>,
        /// Access key id to save (asked for when absent). The secret is read from env
        /// NUBIS_ACCESS_KEY_SECRET, else from the terminal without echo, else a line of stdin.
        #[arg(long)]
        pub access_key_id: Option<String>,
    }

    pub fn run(args: ConfigureArgs) -> Result<(), CliError> {
        config::check_profile_name(&args.profile)?;
        let env = |k: &str| std::env::var(k).ok();
        let path = config::config_path(&env)
            .ok_or_else(|| CliError::Config("no config file location: set HOME or NUBIS_CLI_CONFIG".into()))?;
        let mut profiles = config::read_profiles(&path)?;
        let old = profiles.get(&args.profile).cloned().unwrap_or_default();
        let tty = std::io::stdin().is_terminal();
        let nonempty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());

        let endpoint = match nonempty(args.endpoint.clone()) {
            Some(e) => Some(e),
            None if tty => nonempty(Some(prompt(&format!(
                "Endpoint [{}]: ",
                old.endpoint.as_deref().unwrap_or(config::DEFAULT_ENDPOINT)
            ))?))
            .or(old.endpoint.clone()),
            None => old.endpoint.clone(),
        };
        if let Some(e) = &endpoint {
            config::normalize_endpoint(e)?;
        }
        let id = match nonempty(args.access_key_id.clone()).or_else(|| nonempty(env("NUBIS_ACCESS_KEY_ID"))) {
            Some(id) => id,
            None => nonempty(Some(prompt("Access key id: ")?))
                .ok_or_else(|| CliError::Usage("an access key id is required".into()))?,
        };
        let secret = match nonempty(env("NUBIS_ACCESS_KEY_SECRET")) {
            Some(s) => s,
            None if tty => {
                eprint!("Access key secret: ");
                console::Term::stderr().read_secure_line().map_err(|e| CliError::io("<terminal>", e))?
            }
            None => read_line()?,
        };
        let secret = nonempty(Some(secret)).ok_or_else(|| CliError::Usage("an access key secret is required".into()))?;
        profiles.insert(
            args.profile.clone(),
            Profile { endpoint, access_key_id: Some(id), access_key_secret: Some(secret) },
        );
        config::write_profiles(&path, &profiles)?;
        eprintln!("saved profile '{}' in {}", args.profile, path.display());
        Ok(())
    }

    fn prompt(question: &str) -> Result<String, CliError> {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        read_line()
    }

    fn read_line() -> Result<String, CliError> {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::io("<stdin>", e))?;
        Ok(line.trim().to_string())
    }
}
