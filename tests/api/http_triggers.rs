//! HTTP triggers over real containers: FC 3.0's event and response mapping for Python and
//! Node.js, pass-through for a custom runtime, the method filter, the public/intranet URLs,
//! CORS, signed calls (signed here with fc-triggers.md §1.3's algorithm, written out
//! independently of the server's code), large bodies both ways and the body limit.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::*;
use crate::triggers::create_trigger;

/// An http trigger with this config; returns its public URL's path.
async fn http_trigger(app: &ApiClient, function: &str, trigger: &str, config: Value) -> String {
    let r = create_trigger(app, function, json!({"triggerName": trigger, "triggerType": "http", "triggerConfig": config.to_string()})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["httpTrigger"]["urlInternet"].as_str().unwrap().to_string();
    let path = format!("/http/{function}/{trigger}");
    assert_eq!(url, app.url(&path));
    path
}

/// An unsigned call (a browser, curl): `path` may carry `?query`.
async fn call(app: &ApiClient, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    app.send(method.parse().unwrap(), path, query, h, body).await
}

const PY_WEB: &str = r#"import base64, json

def handler(event, context):
    e = json.loads(event)
    path = e['rawPath']
    if path == '/plain':
        return 'hello text'
    if path == '/dict':
        return {'no': 'statusCode'}
    if path == '/raise':
        raise ValueError('boom')
    if path == '/bytes':
        return {'statusCode': 200, 'headers': {'Content-Type': 'application/octet-stream'},
                'isBase64Encoded': True, 'body': base64.b64encode(bytes([0, 1, 2, 255])).decode()}
    if path == '/big':
        return {'statusCode': 200, 'headers': {'Content-Type': 'text/plain'}, 'body': e['body'] + e['body']}
    e['requestId'] = context.request_id
    return {'statusCode': 201, 'headers': {'X-Echo': 'yes', 'Set-Cookie': ['a=1', 'b=2'], 'x-fc-sneaky': '1'},
            'body': json.dumps(e)}
"#;

#[tokio::test]
async fn python_gets_the_fc_event_and_its_answer_becomes_the_response() {
    let app = spawn_app().await;
    let name = "web-py";
    let mut body = python_function(name, PY_WEB);
    body["timeout"] = json!(30);
    assert_eq!(app.create_function(body).await.status, 200);
    let web = http_trigger(&app, name, "web", json!({"authType": "anonymous", "methods": ["GET", "POST"],
        "corsConfig": {"allowOrigins": ["https://app.example"], "allowHeaders": ["x-custom"], "maxAge": 600}}))
    .await;

    // The event: FC 3.0's shape; the path after the trigger, encoded and decoded.
    let r = call(&app, "POST", &format!("{web}/some/a%20b?x=1&x=2&y=h%C3%A9"), &[("x-custom", "c1"), ("content-type", "text/plain")], b"hello".to_vec()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-echo"), Some("yes"));
    assert!(r.header("x-fc-sneaky").is_none(), "a function may not set x-fc-* headers");
    let cookies: Vec<&str> = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let rid = r.header("x-fc-request-id").unwrap().to_string();
    let e = r.json();
    assert_eq!((&e["version"], &e["rawPath"], &e["body"], &e["isBase64Encoded"]), (&json!("v1"), &json!("/some/a%20b"), &json!("hello"), &json!(false)));
    assert_eq!(e["queryParameters"], json!({"x": "1,2", "y": "hé"}));
    assert_eq!((&e["headers"]["X-Custom"], &e["headers"]["Content-Type"]), (&json!("c1"), &json!("text/plain")));
    let rc = &e["requestContext"];
    assert_eq!((&rc["http"]["method"], &rc["http"]["path"], &rc["http"]["protocol"]), (&json!("POST"), &json!("/some/a b"), &json!("HTTP/1.1")));
    assert_eq!((&rc["http"]["sourceIp"], &rc["requestId"], &e["requestId"]), (&json!("127.0.0.1"), &json!(rid), &json!(rid)));
    assert_eq!((&rc["domainName"], &rc["domainPrefix"], &rc["accountId"]), (&json!(app.addr.to_string()), &json!("web"), &json!("1000000000000000")));
    assert!(rc["timeEpoch"].as_str().unwrap().parse::<i64>().is_ok() && rc["time"].as_str().unwrap().ends_with('Z'), "{rc}");
    // A GET on the trigger's root: rawPath "/".
    let r = call(&app, "GET", &web, &[], vec![]).await;
    assert_eq!((r.status, &r.json()["rawPath"], &r.json()["body"]), (201, &json!("/"), &json!("")));

    // A binary body travels base64; a binary answer comes back decoded.
    let raw = vec![0u8, 159, 146, 150, 255];
    let r = call(&app, "POST", &format!("{web}/echo"), &[("content-type", "application/octet-stream")], raw.clone()).await;
    assert_eq!((&r.json()["isBase64Encoded"], &r.json()["body"]), (&json!(true), &json!(b64(&raw))));
    let r = call(&app, "GET", &format!("{web}/bytes"), &[], vec![]).await;
    assert_eq!((r.status, r.header("content-type"), &r.body[..]), (200, Some("application/octet-stream"), &[0u8, 1, 2, 255][..]));
    // Not {statusCode, ...}: the body of a 200.
    let r = call(&app, "GET", &format!("{web}/plain"), &[], vec![]).await;
    assert_eq!((r.status, r.header("content-type"), r.text().as_str()), (200, Some("text/plain; charset=utf-8"), "hello text"));
    let r = call(&app, "GET", &format!("{web}/dict"), &[], vec![]).await;
    assert_eq!((r.status, r.header("content-type"), r.json()), (200, Some("application/json"), json!({"no": "statusCode"})));
    // The handler raised: 502 with FC's error document.
    let r = call(&app, "GET", &format!("{web}/raise"), &[], vec![]).await;
    assert_eq!((r.status, r.header("x-fc-error-type")), (502, Some("UnhandledInvocationError")), "{}", r.text());
    assert_eq!((&r.json()["errorType"], &r.json()["errorMessage"]), (&json!("ValueError"), &json!("boom")));

    // Several MB both ways through the event: 3 MB in, 6 MB out.
    let big = "0123456789abcdef".repeat(3 << 16);
    let r = call(&app, "POST", &format!("{web}/big"), &[("content-type", "text/plain")], big.clone().into_bytes()).await;
    assert_eq!(r.status, 200, "{}", &r.text()[..200.min(r.text().len())]);
    assert_eq!(r.body.len(), 2 * big.len());
    assert!(r.body.starts_with(big.as_bytes()) && r.body.ends_with(big.as_bytes()));

    // The method filter: 405 with Allow.
    let r = call(&app, "PUT", &web, &[], vec![]).await;
    let msg = r.assert_error(405, "MethodNotAllowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert!(msg.contains("PUT"), "{msg}");
    // Reserved request headers.
    call(&app, "GET", &web, &[("x-fc-request-id", "spoofed")], vec![]).await.assert_error(400, "InvalidArgument");

    // CORS: the preflight is answered from corsConfig; actual responses carry the origin.
    let pre = [("origin", "https://app.example"), ("access-control-request-method", "POST"), ("access-control-request-headers", "x-custom")];
    let r = call(&app, "OPTIONS", &format!("{web}/any"), &pre, vec![]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!((r.header("access-control-allow-methods"), r.header("access-control-allow-headers")), (Some("GET, POST"), Some("x-custom")));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let evil = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    call(&app, "OPTIONS", &web, &evil, vec![]).await.assert_error(403, "AccessDenied");
    let r = call(&app, "GET", &web, &[("origin", "https://app.example")], vec![]).await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (201, Some("https://app.example")));
    assert!(r.header("access-control-expose-headers").is_some_and(|h| h.contains("x-fc-request-id")));
    let r = call(&app, "GET", &web, &[("origin", "https://evil.example")], vec![]).await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (201, None));

    // Unknown triggers and functions, and a trigger of another type at an http URL.
    call(&app, "GET", &format!("/http/{name}/nope/x"), &[], vec![]).await.assert_error(404, "TriggerNotFound");
    call(&app, "GET", "/http/ghost/web", &[], vec![]).await.assert_error(404, "TriggerNotFound");
    let tick = json!({"triggerName": "tick", "triggerType": "timer", "triggerConfig": "{\"cronExpression\":\"@every 1h\",\"enable\":false}"});
    assert_eq!(create_trigger(&app, name, tick).await.status, 200);
    call(&app, "GET", &format!("/http/{name}/tick"), &[], vec![]).await.assert_error(404, "TriggerNotFound");

    // disableURLInternet: the public URL refuses (FC's words), the intranet one serves; an
    // update is seen by the next call.
    let cfg = json!({"authType": "anonymous", "methods": ["GET"], "disableURLInternet": true}).to_string();
    let u = app.json_request("PUT", &format!("/2023-03-30/functions/{name}/triggers/web"), "", Some(json!({"triggerConfig": cfg}))).await;
    assert_eq!(u.status, 200, "{}", u.text());
    let intranet = u.json()["httpTrigger"]["urlIntranet"].as_str().unwrap().trim_start_matches(&app.url("")).to_string();
    let msg = call(&app, "GET", &web, &[], vec![]).await.assert_error(403, "AccessDenied");
    assert!(msg.contains("internet URL is disable"), "{msg}");
    let r = call(&app, "GET", &format!("{intranet}/p"), &[], vec![]).await;
    assert_eq!((r.status, &r.json()["rawPath"]), (201, &json!("/p")));
    call(&app, "POST", &intranet, &[], vec![]).await.assert_error(405, "MethodNotAllowed");
    // Deleted: 404 at once.
    assert_eq!(app.json_request("DELETE", &format!("/2023-03-30/functions/{name}/triggers/web"), "", None).await.status, 204);
    call(&app, "GET", &intranet, &[], vec![]).await.assert_error(404, "TriggerNotFound");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn nodejs_gets_the_fc_event_and_its_answer_becomes_the_response() {
    let app = spawn_app().await;
    let code = r#"exports.handler = async (event, context) => {
  const e = JSON.parse(event.toString());
  return { statusCode: 202, headers: { 'Content-Type': 'application/json', 'X-Runtime': 'node' },
           body: JSON.stringify({ method: e.requestContext.http.method, rawPath: e.rawPath, q: e.queryParameters,
                                  body: e.body, b64: e.isBase64Encoded, ua: e.headers['User-Agent'] }) };
};
"#;
    let body = json!({"functionName": "web-node", "runtime": "nodejs20", "handler": "index.handler", "memorySize": 128, "timeout": 10,
        "code": {"zipFile": b64(&zip_of(&[("index.js", code)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let web = http_trigger(&app, "web-node", "web", json!({"authType": "anonymous", "methods": ["DELETE", "PATCH"]})).await;
    let r = call(&app, "PATCH", &format!("{web}/items/7?force=true"), &[("user-agent", "nubis-test/1")], b"{\"n\":1}".to_vec()).await;
    assert_eq!((r.status, r.header("x-runtime")), (202, Some("node")), "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"method": "PATCH", "rawPath": "/items/7", "q": {"force": "true"}, "body": "{\"n\":1}", "b64": false, "ua": "nubis-test/1"})
    );
    call(&app, "GET", &web, &[], vec![]).await.assert_error(405, "MethodNotAllowed");
    app.shutdown().await.unwrap();
}

/// A custom runtime's server: answers what it received (method, path, a header, the body);
/// `/stream` answers in two chunks, the second only after a call to `/go`.
const CUSTOM_ECHO: &str = include_str!("../support/custom_echo.py");

#[tokio::test]
async fn custom_runtimes_get_the_request_passed_through() {
    // A small body limit, to see it refused without sending 32 MB.
    let app = spawn_app_with(|c| c.limits.max_sync_payload_bytes = 8 << 20).await;
    // Several calls per instance: `/go` must reach the instance that is streaming `/stream`.
    let body = json!({"functionName": "web-custom", "runtime": "custom.debian12", "handler": "x", "timeout": 30, "instanceConcurrency": 4,
        "customRuntimeConfig": {"command": ["python3", "/code/server.py"], "port": 9000},
        "code": {"zipFile": b64(&zip_of(&[("server.py", CUSTOM_ECHO)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let web = http_trigger(&app, "web-custom", "web", json!({"authType": "anonymous", "methods": ["GET", "PUT", "POST"]})).await;

    let r = call(&app, "PUT", &format!("{web}/a/b%20c?x=1&y=%2F"), &[("x-custom", "v"), ("content-type", "application/xml")], b"<a/>".to_vec()).await;
    assert_eq!(r.status, 207, "{}", r.text());
    assert_eq!((r.header("x-method"), r.header("x-path"), r.header("x-got")), (Some("PUT"), Some("/a/b%20c?x=1&y=%2F"), Some("v")));
    assert_eq!((r.header("x-control"), r.header("content-type"), r.text().as_str()), (Some("/http-invoke"), Some("application/xml"), "<a/>"));
    assert_eq!(r.header("x-fwd-host"), Some(app.addr.to_string().as_str()));
    assert!(r.header("x-fc-internal").is_none(), "x-fc-* response headers are the platform's");
    let r = call(&app, "GET", &web, &[], vec![]).await;
    assert_eq!((r.status, r.header("x-path")), (207, Some("/")));

    // The response streams: the first chunk arrives while the server still waits to be told
    // to write the last.
    let (first, rest) = stream_in_two(&app.url(&format!("{web}/stream")), &app.url(&format!("{web}/go"))).await;
    assert_eq!((first.as_str(), rest.as_str()), ("first\n", "second\n"));

    // Up to the limit in, the same bytes out, declared or chunked.
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let r = call(&app, "POST", &format!("{web}/upload"), &[("content-type", "application/octet-stream")], big.clone()).await;
    assert_eq!((r.status, r.body.len()), (207, big.len()));
    assert_eq!(hex::encode(sha2::Sha256::digest(&r.body)), hex::encode(sha2::Sha256::digest(&big)), "the body came back changed");
    let chunks = futures_util::stream::iter(big.chunks(1 << 20).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let r = reqwest::Client::new().post(app.url(&format!("{web}/upload"))).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status(), 207);
    assert_eq!(hex::encode(sha2::Sha256::digest(r.bytes().await.unwrap())), hex::encode(sha2::Sha256::digest(&big)), "chunked upload");
    // Over the limit: 400 EntityTooLarge, declared or not.
    let over = vec![b'z'; (8 << 20) + 1];
    let msg = call(&app, "POST", &web, &[], over.clone()).await.assert_error(400, "EntityTooLarge");
    assert!(msg.contains(&(8 << 20).to_string()), "{msg}");
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(&app.addr.to_string()).unwrap());
    let (status, j) = crate::auth::send_chunked(&app, &Method::POST, &web, &h, &over).await;
    assert_eq!((status, j["Code"].as_str()), (400, Some("EntityTooLarge")), "chunked, no length declared: {j}");

    // The function's timeout bounds the whole exchange: a response still streaming then is cut.
    let body = json!({"functionName": "web-slow", "runtime": "custom.debian12", "handler": "x", "timeout": 2,
        "customRuntimeConfig": {"command": ["python3", "/code/server.py"], "port": 9000},
        "code": {"zipFile": b64(&zip_of(&[("server.py", CUSTOM_ECHO)]))}});
    assert_eq!(app.create_function(body).await.status, 200);
    let slow = http_trigger(&app, "web-slow", "web", json!({"authType": "anonymous", "methods": ["GET"]})).await;
    let mut r = reqwest::get(app.url(&format!("{slow}/stream"))).await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Duration::from_secs(30);
    let first = tokio::time::timeout(deadline, r.chunk()).await.expect("first chunk in time").unwrap();
    assert_eq!(first.as_deref(), Some(&b"first\n"[..]));
    let rest = tokio::time::timeout(deadline, r.bytes()).await.expect("cut in time, not after the server's own 60 s");
    assert!(rest.is_err(), "a response past the deadline is cut, so the caller sees it incomplete: {rest:?}");
    // Counted when the stream ended, as a timeout.
    eventually(deadline, "the cut stream counted as a timeout", || async {
        let text = reqwest::get(app.url("/metrics")).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with("nubis_invocations_total{") && l.contains(r#"function="web-slow""#) && l.contains(r#"outcome="timeout""#))
            .then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

/// fc-triggers.md §1.3, written out here: openapi-util's canonical request over the method,
/// the path, the query (keys as they are, values RFC 3986-encoded), the given headers, and an
/// empty payload.
fn sign(ak: &str, sk: &str, method: &str, path: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    let mut q: Vec<(&str, &str)> = query.to_vec();
    q.sort();
    let query = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
    let mut h: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
    h.sort();
    let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = h.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n");
    let to_sign = format!("ACS3-HMAC-SHA256\n{}", hex::encode(sha2::Sha256::digest(canonical.as_bytes())));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(sk.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    format!("ACS3-HMAC-SHA256 Credential={ak},SignedHeaders={signed},Signature={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn function_auth_takes_requests_signed_with_a_server_key() {
    let app = spawn_app().await;
    let code = "import json\ndef handler(event, context):\n    return {'statusCode': 200, 'body': json.loads(event)['body']}\n";
    assert_eq!(app.create_function(python_function("web-auth", code)).await.status, 200);
    let web = http_trigger(&app, "web-auth", "web", json!({"authType": "function", "methods": ["POST"]})).await;
    let path = format!("{web}/sum");
    let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let signed_call = |ak: &str, sk: &str, date: &str| {
        let auth = sign(ak, sk, "POST", &path, &[("a b", "c d"), ("n", "1")], &[("x-acs-date", date), ("x-acs-security-token", "")]);
        (auth, date.to_string())
    };
    let send = |auth: String, date: String| {
        let app = app.api.clone();
        let path = path.clone();
        async move {
            let h = [("authorization", auth.as_str()), ("x-acs-date", date.as_str()), ("x-acs-security-token", "")];
            call(&app, "POST", &format!("{path}?a+b=c%20d&n=1"), &h, b"signed body".to_vec()).await
        }
    };
    let (auth, d) = signed_call(&app.ak, &app.sk, &date);
    let r = send(auth, d).await;
    assert_eq!((r.status, r.text().as_str()), (200, "signed body"));

    // Fractional seconds (Node's toISOString) are fine too.
    let frac = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (auth, d) = signed_call(&app.ak, &app.sk, &frac);
    assert_eq!(send(auth, d).await.status, 200);

    let msg = call(&app, "POST", &path, &[], vec![]).await.assert_error(400, "MissingRequiredHeader");
    assert!(msg.contains("Date"), "{msg}");
    let (auth, d) = signed_call(&app.ak, "wrong-secret", &date);
    send(auth, d).await.assert_error(403, "SignatureNotMatch");
    let (auth, d) = signed_call("NBunknownkey", &app.sk, &date);
    send(auth, d).await.assert_error(403, "InvalidAccessKeyID");
    let old = (chrono::Utc::now() - chrono::Duration::minutes(20)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (auth, d) = signed_call(&app.ak, &app.sk, &old);
    let msg = send(auth, d).await.assert_error(403, "RequestTimeTooSkewed");
    assert!(msg.contains("is too large"), "{msg}");
    // A signature for another path does not open this one.
    let other = sign(&app.ak, &app.sk, "POST", &format!("{web}/other"), &[], &[("x-acs-date", &date)]);
    call(&app, "POST", &path, &[("authorization", &other), ("x-acs-date", &date)], vec![]).await.assert_error(403, "SignatureNotMatch");
    // A client that signs its body hash (as the FC SDKs sign API calls) is accepted; the body
    // must then be the one it hashed.
    let r = app.request("POST", &path, "", &[], b"hashed".to_vec()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hashed"));
    let r = app.request_as(&app.ak, &app.sk, "POST", &path, "", &[], b"hashed".to_vec(), |h| {
        h.insert("x-acs-content-sha256", HeaderValue::from_static("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    })
    .await;
    r.assert_error(403, "SignatureNotMatch");
    app.shutdown().await.unwrap();
}
