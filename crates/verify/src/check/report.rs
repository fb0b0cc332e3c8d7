//! Violations, counted by kind with the first few examples, and the report a run ends with.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Serialize;

/// How many examples each kind keeps: enough to start debugging, bounded for a long run.
pub const EXAMPLES_PER_KIND: usize = 5;

/// What went wrong. Every kind is a violation of the steady state (DESIGN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// A listed URL (manifest, init or segment) answered something other than 200.
    Http,
    /// A request failed without an answer (connection refused, timeout, body too large).
    Fetch,
    /// A manifest that does not parse, or is not a live manifest of the expected kind.
    BadManifest,
    /// An init segment that is not a single-track CMAF header.
    BadInit,
    /// A media segment that is not a CMAF segment.
    BadSegment,
    /// Segments that no manifest ever listed although later ones were (the window slid past
    /// them between two reloads, or the numbering jumped).
    Skipped,
    /// An `EXT-X-GAP` entry, or a hole in a DASH `SegmentTimeline`.
    Gap,
    /// A manifest that did not advance within 1.5 target durations.
    Stale,
    /// A segment listed again with another URI, duration, discontinuity or gap flag.
    Rewritten,
    /// A segment that left the manifest before the ones listed ahead of it.
    Dropped,
    /// `EXT-X-MEDIA-SEQUENCE` going backwards.
    MediaSequence,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` disagreeing with the discontinuities that slid out.
    DiscontinuitySequence,
    /// Timestamps that jump from one segment to the next without an announced discontinuity.
    TimestampJump,
    /// An `EXT-X-DISCONTINUITY` or new Period where the timestamps are continuous and the
    /// header is the same.
    FalseDiscontinuity,
    /// A segment with another init segment than the one before it, and no discontinuity
    /// announced: a player would feed its decoder a header change unawares.
    UnannouncedHeaderChange,
    /// A DASH segment whose `tfdt` or duration disagrees with its `S` entry.
    TimelineMismatch,
    /// A video segment that does not start with a keyframe.
    NotKeyframe,
    /// A segment that arrived after a player with the configured buffer needed it.
    Late,
    /// The presentation ended (`EXT-X-ENDLIST`, a static MPD) while being watched live.
    Ended,
    /// A rendition in which not a single segment could be checked.
    NoSegments,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Http => "http",
            ErrorKind::Fetch => "fetch",
            ErrorKind::BadManifest => "bad-manifest",
            ErrorKind::BadInit => "bad-init",
            ErrorKind::BadSegment => "bad-segment",
            ErrorKind::Skipped => "skipped",
            ErrorKind::Gap => "gap",
            ErrorKind::Stale => "stale",
            ErrorKind::Rewritten => "rewritten",
            ErrorKind::Dropped => "dropped",
            ErrorKind::MediaSequence => "media-sequence",
            ErrorKind::DiscontinuitySequence => "discontinuity-sequence",
            ErrorKind::TimestampJump => "timestamp-jump",
            ErrorKind::FalseDiscontinuity => "false-discontinuity",
            ErrorKind::UnannouncedHeaderChange => "unannounced-header-change",
            ErrorKind::TimelineMismatch => "timeline-mismatch",
            ErrorKind::NotKeyframe => "not-keyframe",
            ErrorKind::Late => "late",
            ErrorKind::Ended => "ended",
            ErrorKind::NoSegments => "no-segments",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub rendition: String,
    /// Seconds since the verifier started.
    pub at_seconds: f64,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindSummary {
    pub count: u64,
    pub examples: Vec<Example>,
}

/// Violations by kind; memory stays bounded however many there are.
#[derive(Debug, Clone, Default)]
pub struct Errors {
    by_kind: BTreeMap<ErrorKind, KindSummary>,
    by_rendition: BTreeMap<String, u64>,
}

impl Errors {
    pub fn push(&mut self, kind: ErrorKind, rendition: &str, at: Duration, message: String) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.count += 1;
        if entry.examples.len() < EXAMPLES_PER_KIND {
            entry.examples.push(Example {
                rendition: rendition.to_string(),
                at_seconds: secs(at),
                message,
            });
        }
        *self.by_rendition.entry(rendition.to_string()).or_default() += 1;
    }

    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |k| k.count)
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().map(|k| k.count).sum()
    }

    pub fn of_rendition(&self, rendition: &str) -> u64 {
        self.by_rendition.get(rendition).copied().unwrap_or(0)
    }

    pub fn by_kind(&self) -> &BTreeMap<ErrorKind, KindSummary> {
        &self.by_kind
    }
}

/// Seconds as a float with millisecond resolution, for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Hls,
    Dash,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenditionReport {
    pub name: String,
    /// Segments listed from the starting point on (gap entries included).
    pub segments_listed: u64,
    /// Segments downloaded and inspected.
    pub segments_checked: u64,
    pub bytes: u64,
    /// Violations attributed to this rendition.
    pub errors: u64,
    /// Whether the player model got its initial buffer and started playing.
    pub playing: bool,
    pub stall_seconds: f64,
    pub stalls: u64,
    /// Media a player skipped because it was a gap or could not be fetched.
    pub missing_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StallSummary {
    /// The worst rendition's total: a player plays one video and one audio rendition, and
    /// either one stalling stalls the picture.
    pub seconds: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub url: String,
    pub format: Format,
    pub watched_seconds: f64,
    pub buffer_segments: usize,
    pub verdict: Verdict,
    /// Total violations, all kinds.
    pub violations: u64,
    pub renditions: Vec<RenditionReport>,
    pub errors: BTreeMap<ErrorKind, KindSummary>,
    pub stall: StallSummary,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        };
        let format = match self.format {
            Format::Hls => "HLS",
            Format::Dash => "DASH",
            Format::Unknown => "unknown format",
        };
        let _ = writeln!(
            out,
            "{verdict}: {} ({format}), watched {:.1} s with a {}-segment buffer, {} violation(s)",
            self.url, self.watched_seconds, self.buffer_segments, self.violations
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>7} {:>7} {:>10} {:>6} {:>8} {:>6} {:>8}",
            "rendition", "listed", "checked", "bytes", "errors", "stall s", "stalls", "missing"
        );
        for r in &self.renditions {
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:>7} {:>10} {:>6} {:>8.3} {:>6} {:>8.3}{}",
                r.name,
                r.segments_listed,
                r.segments_checked,
                r.bytes,
                r.errors,
                r.stall_seconds,
                r.stalls,
                r.missing_seconds,
                if r.playing { "" } else { "  (never started)" }
            );
        }
        let _ = writeln!(
            out,
            "  stall (worst rendition): {:.3} s in {} stall(s)",
            self.stall.seconds, self.stall.count
        );
        for (kind, summary) in &self.errors {
            let _ = writeln!(out, "  {kind}: {}", summary.count);
            for e in &summary.examples {
                let _ = writeln!(
                    out,
                    "    [{:>7.3} s] {}: {}",
                    e.at_seconds, e.rendition, e.message
                );
            }
        }
        out
    }
}
