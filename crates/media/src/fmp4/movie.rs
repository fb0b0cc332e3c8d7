//! The `moov` of a fragmented MP4: one [`TrackInfo`] per track, plus the raw boxes the CMAF
//! header writer copies.

use bytes::Bytes;

use super::codec;
use crate::mp4::{Boxes, FourCc, Reader, require_child};
use crate::{Error, Result};

/// More tracks than any ladder we run; a bound on work for a hostile `moov`.
pub const MAX_TRACKS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    Video {
        width: u16,
        height: u16,
    },
    Audio {
        sample_rate: u32,
        channels: u16,
    },
    /// Any other handler (subtitles, data): parsed so the movie still loads, never segmented.
    Other {
        handler: FourCc,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub kind: TrackKind,
    /// `mdhd` timescale, never 0.
    pub timescale: u32,
    /// RFC 6381 `CODECS` value (`avc1.42C00D`, `mp4a.40.2`, …).
    pub codec: String,
    /// Defaults from the track's `trex` (all 0 / index 1 when the movie has none).
    pub default_sample_description_index: u32,
    pub default_sample_duration: u32,
    pub default_sample_size: u32,
    pub default_sample_flags: u32,
    /// The whole `trak` box, as received.
    trak: Bytes,
    /// Offset of the `tkhd` flags' low byte inside `trak`, to mark the track enabled.
    tkhd_flags_at: Option<usize>,
}

impl TrackInfo {
    /// A track described by hand (tests, or a caller that segments without a `moov`); it has
    /// no `trak`, so [`crate::cmaf::init_segment`] refuses it.
    pub fn new(track_id: u32, kind: TrackKind, timescale: u32, codec: impl Into<String>) -> Self {
        Self {
            track_id,
            kind,
            timescale,
            codec: codec.into(),
            default_sample_description_index: 1,
            default_sample_duration: 0,
            default_sample_size: 0,
            default_sample_flags: 0,
            trak: Bytes::new(),
            tkhd_flags_at: None,
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(self.kind, TrackKind::Video { .. })
    }

    /// The `trak` box bytes (empty for a track made with [`TrackInfo::new`]).
    pub fn trak(&self) -> &Bytes {
        &self.trak
    }

    pub(crate) fn tkhd_flags_at(&self) -> Option<usize> {
        self.tkhd_flags_at
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movie {
    pub tracks: Vec<TrackInfo>,
    /// `mvhd` timescale.
    pub timescale: u32,
    /// Whether the `moov` has an `mvex` (it announces fragments).
    pub fragmented: bool,
    moov: Bytes,
    mvhd: Bytes,
}

impl Movie {
    /// Parses a whole `moov` box (header included), copying it once.
    pub fn parse(moov: &[u8]) -> Result<Movie> {
        Self::from_bytes(Bytes::copy_from_slice(moov))
    }

    /// Parses a whole `moov` box without copying: tracks keep slices of it.
    pub fn from_bytes(moov: Bytes) -> Result<Movie> {
        let top = Boxes::children(&moov)
            .next()
            .ok_or_else(|| Error::malformed("moov: empty input"))??;
        if !top.is(b"moov") {
            return Err(Error::malformed(format!(
                "expected `moov`, found `{}`",
                top.fourcc()
            )));
        }
        let body_at = top.header_len;
        let body = top.body();
        let mut mvhd = None;
        let mut tracks = Vec::new();
        let mut trexes = Vec::new();
        let mut fragmented = false;
        for b in Boxes::children(body) {
            let b = b?;
            let at = body_at + b.offset;
            match &b.kind {
                b"mvhd" => mvhd = Some((at, b)),
                b"trak" => {
                    if tracks.len() == MAX_TRACKS {
                        return Err(Error::Limit {
                            what: "tracks in moov",
                            count: MAX_TRACKS as u64 + 1,
                            max: MAX_TRACKS as u64,
                        });
                    }
                    tracks.push(parse_trak(&b, moov.slice(at..at + b.data.len()))?);
                }
                b"mvex" => {
                    fragmented = true;
                    for t in Boxes::children(b.body()) {
                        let t = t?;
                        if t.is(b"trex") && trexes.len() < MAX_TRACKS {
                            trexes.push(parse_trex(t.body())?);
                        }
                    }
                }
                _ => {}
            }
        }
        let (mvhd_at, mvhd) = mvhd.ok_or_else(|| Error::malformed("moov: no `mvhd` box"))?;
        let timescale = {
            let mut r = Reader::new(mvhd.body());
            let (v, _) = r.full_box("mvhd")?;
            r.skip(if v == 1 { 16 } else { 8 }, "mvhd times")?;
            r.u32("mvhd timescale")?
        };
        for t in &mut tracks {
            if let Some(x) = trexes.iter().find(|x| x[0] == t.track_id) {
                t.default_sample_description_index = x[1];
                t.default_sample_duration = x[2];
                t.default_sample_size = x[3];
                t.default_sample_flags = x[4];
            }
        }
        for (i, t) in tracks.iter().enumerate() {
            if tracks.iter().skip(i + 1).any(|u| u.track_id == t.track_id) {
                return Err(Error::malformed(format!(
                    "moov: track id {} twice",
                    t.track_id
                )));
            }
        }
        let mvhd = moov.slice(mvhd_at..mvhd_at + mvhd.data.len());
        Ok(Movie {
            tracks,
            timescale,
            fragmented,
            moov,
            mvhd,
        })
    }

    pub fn track(&self, track_id: u32) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.track_id == track_id)
    }

    /// The `moov` box as received.
    pub fn moov(&self) -> &Bytes {
        &self.moov
    }

    /// The `mvhd` box as received.
    pub fn mvhd(&self) -> &Bytes {
        &self.mvhd
    }
}

/// `[track_ID, default_sample_description_index, duration, size, flags]`.
fn parse_trex(body: &[u8]) -> Result<[u32; 5]> {
    let mut r = Reader::new(body);
    r.full_box("trex")?;
    let mut out = [0u32; 5];
    for v in &mut out {
        *v = r.u32("trex")?;
    }
    Ok(out)
}

fn parse_trak(trak: &crate::mp4::RawBox<'_>, bytes: Bytes) -> Result<TrackInfo> {
    let body = trak.body();
    let tkhd = require_child(body, b"tkhd", "trak")?;
    let mut r = Reader::new(tkhd.body());
    let (v, _) = r.full_box("tkhd")?;
    r.skip(if v == 1 { 16 } else { 8 }, "tkhd times")?;
    let track_id = r.u32("tkhd track_ID")?;
    if track_id == 0 {
        return Err(Error::malformed("tkhd: track_ID 0"));
    }
    // Low byte of the 24-bit flags: the last byte of the full-box word.
    let tkhd_flags_at = Some(trak.header_len + tkhd.offset + tkhd.header_len + 3);

    let mdia = require_child(body, b"mdia", "trak")?;
    let mdhd = require_child(mdia.body(), b"mdhd", "mdia")?;
    let mut r = Reader::new(mdhd.body());
    let (v, _) = r.full_box("mdhd")?;
    r.skip(if v == 1 { 16 } else { 8 }, "mdhd times")?;
    let timescale = r.u32("mdhd timescale")?;
    if timescale == 0 {
        return Err(Error::malformed(format!(
            "mdhd: timescale 0 in track {track_id}"
        )));
    }
    let hdlr = require_child(mdia.body(), b"hdlr", "mdia")?;
    let mut r = Reader::new(hdlr.body());
    r.full_box("hdlr")?;
    r.skip(4, "hdlr pre_defined")?;
    let handler = r.array::<4>("hdlr handler_type")?;

    let minf = require_child(mdia.body(), b"minf", "mdia")?;
    let stbl = require_child(minf.body(), b"stbl", "minf")?;
    let stsd = require_child(stbl.body(), b"stsd", "stbl")?;
    let mut r = Reader::new(stsd.body());
    r.full_box("stsd")?;
    let _count = r.u32("stsd entry_count")?;
    let entry = Boxes::children(r.rest())
        .next()
        .ok_or_else(|| Error::malformed(format!("stsd: no sample entry in track {track_id}")))??;

    let mut e = Reader::new(entry.body());
    e.skip(8, "sample entry")?; // reserved + data_reference_index
    let (kind, children) = match &handler {
        b"vide" => {
            e.skip(16, "visual sample entry")?;
            let width = e.u16("visual sample entry width")?;
            let height = e.u16("visual sample entry height")?;
            e.skip(50, "visual sample entry")?;
            (TrackKind::Video { width, height }, e.rest())
        }
        b"soun" => {
            // QuickTime sound entries version 1 and 2 carry 16 or 36 more bytes.
            let version = e.u16("audio sample entry version")?;
            e.skip(6, "audio sample entry")?;
            let channels = e.u16("audio sample entry channelcount")?;
            e.skip(6, "audio sample entry")?;
            let rate = e.u32("audio sample entry samplerate")? >> 16;
            e.skip(
                match version {
                    1 => 16,
                    2 => 36,
                    _ => 0,
                },
                "audio sample entry v1/v2",
            )?;
            // The 16.16 field cannot hold rates above 65535 Hz; mdhd's timescale is the rate
            // for every audio track ffmpeg writes.
            let sample_rate = if rate == 0 { timescale } else { rate };
            (
                TrackKind::Audio {
                    sample_rate,
                    channels,
                },
                e.rest(),
            )
        }
        _ => (
            TrackKind::Other {
                handler: FourCc(handler),
            },
            &[][..],
        ),
    };
    let codec = match kind {
        TrackKind::Other { .. } => FourCc(entry.kind).to_string(),
        _ => codec::of_entry(entry.kind, children)?,
    };
    // ffmpeg writes channelcount 2 in every AAC sample entry; the AudioSpecificConfig knows.
    let mut kind = kind;
    if let (TrackKind::Audio { channels, .. }, b"mp4a") = (&mut kind, &entry.kind)
        && let Some(esds) = crate::mp4::find_child(children, b"esds")?
        && let Ok((0x40, asc)) = codec::es_config(esds.body())
        && let Ok((_, c @ 1..=7)) = codec::audio_specific_config(asc)
    {
        // Configurations 1–6 are that many channels, 7 is 7.1 (8 channels).
        *channels = if c == 7 { 8 } else { u16::from(c) };
    }
    Ok(TrackInfo {
        track_id,
        kind,
        timescale,
        codec,
        default_sample_description_index: 1,
        default_sample_duration: 0,
        default_sample_size: 0,
        default_sample_flags: 0,
        trak: bytes,
        tkhd_flags_at,
    })
}
