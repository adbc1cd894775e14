//! ACS3-HMAC-SHA256 request signing (Alibaba Cloud "signature V3"), server and client side.
//!
//! The official FC 3.0 SDKs sign every request this way (docs/fc-api.md §2). We rebuild the
//! canonical request from what actually arrived: the raw (still percent-encoded) path, the raw
//! query re-canonicalised, and exactly the headers the client lists in `SignedHeaders`. The list
//! must come from the request because SDKs differ: Python signs every header it sets (accept,
//! user-agent, x-fc-*), Node only host, content-type and x-acs-*. Python form-encodes the query
//! (`+` = space) and Node uses `%20`, so both are decoded and re-encoded with RFC 3986 before
//! signing. The body hash is the caller's job because it must be taken after de-chunking (Node
//! streams bodies with `Transfer-Encoding: chunked`).
//!
//! Secrets never appear in errors or `Debug` output; signatures are compared in constant time.

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// SHA-256 of the empty body (GET/DELETE requests).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// API version header value the client helper sends.
pub const API_VERSION: &str = "2023-03-30";
/// Headers that must be covered by the signature, otherwise host/replay/body could be swapped.
const REQUIRED_SIGNED: [&str; 3] = ["host", "x-acs-date", "x-acs-content-sha256"];
const DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// RFC 3986 unreserved characters stay literal; everything else is `%XX` (upper-case hex, as
/// Python's `quote(safe='~')` produces).
const PCT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The parsed `Authorization` header (the algorithm is already checked to be [`ALGORITHM`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub access_key_id: String,
    /// Lower-cased header names as listed by the client.
    pub signed_headers: Vec<String>,
    /// Lower-case hex signature.
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("required HTTP header Authorization was not specified")]
    MissingAuthorization,
    #[error(
        "the Authorization header is malformed, expected 'ACS3-HMAC-SHA256 Credential=<ak>,SignedHeaders=<h1;h2>,Signature=<hex>'"
    )]
    MalformedAuthorization,
    #[error("signature algorithm '{0}' is not supported, use ACS3-HMAC-SHA256")]
    UnsupportedAlgorithm(String),
    #[error("invalid access key ID '{0}'")]
    InvalidAccessKeyId(String),
    #[error("header '{0}' must be present in the request and listed in SignedHeaders")]
    MissingSignedHeader(String),
    #[error("x-acs-content-sha256 does not match the SHA-256 of the request body")]
    ContentHashMismatch,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your access key and signing method"
    )]
    SignatureMismatch,
    #[error("required HTTP header x-acs-date was not specified")]
    MissingDate,
    #[error("x-acs-date must be a UTC timestamp formatted as YYYY-MM-DDTHH:MM:SSZ")]
    InvalidDate,
    #[error("x-acs-date is too far from the server time, check the client clock")]
    RequestExpired,
}

impl AuthError {
    /// FC-style error code. The doc's table (§5) fixes MissingRequiredHeader, InvalidAccessKeyID
    /// and SignatureNotMatch; every other signing defect is reported as SignatureNotMatch so SDK
    /// users see one code for "your signing is wrong". The date codes are our choice ([INF]),
    /// named after the Alibaba API gateway's `InvalidTimeStamp.*`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization | Self::MissingDate => "MissingRequiredHeader",
            Self::InvalidAccessKeyId(_) => "InvalidAccessKeyID",
            Self::InvalidDate => "InvalidTimeStamp.Format",
            Self::RequestExpired => "InvalidTimeStamp.Expired",
            Self::MalformedAuthorization
            | Self::UnsupportedAlgorithm(_)
            | Self::MissingSignedHeader(_)
            | Self::ContentHashMismatch
            | Self::SignatureMismatch => "SignatureNotMatch",
        }
    }

    /// HTTP status: 400 for requests that lack what is needed to authenticate, 403 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingAuthorization | Self::MissingDate | Self::InvalidDate => 400,
            _ => 403,
        }
    }

    /// Human-readable message for the `Message` field of the error body.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Hand-parses `^(ACS3-[A-Z0-9-]+) Credential=([^,]*),SignedHeaders=([^,]*),Signature=([0-9a-f]+)$`.
/// A well-formed header with another ACS3 algorithm gives [`AuthError::UnsupportedAlgorithm`].
pub fn parse_authorization(value: &str) -> Result<AuthHeader, AuthError> {
    let bad = || AuthError::MalformedAuthorization;
    let (algorithm, rest) = value.split_once(' ').ok_or_else(bad)?;
    let alg_tail = algorithm.strip_prefix("ACS3-").ok_or_else(bad)?;
    if alg_tail.is_empty()
        || !alg_tail
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad());
    }
    let rest = rest.strip_prefix("Credential=").ok_or_else(bad)?;
    // `[^,]*` followed by a literal ',' means: everything up to the first comma.
    let (credential, rest) = rest.split_once(',').ok_or_else(bad)?;
    let rest = rest.strip_prefix("SignedHeaders=").ok_or_else(bad)?;
    let (signed, rest) = rest.split_once(',').ok_or_else(bad)?;
    let sig = rest.strip_prefix("Signature=").ok_or_else(bad)?;
    if sig.is_empty()
        || !sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    if algorithm != ALGORITHM {
        return Err(AuthError::UnsupportedAlgorithm(algorithm.to_string()));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(bad()); // "" or "a;;b": no SDK produces this
    }
    Ok(AuthHeader {
        access_key_id: credential.to_string(),
        signed_headers,
        signature: sig.to_string(),
    })
}

/// Canonical query string: split on '&', form-decode each pair (`+` = space), re-encode key and
/// value with RFC 3986, sort by key then value, join `k=v` with '&'. A key without '=' gives `k=`.
pub fn canonical_query(raw_query: &str) -> String {
    fn recode(s: &str) -> String {
        // Work on bytes so a non-UTF-8 value still round-trips deterministically.
        let spaced = s.replace('+', " ");
        let bytes: Vec<u8> = percent_decode(spaced.as_bytes()).collect();
        percent_encode(&bytes, PCT).to_string()
    }
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty()) // "a=1&&b=2" or a trailing '&' carry no parameter
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (recode(k), recode(v))
        })
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join("&")
}

/// Header value as text: UTF-8 if valid, otherwise Latin-1 (Python's http.client encodes header
/// strings as Latin-1, so this reproduces the string it signed).
fn header_text(v: &HeaderValue) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => s.into(),
        Err(_) => v.as_bytes().iter().map(|&b| b as char).collect::<String>().into(),
    }
}

/// Builds the canonical request (fc-api.md §2.2). `signed_headers` are sorted and de-duplicated
/// here (both SDKs send them sorted); an absent header contributes an empty value, [`verify`]
/// rejects that case before calling this.
pub fn canonical_request(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    signed_headers: &[String],
    body_sha256_hex: &str,
) -> String {
    canonical_request_with_query(method, raw_path, &canonical_query(raw_query), headers, signed_headers, body_sha256_hex)
}

/// [`canonical_request`] with the canonical query already built: HTTP triggers canonicalise
/// the query as openapi-util does for them (keys not encoded), see `crate::triggers::http`.
/// `payload` is the last line: the body hash, or empty.
pub fn canonical_request_with_query(
    method: &Method,
    raw_path: &str,
    canonical_query: &str,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload: &str,
) -> String {
    let mut names: Vec<String> = signed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    let mut out = String::with_capacity(256 + payload.len());
    for part in [method.as_str(), path, canonical_query] {
        out.push_str(part);
        out.push('\n');
    }
    for name in &names {
        // Runs on every signed request: one value (the usual case) is written without a list.
        let all = headers.get_all(name.as_str());
        let mut iter = all.iter();
        out.push_str(name);
        out.push(':');
        match (iter.next(), iter.next()) {
            (Some(v), None) => out.push_str(header_text(v).trim()),
            _ => {
                let mut values: Vec<String> = all.iter().map(|v| header_text(v).trim().to_string()).collect();
                values.sort();
                out.push_str(&values.join(","));
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(payload);
    out
}

pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

fn mac(secret: &str, string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Lower-case hex HMAC-SHA256 of `string_to_sign` keyed with the access key secret.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hex::encode(mac(secret, string_to_sign).finalize().into_bytes())
}

/// Whether `signature_hex` is the signature of `string_to_sign` with `secret`, compared in
/// constant time.
pub fn signature_matches(secret: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    hex::decode(signature_hex).is_ok_and(|provided| mac(secret, string_to_sign).verify_slice(&provided).is_ok())
}

/// Header value as text, as the signer saw it (see [`header_text`]).
pub fn header_value_text(v: &HeaderValue) -> String {
    header_text(v).into_owned()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything a verifier needs from the request (body hash is computed by the caller from the
/// de-chunked body). No `Debug`: headers may carry security tokens.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// Path exactly as received, not percent-decoded (ARNs in paths contain `%3A`/`%2F`).
    pub raw_path: &'a str,
    /// Query exactly as received, without the '?'; "" if none.
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body_sha256_hex: &'a str,
}

/// Verify; `secret_for` returns the secret of an access key id (None = unknown). `now` for the
/// clock-skew check. Returns the authenticated access key id.
///
/// Order: cheap structural checks first, then the key lookup, body hash and finally the HMAC.
pub fn verify(
    parts: &RequestParts,
    secret_for: impl FnOnce(&str) -> Option<String>,
    now: DateTime<Utc>,
    max_skew: std::time::Duration,
) -> Result<String, AuthError> {
    let mut auth_values = parts.headers.get_all("authorization").iter();
    let auth_value = auth_values.next().ok_or(AuthError::MissingAuthorization)?;
    if auth_values.next().is_some() {
        return Err(AuthError::MalformedAuthorization); // two Authorization headers: ambiguous
    }
    let auth = parse_authorization(
        auth_value
            .to_str()
            .map_err(|_| AuthError::MalformedAuthorization)?,
    )?;

    let date = parts
        .headers
        .get("x-acs-date")
        .ok_or(AuthError::MissingDate)?;
    for required in REQUIRED_SIGNED {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthError::MissingSignedHeader(required.to_string()));
        }
    }
    if let Some(absent) = auth
        .signed_headers
        .iter()
        .find(|h| !parts.headers.contains_key(h.as_str()))
    {
        return Err(AuthError::MissingSignedHeader(absent.clone()));
    }

    let date = date.to_str().map_err(|_| AuthError::InvalidDate)?.trim();
    // chrono's parser tolerates single-digit fields; the SDKs always send exactly this shape.
    let shape_ok = date.len() == 20
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let date = NaiveDateTime::parse_from_str(date, DATE_FORMAT)
        .ok()
        .filter(|_| shape_ok)
        .ok_or(AuthError::InvalidDate)?
        .and_utc();
    let max_skew = TimeDelta::from_std(max_skew).unwrap_or(TimeDelta::MAX);
    if (now - date).abs() > max_skew {
        return Err(AuthError::RequestExpired);
    }

    let secret = secret_for(&auth.access_key_id)
        .ok_or_else(|| AuthError::InvalidAccessKeyId(auth.access_key_id.clone()))?;

    let claimed = parts.headers.get("x-acs-content-sha256").map(header_text);
    if claimed.as_deref().map(str::trim) != Some(parts.body_sha256_hex) {
        return Err(AuthError::ContentHashMismatch);
    }

    let canonical = canonical_request(
        parts.method,
        parts.raw_path,
        parts.raw_query,
        parts.headers,
        &auth.signed_headers,
        parts.body_sha256_hex,
    );
    let provided = hex::decode(&auth.signature).map_err(|_| AuthError::SignatureMismatch)?;
    mac(&secret, &string_to_sign(&canonical))
        .verify_slice(&provided) // constant-time
        .map_err(|_| AuthError::SignatureMismatch)?;
    Ok(auth.access_key_id)
}

/// Client side (used by tests, the CLI and the benchmark): adds x-acs-date,
/// x-acs-signature-nonce, x-acs-content-sha256, x-acs-version (unless already set) and
/// Authorization, signing host, content-type (if present) and every x-acs-* / x-fc-* header
/// present (the Node SDK's set plus x-fc-*). `host` must already be in `headers`.
///
/// Panics if `access_key_id` contains characters not allowed in a header value.
#[allow(clippy::too_many_arguments)] // signature fixed by the module contract
pub fn sign_request(
    access_key_id: &str,
    secret: &str,
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) {
    debug_assert!(
        headers.contains_key("host"),
        "sign_request: host header must be set"
    );
    let body_hash = sha256_hex(body);
    let ascii = |s: String| HeaderValue::from_str(&s).expect("ASCII header value");
    headers.insert("x-acs-date", ascii(now.format(DATE_FORMAT).to_string()));
    headers.insert(
        "x-acs-signature-nonce",
        ascii(uuid::Uuid::new_v4().simple().to_string()),
    );
    headers.insert("x-acs-content-sha256", ascii(body_hash.clone()));
    if !headers.contains_key("x-acs-version") {
        headers.insert("x-acs-version", HeaderValue::from_static(API_VERSION));
    }
    headers.remove("authorization"); // re-signing must not leave a stale one behind
    let mut signed: Vec<String> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| {
            *k == "host"
                || *k == "content-type"
                || k.starts_with("x-acs-")
                || k.starts_with("x-fc-")
        })
        .map(str::to_string)
        .collect();
    signed.sort();
    let canonical = canonical_request(method, raw_path, raw_query, headers, &signed, &body_hash);
    let sig = signature(secret, &string_to_sign(&canonical));
    let value = format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={sig}",
        signed.join(";")
    );
    headers.insert(
        "authorization",
        HeaderValue::from_str(&value).expect("access key id must be a valid header value"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";
    const UA: &str = "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2";
    const PATH: &str = "/2023-03-30/functions/demo/invocations";

    fn at(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, DATE_FORMAT)
            .unwrap()
            .and_utc()
    }
    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }
    /// The Python SDK header set of the doc's worked examples (§2.4).
    fn python_headers(action: &str, body_hash: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("accept", "application/json"),
            ("host", "127.0.0.1:9000"),
            ("user-agent", UA),
            ("x-acs-action", action),
            ("x-acs-content-sha256", body_hash),
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", NONCE),
            ("x-acs-version", "2023-03-30"),
        ] {
            h.insert(k, hv(v));
        }
        h
    }
    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// A request as the server sees it; `run` verifies it against AK `AKID` / secret `SECRET`.
    #[derive(Clone)]
    struct Req {
        method: Method,
        path: &'static str,
        query: &'static str,
        headers: HeaderMap,
        body: Vec<u8>,
        now: DateTime<Utc>,
    }
    impl Req {
        /// Signed by [`sign_request`] with a Python-style query containing every awkward case.
        fn signed() -> Req {
            let (query, body, now) = (
                "b=x+y&a=1%2B2&a=0&flag&c=",
                b"payload",
                at("2024-05-06T07:08:09Z"),
            );
            let mut headers = HeaderMap::new();
            headers.insert("host", hv("localhost:9000"));
            headers.insert("content-type", hv("application/octet-stream"));
            headers.insert("x-acs-action", hv("InvokeFunction"));
            headers.insert("x-fc-log-type", hv("Tail"));
            headers.insert("user-agent", hv("test"));
            let m = Method::POST;
            sign_request("AKID", "SECRET", &m, PATH, query, &mut headers, body, now);
            let (method, path, body) = (m, PATH, body.to_vec());
            Req {
                method,
                path,
                query,
                headers,
                body,
                now,
            }
        }
        /// An unsigned-body GET as built by hand in the doc-vector tests.
        fn get(path: &'static str, query: &'static str, headers: HeaderMap, now: &str) -> Req {
            let (method, body, now) = (Method::GET, vec![], at(now));
            Req {
                method,
                path,
                query,
                headers,
                body,
                now,
            }
        }
        fn run(&self) -> Result<String, AuthError> {
            self.run_with_secret("SECRET")
        }
        fn run_with_secret(&self, secret: &str) -> Result<String, AuthError> {
            let hash = sha256_hex(&self.body);
            let parts = RequestParts {
                method: &self.method,
                raw_path: self.path,
                raw_query: self.query,
                headers: &self.headers,
                body_sha256_hex: &hash,
            };
            let secret_for = |ak: &str| (ak == "AKID").then(|| secret.to_string());
            verify(&parts, secret_for, self.now, Duration::from_secs(900))
        }
        /// Verify with header `name` set to `value` (or removed if `None`).
        fn with_header(
            &self,
            name: &'static str,
            value: Option<&str>,
        ) -> Result<String, AuthError> {
            self.with(|r| match value {
                Some(v) => drop(r.headers.insert(name, hv(v))),
                None => drop(r.headers.remove(name)),
            })
        }
        fn with(&self, change: impl FnOnce(&mut Req)) -> Result<String, AuthError> {
            let mut r = self.clone();
            change(&mut r);
            r.run()
        }
    }

    #[test]
    fn doc_vector_get() {
        let h = python_headers("GetFunction", EMPTY_SHA256);
        let (path, signed) = ("/2023-03-30/functions/demo", names(&h));
        let cr = canonical_request(
            &Method::GET,
            path,
            "qualifier=LATEST",
            &h,
            &signed,
            EMPTY_SHA256,
        );
        let signed_line = "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
        let expected = format!(
            "GET\n{path}\nqualifier=LATEST\naccept:application/json\nhost:127.0.0.1:9000\n\
             user-agent:{UA}\nx-acs-action:GetFunction\nx-acs-content-sha256:{EMPTY_SHA256}\n\
             x-acs-date:2024-01-01T00:00:00Z\nx-acs-signature-nonce:{NONCE}\n\
             x-acs-version:2023-03-30\n\n{signed_line}\n{EMPTY_SHA256}"
        );
        assert_eq!(cr, expected);
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
        let sts = string_to_sign(&cr);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\ne4ae74c915056ef52b101564daea0bf0b1ae24f322b4b122e3e62345dfba9175"
        );
        let sig = signature("SECRET", &sts);
        assert_eq!(
            sig,
            "f299fc316c1f4d4240ca91f8d4420d52e6aad9ab9131a3eb0ce7cbf338ed8f0b"
        );
        // The whole server path accepts it too.
        let mut headers = h;
        let auth =
            format!("{ALGORITHM} Credential=AKID,SignedHeaders={signed_line},Signature={sig}");
        headers.insert("authorization", hv(&auth));
        let req = Req::get(path, "qualifier=LATEST", headers, "2024-01-01T00:10:00Z");
        assert_eq!(req.run(), Ok("AKID".into()));
    }

    #[test]
    fn doc_vector_post_invoke() {
        let body = br#"{"k":"v"}"#;
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "666c1aa02e8068c6d5cc1d3295009432c16790bec28ec8ce119d0d1a18d61319"
        );
        let mut h = python_headers("InvokeFunction", &hash);
        h.insert("content-type", hv("application/octet-stream"));
        h.insert("x-fc-log-type", hv("Tail"));
        let sts = string_to_sign(&canonical_request(
            &Method::POST,
            PATH,
            "",
            &h,
            &names(&h),
            &hash,
        ));
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n575049ff9731f89493b6e93777cfd180e78f1926dc33240a9b4621ed1defb50b"
        );
        let sig = "b6e49eff3522a7c3da2d1f3bbb2923d872095f01c874c5939e1dd5fa326ff953";
        assert_eq!(signature("SECRET", &sts), sig);
    }

    #[test]
    fn query_and_header_canonicalisation() {
        assert_eq!(canonical_query(""), "");
        let q = "b=x+y&a=1%2B2&a=0&flag&c=&&z=%7e%2a";
        assert_eq!(canonical_query(q), "a=0&a=1%2B2&b=x%20y&c=&flag=&z=~%2A");
        // Python (urlencode) and Node (%20) spellings canonicalise identically.
        assert_eq!(canonical_query("d=a+b%2Bc"), canonical_query("d=a%20b%2Bc"));
        let mut h = HeaderMap::new();
        h.append("x-fc-a", hv(" b "));
        h.append("x-fc-a", hv("a"));
        let cr = canonical_request(&Method::GET, "", "", &h, &["X-FC-A".into()], EMPTY_SHA256);
        assert_eq!(
            cr,
            format!("GET\n/\n\nx-fc-a:a,b\n\nx-fc-a\n{EMPTY_SHA256}")
        );
    }

    #[test]
    fn round_trip_and_tampering() {
        use AuthError::*;
        let r = Req::signed();
        let auth = parse_authorization(r.headers["authorization"].to_str().unwrap()).unwrap();
        let expected = "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;\
                        x-acs-signature-nonce;x-acs-version;x-fc-log-type";
        assert_eq!(auth.signed_headers.join(";"), expected);
        assert_eq!(r.run(), Ok("AKID".into()));
        // Node-style spelling of the same query, pairs reordered.
        assert!(r.with(|r| r.query = "flag&c&a=0&b=x%20y&a=1%2B2").is_ok());
        // Unsigned headers may change (proxies, other user agents).
        assert!(r.with_header("user-agent", Some("other")).is_ok());
        assert!(r.with_header("content-length", Some("7")).is_ok());
        // Body swapped, alone or together with its hash header.
        assert_eq!(
            r.with(|r| r.body = b"other".to_vec()),
            Err(ContentHashMismatch)
        );
        let swap = |r: &mut Req| {
            r.body = b"other".to_vec();
            r.headers
                .insert("x-acs-content-sha256", hv(&sha256_hex(b"other")));
        };
        assert_eq!(r.with(swap), Err(SignatureMismatch));
        // Signed header, path, query or method changed.
        let log = r.with_header("x-fc-log-type", Some("None"));
        assert_eq!(log, Err(SignatureMismatch));
        assert_eq!(
            r.with(|r| r.path = "/2023-03-30/functions/x/invocations"),
            Err(SignatureMismatch)
        );
        assert_eq!(r.with(|r| r.query = "b=x+y"), Err(SignatureMismatch));
        assert_eq!(r.with(|r| r.method = Method::PUT), Err(SignatureMismatch));
        assert_eq!(r.run_with_secret("WRONG"), Err(SignatureMismatch));
        // A signed header removed.
        let missing = MissingSignedHeader("x-fc-log-type".into());
        assert_eq!(r.with_header("x-fc-log-type", None), Err(missing));
    }

    #[test]
    fn key_and_clock_errors() {
        use AuthError::*;
        let r = Req::signed();
        let auth = r.headers["authorization"]
            .to_str()
            .unwrap()
            .replace("=AKID", "=NOPE");
        let err = r.with_header("authorization", Some(&auth)).unwrap_err();
        assert_eq!((err.code(), err.status()), ("InvalidAccessKeyID", 403));
        assert_eq!(err.message(), "invalid access key ID 'NOPE'");
        assert!(r.with(|r| r.now += TimeDelta::minutes(15)).is_ok());
        assert_eq!(
            r.with(|r| r.now += TimeDelta::minutes(16)),
            Err(RequestExpired)
        );
        assert_eq!(
            r.with(|r| r.now -= TimeDelta::minutes(16)),
            Err(RequestExpired)
        );
        for bad in [
            "2024-5-06T07:08:09Z",
            "2024-05-06 07:08:09Z",
            "2024-05-06T07:08:09+00:00",
        ] {
            assert_eq!(
                r.with_header("x-acs-date", Some(bad)),
                Err(InvalidDate),
                "{bad}"
            );
        }
        assert_eq!(r.with_header("x-acs-date", None), Err(MissingDate));
        let err = r.with_header("authorization", None).unwrap_err();
        assert_eq!((err.code(), err.status()), ("MissingRequiredHeader", 400));
        assert_eq!(err, MissingAuthorization);
    }

    #[test]
    fn authorization_parsing() {
        let sig = "f299fc316c1f4d4240ca91f8d4420d52e6aad9ab9131a3eb0ce7cbf338ed8f0b";
        let ok =
            format!("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=Host;x-acs-date,Signature={sig}");
        let (access_key_id, signature) = ("AK".to_string(), sig.to_string());
        let signed_headers = vec!["host".to_string(), "x-acs-date".to_string()];
        let expected = AuthHeader {
            access_key_id,
            signed_headers,
            signature,
        };
        assert_eq!(parse_authorization(&ok), Ok(expected));
        let good = "Credential=AK,SignedHeaders=host,Signature=ab";
        for bad in [
            "".to_string(),
            "ACS3-HMAC-SHA256".into(),
            "Bearer abc".into(),
            format!("acs3-hmac-sha256 {good}"),
            format!("ACS3-HMAC-SHA256  {good}"),
            format!("ACS3-HMAC-SHA256 {good},"),
            format!("ACS3-HMAC-SHA256 {good}").replace("=ab", "=AB"),
            format!("ACS3-HMAC-SHA256 {good}").replace("=ab", "="),
            format!("ACS3-HMAC-SHA256 {good}").replace("=AK", "=A,K"),
            format!("ACS3-HMAC-SHA256 {good}").replace("=host", "="),
            "ACS3-HMAC-SHA256 SignedHeaders=host,Credential=AK,Signature=ab".into(),
        ] {
            assert_eq!(
                parse_authorization(&bad),
                Err(AuthError::MalformedAuthorization),
                "{bad:?}"
            );
        }
        let other = parse_authorization(&format!("ACS3-HMAC-SM3 {good}")).unwrap_err();
        assert_eq!(
            other,
            AuthError::UnsupportedAlgorithm("ACS3-HMAC-SM3".into())
        );
        assert_eq!((other.code(), other.status()), ("SignatureNotMatch", 403));
    }

    #[test]
    fn required_headers_must_be_signed() {
        // Correct HMAC, but x-acs-content-sha256 is left out of SignedHeaders.
        let mut headers = python_headers("GetFunction", EMPTY_SHA256);
        let mut signed = names(&headers);
        signed.retain(|n| n != "x-acs-content-sha256");
        let cr = canonical_request(&Method::GET, "/", "", &headers, &signed, EMPTY_SHA256);
        let sig = signature("SECRET", &string_to_sign(&cr));
        let auth = format!(
            "{ALGORITHM} Credential=AKID,SignedHeaders={},Signature={sig}",
            signed.join(";")
        );
        headers.insert("authorization", hv(&auth));
        let err = Req::get("/", "", headers, "2024-01-01T00:00:00Z")
            .run()
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::MissingSignedHeader("x-acs-content-sha256".into())
        );
        assert!(!format!("{err:?} {}", err.message()).contains("SECRET"));
    }
}
