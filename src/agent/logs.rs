//! Per-instance log capture: splits an instance's stdout/stderr into per-invocation records.
//!
//! Built-in runtimes print `FC Invoke Start RequestId: X` / `FC Invoke End RequestId: X`
//! around each invocation, so lines from Start on belong to X, even when they arrive after the
//! HTTP response. stdout and stderr are separate pipes that race each other, so a traceback on
//! stderr can reach us before `Start` or after `End` on stdout: the bootstraps therefore print
//! both markers on both streams, each stream's lines belong to the call its own markers frame,
//! and a record is complete once both Ends are in (then quiet for a moment; or the next Start
//! on stdout, or a deadline for images that print the markers on stdout only).
//!
//! Custom servers need not print markers: the agent opens the record itself when it sends the
//! request (its own Start line) and closes it once the response is in and the streams have gone
//! quiet (its End line). A server that prints the markers itself, as FC's contract asks, has its
//! copies dropped (for the last [`FRAMED_KEPT`] calls), so a call shows one of each. A line
//! arriving later still goes to the store
//! under the last request id, but not into that call's `Tail`.
//!
//! Caps: a line longer than [`MAX_LINE`] is cut, and an invocation keeps at most
//! [`MAX_RECORD`] bytes in memory for its tail; both are marked, never silent. Flood guard: an
//! instance may write [`FLOOD_RATE`] lines a second (bursts of [`FLOOD_BURST`]); a function
//! printing in a loop has the excess dropped, so it cannot swamp the node or the log store, and
//! a `[nubis] N log lines dropped` line says how many went where they were lost. The flood
//! guard never drops the framing lines (`FC Invoke Start/End`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::logstore::{LogLine, LogStore};

pub const MAX_LINE: usize = 16 * 1024;
pub const MAX_RECORD: usize = 1 << 20;
pub const FLOOD_RATE: f64 = 2_000.0;
pub const FLOOD_BURST: f64 = 10_000.0;
const START: &str = "FC Invoke Start RequestId: ";
const END: &str = "FC Invoke End RequestId: ";
/// Quiet time after which a finished record takes no more trailing lines.
const QUIET: Duration = Duration::from_millis(30);
/// Most time spent waiting for a record to finish (its End marker, then quiet streams). The
/// markers always come (the bootstrap prints them on both streams), so this bound only matters
/// on a machine so loaded that Docker's log pipeline lags: 2 s proved too short there once.
const WAIT_MARKED: Duration = Duration::from_secs(5);
const WAIT_UNMARKED: Duration = Duration::from_millis(300);
/// Records kept open at once; an older one is closed with what it has (calls on an instance
/// with `instanceConcurrency` > 1 overlap, and a crashed call never prints its End).
const MAX_OPEN: usize = 16;
/// Calls a custom server's marker copies are recognised for (see `State::framed`).
const FRAMED_KEPT: usize = 64;

pub struct LogCapture {
    function_name: String,
    instance_id: String,
    markers: bool,
    store: LogStore,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Records not yet closed, oldest first (one per invocation in flight; a few at most).
    open: Vec<Record>,
    /// The request each stream is inside of, between its Start and its End (stdout, stderr).
    /// Each pipe keeps its own order but the two race each other, so a line is attributed by
    /// the markers of its own stream: a traceback on stderr can arrive before stdout's Start.
    cur: [Option<String>; 2],
    /// Request id of the last closed record, for lines that trail it.
    last: Option<String>,
    /// Custom servers: the calls the agent framed lately, newest last, so that a server's own
    /// copy of a marker is recognised even when Docker's log stream delivers it after later
    /// calls began (overlapping calls, or a lagging stream).
    framed: std::collections::VecDeque<String>,
    waiters: HashMap<String, oneshot::Sender<String>>,
    last_line_at: Option<Instant>,
    /// Token bucket of the flood guard: lines this instance may still write now.
    tokens: f64,
    refilled_at: Option<Instant>,
    /// Lines dropped by the flood guard since the last marker.
    dropped: u64,
}

impl State {
    fn record(&mut self, id: &str) -> Option<&mut Record> {
        self.open.iter_mut().find(|r| r.request_id == id)
    }

    /// The request a line of stream `s` without a marker belongs to. An image whose bootstrap
    /// prints no stderr Start has its stderr follow stdout's.
    fn owner(&self, s: usize) -> Option<String> {
        self.cur[s]
            .clone()
            .or_else(|| if s == 1 { self.cur[0].clone() } else { None })
            .or_else(|| self.open.last().map(|r| r.request_id.clone()))
            .or_else(|| self.last.clone())
    }
}

struct Record {
    request_id: String,
    text: String,
    truncated: bool,
    /// Streams whose End marker has been read (built-in runtimes print it on both): bit 0
    /// stdout, bit 1 stderr. Each pipe keeps its own order, so a stream's End means all it
    /// printed for the invocation is in.
    ends: u8,
}

impl Record {
    fn push(&mut self, line: &str) {
        if self.text.len() + line.len() + 1 > MAX_RECORD {
            if !self.truncated {
                self.text.push_str("[nubis] log output of this invocation truncated\n");
                self.truncated = true;
            }
            return;
        }
        self.text.push_str(line);
        self.text.push('\n');
    }
}

fn cut(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [truncated {} bytes]", &line[..end], line.len() - end)
}

impl LogCapture {
    pub fn new(function_name: String, instance_id: String, markers: bool, store: LogStore) -> Self {
        Self { function_name, instance_id, markers, store, state: Mutex::new(State::default()) }
    }

    fn emit(&self, request_id: &str, stream: &'static str, message: String) {
        self.store.append(LogLine {
            ts_ms: chrono::Utc::now().timestamp_millis(),
            function_name: self.function_name.clone(),
            instance_id: self.instance_id.clone(),
            request_id: request_id.to_string(),
            stream,
            message,
            summary: None,
        });
    }

    /// Take a token for one line; false if the instance is over its rate.
    fn admit(st: &mut State, now: Instant) -> bool {
        let since = st.refilled_at.map_or(FLOOD_BURST, |t| now.duration_since(t).as_secs_f64() * FLOOD_RATE);
        st.tokens = (st.tokens + since).min(FLOOD_BURST);
        st.refilled_at = Some(now);
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            true
        } else {
            st.dropped += 1;
            false
        }
    }

    /// Say how many lines the flood guard dropped, in the store and in `request_id`'s record.
    fn mark_dropped(&self, st: &mut State, request_id: &str) {
        if st.dropped == 0 {
            return;
        }
        let marker = format!("[nubis] {} log lines dropped: more than {FLOOD_RATE} lines a second", st.dropped);
        st.dropped = 0;
        if let Some(rec) = st.record(request_id) {
            rec.push(&marker);
        }
        self.emit(request_id, "stderr", marker);
    }

    /// One line read from the container (without its newline).
    pub fn line(&self, stream: &'static str, raw: &str) {
        let line = cut(raw.trim_end_matches(['\r', '\n']));
        let s = usize::from(stream == "stderr");
        let mut st = self.state.lock().expect("capture lock");
        let now = Instant::now();
        st.last_line_at = Some(now);
        let framing = line.starts_with(START) || line.starts_with(END);
        if !framing && !Self::admit(&mut st, now) {
            return;
        }
        if self.markers
            && let Some(id) = line.strip_prefix(START).map(|id| id.trim().to_string())
        {
            st.cur[s] = Some(id.clone());
            if s == 0 {
                // The next call on stdout: earlier records take nothing more from it (an image
                // without the stderr End would otherwise keep them open until the deadline).
                let stale: Vec<String> = st.open.iter().map(|r| r.request_id.clone()).filter(|r| *r != id).collect();
                for r in stale {
                    self.close(&mut st, &r);
                }
            }
            if st.record(&id).is_none() {
                st.open.push(Record { request_id: id.clone(), text: String::new(), truncated: false, ends: 0 });
                if st.open.len() > MAX_OPEN {
                    let oldest = st.open[0].request_id.clone();
                    self.close(&mut st, &oldest);
                }
            }
            // stderr's Start only says that stream is now inside the call: never stored.
            if s == 1 {
                return;
            }
            self.mark_dropped(&mut st, &id);
            if let Some(rec) = st.record(&id) {
                // Kept first even when stderr lines came in before it.
                let text = std::mem::take(&mut rec.text);
                rec.push(&line);
                rec.text.push_str(&text);
            }
            drop(st);
            self.emit(&id, stream, line);
            return;
        }
        if self.markers
            && let Some(id) = line.strip_prefix(END).map(|id| id.trim().to_string())
        {
            if st.cur[s].as_deref() == Some(id.as_str()) {
                st.cur[s] = None;
            }
            if let Some(rec) = st.record(&id) {
                rec.ends |= 1 << s;
            }
            // stdout's End is the one stored (it keeps its order with the function's prints);
            // stderr's only says that stream is complete.
            if s == 1 {
                return;
            }
            self.mark_dropped(&mut st, &id);
            if let Some(rec) = st.record(&id) {
                rec.push(&line);
            }
            drop(st);
            self.emit(&id, stream, line);
            return;
        }
        if !self.markers
            && let Some(id) = line.strip_prefix(START).or_else(|| line.strip_prefix(END)).map(str::trim)
            && st.framed.iter().any(|f| f == id)
        {
            // A custom server that prints FC's markers itself, as FC's contract asks: the agent
            // has framed this call already, so its copy would be a second Start or End.
            return;
        }
        let request_id = st.owner(s).unwrap_or_default();
        self.mark_dropped(&mut st, &request_id);
        if let Some(rec) = st.record(&request_id) {
            rec.push(&line);
        }
        drop(st);
        self.emit(&request_id, stream, line);
    }

    fn close(&self, st: &mut State, request_id: &str) {
        self.mark_dropped(st, request_id);
        if let Some(i) = st.open.iter().position(|r| r.request_id == request_id) {
            let rec = st.open.remove(i);
            if let Some(w) = st.waiters.remove(&rec.request_id) {
                let _ = w.send(rec.text);
            }
            st.last = Some(rec.request_id);
        }
    }

    /// Called before the request is sent. Returns a receiver for the record when `want` is set.
    pub fn begin(&self, request_id: &str, want: bool) -> Option<oneshot::Receiver<String>> {
        let mut st = self.state.lock().expect("capture lock");
        let rx = want.then(|| {
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(request_id.to_string(), tx);
            rx
        });
        if !self.markers {
            let stale: Vec<String> = st.open.iter().map(|r| r.request_id.clone()).collect();
            for r in stale {
                self.close(&mut st, &r);
            }
            let start = format!("{START}{request_id}");
            let mut rec = Record { request_id: request_id.to_string(), text: String::new(), truncated: false, ends: 0 };
            rec.push(&start);
            st.open.push(rec);
            st.cur = [Some(request_id.to_string()), Some(request_id.to_string())];
            if st.framed.len() == FRAMED_KEPT {
                st.framed.pop_front();
            }
            st.framed.push_back(request_id.to_string());
            drop(st);
            self.emit(request_id, "stdout", start);
        }
        rx
    }

    /// Called when the response is in. Returns the record's text if it was asked for.
    pub async fn end(&self, request_id: &str, rx: Option<oneshot::Receiver<String>>) -> Option<String> {
        if rx.is_some() {
            let deadline = Instant::now() + if self.markers { WAIT_MARKED } else { WAIT_UNMARKED };
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let (ended, quiet) = {
                    let mut st = self.state.lock().expect("capture lock");
                    let ended = !self.markers || st.record(request_id).is_none_or(|r| r.ends == 3);
                    (ended, st.last_line_at.is_none_or(|t| t.elapsed() >= QUIET))
                };
                if (ended && quiet) || Instant::now() >= deadline {
                    break;
                }
            }
        }
        {
            let mut st = self.state.lock().expect("capture lock");
            let ours = st.record(request_id).is_some();
            if !self.markers {
                let end = format!("{END}{request_id}");
                if let Some(rec) = st.record(request_id) {
                    rec.push(&end);
                }
                st.cur = [None, None];
                self.emit(request_id, "stdout", end);
                if ours {
                    self.close(&mut st, request_id);
                }
            } else if ours && rx.is_some() {
                self.close(&mut st, request_id);
            }
        }
        // close() has sent the text by now, or the record was closed earlier (next Start).
        rx?.await.ok()
    }

    /// The request failed before an answer (timeout, crash): close it with what was captured.
    pub fn abandon(&self, request_id: &str) {
        let mut st = self.state.lock().expect("capture lock");
        self.close(&mut st, request_id);
        st.waiters.remove(request_id);
    }
}

/// The last `max` bytes of `text`, starting at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::LogStore;

    async fn test_store() -> (tempfile::TempDir, LogStore, tokio_util::sync::CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let (tracker, cancel) = (tokio_util::task::TaskTracker::new(), tokio_util::sync::CancellationToken::new());
        let store = LogStore::open(
            &dir.path().join("l.db"),
            crate::config::LogsConfig::default(),
            &tracker,
            cancel.clone(),
            prometheus::IntCounter::new("d", "d").unwrap(),
            Vec::new(),
            prometheus::IntCounter::new("u", "u").unwrap(),
        )
        .await
        .unwrap();
        (dir, store, cancel)
    }

    /// The stored messages of request `rid`, oldest first.
    async fn stored(store: &LogStore, rid: &str) -> Vec<String> {
        let q = crate::logstore::LogQuery { function: "f".into(), request_id: Some(rid.into()), limit: 10, ..Default::default() };
        store.query(&q).await.unwrap().into_iter().rev().map(|l| l.message).collect()
    }

    /// The writer stores asynchronously: wait (bounded) until `rid` has a message `done` accepts.
    async fn until_stored(store: &LogStore, rid: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stored(store, rid).await.iter().any(|m| done(m)) {
            assert!(Instant::now() < deadline, "lines not stored in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }

    #[tokio::test]
    async fn a_late_stderr_end_closes_nothing_twice_and_is_not_stored() {
        let (_dir, store, cancel) = test_store().await;
        let cap = LogCapture::new("f".into(), "i".into(), true, store.clone());
        let rx = cap.begin("r1", true);
        cap.line("stdout", "FC Invoke Start RequestId: r1");
        cap.line("stdout", "a");
        cap.line("stdout", "FC Invoke End RequestId: r1");
        cap.line("stderr", "Traceback r1");
        cap.line("stderr", "FC Invoke End RequestId: r1");
        assert_eq!(cap.end("r1", rx).await.unwrap(), "FC Invoke Start RequestId: r1\na\nFC Invoke End RequestId: r1\nTraceback r1\n");
        cap.line("stdout", "FC Invoke Start RequestId: r2");
        cap.line("stderr", "FC Invoke End RequestId: r1"); // a duplicate arriving late
        cap.line("stdout", "b");
        cap.line("stdout", "FC Invoke End RequestId: r2");
        cap.line("stderr", "FC Invoke End RequestId: r2");
        until_stored(&store, "r2", |m| m.contains("End")).await;
        assert_eq!(stored(&store, "r1").await, ["FC Invoke Start RequestId: r1", "a", "FC Invoke End RequestId: r1", "Traceback r1"]);
        assert_eq!(stored(&store, "r2").await, ["FC Invoke Start RequestId: r2", "b", "FC Invoke End RequestId: r2"]);
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_custom_server_printing_its_own_markers_shows_one_start_and_one_end() {
        let (_dir, store, cancel) = test_store().await;
        let cap = LogCapture::new("f".into(), "i".into(), false, store.clone());
        let rx = cap.begin("r1", true);
        cap.line("stdout", "FC Invoke Start RequestId: r1");
        cap.line("stdout", "hello");
        cap.line("stdout", "FC Invoke End RequestId: r1");
        assert_eq!(cap.end("r1", rx).await.unwrap(), "FC Invoke Start RequestId: r1\nhello\nFC Invoke End RequestId: r1\n");
        // Its End arriving after the agent closed the record is dropped too; a trailing line is kept.
        cap.line("stdout", "FC Invoke End RequestId: r1");
        cap.line("stdout", "bye");
        until_stored(&store, "r1", |m| m == "bye").await;
        assert_eq!(stored(&store, "r1").await, ["FC Invoke Start RequestId: r1", "hello", "FC Invoke End RequestId: r1", "bye"]);
        // Overlapping calls (instanceConcurrency > 1): r3 and r4 begin before r2's markers come
        // in, so r2 is neither open nor the last closed record by then.
        let rx2 = cap.begin("r2", false);
        let rx3 = cap.begin("r3", false);
        let rx4 = cap.begin("r4", true);
        for l in ["FC Invoke Start RequestId: r2", "FC Invoke End RequestId: r2", "four", "FC Invoke End RequestId: r3"] {
            cap.line("stdout", l);
        }
        let (_, _) = (cap.end("r2", rx2).await, cap.end("r3", rx3).await);
        let tail4 = cap.end("r4", rx4).await.unwrap();
        assert_eq!(tail4, "FC Invoke Start RequestId: r4\nfour\nFC Invoke End RequestId: r4\n", "no copy of r2's or r3's markers in r4's tail");
        cancel.cancel();
    }

    #[tokio::test]
    async fn stderr_lines_that_outrun_stdout_start_belong_to_their_call() {
        let (_dir, store, cancel) = test_store().await;
        let cap = LogCapture::new("f".into(), "i".into(), true, store.clone());
        let rx1 = cap.begin("r1", true);
        for (stream, line) in [("stdout", "FC Invoke Start RequestId: r1"), ("stderr", "FC Invoke Start RequestId: r1"), ("stderr", "FC Invoke End RequestId: r1")] {
            cap.line(stream, line);
        }
        // r2's stderr runs ahead of stdout, which still has r1's last line and End to deliver.
        let rx2 = cap.begin("r2", true);
        cap.line("stderr", "FC Invoke Start RequestId: r2");
        cap.line("stderr", "Traceback r2");
        cap.line("stdout", "late print r1");
        cap.line("stdout", "FC Invoke End RequestId: r1");
        assert_eq!(cap.end("r1", rx1).await.unwrap(), "FC Invoke Start RequestId: r1\nlate print r1\nFC Invoke End RequestId: r1\n");
        cap.line("stderr", "FC Invoke End RequestId: r2");
        cap.line("stdout", "FC Invoke Start RequestId: r2");
        cap.line("stdout", "FC Invoke End RequestId: r2");
        assert_eq!(
            cap.end("r2", rx2).await.unwrap(),
            "FC Invoke Start RequestId: r2\nTraceback r2\nFC Invoke End RequestId: r2\n",
            "the traceback is in r2's tail, after its Start"
        );
        cancel.cancel();
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let l = "x".repeat(MAX_LINE + 10);
        let c = cut(&l);
        assert!(c.ends_with("[truncated 10 bytes]"));
    }
}
