//! The control plane ↔ agent protocol, shared by [`super::service`] (the agent's side) and
//! [`super::remote`] (the resource manager's side). Plain HTTP/1.1 on the agent's own listener,
//! never the public API's:
//!
//! | call | request | answer |
//! |---|---|---|
//! | `POST /internal/v1/instances` | [`InstanceSpec`](super::InstanceSpec) JSON | [`InstanceInfo`](super::InstanceInfo) JSON |
//! | `POST /internal/v1/instances/{id}/invoke` | the event (or an HTTP trigger's body, streamed), raw; control headers below | the function's status, headers and body (streamed for an HTTP trigger; cut on a failure part-way) |
//! | `DELETE /internal/v1/instances/{id}` | | 204 |
//! | `GET /internal/v1/instances` | | `[InstanceReport]` |
//! | `POST /internal/v1/reset` | | `{"stopped": n}`: every instance stopped |
//! | `POST /internal/v1/summaries` | an `InvocationSummary` | 204: the agent measures and stores it |
//!
//! Every call carries `Authorization: Bearer <cluster.secret>`. A failure of the agent or the
//! function is answered with [`ERROR_HEADER`] set and an [`AgentError`](super::AgentError) as
//! JSON, so the controller sees the same error the in-process node would have returned.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hmac::{KeyInit, Mac};

pub const PREFIX: &str = "/internal/v1";
/// Control headers of an invoke call; stripped before the event reaches the instance.
pub const REQUEST_ID: &str = "x-nubis-request-id";
pub const TIMEOUT_MS: &str = "x-nubis-timeout-ms";
pub const WANT_LOGS: &str = "x-nubis-want-logs";
/// An HTTP trigger's request passed through: its method and its origin-form path; absent on
/// events. With them the agent streams both bodies ([`super::Node::invoke_stream`]).
pub const HTTP_METHOD: &str = "x-nubis-http-method";
pub const HTTP_PATH: &str = "x-nubis-http-path";
/// On control calls (start, stop, list, reset): the caller's fencing epoch, the revision of its
/// leader key in etcd. Agents refuse epochs older than the newest they have seen.
pub const EPOCH: &str = "x-nubis-epoch";
/// On an invoke answer: the function reported an error; its log tail (base64).
pub const FUNCTION_ERROR: &str = "x-nubis-function-error";
pub const LOGS: &str = "x-nubis-logs";
/// On any answer: the body is an AgentError.
pub const ERROR_HEADER: &str = "x-nubis-agent-error";

/// True for headers that describe one hop of a connection, never relayed.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "content-length" | "host"
    ) || name.as_str().starts_with("x-nubis-")
}

/// Headers minus hop-by-hop and protocol ones.
pub fn relayable(headers: &HeaderMap) -> HeaderMap {
    headers.iter().filter(|(n, _)| !is_hop_by_hop(n)).map(|(n, v)| (n.clone(), v.clone())).collect()
}

/// Compare a presented bearer token with the cluster secret in constant time (HMAC
/// verification compares tags without early exit).
pub fn token_matches(secret: &str, presented: &str) -> bool {
    type H = hmac::Hmac<sha2::Sha256>;
    let tag = |s: &str| {
        let mut m = <H as KeyInit>::new_from_slice(b"nubis-cluster-token").expect("any key length");
        m.update(s.as_bytes());
        m
    };
    let expected = tag(secret).finalize().into_bytes();
    !secret.is_empty() && tag(presented).verify_slice(&expected).is_ok()
}

/// Middleware of the internal listeners (agents, controllers): the cluster secret as a bearer
/// token, or 401.
pub async fn require_secret(
    axum::extract::State(secret): axum::extract::State<std::sync::Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let presented = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if token_matches(&secret, t) => next.run(req).await,
        _ => error_response(axum::http::StatusCode::UNAUTHORIZED, super::AgentError::Internal("missing or wrong cluster secret".into())),
    }
}

/// An AgentError as the protocol answers it: JSON, with [`ERROR_HEADER`] set.
pub fn error_response(status: axum::http::StatusCode, e: super::AgentError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (status, axum::Json(e)).into_response();
    resp.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static("1"));
    resp
}

/// `Authorization` value for the secret.
pub fn bearer(secret: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {secret}")).unwrap_or_else(|_| HeaderValue::from_static("Bearer -"))
}

/// Serde for a HeaderMap as a list of `[name, value]` pairs (values that are not UTF-8 are
/// dropped: instance headers come from validated config).
pub mod header_map {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(h.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            let n = HeaderName::try_from(n).map_err(serde::de::Error::custom)?;
            let v = HeaderValue::try_from(v).map_err(serde::de::Error::custom)?;
            h.append(n, v);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_and_empty_secret_never_matches() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret "));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn agent_errors_round_trip() {
        use super::super::AgentError;
        for e in [AgentError::Timeout(3), AgentError::Crashed(None), AgentError::Unavailable("x".into())] {
            let json = serde_json::to_string(&e).unwrap();
            let back: AgentError = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_string(), e.to_string());
        }
    }
}
