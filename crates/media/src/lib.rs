//! Containers without I/O (DESIGN.md §5): bytes in, bytes and decisions out.
//!
//! - [`mp4`]: ISO-BMFF box headers, a streaming box splitter and a box writer.
//! - [`fmp4`]: reading the fragmented MP4 that ffmpeg writes (a `moov`, then `moof`+`mdat`
//!   pairs holding several tracks) into absolute-time samples.
//! - [`cmaf`]: re-cutting those samples on the epoch grid into single-track CMAF segments,
//!   writing CMAF headers and segments, and inspecting them on receipt.
//! - [`ts`]: just enough MPEG-TS to validate a stream and read its first PTS.
//!
//! Everything that reads takes peer-controlled bytes: malformed input is an [`Error`], never a
//! panic, and no allocation is sized by an unchecked length field.

pub mod cmaf;
pub mod digest;
mod error;
pub mod fmp4;
pub mod mp4;
#[cfg(test)]
mod testutil;
pub mod ts;

pub use error::{Error, Result};
pub use mp4::FourCc;
