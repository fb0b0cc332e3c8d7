//! Small exact formatters shared by the HLS and DASH writers.
//!
//! Each is a `Display` value, so renderers write it straight into their one output `String`
//! without an intermediate allocation per segment. Every number is computed with integers from
//! ticks, never through `f64`, so a manifest never shows `2.0019999`.

use std::fmt::{self, Display, Formatter};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision) for Unix milliseconds.
///
/// HLS `EXT-X-PROGRAM-DATE-TIME`, DASH `@publishTime`, and the body of a
/// `urn:mpeg:dash:utc:http-iso:2014` time endpoint all take this form.
pub fn iso8601(unix_millis: u64) -> String {
    Iso8601(unix_millis).to_string()
}

pub(crate) struct Iso8601(pub u64);

impl Display for Iso8601 {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = secs / 86_400;
        let sod = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days (Unix time here is never
/// before the epoch), which removes the negative-era branch. The year is counted from March so
/// the leap day is the last day of the "year" and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `ticks / timescale` scaled by `factor` (1000 for milliseconds), rounded to nearest (half up).
pub(crate) fn scale_round(ticks: u64, timescale: u32, factor: u64) -> u64 {
    let ts = u128::from(timescale.max(1));
    ((u128::from(ticks) * u128::from(factor) + ts / 2) / ts) as u64
}

/// `ticks / timescale` scaled by `factor`, rounded up: for maxima a reader must not undercut.
pub(crate) fn scale_ceil(ticks: u64, timescale: u32, factor: u64) -> u64 {
    let ts = u128::from(timescale.max(1));
    (u128::from(ticks) * u128::from(factor)).div_ceil(ts) as u64
}

/// A fixed-point decimal `scaled / 10^places`, printed with exactly `places` decimals.
pub(crate) struct Decimal {
    pub scaled: u64,
    pub places: u32,
}

impl Display for Decimal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let unit = 10u64.pow(self.places);
        if self.places == 0 {
            return write!(f, "{}", self.scaled);
        }
        write!(
            f,
            "{}.{:0width$}",
            self.scaled / unit,
            self.scaled % unit,
            width = self.places as usize
        )
    }
}

/// An `xs:duration` of whole milliseconds, in its shortest exact form: `PT2.002S`, `PT1M`,
/// `PT1H0.5S`, `PT0S`. Hours are the largest unit because days are not always 24 hours in the
/// schema's model and players only need hours at most.
pub(crate) struct XsdDuration(pub u64);

impl Display for XsdDuration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        f.write_str("PT")?;
        if h > 0 {
            write!(f, "{h}H")?;
        }
        if m > 0 {
            write!(f, "{m}M")?;
        }
        if s > 0 || frac > 0 || ms == 0 {
            write!(f, "{s}")?;
            if frac > 0 {
                // Trailing zeros carry no information: 500 ms is `.5`.
                let (mut digits, mut width) = (frac, 3);
                while digits % 10 == 0 {
                    digits /= 10;
                    width -= 1;
                }
                write!(f, ".{digits:0width$}")?;
            }
            f.write_str("S")?;
        }
        Ok(())
    }
}

/// Seconds as whole milliseconds (nearest); NaN and negatives become 0 because a duration
/// attribute cannot be negative and a broken parameter must not produce a broken MPD.
pub(crate) fn secs_to_millis(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

/// Text escaped for an XML attribute value in double quotes.
pub(crate) struct XmlAttr<'a>(pub &'a str);

impl Display for XmlAttr<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        escape(f, self.0, false)
    }
}

/// Literal text inside a DASH `SegmentTemplate` `@media`/`@initialization`: XML-escaped, and `$`
/// doubled because `$` opens a template identifier (ISO/IEC 23009-1 5.3.9.4.4).
pub(crate) struct TemplateLiteral<'a>(pub &'a str);

impl Display for TemplateLiteral<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        escape(f, self.0, true)
    }
}

fn escape(f: &mut Formatter<'_>, s: &str, dollar: bool) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(|c| matches!(c, '&' | '<' | '>' | '"' | '\'' | '$')) {
        f.write_str(&rest[..i])?;
        let c = rest.as_bytes()[i];
        f.write_str(match c {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            _ if dollar => "$$",
            _ => "$",
        })?;
        rest = &rest[i + 1..];
    }
    f.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_at_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(iso8601(951_868_800_000), "2000-03-01T00:00:00.000Z");
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(iso8601(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
        assert_eq!(iso8601(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_616_148_000), "2026-11-25T14:15:48.000Z");
        assert_eq!(iso8601(1_795_616_746_123), "2026-11-25T14:25:46.123Z");
        assert_eq!(iso8601(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_from_days_round_trips_every_day_for_centuries() {
        // Walk day by day from 1970 to 2400 with a naive calendar and compare.
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..(430 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            d += 1;
            if d > len[m as usize - 1] {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    #[test]
    fn decimals_and_rounding() {
        assert_eq!(Decimal { scaled: scale_round(180_180, 90_000, 100_000), places: 5 }.to_string(), "2.00200");
        assert_eq!(Decimal { scaled: scale_round(96_256, 48_000, 100_000), places: 5 }.to_string(), "2.00533");
        assert_eq!(Decimal { scaled: 29_970, places: 3 }.to_string(), "29.970");
        assert_eq!(Decimal { scaled: 7, places: 0 }.to_string(), "7");
        // 1024 ticks at 48 kHz = 21.333 ms; 2048 = 42.667 ms rounds up.
        assert_eq!(scale_round(1024, 48_000, 1000), 21);
        assert_eq!(scale_round(2048, 48_000, 1000), 43);
        assert_eq!(scale_ceil(1024, 48_000, 1000), 22);
        assert_eq!(scale_ceil(96_000, 48_000, 1000), 2000);
    }

    #[test]
    fn xsd_durations_are_short_and_exact() {
        let cases = [
            (0, "PT0S"),
            (2002, "PT2.002S"),
            (2000, "PT2S"),
            (500, "PT0.5S"),
            (20, "PT0.02S"),
            (60_000, "PT1M"),
            (90_000, "PT1M30S"),
            (3_600_000, "PT1H"),
            (3_600_500, "PT1H0.5S"),
            (7_384_001, "PT2H3M4.001S"),
        ];
        for (ms, want) in cases {
            assert_eq!(XsdDuration(ms).to_string(), want, "{ms} ms");
        }
        assert_eq!(secs_to_millis(2.002), 2002);
        assert_eq!(secs_to_millis(f64::NAN), 0);
        assert_eq!(secs_to_millis(-3.0), 0);
    }

    #[test]
    fn escapes() {
        assert_eq!(XmlAttr("?a=1&b=\"<x>'$").to_string(), "?a=1&amp;b=&quot;&lt;x&gt;&apos;$");
        assert_eq!(TemplateLiteral("?t=$x&y").to_string(), "?t=$$x&amp;y");
        assert_eq!(XmlAttr("plain").to_string(), "plain");
    }
}
