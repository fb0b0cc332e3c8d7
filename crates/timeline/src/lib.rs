//! The epoch-locked timeline (DESIGN.md §2).
//!
//! Segment `N` of a channel covers `[N·D, (N+1)·D)` seconds of Unix time, where `D` is a whole
//! number of frames at the channel's output frame rate. Every function here is pure: time is a
//! parameter, so two pipelines, a restarted pipeline or a new node compute the same `N` for the
//! same instant.

mod grid;
mod lock;
mod merge;

pub use grid::{FrameRate, GridError, SegmentGrid};
pub use lock::{
    LockMode, PTS_WRAP, SOURCE_LOCK_TOLERANCE, TS_TIMESCALE, clock_lock_offset, lock_mpegts,
    source_lock_offset, unwrap_pts,
};
pub use merge::{CopyOffer, Feed, Offer, SegmentChoice};
