//! GetFunctionLogs' query, on whichever source holds the logs: the local store when no cluster
//! is configured, else the cluster, where every node ships its lines. Both answer the same
//! filters (function, request id, instance, time range, literal case-sensitive substring),
//! newest first, in pages with an opaque cursor.
//!
//! On the cluster the query keeps to the documented query DSL (bool filter of term, range and
//! wildcard; sort; search_after), so any Elasticsearch/OpenSearch serves it:
//! - the substring filter is a `wildcard` on the `message.raw` keyword (case-sensitive, with
//!   the wildcard characters of the text escaped), as the local store's `instr`;
//! - the order is `@timestamp` desc, then `node`, then `seq` (the line's id in its node's
//!   logs.db): a total order, so `search_after` with the last hit's sort values pages without
//!   gaps or repeats while lines keep arriving (newer ones sort before the cursor).

use opensearch::{OpenSearch, SearchParts};
use serde_json::{Value, json};

use super::cluster::{self, ClusterError};
use super::{LogPage, LogQuery, LogStore, LogStoreError, StoredLine, rfc3339_ms};
use crate::config::OpenSearchConfig;

#[derive(Clone)]
pub enum LogSearch {
    Local(LogStore),
    Cluster(ClusterSearch),
}

#[derive(Clone)]
pub struct ClusterSearch {
    client: OpenSearch,
    /// `<index_prefix>-*`: every daily index.
    pattern: String,
}

impl LogSearch {
    /// The cluster when `[opensearch]` is enabled, else the local store.
    pub fn new(cfg: &OpenSearchConfig, local: LogStore) -> Result<Self, ClusterError> {
        if !cfg.enabled {
            return Ok(Self::Local(local));
        }
        Ok(Self::Cluster(ClusterSearch { client: cluster::client(cfg)?, pattern: format!("{}-*", cfg.index_prefix) }))
    }

    /// One page of `q` (at most `q.limit` lines), after `cursor` (the `next` of the page before).
    pub async fn page(&self, q: &LogQuery, cursor: Option<&str>) -> Result<LogPage, LogStoreError> {
        match self {
            Self::Local(store) => store.page(q, cursor).await,
            Self::Cluster(c) => c.page(q, cursor).await,
        }
    }
}

/// A wildcard pattern matching `text` literally anywhere (`\`, `*` and `?` escaped).
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('*');
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '?') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

/// The cursor is the last hit's sort values, `[epoch ms, node, seq]`, as JSON.
fn parse_cursor(cursor: &str) -> Result<Value, LogStoreError> {
    let v: Value = serde_json::from_str(cursor).map_err(|_| LogStoreError::BadCursor)?;
    match v.as_array().map(Vec::as_slice) {
        Some([ts, node, seq]) if ts.is_i64() && (node.is_string() || node.is_null()) && seq.is_i64() => Ok(v),
        _ => Err(LogStoreError::BadCursor),
    }
}

fn body(q: &LogQuery, after: Option<Value>) -> Value {
    let mut filter = vec![json!({"term": {"functionName": q.function}})];
    if let Some(r) = &q.request_id {
        filter.push(json!({"term": {"requestId": r}}));
    }
    if let Some(i) = &q.instance_id {
        filter.push(json!({"term": {"instanceId": i}}));
    }
    if q.from_ms.is_some() || q.to_ms.is_some() {
        let mut range = json!({"format": "epoch_millis"});
        if let Some(f) = q.from_ms {
            range["gte"] = json!(f);
        }
        if let Some(t) = q.to_ms {
            range["lte"] = json!(t);
        }
        filter.push(json!({"range": {"@timestamp": range}}));
    }
    if let Some(t) = &q.text {
        filter.push(json!({"wildcard": {"message.raw": {"value": contains_pattern(t)}}}));
    }
    let mut b = json!({
        "size": q.limit + 1,
        "track_total_hits": false,
        "query": {"bool": {"filter": filter}},
        // unmapped_type: indices made before the template had these fields still sort.
        "sort": [
            {"@timestamp": {"order": "desc"}},
            {"node": {"order": "desc", "unmapped_type": "keyword"}},
            {"seq": {"order": "desc", "unmapped_type": "long"}}
        ]
    });
    if let Some(a) = after {
        b["search_after"] = a;
    }
    b
}

fn line(hit: &Value) -> Result<StoredLine, ClusterError> {
    let s = &hit["_source"];
    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    let at = s["@timestamp"].as_str().ok_or_else(|| ClusterError::BadAnswer(format!("a hit without @timestamp: {hit}")))?;
    let ts = chrono::DateTime::parse_from_rfc3339(at).map_err(|e| ClusterError::BadAnswer(format!("@timestamp '{at}': {e}")))?;
    let ts = ts.timestamp_millis();
    Ok(StoredLine {
        timestamp: ts,
        time: rfc3339_ms(ts),
        function_name: text("functionName"),
        instance_id: text("instanceId"),
        request_id: text("requestId"),
        stream: text("stream"),
        message: text("message"),
        summary: s.get("summary").and_then(|v| serde_json::from_value(v.clone()).ok()),
        id: s["seq"].as_i64().unwrap_or_default(),
    })
}

impl ClusterSearch {
    async fn page(&self, q: &LogQuery, cursor: Option<&str>) -> Result<LogPage, LogStoreError> {
        let after = cursor.map(parse_cursor).transpose()?;
        let resp = self
            .client
            .search(SearchParts::Index(&[&self.pattern]))
            // No daily index yet (nothing shipped): an empty page, not an error.
            .allow_no_indices(true)
            .ignore_unavailable(true)
            .body(body(q, after))
            .send()
            .await
            .map_err(ClusterError::from)?;
        let v = cluster::ok_json(resp).await?;
        let hits = v["hits"]["hits"].as_array().ok_or_else(|| ClusterError::BadAnswer("no hits.hits in a search answer".into()))?;
        let mut lines = Vec::with_capacity(hits.len());
        let mut sorts = Vec::with_capacity(hits.len());
        for h in hits {
            lines.push(line(h)?);
            sorts.push(h["sort"].clone());
        }
        let next = if lines.len() > q.limit as usize {
            lines.truncate(q.limit as usize);
            Some(sorts[lines.len() - 1].to_string())
        } else {
            None
        };
        Ok(LogPage { lines, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_substring_filter_is_literal() {
        assert_eq!(contains_pattern("a*b?c\\d"), "*a\\*b\\?c\\\\d*");
        assert_eq!(contains_pattern("plain text"), "*plain text*");
    }

    #[test]
    fn only_cursors_of_this_shape_are_accepted() {
        assert!(parse_cursor("[1767225600001,\"node-1\",42]").is_ok());
        for bad in ["", "42", "[1,2,3]", "[\"x\",\"n\",1]", "[1,\"n\"]", "{}"] {
            assert!(matches!(parse_cursor(bad), Err(LogStoreError::BadCursor)), "{bad}");
        }
    }

    #[test]
    fn every_filter_is_in_the_query() {
        let q = LogQuery {
            function: "f".into(),
            request_id: Some("r".into()),
            instance_id: Some("i".into()),
            from_ms: Some(1),
            to_ms: Some(2),
            text: Some("x".into()),
            before_id: None,
            limit: 10,
        };
        let b = body(&q, Some(json!([2, "n", 7])));
        assert_eq!(b["size"], 11);
        assert_eq!(b["query"]["bool"]["filter"].as_array().unwrap().len(), 5);
        assert_eq!(b["query"]["bool"]["filter"][3]["range"]["@timestamp"], json!({"format": "epoch_millis", "gte": 1, "lte": 2}));
        assert_eq!(b["search_after"], json!([2, "n", 7]));
    }
}
