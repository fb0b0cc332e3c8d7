//! What the bytes of a rendition say: init segments, keyframes, and timestamps continuous from
//! each segment to the next unless a discontinuity is announced there.

use std::collections::HashMap;

use media::cmaf::{inspect_init, inspect_segment};

use super::report::ErrorKind;

/// What a segment's manifest entry says about it, decided when it was listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// The listing key (HLS media sequence number, DASH presentation time in µs).
    pub key: u64,
    /// The key of the listed segment before it (gap entries aside), when known: the one whose
    /// end its timestamps must continue. `None` at the start and after skipped segments.
    pub follows: Option<u64>,
    /// Gap entries between `follows` and this segment: timestamps advance by that much.
    pub gap_before_secs: f64,
    /// A discontinuity is announced between `follows` and this segment (inclusive).
    pub discontinuity: bool,
    /// DASH: the `S@t` (a media time, so the segment's `tfdt`) and `S@d`, in `timescale`.
    pub timeline: Option<(u64, u64, u32)>,
}

/// The last segment checked, for the continuity check of the next.
#[derive(Debug, Clone)]
struct Checked {
    key: u64,
    end: u64,
    /// One frame: the segment's mean sample duration.
    frame: u64,
    timescale: Option<u32>,
    /// The init segment it decodes with.
    init_uri: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    timescale: u32,
    video: bool,
}

/// How many distinct init segments a rendition may announce before we stop remembering new
/// ones (a new one per discontinuity at most; a hostile manifest cannot grow this).
const MAX_INITS: usize = 64;

#[derive(Debug, Default)]
pub struct MediaState {
    inits: HashMap<String, Option<Track>>,
    last: Option<Checked>,
}

/// A finding about one segment: (kind, message).
pub type Finding = (ErrorKind, String);

impl MediaState {
    /// Whether the init segment `uri` has yet to be fetched.
    pub fn needs_init(&self, uri: &str) -> bool {
        !self.inits.contains_key(uri) && self.inits.len() < MAX_INITS
    }

    /// An init segment that could not be fetched: remembered so it is not asked for again.
    pub fn init_failed(&mut self, uri: &str) {
        if self.inits.len() < MAX_INITS {
            self.inits.insert(uri.to_string(), None);
        }
    }

    pub fn on_init(&mut self, uri: &str, bytes: &[u8]) -> Option<Finding> {
        let (track, finding) = match inspect_init(bytes) {
            Ok(t) => (
                Some(Track {
                    timescale: t.timescale,
                    video: t.is_video(),
                }),
                None,
            ),
            Err(e) => (None, Some((ErrorKind::BadInit, format!("{uri}: {e}")))),
        };
        if self.inits.len() < MAX_INITS {
            self.inits.insert(uri.to_string(), track);
        }
        finding
    }

    /// A segment whose fetch failed: the next one cannot be compared with it.
    pub fn segment_failed(&mut self) {
        self.last = None;
    }

    /// Checks one segment's bytes against its init (`init_uri`) and the segment before it.
    pub fn on_segment(
        &mut self,
        uri: &str,
        init_uri: Option<&str>,
        expect: &Expect,
        bytes: &[u8],
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let info = match inspect_segment(bytes) {
            Ok(info) => info,
            Err(e) => {
                self.last = None;
                out.push((ErrorKind::BadSegment, format!("{uri}: {e}")));
                return out;
            }
        };
        let track = init_uri.and_then(|u| self.inits.get(u).copied().flatten());
        // Without an init segment (it failed, and that is reported) the kind is unknown:
        // checking the keyframe anyway is right for video and harmless for audio, whose
        // samples are all sync samples.
        if track.is_none_or(|t| t.video) && !info.starts_with_sync {
            out.push((
                ErrorKind::NotKeyframe,
                format!("{uri}: the first sample is not a sync sample"),
            ));
        }
        let start = info.base_decode_time;
        let end = start.saturating_add(info.duration);
        let frame = (info.duration / u64::from(info.sample_count.max(1))).max(1);
        let timescale = track.map(|t| t.timescale);

        if let Some((t, d, ts)) = expect.timeline {
            // The MPD places the segment by `S@t`; the media must start there (within a frame)
            // and last `S@d`, or a player's buffer and the timeline disagree.
            if timescale.is_none_or(|x| x == ts) {
                if start.abs_diff(t) > frame {
                    out.push((
                        ErrorKind::TimelineMismatch,
                        format!("{uri}: tfdt {start}, the timeline says t={t} (timescale {ts})"),
                    ));
                }
                if info.duration.abs_diff(d) > frame {
                    out.push((
                        ErrorKind::TimelineMismatch,
                        format!(
                            "{uri}: lasts {} ticks, the timeline says d={d} (timescale {ts})",
                            info.duration
                        ),
                    ));
                }
            }
        }

        if let (Some(prev), Some(follows)) = (&self.last, expect.follows)
            && prev.key == follows
        {
            out.extend(continuity(uri, prev, start, timescale, init_uri, expect));
        }
        self.last = Some(Checked {
            key: expect.key,
            end,
            frame,
            timescale,
            init_uri: init_uri.map(str::to_string),
        });
        out
    }
}

/// Compares a segment's start with where the previous one ended (plus any gap entries), and
/// its header with the previous one's: either change needs an announced discontinuity, and an
/// announced one needs either.
fn continuity(
    uri: &str,
    prev: &Checked,
    start: u64,
    timescale: Option<u32>,
    init_uri: Option<&str>,
    expect: &Expect,
) -> Option<Finding> {
    let new_header = prev.init_uri.as_deref() != init_uri;
    // A new init with another timescale is a different stream: that is a jump.
    let same_scale = prev.timescale == timescale;
    let (expected, tolerance) = if expect.gap_before_secs > 0.0 {
        // Gap durations come from the manifest (EXTINF has 5 decimals): add 1 ms of slack.
        let ts = timescale.filter(|_| same_scale)?;
        let gap = (expect.gap_before_secs * f64::from(ts)).round() as u64;
        (
            prev.end.saturating_add(gap),
            prev.frame + u64::from(ts) / 1000,
        )
    } else {
        (prev.end, prev.frame)
    };
    let jump = i128::from(start) - i128::from(expected);
    // "Continuous within one frame": a frame of slack either way, inclusive.
    let continuous = same_scale && jump.unsigned_abs() <= u128::from(tolerance);
    let describe = || match timescale.filter(|_| same_scale) {
        Some(ts) => format!("{:+.3} s", jump as f64 / f64::from(ts)),
        None => format!("{jump:+} ticks"),
    };
    match (continuous, expect.discontinuity) {
        (true, true) if !new_header => Some((
            ErrorKind::FalseDiscontinuity,
            format!(
                "{uri}: a discontinuity is announced but the timestamps and the header continue"
            ),
        )),
        (true, false) if new_header => Some((
            ErrorKind::UnannouncedHeaderChange,
            format!(
                "{uri}: decodes with {}, the previous segment with {}, and no discontinuity \
                 is announced",
                init_uri.unwrap_or("no header"),
                prev.init_uri.as_deref().unwrap_or("no header")
            ),
        )),
        (false, false) => Some((
            ErrorKind::TimestampJump,
            format!(
                "{uri}: starts at {start}, the previous segment ended at {expected} ({}) \
                 with no discontinuity announced",
                describe()
            ),
        )),
        _ => None,
    }
}
