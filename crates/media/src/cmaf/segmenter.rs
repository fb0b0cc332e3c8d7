//! Re-cutting one track's samples on the epoch grid (DESIGN.md §2): segment `N` holds the
//! samples whose decode time starts in `[N·D, (N+1)·D)`, so two pipelines fed the same
//! timestamps cut identical segments, and audio frames straddling a boundary go to the
//! segment holding their start.

use timeline::SegmentGrid;

use crate::fmp4::{Sample, TrackInfo};

/// Caps on one segment; beyond them the segment is dropped with an error instead of growing.
pub const MAX_SEGMENT_SAMPLES: usize = 10_000;
pub const MAX_SEGMENT_BYTES: usize = 64 << 20;

/// A segment ready to be written with [`super::media_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    pub n: u64,
    /// Decode time of the first sample: `start_of(n)` for video cut on keyframes, within one
    /// frame after it for audio.
    pub base_decode_time: u64,
    /// Sum of the sample durations, in ticks.
    pub duration: u64,
    /// Durations are adjusted so that each equals the gap to the next sample's `dts`.
    pub samples: Vec<Sample>,
    pub starts_with_sync: bool,
    /// The last sample reaches the next segment's start. `false` when the segment was closed
    /// early by a gap in the input or by [`TrackSegmenter::flush`].
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The first sample seen for the segment started more than one sample duration after
    /// the segment's start (the pipeline started or resumed mid-segment).
    JoinedMidway { first_dts: u64, segment_start: u64 },
    /// A video segment whose first sample is not a sync sample.
    NoSyncStart,
    /// It exceeded [`MAX_SEGMENT_SAMPLES`] or [`MAX_SEGMENT_BYTES`] (or the configured caps).
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmenterEvent {
    Segment(CutSegment),
    /// Segment `n` will never be emitted by this segmenter.
    Dropped {
        n: u64,
        reason: DropReason,
    },
}

/// A sample the segmenter refused; the segmenter itself stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("sample at dts {dts} goes back before {previous_end}, the end of the previous sample")]
    Backwards { dts: u64, previous_end: u64 },
    #[error("sample at dts {dts} belongs to segment {n}, which is already closed")]
    Closed { n: u64, dts: u64 },
    #[error("segment {n} exceeds {max} samples; it is dropped")]
    TooManySamples { n: u64, max: usize },
    #[error("segment {n} exceeds {max} bytes; it is dropped")]
    TooManyBytes { n: u64, max: usize },
    #[error("the track's timescale is 0")]
    ZeroTimescale,
}

/// Counters for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmenterStats {
    pub emitted: u64,
    pub dropped_joined_midway: u64,
    pub dropped_no_sync: u64,
    pub dropped_overflow: u64,
    pub rejected_samples: u64,
}

#[derive(Debug)]
enum State {
    Collecting { samples: Vec<Sample>, bytes: usize },
    Discarding(DropReason),
}

#[derive(Debug)]
struct Pending {
    n: u64,
    state: State,
}

/// Cuts one track. Push samples in decode order; each call returns the segments (or drop
/// notices) it completed. See the crate docs of [`SegmenterEvent`] for what can come out.
#[derive(Debug)]
pub struct TrackSegmenter {
    grid: SegmentGrid,
    timescale: u32,
    video: bool,
    max_samples: usize,
    max_bytes: usize,
    pending: Option<Pending>,
    /// End of the last accepted sample.
    last_end: Option<u64>,
    /// Highest segment closed (emitted or dropped): never reopened.
    closed: Option<u64>,
    /// Events produced by a call that then had to return an error; handed out next call.
    deferred: Vec<SegmenterEvent>,
    stats: SegmenterStats,
}

impl TrackSegmenter {
    pub fn new(track: &TrackInfo, grid: SegmentGrid) -> Self {
        Self {
            grid,
            timescale: track.timescale,
            video: track.is_video(),
            max_samples: MAX_SEGMENT_SAMPLES,
            max_bytes: MAX_SEGMENT_BYTES,
            pending: None,
            last_end: None,
            closed: None,
            deferred: Vec::new(),
            stats: SegmenterStats::default(),
        }
    }

    /// Replaces the default caps.
    pub fn with_limits(mut self, max_samples: usize, max_bytes: usize) -> Self {
        self.max_samples = max_samples;
        self.max_bytes = max_bytes;
        self
    }

    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// Adds a sample. `Err` means this sample was refused (and, for an overflow, its segment
    /// dropped); events completed meanwhile come out of the next call.
    pub fn push(&mut self, sample: Sample) -> Result<Vec<SegmenterEvent>, SegmentError> {
        let r = self.push_inner(sample);
        if r.is_err() {
            self.stats.rejected_samples += 1;
        }
        r
    }

    fn push_inner(&mut self, sample: Sample) -> Result<Vec<SegmenterEvent>, SegmentError> {
        if self.timescale == 0 {
            return Err(SegmentError::ZeroTimescale);
        }
        let dts = sample.dts;
        // One tick of slack: rounding in an upstream timebase conversion is not a rewind.
        if let Some(previous_end) = self.last_end
            && dts.saturating_add(1) < previous_end
        {
            return Err(SegmentError::Backwards { dts, previous_end });
        }
        let n = self.grid.segment_of(dts, self.timescale);
        if self.closed.is_some_and(|c| n <= c) || self.pending.as_ref().is_some_and(|p| p.n > n) {
            return Err(SegmentError::Closed { n, dts });
        }

        let mut events = std::mem::take(&mut self.deferred);
        if self.pending.as_ref().is_some_and(|p| p.n < n) {
            self.close(&mut events);
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            n,
            state: Self::open_state(self.grid, self.timescale, self.video, n, &sample),
        });
        let end = sample.end();
        self.last_end = Some(end);

        let mut error = None;
        if let State::Collecting { samples, bytes } = &mut pending.state {
            if samples.len() >= self.max_samples {
                error = Some(SegmentError::TooManySamples {
                    n,
                    max: self.max_samples,
                });
            } else if bytes.saturating_add(sample.data.len()) > self.max_bytes {
                error = Some(SegmentError::TooManyBytes {
                    n,
                    max: self.max_bytes,
                });
            } else {
                // Make the previous duration the gap to this sample, so decode times written
                // as tfdt + durations stay the input's (ffmpeg's frag_discont fragments can
                // leave small gaps or overlaps between fragments).
                if let Some(prev) = samples.last_mut()
                    && let Ok(d) = u32::try_from(dts.saturating_sub(prev.dts))
                {
                    prev.duration = d;
                }
                *bytes += sample.data.len();
                samples.push(sample);
            }
        }
        if error.is_some() {
            pending.state = State::Discarding(DropReason::Overflow);
        }

        if end >= self.grid.start_of(n.saturating_add(1), self.timescale) {
            self.close(&mut events);
        }
        match error {
            Some(e) => {
                self.deferred = events;
                Err(e)
            }
            None => Ok(events),
        }
    }

    /// Closes the segment in progress, complete or not (end of stream).
    pub fn flush(&mut self) -> Vec<SegmenterEvent> {
        let mut events = std::mem::take(&mut self.deferred);
        self.close(&mut events);
        events
    }

    fn open_state(grid: SegmentGrid, timescale: u32, video: bool, n: u64, first: &Sample) -> State {
        let segment_start = grid.start_of(n, timescale);
        if first.dts.saturating_sub(segment_start) > u64::from(first.duration) {
            State::Discarding(DropReason::JoinedMidway {
                first_dts: first.dts,
                segment_start,
            })
        } else if video && !first.is_sync() {
            State::Discarding(DropReason::NoSyncStart)
        } else {
            State::Collecting {
                samples: Vec::new(),
                bytes: 0,
            }
        }
    }

    fn close(&mut self, events: &mut Vec<SegmenterEvent>) {
        let Some(Pending { n, state }) = self.pending.take() else {
            return;
        };
        self.closed = Some(n);
        let next_start = self.grid.start_of(n.saturating_add(1), self.timescale);
        match state {
            State::Collecting { mut samples, .. } => {
                // An ended stream's last frame carries only the samples it was given (an AAC
                // encoder's flush), yet plays as long as the frames before it: a copy flushed
                // by a restart then matches the other pipeline's, which ran on.
                if let [.., before, last] = samples.as_mut_slice() {
                    last.duration = last.duration.max(before.duration);
                }
                let Some(first) = samples.first() else {
                    return;
                };
                let seg = CutSegment {
                    n,
                    base_decode_time: first.dts,
                    duration: samples.iter().map(|s| u64::from(s.duration)).sum(),
                    starts_with_sync: first.is_sync(),
                    complete: samples.last().is_some_and(|s| s.end() >= next_start),
                    samples,
                };
                self.stats.emitted += 1;
                events.push(SegmenterEvent::Segment(seg));
            }
            State::Discarding(reason) => {
                match reason {
                    DropReason::JoinedMidway { .. } => self.stats.dropped_joined_midway += 1,
                    DropReason::NoSyncStart => self.stats.dropped_no_sync += 1,
                    DropReason::Overflow => self.stats.dropped_overflow += 1,
                }
                events.push(SegmenterEvent::Dropped { n, reason });
            }
        }
    }
}
