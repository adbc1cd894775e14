//! Function CRUD over the signed FC routes: the Function document's shape and types, partial
//! updates, code links, ListFunctions paging, input validation (a refused write leaves no trace:
//! no row, no code blob), body limits, unknown routes and the unsigned documents.

use std::path::Path;

use nubis::codestore::package::{build_zip, checksum};
use serde_json::{Value, json};

use crate::auth::send_chunked;
use crate::helpers::{PY_UPPER, TestApp, b64, python_function, spawn_app, spawn_app_with, zip_of};

/// Every file under the code store (`<data_dir>/code`), sorted: blobs and any temp files.
fn code_files(app: &TestApp) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.data_dir.path().join("code"), &mut out);
    out.sort();
    out
}

fn blob_path(app: &TestApp, sum: &str) -> std::path::PathBuf {
    app.data_dir.path().join("code").join("code").join(format!("{sum}.zip"))
}

/// A unique name per test (each test has its own server, but names stay distinct in logs too).
fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// A Python function whose code differs per name, so a refused create that stored its code
/// anyway would leave a new blob behind.
fn py(name: &str) -> Value {
    python_function(name, &format!("# {name}\n{PY_UPPER}"))
}

fn with(mut body: Value, key: &str, v: Value) -> Value {
    body[key] = v;
    body
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

#[track_caller]
fn assert_iso_utc(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert_eq!(s.len(), 20, "{what} = {s}");
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").unwrap_or_else(|e| panic!("{what} = {s}: {e}"));
}

/// Create must be refused with 400 InvalidArgument whose message names `field`; afterwards the
/// function does not exist and the code store holds exactly what it held before.
async fn assert_refused(app: &TestApp, body: Value, field: &str) -> String {
    let name = body["functionName"].as_str().unwrap_or_default().to_string();
    let before = code_files(app);
    let r = app.create_function(body.clone()).await;
    let msg = r.assert_error(400, "InvalidArgument");
    assert!(msg.contains(field), "message for {name} should name '{field}': {msg}");
    if !name.is_empty() {
        app.get_function(&name).await.assert_error(404, "FunctionNotFound");
    }
    assert_eq!(code_files(app), before, "refused create of '{name}' left files in the code store");
    msg
}

async fn list(app: &TestApp, query: &str) -> Value {
    let r = app.request("GET", "/2023-03-30/functions", query, &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn function_crud_round_trip() {
    let app = spawn_app().await;
    let name = unique("crud");
    let zip = zip_of(&[("index.py", PY_UPPER)]);
    let sum = checksum(&zip);
    let log_config = json!({"project": "p1", "logstore": "l1", "enableRequestMetrics": true});
    let body = json!({
        "functionName": name, "runtime": "python3.10", "handler": "index.handler",
        "memorySize": 256, "timeout": 10, "cpu": 0.25, "diskSize": 512, "instanceConcurrency": 3,
        "description": "round trip", "environmentVariables": {"GREETING": "hi"},
        "logConfig": log_config, "role": "acs:ram::1:role/fc",
        "code": {"zipFile": b64(&zip), "checksum": sum},
    });

    // Create.
    let r = app.create_function(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let created = r.json();
    assert_eq!(created["functionName"], name.as_str());

    // Get: every FC field, with the right JSON types.
    let r = app.get_function(&name).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"));
    let f = r.json();
    assert_eq!(f, created, "GetFunction must return what CreateFunction returned");
    assert_eq!(f["functionName"], name.as_str());
    assert_eq!(f["runtime"], "python3.10");
    assert_eq!(f["handler"], "index.handler");
    assert_eq!(f["description"], "round trip");
    assert_eq!(f["memorySize"].as_u64(), Some(256), "{f}");
    assert_eq!(f["timeout"].as_u64(), Some(10), "{f}");
    assert!(f["cpu"].is_number(), "{f}");
    assert!((f["cpu"].as_f64().unwrap() - 0.25).abs() < 1e-9, "{f}");
    assert_eq!(f["diskSize"].as_u64(), Some(512), "{f}");
    assert_eq!(f["instanceConcurrency"].as_u64(), Some(3), "{f}");
    assert_eq!(f["internetAccess"], true);
    assert_eq!(f["environmentVariables"], json!({"GREETING": "hi"}));
    assert_eq!(
        f["functionArn"].as_str().unwrap(),
        format!("acs:fc:{}:{}:functions/{name}", app.state.cfg.server.region, app.state.cfg.server.account_id)
    );
    assert!(f["functionArn"].as_str().unwrap().starts_with("acs:fc:cn-hangzhou:"), "{f}");
    let function_id = f["functionId"].as_str().expect("functionId").to_string();
    uuid::Uuid::parse_str(&function_id).expect("functionId is a uuid");
    assert_eq!(f["codeChecksum"].as_str(), Some(sum.as_str()));
    assert_eq!(f["codeSize"].as_u64(), Some(zip.len() as u64), "codeSize must be a number: {f}");
    assert_eq!(f["state"], "Active");
    assert_eq!(f["lastUpdateStatus"], "Successful");
    assert_iso_utc(&f["createdTime"], "createdTime");
    assert_iso_utc(&f["lastModifiedTime"], "lastModifiedTime");
    assert_eq!(f["logConfig"], log_config, "unknown FC fields are echoed");
    assert_eq!(f["role"], "acs:ram::1:role/fc");
    assert!(f.get("code").is_none(), "the code itself is not part of the Function document: {f}");
    assert_eq!(code_files(&app), vec![blob_path(&app, &sum).display().to_string()]);

    // Partial update: timeout and env only.
    let r = app.update_function(&name, json!({"timeout": 60, "environmentVariables": {"A": "1"}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = r.json();
    assert_eq!(u["timeout"].as_u64(), Some(60));
    assert_eq!(u["environmentVariables"], json!({"A": "1"}));
    assert_eq!(u["memorySize"].as_u64(), Some(256), "absent fields keep their value: {u}");
    assert_eq!(u["handler"], "index.handler");
    assert_eq!(u["description"], "round trip");
    assert_eq!(u["instanceConcurrency"].as_u64(), Some(3));
    assert_eq!(u["logConfig"], log_config);
    assert_eq!(u["functionId"], function_id.as_str());
    assert_eq!(u["createdTime"], f["createdTime"]);
    assert_eq!(u["codeChecksum"].as_str(), Some(sum.as_str()), "no code in the update: code kept");
    assert_iso_utc(&u["lastModifiedTime"], "lastModifiedTime");
    assert_eq!(app.get_function(&name).await.json(), u, "the update is stored");

    // Update with new code: new checksum and size, the old blob is collected.
    let zip2 = zip_of(&[("index.py", "def handler(event, context):\n    return b'v2'\n")]);
    let sum2 = checksum(&zip2);
    assert_ne!(sum, sum2);
    let r = app.update_function(&name, json!({"code": {"zipFile": b64(&zip2)}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u2 = r.json();
    assert_eq!(u2["codeChecksum"].as_str(), Some(sum2.as_str()));
    assert_eq!(u2["codeSize"].as_u64(), Some(zip2.len() as u64));
    assert_eq!(u2["timeout"].as_u64(), Some(60), "a code update keeps the config");
    assert_eq!(code_files(&app), vec![blob_path(&app, &sum2).display().to_string()], "old blob is collected");

    // GetFunctionCode: a link any HTTP client can fetch.
    let r = app.request("GET", &format!("/2023-03-30/functions/{name}/code"), "", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let code = r.json();
    assert_eq!(code["checksum"].as_str(), Some(sum2.as_str()));
    let url = code["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&format!("http://{}/", app.addr)), "{url}");
    let dl = reqwest::get(&url).await.unwrap();
    assert_eq!(dl.status().as_u16(), 200);
    assert_eq!(dl.headers().get("content-type").unwrap(), "application/zip");
    assert_eq!(dl.bytes().await.unwrap().as_ref(), zip2.as_slice(), "downloaded bytes are the zip");

    // A tampered signature is refused.
    let (head, sig) = url.rsplit_once("signature=").expect("signature in url");
    let flipped: String =
        sig.chars().enumerate().map(|(i, c)| if i == 0 { if c == '0' { '1' } else { '0' } } else { c }).collect();
    let bad = reqwest::get(format!("{head}signature={flipped}")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["Code"], "AccessDenied", "{bad}");
    // So is a link re-pointed at another checksum (the old code) with the same signature.
    let repointed = url.replace(&format!("checksum={sum2}"), &format!("checksum={sum}"));
    assert_ne!(repointed, url);
    assert_eq!(reqwest::get(&repointed).await.unwrap().status().as_u16(), 403);

    // Delete, then it is gone.
    let r = app.delete_function(&name).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    let msg = app.get_function(&name).await.assert_error(404, "FunctionNotFound");
    assert!(msg.contains(&name), "{msg}");
    app.delete_function(&name).await.assert_error(404, "FunctionNotFound");
    assert!(code_files(&app).is_empty(), "delete collects the code: {:?}", code_files(&app));
    // The old link no longer serves the code.
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 404);
}

/// Identical uploads share one blob; it stays while any function uses it.
#[tokio::test]
async fn shared_code_blob_outlives_its_first_user() {
    let app = spawn_app().await;
    let zip = zip_of(&[("index.py", PY_UPPER)]);
    let sum = checksum(&zip);
    let (a, b) = (unique("share_a"), unique("share_b"));
    for n in [&a, &b] {
        let r = app.create_function(with(py(n), "code", json!({"zipFile": b64(&zip)}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["codeChecksum"].as_str(), Some(sum.as_str()));
    }
    let one_blob = vec![blob_path(&app, &sum).display().to_string()];
    assert_eq!(code_files(&app), one_blob);

    // A moves to other code: B still needs the shared blob.
    let r = app.update_function(&a, json!({"code": {"zipFile": b64(&zip_of(&[("index.py", "# a\n")]))}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(code_files(&app).len(), 2);
    assert_eq!(app.delete_function(&a).await.status, 204);
    assert_eq!(code_files(&app), one_blob, "A's own blob is gone, the shared one stays");

    let r = app.request("GET", &format!("/2023-03-30/functions/{b}/code"), "", &[], vec![]).await;
    let url = r.json()["url"].as_str().expect("url").to_string();
    let dl = reqwest::get(&url).await.unwrap();
    assert_eq!(dl.status().as_u16(), 200);
    assert_eq!(dl.bytes().await.unwrap().as_ref(), zip.as_slice());

    assert_eq!(app.delete_function(&b).await.status, 204);
    assert!(code_files(&app).is_empty(), "{:?}", code_files(&app));
}

#[tokio::test]
async fn list_functions_pages_by_prefix() {
    let app = spawn_app().await;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let prefix = format!("pg_{id}_");
    // Created out of order; the answer must be in name order.
    let mut names: Vec<String> = ["d", "a", "e", "c", "b"].iter().map(|s| format!("{prefix}{s}")).collect();
    // Not matching the prefix, but would under a SQL LIKE ('_' is a wildcard there).
    let other = format!("pgX{id}_c");
    for n in names.iter().chain([&other]) {
        let r = app.create_function(py(n)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    names.sort();

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = format!("prefix={prefix}&limit=2");
        if let Some(t) = &token {
            q.push_str(&format!("&nextToken={t}"));
        }
        let page = list(&app, &q).await;
        let fns = page["functions"].as_array().expect("functions array");
        for f in fns {
            assert!(f["memorySize"].is_number() && f["functionArn"].is_string(), "full Function documents: {f}");
            seen.push(f["functionName"].as_str().unwrap().to_string());
        }
        pages.push(fns.len());
        match page.get("nextToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(seen, names);
    assert_eq!(pages, vec![2, 2, 1]);

    // Without a prefix: all six, in order; the default limit covers them.
    let all = list(&app, "").await;
    let all: Vec<&str> = all["functions"].as_array().unwrap().iter().map(|f| f["functionName"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).chain([other.as_str()]).collect();
    expected.sort();
    assert_eq!(all, expected);

    // Exactly `limit` left: no token for an empty page.
    let exact = list(&app, &format!("prefix={prefix}&limit=5")).await;
    assert_eq!(exact["functions"].as_array().unwrap().len(), 5);
    assert!(exact.get("nextToken").is_none() || exact["nextToken"].is_null(), "{exact}");
}

#[tokio::test]
async fn list_functions_rejects_bad_limit_and_token() {
    let app = spawn_app().await;
    let name = unique("lim");
    assert_eq!(app.create_function(py(&name)).await.status, 200);
    for q in ["limit=0", "limit=101", "limit=-1", "limit=many"] {
        let r = app.request("GET", "/2023-03-30/functions", q, &[], vec![]).await;
        let msg = r.assert_error(400, "InvalidArgument");
        assert!(msg.contains("limit"), "{q}: {msg}");
    }
    for q in ["nextToken=not+a+token%21", "nextToken=%25%25%25"] {
        let r = app.request("GET", "/2023-03-30/functions", q, &[], vec![]).await;
        let msg = r.assert_error(400, "InvalidArgument");
        assert!(msg.contains("nextToken"), "{q}: {msg}");
    }
    // Boundaries are accepted.
    for q in ["limit=1", "limit=100"] {
        let page = list(&app, q).await;
        assert_eq!(page["functions"][0]["functionName"], name.as_str(), "{q}");
    }
}

#[tokio::test]
async fn create_refuses_bad_config_fields() {
    let app = spawn_app().await;
    // A stored function, so the code store is not empty and "no trace" compares real contents.
    let keep = unique("keep");
    assert_eq!(app.create_function(py(&keep)).await.status, 200);
    assert_eq!(code_files(&app).len(), 1);

    let n = |s: &str| unique(s);
    assert_refused(&app, py("9lives"), "functionName").await;
    assert_refused(&app, py("-dash"), "functionName").await;
    assert_refused(&app, py(&"a".repeat(129)), "functionName").await;
    let msg = assert_refused(&app, with(py(&n("rt")), "runtime", json!("java8")), "runtime").await;
    assert!(msg.contains("java8") && msg.contains("python3.10") && msg.contains("custom-container"), "{msg}");
    assert_refused(&app, without(py(&n("rt")), "runtime"), "runtime").await;
    assert_refused(&app, without(py(&n("h")), "handler"), "handler").await;
    assert_refused(&app, with(py(&n("h")), "handler", json!("index")), "handler").await;
    assert_refused(&app, with(py(&n("h")), "handler", json!("")), "handler").await;
    assert_refused(&app, with(py(&n("h")), "handler", json!("../x.handler")), "handler").await;
    for m in [100, 200, 65536, 0, -128] {
        assert_refused(&app, with(py(&n("mem")), "memorySize", json!(m)), "memorySize").await;
    }
    for c in [0.07, 0.0, 16.05] {
        assert_refused(&app, with(py(&n("cpu")), "cpu", json!(c)), "cpu").await;
    }
    assert_refused(&app, with(py(&n("disk")), "diskSize", json!(1024)), "diskSize").await;
    for t in [0, 86401] {
        assert_refused(&app, with(py(&n("to")), "timeout", json!(t)), "timeout").await;
    }
    for c in [0, 201] {
        assert_refused(&app, with(py(&n("ic")), "instanceConcurrency", json!(c)), "instanceConcurrency").await;
    }
    for env in [json!({"1BAD": "x"}), json!({"BAD-KEY": "x"}), json!({"": "x"}), json!({"BIG": "x".repeat(5000)})] {
        assert_refused(&app, with(py(&n("env")), "environmentVariables", env), "environmentVariables").await;
    }
    assert_refused(&app, with(py(&n("desc")), "description", json!("d".repeat(257))), "description").await;
    // custom-container needs its image config; nothing else may carry one.
    let cc = json!({"functionName": n("cc"), "runtime": "custom-container", "handler": "x"});
    assert_refused(&app, cc, "customContainerConfig").await;
    let cc_py = with(py(&n("ccpy")), "customContainerConfig", json!({"image": "alpine:3"}));
    assert_refused(&app, cc_py, "customContainerConfig").await;

    // Boundaries just inside are accepted (the checks are not off by one).
    let edge = json!({"memorySize": 32768, "timeout": 86400, "cpu": 16, "diskSize": 10240,
        "instanceConcurrency": 200, "description": "d".repeat(256)});
    let mut body = py(&n("edge"));
    for (k, v) in edge.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.create_function(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["memorySize"].as_u64(), Some(32768));
    let long = "a".repeat(128);
    assert_eq!(app.create_function(py(&long)).await.status, 200, "a 128-character name is valid");

    let all = list(&app, "limit=100").await;
    assert_eq!(all["functions"].as_array().unwrap().len(), 3, "only the accepted functions exist: {all}");
}

/// A value of the wrong JSON type must be refused with a message naming the field (not a
/// generic body error), like any other bad value.
#[tokio::test]
async fn wrong_json_type_names_the_field() {
    let app = spawn_app().await;
    assert_refused(&app, with(py(&unique("big")), "memorySize", json!("big")), "memorySize").await;
    assert_refused(&app, with(py(&unique("to")), "timeout", json!("10")), "timeout").await;
    assert_refused(&app, with(py(&unique("env")), "environmentVariables", json!({"A": 1})), "environmentVariables").await;
    assert!(code_files(&app).is_empty());
}

#[tokio::test]
async fn create_refuses_bad_code() {
    let app = spawn_app().await;
    let n = |s: &str| unique(s);
    let code = |name: &str, code: Value| with(py(name), "code", code);

    let msg = assert_refused(&app, without(py(&n("nocode")), "code"), "code").await;
    assert!(msg.contains("required"), "{msg}");
    assert_refused(&app, code(&n("nozip"), json!({})), "code.zipFile").await;
    assert_refused(&app, code(&n("b64"), json!({"zipFile": "!!! not base64 !!!"})), "code.zipFile").await;
    let msg = assert_refused(&app, code(&n("notzip"), json!({"zipFile": b64(b"hello, not a zip")})), "code").await;
    assert!(msg.contains("zip"), "{msg}");
    let evil = zip_of(&[("index.py", PY_UPPER), ("../evil.py", "x = 1\n")]);
    let msg = assert_refused(&app, code(&n("evil"), json!({"zipFile": b64(&evil)})), "code").await;
    assert!(msg.contains("../evil.py"), "{msg}");
    let zip = zip_of(&[("index.py", PY_UPPER)]);
    let wrong = (checksum(&zip).parse::<u64>().unwrap() ^ 1).to_string();
    let msg = assert_refused(&app, code(&n("sum"), json!({"zipFile": b64(&zip), "checksum": wrong})), "checksum").await;
    assert!(msg.contains(&checksum(&zip)), "the message gives the actual checksum: {msg}");
    let oss = json!({"ossBucketName": "bucket", "ossObjectName": "code.zip"});
    assert_refused(&app, code(&n("oss"), oss), "code").await;
    let oss_and_zip = json!({"ossBucketName": "bucket", "zipFile": b64(&zip)});
    assert_refused(&app, code(&n("oss2"), oss_and_zip), "code").await;

    assert!(code_files(&app).is_empty(), "{:?}", code_files(&app));
    assert_eq!(list(&app, "").await["functions"], json!([]));
}

/// Deterministic incompressible bytes (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn create_refuses_zip_bombs_and_oversized_zips() {
    let app = spawn_app_with(|c| {
        c.limits.max_code_unzipped_bytes = 1 << 20;
        c.limits.max_code_zip_bytes = 64 << 10;
    })
    .await;
    let body = |name: &str, zip: &[u8]| with(py(name), "code", json!({"zipFile": b64(zip)}));

    // 4 MB of zeros deflate to a few KB: small on the wire, too big unpacked.
    let zeros = vec![0u8; 4 << 20];
    let bomb = build_zip(&[("index.py", PY_UPPER.as_bytes(), 0o644), ("zeros", &zeros, 0o644)]);
    assert!(bomb.len() < 64 << 10, "the bomb is within the zip limit: {}", bomb.len());
    let msg = assert_refused(&app, body(&unique("bomb"), &bomb), "code").await;
    assert!(msg.contains("unzips"), "{msg}");

    // Many entries that together exceed the unzipped limit, none alone.
    let half = vec![0u8; 600 << 10];
    let split = build_zip(&[("a", &half, 0o644), ("b", &half, 0o644)]);
    assert_refused(&app, body(&unique("split"), &split), "code").await;

    // A zip larger than max_code_zip_bytes (but a request body well under the body limit).
    let big = build_zip(&[("index.py", PY_UPPER.as_bytes(), 0o644), ("noise", &noise(100 << 10), 0o644)]);
    assert!(big.len() > 64 << 10);
    let msg = assert_refused(&app, body(&unique("bigzip"), &big), "code").await;
    assert!(msg.contains("larger than the limit"), "{msg}");

    // Under both limits: accepted.
    let fine = build_zip(&[("index.py", PY_UPPER.as_bytes(), 0o644), ("zeros", &zeros[..512 << 10], 0o644)]);
    let ok = unique("fine");
    let r = app.create_function(body(&ok, &fine)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(code_files(&app), vec![blob_path(&app, &checksum(&fine)).display().to_string()]);

    // UpdateFunction applies the same checks and keeps the old code.
    let r = app.update_function(&ok, json!({"code": {"zipFile": b64(&bomb)}})).await;
    r.assert_error(400, "InvalidArgument");
    assert_eq!(app.get_function(&ok).await.json()["codeChecksum"].as_str(), Some(checksum(&fine).as_str()));
    assert_eq!(code_files(&app), vec![blob_path(&app, &checksum(&fine)).display().to_string()]);
}

#[tokio::test]
async fn create_refuses_malformed_bodies() {
    let app = spawn_app().await;
    let post = |body: &'static [u8]| {
        app.request("POST", "/2023-03-30/functions", "", &[("content-type", "application/json")], body.to_vec())
    };
    for body in [&b"not json"[..], b"", b"[1, 2, 3]", b"{\"functionName\": \"x\"", b"\"str\"", b"null"] {
        let r = post(body).await;
        let msg = r.assert_error(400, "InvalidArgument");
        assert!(msg.contains("body"), "{}: {msg}", String::from_utf8_lossy(body));
    }
    // Missing or mistyped functionName is named.
    let r = app.create_function(without(py("x"), "functionName")).await;
    let msg = r.assert_error(400, "InvalidArgument");
    assert!(msg.contains("functionName"), "{msg}");
    let r = app.create_function(with(py("x"), "functionName", json!(5))).await;
    r.assert_error(400, "InvalidArgument");
    app.get_function("x").await.assert_error(404, "FunctionNotFound");
    assert!(code_files(&app).is_empty());
    assert_eq!(list(&app, "").await["functions"], json!([]));
}

#[tokio::test]
async fn duplicate_create_conflicts_and_keeps_original() {
    let app = spawn_app().await;
    let name = unique("dup");
    let r = app.create_function(with(py(&name), "memorySize", json!(256))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let original = app.get_function(&name).await.json();
    let files = code_files(&app);
    assert_eq!(files.len(), 1);

    let other_code = zip_of(&[("index.py", "def handler(e, c):\n    return b'other'\n")]);
    let second = json!({"functionName": name, "runtime": "nodejs20", "handler": "index.other",
        "memorySize": 512, "code": {"zipFile": b64(&other_code)}});
    let msg = app.create_function(second).await.assert_error(409, "FunctionAlreadyExists");
    assert!(msg.contains(&name), "{msg}");
    assert_eq!(app.get_function(&name).await.json(), original, "the original is unchanged");
    assert_eq!(code_files(&app), files, "the second code was not stored");
}

#[tokio::test]
async fn update_refusals_leave_function_unchanged() {
    let app = spawn_app().await;
    let missing = unique("missing");
    let msg = app.update_function(&missing, json!({"timeout": 5})).await.assert_error(404, "FunctionNotFound");
    assert!(msg.contains(&missing), "{msg}");
    app.get_function(&missing).await.assert_error(404, "FunctionNotFound");

    let name = unique("upd");
    assert_eq!(app.create_function(with(py(&name), "memorySize", json!(256))).await.status, 200);
    let before = app.get_function(&name).await.json();
    let files = code_files(&app);

    let new_zip = zip_of(&[("index.py", "def handler(e, c):\n    return b'new'\n")]);
    let refusals = [
        (json!({"memorySize": 200, "timeout": 20}), "memorySize"),
        (json!({"memorySize": 100}), "memorySize"),
        // Valid code with an invalid config: neither is applied, and the code is not stored.
        (json!({"timeout": 0, "code": {"zipFile": b64(&new_zip)}}), "timeout"),
        (json!({"runtime": "java8"}), "runtime"),
        (json!({"customContainerConfig": {"image": "alpine"}}), "customContainerConfig"),
        (json!({"functionName": "renamed"}), "functionName"),
        (json!({"code": {"zipFile": "@@@"}}), "code.zipFile"),
    ];
    for (body, field) in refusals {
        let r = app.update_function(&name, body.clone()).await;
        let msg = r.assert_error(400, "InvalidArgument");
        assert!(msg.contains(field), "{body}: {msg}");
        assert_eq!(app.get_function(&name).await.json(), before, "{body} changed the function");
        assert_eq!(code_files(&app), files, "{body} left a code blob");
    }
    app.get_function("renamed").await.assert_error(404, "FunctionNotFound");
    let r = app.request("PUT", &format!("/2023-03-30/functions/{name}"), "", &[], b"[]".to_vec()).await;
    r.assert_error(400, "InvalidArgument");

    // Repeating the function's own name is not a rename.
    let r = app.update_function(&name, json!({"functionName": name, "timeout": 20})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["timeout"].as_u64(), Some(20));
    assert_eq!(r.json()["memorySize"].as_u64(), Some(256));
}

#[tokio::test]
async fn oversized_bodies_are_entity_too_large() {
    let app = spawn_app_with(|c| {
        c.limits.max_code_zip_bytes = 3000;
        c.limits.max_sync_payload_bytes = 1024;
    })
    .await;
    // The management body limit: base64 of the largest zip plus 1 MiB of JSON.
    let body_limit = 3000 / 3 * 4 + (1 << 20);
    let name = unique("huge");
    let mut body = py(&name);
    body["description"] = json!("d".repeat(body_limit));
    let bytes = body.to_string().into_bytes();
    assert!(bytes.len() > body_limit);
    let r = app.request("POST", "/2023-03-30/functions", "", &[("content-type", "application/json")], bytes).await;
    let msg = r.assert_error(400, "EntityTooLarge");
    assert!(msg.contains(&body_limit.to_string()), "{msg}");
    app.get_function(&name).await.assert_error(404, "FunctionNotFound");
    assert!(code_files(&app).is_empty());

    // Invocation payloads have their own limit, checked before the function is looked up.
    let ghost = unique("ghost");
    let msg = app.invoke(&ghost, &vec![b'x'; 1025], &[]).await.assert_error(400, "EntityTooLarge");
    assert!(msg.contains("1024"), "{msg}");
    // At the limit the payload passes and the missing function is what is reported.
    app.invoke(&ghost, &vec![b'x'; 1024], &[]).await.assert_error(404, "FunctionNotFound");
    // A chunked payload (no Content-Length, as the Node SDK sends) is held to the same limit.
    let payload = vec![b'y'; 4000];
    let mut h = axum::http::HeaderMap::new();
    h.insert("host", app.addr.to_string().parse().unwrap());
    h.insert("content-type", "application/octet-stream".parse().unwrap());
    let path = format!("/2023-03-30/functions/{ghost}/invocations");
    nubis::api::auth::sign_request(&app.ak, &app.sk, &axum::http::Method::POST, &path, "", &mut h, &payload, chrono::Utc::now());
    let (status, j) = send_chunked(&app, &axum::http::Method::POST, &path, &h, &payload).await;
    assert_eq!((status, j["Code"].as_str()), (400, Some("EntityTooLarge")), "{j}");
    // The invocation limit does not apply to management calls.
    let body = with(py(&unique("pad")), "environmentVariables", json!({"PAD": "x".repeat(2000)}));
    assert!(body.to_string().len() > 2000);
    let r = app.create_function(body).await;
    assert_eq!(r.status, 200, "a 2 KB create body is fine: {}", r.text());
}

#[tokio::test]
async fn unknown_routes_are_path_not_supported() {
    let app = spawn_app().await;
    for (method, path) in
        [("GET", "/2023-03-30/layers"), ("GET", "/nope"), ("PATCH", "/2023-03-30/functions"), ("POST", "/2023-03-30/functions/x/sessions")]
    {
        let r = app.request(method, path, "", &[], vec![]).await;
        let msg = r.assert_error(400, "PathNotSupported");
        assert!(msg.contains(method) && msg.contains(path), "{method} {path}: {msg}");
    }
    // Unsigned requests to unknown paths get the same answer.
    let r = app.send(axum::http::Method::GET, "/nope", "", Default::default(), vec![]).await;
    r.assert_error(400, "PathNotSupported");
    let r = app.send(axum::http::Method::DELETE, "/2023-03-30/functions", "", Default::default(), vec![]).await;
    r.assert_error(400, "PathNotSupported");
}

#[tokio::test]
async fn unknown_qualifier_is_version_or_alias_not_found() {
    let app = spawn_app().await;
    let name = unique("qual");
    assert_eq!(app.create_function(py(&name)).await.status, 200);
    let path = format!("/2023-03-30/functions/{name}");
    let msg = app.request("GET", &path, "qualifier=3", &[], vec![]).await.assert_error(404, "VersionNotFound");
    assert!(msg.contains('3') && msg.contains(&name), "{msg}");
    app.request("GET", &format!("{path}/code"), "qualifier=prod", &[], vec![]).await.assert_error(404, "AliasNotFound");
    // Not a name anything could have: answered like a missing version.
    app.request("GET", &path, "qualifier=007", &[], vec![]).await.assert_error(404, "VersionNotFound");
    let r = app.request("GET", &path, "qualifier=LATEST", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["functionName"], name.as_str());
    // A missing function is FunctionNotFound whatever the qualifier.
    app.request("GET", "/2023-03-30/functions/ghost", "qualifier=3", &[], vec![]).await.assert_error(404, "FunctionNotFound");
}

#[tokio::test]
async fn openapi_and_health_are_served_unsigned() {
    let app = spawn_app().await;
    let r = app.send(axum::http::Method::GET, "/openapi.json", "", Default::default(), vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"));
    let doc = r.json();
    let paths = doc["paths"].as_object().expect("paths object");
    for p in [
        "/2023-03-30/functions",
        "/2023-03-30/functions/{functionName}",
        "/2023-03-30/functions/{functionName}/code",
        "/2023-03-30/functions/{functionName}/invocations",
        "/2023-03-30/functions/{functionName}/versions",
        "/2023-03-30/functions/{functionName}/versions/{versionId}",
        "/2023-03-30/functions/{functionName}/aliases",
        "/2023-03-30/functions/{functionName}/aliases/{aliasName}",
        "/2023-03-30/functions/{functionName}/provision-config",
        "/2023-03-30/provision-configs",
        "/2023-03-30/functions/{functionName}/concurrency",
        "/2023-03-30/concurrency-configs",
        "/2023-03-30/functions/{functionName}/invoke/enable",
        "/2023-03-30/functions/{functionName}/invoke/disable",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert!(paths["/2023-03-30/functions"].get("post").is_some() && paths["/2023-03-30/functions"].get("get").is_some());
    let one = &paths["/2023-03-30/functions/{functionName}"];
    assert!(one.get("get").is_some() && one.get("put").is_some() && one.get("delete").is_some(), "{one}");
    let provision = &paths["/2023-03-30/functions/{functionName}/provision-config"];
    assert!(provision.get("get").is_some() && provision.get("put").is_some() && provision.get("delete").is_some(), "{provision}");
    for schema in ["ProvisionConfigOutput", "ConcurrencyConfig", "InvocationRestriction"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "schema {schema} missing");
    }

    let r = app.send(axum::http::Method::GET, "/health", "", Default::default(), vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert!(r.header("x-fc-request-id").is_some_and(|id| id.starts_with("1-")));
}
