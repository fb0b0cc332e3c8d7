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
    let mut out = String::with_capacity(24);
    push_iso8601(&mut out, unix_millis);
    out
}

/// Appends [`iso8601`] text. Renderers call this once per segment, so it fills a fixed-width
/// buffer and appends it once instead of going through `core::fmt`, which costs several times
/// more.
pub(crate) fn push_iso8601(out: &mut String, unix_millis: u64) {
    let secs = unix_millis / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    if y > 9999 {
        // Past the four-digit years of the fixed layout; never reached by a real clock.
        push_uint(out, y, 4);
        let mut rest = [0u8; 24];
        fill_iso8601(&mut rest, 0, m, d, sod, unix_millis % 1000);
        out.push_str(std::str::from_utf8(&rest[4..]).unwrap_or_default());
        return;
    }
    let mut buf = [0u8; 24];
    fill_iso8601(&mut buf, y, m, d, sod, unix_millis % 1000);
    // Always ASCII, so the check cannot fail.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

fn fill_iso8601(buf: &mut [u8; 24], y: u64, m: u64, d: u64, sod: u64, ms: u64) {
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, ms, 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = c;
    }
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
pub(crate) fn push_uint(out: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let from = i.min(buf.len().saturating_sub(width));
    // Always ASCII digits, so the check cannot fail.
    if let Ok(digits) = std::str::from_utf8(&buf[from..]) {
        out.push_str(digits);
    }
}

/// Appends the fixed-point decimal `scaled / 10^places` with exactly `places` decimals.
pub(crate) fn push_decimal(out: &mut String, scaled: u64, places: u32) {
    let unit = 10u64.pow(places);
    push_uint(out, scaled / unit, 1);
    if places > 0 {
        out.push('.');
        push_uint(out, scaled % unit, places as usize);
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
    // u64 arithmetic when it cannot overflow: a u128 division costs more than the rest of a
    // playlist line.
    let ts64 = u64::from(timescale.max(1));
    if let Some(v) = ticks
        .checked_mul(factor)
        .and_then(|v| v.checked_add(ts64 / 2))
    {
        return v / ts64;
    }
    let ts = u128::from(ts64);
    ((u128::from(ticks) * u128::from(factor) + ts / 2) / ts) as u64
}

/// `ticks / timescale` scaled by `factor`, rounded up: for maxima a reader must not undercut.
pub(crate) fn scale_ceil(ticks: u64, timescale: u32, factor: u64) -> u64 {
    let ts64 = u64::from(timescale.max(1));
    if let Some(v) = ticks.checked_mul(factor) {
        return v.div_ceil(ts64);
    }
    let ts = u128::from(ts64);
    (u128::from(ticks) * u128::from(factor)).div_ceil(ts) as u64
}

/// An `xs:duration` of whole milliseconds, in its shortest exact form: `PT2.002S`, `PT1M`,
/// `PT1H0.5S`, `PT0S`. Hours are the largest unit (a two-day window is `PT48H`): every player
/// parses H/M/S, and no calendar unit with a variable length can creep in.
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
    let special: &[char] = if dollar {
        &['&', '<', '>', '"', '\'', '$']
    } else {
        &['&', '<', '>', '"', '\'']
    };
    while let Some(i) = rest.find(special) {
        f.write_str(&rest[..i])?;
        let c = rest.as_bytes()[i];
        f.write_str(match c {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            _ => "$$",
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
        assert_eq!(iso8601(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn uints_pad() {
        let mut s = String::new();
        push_uint(&mut s, 0, 0);
        push_uint(&mut s, 7, 3);
        push_uint(&mut s, 12345, 2);
        push_uint(&mut s, u64::MAX, 1);
        assert_eq!(s, format!("0007{}{}", 12345, u64::MAX));
    }

    #[test]
    fn civil_from_days_round_trips_every_day_for_centuries() {
        // Walk day by day from 1970 to 2400 with a naive calendar and compare.
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..(430 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
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
        let decimal = |scaled, places| {
            let mut s = String::new();
            push_decimal(&mut s, scaled, places);
            s
        };
        assert_eq!(decimal(scale_round(180_180, 90_000, 100_000), 5), "2.00200");
        assert_eq!(decimal(scale_round(96_256, 48_000, 100_000), 5), "2.00533");
        assert_eq!(decimal(29_970, 3), "29.970");
        assert_eq!(decimal(7, 0), "7");
        assert_eq!(decimal(5, 3), "0.005");
        // The u128 path agrees with the u64 one.
        assert_eq!(scale_round(u64::MAX / 10, 1000, 1000), u64::MAX / 10);
        assert_eq!(
            scale_round(161_605_453_529_520, 90_000, 100_000),
            179_561_615_032_800
        );
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
        assert_eq!(
            XmlAttr("?a=1&b=\"<x>'$").to_string(),
            "?a=1&amp;b=&quot;&lt;x&gt;&apos;$"
        );
        assert_eq!(TemplateLiteral("?t=$x&y").to_string(), "?t=$$x&amp;y");
        assert_eq!(XmlAttr("plain").to_string(), "plain");
    }
}
