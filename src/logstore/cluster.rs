//! The connection to Elasticsearch/OpenSearch (the `opensearch` crate), shared by the shipper
//! and the log search: node URLs, basic auth, TLS (a private CA, or no verification at all when
//! asked for explicitly), the request deadline, and the index template every log index gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opensearch::OpenSearch;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::Url;
use opensearch::http::transport::{Connection, ConnectionPool, SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::IndicesPutIndexTemplateParts;
use serde_json::json;

use crate::config::OpenSearchConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `[opensearch]` settings that cannot work; the server does not start with them.
    #[error("opensearch settings: {0}")]
    Config(String),
    /// No answer: connection refused, timed out, TLS failure.
    #[error("the cluster is unreachable: {0}")]
    Unreachable(#[from] opensearch::Error),
    /// The cluster answered with an error status.
    #[error("the cluster answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// The cluster answered 2xx with something that is not the documented shape.
    #[error("unexpected answer from the cluster: {0}")]
    BadAnswer(String),
}

/// Requests go to the nodes in turn: one node down fails one request, and the caller's retry
/// (the shipper's backoff, a client's retry after a 503) reaches the next node.
#[derive(Debug, Clone)]
struct RoundRobin {
    nodes: Arc<Vec<Connection>>,
    next: Arc<AtomicUsize>,
}

impl ConnectionPool for RoundRobin {
    fn next(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].clone()
    }
}

fn parse_url(u: &str) -> Result<Url, ClusterError> {
    let url = Url::parse(u).map_err(|e| ClusterError::Config(format!("url '{u}': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClusterError::Config(format!("url '{u}' must be http(s)://host[:port]")));
    }
    Ok(url)
}

/// A client for the configured cluster. Makes no request: an unreachable cluster is found out
/// (and retried) by whoever uses it.
pub fn client(cfg: &OpenSearchConfig) -> Result<OpenSearch, ClusterError> {
    let urls = cfg.urls().into_iter().map(parse_url).collect::<Result<Vec<_>, _>>()?;
    let mut builder = match urls.len() {
        0 => return Err(ClusterError::Config("url is empty".into())),
        1 => TransportBuilder::new(SingleNodeConnectionPool::new(urls[0].clone())),
        _ => TransportBuilder::new(RoundRobin {
            nodes: Arc::new(urls.iter().cloned().map(Connection::new).collect()),
            next: Arc::default(),
        }),
    };
    builder = builder.timeout(cfg.timeout());
    if !cfg.username.is_empty() {
        builder = builder.auth(Credentials::Basic(cfg.username.clone(), cfg.password.clone()));
    }
    match (cfg.ca_cert_file.is_empty(), cfg.insecure_skip_verify) {
        (false, true) => return Err(ClusterError::Config("set ca_cert_file or insecure_skip_verify, not both".into())),
        (true, true) => {
            tracing::warn!("opensearch.insecure_skip_verify is on: the cluster's certificate is not verified");
            builder = builder.cert_validation(CertificateValidation::None);
        }
        (false, false) => {
            let path = &cfg.ca_cert_file;
            let pem = std::fs::read(path).map_err(|e| ClusterError::Config(format!("ca_cert_file '{path}': {e}")))?;
            let ca = Certificate::from_pem(&pem).map_err(|e| ClusterError::Config(format!("ca_cert_file '{path}': {e}")))?;
            builder = builder.cert_validation(CertificateValidation::Full(ca));
        }
        (true, false) => {}
    }
    let transport = builder.build().map_err(|e| ClusterError::Config(format!("building the client: {e}")))?;
    Ok(OpenSearch::new(transport))
}

/// The body of a response, or `Refused` with the cluster's own words for an error status.
pub async fn ok_json(resp: opensearch::http::response::Response) -> Result<serde_json::Value, ClusterError> {
    let status = resp.status_code();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(ClusterError::Refused { status: status.as_u16(), body: body.chars().take(2000).collect() });
    }
    resp.json().await.map_err(|e| ClusterError::BadAnswer(e.to_string()))
}

/// Install (or update) the index template of `<prefix>-*`. Explicit mappings, because dynamic
/// ones would make ids and names full-text and the message only full-text: `message.raw` (a
/// keyword) serves the literal, case-sensitive substring filter of GetFunctionLogs; `node` +
/// `seq` (the line's id in its node's logs.db) make the sort order total, for paging.
/// A template applies to indices created after it: a day's index made before an upgrade keeps
/// its old mapping.
pub async fn put_template(client: &OpenSearch, prefix: &str) -> Result<(), ClusterError> {
    let keyword = json!({"type": "keyword"});
    let body = json!({
        "index_patterns": [format!("{prefix}-*")],
        "priority": 100,
        "template": {"mappings": {"properties": {
            "@timestamp": {"type": "date"},
            "functionName": keyword,
            "qualifier": keyword,
            "requestId": keyword,
            "instanceId": keyword,
            "node": keyword,
            "seq": {"type": "long"},
            "stream": keyword,
            "message": {"type": "text", "fields": {"raw": keyword}},
            "summary": {"properties": {
                "functionName": keyword,
                "qualifier": keyword,
                "requestId": keyword,
                "instanceId": keyword,
                "nodeId": keyword,
                "invocationType": keyword,
                "startTime": {"type": "date"},
                "endTime": {"type": "date"},
                "durationMs": {"type": "double"},
                "memorySizeMB": {"type": "integer"},
                "maxMemoryUsedMB": {"type": "double"},
                "outcome": keyword,
                "coldStart": {"type": "boolean"},
                "error": {"type": "text"}
            }}
        }}}
    });
    let resp = client.indices().put_index_template(IndicesPutIndexTemplateParts::Name(prefix)).body(body).send().await?;
    ok_json(resp).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> OpenSearchConfig {
        OpenSearchConfig { url: url.into(), ..Default::default() }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_key_named() {
        let err = |c: OpenSearchConfig| match client(&c) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{c:?} accepted"),
        };
        assert!(err(cfg("")).contains("url is empty"));
        assert!(err(cfg("ftp://x:1")).contains("must be http(s)"));
        assert!(err(cfg("http://127.0.0.1:9200, not a url")).contains("not a url"));
        let both = OpenSearchConfig { ca_cert_file: "/x.pem".into(), insecure_skip_verify: true, ..Default::default() };
        assert!(err(both).contains("not both"));
        let missing = OpenSearchConfig { ca_cert_file: "/nonexistent/ca.pem".into(), ..Default::default() };
        assert!(err(missing).contains("ca_cert_file '/nonexistent/ca.pem'"));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let bad = OpenSearchConfig { ca_cert_file: junk.display().to_string(), ..Default::default() };
        assert!(err(bad).contains("ca_cert_file"));
        assert!(client(&cfg("http://127.0.0.1:9200,https://127.0.0.1:9201")).is_ok());
        assert!(client(&OpenSearchConfig { insecure_skip_verify: true, ..cfg("https://127.0.0.1:1") }).is_ok());
    }
}
