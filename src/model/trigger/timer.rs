//! The config of a `timer` trigger (fc-triggers.md §2):
//! `{"cronExpression": "...", "payload": "<string>", "enable": bool}`, and its [`Schedule`].
//!
//! `cronExpression` takes the forms FC accepts (robfig/cron v3 with seconds):
//! - `@every <Go duration>`: `@every 5m`, `@every 1h30m`, `@every 90s`. The ticks are the
//!   multiples of the interval since the Unix epoch, so every controller computes the same ones
//!   and `@every 1h` fires on the hour. Rounded down to whole seconds, as robfig does.
//! - a 6-field cron with seconds: `sec min hour day-of-month month day-of-week`, with `*`, `?`,
//!   `,`, `-`, `/`, month and day names (`JAN`, `MON-FRI`); day-of-week 0 (or 7) is Sunday, and a
//!   day matches if day-of-month **or** day-of-week matches when both are restricted (Vixie
//!   cron's rule). Parsed by croner, which also takes `L`, `W` and `#`.
//! - a descriptor: `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//!   `@hourly`.
//! - any of these after `CRON_TZ=<IANA zone> ` (or `TZ=`): the cron fields are read in that zone
//!   (`CRON_TZ=Asia/Shanghai 0 0 4 * * *` is 04:00 in Shanghai, 20:00 UTC). Default UTC. Across
//!   a DST change a wall-clock time can occur twice or not at all; croner fires a skipped time
//!   once right after the gap and a repeated one once.
//!
//! The smallest interval is the server's `timers.min_interval_secs` (FC: one minute), checked
//! by the API at create and update ([`TimerTriggerConfig::check_min_interval`]): not here,
//! because it is a setting and this module does no I/O.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;

use super::from_config_str;
use crate::model::ValidationError;

/// A timer's payload is delivered like an async event: FC limits it to 128 KB.
pub const MAX_PAYLOAD_BYTES: usize = 128 << 10;

const FIELD: &str = "triggerConfig.cronExpression";

/// A validated timer trigger config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerTriggerConfig {
    /// Required (the fc3 tool's schema); a valid [`Schedule`].
    pub cron_expression: String,
    /// Passed verbatim as the event's `payload`; absent: none.
    #[serde(default)]
    pub payload: Option<String>,
    /// Required (the fc3 tool's schema): false keeps the trigger but stops it firing.
    pub enable: bool,
}

impl TimerTriggerConfig {
    pub fn parse(config: &str) -> Result<Self, ValidationError> {
        let c: Self = from_config_str(config)?;
        if c.cron_expression.trim().is_empty() {
            return Err(ValidationError::new(FIELD, "must not be empty"));
        }
        c.schedule()?;
        if c.payload.as_ref().is_some_and(|p| p.len() > MAX_PAYLOAD_BYTES) {
            return Err(ValidationError::new("triggerConfig.payload", format!("must be at most {MAX_PAYLOAD_BYTES} bytes")));
        }
        Ok(c)
    }

    pub fn schedule(&self) -> Result<Schedule, ValidationError> {
        Schedule::parse(&self.cron_expression).map_err(|e| ValidationError::new(FIELD, e))
    }

    /// Refuse a schedule whose ticks can come closer together than `min`. `@every` is held to
    /// `min` itself. A cron expression can only be held to whole minutes: with `min` of a
    /// minute or more its seconds field must name one second (so it fires at most once a
    /// minute); a smaller `min` (tests) accepts any cron expression.
    pub fn check_min_interval(&self, min: Duration) -> Result<(), ValidationError> {
        let refuse = |m: String| Err(ValidationError::new(FIELD, m));
        match self.schedule()? {
            Schedule::Every(d) if d < min => refuse(format!("@every {}s is below the minimum interval of {}s", d.as_secs(), min.as_secs())),
            Schedule::Cron { cron, .. } if min >= Duration::from_secs(60) && cron.pattern.seconds.values().len() != 1 => refuse(
                format!("must fire at most once a minute (the minimum interval is {}s): name one second in the seconds field", min.as_secs()),
            ),
            _ => Ok(()),
        }
    }
}

/// When a timer fires: a sequence of ticks, whole seconds in UTC.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `@every`: the multiples of this many seconds (at least 1) since the Unix epoch.
    Every(Duration),
    /// A 6-field cron expression or a descriptor, read in `tz`.
    Cron { cron: Box<Cron>, tz: Tz },
}

impl Schedule {
    /// Parse a `cronExpression`; the error says what is wrong, for a person.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let expr = expression.trim();
        let (tz, rest) = match expr.strip_prefix("CRON_TZ=").or_else(|| expr.strip_prefix("TZ=")) {
            Some(tail) => {
                let (zone, rest) = tail.split_once(char::is_whitespace).ok_or("CRON_TZ=<zone> must be followed by a schedule")?;
                let tz: Tz = zone.parse().map_err(|_| format!("'{zone}' is not an IANA time zone (e.g. Asia/Shanghai)"))?;
                (tz, rest.trim_start())
            }
            None => (Tz::UTC, expr),
        };
        if let Some(d) = rest.strip_prefix("@every") {
            let text = d.trim();
            if text.is_empty() || !d.starts_with(char::is_whitespace) {
                return Err("@every needs an interval, e.g. '@every 5m' or '@every 1h30m'".into());
            }
            let interval = parse_go_duration(text).map_err(|e| format!("@every '{text}': {e}"))?;
            // robfig/cron: below a second is a second; otherwise whole seconds, rounded down.
            let secs = interval.as_secs();
            if secs == 0 {
                return Err(format!("@every '{text}': the interval must be at least 1s"));
            }
            return Ok(Self::Every(Duration::from_secs(secs)));
        }
        let pattern = if rest.eq_ignore_ascii_case("@midnight") { "@daily" } else { rest };
        if pattern.starts_with('@') && !["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"].iter().any(|d| pattern.eq_ignore_ascii_case(d)) {
            return Err(format!(
                "'{pattern}' is not a schedule; use @every <interval>, @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
            ));
        }
        if !pattern.starts_with('@') && pattern.split_whitespace().count() != 6 {
            return Err(format!(
                "'{pattern}' must have 6 fields: second minute hour day-of-month month day-of-week (e.g. '0 0 4 * * *')"
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Required).year(Year::Disallowed).build();
        let cron = parser.parse(pattern).map_err(|e| format!("'{pattern}': {e}"))?;
        let s = Self::Cron { cron: Box::new(cron), tz };
        // A pattern that names no real date (the 30th of February) would never fire.
        if s.next_after(Utc::now()).is_none() {
            return Err(format!("'{pattern}' never fires"));
        }
        Ok(s)
    }

    /// The first tick strictly after `t`; None if there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(d) => {
                let step = d.as_secs() as i64;
                let next = (t.timestamp().div_euclid(step) + 1) * step;
                Utc.timestamp_opt(next, 0).single()
            }
            Self::Cron { cron, tz } => cron.find_next_occurrence(&t.with_timezone(tz), false).ok().map(|n| n.with_timezone(&Utc)),
        }
    }

    /// The last tick at or before `t`; None if there is none.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(d) => {
                let step = d.as_secs() as i64;
                Utc.timestamp_opt(t.timestamp().div_euclid(step) * step, 0).single()
            }
            Self::Cron { cron, tz } => {
                // croner matches whole seconds; a `t` inside a second is compared from its start.
                let whole = Utc.timestamp_opt(t.timestamp(), 0).single()?;
                cron.find_previous_occurrence(&whole.with_timezone(tz), true).ok().map(|p| p.with_timezone(&Utc))
            }
        }
    }
}

/// Go's `time.ParseDuration` (what robfig's `@every` takes): a sequence of decimal numbers,
/// each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), like
/// `1h30m` or `1.5h`. Signs are refused: an interval is positive.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(format!("'{s}' is not a duration (e.g. 5m, 1h30m, 90s)"));
        }
        let value: f64 = num.parse().map_err(|_| format!("'{num}' is not a number"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in '{s}' (ns, us, ms, s, m, h)")),
            u => return Err(format!("unknown unit '{u}' in '{s}' (ns, us, ms, s, m, h)")),
        };
        total += value * scale;
        rest = tail;
    }
    // Go's Duration is an int64 of nanoseconds: about 292 years.
    if !total.is_finite() || total > 9.2e9 {
        return Err(format!("'{s}' is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, from: &str) -> String {
        Schedule::parse(expr).unwrap().next_after(at(from)).unwrap().to_rfc3339()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("2h45m30s").unwrap(), Duration::from_secs(9930));
        assert_eq!(parse_go_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "m", "5x", "1h30", "-5m", "+5m", "5 m", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_ticks_on_multiples_of_the_interval() {
        assert_eq!(next("@every 5m", "2023-12-26T07:49:12Z"), "2023-12-26T07:50:00+00:00");
        assert_eq!(next("@every 5m", "2023-12-26T07:50:00Z"), "2023-12-26T07:55:00+00:00");
        assert_eq!(next("@every 1h30m", "2023-12-26T07:49:00Z"), "2023-12-26T09:00:00+00:00");
        // Rounded down to whole seconds, as robfig/cron does; the zone changes nothing.
        assert_eq!(next("CRON_TZ=Asia/Shanghai @every 2500ms", "1970-01-01T00:00:01Z"), "1970-01-01T00:00:02+00:00");
        let s = Schedule::parse("@every 1m").unwrap();
        assert_eq!(s.last_at_or_before(at("2023-12-26T07:49:59.9Z")).unwrap(), at("2023-12-26T07:49:00Z"));
        assert_eq!(s.last_at_or_before(at("2023-12-26T07:49:00Z")).unwrap(), at("2023-12-26T07:49:00Z"));
        for bad in ["@every", "@every ", "@every 500ms", "@every 0", "@every5m", "@every 5"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn six_field_cron_with_seconds_names_and_question_marks() {
        assert_eq!(next("0 0 4 * * *", "2023-12-26T07:49:00Z"), "2023-12-27T04:00:00+00:00");
        assert_eq!(next("*/15 * * * * *", "2023-12-26T07:49:01Z"), "2023-12-26T07:49:15+00:00");
        assert_eq!(next("30 5 9 ? * MON-FRI", "2023-12-29T10:00:00Z"), "2024-01-01T09:05:30+00:00");
        assert_eq!(next("0 0 12 1,15 jan ?", "2023-12-26T00:00:00Z"), "2024-01-01T12:00:00+00:00");
        assert_eq!(next("0 0 0 * * 0", "2023-12-26T00:00:00Z"), "2023-12-31T00:00:00+00:00");
        assert_eq!(next("0 0 0 * * 7", "2023-12-26T00:00:00Z"), "2023-12-31T00:00:00+00:00");
        assert_eq!(next("0 10-20/5 * * * *", "2023-12-26T00:16:00Z"), "2023-12-26T00:20:00+00:00");
        // Day-of-month or day-of-week when both are restricted (Vixie cron, robfig).
        assert_eq!(next("0 0 0 1 * MON", "2024-01-02T00:00:00Z"), "2024-01-08T00:00:00+00:00");
        for bad in ["0 0 4 * *", "0 0 4 * * * 2024", "61 * * * * *", "* * * * * FOO", "x", "@reboot", "0 0 0 30 2 *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptors() {
        assert_eq!(next("@daily", "2023-12-26T07:49:00Z"), "2023-12-27T00:00:00+00:00");
        assert_eq!(next("@midnight", "2023-12-26T07:49:00Z"), "2023-12-27T00:00:00+00:00");
        assert_eq!(next("@hourly", "2023-12-26T07:49:00Z"), "2023-12-26T08:00:00+00:00");
        assert_eq!(next("@weekly", "2023-12-26T07:49:00Z"), "2023-12-31T00:00:00+00:00");
        assert_eq!(next("@monthly", "2023-12-26T07:49:00Z"), "2024-01-01T00:00:00+00:00");
        assert_eq!(next("@yearly", "2023-12-26T07:49:00Z"), "2024-01-01T00:00:00+00:00");
        assert_eq!(next("@annually", "2023-12-26T07:49:00Z"), "2024-01-01T00:00:00+00:00");
    }

    #[test]
    fn cron_tz_reads_the_fields_in_the_zone() {
        // 04:00 in Shanghai (UTC+8) is 20:00 UTC the day before.
        assert_eq!(next("CRON_TZ=Asia/Shanghai 0 0 4 * * *", "2023-12-26T07:49:00Z"), "2023-12-26T20:00:00+00:00");
        assert_eq!(next("TZ=America/New_York @daily", "2023-12-26T07:49:00Z"), "2023-12-27T05:00:00+00:00");
        // Summer time: 09:00 in Berlin is 07:00 UTC in July.
        assert_eq!(next("CRON_TZ=Europe/Berlin 0 0 9 * * *", "2023-07-01T00:00:00Z"), "2023-07-01T07:00:00+00:00");
        let s = Schedule::parse("CRON_TZ=Asia/Shanghai 0 0 4 * * *").unwrap();
        assert_eq!(s.last_at_or_before(at("2023-12-26T21:00:00Z")).unwrap(), at("2023-12-26T20:00:00Z"));
        for bad in ["CRON_TZ=Mars/Olympus 0 0 4 * * *", "CRON_TZ=Asia/Shanghai", "CRON_TZ= 0 0 4 * * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn last_tick_at_or_before() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(s.last_at_or_before(at("2023-12-26T07:49:19.5Z")).unwrap(), at("2023-12-26T07:49:10Z"));
        assert_eq!(s.last_at_or_before(at("2023-12-26T07:49:20Z")).unwrap(), at("2023-12-26T07:49:20Z"));
    }

    #[test]
    fn config_errors_name_cron_expression_and_the_minimum_is_checked_apart() {
        let cfg = |e: &str| TimerTriggerConfig::parse(&serde_json::json!({"cronExpression": e, "enable": true}).to_string());
        let e = cfg("0 0 4 * *").unwrap_err();
        assert_eq!(e.field, "triggerConfig.cronExpression", "{e}");
        assert!(e.message.contains("6 fields"), "{e}");
        let minute = Duration::from_secs(60);
        assert!(cfg("@every 1m").unwrap().check_min_interval(minute).is_ok());
        assert!(cfg("@every 59s").unwrap().check_min_interval(minute).unwrap_err().message.contains("minimum"));
        assert!(cfg("@every 1s").unwrap().check_min_interval(Duration::from_secs(1)).is_ok());
        assert!(cfg("0 */5 * * * *").unwrap().check_min_interval(minute).is_ok());
        assert!(cfg("@hourly").unwrap().check_min_interval(minute).is_ok());
        assert!(cfg("*/30 * * * * *").unwrap().check_min_interval(minute).unwrap_err().message.contains("once a minute"));
        assert!(cfg("* * * * * *").unwrap().check_min_interval(Duration::from_secs(1)).is_ok());
    }
}
