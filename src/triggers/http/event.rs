//! Built-in runtimes behind an HTTP trigger (fc-triggers.md §1.4): the request becomes FC 3.0's
//! HTTP event (`version`, `rawPath`, `headers`, `queryParameters`, `body`, `isBase64Encoded`,
//! `requestContext`), and what the handler returns becomes the response. Pure: no I/O.
//!
//! Choices where FC's docs are silent:
//! - Header names are in Go's canonical form (`Content-Type`, `X-Forwarded-For`), as FC's
//!   gateway (Go) hands them on; repeated headers and query keys are joined with `,`.
//! - A body is base64 (`isBase64Encoded: true`) unless it is UTF-8 with a textual content type
//!   (none, `text/*`, JSON, XML, form data, `image/svg+xml`) and no content encoding: the rule
//!   of Hono's FC 3.0 adapter.
//! - A return value that is not a JSON object with `statusCode` is the body of a 200, typed
//!   `application/json` when it is JSON, `text/plain; charset=utf-8` when it is other text,
//!   else `application/octet-stream`.

use axum::http::{HeaderMap, Method};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// What the event needs besides the request's headers and body.
pub struct EventContext<'a> {
    pub method: &'a Method,
    /// The path after the trigger's prefix, still percent-encoded (`/` at least).
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub protocol: &'a str,
    pub source_ip: &'a str,
    pub account_id: &'a str,
    pub trigger_name: &'a str,
    pub trigger_id: &'a str,
    pub request_id: &'a str,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Go's `CanonicalMIMEHeaderKey`: the first letter and each letter after `-` upper-case.
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// Whether a body with these headers travels as text (else base64).
pub fn is_text(headers: &HeaderMap, body: &[u8]) -> bool {
    let encoded = headers.get("content-encoding").and_then(|v| v.to_str().ok()).is_some_and(|e| {
        e.split(',').any(|e| matches!(e.trim().to_ascii_lowercase().as_str(), "gzip" | "deflate" | "compress" | "br" | "zstd"))
    });
    if encoded || std::str::from_utf8(body).is_err() {
        return false;
    }
    let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) else { return true };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime.is_empty()
        || mime.starts_with("text/")
        || mime == "image/svg+xml"
        || mime == "application/x-www-form-urlencoded"
        || (mime.starts_with("application/") && (mime.contains("json") || mime.contains("xml") || mime.ends_with("javascript")))
}

/// `name: "v1,v2"` for every header, names canonical.
fn header_map(headers: &HeaderMap) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        out.insert(canonical_header_name(name.as_str()), Value::String(values.join(",")));
    }
    out
}

/// `key: "v1,v2"` for every query parameter, decoded form-style (Go's `url.ParseQuery`).
fn query_map(raw_query: &str) -> Map<String, Value> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let mut out: Map<String, Value> = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match out.get_mut(&k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                out.insert(k, Value::String(v));
            }
        }
    }
    out
}

/// The FC 3.0 HTTP event, as the JSON bytes the handler receives.
pub fn event(cx: &EventContext, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let text = is_text(headers, body);
    let body = if text {
        String::from_utf8_lossy(body).into_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(body)
    };
    let header = |name: &str| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let decoded_path = percent_encoding::percent_decode_str(cx.raw_path).decode_utf8_lossy().into_owned();
    let doc = json!({
        "version": "v1",
        "rawPath": cx.raw_path,
        "body": body,
        "isBase64Encoded": !text,
        "headers": header_map(headers),
        "queryParameters": query_map(cx.raw_query),
        "requestContext": {
            "accountId": cx.account_id,
            "domainName": header("host"),
            "domainPrefix": cx.trigger_name,
            "http": {
                "method": cx.method.as_str(),
                "path": decoded_path,
                "protocol": cx.protocol,
                "sourceIp": cx.source_ip,
                "userAgent": header("user-agent"),
            },
            "requestId": cx.request_id,
            "time": cx.now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "timeEpoch": cx.now.timestamp_millis().to_string(),
            "triggerId": cx.trigger_id,
        },
    });
    serde_json::to_vec(&doc).expect("a JSON value serializes")
}

/// An HTTP response made from a handler's return value.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub status: u16,
    /// In order; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Headers a function may not set: the platform's and the connection's own.
pub fn is_reserved_response_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("x-fc-")
        || matches!(n.as_str(), "connection" | "content-length" | "date" | "keep-alive" | "server" | "transfer-encoding" | "upgrade" | "trailer" | "te")
}

/// The response for a handler's return value (its bytes as the bootstrap sent them: a dict
/// arrives as JSON). `Err` says why a `{statusCode, ...}` object is unusable (502).
pub fn map_result(result: Bytes) -> Result<Mapped, String> {
    let parsed: Option<Value> = serde_json::from_slice(&result).ok();
    let Some(Value::Object(obj)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        let content_type = if parsed.is_some() {
            "application/json"
        } else if std::str::from_utf8(&result).is_ok() {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        return Ok(Mapped { status: 200, headers: vec![("content-type".into(), content_type.into())], body: result });
    };
    let status = obj["statusCode"]
        .as_u64()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("statusCode must be an integer from 100 to 599, got {}", obj["statusCode"]))? as u16;
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, v) in h {
                let values: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for v in values {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => return Err(format!("header '{name}' must be a string, number or boolean")),
                    };
                    headers.push((name.clone(), text));
                }
            }
        }
        Some(_) => return Err("headers must be an object".into()),
    }
    let base64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("isBase64Encoded must be a boolean".into()),
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if base64 => Bytes::from(
            base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|e| format!("body is not base64 ({e}) but isBase64Encoded is true"))?,
        ),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        // A structured body is sent as its JSON.
        Some(v) => Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")),
    };
    Ok(Mapped { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cx<'a>(method: &'a Method, raw_path: &'a str, raw_query: &'a str) -> EventContext<'a> {
        EventContext {
            method,
            raw_path,
            raw_query,
            protocol: "HTTP/1.1",
            source_ip: "10.0.0.9",
            account_id: "1000",
            trigger_name: "web",
            trigger_id: "tid",
            request_id: "1-abc",
            now: chrono::DateTime::parse_from_rfc3339("2023-09-05T06:41:11.895Z").unwrap().into(),
        }
    }

    #[test]
    fn the_event_has_fc_shape() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("nubis.example:9000"));
        h.insert("user-agent", HeaderValue::from_static("curl/8"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let m = Method::POST;
        let e: Value = serde_json::from_slice(&event(&cx(&m, "/a%20b/c", "x=1&x=2&y=h%C3%A9+j&flag"), &h, b"{\"k\":1}")).unwrap();
        assert_eq!(e["version"], "v1");
        assert_eq!(e["rawPath"], "/a%20b/c");
        assert_eq!((&e["body"], &e["isBase64Encoded"]), (&json!("{\"k\":1}"), &json!(false)));
        assert_eq!(e["headers"]["X-Multi"], "a,b");
        assert_eq!(e["headers"]["Content-Type"], "application/json");
        assert_eq!(e["queryParameters"], json!({"x": "1,2", "y": "hé j", "flag": ""}));
        let rc = &e["requestContext"];
        assert_eq!(rc["http"], json!({"method": "POST", "path": "/a b/c", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.9", "userAgent": "curl/8"}));
        assert_eq!((&rc["domainName"], &rc["domainPrefix"], &rc["accountId"]), (&json!("nubis.example:9000"), &json!("web"), &json!("1000")));
        assert_eq!((&rc["time"], &rc["timeEpoch"], &rc["requestId"]), (&json!("2023-09-05T06:41:11Z"), &json!("1693896071895"), &json!("1-abc")));
    }

    #[test]
    fn binary_bodies_are_base64() {
        let m = Method::PUT;
        let mut h = HeaderMap::new();
        let raw = [0u8, 159, 146, 150];
        let e: Value = serde_json::from_slice(&event(&cx(&m, "/", ""), &h, &raw)).unwrap();
        assert_eq!((&e["body"], &e["isBase64Encoded"]), (&json!("AJ+Slg=="), &json!(true)));
        h.insert("content-type", HeaderValue::from_static("image/png"));
        assert!(!is_text(&h, b"plain ascii"));
        h.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
        assert!(is_text(&h, b"<p>hi</p>"));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        assert!(!is_text(&h, b"<p>hi</p>"));
        assert_eq!(canonical_header_name("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header_name("ETAG"), "Etag");
    }

    #[test]
    fn results_map_to_responses() {
        let r = map_result(Bytes::from(r#"{"statusCode": 201, "headers": {"X-A": "1", "Set-Cookie": ["a=1", "b=2"], "X-N": 5}, "body": "made"}"#)).unwrap();
        assert_eq!(r.status, 201);
        let mut headers = r.headers.clone();
        headers.sort();
        assert_eq!(headers, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-A", "1"), ("X-N", "5")].map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(r.body, "made");
        let b = map_result(Bytes::from(r#"{"statusCode": 200, "isBase64Encoded": true, "body": "AJ+Slg=="}"#)).unwrap();
        assert_eq!(&b.body[..], &[0u8, 159, 146, 150]);
        let j = map_result(Bytes::from(r#"{"statusCode": 200, "body": {"a": 1}}"#)).unwrap();
        assert_eq!(j.body, "{\"a\":1}");
        // Not an object with statusCode: the body of a 200.
        let plain = map_result(Bytes::from("hello")).unwrap();
        assert_eq!((plain.status, plain.headers[0].1.as_str(), &plain.body[..]), (200, "text/plain; charset=utf-8", &b"hello"[..]));
        let json_body = map_result(Bytes::from(r#"{"a": 1}"#)).unwrap();
        assert_eq!((json_body.status, json_body.headers[0].1.as_str()), (200, "application/json"));
        let bin = map_result(Bytes::from_static(&[0xff, 0xfe])).unwrap();
        assert_eq!(bin.headers[0].1, "application/octet-stream");
        for bad in [r#"{"statusCode": "200"}"#, r#"{"statusCode": 42}"#, r#"{"statusCode": 200, "headers": []}"#,
            r#"{"statusCode": 200, "headers": {"a": {}}}"#, r#"{"statusCode": 200, "isBase64Encoded": true, "body": "%%"}"#] {
            assert!(map_result(Bytes::from(bad)).is_err(), "{bad}");
        }
        assert!(is_reserved_response_header("X-Fc-Request-Id") && is_reserved_response_header("Content-Length"));
        assert!(!is_reserved_response_header("x-custom"));
    }
}
