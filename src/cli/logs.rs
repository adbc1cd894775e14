//! `nubis logs <fn>`: a function's log lines (GetFunctionLogs), oldest first, filtered by
//! request id, text and time; `-f` keeps polling for new lines.
//!
//! Following uses the newest timestamp seen as the cursor: each poll asks for the lines at or
//! after it and prints those not printed yet. Lines sharing the cursor's millisecond are told
//! apart by counting each distinct line there, so a repeated line is printed as often as it
//! was logged, and never twice. Lines print in the store's order; when `--limit` cuts one
//! millisecond's lines, its earlier ones show on the first poll, after the later ones.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::client::enc;
use super::error::CliError;
use super::output::{Format, print_json};
use super::{ConnArgs, Ctx};

/// Page size of follow polls (the API's maximum).
const POLL_PAGE: u32 = 1000;
/// Pages read per poll at most: a burst larger than this between two polls loses its oldest
/// lines (with a warning) rather than stalling the follower.
const POLL_MAX_PAGES: usize = 20;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    pub function: String,
    /// Only this invocation's lines.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Only lines containing this text (case-sensitive).
    #[arg(long)]
    pub query: Option<String>,
    /// Only lines since then: a duration back from now (30s, 10m, 2h, 1d), an RFC 3339 time
    /// or epoch milliseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// How many of the newest lines to show first (1..=1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Keep polling for new lines until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Seconds between polls with --follow (at least 0.2).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

/// `--since` → epoch ms.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, CliError> {
    let s = s.trim();
    let bad = || CliError::Usage(format!("--since '{s}': expected 30s, 10m, 2h, 1d, an RFC 3339 time or epoch milliseconds"));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let unit_ms: i64 = match s.chars().last().ok_or_else(bad)? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return Err(bad()),
    };
    let n: i64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)))
}

fn ts(line: &Value) -> i64 {
    line["timestamp"].as_i64().unwrap_or(0)
}

/// What makes two lines the same line.
fn key(line: &Value) -> String {
    ["requestId", "instanceId", "stream", "message"].iter().map(|k| super::output::cell(&line[*k])).collect::<Vec<_>>().join("\u{0}")
}

/// The follow cursor (see the module doc).
#[derive(Debug, Default)]
pub struct Follower {
    cursor_ms: Option<i64>,
    /// How often each line at `cursor_ms` was printed.
    at_cursor: HashMap<String, usize>,
}

impl Follower {
    /// The `startTime` of the next poll.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor_ms
    }

    /// Takes every line the server has at or after the cursor (newest first, as the API sends
    /// them) and returns those not printed yet, oldest first.
    pub fn absorb(&mut self, mut lines: Vec<Value>) -> Vec<Value> {
        lines.reverse(); // the API's order within one millisecond is newest first too
        lines.sort_by_key(ts); // stable
        let old = self.cursor_ms;
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut fresh = Vec::new();
        for l in lines {
            let t = ts(&l);
            match old {
                Some(c) if t < c => continue,
                Some(c) if t == c => {
                    let k = key(&l);
                    let n = counts.entry(k.clone()).or_default();
                    *n += 1;
                    if *n > self.at_cursor.get(&k).copied().unwrap_or(0) {
                        fresh.push(l);
                    }
                }
                _ => fresh.push(l),
            }
        }
        if let Some(newest) = fresh.last().map(ts).filter(|&n| Some(n) > old) {
            self.cursor_ms = Some(newest);
            self.at_cursor.clear();
            for l in fresh.iter().filter(|l| ts(l) == newest) {
                *self.at_cursor.entry(key(l)).or_default() += 1;
            }
        } else if old.is_some() {
            // Only lines at the cursor arrived: they are now all printed.
            for (k, n) in counts {
                let seen = self.at_cursor.entry(k).or_default();
                *seen = (*seen).max(n);
            }
        }
        fresh
    }
}

pub fn format_line(l: &Value) -> String {
    let stream = match l["stream"].as_str() {
        Some("stderr") => " [stderr]",
        Some("platform") => " [platform]",
        _ => "",
    };
    format!(
        "{}  {}{}  {}",
        super::output::cell(&l["time"]),
        super::output::cell(&l["requestId"]),
        stream,
        l["message"].as_str().unwrap_or_default().trim_end_matches('\n')
    )
}

struct Filters {
    path: String,
    request_id: Option<String>,
    query: Option<String>,
}

impl Filters {
    fn params(&self, start_ms: Option<i64>, limit: u32, next: Option<&str>) -> Vec<(&'static str, String)> {
        let mut q = vec![("limit", limit.to_string())];
        q.extend(self.request_id.clone().map(|v| ("requestId", v)));
        q.extend(self.query.clone().map(|v| ("query", v)));
        q.extend(start_ms.map(|v| ("startTime", v.to_string())));
        q.extend(next.map(|v| ("nextToken", v.to_string())));
        q
    }
}

pub async fn run(ctx: &Ctx, args: LogsArgs) -> Result<(), CliError> {
    if !(1..=1000).contains(&args.limit) {
        return Err(CliError::Usage("--limit must be between 1 and 1000".into()));
    }
    if !(args.interval.is_finite() && args.interval >= 0.2) {
        return Err(CliError::Usage("--interval must be at least 0.2 seconds".into()));
    }
    let since = args.since.as_deref().map(|s| parse_since(s, chrono::Utc::now().timestamp_millis())).transpose()?;
    let f = Filters {
        path: format!("/2023-03-30/functions/{}/logs", enc(&args.function)),
        request_id: args.request_id.clone(),
        query: args.query.clone(),
    };
    let first = ctx.client.get_json(&f.path, &f.params(since, args.limit, None)).await?;
    if !args.follow {
        match ctx.format {
            Format::Json => print_json(&first),
            Format::Text => {
                let mut lines = first["logs"].as_array().cloned().unwrap_or_default();
                lines.reverse();
                for l in &lines {
                    println!("{}", format_line(l));
                }
            }
        }
        return Ok(());
    }

    let mut follower = Follower::default();
    let mut start = since;
    let print = |lines: Vec<Value>| {
        let mut out = std::io::stdout().lock();
        for l in lines {
            // Following prints one JSON document per line (NDJSON), so a script can read it
            // line by line while it runs.
            let text = match ctx.format {
                Format::Json => l.to_string(),
                Format::Text => format_line(&l),
            };
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
    };
    print(follower.absorb(first["logs"].as_array().cloned().unwrap_or_default()));
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        start = follower.cursor().or(start);
        let mut lines = Vec::new();
        let mut next: Option<String> = None;
        for page in 0.. {
            if page == POLL_MAX_PAGES {
                eprintln!("warning: more than {} new lines since the last poll; older ones skipped", POLL_MAX_PAGES as u32 * POLL_PAGE);
                break;
            }
            let doc = ctx.client.get_json(&f.path, &f.params(start, POLL_PAGE, next.as_deref())).await?;
            lines.extend(doc["logs"].as_array().cloned().unwrap_or_default());
            match doc["nextToken"].as_str() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        print(follower.absorb(lines));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(ts: i64, msg: &str) -> Value {
        json!({"timestamp": ts, "time": "t", "requestId": "r", "instanceId": "i", "stream": "stdout", "message": msg})
    }
    fn msgs(v: &[Value]) -> Vec<&str> {
        v.iter().map(|l| l["message"].as_str().unwrap()).collect()
    }

    #[test]
    fn since_forms() {
        let now = 10_000_000;
        assert_eq!(parse_since("30s", now).unwrap(), now - 30_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("1700000000000", now).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_since("2024-01-01T00:00:00Z", now).unwrap(), 1_704_067_200_000);
        for bad in ["", "m", "10w", "-5m", "yesterday"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn follower_prints_each_line_once_even_within_one_millisecond() {
        let mut f = Follower::default();
        // First page, newest first as the API sends it.
        assert_eq!(msgs(&f.absorb(vec![line(2, "b"), line(2, "a"), line(1, "x")])), ["x", "a", "b"]);
        assert_eq!(f.cursor(), Some(2));
        // The next poll sees the cursor's millisecond again plus a repeat of "a" and a newer line.
        assert_eq!(msgs(&f.absorb(vec![line(3, "c"), line(2, "a"), line(2, "b"), line(2, "a")])), ["a", "c"]);
        assert_eq!(f.cursor(), Some(3));
        // Nothing new: nothing printed, cursor kept.
        assert!(f.absorb(vec![line(3, "c")]).is_empty());
        // A second "c" in the same millisecond as the first.
        assert_eq!(msgs(&f.absorb(vec![line(3, "c"), line(3, "c")])), ["c"]);
        assert!(f.absorb(vec![line(3, "c"), line(3, "c")]).is_empty());
        assert!(f.absorb(vec![]).is_empty());
        assert_eq!(f.cursor(), Some(3));
    }

    #[test]
    fn lines_read_well() {
        let mut l = line(1, "hello\n");
        l["time"] = json!("2024-01-01T00:00:00.000Z");
        assert_eq!(format_line(&l), "2024-01-01T00:00:00.000Z  r  hello");
        l["stream"] = json!("stderr");
        assert_eq!(format_line(&l), "2024-01-01T00:00:00.000Z  r [stderr]  hello");
    }
}
