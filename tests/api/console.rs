//! The console's HTTP contract, without a browser: pages need a session (else a redirect to
//! the sign-in page), console JSON needs one (else 401 FC errors), a change made with the
//! cookie needs the CSRF header (else 403), sessions expire and sign-out ends them, and no
//! response carries the access key secret. The browser scenario is tests/api/console_browser.rs.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// A browser's view of the server: no redirects followed, the session cookie kept by hand.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: format!("http://{}", app.addr), http, cookie: None, csrf: None }
    }

    /// A request with the cookie (if any) and, when `csrf`, the CSRF header (if any).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>, csrf: bool) -> Resp {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", format!("nubis_session={c}"));
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            r = r.header("x-nubis-csrf", t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let r = r.send().await.expect("request sent");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        Resp { status, headers, body: r.bytes().await.unwrap() }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, false).await
    }

    /// Sign in; keeps the cookie and the CSRF token. Returns the response.
    pub async fn sign_in(&mut self, ak: &str, sk: &str) -> Resp {
        let r = self.send(Method::POST, "/console/api/session", Some(json!({"accessKeyId": ak, "accessKeySecret": sk})), false).await;
        if r.status == 200 {
            let set = r.header("set-cookie").expect("a session cookie").to_string();
            let token = set.strip_prefix("nubis_session=").and_then(|s| s.split(';').next()).expect("nubis_session=...");
            self.cookie = Some(token.to_string());
            self.csrf = Some(r.json()["csrfToken"].as_str().expect("csrfToken").to_string());
        }
        r
    }
}

#[tokio::test]
async fn console_pages_and_json_need_a_session() {
    let app = spawn_app().await;
    let b = Browser::new(&app);
    for page in ["/console/", "/console"] {
        let r = b.get(page).await;
        assert!([302, 303, 307, 308].contains(&r.status), "{page}: {}", r.status);
    }
    assert_eq!(b.get("/console/").await.header("location"), Some("/console/login"));
    let login = b.get("/console/login").await;
    assert_eq!(login.status, 200);
    assert!(login.text().contains("<form"), "{}", login.text());
    assert!(login.header("content-security-policy").is_some_and(|c| c.contains("default-src 'self'")));
    // Assets are public (nothing in them but this repository's code) and revalidated by ETag.
    let js = b.get("/console/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(js.header("etag").is_some());
    assert_eq!(b.get("/console/assets/nope.js").await.status, 404);

    for path in ["/console/api/session", "/console/api/cluster/series", "/console/api/functions/f/series"] {
        b.get(path).await.assert_error(401, "NotSignedIn");
    }
    // A forged cookie is no session.
    let mut forged = Browser::new(&app);
    forged.cookie = Some("00".repeat(32));
    forged.get("/console/api/session").await.assert_error(401, "SessionExpired");
    forged.get("/2023-03-30/functions").await.assert_error(401, "SessionExpired");
    assert_eq!(forged.get("/console/").await.header("location"), Some("/console/login"));
    // No cookie, no signature: the FC API's own answer.
    b.get("/2023-03-30/functions").await.assert_error(400, "MissingRequiredHeader");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn sign_in_gives_a_strict_http_only_cookie_and_never_the_secret() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.ak, "wrong-secret").await.assert_error(401, "InvalidCredentials");
    b.sign_in("NBNOSUCHKEY0000000000000", &app.sk).await.assert_error(401, "InvalidCredentials");
    // Not JSON: refused (a cross-site form cannot post JSON without a preflight).
    let r = reqwest::Client::new()
        .post(app.url("/console/api/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("accessKeyId={}&accessKeySecret={}", app.ak, app.sk))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = b.sign_in(&app.ak, &app.sk).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let me = b.get("/console/api/session").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["accessKeyId"], app.ak.as_str());
    let page = b.get("/console/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("app.js"));
    for body in [r.text(), me.text(), page.text()] {
        assert!(!body.contains(&app.sk), "the secret leaked: {body}");
    }
    // Only the token's hash is stored: the cookie is not in the database.
    let token = b.cookie.clone().unwrap();
    assert!(app.state.store.get_session(&token).await.unwrap().is_none());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn changes_with_the_cookie_need_the_csrf_header() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.ak, &app.sk).await;
    let body = python_function("csrf", PY_UPPER);
    // Reads need only the cookie.
    let r = b.get("/2023-03-30/functions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A change without the header, or with another session's token: refused, nothing created.
    b.send(Method::POST, "/2023-03-30/functions", Some(body.clone()), false).await.assert_error(403, "InvalidCsrfToken");
    let good = b.csrf.replace("f".repeat(32));
    b.send(Method::POST, "/2023-03-30/functions", Some(body.clone()), true).await.assert_error(403, "InvalidCsrfToken");
    assert_eq!(app.get_function("csrf").await.status, 404);
    b.send(Method::DELETE, "/console/api/session", None, true).await.assert_error(403, "InvalidCsrfToken");
    // With it: the same handler, the same validation and words as a signed call.
    b.csrf = good;
    let r = b.send(Method::POST, "/2023-03-30/functions", Some(body), true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bad = json!({"functionName": "csrf2", "runtime": "python3.10", "handler": "index.handler", "memorySize": 1,
                     "code": {"zipFile": b64(&zip_of(&[("index.py", PY_UPPER)]))}});
    let via_cookie = b.send(Method::POST, "/2023-03-30/functions", Some(bad.clone()), true).await.assert_error(400, "InvalidArgument");
    let signed = app.create_function(bad).await.assert_error(400, "InvalidArgument");
    assert_eq!(via_cookie, signed);
    assert!(via_cookie.starts_with("memorySize"), "{via_cookie}");
    // Admin routes too: reads with the cookie, changes with the header.
    let nodes = b.get("/nubis/admin/v1/nodes").await;
    assert_eq!(nodes.status, 200);
    let node = app.node_id.clone();
    b.send(Method::POST, &format!("/nubis/admin/v1/nodes/{node}/cordon"), None, false).await.assert_error(403, "InvalidCsrfToken");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.ak, &app.sk).await;
    let r = b.send(Method::DELETE, "/console/api/session", None, true).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The browser may keep the old cookie: it is dead all the same.
    b.get("/console/api/session").await.assert_error(401, "SessionExpired");
    b.get("/2023-03-30/functions").await.assert_error(401, "SessionExpired");
    assert_eq!(b.get("/console/").await.header("location"), Some("/console/login"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn sessions_expire() {
    let app = spawn_app_with(|c| c.console.session_ttl_secs = 1).await;
    let mut b = Browser::new(&app);
    let r = b.sign_in(&app.ak, &app.sk).await;
    let expires = r.json()["expiresAt"].as_i64().unwrap();
    let left = expires - chrono::Utc::now().timestamp_millis();
    assert!(left <= 1_000, "expires in {left} ms");
    eventually(Duration::from_secs(10), "the session expires", || async {
        let r = b.get("/console/api/session").await;
        (r.status == 401).then(|| r.assert_error(401, "SessionExpired"))
    })
    .await;
    b.get("/2023-03-30/functions").await.assert_error(401, "SessionExpired");
    assert_eq!(b.get("/console/").await.header("location"), Some("/console/login"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn console_series_count_calls_and_sample_nodes() {
    let app = spawn_app_with(|c| c.console.sample_interval_ms = 100).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.ak, &app.sk).await;
    assert_eq!(app.create_function(python_function("series", PY_UPPER)).await.status, 200);
    for _ in 0..3 {
        assert_eq!(app.invoke("series", b"x", &[]).await.status, 200);
    }
    let from = chrono::Utc::now().timestamp_millis() - 600_000;
    // Summaries are stored, and samples taken, a moment after the calls: poll for both.
    let s = eventually(Duration::from_secs(15), "three calls and the instance in the series", || async {
        let s = b.get(&format!("/console/api/functions/series/series?from={from}&step=60")).await.json();
        let calls: u64 = s["invocations"].as_array()?.iter().filter_map(Value::as_u64).sum();
        let instance = s["instances"].as_array()?.iter().any(|v| v.as_u64() == Some(1));
        (calls == 3 && instance).then_some(s)
    })
    .await;
    assert_eq!(s["coldStarts"].as_array().unwrap().iter().filter_map(Value::as_u64).sum::<u64>(), 1, "{s}");
    assert!(s["p99Ms"].as_array().unwrap().iter().any(|v| v.as_f64().is_some_and(|ms| ms > 0.0)), "{s}");
    let c = b.get(&format!("/console/api/cluster/series?from={from}")).await.json();
    let last = c["samples"].as_array().unwrap().last().cloned().expect("a sample");
    assert!(last["nodes"][0]["memoryTotalMb"].as_u64().unwrap() > 0, "{last}");
    b.get("/console/api/functions/nope/series").await.assert_error(404, "FunctionNotFound");
    b.get("/console/api/functions/series/series?from=10&to=5").await.assert_error(400, "InvalidArgument");
    app.shutdown().await.unwrap();
}
