//! `authType: function`: requests signed with an access key of this server, the way FC's
//! samples sign HTTP trigger calls (fc-triggers.md §1.3): Alibaba Cloud signature V3
//! (ACS3-HMAC-SHA256) computed by openapi-util's `get_authorization` over
//! `{method, pathname, headers, query}` and an **empty payload**.
//!
//! How this differs from the API's signing (`crate::api::auth`), and why:
//! - The client chooses which headers to sign and passes exactly those; only `x-acs-date` is
//!   required here (it bounds replays), not `host` or `x-acs-content-sha256`.
//! - The last line of the canonical request is empty: the body is not signed. A client that
//!   sends `x-acs-content-sha256` (and signs it) may sign that hash instead; the body must
//!   then hash to it.
//! - The query is canonicalised from a parsed map: keys sorted and **not encoded**, values
//!   percent-encoded (RFC 3986), one value per key (the last, as a dict keeps it).
//! - `x-acs-date` is parsed leniently (Go sends whole seconds, Node and Java fractions).
//!
//! The signed path is the path the client requested, prefix included. A proxy that rewrites
//! paths (strips a prefix) breaks signatures; so does one that rewrites signed headers.

use axum::http::{HeaderMap, Method};
use chrono::{DateTime, TimeDelta, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::api::auth::{canonical_request_with_query, header_value_text, parse_authorization, signature_matches, string_to_sign};

/// RFC 3986 unreserved stay literal (Python's `quote(v, safe='~')`).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a signed HTTP trigger call was refused. FC's words where its docs give them.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TriggerAuthError {
    /// No Authorization header, or no `x-acs-date`: FC answers with its FC 2.0 wording.
    #[error("required HTTP header Date was not specified")]
    Missing,
    #[error("the Authorization header is malformed, expected 'ACS3-HMAC-SHA256 Credential=<ak>,SignedHeaders=<h1;h2>,Signature=<hex>'")]
    Malformed,
    #[error("x-acs-date must be listed in SignedHeaders")]
    DateNotSigned,
    #[error("header '{0}' is listed in SignedHeaders but absent from the request")]
    SignedHeaderAbsent(String),
    #[error("x-acs-date '{0}' is not an ISO 8601 UTC time")]
    BadDate(String),
    #[error("the difference between the request time '{request}' and the current time '{now}' is too large")]
    Skewed { request: String, now: String },
    #[error("invalid access key ID '{0}'")]
    UnknownKey(String),
    #[error("x-acs-content-sha256 does not match the SHA-256 of the request body")]
    BodyHashMismatch,
    #[error("The request signature we calculated does not match the signature you provided. Check your access key and signing method")]
    Mismatch,
}

/// The request as received: method, raw path (still percent-encoded), raw query.
pub struct SignedRequest<'a> {
    pub method: &'a Method,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
}

impl SignedRequest<'_> {
    /// Whether the client asked for its body hash to be signed (the body must then be read
    /// before [`verify`]).
    pub fn signs_body_hash(&self) -> bool {
        self.headers.contains_key("x-acs-content-sha256")
    }
}

/// openapi-util's canonical query for a trigger call: pairs decoded form-style (`+` is a
/// space), one value per key (the last), keys sorted and written as they are, values
/// percent-encoded.
pub fn canonical_query(raw_query: &str) -> String {
    let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let mut map = std::collections::BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(decode(k), decode(v));
    }
    map.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, VALUE))).collect::<Vec<_>>().join("&")
}

/// `x-acs-date` as Go, Node and Java send it: RFC 3339 with or without fractions.
fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim()).ok().map(|d| d.with_timezone(&Utc))
}

fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Verify; `secret_for` returns the secret of an access key id (None: unknown);
/// `body_sha256_hex` is the body's hash when [`SignedRequest::signs_body_hash`] (else
/// ignored). Returns the access key id that signed.
pub fn verify(
    r: &SignedRequest,
    body_sha256_hex: Option<&str>,
    secret_for: impl FnOnce(&str) -> Option<String>,
    now: DateTime<Utc>,
    max_skew: std::time::Duration,
) -> Result<String, TriggerAuthError> {
    let mut values = r.headers.get_all("authorization").iter();
    let value = values.next().ok_or(TriggerAuthError::Missing)?;
    if values.next().is_some() {
        return Err(TriggerAuthError::Malformed);
    }
    let auth = parse_authorization(value.to_str().map_err(|_| TriggerAuthError::Malformed)?).map_err(|_| TriggerAuthError::Malformed)?;
    let date = r.headers.get("x-acs-date").ok_or(TriggerAuthError::Missing)?;
    if !auth.signed_headers.iter().any(|h| h == "x-acs-date") {
        return Err(TriggerAuthError::DateNotSigned);
    }
    if let Some(absent) = auth.signed_headers.iter().find(|h| !r.headers.contains_key(h.as_str())) {
        return Err(TriggerAuthError::SignedHeaderAbsent(absent.clone()));
    }
    let date_text = header_value_text(date);
    let at = parse_date(&date_text).ok_or_else(|| TriggerAuthError::BadDate(date_text.clone()))?;
    if (now - at).abs() > TimeDelta::from_std(max_skew).unwrap_or(TimeDelta::MAX) {
        return Err(TriggerAuthError::Skewed { request: rfc1123(at), now: rfc1123(now) });
    }
    let secret = secret_for(&auth.access_key_id).ok_or_else(|| TriggerAuthError::UnknownKey(auth.access_key_id.clone()))?;

    // The payload line: empty (every official sample), or the body hash the client declared.
    let mut payloads = vec![String::new()];
    if let Some(claimed) = r.headers.get("x-acs-content-sha256").map(header_value_text) {
        if body_sha256_hex != Some(claimed.trim()) {
            return Err(TriggerAuthError::BodyHashMismatch);
        }
        payloads.push(claimed.trim().to_string());
    }
    let query = canonical_query(r.raw_query);
    // Signed as requested; openapi-util's samples encode `$` in the path as `%24` first.
    let paths = [r.raw_path.to_string(), r.raw_path.replace('$', "%24")];
    for path in paths.iter().take(if paths[0] == paths[1] { 1 } else { 2 }) {
        for payload in &payloads {
            let canonical = canonical_request_with_query(r.method, path, &query, r.headers, &auth.signed_headers, payload);
            if signature_matches(&secret, &string_to_sign(&canonical), &auth.signature) {
                return Ok(auth.access_key_id);
            }
        }
    }
    Err(TriggerAuthError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn at(s: &str) -> DateTime<Utc> {
        parse_date(s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const SKEW: std::time::Duration = std::time::Duration::from_secs(900);

    fn run(method: &Method, path: &str, query: &str, h: &HeaderMap, now: &str) -> Result<String, TriggerAuthError> {
        let r = SignedRequest { method, raw_path: path, raw_query: query, headers: h };
        verify(&r, None, |ak| (ak == "testAK").then(|| "testSecret".to_string()), at(now), SKEW)
    }

    /// fc-triggers.md §1.3, vector 1 (computed with alibabacloud-openapi-util).
    #[test]
    fn doc_vector_post_with_query() {
        let canonical = canonical_request_with_query(
            &Method::POST,
            "/hello",
            &canonical_query("foo=bar&a%20b=c%20d"),
            &headers(&[("x-acs-date", "2024-01-01T00:00:00Z")]),
            &["x-acs-date".to_string()],
            "",
        );
        assert_eq!(canonical, "POST\n/hello\na b=c%20d&foo=bar\nx-acs-date:2024-01-01T00:00:00Z\n\nx-acs-date\n");
        let sig = "96995926221521348650e06762b0985ed250a485ae9696478b3ec978d5605439";
        let h = headers(&[
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("authorization", &format!("ACS3-HMAC-SHA256 Credential=testAK,SignedHeaders=x-acs-date,Signature={sig}")),
            // Not signed, so not part of the signature.
            ("user-agent", "curl/8"),
        ]);
        assert_eq!(run(&Method::POST, "/hello", "foo=bar&a%20b=c%20d", &h, "2024-01-01T00:05:00Z").unwrap(), "testAK");
        // Python's urlencode writes the same query with '+'.
        assert!(run(&Method::POST, "/hello", "a+b=c+d&foo=bar", &h, "2024-01-01T00:05:00Z").is_ok());
        assert_eq!(run(&Method::POST, "/hello", "foo=baz&a%20b=c%20d", &h, "2024-01-01T00:05:00Z"), Err(TriggerAuthError::Mismatch));
        assert_eq!(run(&Method::GET, "/hello", "foo=bar&a%20b=c%20d", &h, "2024-01-01T00:05:00Z"), Err(TriggerAuthError::Mismatch));
        assert_eq!(run(&Method::POST, "/hello2", "foo=bar&a%20b=c%20d", &h, "2024-01-01T00:05:00Z"), Err(TriggerAuthError::Mismatch));
    }

    /// fc-triggers.md §1.3, vector 2: an empty security token, signed.
    #[test]
    fn doc_vector_get_with_empty_token() {
        let sig = "d18e05ef75d89534fdd5993dac1a39d1b3038d9ac8ea0fa70d667d03187d23cf";
        let h = headers(&[
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("x-acs-security-token", ""),
            ("authorization", &format!("ACS3-HMAC-SHA256 Credential=testAK,SignedHeaders=x-acs-date;x-acs-security-token,Signature={sig}")),
        ]);
        assert_eq!(run(&Method::GET, "/", "", &h, "2024-01-01T00:00:00Z").unwrap(), "testAK");
        assert_eq!(run(&Method::GET, "", "", &h, "2024-01-01T00:00:00Z").unwrap(), "testAK", "an empty path signs as /");
    }

    #[test]
    fn refusals() {
        let now = "2024-01-01T00:00:00Z";
        let auth = |signed: &str| format!("ACS3-HMAC-SHA256 Credential=testAK,SignedHeaders={signed},Signature=00");
        let cases: Vec<(HeaderMap, TriggerAuthError)> = vec![
            (headers(&[("x-acs-date", now)]), TriggerAuthError::Missing),
            (headers(&[("authorization", &auth("x-acs-date"))]), TriggerAuthError::Missing),
            (headers(&[("authorization", "Bearer x"), ("x-acs-date", now)]), TriggerAuthError::Malformed),
            (headers(&[("authorization", &auth("host")), ("host", "h"), ("x-acs-date", now)]), TriggerAuthError::DateNotSigned),
            (headers(&[("authorization", &auth("x-acs-date;x-a")), ("x-acs-date", now)]), TriggerAuthError::SignedHeaderAbsent("x-a".into())),
            (headers(&[("authorization", &auth("x-acs-date")), ("x-acs-date", "yesterday")]), TriggerAuthError::BadDate("yesterday".into())),
            (
                headers(&[("authorization", &auth("x-acs-date")), ("x-acs-date", "2023-12-31T23:44:59Z")]),
                TriggerAuthError::Skewed { request: "Sun, 31 Dec 2023 23:44:59 GMT".into(), now: "Mon, 01 Jan 2024 00:00:00 GMT".into() },
            ),
            (
                headers(&[("authorization", &auth("x-acs-date").replace("testAK", "other")), ("x-acs-date", now)]),
                TriggerAuthError::UnknownKey("other".into()),
            ),
            (headers(&[("authorization", &auth("x-acs-date")), ("x-acs-date", now)]), TriggerAuthError::Mismatch),
        ];
        for (h, want) in cases {
            assert_eq!(run(&Method::GET, "/", "", &h, now), Err(want.clone()), "{want}");
        }
        // Fractional seconds (Node's toISOString) parse.
        assert!(parse_date("2024-02-22T09:21:31.123Z").is_some());
    }

    /// A client that signs its body hash: the body must match it, and either payload line
    /// verifies.
    #[test]
    fn a_declared_body_hash_is_checked() {
        let body_hash = crate::api::auth::sha256_hex(b"{\"k\":\"v\"}");
        let mut h = headers(&[("x-acs-date", "2024-01-01T00:00:00Z"), ("x-acs-content-sha256", &body_hash)]);
        let signed = ["x-acs-content-sha256".to_string(), "x-acs-date".to_string()];
        let canonical = canonical_request_with_query(&Method::PUT, "/p", "", &h, &signed, &body_hash);
        let sig = crate::api::auth::signature("testSecret", &string_to_sign(&canonical));
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("ACS3-HMAC-SHA256 Credential=testAK,SignedHeaders=x-acs-content-sha256;x-acs-date,Signature={sig}")).unwrap(),
        );
        let r = SignedRequest { method: &Method::PUT, raw_path: "/p", raw_query: "", headers: &h };
        assert!(r.signs_body_hash());
        let secret = |_: &str| Some("testSecret".to_string());
        assert!(verify(&r, Some(&body_hash), secret, at("2024-01-01T00:00:00Z"), SKEW).is_ok());
        let other = crate::api::auth::sha256_hex(b"tampered");
        assert_eq!(verify(&r, Some(&other), secret, at("2024-01-01T00:00:00Z"), SKEW), Err(TriggerAuthError::BodyHashMismatch));
    }
}
