//! [`FragmentReader`]: a sans-IO state machine from stream bytes to per-track samples.

use std::collections::VecDeque;

use bytes::Bytes;

use super::moof::{Defaults, parse_moof};
use super::{Movie, Sample};
use crate::mp4::{BoxHeader, BoxSplitter, Mp4Box};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentEvent {
    /// The `moov` arrived (after `ftyp`).
    Init(Movie),
    /// The samples of one `traf`, after its `moof`+`mdat` pair arrived complete.
    Samples { track_id: u32, samples: Vec<Sample> },
}

/// Feed it the stream (bytes with [`push`](Self::push), or boxes you split yourself with
/// [`push_box`](Self::push_box) — not both), pull [`FragmentEvent`]s.
///
/// Sample data are zero-copy slices of the `mdat`. Every sample must lie inside the `mdat`
/// that follows its `moof`. An error concerns one box and leaves the reader usable, except
/// a framing error from the splitter, which repeats: the stream must be dropped.
#[derive(Debug)]
pub struct FragmentReader {
    splitter: BoxSplitter,
    movie: Option<Movie>,
    /// The `moof` waiting for its `mdat`, with its stream offset.
    moof: Option<(Bytes, u64)>,
    /// Stream offset of the next box.
    offset: u64,
    /// Where each track's next sample starts, for a `traf` without `tfdt`.
    next_dts: Vec<(u32, u64)>,
    events: VecDeque<FragmentEvent>,
}

impl FragmentReader {
    pub fn new(max_box_size: usize) -> Self {
        Self {
            splitter: BoxSplitter::new(max_box_size),
            movie: None,
            moof: None,
            offset: 0,
            next_dts: Vec::new(),
            events: VecDeque::new(),
        }
    }

    pub fn movie(&self) -> Option<&Movie> {
        self.movie.as_ref()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.splitter.push(data);
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<FragmentEvent>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            match self.splitter.next_box()? {
                Some(b) => self.push_box(b)?,
                None => return Ok(None),
            }
        }
    }

    /// Handles one top-level box; its events come out of [`next_event`](Self::next_event).
    pub fn push_box(&mut self, b: Mp4Box) -> Result<()> {
        let offset = self.offset;
        self.offset = self.offset.saturating_add(b.bytes.len() as u64);
        match &b.kind {
            b"moov" => {
                let movie = Movie::from_bytes(b.bytes)?;
                self.moof = None;
                self.next_dts.clear();
                self.movie = Some(movie.clone());
                self.events.push_back(FragmentEvent::Init(movie));
            }
            b"moof" => {
                if self.movie.is_none() {
                    return Err(Error::malformed("moof before moov"));
                }
                // A moof whose mdat never came is superseded: ffmpeg never does that, and
                // keeping the newest is what lets the stream resynchronise.
                self.moof = Some((b.bytes, offset));
            }
            b"mdat" => {
                let Some((moof, moof_offset)) = self.moof.take() else {
                    return Err(Error::malformed("mdat without a preceding moof"));
                };
                self.read_fragment(&moof, moof_offset, &b.bytes, offset)?;
            }
            // ftyp, styp, sidx, free, skip, prft, emsg, mfra, udta…: nothing to read.
            _ => {}
        }
        Ok(())
    }

    fn read_fragment(
        &mut self,
        moof: &[u8],
        moof_offset: u64,
        mdat: &Bytes,
        mdat_offset: u64,
    ) -> Result<()> {
        let movie = self
            .movie
            .as_ref()
            .ok_or_else(|| Error::malformed("moof before moov"))?;
        let defaults = |id: u32| {
            movie.track(id).map(|t| Defaults {
                duration: Some(t.default_sample_duration),
                size: Some(t.default_sample_size),
                flags: Some(t.default_sample_flags),
            })
        };
        let parsed = parse_moof(moof, moof_offset, &defaults)?;
        let header_len = BoxHeader::parse(mdat)?.header_len as u64;
        let data_start = mdat_offset + header_len;
        let data_end = mdat_offset + mdat.len() as u64;

        // Build every event first, so a bad traf leaves no half-delivered fragment.
        let mut out = Vec::with_capacity(parsed.trafs.len());
        let mut next_dts = self.next_dts.clone();
        for traf in parsed.trafs {
            let slot = next_dts.iter().position(|(id, _)| *id == traf.track_id);
            let base = match (traf.base_decode_time, slot) {
                (Some(t), _) => t,
                (None, Some(i)) => next_dts.get(i).map_or(0, |(_, t)| *t),
                (None, None) => 0,
            };
            let mut samples = Vec::with_capacity(traf.samples.len());
            for s in &traf.samples {
                let end = s.offset.checked_add(u64::from(s.size));
                if s.offset < data_start || end.is_none_or(|e| e > data_end) {
                    return Err(Error::malformed(format!(
                        "track {}: sample at stream offset {} (+{} bytes) is outside the mdat at {}..{}",
                        traf.track_id, s.offset, s.size, data_start, data_end
                    )));
                }
                let from = (s.offset - mdat_offset) as usize;
                let dts = base
                    .checked_add(s.rel_dts)
                    .ok_or_else(|| Error::malformed("decode time overflows"))?;
                samples.push(Sample {
                    dts,
                    duration: s.duration,
                    cto: s.cto,
                    flags: s.flags,
                    data: mdat.slice(from..from + s.size as usize),
                });
            }
            let end = samples.last().map_or(base, Sample::end);
            match slot {
                Some(i) => {
                    if let Some(e) = next_dts.get_mut(i) {
                        e.1 = end;
                    }
                }
                None => next_dts.push((traf.track_id, end)),
            }
            out.push(FragmentEvent::Samples {
                track_id: traf.track_id,
                samples,
            });
        }
        self.next_dts = next_dts;
        self.events.extend(out);
        Ok(())
    }
}

impl Default for FragmentReader {
    /// 64 MiB boxes at most: far above a 100 ms fragment of any ladder we encode.
    fn default() -> Self {
        Self::new(64 << 20)
    }
}
