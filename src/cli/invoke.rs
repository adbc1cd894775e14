//! `nubis invoke <fn> [payload|-] [--file F]`: a sync call prints the function's result on
//! stdout (and with `--tail` its log on stderr); `--async` prints the task id. A function
//! error (`x-fc-error-type`) prints the function's error and exits non-zero.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use axum::http::Method;
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use super::client::enc;
use super::error::CliError;
use super::output::{Format, print_json};
use super::{ConnArgs, Ctx};

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    pub function: String,
    /// The event, as is; `-` reads it from stdin. Default: empty.
    pub payload: Option<String>,
    /// Read the event from this file (`-`: stdin).
    #[arg(long, conflicts_with = "payload")]
    pub file: Option<PathBuf>,
    /// A version id or an alias (default: LATEST).
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Queue the invocation and print its task id (see `nubis tasks get`).
    #[arg(long = "async")]
    pub is_async: bool,
    /// Print this invocation's log (the last 4 KB) on stderr.
    #[arg(long, conflicts_with = "is_async")]
    pub tail: bool,
}

/// Where the event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadSource {
    Empty,
    Inline(String),
    File(PathBuf),
    Stdin,
}

pub fn payload_source(arg: Option<&str>, file: Option<&Path>) -> Result<PayloadSource, CliError> {
    match (arg, file) {
        (Some(_), Some(_)) => Err(CliError::Usage("give the payload as an argument or with --file, not both".into())),
        (Some("-"), None) => Ok(PayloadSource::Stdin),
        (Some(s), None) => Ok(PayloadSource::Inline(s.to_string())),
        (None, Some(p)) if p.as_os_str() == "-" => Ok(PayloadSource::Stdin),
        (None, Some(p)) => Ok(PayloadSource::File(p.to_path_buf())),
        (None, None) => Ok(PayloadSource::Empty),
    }
}

async fn read_payload(src: PayloadSource) -> Result<Vec<u8>, CliError> {
    match src {
        PayloadSource::Empty => Ok(Vec::new()),
        PayloadSource::Inline(s) => Ok(s.into_bytes()),
        PayloadSource::File(p) => tokio::fs::read(&p).await.map_err(|e| CliError::io(p, e)),
        PayloadSource::Stdin => {
            let mut buf = Vec::new();
            tokio::io::stdin().read_to_end(&mut buf).await.map_err(|e| CliError::io("<stdin>", e))?;
            Ok(buf)
        }
    }
}

/// A decoded `x-fc-log-result` (base64 of the log's tail); a broken header shows as is.
pub fn decode_log(header: &str) -> String {
    match base64::engine::general_purpose::STANDARD.decode(header.trim()) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => header.to_string(),
    }
}

/// A function's error body for a person: `errorType: errorMessage` and the stack trace when
/// it is the runtimes' JSON, else the body itself.
pub fn describe_function_error(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return text;
    };
    let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
    if s("errorMessage").is_empty() && s("errorType").is_empty() {
        return text;
    }
    let mut out = match (s("errorType"), s("errorMessage")) {
        ("", m) => m.to_string(),
        (t, "") => t.to_string(),
        (t, m) => format!("{t}: {m}"),
    };
    if let Some(Value::Array(frames)) = doc.get("stackTrace") {
        for f in frames {
            out.push_str("\n  ");
            out.push_str(f.as_str().map(str::to_string).unwrap_or_else(|| f.to_string()).trim_end());
        }
    }
    out
}

pub async fn run(ctx: &Ctx, args: InvokeArgs) -> Result<(), CliError> {
    let payload = read_payload(payload_source(args.payload.as_deref(), args.file.as_deref())?).await?;
    let mut headers = vec![("content-type", "application/octet-stream".to_string())];
    if args.is_async {
        headers.push(("x-fc-invocation-type", "Async".into()));
    }
    if args.tail {
        headers.push(("x-fc-log-type", "Tail".into()));
    }
    let query: Vec<(&str, String)> = args.qualifier.iter().map(|q| ("qualifier", q.clone())).collect();
    let path = format!("/2023-03-30/functions/{}/invocations", enc(&args.function));
    let r = ctx.client.send(Method::POST, &path, &query, &headers, payload).await?;
    let request_id = r.header("x-fc-request-id").unwrap_or("-").to_string();

    if args.is_async {
        let task_id = r.header("x-fc-async-task-id").unwrap_or_default().to_string();
        match ctx.format {
            Format::Json => print_json(&json!({"requestId": request_id, "taskId": task_id, "statusCode": r.status})),
            Format::Text => println!("{task_id}"),
        }
        return Ok(());
    }

    let error_type = r.header("x-fc-error-type").map(str::to_string);
    let log = r.header("x-fc-log-result").map(decode_log);
    match ctx.format {
        Format::Json => {
            let mut doc = Map::new();
            doc.insert("requestId".into(), json!(request_id));
            doc.insert("statusCode".into(), json!(r.status));
            match std::str::from_utf8(&r.body) {
                Ok(s) => doc.insert("body".into(), json!(s)),
                Err(_) => doc.insert("bodyBase64".into(), json!(base64::engine::general_purpose::STANDARD.encode(&r.body))),
            };
            if let Some(t) = &error_type {
                doc.insert("errorType".into(), json!(t));
            }
            if let Some(l) = &log {
                doc.insert("log".into(), json!(l));
            }
            print_json(&Value::Object(doc));
        }
        Format::Text => {
            if let Some(l) = &log {
                eprint!("{l}");
                if !l.ends_with('\n') {
                    eprintln!();
                }
            }
            if error_type.is_some() {
                eprintln!("{}", describe_function_error(&r.body));
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&r.body).map_err(|e| CliError::io("<stdout>", e))?;
                // A shell prompt after a result without newline would be glued to it; a pipe
                // gets the bytes exactly.
                if out.is_terminal() && !r.body.ends_with(b"\n") && !r.body.is_empty() {
                    let _ = out.write_all(b"\n");
                }
            }
        }
    }
    match error_type {
        Some(error_type) => Err(CliError::Function { error_type, request_id }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sources() {
        assert_eq!(payload_source(None, None).unwrap(), PayloadSource::Empty);
        assert_eq!(payload_source(Some("hi"), None).unwrap(), PayloadSource::Inline("hi".into()));
        assert_eq!(payload_source(Some("-"), None).unwrap(), PayloadSource::Stdin);
        assert_eq!(payload_source(None, Some(Path::new("-"))).unwrap(), PayloadSource::Stdin);
        assert_eq!(payload_source(None, Some(Path::new("e.json"))).unwrap(), PayloadSource::File("e.json".into()));
        assert!(matches!(payload_source(Some("x"), Some(Path::new("f"))), Err(CliError::Usage(_))));
    }

    #[tokio::test]
    async fn payload_is_read_from_its_source() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("e.bin");
        std::fs::write(&f, b"\x00\xffbytes").unwrap();
        assert_eq!(read_payload(PayloadSource::File(f)).await.unwrap(), b"\x00\xffbytes");
        assert_eq!(read_payload(PayloadSource::Inline("x".into())).await.unwrap(), b"x");
        assert!(matches!(read_payload(PayloadSource::File(d.path().join("no"))).await, Err(CliError::Io { .. })));
    }

    #[test]
    fn function_errors_and_logs_read_well() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["  File \"index.py\", line 2\n"]}"#;
        assert_eq!(describe_function_error(body), "ValueError: boom\n    File \"index.py\", line 2");
        assert_eq!(describe_function_error(b"plain"), "plain");
        assert_eq!(describe_function_error(br#"{"other":1}"#), r#"{"other":1}"#);
        assert_eq!(decode_log("aGkK"), "hi\n");
        assert_eq!(decode_log("%%"), "%%");
    }
}
