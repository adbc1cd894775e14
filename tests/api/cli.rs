//! The `nubis` client commands, run as a process (the built binary) against a real server with
//! real Docker: deploy, invoke (sync with --tail, stdin, async), tasks, logs (and -f), redeploy,
//! versions, aliases, functions, profiles, and the errors a user sees.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;

/// How the CLI is run: endpoint and key from the environment, a private HOME and config path
/// so no config of the machine's user is read.
struct Cli {
    endpoint: String,
    ak: String,
    sk: String,
    home: tempfile::TempDir,
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
    /// A failed command's `error:` line carries this API code (and a request id).
    #[track_caller]
    fn fails_with(&self, code: &str) {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(self.stderr.starts_with("error: ") && self.stderr.contains(&format!("{code}: ")), "{self:?}");
        assert!(self.stderr.contains("RequestId 1-"), "{self:?}");
    }
}

impl Cli {
    fn of(app: &TestApp) -> Self {
        Self { endpoint: format!("http://{}", app.addr), ak: app.ak.clone(), sk: app.sk.clone(), home: tempfile::tempdir().unwrap() }
    }

    fn config_file(&self) -> std::path::PathBuf {
        self.home.path().join("cli.toml")
    }

    fn command(&self, args: &[&str], keys: Option<(&str, &str)>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nubis"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("NUBIS_CLI_CONFIG", self.config_file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((ak, sk)) = keys {
            c.env("NUBIS_ENDPOINT", &self.endpoint).env("NUBIS_ACCESS_KEY_ID", ak).env("NUBIS_ACCESS_KEY_SECRET", sk);
        }
        c
    }

    async fn output(mut c: tokio::process::Command, stdin: Option<&[u8]>) -> Out {
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("nubis runs");
        if let Some(bytes) = stdin {
            let mut s = child.stdin.take().unwrap();
            s.write_all(bytes).await.unwrap();
            drop(s); // EOF
        }
        let o = child.wait_with_output().await.unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// With this app's key in the environment.
    async fn run(&self, args: &[&str]) -> Out {
        Self::output(self.command(args, Some((&self.ak, &self.sk))), None).await
    }

    async fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        Self::output(self.command(args, Some((&self.ak, &self.sk))), Some(stdin)).await
    }

    async fn run_with_key(&self, args: &[&str], ak: &str, sk: &str) -> Out {
        Self::output(self.command(args, Some((ak, sk))), None).await
    }

    /// Nothing from the environment but HOME and the config file path.
    async fn run_bare(&self, args: &[&str]) -> Out {
        Self::output(self.command(args, None), None).await
    }
}

const GREETER: &str = "import os\n\
def handler(event, context):\n    print('hello from cli', os.environ.get('GREETING', ''), event.decode())\n    return event.upper()\n";

fn write(dir: &std::path::Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

async fn code_files(app: &TestApp, name: &str) -> Vec<String> {
    let r = app.request("GET", &format!("/2023-03-30/functions/{name}/code"), "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let zip = reqwest::get(r.json()["url"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut names: Vec<String> = (0..a.len()).map(|i| a.by_index(i).unwrap().name().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn cli_deploys_invokes_follows_logs_redeploys_and_removes_a_function() {
    let app = spawn_app().await;
    let cli = Cli::of(&app);
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "index.py", GREETER);
    write(src.path(), "debug.log", "not code");
    write(src.path(), ".git/HEAD", "ref: refs/heads/main");
    write(src.path(), ".nubisignore", "*.log\n");
    let dir = src.path().to_str().unwrap();

    // Deploy: created, with the settings given, the ignored files left out.
    let out = cli
        .run(&["deploy", dir, "--name", "clifn", "--runtime", "python3.10", "--handler", "index.handler", "--memory", "128", "--timeout", "10", "--env", "GREETING=hi"])
        .await
        .ok();
    assert!(out.stdout.starts_with("created function clifn\n"), "{out:?}");
    for field in ["runtime       python3.10", "codeSize", "checksum", "lastModified"] {
        assert!(out.stdout.contains(field), "{field}: {out:?}");
    }
    assert!(out.stderr.is_empty(), "no progress bar off a terminal: {out:?}");
    assert_eq!(code_files(&app, "clifn").await, ["index.py"]);

    // Sync invoke: the result on stdout, the function's print on stderr with --tail.
    let out = cli.run(&["invoke", "clifn", "hello", "--tail"]).await.ok();
    assert_eq!(out.stdout, "HELLO");
    assert!(out.stderr.contains("hello from cli hi hello"), "{out:?}");
    assert!(out.stderr.contains("FC Invoke End RequestId: 1-"), "{out:?}");
    // The payload from stdin, and --output json.
    let out = cli.run_stdin(&["invoke", "clifn", "-", "-o", "json"], b"piped").await.ok();
    let doc = out.json();
    assert_eq!(doc["body"], "PIPED");
    let piped_rid = doc["requestId"].as_str().expect("requestId").to_string();

    // Async: the task id, then the task succeeds.
    let out = cli.run(&["invoke", "clifn", "later", "--async"]).await.ok();
    let task_id = out.stdout.trim().to_string();
    assert!(!task_id.is_empty() && !task_id.contains(char::is_whitespace), "{out:?}");
    let (c, id) = (&cli, &task_id);
    let task = eventually(Duration::from_secs(60), "the async task succeeds", || async move {
        let (cli, task_id) = (c, id);
        let t = cli.run(&["tasks", "get", "clifn", task_id, "-o", "json"]).await.ok().json();
        assert!(!matches!(t["status"].as_str(), Some("Failed" | "Expired" | "Stopped" | "Invalid")), "{t}");
        (t["status"] == "Succeeded").then_some(t)
    })
    .await;
    assert_eq!(task["returnPayload"], "LATER");
    let out = cli.run(&["tasks", "get", "clifn", &task_id]).await.ok();
    assert!(out.stdout.contains("status       Succeeded") && out.stdout.contains("result       LATER"), "{out:?}");
    let out = cli.run(&["tasks", "clifn"]).await.ok();
    assert!(out.stdout.starts_with("TASK ID") && out.stdout.contains(&task_id), "{out:?}");
    // Stopping a finished task: the server's refusal, as is.
    let out = cli.run(&["tasks", "stop", "clifn", &task_id]).await;
    out.fails_with("InvalidArgument");
    assert!(out.stderr.contains("has already finished (Succeeded)"), "{out:?}");

    // Logs: the function's lines, by text and by request id (they reach the store shortly
    // after the call returns).
    eventually(Duration::from_secs(30), "the line shows in nubis logs", || async move {
        let cli = c;
        let out = cli.run(&["logs", "clifn", "--query", "hello from cli", "--since", "10m"]).await.ok();
        out.stdout.contains("hello from cli hi hello").then_some(())
    })
    .await;
    let rid = &piped_rid;
    let page = eventually(Duration::from_secs(30), "the piped call's line", || async move {
        let (cli, piped_rid) = (c, rid);
        let out = cli.run(&["logs", "clifn", "--request-id", piped_rid, "-o", "json"]).await.ok();
        let page = out.json();
        page["logs"].as_array().unwrap().iter().any(|l| l["message"].as_str().unwrap_or_default().contains("piped")).then_some(page)
    })
    .await;
    assert!(page["logs"].as_array().unwrap().iter().all(|l| l["requestId"] == piped_rid.as_str()), "{page}");

    // Follow: a line logged after `logs -f` started is printed by it.
    let mut follow = cli.command(&["logs", "clifn", "-f", "--interval", "0.2", "--query", "hello from cli"], Some((&cli.ak, &cli.sk))).spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    cli.run(&["invoke", "clifn", "followed"]).await.ok();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("hello from cli hi followed") {
                return;
            }
        }
        panic!("logs -f ended");
    })
    .await
    .expect("logs -f prints the new line within 30 s");
    follow.start_kill().unwrap();
    let _ = follow.wait().await;

    // Redeploy: an update (settings kept, code changed), as JSON.
    write(src.path(), "index.py", &GREETER.replace("upper", "lower"));
    let before = app.get_function("clifn").await.json();
    let out = cli.run(&["deploy", dir, "--name", "clifn", "-o", "json"]).await.ok();
    let f = out.json();
    assert_eq!(f["functionName"], "clifn");
    assert_eq!(f["runtime"], "python3.10");
    assert_eq!(f["environmentVariables"]["GREETING"], "hi", "an update keeps what it does not set");
    assert_ne!(f["codeChecksum"], before["codeChecksum"]);
    assert_eq!(cli.run(&["invoke", "clifn", "MiXed"]).await.ok().stdout, "mixed");

    // functions ls/get, then rm; the function is gone.
    let list = cli.run(&["functions", "ls", "-o", "json"]).await.ok().json();
    assert!(list["functions"].as_array().unwrap().iter().any(|f| f["functionName"] == "clifn"), "{list}");
    let out = cli.run(&["functions", "ls"]).await.ok();
    assert!(out.stdout.starts_with("NAME ") && out.stdout.contains("clifn  python3.10"), "{out:?}");
    let out = cli.run(&["functions", "get", "clifn"]).await.ok();
    assert!(out.stdout.contains("env           GREETING=hi"), "{out:?}");
    assert_eq!(cli.run(&["functions", "rm", "clifn"]).await.ok().stdout, "deleted function clifn\n");
    cli.run(&["functions", "get", "clifn"]).await.fails_with("FunctionNotFound");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cli_prints_api_errors_function_errors_and_unreachable_endpoints() {
    let app = spawn_app().await;
    let cli = Cli::of(&app);

    // Bad credentials: the server's code, exit 1.
    cli.run_with_key(&["functions", "ls"], &app.ak, "not-the-secret").await.fails_with("SignatureNotMatch");
    cli.run_with_key(&["functions", "ls"], "NBunknownunknownunknown1", &app.sk).await.fails_with("InvalidAccessKeyID");
    // A missing function.
    let out = cli.run(&["invoke", "nosuch", "x"]).await;
    out.fails_with("FunctionNotFound");
    assert!(out.stderr.contains("function 'nosuch' does not exist"), "{out:?}");
    cli.run(&["tasks", "get", "nosuch", "t1"]).await.fails_with("FunctionNotFound");

    // A function that raises: its error on stderr, exit 1.
    let body = python_function("boom", "def handler(event, context):\n    raise ValueError('boom ' + event.decode())\n");
    assert_eq!(app.create_function(body).await.status, 200);
    let out = cli.run(&["invoke", "boom", "now"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("ValueError: boom now"), "{out:?}");
    assert!(out.stderr.contains("error: the function failed: UnhandledInvocationError (RequestId 1-"), "{out:?}");
    let out = cli.run(&["invoke", "boom", "now", "-o", "json"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["errorType"], "UnhandledInvocationError");

    // Nobody listening: the message names the endpoint.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = cli.run(&["functions", "ls", "--endpoint", &format!("127.0.0.1:{port}")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with(&format!("error: cannot reach http://127.0.0.1:{port}: ")), "{out:?}");

    // No key anywhere; and usage mistakes are errors, not panics.
    let out = cli.run_bare(&["functions", "ls"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no access key"), "{out:?}");
    let out = cli.run(&["deploy", "/nonexistent/folder"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: /nonexistent/folder"), "{out:?}");
    let out = cli.run(&["logs", "boom", "--since", "yesterday"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cli_profiles_versions_and_aliases() {
    let app = spawn_app().await;
    let cli = Cli::of(&app);
    assert_eq!(app.create_function(python_function("vf", PY_UPPER)).await.status, 200);

    // `configure` writes a private profile; later commands use it with no key in env.
    let mut c = cli.command(&["configure", "--profile", "test", "--endpoint", &cli.endpoint, "--access-key-id", &app.ak], None);
    c.env("NUBIS_ACCESS_KEY_SECRET", &app.sk);
    let out = Cli::output(c, None).await.ok();
    assert!(out.stderr.contains("saved profile 'test'"), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(cli.config_file()).unwrap().permissions().mode() & 0o777, 0o600);
    let p = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--profile", "test"]);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let c = &cli;
    let run = |args: Vec<String>| async move {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        c.run_bare(&a).await
    };
    let out = run(p(&["versions", "publish", "vf", "--description", "first"])).await.ok();
    assert_eq!(out.stdout, "published version 1 of vf\n");
    let r = app.update_function("vf", serde_json::json!({"timeout": 20})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = run(p(&["versions", "publish", "vf", "-o", "json"])).await.ok().json();
    assert_eq!(v2["versionId"], "2");
    let out = run(p(&["versions", "ls", "vf"])).await.ok();
    assert!(out.stdout.starts_with("VERSION  DESCRIPTION  CREATED\n2 ") && out.stdout.contains("\n1        first"), "{out:?}");
    // An unknown profile, named, is an error.
    let out = cli.run_bare(&["versions", "ls", "vf", "--profile", "nope"]).await;
    assert!(out.code == 1 && out.stderr.contains("profile 'nope'"), "{out:?}");

    // aliases set creates, then updates (dropping the weight), get/ls show it, rm removes it.
    let out = run(p(&["aliases", "set", "vf", "prod", "--version", "1", "--weight", "2=0.25", "--description", "canary"])).await.ok();
    assert!(out.stdout.contains("additional    2=0.25"), "{out:?}");
    let a = run(p(&["aliases", "get", "vf", "prod", "-o", "json"])).await.ok().json();
    assert_eq!((a["versionId"].as_str(), a["additionalVersionWeight"]["2"].as_f64()), (Some("1"), Some(0.25)), "{a}");
    run(p(&["aliases", "set", "vf", "prod", "--version", "2"])).await.ok();
    let a = run(p(&["aliases", "get", "vf", "prod", "-o", "json"])).await.ok().json();
    assert_eq!(a["versionId"], "2");
    assert!(a["additionalVersionWeight"].as_object().is_none_or(|m| m.is_empty()), "{a}");
    let out = run(p(&["aliases", "ls", "vf"])).await.ok();
    assert!(out.stdout.contains("\nprod   2 "), "{out:?}");
    run(p(&["aliases", "rm", "vf", "prod"])).await.ok();
    run(p(&["aliases", "get", "vf", "prod"])).await.fails_with("AliasNotFound");
    run(p(&["versions", "rm", "vf", "1"])).await.ok();
    let list = run(p(&["versions", "ls", "vf", "-o", "json"])).await.ok().json();
    assert_eq!(list["versions"].as_array().unwrap().len(), 1, "{list}");
    app.shutdown().await.unwrap();
}
