//! CMAF (ISO 23000-19) for the packager: single-track headers and media segments cut on the
//! epoch grid (DESIGN.md §2), and inspection of segments received from a pipeline.

mod inspect;
mod segmenter;
mod write;

pub use inspect::{SegmentInfo, inspect_init, inspect_segment};
pub use segmenter::{
    CutSegment, DropReason, MAX_SEGMENT_BYTES, MAX_SEGMENT_SAMPLES, SegmentError, SegmenterEvent,
    SegmenterStats, TrackSegmenter,
};
pub use write::{INIT_BRANDS, SEGMENT_BRANDS, init_segment, media_segment};

#[cfg(test)]
mod tests;
