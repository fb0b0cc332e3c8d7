//! Reading ffmpeg's fragmented MP4: a `moov` describing several tracks, then `moof`+`mdat`
//! pairs, each `moof` holding one `traf` per track.

mod codec;
pub(crate) mod moof;
mod movie;
mod reader;

use bytes::Bytes;

pub use movie::{MAX_TRACKS, Movie, TrackInfo, TrackKind};
pub use reader::{FragmentEvent, FragmentReader};

/// ISO 14496-12 `sample_is_non_sync_sample`, bit 16 of the sample flags.
pub const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;
/// Flags ffmpeg (and most muxers) write for a keyframe: `sample_depends_on = 2` (depends on
/// no other sample), sync.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Flags for a non-keyframe: `sample_depends_on = 1`, non-sync.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// One coded frame with absolute timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Absolute decode time in the track timescale: `tfdt` plus the preceding durations.
    pub dts: u64,
    pub duration: u32,
    /// Composition time offset (`pts = dts + cto`), signed as in `trun` version 1.
    pub cto: i32,
    /// ISO 14496-12 sample flags.
    pub flags: u32,
    /// The sample's bytes: a zero-copy slice of the `mdat` it came in.
    pub data: Bytes,
}

impl Sample {
    pub fn is_sync(&self) -> bool {
        self.flags & SAMPLE_IS_NON_SYNC == 0
    }

    /// `dts + duration`, saturating (a decode time near `u64::MAX` is nonsense anyway).
    pub fn end(&self) -> u64 {
        self.dts.saturating_add(u64::from(self.duration))
    }
}

#[cfg(test)]
mod tests;
