//! ACS3-HMAC-SHA256 verification as a client sees it: each way a request can fail to
//! authenticate gets its FC error code, tampering after signing is caught, harmless additions
//! are not, and a refused request changes nothing. Secrets never leave the server.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use chrono::{TimeDelta, Utc};
use nubis::api::auth::sign_request;
use serde_json::{Value, json};

use crate::helpers::{PY_UPPER, Resp, TestApp, python_function, spawn_app};

const LIST: &str = "/2023-03-30/functions";

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Headers as the helper starts them (host plus the given ones), signed at `now`.
#[allow(clippy::too_many_arguments)]
fn signed(
    app: &TestApp,
    sk: &str,
    method: &Method,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    now: chrono::DateTime<Utc>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(&app.addr.to_string()).unwrap());
    for (k, v) in extra {
        h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    sign_request(&app.ak, sk, method, path, query, &mut h, body, now);
    h
}

/// Send a request with `Transfer-Encoding: chunked` (as the Node SDK sends POST/PUT bodies),
/// over a raw connection since the test client always sends a length. Returns status and body.
pub(crate) async fn send_chunked(app: &TestApp, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    req.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    for chunk in body.chunks(1000) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(&bytes).await.unwrap();
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a complete response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = rest.to_string();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        body = out;
    }
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

fn code_store_files(app: &TestApp) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    count(&app.data_dir.path().join("code"))
}

#[track_caller]
fn assert_no_secret(r: &Resp, sk: &str) {
    assert!(!sk.is_empty());
    assert!(!r.text().contains(sk), "a response body carries the secret: {}", r.text());
    for (k, v) in &r.headers {
        assert!(!String::from_utf8_lossy(v.as_bytes()).contains(sk), "header {k} carries the secret");
    }
}

async fn list_names(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.request("GET", LIST, query, &[], vec![]).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    r.json()["functions"].as_array().unwrap().iter().map(|f| f["functionName"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn missing_authorization_is_missing_required_header() {
    let app = spawn_app().await;
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(&app.addr.to_string()).unwrap());
    let r = app.send(Method::GET, LIST, "", h, vec![]).await;
    let msg = r.assert_error(400, "MissingRequiredHeader");
    assert!(msg.contains("Authorization"), "{msg}");

    // Signed, but the Authorization header stripped: the same.
    let mut h = signed(&app, &app.sk, &Method::GET, LIST, "", &[], b"", Utc::now());
    h.remove("authorization");
    app.send(Method::GET, LIST, "", h, vec![]).await.assert_error(400, "MissingRequiredHeader");

    // Authorization present but x-acs-date missing.
    let mut h = signed(&app, &app.sk, &Method::GET, LIST, "", &[], b"", Utc::now());
    h.remove("x-acs-date");
    let msg = app.send(Method::GET, LIST, "", h, vec![]).await.assert_error(400, "MissingRequiredHeader");
    assert!(msg.contains("x-acs-date"), "{msg}");
}

#[tokio::test]
async fn unknown_access_key_is_invalid_access_key_id() {
    let app = spawn_app().await;
    let r = app.request_as("LTAInosuchkey", &app.sk, "GET", LIST, "", &[], vec![], |_| {}).await;
    let msg = r.assert_error(403, "InvalidAccessKeyID");
    assert!(msg.contains("LTAInosuchkey"), "{msg}");
    assert_no_secret(&r, &app.sk);
}

#[tokio::test]
async fn wrong_secret_is_signature_not_match() {
    let app = spawn_app().await;
    let wrong = format!("{}x", app.sk);
    let r = app.request_as(&app.ak, &wrong, "GET", LIST, "", &[], vec![], |_| {}).await;
    let msg = r.assert_error(403, "SignatureNotMatch");
    assert!(msg.contains("signature"), "{msg}");
    assert_no_secret(&r, &app.sk);
    assert_no_secret(&r, &wrong);
    // Sanity: the right secret on the same request passes.
    assert_eq!(app.request("GET", LIST, "", &[], vec![]).await.status, 200);
}

#[tokio::test]
async fn malformed_authorization_is_refused() {
    let app = spawn_app().await;
    type Rewrite = fn(&str) -> String;
    let cases: [(&str, Rewrite); 5] = [
        ("no algorithm", |v| v.replacen("ACS3-HMAC-SHA256 ", "", 1)),
        ("other algorithm", |v| v.replacen("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", 1)),
        ("upper-case hex", |v| {
            let (head, sig) = v.rsplit_once("Signature=").unwrap();
            format!("{head}Signature={}", sig.to_uppercase())
        }),
        ("truncated signature", |v| v[..v.len() - 2].to_string()),
        ("host not signed", |v| v.replace("host;", "")),
    ];
    for (what, f) in cases {
        let r = app
            .request_as(&app.ak, &app.sk, "GET", LIST, "", &[], vec![], |h| {
                let v = h.get("authorization").unwrap().to_str().unwrap().to_string();
                h.insert("authorization", HeaderValue::from_str(&f(&v)).unwrap());
            })
            .await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        r.assert_error(403, "SignatureNotMatch");
    }
}

#[tokio::test]
async fn body_changed_after_signing_is_refused() {
    let app = spawn_app().await;
    let name = unique("body");
    let signed_body = python_function(&name, PY_UPPER).to_string().into_bytes();
    let mut sent = python_function(&name, PY_UPPER);
    sent["memorySize"] = json!(4096);
    let sent = sent.to_string().into_bytes();
    let ct = [("content-type", "application/json")];

    // The body alone changed: its hash no longer matches x-acs-content-sha256.
    let h = signed(&app, &app.sk, &Method::POST, LIST, "", &ct, &signed_body, Utc::now());
    let r = app.send(Method::POST, LIST, "", h, sent.clone()).await;
    r.assert_error(403, "SignatureNotMatch");

    // The body and its hash header changed together: the signature no longer matches.
    let mut h = signed(&app, &app.sk, &Method::POST, LIST, "", &ct, &signed_body, Utc::now());
    h.insert("x-acs-content-sha256", HeaderValue::from_str(&nubis::api::auth::sha256_hex(&sent)).unwrap());
    let r = app.send(Method::POST, LIST, "", h, sent.clone()).await;
    r.assert_error(403, "SignatureNotMatch");

    // Neither attempt created the function; the untampered request does.
    app.get_function(&name).await.assert_error(404, "FunctionNotFound");
    let h = signed(&app, &app.sk, &Method::POST, LIST, "", &ct, &signed_body, Utc::now());
    let r = app.send(Method::POST, LIST, "", h, signed_body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["memorySize"].as_u64(), Some(128));
}

#[tokio::test]
async fn signed_header_changed_after_signing_is_refused() {
    let app = spawn_app().await;
    let headers = [("x-acs-action", "ListFunctions")];
    let ok = app.request_as(&app.ak, &app.sk, "GET", LIST, "", &headers, vec![], |_| {}).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    type Tamper = fn(&mut HeaderMap);
    let tampers: [(&str, Tamper); 4] = [
        ("x-acs-action", |h| {
            h.insert("x-acs-action", HeaderValue::from_static("DeleteFunction"));
        }),
        ("x-acs-signature-nonce", |h| {
            h.insert("x-acs-signature-nonce", HeaderValue::from_static("00000000000000000000000000000000"));
        }),
        ("x-acs-date one second on", |h| {
            let d = chrono::NaiveDateTime::parse_from_str(h["x-acs-date"].to_str().unwrap(), "%Y-%m-%dT%H:%M:%SZ").unwrap();
            let d = (d + TimeDelta::seconds(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            h.insert("x-acs-date", HeaderValue::from_str(&d).unwrap());
        }),
        ("signed header removed", |h| {
            h.remove("x-acs-action");
        }),
    ];
    for (what, tamper) in tampers {
        let r = app.request_as(&app.ak, &app.sk, "GET", LIST, "", &headers, vec![], tamper).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        r.assert_error(403, "SignatureNotMatch");
    }

    // The method and the path are signed too.
    let h = signed(&app, &app.sk, &Method::GET, LIST, "", &[], b"", Utc::now());
    app.send(Method::GET, "/2023-03-30/functions/x", "", h, vec![]).await.assert_error(403, "SignatureNotMatch");
    let h = signed(&app, &app.sk, &Method::GET, LIST, "prefix=a", &[], b"", Utc::now());
    app.send(Method::GET, LIST, "prefix=b", h, vec![]).await.assert_error(403, "SignatureNotMatch");
    let name = unique("m");
    assert_eq!(app.create_function(python_function(&name, PY_UPPER)).await.status, 200);
    let path = format!("/2023-03-30/functions/{name}");
    let h = signed(&app, &app.sk, &Method::GET, &path, "", &[], b"", Utc::now());
    app.send(Method::DELETE, &path, "", h, vec![]).await.assert_error(403, "SignatureNotMatch");
    assert_eq!(app.get_function(&name).await.status, 200, "the refused DELETE deleted nothing");
}

#[tokio::test]
async fn stale_or_future_date_is_expired() {
    let app = spawn_app().await;
    for offset in [TimeDelta::minutes(-20), TimeDelta::minutes(20), TimeDelta::days(-1)] {
        let h = signed(&app, &app.sk, &Method::GET, LIST, "", &[], b"", Utc::now() + offset);
        let r = app.send(Method::GET, LIST, "", h, vec![]).await;
        let msg = r.assert_error(403, "InvalidTimeStamp.Expired");
        assert!(msg.contains("x-acs-date"), "{msg}");
    }
    // Within the 15-minute window: accepted.
    for offset in [TimeDelta::minutes(-10), TimeDelta::minutes(10)] {
        let h = signed(&app, &app.sk, &Method::GET, LIST, "", &[], b"", Utc::now() + offset);
        let r = app.send(Method::GET, LIST, "", h, vec![]).await;
        assert_eq!(r.status, 200, "{offset}: {}", r.text());
    }
    // A date in another shape: a format error, 400.
    let r = app
        .request_as(&app.ak, &app.sk, "GET", LIST, "", &[], vec![], |h| {
            h.insert("x-acs-date", HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"));
        })
        .await;
    r.assert_error(400, "InvalidTimeStamp.Format");
}

#[tokio::test]
async fn unsigned_header_added_after_signing_is_accepted() {
    let app = spawn_app().await;
    let r = app
        .request_as(&app.ak, &app.sk, "GET", LIST, "", &[], vec![], |h| {
            h.insert("x-trace-id", HeaderValue::from_static("abc"));
            h.insert("user-agent", HeaderValue::from_static("curl/8"));
            h.insert("accept", HeaderValue::from_static("application/json"));
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["functions"], json!([]));
}

#[tokio::test]
async fn query_strings_are_canonicalised_before_verifying() {
    let app = spawn_app().await;
    let name = unique("q_x");
    assert_eq!(app.create_function(python_function(&name, PY_UPPER)).await.status, 200);

    // Python's urlencode: space as '+', '+' as %2B; Node: %20. Both sign the decoded value.
    for q in ["prefix=a+b%2Bc", "prefix=a%20b%2Bc", "limit=5&prefix=a+b%2Bc", "prefix=a+b%2Bc&limit=5"] {
        assert_eq!(list_names(&app, q).await, Vec::<String>::new(), "{q}");
    }
    // The prefix reaches the handler decoded: %5F is '_', '+' is a space (matches nothing).
    assert_eq!(list_names(&app, "prefix=q%5Fx").await, vec![name.clone()]);
    assert_eq!(list_names(&app, "prefix=q_x&limit=1").await, vec![name.clone()]);
    assert_eq!(list_names(&app, "prefix=q+x").await, Vec::<String>::new());
    assert_eq!(list_names(&app, &format!("nextToken=&prefix={}", &name[..3])).await, vec![name.clone()]);
}

#[tokio::test]
async fn secret_never_appears_in_responses() {
    let app = spawn_app().await;
    let sk = app.sk.clone();
    let name = unique("sec");
    let mut responses = vec![
        app.create_function(python_function(&name, PY_UPPER)).await,
        app.get_function(&name).await,
        app.request("GET", LIST, "", &[], vec![]).await,
        app.request("GET", &format!("/2023-03-30/functions/{name}/code"), "", &[], vec![]).await,
        app.get_function("ghost").await,
        app.request_as("LTAIghost", &sk, "GET", LIST, "", &[], vec![], |_| {}).await,
        app.request_as(&app.ak, "wrong-secret", "GET", LIST, "", &[], vec![], |_| {}).await,
        app.request_as(&app.ak, &sk, "GET", LIST, "", &[("x-acs-action", "ListFunctions")], vec![], |h| {
            h.insert("x-acs-action", HeaderValue::from_static("Other"));
        })
        .await,
        app.create_function(json!({"functionName": name, "runtime": "java8", "handler": "index.handler"})).await,
    ];
    let h = signed(&app, &sk, &Method::GET, LIST, "", &[], b"", Utc::now() - TimeDelta::hours(1));
    responses.push(app.send(Method::GET, LIST, "", h, vec![]).await);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 404, 403, 403, 403, 400, 403]);
    for r in &responses {
        assert_no_secret(r, &sk);
        if r.status >= 400 {
            let j: Value = r.json();
            for k in ["Code", "Message", "RequestId"] {
                assert!(j[k].is_string(), "{k} missing: {j}");
            }
            assert_eq!(r.header("x-fc-request-id"), j["RequestId"].as_str());
        }
    }
}

#[tokio::test]
async fn refused_request_leaves_no_trace() {
    let app = spawn_app().await;
    let name = unique("trace");
    let body = python_function(&name, PY_UPPER).to_string().into_bytes();
    let ct = [("content-type", "application/json")];
    let wrong = format!("{}0", app.sk);

    let r = app.request_as(&app.ak, &wrong, "POST", LIST, "", &ct, body.clone(), |_| {}).await;
    r.assert_error(403, "SignatureNotMatch");
    let r = app.request_as("LTAIghost", &app.sk, "POST", LIST, "", &ct, body.clone(), |_| {}).await;
    r.assert_error(403, "InvalidAccessKeyID");
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(&app.addr.to_string()).unwrap());
    h.insert("content-type", HeaderValue::from_static("application/json"));
    app.send(Method::POST, LIST, "", h, body.clone()).await.assert_error(400, "MissingRequiredHeader");

    app.get_function(&name).await.assert_error(404, "FunctionNotFound");
    assert_eq!(list_names(&app, "").await, Vec::<String>::new());
    assert_eq!(code_store_files(&app), 0, "no code was stored");

    // A refused update and delete leave the stored function as it was.
    assert_eq!(app.request("POST", LIST, "", &ct, body).await.status, 200);
    let before = app.get_function(&name).await.json();
    let path = format!("/2023-03-30/functions/{name}");
    let upd = json!({"timeout": 99}).to_string().into_bytes();
    app.request_as(&app.ak, &wrong, "PUT", &path, "", &ct, upd, |_| {}).await.assert_error(403, "SignatureNotMatch");
    app.request_as(&app.ak, &wrong, "DELETE", &path, "", &[], vec![], |_| {}).await.assert_error(403, "SignatureNotMatch");
    assert_eq!(app.get_function(&name).await.json(), before);
    assert_eq!(code_store_files(&app), 1);
}

#[tokio::test]
async fn chunked_body_is_verified_after_dechunking() {
    let app = spawn_app().await;
    let name = unique("chunked");
    // Several chunks: the signature covers the de-chunked bytes.
    let mut body = python_function(&name, PY_UPPER);
    body["environmentVariables"] = json!({"PAD": "c".repeat(2500)});
    let body = body.to_string().into_bytes();
    let ct = [("content-type", "application/json")];
    let h = signed(&app, &app.sk, &Method::POST, LIST, "", &ct, &body, Utc::now());
    let (status, j) = send_chunked(&app, &Method::POST, LIST, &h, &body).await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["functionName"], name.as_str());
    assert_eq!(app.get_function(&name).await.json()["environmentVariables"]["PAD"].as_str().map(str::len), Some(2500));

    // A chunked body that differs from what was signed is refused.
    let other = unique("chunked");
    let signed_body = python_function(&other, PY_UPPER).to_string().into_bytes();
    let mut sent = signed_body.clone();
    sent.extend_from_slice(b"    ");
    let h = signed(&app, &app.sk, &Method::POST, LIST, "", &ct, &signed_body, Utc::now());
    let (status, j) = send_chunked(&app, &Method::POST, LIST, &h, &sent).await;
    assert_eq!((status, j["Code"].as_str()), (403, Some("SignatureNotMatch")), "{j}");
    app.get_function(&other).await.assert_error(404, "FunctionNotFound");
}
