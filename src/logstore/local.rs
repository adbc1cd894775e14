//! The local log store: one row per log line in `<data_dir>/logs.db`, a SQLite file of
//! its own (log volume must not contend with the metadata database and its queue), indexed by
//! function and time and by function and request id, so the log query API can answer "what did
//! request X print" and "what happened in the last hour" without scanning. It survives
//! restarts; retention drops lines older than `logs.retention_days` and keeps at most
//! `logs.max_lines`.
//!
//! Lines come from the agents through a bounded channel to one writer task that inserts them
//! in batches (lines gathered for 10 ms, one transaction per batch), so a slow disk never
//! blocks an invocation: a full buffer drops lines and counts them
//! (`nubis_log_lines_dropped_total`). The `Tail` header of a
//! sync call is served from the capture itself, not from this store.
//!
//! The store is also the spill of log shipping ([`super::shipper`]): a shipper tails it by id and keeps
//! its cursor in `ship_cursor`; retention keeps lines a shipping target has not sent yet.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LogLine, LogPage, LogQuery, LogStoreError, StoredLine, rfc3339_ms};
use crate::config::LogsConfig;

/// Cheap to clone (one reference count: every invocation's records pass a clone around);
/// sending never blocks.
#[derive(Clone)]
pub struct LogStore(Arc<Inner>);

impl std::ops::Deref for LogStore {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    tx: mpsc::Sender<LogLine>,
    pool: SqlitePool,
    dropped: prometheus::IntCounter,
    path: std::path::PathBuf,
    /// Shipping targets whose unshipped lines retention keeps.
    ship_targets: Vec<String>,
    unshipped_dropped: prometheus::IntCounter,
    /// Cancelled when the writer has written its last batch (after shutdown).
    writer_done: CancellationToken,
}

/// Lines buffered between the agents and the writer. A burst larger than this is dropped and
/// counted rather than stalling invocations.
const BUFFER_LINES: usize = 16_384;
const BATCH: usize = 2048;
/// How long the writer gathers lines after the first before it writes them.
const LINGER: Duration = Duration::from_millis(10);
const RETENTION_EVERY: Duration = Duration::from_secs(600);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS log_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function_name TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    message TEXT NOT NULL,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS log_lines_fn_ts ON log_lines (function_name, ts_ms);
CREATE INDEX IF NOT EXISTS log_lines_fn_req ON log_lines (function_name, request_id);
CREATE TABLE IF NOT EXISTS ship_cursor (target TEXT PRIMARY KEY, last_id INTEGER NOT NULL);";

impl LogStore {
    /// `dropped` counts lines refused because the buffer was full (a metric). `ship_targets`
    /// name the enabled shipping targets (their cursors in `ship_cursor`): retention keeps the
    /// lines they have not shipped, unless `max_lines` is exceeded (`unshipped_dropped` counts
    /// the unshipped lines deleted then).
    pub async fn open(
        path: &Path,
        cfg: LogsConfig,
        tracker: &TaskTracker,
        cancel: CancellationToken,
        dropped: prometheus::IntCounter,
        ship_targets: Vec<String>,
        unshipped_dropped: prometheus::IntCounter,
    ) -> Result<Self, LogStoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Losing the last moments of logs on a power cut is acceptable; losing throughput is not.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        // logs.db files made before invocation summaries existed lack their column.
        let has_summary: bool =
            sqlx::query_scalar("SELECT COUNT(*) > 0 FROM pragma_table_info('log_lines') WHERE name = 'summary'").fetch_one(&pool).await?;
        if !has_summary {
            sqlx::query("ALTER TABLE log_lines ADD COLUMN summary TEXT").execute(&pool).await?;
        }
        let (tx, rx) = mpsc::channel(BUFFER_LINES);
        let writer_done = CancellationToken::new();
        let store = Self(Arc::new(Inner {
            tx,
            pool,
            dropped,
            path: path.to_path_buf(),
            ship_targets,
            unshipped_dropped,
            writer_done: writer_done.clone(),
        }));
        tracker.spawn(writer(store.clone(), cfg, rx, cancel, writer_done));
        Ok(store)
    }

    /// The SQLite file (the shipper opens its own connections to it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Completes once the writer has stopped (after shutdown, with its buffer written).
    pub async fn writer_finished(&self) {
        self.writer_done.cancelled().await
    }

    pub fn append(&self, line: LogLine) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// One page, newest first; the cursor is the last line's id.
    pub async fn page(&self, q: &LogQuery, cursor: Option<&str>) -> Result<LogPage, LogStoreError> {
        let before_id = cursor.map(|c| c.parse::<i64>().map_err(|_| LogStoreError::BadCursor)).transpose()?;
        let mut lines = self.query(&LogQuery { before_id, limit: q.limit + 1, ..q.clone() }).await?;
        let next = (lines.len() > q.limit as usize).then(|| {
            lines.truncate(q.limit as usize);
            lines[lines.len() - 1].id.to_string()
        });
        Ok(LogPage { lines, next })
    }

    /// Newest first.
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<StoredLine>, LogStoreError> {
        let mut b = QueryBuilder::new(
            "SELECT id, function_name, ts_ms, request_id, instance_id, stream, message, summary FROM log_lines WHERE function_name = ",
        );
        b.push_bind(&q.function);
        if let Some(r) = &q.request_id {
            b.push(" AND request_id = ").push_bind(r);
        }
        if let Some(i) = &q.instance_id {
            b.push(" AND instance_id = ").push_bind(i);
        }
        if let Some(f) = q.from_ms {
            b.push(" AND ts_ms >= ").push_bind(f);
        }
        if let Some(t) = q.to_ms {
            b.push(" AND ts_ms <= ").push_bind(t);
        }
        if let Some(t) = &q.text {
            // instr, not LIKE: a literal, case-sensitive substring (no wildcards to escape).
            b.push(" AND instr(message, ").push_bind(t).push(") > 0");
        }
        if let Some(id) = q.before_id {
            b.push(" AND id < ").push_bind(id);
        }
        b.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let ts: i64 = r.try_get("ts_ms")?;
                let summary: Option<String> = r.try_get("summary")?;
                Ok(StoredLine {
                    id: r.try_get("id")?,
                    timestamp: ts,
                    time: rfc3339_ms(ts),
                    function_name: r.try_get("function_name")?,
                    instance_id: r.try_get("instance_id")?,
                    request_id: r.try_get("request_id")?,
                    stream: r.try_get("stream")?,
                    message: r.try_get("message")?,
                    // Written by this store from the typed summary: unreadable only if corrupt.
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Apply retention now (the writer also does it every few minutes). Returns lines removed.
    pub async fn apply_retention(&self, cfg: &LogsConfig) -> Result<u64, LogStoreError> {
        self.retention(cfg).await
    }

    async fn retention(&self, cfg: &LogsConfig) -> Result<u64, LogStoreError> {
        let pool = &self.pool;
        // Lines up to here are shipped to every enabled target (a target that never shipped
        // has cursor 0): only those may go for their age.
        let mut shipped_upto = i64::MAX;
        for t in &self.ship_targets {
            let c: Option<i64> =
                sqlx::query_scalar("SELECT last_id FROM ship_cursor WHERE target = ?").bind(t).fetch_optional(pool).await?;
            shipped_upto = shipped_upto.min(c.unwrap_or(0));
        }
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(cfg.retention_days) * 86_400_000;
        let old =
            sqlx::query("DELETE FROM log_lines WHERE ts_ms < ? AND id <= ?").bind(cutoff).bind(shipped_upto).execute(pool).await?;
        // The row cap wins over shipping: a target away for long must not fill the disk. Lines
        // deleted here before they were shipped are lost to that target; they are counted
        // (nubis_log_lines_unshipped_dropped_total) and the shipper skips past them.
        // Ids grow with insertion, so "all but the newest max_lines" is one range.
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM log_lines").fetch_one(pool).await?;
        let Some(max) = max else { return Ok(old.rows_affected()) };
        let limit = max - i64::try_from(cfg.max_lines).unwrap_or(i64::MAX);
        if limit <= 0 {
            return Ok(old.rows_affected());
        }
        if shipped_upto < limit {
            let lost: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_lines WHERE id > ? AND id <= ?")
                .bind(shipped_upto)
                .bind(limit)
                .fetch_one(pool)
                .await?;
            if lost > 0 {
                tracing::warn!(lines = lost, "log store over logs.max_lines: deleting lines not yet shipped");
                self.unshipped_dropped.inc_by(lost as u64);
            }
        }
        let over = sqlx::query("DELETE FROM log_lines WHERE id <= ?").bind(limit).execute(pool).await?;
        Ok(old.rows_affected() + over.rows_affected())
    }
}

/// Rows per multi-row INSERT. Each statement is a round trip to sqlx's SQLite worker thread
/// (a channel send and a wake-up each way), which cost more than SQLite's own work for a row;
/// 32 rows of 7 values stay far below SQLite's bound-parameter limit.
const ROWS_PER_INSERT: usize = 32;
const INSERT_HEAD: &str = "INSERT INTO log_lines (function_name, ts_ms, request_id, instance_id, stream, message, summary) VALUES";
const ROW: &str = "(?, ?, ?, ?, ?, ?, ?)";

/// One transaction: full chunks of [`ROWS_PER_INSERT`] lines as one multi-row INSERT, the rest
/// one line per INSERT. Only these two SQL texts exist, so both stay prepared on each connection
/// (a statement per batch size would be prepared again and again).
async fn insert(pool: &SqlitePool, batch: &[LogLine]) -> Result<(), sqlx::Error> {
    static INSERT_MANY: LazyLock<String> = LazyLock::new(|| format!("{INSERT_HEAD} {}", [ROW; ROWS_PER_INSERT].join(", ")));
    static INSERT_ONE: LazyLock<String> = LazyLock::new(|| format!("{INSERT_HEAD} {ROW}"));
    let mut tx = pool.begin().await?;
    let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        chunk.iter().fold(sqlx::query(INSERT_MANY.as_str()), bind_line).execute(&mut *tx).await?;
    }
    for l in chunks.remainder() {
        bind_line(sqlx::query(INSERT_ONE.as_str()), l).execute(&mut *tx).await?;
    }
    tx.commit().await
}

type Insert<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_line<'q>(q: Insert<'q>, l: &'q LogLine) -> Insert<'q> {
    q.bind(&l.function_name)
        .bind(l.ts_ms)
        .bind(&l.request_id)
        .bind(&l.instance_id)
        .bind(l.stream)
        .bind(&l.message)
        .bind(l.summary.as_ref().map(|s| serde_json::to_string(s).expect("a summary serializes")))
}

async fn writer(
    store: LogStore,
    cfg: LogsConfig,
    mut rx: mpsc::Receiver<LogLine>,
    cancel: CancellationToken,
    done: CancellationToken,
) {
    // (The sender inside `store` does not keep the writer alive: shutdown closes `rx`.)
    let pool = store.pool.clone();
    let mut next_retention = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_retention {
            if let Err(e) = store.retention(&cfg).await {
                tracing::warn!("log retention: {e:#}");
            }
            next_retention += RETENTION_EVERY;
        }
        let first = tokio::select! {
            l = rx.recv() => l,
            _ = tokio::time::sleep_until(next_retention) => continue,
            // On shutdown, write what is already buffered, then stop.
            _ = cancel.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        // Lines keep coming for a moment: one commit for all of them writes each touched page
        // to the WAL once, where a commit per handful of lines wrote the same pages again and
        // again. (On shutdown `rx` is closed: recv_many returns what is buffered, then 0.)
        let linger = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(linger, rx.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if let Err(e) = insert(&pool, &batch).await {
            tracing::warn!(lines = batch.len(), "writing log lines: {e:#}");
        }
    }
    pool.close().await;
    done.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::InvocationSummary;

    fn line(function: &str, ts_ms: i64, msg: &str) -> LogLine {
        LogLine {
            ts_ms,
            function_name: function.into(),
            instance_id: "i".into(),
            request_id: "r".into(),
            stream: "stdout",
            message: msg.into(),
            summary: None,
        }
    }

    #[tokio::test]
    async fn retention_drops_old_lines_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogsConfig { retention_days: 1, max_lines: 3 };
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let c = || prometheus::IntCounter::new("d", "d").unwrap();
        let store = LogStore::open(&dir.path().join("l.db"), cfg.clone(), &tracker, cancel.clone(), c(), vec![], c()).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let lines: Vec<_> = [(now - 3 * 86_400_000, "old")].into_iter().chain((0..5).map(|i| (now + i, "new"))).map(|(t, m)| line("f", t, m)).collect();
        insert(&store.pool, &lines).await.unwrap();
        // The writer also applies retention when it starts, which may have run already.
        store.apply_retention(&cfg).await.unwrap();
        let q = LogQuery { function: "f".into(), limit: 10, ..Default::default() };
        let left = store.query(&q).await.unwrap();
        assert_eq!(left.len(), 3, "the old line is gone, and the two beyond max_lines");
        assert!(left.iter().all(|l| l.message == "new" && l.timestamp >= now + 2));
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_batch_of_several_multi_row_inserts_and_single_rows_keeps_every_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let c = || prometheus::IntCounter::new("d", "d").unwrap();
        let store = LogStore::open(&dir.path().join("l.db"), LogsConfig::default(), &tracker, cancel.clone(), c(), vec![], c()).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        // Two full chunks and a remainder.
        let n = 2 * ROWS_PER_INSERT as i64 + 5;
        let stream = |i: i64| if i % 2 == 0 { "stdout" } else { "stderr" };
        let lines: Vec<_> =
            (0..n).map(|i| LogLine { request_id: format!("r{i}"), stream: stream(i), ..line("f", now + i, &format!("m{i}")) }).collect();
        insert(&store.pool, &lines).await.unwrap();
        let q = LogQuery { function: "f".into(), limit: 1000, ..Default::default() };
        let mut got = store.query(&q).await.unwrap();
        got.reverse();
        assert_eq!(got.len() as i64, n);
        for (i, l) in (0..).zip(&got) {
            let want = (now + i, format!("r{i}"), format!("m{i}"), stream(i));
            assert_eq!((l.timestamp, l.request_id.clone(), l.message.clone(), l.stream.as_str()), want);
        }
        cancel.cancel();
    }

    #[tokio::test]
    async fn shutdown_writes_every_buffered_line_before_the_writer_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let c = || prometheus::IntCounter::new("d", "d").unwrap();
        let store = LogStore::open(&path, LogsConfig::default(), &tracker, cancel.clone(), c(), vec![], c()).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        // More than two batches, appended at once and cancelled at once.
        let n = 2 * BATCH + 7;
        for i in 0..n {
            store.append(line("f", now, &format!("m{i}")));
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), store.writer_finished()).await.expect("the writer finishes");
        // The writer closed its pool: count through a connection of our own.
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap();
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_lines").fetch_one(&pool).await.unwrap();
        assert_eq!(stored, n as i64);
    }

    #[tokio::test]
    async fn retention_keeps_unshipped_lines_unless_over_the_row_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogsConfig { retention_days: 1, max_lines: 100 };
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let (dropped, unshipped) = (prometheus::IntCounter::new("d", "d").unwrap(), prometheus::IntCounter::new("u", "u").unwrap());
        let store = LogStore::open(&dir.path().join("l.db"), cfg.clone(), &tracker, cancel.clone(), dropped, vec!["t".into()], unshipped.clone())
            .await
            .unwrap();
        let old = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
        let lines: Vec<_> = (0..5).map(|i| line("f", old + i, "old")).collect();
        insert(&store.pool, &lines).await.unwrap();
        let ids = |s: LogStore| async move {
            let q = LogQuery { function: "f".into(), limit: 10, ..Default::default() };
            s.query(&q).await.unwrap().iter().map(|l| l.id).rev().collect::<Vec<_>>()
        };
        // No cursor yet: the target shipped nothing, so nothing may go for its age.
        store.apply_retention(&cfg).await.unwrap();
        assert_eq!(ids(store.clone()).await, [1, 2, 3, 4, 5]);
        sqlx::query("INSERT INTO ship_cursor (target, last_id) VALUES ('t', 2)").execute(&store.pool).await.unwrap();
        store.apply_retention(&cfg).await.unwrap();
        assert_eq!(ids(store.clone()).await, [3, 4, 5], "only shipped old lines are deleted");
        assert_eq!(unshipped.get(), 0);
        // Over the row cap, unshipped lines go too, and are counted.
        store.apply_retention(&LogsConfig { retention_days: 1, max_lines: 1 }).await.unwrap();
        assert_eq!(ids(store.clone()).await, [5]);
        assert_eq!(unshipped.get(), 2);
        cancel.cancel();
    }

    #[tokio::test]
    async fn summaries_round_trip_pages_chain_and_an_old_file_gets_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        // A logs.db as written before summaries existed.
        let old = SqlitePoolOptions::new()
            .connect_with(SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap().create_if_missing(true))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(SCHEMA.replace(",\n    summary TEXT", ""))).execute(&old).await.unwrap();
        insert_old(&old).await;
        old.close().await;
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let c = || prometheus::IntCounter::new("d", "d").unwrap();
        let store = LogStore::open(&path, LogsConfig::default(), &tracker, cancel.clone(), c(), vec![], c()).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let summary: InvocationSummary = serde_json::from_value(serde_json::json!({
            "functionName": "f", "qualifier": "LATEST", "requestId": "r", "instanceId": "i", "nodeId": "n",
            "invocationType": "Sync", "startTime": rfc3339_ms(now - 5), "endTime": rfc3339_ms(now), "durationMs": 5.0,
            "memorySizeMB": 128, "maxMemoryUsedMB": 30.25, "outcome": "success", "coldStart": true
        }))
        .unwrap();
        let mut lines: Vec<_> = (0..3).map(|i| line("f", now + i, "x")).collect();
        lines.push(summary.clone().into_line());
        insert(&store.pool, &lines).await.unwrap();
        let q = LogQuery { function: "f".into(), limit: 2, ..Default::default() };
        let first = store.page(&q, None).await.unwrap();
        assert_eq!(first.lines[0].summary.as_ref(), Some(&summary), "the newest line is the summary, fields intact");
        assert_eq!(first.lines[0].stream, "platform");
        let second = store.page(&q, first.next.as_deref()).await.unwrap();
        let third = store.page(&q, second.next.as_deref()).await.unwrap();
        assert_eq!((first.lines.len(), second.lines.len(), third.lines.len(), third.next.as_deref()), (2, 2, 1, None));
        assert_eq!(third.lines[0].message, "old line", "the line written before the upgrade is still there");
        assert!(third.lines[0].summary.is_none());
        assert!(matches!(store.page(&q, Some("not an id")).await, Err(LogStoreError::BadCursor)));
        cancel.cancel();
    }

    async fn insert_old(pool: &SqlitePool) {
        // Recent: the writer applies retention when it starts.
        let ts = chrono::Utc::now().timestamp_millis() - 1000;
        sqlx::query("INSERT INTO log_lines (function_name, ts_ms, request_id, instance_id, stream, message) VALUES ('f', ?, 'r', 'i', 'stdout', 'old line')")
            .bind(ts)
            .execute(pool)
            .await
            .unwrap();
    }
}
