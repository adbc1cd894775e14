//! The CLI's signed HTTP client: every request is signed by [`crate::api::auth::sign_request`]
//! (the server's own canonicalization, so client and server cannot disagree), and every non-2xx
//! answer becomes [`CliError::Api`] with the server's `Code`, `Message` and `RequestId`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::config::{Credentials, Secret};
use super::error::{CliError, chain};
use crate::api::auth::sign_request;

/// RFC 3986 unreserved characters stay literal, as in the signer's canonical form.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes one path segment or query component (names from the command line may hold
/// anything; the server refuses what it does not accept, with its own error).
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

pub struct Client {
    /// The endpoint as the user will recognise it in error messages.
    endpoint: String,
    /// Path prefix of the endpoint (a Nubis behind a proxy at `/fc`), "" for none.
    base_path: String,
    host: HeaderValue,
    access_key_id: String,
    secret: Secret,
    http: reqwest::Client,
}

/// A 2xx answer.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(creds: Credentials) -> Result<Self, CliError> {
        let url = url::Url::parse(&creds.endpoint).map_err(|e| CliError::Config(format!("endpoint {}: {e}", creds.endpoint)))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(CliError::Config(format!("endpoint {} has no host", creds.endpoint))),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| CliError::Config(format!("endpoint host '{host}' is not a valid header")))?;
        // No overall timeout: a sync invocation lasts as long as the function's own timeout
        // (the server bounds it). Connecting must not hang, though.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Config(format!("HTTP client: {}", chain(&e))))?;
        Ok(Self {
            base_path: url.path().trim_end_matches('/').to_string(),
            endpoint: creds.endpoint,
            host,
            access_key_id: creds.access_key_id,
            secret: creds.access_key_secret,
            http,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One signed request. `path` is the API path (`/2023-03-30/...`, segments already encoded
    /// with [`enc`]); `query` pairs are encoded here.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<Reply, CliError> {
        let raw_path = format!("{}{path}", self.base_path);
        let raw_query = query.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
        let mut h = HeaderMap::new();
        h.insert("host", self.host.clone());
        for (k, v) in headers {
            let v = HeaderValue::from_str(v).map_err(|_| CliError::Usage(format!("value of header {k} is not a valid header value")))?;
            h.insert(HeaderName::from_static(k), v);
        }
        sign_request(&self.access_key_id, self.secret.expose(), &method, &raw_path, &raw_query, &mut h, &body, chrono::Utc::now());
        let mut url = format!("{}{path}", self.endpoint);
        if !raw_query.is_empty() {
            url.push('?');
            url.push_str(&raw_query);
        }
        let connect = |e: reqwest::Error| CliError::Connect { endpoint: self.endpoint.clone(), reason: chain(&e) };
        let resp = self.http.request(method, url).headers(h).body(body).send().await.map_err(connect)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(connect)?;
        if (200..300).contains(&status) {
            Ok(Reply { status, headers, body })
        } else {
            Err(api_error(status, &headers, &body))
        }
    }

    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let r = self.send(Method::GET, path, query, &[], vec![]).await?;
        self.json(&r)
    }

    /// POST/PUT a JSON document, read a JSON answer.
    pub async fn send_json(&self, method: Method, path: &str, query: &[(&str, String)], body: &Value) -> Result<Value, CliError> {
        let headers = [("content-type", "application/json".to_string())];
        let r = self.send(method, path, query, &headers, body.to_string().into_bytes()).await?;
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        self.json(&r)
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<(), CliError> {
        self.send(Method::DELETE, path, query, &[], vec![]).await.map(drop)
    }

    pub fn json(&self, r: &Reply) -> Result<Value, CliError> {
        serde_json::from_slice(&r.body).map_err(|e| CliError::BadResponse {
            endpoint: self.endpoint.clone(),
            reason: format!("HTTP {} body is not JSON ({e}): {}", r.status, snippet(&r.body)),
        })
    }
}

/// The FC error document of a failed call; something else (a proxy's HTML page) still gives
/// the status, the request id header and the start of the body.
fn api_error(status: u16, headers: &HeaderMap, body: &[u8]) -> CliError {
    let header_rid = headers.get("x-fc-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| doc.as_ref().and_then(|d| d[k].as_str()).map(str::to_string);
    match field("Code") {
        Some(code) => CliError::Api {
            status,
            code,
            message: field("Message").unwrap_or_default(),
            request_id: field("RequestId").unwrap_or(header_rid),
        },
        None => CliError::Api { status, code: format!("HTTP{status}"), message: snippet(body), request_id: header_rid },
    }
}

/// At most 300 characters of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_and_other_bodies() {
        let mut h = HeaderMap::new();
        h.insert("x-fc-request-id", HeaderValue::from_static("1-hdr"));
        let e = api_error(404, &h, br#"{"Code":"FunctionNotFound","Message":"function 'x' does not exist","RequestId":"1-abc"}"#);
        assert_eq!(e.to_string(), "FunctionNotFound: function 'x' does not exist (HTTP 404, RequestId 1-abc)");
        let e = api_error(502, &h, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "HTTP502: <html>bad gateway</html> (HTTP 502, RequestId 1-hdr)");
        assert_eq!(enc("a b/ü~"), "a%20b%2F%C3%BC~");
    }
}
