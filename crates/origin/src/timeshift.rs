//! Time-shifted manifests (`?start=`, `?end=`, `?time_delay=`, `?manifest_window_seconds=`):
//! parsing the request and choosing which segment numbers to list. Pure: time is a parameter.

use std::time::Duration;

use timeline::SegmentGrid;

/// The time-shift a request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeShift {
    pub start: Option<Duration>,
    pub end: Option<Duration>,
    pub delay: Option<Duration>,
    pub window: Option<Duration>,
}

/// Which segments a manifest lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The newest `count` segments, `behind` segments before the live edge (live, or delayed:
    /// the live manifest as it was a delay ago, whatever the edge's own latency).
    Live { behind: u64, count: u64 },
    /// From `first_n` to the live edge, growing (an EVENT playlist).
    From { first_n: u64 },
    /// Exactly `first_n..=last_n`, never changing (a VOD playlist, a static MPD).
    Range { first_n: u64, last_n: u64 },
}

/// Why a time-shift request cannot be served: 400 (malformed) or 404 (outside the window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed(String),
    OutOfWindow(String),
}

impl From<Refusal> for crate::OriginError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Malformed(why) => Self::BadRequest(why),
            Refusal::OutOfWindow(why) => Self::NotFound(why),
        }
    }
}

/// The most a request may delay live, and the longest a time-shifted manifest spans: a day
/// (as the managed packagers allow). Longer ones would be megabytes no player loads whole.
pub const MAX_SPAN: Duration = Duration::from_secs(86_400);

impl TimeShift {
    /// Parses the query's time-shift parameters; other parameters are left to others.
    pub fn parse(query: &str) -> Result<TimeShift, Refusal> {
        let mut shift = TimeShift::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let bad = |what: &str| Refusal::Malformed(format!("{key}={value}: {what}"));
            match key {
                "start" => shift.start = Some(parse_time(&value).map_err(|e| bad(&e))?),
                "end" => shift.end = Some(parse_time(&value).map_err(|e| bad(&e))?),
                "time_delay" => {
                    let delay = parse_seconds(&value).map_err(|e| bad(&e))?;
                    if delay > MAX_SPAN {
                        return Err(bad("give 0 to 86400 seconds"));
                    }
                    shift.delay = Some(delay);
                }
                "manifest_window_seconds" => {
                    let window = parse_seconds(&value).map_err(|e| bad(&e))?;
                    if window > MAX_SPAN {
                        return Err(bad("give 1 to 86400 seconds"));
                    }
                    shift.window = Some(window);
                }
                _ => {}
            }
        }
        Ok(shift)
    }

    /// The segments to list at `now`, for a channel with `grid`, a live window of
    /// `live_segments` and a startover window of `startover`.
    pub fn plan(
        &self,
        grid: SegmentGrid,
        now: Duration,
        live_segments: u64,
        startover: Duration,
    ) -> Result<Plan, Refusal> {
        let d = Duration::from_secs_f64(grid.duration_secs());
        let per_window = |w: Duration| ((w.as_secs_f64() / d.as_secs_f64()).ceil() as u64).max(1);
        let oldest = now.saturating_sub(startover);
        let count = self.window.map_or(live_segments, per_window);
        let Some(start) = self.start else {
            if self.end.is_some() {
                return Err(Refusal::Malformed("end needs a start".into()));
            }
            if self.delay.is_some_and(|delay| delay >= startover) {
                return Err(Refusal::OutOfWindow(format!(
                    "time_delay reaches past the startover window of {} s",
                    startover.as_secs()
                )));
            }
            let behind = self.delay.map_or(0, per_window);
            return Ok(Plan::Live { behind, count });
        };
        if start < oldest {
            return Err(Refusal::OutOfWindow(format!(
                "start is before the startover window of {} s",
                startover.as_secs()
            )));
        }
        if start > now {
            return Err(Refusal::OutOfWindow("start is in the future".into()));
        }
        let first_n = grid.segment_at(start);
        let Some(end) = self.end else {
            if now - start > MAX_SPAN {
                return Err(Refusal::Malformed(format!(
                    "start is more than {} s before now, and a manifest spans at most that: \
                     give an end too, or a later start",
                    MAX_SPAN.as_secs()
                )));
            }
            return Ok(Plan::From { first_n });
        };
        if end <= start {
            return Err(Refusal::Malformed("end must be after start".into()));
        }
        if end > now {
            return Err(Refusal::OutOfWindow("end is in the future".into()));
        }
        if end - start > MAX_SPAN {
            return Err(Refusal::Malformed(format!(
                "a time-shifted manifest spans at most {} s: ask for a shorter range",
                MAX_SPAN.as_secs()
            )));
        }
        // [start, end): the segment holding `end` is listed only if it starts before `end`.
        let last_n = grid.segment_at(end.saturating_sub(Duration::from_nanos(1)));
        Ok(Plan::Range { first_n, last_n })
    }
}

/// Unix seconds (`1795616148`, `1795616148.5`) or ISO 8601 UTC (`2026-11-25T14:15:48Z`, with
/// optional fraction and `±HH:MM` offset).
pub fn parse_time(s: &str) -> Result<Duration, String> {
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_seconds(s);
    }
    parse_iso8601(s)
        .ok_or_else(|| "not Unix seconds nor ISO 8601 (2026-11-25T14:15:48Z)".to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
        return Err("not a number of seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_iso8601(s: &str) -> Option<Duration> {
    let (date, time) = s.split_once('T')?;
    let mut ymd = date.splitn(3, '-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: u32 = ymd.next()?.parse().ok()?;
    let day: u32 = ymd.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0i64)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
        // Bounded here so that a hostile query cannot overflow the arithmetic below.
        if !(0..24).contains(&h) || !(0..60).contains(&m) {
            return None;
        }
        (clock, sign * (h * 3600 + m * 60))
    };
    let mut hms = clock.splitn(3, ':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let seconds: f64 = hms.next()?.parse().ok()?;
    let valid = (0..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0.0..61.0).contains(&seconds);
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let whole = days * 86_400 + hour * 3600 + minute * 60 - offset_secs;
    let total = whole as f64 + seconds;
    (total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_795_616_148);
    const HOUR: Duration = Duration::from_secs(3600);

    fn grid() -> SegmentGrid {
        SegmentGrid::nearest("30".parse().unwrap(), 2.0).unwrap()
    }

    fn plan(query: &str) -> Result<Plan, Refusal> {
        TimeShift::parse(query)?.plan(grid(), NOW, 30, 2 * HOUR)
    }

    #[test]
    fn hostile_dates_are_refused_not_overflowed() {
        for s in [
            "99999999999999999-01-01T00:00:00Z",
            "2026-11-25T00:00:00+9999999999999999:00",
            "2026-11-25T00:00:00-00:99",
        ] {
            assert_eq!(parse_iso8601(s), None, "{s}");
        }
        assert!(parse_iso8601("2026-11-25T10:00:00+01:00").is_some());
    }

    #[test]
    fn times_in_both_forms() {
        assert_eq!(parse_time("1795616148").unwrap(), NOW);
        assert_eq!(
            parse_time("1795616148.5").unwrap(),
            NOW + Duration::from_millis(500)
        );
        assert_eq!(parse_time("2026-11-25T14:15:48Z").unwrap(), NOW);
        assert_eq!(parse_time("2026-11-25T15:15:48+01:00").unwrap(), NOW);
        assert_eq!(
            parse_time("2026-11-25T14:15:48.250Z").unwrap(),
            NOW + Duration::from_millis(250)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z").unwrap(),
            Duration::from_secs(951_782_400)
        );
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-25",
            "2026-11-25T25:00:00Z",
            "-5",
            "1e400",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_parameters_is_live() {
        assert_eq!(
            plan("token=abc").unwrap(),
            Plan::Live {
                behind: 0,
                count: 30
            }
        );
        assert_eq!(TimeShift::parse("").unwrap(), TimeShift::default());
    }

    #[test]
    fn delay_and_window() {
        assert_eq!(
            plan("time_delay=60").unwrap(),
            Plan::Live {
                behind: 30,
                count: 30
            }
        );
        assert_eq!(
            plan("time_delay=60&manifest_window_seconds=10").unwrap(),
            Plan::Live {
                behind: 30,
                count: 5
            }
        );
        assert!(matches!(
            plan("time_delay=86401"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            plan("time_delay=7200"),
            Err(Refusal::OutOfWindow(_))
        ));
    }

    #[test]
    fn ranges_open_and_closed() {
        let start = NOW - HOUR;
        let first_n = grid().segment_at(start);
        assert_eq!(
            plan(&format!("start={}", start.as_secs())).unwrap(),
            Plan::From { first_n }
        );
        let closed = format!("start={}&end={}", start.as_secs(), start.as_secs() + 10);
        assert_eq!(
            plan(&closed).unwrap(),
            Plan::Range {
                first_n,
                last_n: first_n + 4
            }
        );
        let iso = "start=2026-11-25T13:15:48Z&end=2026-11-25T13:15:58Z";
        assert_eq!(
            plan(iso).unwrap(),
            Plan::Range {
                first_n,
                last_n: first_n + 4
            }
        );
        let encoded = "start=2026-11-25T13%3A15%3A48Z&end=2026-11-25T13%3A15%3A58Z";
        assert_eq!(
            plan(encoded).unwrap(),
            Plan::Range {
                first_n,
                last_n: first_n + 4
            }
        );
    }

    #[test]
    fn a_manifest_spans_a_day_at_most_in_a_longer_window() {
        let two_weeks = 14 * 24 * HOUR;
        let s = NOW.as_secs();
        let span = |query: &str| TimeShift::parse(query)?.plan(grid(), NOW, 30, two_weeks);
        let day = format!("start={}&end={}", s - 25 * 3600, s - 3600);
        assert!(matches!(span(&day), Ok(Plan::Range { .. })));
        for (query, says) in [
            (
                format!("start={}&end={}", s - 25 * 3600, s - 60),
                "spans at most 86400 s",
            ),
            (format!("start={}", s - 25 * 3600), "give an end too"),
        ] {
            match span(&query) {
                Err(Refusal::Malformed(why)) => assert!(why.contains(says), "{query}: {why}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    /// Any query a viewer sends is planned or refused, never a panic; a plan stays within a
    /// day of segments.
    #[test]
    fn fuzz_timeshift() {
        let words = &[
            "start=",
            "end=",
            "time_delay=",
            "manifest_window_seconds=",
            "&",
            "%3A",
            "%2B",
            "T",
            "Z",
            ":",
            "-",
            "+",
            ".",
            "e",
            "1795612548",
            "2026-11-25T",
        ];
        let most = (MAX_SPAN.as_secs_f64() / grid().duration_secs()).ceil() as u64 + 1;
        fuzzing::Target::new("timeshift").words(words).run(|data| {
            let query = String::from_utf8_lossy(data);
            for value in query.split(['&', '=']) {
                let _ = parse_time(value);
            }
            let Ok(shift) = TimeShift::parse(&query) else {
                return;
            };
            assert!(shift.delay.is_none_or(|d| d <= MAX_SPAN));
            assert!(shift.window.is_none_or(|w| w <= MAX_SPAN));
            match plan(&query) {
                Ok(Plan::Range { first_n, last_n }) => {
                    assert!(first_n <= last_n && last_n - first_n <= most);
                }
                Ok(Plan::Live { behind, count }) => assert!(behind <= most && count <= most),
                Ok(Plan::From { .. }) | Err(_) => {}
            }
        });
    }

    #[test]
    fn refusals_say_why() {
        let s = NOW.as_secs();
        let cases = [
            (
                format!("start={}", s - 3 * 3600),
                "before the startover window",
            ),
            (format!("start={}", s + 60), "in the future"),
            (format!("start={}&end={}", s - 60, s - 120), "after start"),
            (
                format!("start={}&end={}", s - 60, s + 60),
                "end is in the future",
            ),
            (format!("end={}", s - 60), "needs a start"),
            ("manifest_window_seconds=90000".to_string(), "86400"),
            ("start=soon".to_string(), "ISO 8601"),
        ];
        for (query, says) in cases {
            match plan(&query) {
                Err(Refusal::Malformed(why) | Refusal::OutOfWindow(why)) => {
                    assert!(why.contains(says), "{query}: {why}")
                }
                other => panic!("{query}: {other:?}"),
            }
        }
    }
}
