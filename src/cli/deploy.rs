//! `nubis deploy <folder>`: zip the folder, create the function or update it.
//!
//! Settings come from the flags, then from an optional `nubis.toml` in the folder (flags win;
//! `--env` adds to and overrides the manifest's `[env]`):
//!
//! ```toml
//! name = "hello"            # default: the folder's name
//! runtime = "python3.10"
//! handler = "index.handler"
//! memory = 128              # MB
//! timeout = 10              # seconds
//! description = "says hello"
//! [env]
//! GREETING = "hi"
//! ```
//!
//! An update sends only the settings given, so what the function already has is kept.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::Method;
use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::enc;
use super::error::CliError;
use super::output::{Format, fields, print_json};
use super::pack::{self, MANIFEST_FILE};
use super::{ConnArgs, Ctx};

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The folder to deploy (its files become the code zip; see .nubisignore).
    pub folder: PathBuf,
    /// Function name. Default: `name` in nubis.toml, else the folder's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Runtime, e.g. python3.10, nodejs20, custom.debian12.
    #[arg(long)]
    pub runtime: Option<String>,
    /// Handler, e.g. index.handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Memory in MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long)]
    pub description: Option<String>,
    /// An environment variable, KEY=VALUE; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
}

/// `KEY=VALUE`, the value may be empty or hold '='.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// `nubis.toml`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub memory: Option<u64>,
    pub timeout: Option<u64>,
    pub description: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(folder: &Path) -> Result<Self, CliError> {
        let path = folder.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(CliError::io(path, e)),
        };
        use figment::providers::{Format as _, Toml};
        figment::Figment::from(Toml::string(&text))
            .extract()
            .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
    }
}

/// The function name and the config fields of the request (no code): flags over manifest.
pub fn settings(args: &DeployArgs, m: &Manifest, folder_name: Option<&str>) -> Result<(String, Map<String, Value>), CliError> {
    let name = args
        .name
        .clone()
        .or_else(|| m.name.clone())
        .or_else(|| folder_name.map(str::to_string))
        .ok_or_else(|| CliError::Usage("no function name: pass --name or set name in nubis.toml".into()))?;
    let mut body = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.to_string(), v);
        }
    };
    put("runtime", args.runtime.clone().or_else(|| m.runtime.clone()).map(Value::from));
    put("handler", args.handler.clone().or_else(|| m.handler.clone()).map(Value::from));
    put("memorySize", args.memory.or(m.memory).map(Value::from));
    put("timeout", args.timeout.or(m.timeout).map(Value::from));
    put("description", args.description.clone().or_else(|| m.description.clone()).map(Value::from));
    let mut env = m.env.clone();
    env.extend(args.env.iter().cloned());
    if !env.is_empty() {
        put("environmentVariables", Some(json!(env)));
    }
    Ok((name, body))
}

pub async fn run(ctx: &Ctx, args: DeployArgs) -> Result<(), CliError> {
    // The folder first: a wrong path is the likeliest mistake and the clearest message.
    let entries = pack::collect(&args.folder)?;
    let manifest = Manifest::read(&args.folder)?;
    let folder_name = std::fs::canonicalize(&args.folder)
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string));
    let (name, config) = settings(&args, &manifest, folder_name.as_deref())?;
    if entries.is_empty() {
        return Err(CliError::Usage(format!("{}: nothing to deploy (every file is ignored)", args.folder.display())));
    }
    // A bar only for a person watching: on a pipe or in CI it would be noise.
    let bar = if ctx.format == Format::Text && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(entries.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} files")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_message("zipping");
        b
    } else {
        ProgressBar::hidden()
    };
    // Reading and deflating files blocks: off the runtime's threads.
    let zip = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || pack::zip_entries(&entries, |_| bar.inc(1)))
            .await
            .map_err(|e| CliError::Usage(format!("zipping failed: {e}")))??
    };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.set_message(format!("uploading {} KB to {}", zip.len().div_ceil(1024), ctx.client.endpoint()));
    bar.enable_steady_tick(Duration::from_millis(120));

    let code = json!({"zipFile": base64::engine::general_purpose::STANDARD.encode(&zip)});
    let path = format!("/2023-03-30/functions/{}", enc(&name));
    let exists = match ctx.client.get_json(&path, &[]).await {
        Ok(_) => true,
        Err(e) if e.api_code() == Some("FunctionNotFound") => false,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    let mut body = config;
    body.insert("code".into(), code);
    let result = if exists {
        ctx.client.send_json(Method::PUT, &path, &[], &Value::Object(body)).await
    } else {
        body.insert("functionName".into(), Value::from(name.clone()));
        ctx.client.send_json(Method::POST, "/2023-03-30/functions", &[], &Value::Object(body)).await
    };
    bar.finish_and_clear();
    let f = result?;
    match ctx.format {
        Format::Json => print_json(&f),
        Format::Text => {
            let s = |k: &str| super::output::cell(&f[k]);
            println!("{} function {}", if exists { "updated" } else { "created" }, s("functionName"));
            print!(
                "{}",
                fields(&[
                    ("runtime", s("runtime")),
                    ("codeSize", s("codeSize")),
                    ("checksum", s("codeChecksum")),
                    ("lastModified", s("lastModifiedTime")),
                ])
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DeployArgs,
    }

    fn args(argv: &[&str]) -> DeployArgs {
        T::try_parse_from(std::iter::once("t").chain(argv.iter().copied())).unwrap().a
    }

    #[test]
    fn flags_override_the_manifest() {
        let m = Manifest {
            name: Some("from-manifest".into()),
            runtime: Some("python3.10".into()),
            memory: Some(256),
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
            ..Default::default()
        };
        let (name, body) = settings(&args(&["dir", "--memory", "128", "--env", "B=x=y", "--env", "C="]), &m, Some("dir")).unwrap();
        assert_eq!(name, "from-manifest");
        assert_eq!(
            Value::Object(body),
            json!({"runtime": "python3.10", "memorySize": 128, "environmentVariables": {"A": "1", "B": "x=y", "C": ""}})
        );
        let (name, body) = settings(&args(&["dir", "--name", "n", "--handler", "index.handler"]), &Manifest::default(), Some("dir")).unwrap();
        assert_eq!((name.as_str(), Value::Object(body)), ("n", json!({"handler": "index.handler"})));
        assert_eq!(settings(&args(&["dir"]), &Manifest::default(), Some("dir")).unwrap().0, "dir");
        assert!(settings(&args(&["dir"]), &Manifest::default(), None).is_err());
        assert!(parse_key_value("=v").is_err() && parse_key_value("novalue").is_err());
    }

    #[test]
    fn manifest_reads_and_refuses_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), Manifest::default());
        std::fs::write(d.path().join(MANIFEST_FILE), "name = \"x\"\ntimeout = 5\n[env]\nK = \"v\"\n").unwrap();
        let m = Manifest::read(d.path()).unwrap();
        assert_eq!((m.name.as_deref(), m.timeout, m.env.get("K").map(String::as_str)), (Some("x"), Some(5), Some("v")));
        std::fs::write(d.path().join(MANIFEST_FILE), "nmae = \"x\"\n").unwrap();
        assert!(matches!(Manifest::read(d.path()), Err(CliError::Config(_))));
    }
}
