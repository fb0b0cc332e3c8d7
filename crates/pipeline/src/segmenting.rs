//! The encoder's output side: ffmpeg's fragmented MP4 in, one CMAF header per rendition and one
//! CMAF segment per (rendition, N) out. Pure: bytes in, uploads out.

use channel::{AUDIO_RENDITION, ChannelSpec};
use media::cmaf::{self, SegmenterEvent, TrackSegmenter};
use media::fmp4::{FragmentEvent, FragmentReader, Movie, TrackKind};
use timeline::SegmentGrid;

use crate::deliver::Upload;

/// The largest box ffmpeg may write: a fragment of a high-bitrate rendition is far smaller.
const MAX_BOX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SegmentingError {
    #[error("encoder output: {0}")]
    Media(#[from] media::Error),
    #[error("encoder wrote {video} video and {audio} audio tracks; the ladder has {ladder} + 1")]
    TrackMismatch {
        video: usize,
        audio: usize,
        ladder: usize,
    },
}

struct TrackOut {
    track_id: u32,
    rendition: String,
    segmenter: TrackSegmenter,
}

/// What the segmenting step hands on, besides uploads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub segments: u32,
    pub dropped: u32,
}

pub struct Segmenting {
    reader: FragmentReader,
    grid: SegmentGrid,
    ladder: Vec<String>,
    tracks: Vec<TrackOut>,
}

impl Segmenting {
    pub fn new(spec: &ChannelSpec, grid: SegmentGrid) -> Self {
        Self {
            reader: FragmentReader::new(MAX_BOX),
            grid,
            ladder: spec.ladder.iter().map(|r| r.name.clone()).collect(),
            tracks: Vec::new(),
        }
    }

    /// Feeds encoder output; calls `out` for each upload ready (headers before segments).
    pub fn push(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(Upload),
    ) -> Result<Progress, SegmentingError> {
        self.reader.push(bytes);
        let mut progress = Progress::default();
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
                            Ok(events) => track.emit(events, &mut progress, out)?,
                            Err(e) => tracing::warn!(rendition = %track.rendition, error = %e,
                                "sample refused by the segmenter"),
                        }
                    }
                }
            }
        }
        Ok(progress)
    }

    /// Names the encoder's tracks after the ladder (ffmpeg keeps the `-map` order: the video
    /// renditions, then audio) and uploads their CMAF headers.
    fn start(
        &mut self,
        movie: &Movie,
        out: &mut impl FnMut(Upload),
    ) -> Result<(), SegmentingError> {
        let mut tracks: Vec<_> = movie.tracks.iter().collect();
        tracks.sort_by_key(|t| t.track_id);
        let video: Vec<_> = tracks.iter().filter(|t| t.is_video()).collect();
        let audio: Vec<_> = tracks
            .iter()
            .filter(|t| matches!(t.kind, TrackKind::Audio { .. }))
            .collect();
        if video.len() != self.ladder.len() || audio.len() != 1 {
            return Err(SegmentingError::TrackMismatch {
                video: video.len(),
                audio: audio.len(),
                ladder: self.ladder.len(),
            });
        }
        let names = self
            .ladder
            .iter()
            .map(String::as_str)
            .chain([AUDIO_RENDITION]);
        self.tracks.clear();
        for (track, name) in video.into_iter().chain(audio).zip(names) {
            out(Upload {
                rendition: name.to_string(),
                name: "init.mp4".to_string(),
                body: cmaf::init_segment(movie, track.track_id)?,
            });
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
        progress: &mut Progress,
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
                    progress.segments += 1;
                    out(Upload {
                        rendition: self.rendition.clone(),
                        name: format!("{}.m4s", cut.n),
                        body,
                    });
                }
                SegmenterEvent::Segment(cut) => {
                    progress.dropped += 1;
                    tracing::debug!(rendition = %self.rendition, n = cut.n, "incomplete segment not delivered");
                }
                SegmenterEvent::Dropped { n, reason } => {
                    progress.dropped += 1;
                    tracing::debug!(rendition = %self.rendition, n, ?reason, "segment dropped");
                }
            }
        }
        Ok(())
    }
}
