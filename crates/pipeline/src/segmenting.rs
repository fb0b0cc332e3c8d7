//! An encoder's output side: ffmpeg's fragmented MP4 in, one CMAF header per rendition and one
//! CMAF segment per (rendition, N) out. Pure: bytes in, uploads out.

use media::cmaf::{self, SegmenterEvent, TrackSegmenter};
use media::fmp4::{FragmentEvent, FragmentReader, Movie};
use timeline::SegmentGrid;

use crate::deliver::Upload;

/// The largest box ffmpeg may write: a fragment of a high-bitrate rendition is far smaller.
const MAX_BOX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SegmentingError {
    #[error("encoder output: {0}")]
    Media(#[from] media::Error),
    #[error("encoder wrote {wrote} tracks; {expected} renditions were asked for")]
    TrackMismatch { wrote: usize, expected: usize },
}

struct TrackOut {
    track_id: u32,
    rendition: String,
    segmenter: TrackSegmenter,
}

pub struct Segmenting {
    reader: FragmentReader,
    grid: SegmentGrid,
    renditions: Vec<String>,
    tracks: Vec<TrackOut>,
}

impl Segmenting {
    /// `renditions` names the encoder's tracks in `-map` order (ffmpeg keeps it in track ids).
    pub fn new(renditions: Vec<String>, grid: SegmentGrid) -> Self {
        Self {
            reader: FragmentReader::new(MAX_BOX),
            grid,
            renditions,
            tracks: Vec::new(),
        }
    }

    /// The encoder ended: the segment in progress of every track goes out if it is complete.
    pub fn finish(&mut self, out: &mut impl FnMut(Upload)) -> Result<(), SegmentingError> {
        for track in &mut self.tracks {
            let events = track.segmenter.flush();
            track.emit(events, out)?;
        }
        Ok(())
    }

    /// Feeds encoder output; calls `out` for each upload ready (headers before segments).
    pub fn push(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(Upload),
    ) -> Result<(), SegmentingError> {
        self.reader.push(bytes);
        while let Some(event) = self.reader.next_event()? {
            match event {
                FragmentEvent::Init(movie) => self.start(&movie, out)?,
                FragmentEvent::Samples { track_id, samples } => {
                    let Some(track) = self.tracks.iter_mut().find(|t| t.track_id == track_id)
                    else {
                        continue;
                    };
                    for sample in samples {
                        match track.segmenter.push(sample) {
                            Ok(events) => track.emit(events, out)?,
                            Err(e) => tracing::warn!(rendition = %track.rendition, error = %e,
                                "sample refused by the segmenter"),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Names the encoder's tracks after the renditions and uploads their CMAF headers.
    fn start(
        &mut self,
        movie: &Movie,
        out: &mut impl FnMut(Upload),
    ) -> Result<(), SegmentingError> {
        let mut tracks: Vec<_> = movie.tracks.iter().collect();
        tracks.sort_by_key(|t| t.track_id);
        if tracks.len() != self.renditions.len() {
            return Err(SegmentingError::TrackMismatch {
                wrote: tracks.len(),
                expected: self.renditions.len(),
            });
        }
        self.tracks.clear();
        for (track, name) in tracks.into_iter().zip(&self.renditions) {
            out(Upload::init(
                name,
                cmaf::init_segment(movie, track.track_id)?,
            ));
            self.tracks.push(TrackOut {
                track_id: track.track_id,
                rendition: name.to_string(),
                segmenter: TrackSegmenter::new(track, self.grid),
            });
        }
        Ok(())
    }
}

impl TrackOut {
    fn emit(
        &self,
        events: Vec<SegmenterEvent>,
        out: &mut impl FnMut(Upload),
    ) -> Result<(), SegmentingError> {
        for event in events {
            match event {
                // A segment cut short (the encoder stopped mid-segment) is never delivered: the
                // other pipeline's whole copy is the one to serve.
                SegmenterEvent::Segment(cut) if cut.complete && cut.starts_with_sync => {
                    let body = cmaf::media_segment(
                        self.track_id,
                        cut.n as u32,
                        cut.base_decode_time,
                        &cut.samples,
                    )?;
                    out(Upload::segment(&self.rendition, cut.n, body));
                }
                SegmenterEvent::Segment(cut) => {
                    tracing::debug!(rendition = %self.rendition, n = cut.n, "incomplete segment not delivered");
                }
                SegmenterEvent::Dropped { n, reason } => {
                    tracing::debug!(rendition = %self.rendition, n, ?reason, "segment dropped");
                }
            }
        }
        Ok(())
    }
}
