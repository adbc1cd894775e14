//! Invocation logs, local store: one JSON line per log line, in
//! `<dir>/<function>/<YYYY-MM-DD>.jsonl`, written by one task fed through a bounded channel so
//! that a slow disk never blocks an invocation (a full buffer drops and counts instead).
//!
//! Searching these files, retention and the OpenSearch backend are later work; the `Tail`
//! header of a sync call is served from the capture itself, not from this store.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// RFC 3339 UTC, when the agent read the line.
    pub time: String,
    pub function_name: String,
    pub instance_id: String,
    /// Empty for lines printed outside any invocation (start-up output).
    pub request_id: String,
    pub stream: &'static str,
    pub message: String,
}

/// Cheap to clone; sending never blocks.
#[derive(Clone)]
pub struct LogStore {
    tx: mpsc::Sender<LogLine>,
    dropped: prometheus::IntCounter,
}

/// Lines buffered between the agents and the writer. A burst larger than this is dropped and
/// counted rather than stalling invocations.
const BUFFER_LINES: usize = 16_384;

impl LogStore {
    /// `dropped` counts lines refused because the buffer was full (a metric).
    pub fn open(
        dir: PathBuf,
        tracker: &TaskTracker,
        cancel: CancellationToken,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::channel(BUFFER_LINES);
        tracker.spawn(writer(dir, rx, cancel));
        Ok(Self { tx, dropped })
    }

    pub fn append(&self, line: LogLine) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

async fn writer(dir: PathBuf, mut rx: mpsc::Receiver<LogLine>, cancel: CancellationToken) {
    let mut files: HashMap<PathBuf, tokio::fs::File> = HashMap::new();
    loop {
        let first = tokio::select! {
            l = rx.recv() => l,
            // On shutdown, drain what is already buffered, then stop.
            _ = cancel.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let mut by_file: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        for line in batch {
            let day = line.time.get(..10).unwrap_or("unknown").to_string();
            let path = dir.join(&line.function_name).join(format!("{day}.jsonl"));
            let buf = by_file.entry(path).or_default();
            serde_json::to_writer(&mut *buf, &line).expect("log line serializes");
            buf.push(b'\n');
        }
        for (path, bytes) in by_file {
            if !files.contains_key(&path) {
                if let Some(parent) = path.parent() {
                    let _ = tokio::fs::create_dir_all(parent).await;
                }
                match tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await {
                    Ok(f) => {
                        files.insert(path.clone(), f);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "opening log file: {e:#}");
                        continue;
                    }
                }
            }
            if let Some(f) = files.get_mut(&path)
                && let Err(e) = f.write_all(&bytes).await
            {
                tracing::warn!(path = %path.display(), "writing log file: {e:#}");
                files.remove(&path);
            }
        }
        if files.len() > 256 {
            files.clear();
        }
    }
    for (_, mut f) in files {
        let _ = f.flush().await;
    }
}
