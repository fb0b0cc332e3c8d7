//! HLS and DASH manifest rendering for epoch-locked live channels (DESIGN.md §2, §6).
//!
//! Pure functions: catalog data and the current time go in, manifest text comes out. Nothing
//! here reads a clock, a file or a socket, so two origin nodes given the same catalog state
//! render byte-identical manifests, and every rule is unit-tested without a server.
//!
//! URLs are relative to the manifest location `/live/{channel}/`: init segments are
//! `{rendition}/init-{header}.mp4` (named by their content, so a rendition whose encoder settings
//! change gets a new URL and caches never mix headers), media segments `{rendition}/{N}.m4s`, media playlists
//! `{rendition}.m3u8`. A caller-supplied query string (`?token=…`) is appended to every child URL
//! so access tokens reach the segment requests.

use timeline::FrameRate;

/// `write!` into a `String`, which cannot fail: the `fmt::Result` is dropped here, once, instead
/// of at every line of every renderer.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        use ::std::fmt::Write as _;
        let _ = write!($out, $($arg)*);
    }};
}

pub mod dash;
pub mod hls;
mod text;

pub use text::iso8601;

/// One rendition of a channel's ladder, as the origin's catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Unique within the channel; names the playlist, the segment folder and the DASH
    /// Representation id.
    pub name: String,
    pub kind: RenditionKind,
    /// RFC 6381 codec string, e.g. `avc1.42C01E` or `mp4a.40.2`.
    pub codecs: String,
    /// Peak bits per second (HLS `BANDWIDTH`, DASH `@bandwidth`).
    pub bandwidth: u64,
    /// Average bits per second (HLS `AVERAGE-BANDWIDTH`).
    pub average_bandwidth: u64,
    /// Ticks per second of the media timestamps (90000 for video, the sample rate for audio).
    pub timescale: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionKind {
    Video {
        width: u32,
        height: u32,
        frame_rate: FrameRate,
    },
    Audio {
        sample_rate: u32,
        channels: u16,
        /// BCP 47 tag (`en`, `pt-BR`), when known.
        language: Option<String>,
    },
}

/// One media segment of a rendition, in the rendition's timescale.
///
/// Lists handed to the renderers are sorted by `n`; a number absent from the list is a real gap
/// (the segment does not exist), which HLS signals with `EXT-X-GAP` and DASH with an explicit
/// `S@t`/`S@n`, so that segment numbers keep meaning the same instant everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRef {
    /// Epoch-locked segment number: the segment covers `[n·D, (n+1)·D)` of Unix time.
    pub n: u64,
    /// Decode time of the first sample (`tfdt`), absolute Unix time in timescale ticks.
    pub start: u64,
    /// Duration in timescale ticks.
    pub duration: u64,
    /// The CMAF header this segment decodes with.
    pub header: HeaderId,
    /// The media timeline or the header changes before this segment (copies that could not
    /// be aligned, or encoder settings that changed).
    pub discontinuity: bool,
}

/// A CMAF header's identity: a hash of its bytes, so every node names the same header the same
/// way. URLs carry it as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HeaderId(pub u64);

impl std::fmt::Display for HeaderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Exactly the 16 lowercase hex digits [`HeaderId`] displays as: one URL per header.
impl std::str::FromStr for HeaderId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u64::from_str_radix(s, 16) {
            Ok(id) if canonical => Ok(HeaderId(id)),
            _ => Err(()),
        }
    }
}

impl SegmentRef {
    /// The tick just after the last sample.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.duration
    }
}

impl Rendition {
    pub(crate) fn is_video(&self) -> bool {
        matches!(self.kind, RenditionKind::Video { .. })
    }
}

#[cfg(test)]
mod fixture;
