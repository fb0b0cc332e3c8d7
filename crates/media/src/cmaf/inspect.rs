//! Validating what a pipeline uploads, before the packager stores and announces it.

use bytes::Bytes;

use crate::fmp4::moof::{Defaults, parse_moof};
use crate::fmp4::{Movie, SAMPLE_IS_NON_SYNC, TrackInfo};
use crate::mp4::{Boxes, RawBox};
use crate::{Error, Result};

/// What a media segment says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub track_id: u32,
    pub sequence_number: u32,
    /// `tfdt`.
    pub base_decode_time: u64,
    /// Sum of the sample durations, in the track timescale.
    pub duration: u64,
    pub sample_count: u32,
    pub starts_with_sync: bool,
    pub byte_len: usize,
}

/// Checks that `bytes` is one CMAF media segment — an optional `styp`, then a `moof` with
/// exactly one `traf` (with `tfdt`), then an `mdat` holding every sample — and nothing else.
/// Sample durations and flags must be in the `trun` or the `tfhd` (there is no `trex` here).
pub fn inspect_segment(bytes: &[u8]) -> Result<SegmentInfo> {
    inspect_segment_inner(bytes).map_err(|e| match e {
        Error::NotCmafSegment(_) => e,
        other => Error::NotCmafSegment(other.to_string()),
    })
}

fn not_segment(msg: impl Into<String>) -> Error {
    Error::NotCmafSegment(msg.into())
}

fn top_level(bytes: &[u8], max: usize) -> Result<Vec<RawBox<'_>>> {
    let mut out = Vec::new();
    for b in Boxes::file(bytes) {
        let b = b?;
        if out.len() == max {
            return Err(Error::malformed(format!(
                "unexpected box `{}` after the {max} expected",
                b.fourcc()
            )));
        }
        out.push(b);
    }
    Ok(out)
}

fn inspect_segment_inner(bytes: &[u8]) -> Result<SegmentInfo> {
    let boxes = top_level(bytes, 3)?;
    let (moof, mdat) = match boxes.as_slice() {
        [styp, moof, mdat] if styp.is(b"styp") && moof.is(b"moof") && mdat.is(b"mdat") => {
            (*moof, *mdat)
        }
        [moof, mdat] if moof.is(b"moof") && mdat.is(b"mdat") => (*moof, *mdat),
        _ => {
            let found: Vec<String> = boxes.iter().map(|b| b.fourcc().to_string()).collect();
            return Err(not_segment(format!(
                "expected [styp] moof mdat, found [{}]",
                found.join(", ")
            )));
        }
    };
    let parsed = parse_moof(
        moof.data,
        moof.offset as u64,
        &|_| Some(Defaults::default()),
    )?;
    let [traf] = parsed.trafs.as_slice() else {
        return Err(not_segment(format!(
            "{} traf boxes, expected one",
            parsed.trafs.len()
        )));
    };
    let base_decode_time = traf
        .base_decode_time
        .ok_or_else(|| not_segment("traf without tfdt"))?;
    let Some(first) = traf.samples.first() else {
        return Err(not_segment("no samples"));
    };
    let data_start = (mdat.offset + mdat.header_len) as u64;
    let data_end = (mdat.offset + mdat.data.len()) as u64;
    let mut duration = 0u64;
    for s in &traf.samples {
        if s.offset < data_start || s.offset.saturating_add(u64::from(s.size)) > data_end {
            return Err(not_segment(format!(
                "sample at offset {} (+{} bytes) is outside the mdat at {data_start}..{data_end}",
                s.offset, s.size
            )));
        }
        duration += u64::from(s.duration);
    }
    Ok(SegmentInfo {
        track_id: traf.track_id,
        sequence_number: parsed.sequence_number,
        base_decode_time,
        duration,
        sample_count: traf.samples.len() as u32,
        starts_with_sync: first.flags & SAMPLE_IS_NON_SYNC == 0,
        byte_len: bytes.len(),
    })
}

/// Checks that `bytes` is a single-track CMAF header — `ftyp` then a `moov` with exactly one
/// track and an `mvex` — and returns that track.
pub fn inspect_init(bytes: &[u8]) -> Result<TrackInfo> {
    inspect_init_inner(bytes).map_err(|e| match e {
        Error::NotCmafHeader(_) => e,
        other => Error::NotCmafHeader(other.to_string()),
    })
}

fn inspect_init_inner(bytes: &[u8]) -> Result<TrackInfo> {
    let boxes = top_level(bytes, 2)?;
    let moov = match boxes.as_slice() {
        [ftyp, moov] if ftyp.is(b"ftyp") && moov.is(b"moov") => moov,
        _ => return Err(Error::NotCmafHeader("expected ftyp moov".into())),
    };
    let movie = Movie::from_bytes(Bytes::copy_from_slice(moov.data))?;
    if !movie.fragmented {
        return Err(Error::NotCmafHeader("moov without mvex".into()));
    }
    match movie.tracks.as_slice() {
        [track] => Ok(track.clone()),
        tracks => Err(Error::NotCmafHeader(format!(
            "{} tracks, expected one",
            tracks.len()
        ))),
    }
}
