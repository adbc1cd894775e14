//! Log shipping to Elasticsearch/OpenSearch (the `opensearch` crate), exactly once, never in
//! the invoke path.
//!
//! The local store is the spill: the shipper tails `log_lines` by id, keeping its cursor (the
//! last id shipped) in `ship_cursor` in the same file. Each round reads the next `batch_size`
//! lines after the cursor and sends them in ONE `_bulk` request, an `index` action per line
//! whose `_id` is `<node_id>-<line id>`: a batch sent again (after a timeout whose request did
//! land, say) overwrites the same documents instead of adding copies, so every line is in the
//! index exactly once. The cursor moves only past lines the cluster acknowledged. While the
//! cluster is unreachable the shipper backs off (200 ms doubling to 10 s) and keeps its cursor;
//! lines keep accumulating locally (retention keeps unshipped ones) and are sent when it returns.

use std::str::FromStr;
use std::time::Duration;

use opensearch::{BulkParts, OpenSearch};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LogStore;
use super::cluster::{self, ClusterError};
use crate::config::OpenSearchConfig;

/// The cursor's name in `ship_cursor` (and in the log store's retention).
pub const TARGET: &str = "opensearch";

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Pause when there is nothing new to ship.
const IDLE: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct ShipMetrics {
    pub backlog: prometheus::IntGauge,
    pub shipped: prometheus::IntCounter,
    pub errors: prometheus::IntCounter,
}

pub struct Shipper {
    pool: SqlitePool,
    cfg: OpenSearchConfig,
    node_id: String,
    client: OpenSearch,
    metrics: ShipMetrics,
}

struct LineRow {
    id: i64,
    ts_ms: i64,
    function_name: String,
    request_id: String,
    instance_id: String,
    stream: String,
    message: String,
    /// The invocation summary's JSON, on platform lines.
    summary: Option<String>,
}

/// Why a round shipped less than its batch.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading logs.db: {0}")]
    Local(#[from] sqlx::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Some lines of the batch were not acknowledged (429, 5xx, or no item for them).
    #[error("{missing} of {sent} lines not accepted yet (retrying)")]
    Partial { missing: usize, sent: usize },
}

impl Shipper {
    /// Opens its own connections to the store's file (the writer closes its pool at shutdown,
    /// and the shipper still makes a last attempt after that).
    pub async fn new(store: &LogStore, cfg: OpenSearchConfig, node_id: String, metrics: ShipMetrics) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", store.path().display()))?
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        sqlx::query("INSERT OR IGNORE INTO ship_cursor (target, last_id) VALUES (?, 0)").bind(TARGET).execute(&pool).await?;
        let client = cluster::client(&cfg)?;
        Ok(Self { pool, cfg, node_id, client, metrics })
    }

    /// Run until `cancel`; then wait for the log writer's last batch and make one last attempt
    /// to ship everything (at most 8 s in all: the server waits 10 s for background tasks), and
    /// stop. What is left is shipped at the next start (the cursor is in logs.db).
    pub fn spawn(self, store: LogStore, tracker: &TaskTracker, cancel: CancellationToken) {
        tracker.spawn(async move {
            self.run(&cancel).await;
            let last = async {
                store.writer_finished().await;
                loop {
                    match self.ship_once().await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("log shipping at shutdown: {e:#}; the rest is shipped at next start");
                            break;
                        }
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(8), last).await.is_err() {
                tracing::warn!("log shipping at shutdown took too long; the rest is shipped at next start");
            }
            self.pool.close().await;
        });
    }

    async fn run(&self, cancel: &CancellationToken) {
        let mut template_ok = false;
        let mut backoff = BACKOFF_MIN;
        while !cancel.is_cancelled() {
            if !template_ok {
                match cluster::put_template(&self.client, &self.cfg.index_prefix).await {
                    Ok(()) => template_ok = true,
                    Err(e) => tracing::warn!(url = %self.cfg.url, "installing the log index template: {e:#} (retrying)"),
                }
            }
            let pause = match self.ship_once().await {
                Ok(n) => {
                    backoff = BACKOFF_MIN;
                    if n >= self.cfg.batch_size.max(1) { Duration::ZERO } else { IDLE }
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(url = %self.cfg.url, retry_in = ?backoff, "log shipping: {e:#}");
                    let p = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    p
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }

    async fn cursor(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT last_id FROM ship_cursor WHERE target = ?").bind(TARGET).fetch_one(&self.pool).await
    }

    /// Ship the next batch; returns how many lines it covered (0: nothing to do).
    async fn ship_once(&self) -> Result<usize, ShipError> {
        let cursor = self.cursor().await?;
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM log_lines").fetch_one(&self.pool).await?;
        self.metrics.backlog.set((max.unwrap_or(0) - cursor).max(0));
        let rows = sqlx::query(
            "SELECT id, ts_ms, function_name, request_id, instance_id, stream, message, summary FROM log_lines WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(cursor)
        .bind(self.cfg.batch_size.max(1) as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(LineRow {
                id: r.try_get("id")?,
                ts_ms: r.try_get("ts_ms")?,
                function_name: r.try_get("function_name")?,
                request_id: r.try_get("request_id")?,
                instance_id: r.try_get("instance_id")?,
                stream: r.try_get("stream")?,
                message: r.try_get("message")?,
                summary: r.try_get("summary")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let Some(last) = rows.last().map(|r| r.id) else { return Ok(0) };
        // Two lines per document (action, source), as `_bulk` takes them.
        let mut body = Vec::with_capacity(rows.len() * 2);
        for r in &rows {
            let t = chrono::DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default();
            let action = json!({"index": {
                "_index": format!("{}-{}", self.cfg.index_prefix, t.format("%Y.%m.%d")),
                "_id": self.doc_id(r.id),
            }});
            let mut doc = json!({
                "@timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "functionName": r.function_name,
                "qualifier": "LATEST",
                "requestId": r.request_id,
                "instanceId": r.instance_id,
                "node": self.node_id,
                "seq": r.id,
                "stream": r.stream,
                "message": r.message,
            });
            if let Some(s) = r.summary.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                doc["summary"] = s;
            }
            body.push(action.to_string());
            body.push(doc.to_string());
        }
        let resp = self.client.bulk(BulkParts::None).body(body).send().await.map_err(ClusterError::from)?;
        let v = cluster::ok_json(resp).await?;
        // The cursor may move past every line up to the first one that failed and may succeed
        // on a retry (429, 5xx, or no answer for it). Lines after it that did succeed are sent
        // again with the same _id, which overwrites them: still exactly once.
        let mut upto = last;
        let mut permanent = 0u64;
        if v["errors"].as_bool() != Some(false) {
            let items = v["items"].as_array().map(Vec::as_slice).unwrap_or_default();
            for (i, r) in rows.iter().enumerate() {
                let item = items.get(i).map(|it| &it["index"]);
                let st = item.and_then(|it| it["status"].as_u64()).unwrap_or(0);
                if (200..300).contains(&st) {
                    continue;
                }
                if st == 0 || st == 429 || st >= 500 {
                    upto = r.id - 1;
                    break;
                }
                // A document the cluster refuses for good (mapping conflict, ...) would stop
                // shipping forever if retried: counted, logged, skipped.
                permanent += 1;
                tracing::warn!(id = r.id, status = st, error = %item.map(|it| it["error"].to_string()).unwrap_or_default(), "log line refused by the cluster; skipped");
            }
        }
        if upto > cursor {
            sqlx::query("UPDATE ship_cursor SET last_id = ? WHERE target = ?").bind(upto).bind(TARGET).execute(&self.pool).await?;
            let covered = rows.iter().take_while(|r| r.id <= upto).count() as u64;
            self.metrics.shipped.inc_by(covered.saturating_sub(permanent));
            self.metrics.backlog.set((max.unwrap_or(0) - upto).max(0));
        }
        self.metrics.errors.inc_by(permanent);
        if upto < last {
            return Err(ShipError::Partial { missing: rows.iter().filter(|r| r.id > upto).count(), sent: rows.len() });
        }
        Ok(rows.len())
    }

    fn doc_id(&self, id: i64) -> String {
        format!("{}-{}", self.node_id, id)
    }
}
