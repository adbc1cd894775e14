//! Per-instance log capture: splits an instance's stdout/stderr into per-invocation records.
//!
//! Built-in runtimes print `FC Invoke Start RequestId: X` / `FC Invoke End RequestId: X`
//! around each invocation, so lines between the two belong to X (exact, even when the lines
//! arrive after the HTTP response). Custom servers print no markers: the agent opens the record
//! itself when it sends the request and closes it once the response is in and the log stream
//! has gone quiet for a moment; a line arriving later still goes to the store under the last
//! request id, but not into that call's `Tail`.
//!
//! Caps: a line longer than [`MAX_LINE`] is cut, and an invocation keeps at most
//! [`MAX_RECORD`] bytes in memory for its tail; both are marked, never silent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::logstore::{LogLine, LogStore};

pub const MAX_LINE: usize = 16 * 1024;
pub const MAX_RECORD: usize = 1 << 20;
const START: &str = "FC Invoke Start RequestId: ";
const END: &str = "FC Invoke End RequestId: ";
/// How long a marker-less record stays open after the response for trailing lines.
const QUIET: Duration = Duration::from_millis(30);
const QUIET_MAX: Duration = Duration::from_millis(300);

pub struct LogCapture {
    function_name: String,
    instance_id: String,
    markers: bool,
    store: LogStore,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<Record>,
    /// Request id of the last closed record, for lines that trail it.
    last: Option<String>,
    waiters: HashMap<String, oneshot::Sender<String>>,
    last_line_at: Option<Instant>,
}

struct Record {
    request_id: String,
    text: String,
    truncated: bool,
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
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            function_name: self.function_name.clone(),
            instance_id: self.instance_id.clone(),
            request_id: request_id.to_string(),
            stream,
            message,
        });
    }

    /// One line read from the container (without its newline).
    pub fn line(&self, stream: &'static str, raw: &str) {
        let line = cut(raw.trim_end_matches(['\r', '\n']));
        let mut st = self.state.lock().expect("capture lock");
        st.last_line_at = Some(Instant::now());
        if self.markers {
            if let Some(id) = line.strip_prefix(START) {
                self.close(&mut st);
                st.open = Some(Record { request_id: id.trim().to_string(), text: String::new(), truncated: false });
            }
        }
        let request_id = st.open.as_ref().map(|r| r.request_id.clone()).or_else(|| st.last.clone()).unwrap_or_default();
        if let Some(rec) = st.open.as_mut() {
            rec.push(&line);
        }
        let ends = self.markers && line.strip_prefix(END).is_some_and(|id| st.open.as_ref().is_some_and(|r| r.request_id == id.trim()));
        drop(st);
        self.emit(&request_id, stream, line);
        if ends {
            let mut st = self.state.lock().expect("capture lock");
            self.close(&mut st);
        }
    }

    fn close(&self, st: &mut State) {
        if let Some(rec) = st.open.take() {
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
            self.close(&mut st);
            let start = format!("{START}{request_id}");
            let mut rec = Record { request_id: request_id.to_string(), text: String::new(), truncated: false };
            rec.push(&start);
            st.open = Some(rec);
            drop(st);
            self.emit(request_id, "stdout", start);
        }
        rx
    }

    /// Called when the response is in. Returns the record's text if it was asked for.
    pub async fn end(&self, request_id: &str, rx: Option<oneshot::Receiver<String>>) -> Option<String> {
        if !self.markers {
            if rx.is_some() {
                // Let lines the server wrote just before answering come through the log stream.
                let deadline = Instant::now() + QUIET_MAX;
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let last = self.state.lock().expect("capture lock").last_line_at;
                    let quiet = last.is_none_or(|t| t.elapsed() >= QUIET);
                    if quiet || Instant::now() >= deadline {
                        break;
                    }
                }
            }
            let end = format!("{END}{request_id}");
            let mut st = self.state.lock().expect("capture lock");
            if let Some(rec) = st.open.as_mut().filter(|r| r.request_id == request_id) {
                rec.push(&end);
            }
            self.close(&mut st);
            drop(st);
            self.emit(request_id, "stdout", end);
        }
        let rx = rx?;
        // Built-in runtimes print End before answering, so the line is already on its way.
        match tokio::time::timeout(Duration::from_secs(2), rx).await {
            Ok(Ok(text)) => Some(text),
            _ => {
                self.state.lock().expect("capture lock").waiters.remove(request_id);
                None
            }
        }
    }

    /// The request failed before an answer (timeout, crash): close it with what was captured.
    pub fn abandon(&self, request_id: &str) {
        let mut st = self.state.lock().expect("capture lock");
        if st.open.as_ref().is_some_and(|r| r.request_id == request_id) {
            self.close(&mut st);
        }
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

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let l = "x".repeat(MAX_LINE + 10);
        let c = cut(&l);
        assert!(c.ends_with("[truncated 10 bytes]"));
    }
}
