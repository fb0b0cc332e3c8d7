//! Writing CMAF headers and media segments.

use bytes::{BufMut, Bytes, BytesMut};

use crate::fmp4::moof::{
    TFHD_DEFAULT_BASE_IS_MOOF, TRUN_CTO, TRUN_DATA_OFFSET, TRUN_DURATION, TRUN_FLAGS, TRUN_SIZE,
};
use crate::fmp4::{Movie, Sample};
use crate::mp4::BoxWriter;
use crate::{Error, Result};

/// `ftyp` of a CMAF header: major `iso6` (64-bit `tfdt` and the ISO-BMFF features CMAF builds
/// on), `cmfc` (the CMAF structural brand 23000-19 requires in a header), `mp41` (what
/// Apple's segmenter declares; some players still look for an MP4 brand) and `dash` (DASH
/// segment format conformance, checked by DASH validators). hls.js, Shaka and ffmpeg ignore
/// brands they do not know.
pub const INIT_BRANDS: (&[u8; 4], &[&[u8; 4]]) = (b"iso6", &[b"iso6", b"cmfc", b"mp41", b"dash"]);

/// `styp` of a media segment: `msdh` (a DASH media segment) and `cmfs` (a CMAF segment).
/// Not `msix`: that brand promises a `sidx`, which we do not write.
pub const SEGMENT_BRANDS: (&[u8; 4], &[&[u8; 4]]) = (b"msdh", &[b"msdh", b"cmfs"]);

/// `tkhd` flags `track_enabled | track_in_movie`: ffmpeg leaves them off for non-default
/// tracks, and a single-track header must not present a disabled track.
const TKHD_ENABLED_IN_MOVIE: u8 = 0x03;

fn brands_len(b: (&[u8; 4], &[&[u8; 4]])) -> usize {
    16 + 4 * b.1.len()
}

fn put_brands(buf: &mut BytesMut, kind: &[u8; 4], b: (&[u8; 4], &[&[u8; 4]])) {
    let w = BoxWriter::start(buf, kind);
    buf.put_slice(b.0);
    buf.put_u32(0); // minor_version
    for c in b.1 {
        buf.put_slice(*c);
    }
    w.finish(buf);
}

/// A single-track CMAF header for `track_id`: `ftyp` + `moov` (`mvhd` and the track's `trak`
/// copied from ffmpeg's `moov`, `mvex` with only that track's `trex`; `mehd` dropped since a
/// live presentation has no known duration).
pub fn init_segment(movie: &Movie, track_id: u32) -> Result<Bytes> {
    let track = movie.track(track_id).ok_or(Error::NoSuchTrack(track_id))?;
    let trak = track.trak();
    if trak.is_empty() {
        return Err(Error::Unsupported(format!(
            "track {track_id} has no `trak` to copy"
        )));
    }
    let mvhd = movie.mvhd();
    let size = brands_len(INIT_BRANDS) + 8 + mvhd.len() + trak.len() + 8 + 32;
    let mut buf = BytesMut::with_capacity(size);
    put_brands(&mut buf, b"ftyp", INIT_BRANDS);
    let moov = BoxWriter::start(&mut buf, b"moov");
    buf.put_slice(mvhd);
    let trak_at = buf.len();
    buf.put_slice(trak);
    if let Some(flags) = track
        .tkhd_flags_at()
        .and_then(|at| buf.get_mut(trak_at + at))
    {
        *flags |= TKHD_ENABLED_IN_MOVIE;
    }
    let mvex = BoxWriter::start(&mut buf, b"mvex");
    let trex = BoxWriter::start_full(&mut buf, b"trex", 0, 0);
    buf.put_u32(track_id);
    buf.put_u32(track.default_sample_description_index);
    buf.put_u32(track.default_sample_duration);
    buf.put_u32(track.default_sample_size);
    buf.put_u32(track.default_sample_flags);
    trex.finish(&mut buf);
    mvex.finish(&mut buf);
    moov.finish(&mut buf);
    debug_assert_eq!(buf.len(), size);
    Ok(buf.freeze())
}

/// A CMAF media segment: `styp` + `moof` (`mfhd`, one `traf`: `tfhd` with
/// default-base-is-moof, `tfdt` version 1, one `trun` with per-sample duration, size, flags
/// and — only when some are non-zero — signed composition offsets) + `mdat`.
///
/// Durations are written as given: decode times inside the segment are `base_decode_time`
/// plus the preceding durations, so they must match the samples' `dts` (the
/// [`super::TrackSegmenter`] makes them so). Sizes are computed first and the segment is
/// written into one buffer of exactly that capacity.
pub fn media_segment(
    track_id: u32,
    sequence_number: u32,
    base_decode_time: u64,
    samples: &[Sample],
) -> Result<Bytes> {
    if samples.is_empty() {
        return Err(Error::malformed("media segment without samples"));
    }
    let count = u32::try_from(samples.len()).map_err(|_| Error::Limit {
        what: "samples in a segment",
        count: samples.len() as u64,
        max: u32::MAX.into(),
    })?;
    let with_cto = samples.iter().any(|s| s.cto != 0);
    let entry = if with_cto { 16u64 } else { 12 };
    let trun = 20 + entry * u64::from(count);
    let moof = 8 + 16 + 8 + 16 + 20 + trun;
    let mut payload = 0u64;
    for s in samples {
        if s.data.len() > u32::MAX as usize {
            return Err(Error::Limit {
                what: "sample bytes",
                count: s.data.len() as u64,
                max: u32::MAX.into(),
            });
        }
        payload += s.data.len() as u64;
    }
    let mdat_header = if payload + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    };
    let data_offset = i32::try_from(moof + mdat_header).map_err(|_| Error::Limit {
        what: "moof bytes",
        count: moof,
        max: i32::MAX as u64,
    })?;
    let styp = brands_len(SEGMENT_BRANDS) as u64;
    let total = usize::try_from(styp + moof + mdat_header + payload).map_err(|_| Error::Limit {
        what: "segment bytes",
        count: u64::MAX,
        max: usize::MAX as u64,
    })?;

    let mut buf = BytesMut::with_capacity(total);
    put_brands(&mut buf, b"styp", SEGMENT_BRANDS);
    let moof_w = BoxWriter::start(&mut buf, b"moof");
    let mfhd = BoxWriter::start_full(&mut buf, b"mfhd", 0, 0);
    buf.put_u32(sequence_number);
    mfhd.finish(&mut buf);
    let traf = BoxWriter::start(&mut buf, b"traf");
    let tfhd = BoxWriter::start_full(&mut buf, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
    buf.put_u32(track_id);
    tfhd.finish(&mut buf);
    let tfdt = BoxWriter::start_full(&mut buf, b"tfdt", 1, 0);
    buf.put_u64(base_decode_time);
    tfdt.finish(&mut buf);
    let mut flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;
    if with_cto {
        flags |= TRUN_CTO;
    }
    let trun_w = BoxWriter::start_full(&mut buf, b"trun", u8::from(with_cto), flags);
    buf.put_u32(count);
    buf.put_i32(data_offset);
    for s in samples {
        buf.put_u32(s.duration);
        buf.put_u32(s.data.len() as u32);
        buf.put_u32(s.flags);
        if with_cto {
            buf.put_i32(s.cto);
        }
    }
    trun_w.finish(&mut buf);
    traf.finish(&mut buf);
    moof_w.finish(&mut buf);
    if mdat_header == 16 {
        buf.put_u32(1);
        buf.put_slice(b"mdat");
        buf.put_u64(16 + payload);
    } else {
        buf.put_u32(8 + payload as u32);
        buf.put_slice(b"mdat");
    }
    for s in samples {
        buf.put_slice(&s.data);
    }
    debug_assert_eq!(buf.len(), total);
    Ok(buf.freeze())
}
