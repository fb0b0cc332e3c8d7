//! Parsing a `moof` into sample runs: the part shared by [`super::FragmentReader`] (which has
//! `trex` defaults and slices sample data) and [`crate::cmaf::inspect_segment`] (which has no
//! `moov` and only checks).

use crate::mp4::{Boxes, Reader, require_child};
use crate::{Error, Result};

/// Samples in one `moof`, all tracks together. ffmpeg's ~100 ms fragments hold a handful, a
/// whole CMAF segment a few hundred; the cap bounds memory and work when a `trun` lies.
pub const MAX_SAMPLES_PER_MOOF: usize = 100_000;

const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
pub(crate) const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;

pub(crate) const TRUN_DATA_OFFSET: u32 = 0x000_001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x000_004;
pub(crate) const TRUN_DURATION: u32 = 0x000_100;
pub(crate) const TRUN_SIZE: u32 = 0x000_200;
pub(crate) const TRUN_FLAGS: u32 = 0x000_400;
pub(crate) const TRUN_CTO: u32 = 0x000_800;

/// Per-track fallbacks from `trex`; `None` where there is no `moov` to ask.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Defaults {
    pub duration: Option<u32>,
    pub size: Option<u32>,
    pub flags: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawSample {
    /// Decode time relative to the traf's base decode time.
    pub rel_dts: u64,
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    pub cto: i32,
    /// Absolute offset of the sample data in the stream.
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Traf {
    pub track_id: u32,
    pub base_decode_time: Option<u64>,
    pub samples: Vec<RawSample>,
}

#[derive(Debug, Clone)]
pub(crate) struct Moof {
    pub sequence_number: u32,
    pub trafs: Vec<Traf>,
}

/// Parses a whole `moof` box found at absolute stream offset `moof_offset`. `defaults` gives
/// the `trex` fallbacks of a track, or `None` for a track the `moov` does not know.
pub(crate) fn parse_moof(
    moof: &[u8],
    moof_offset: u64,
    defaults: &dyn Fn(u32) -> Option<Defaults>,
) -> Result<Moof> {
    let top = Boxes::children(moof)
        .next()
        .ok_or_else(|| Error::malformed("moof: empty"))??;
    if !top.is(b"moof") {
        return Err(Error::malformed(format!(
            "expected `moof`, found `{}`",
            top.fourcc()
        )));
    }
    let mfhd = require_child(top.body(), b"mfhd", "moof")?;
    let mut r = Reader::new(mfhd.body());
    r.full_box("mfhd")?;
    let sequence_number = r.u32("mfhd sequence_number")?;

    let mut trafs = Vec::new();
    let mut total = 0usize;
    // Where data of a traf without an explicit base starts: after the previous traf's data.
    let mut data_end = moof_offset;
    for b in Boxes::children(top.body()) {
        let b = b?;
        if !b.is(b"traf") {
            continue;
        }
        let traf = parse_traf(
            b.body(),
            moof_offset,
            trafs.is_empty(),
            &mut data_end,
            &mut total,
            defaults,
        )?;
        trafs.push(traf);
    }
    Ok(Moof {
        sequence_number,
        trafs,
    })
}

fn parse_traf(
    body: &[u8],
    moof_offset: u64,
    first: bool,
    data_end: &mut u64,
    total: &mut usize,
    defaults: &dyn Fn(u32) -> Option<Defaults>,
) -> Result<Traf> {
    let tfhd = require_child(body, b"tfhd", "traf")?;
    let mut r = Reader::new(tfhd.body());
    let (_, tf) = r.full_box("tfhd")?;
    let track_id = r.u32("tfhd track_ID")?;
    let trex = defaults(track_id)
        .ok_or_else(|| Error::malformed(format!("traf for track {track_id}, not in the moov")))?;
    let base = if tf & TFHD_BASE_DATA_OFFSET != 0 {
        r.u64("tfhd base_data_offset")?
    } else if tf & TFHD_DEFAULT_BASE_IS_MOOF != 0 || first {
        moof_offset
    } else {
        *data_end
    };
    if tf & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.u32("tfhd sample_description_index")?;
    }
    let mut d = trex;
    if tf & TFHD_DEFAULT_DURATION != 0 {
        d.duration = Some(r.u32("tfhd default_sample_duration")?);
    }
    if tf & TFHD_DEFAULT_SIZE != 0 {
        d.size = Some(r.u32("tfhd default_sample_size")?);
    }
    if tf & TFHD_DEFAULT_FLAGS != 0 {
        d.flags = Some(r.u32("tfhd default_sample_flags")?);
    }

    let base_decode_time = match crate::mp4::find_child(body, b"tfdt")? {
        Some(b) => {
            let mut r = Reader::new(b.body());
            let (v, _) = r.full_box("tfdt")?;
            Some(if v == 1 {
                r.u64("tfdt")?
            } else {
                u64::from(r.u32("tfdt")?)
            })
        }
        None => None,
    };

    let mut samples = Vec::new();
    let mut cursor = base;
    let mut rel_dts = 0u64;
    for b in Boxes::children(body) {
        let b = b?;
        if !b.is(b"trun") {
            continue;
        }
        let mut r = Reader::new(b.body());
        let (version, fl) = r.full_box("trun")?;
        let count = r.u32("trun sample_count")? as usize;
        if fl & TRUN_DATA_OFFSET != 0 {
            let off = r.i32("trun data_offset")?;
            cursor = base
                .checked_add_signed(i64::from(off))
                .ok_or_else(|| Error::malformed("trun: data_offset before the stream start"))?;
        }
        let first_flags = if fl & TRUN_FIRST_SAMPLE_FLAGS != 0 {
            Some(r.u32("trun first_sample_flags")?)
        } else {
            None
        };
        let per_sample = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
            .iter()
            .filter(|&&f| fl & f != 0)
            .count()
            * 4;
        // Check the count against the bytes that must hold it and against the cap before
        // reserving anything.
        if per_sample > 0
            && count
                .checked_mul(per_sample)
                .is_none_or(|n| n > r.remaining())
        {
            return Err(Error::Truncated {
                what: "trun sample table",
                need: count as u64 * per_sample as u64,
                have: r.remaining() as u64,
            });
        }
        *total = total.saturating_add(count);
        if *total > MAX_SAMPLES_PER_MOOF {
            return Err(Error::Limit {
                what: "samples in one moof",
                count: *total as u64,
                max: MAX_SAMPLES_PER_MOOF as u64,
            });
        }
        samples.reserve(count);
        for i in 0..count {
            let duration = if fl & TRUN_DURATION != 0 {
                r.u32("trun sample_duration")?
            } else {
                need(d.duration, "duration")?
            };
            let size = if fl & TRUN_SIZE != 0 {
                r.u32("trun sample_size")?
            } else {
                need(d.size, "size")?
            };
            let flags = if fl & TRUN_FLAGS != 0 {
                r.u32("trun sample_flags")?
            } else {
                match (i, first_flags) {
                    (0, Some(f)) => f,
                    _ => need(d.flags, "flags")?,
                }
            };
            let cto = if fl & TRUN_CTO != 0 {
                let raw = r.u32("trun sample_composition_time_offset")?;
                if version == 0 {
                    i32::try_from(raw)
                        .map_err(|_| Error::malformed("trun: composition offset above 2^31"))?
                } else {
                    raw as i32
                }
            } else {
                0
            };
            samples.push(RawSample {
                rel_dts,
                duration,
                size,
                flags,
                cto,
                offset: cursor,
            });
            rel_dts = rel_dts
                .checked_add(u64::from(duration))
                .ok_or_else(|| Error::malformed("trun: decode time overflows"))?;
            cursor = cursor
                .checked_add(u64::from(size))
                .ok_or_else(|| Error::malformed("trun: data offset overflows"))?;
        }
    }
    *data_end = cursor;
    Ok(Traf {
        track_id,
        base_decode_time,
        samples,
    })
}

fn need(v: Option<u32>, what: &str) -> Result<u32> {
    v.ok_or_else(|| Error::malformed(format!("sample {what} in neither trun, tfhd nor trex")))
}
