//! The live window of each channel, in memory: the CMAF header and the recent segments of each
//! rendition. Manifests and segment responses are served from here without touching the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use channel::{AUDIO_RENDITION, ChannelSpec};
use media::cmaf::SegmentInfo;
use media::fmp4::{TrackInfo, TrackKind};
use timeline::{CopyOffer, Feed, SegmentChoice, SegmentGrid};

/// Segments kept in memory beyond the live window, for players a little behind it.
const EXTRA_SEGMENTS: u64 = 5;

/// A channel as the origin sees it.
pub struct LiveChannel {
    pub spec: ChannelSpec,
    pub grid: SegmentGrid,
    pub credential: String,
    pub renditions: BTreeMap<String, Arc<LiveRendition>>,
}

impl LiveChannel {
    pub fn new(spec: ChannelSpec, credential: String) -> Result<Self, String> {
        let grid = spec.grid()?;
        let mut renditions = BTreeMap::new();
        for r in &spec.ladder {
            let kbps = u64::from(r.bitrate_kbps);
            renditions.insert(
                r.name.clone(),
                Arc::new(LiveRendition::new(&r.name, true, kbps * 1100, kbps * 1000)),
            );
        }
        let audio = u64::from(spec.audio.bitrate_kbps);
        renditions.insert(
            AUDIO_RENDITION.to_string(),
            Arc::new(LiveRendition::new(
                AUDIO_RENDITION,
                false,
                audio * 1100,
                audio * 1000,
            )),
        );
        Ok(Self {
            spec,
            grid,
            credential,
            renditions,
        })
    }

    pub fn startover(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.spec.startover_window_seconds.into())
    }

    /// How many segments a live manifest lists.
    pub fn window_segments(&self) -> u64 {
        let n = (f64::from(self.spec.live_window_seconds) / self.grid.duration_secs()).ceil();
        (n as u64).max(3)
    }
}

/// The CMAF header served for a rendition, with what manifests need to know of its track.
#[derive(Debug, Clone)]
pub struct ServedInit {
    pub bytes: Bytes,
    pub track: TrackInfo,
    pub feed: Feed,
}

#[derive(Debug, Clone)]
pub struct LiveSegment {
    pub start: u64,
    pub duration: u64,
    pub samples: u32,
    pub feed: Feed,
    /// The pipeline's quality score, 0-100, when it gave one.
    pub quality: Option<u8>,
    pub bytes: Bytes,
    /// The strong ETag of `bytes`, computed once when the segment is listed rather than on
    /// every request for it.
    pub etag: String,
}

/// A strong ETag from content: listed bytes never change, so neither does it.
pub fn content_etag(bytes: &[u8]) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(bytes, &mut hasher);
    format!(
        "\"{:016x}-{:x}\"",
        std::hash::Hasher::finish(&hasher),
        bytes.len()
    )
}

#[derive(Default)]
pub struct RenditionState {
    pub init: Option<ServedInit>,
    /// Each feed's header, to tell whether the feeds' copies are interchangeable.
    pub feed_inits: HashMap<Feed, Bytes>,
    /// Each feed's latest header, stored or not: a feed whose encoder now writes another
    /// header than the one served makes segments that header cannot decode.
    pub latest_inits: HashMap<Feed, Bytes>,
    pub segments: BTreeMap<u64, LiveSegment>,
    /// Every listed segment of the startover window, as manifests need it: time-shifted
    /// manifests render from here without a catalog query (24 bytes of payload a segment).
    pub index: BTreeMap<u64, (u64, u64)>,
    /// Flawed copies waiting out their grace time for a better one, by N.
    pub held: BTreeMap<u64, HeldCopy>,
}

/// A complete, checked copy of a segment that is not listed yet.
pub struct HeldCopy {
    pub feed: Feed,
    pub quality: Option<u8>,
    pub body: Bytes,
    pub info: SegmentInfo,
}

impl HeldCopy {
    pub fn offer(&self) -> CopyOffer {
        CopyOffer {
            feed: self.feed,
            quality: self.quality.unwrap_or(SegmentChoice::FLAWLESS),
        }
    }
}

pub struct LiveRendition {
    pub name: String,
    pub is_video: bool,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub state: RwLock<RenditionState>,
    /// Serialises the packager's check-store-list of one rendition, so that two feeds
    /// delivering the same N never both write it.
    pub publish: tokio::sync::Mutex<()>,
    pub alignment: std::sync::Mutex<Alignment>,
}

/// How the feeds' copies of the same segments compare: equal decode time, duration and sample
/// count make copies interchangeable (the pipelines are locked).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Alignment {
    pub compared: u64,
    pub misaligned: u64,
    pub last_misaligned: Option<String>,
}

impl LiveRendition {
    fn new(name: &str, is_video: bool, bandwidth: u64, average_bandwidth: u64) -> Self {
        Self {
            name: name.to_string(),
            is_video,
            bandwidth,
            average_bandwidth,
            state: RwLock::new(RenditionState::default()),
            publish: tokio::sync::Mutex::new(()),
            alignment: std::sync::Mutex::new(Alignment::default()),
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, RenditionState> {
        // Writers never leave the state half-updated, so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, RenditionState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a stored segment and forgets those that fell out of the window.
    pub fn insert(&self, n: u64, segment: LiveSegment, keep: u64) {
        let mut state = self.write();
        state.index.insert(n, (segment.start, segment.duration));
        state.segments.insert(n, segment);
        let newest = state.segments.keys().next_back().copied().unwrap_or(n);
        let oldest_kept = newest.saturating_sub(keep + EXTRA_SEGMENTS);
        while let Some(entry) = state.segments.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            entry.remove();
        }
    }

    /// Records how a second copy of segment `n` compares with the kept one.
    pub fn compare_copies(&self, n: u64, kept: &LiveSegment, other: (u64, u64, u32)) -> bool {
        let (start, duration, samples) = other;
        let aligned = (kept.start, kept.duration, kept.samples) == (start, duration, samples);
        let mut a = self.alignment.lock().unwrap_or_else(|e| e.into_inner());
        a.compared += 1;
        if !aligned {
            a.misaligned += 1;
            a.last_misaligned = Some(format!(
                "segment {n}: kept starts {} lasts {} with {} samples; other starts {start} lasts \
                 {duration} with {samples} samples",
                kept.start, kept.duration, kept.samples
            ));
        }
        aligned
    }

    pub fn alignment(&self) -> Alignment {
        self.alignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the segments numbered below `n` (retention removed them from the store).
    pub fn forget_before(&self, n: u64) {
        let mut state = self.write();
        state.segments = state.segments.split_off(&n);
        state.index = state.index.split_off(&n);
    }

    /// Adds listings found in the catalog (at start-up) to the index.
    pub fn index_listed(&self, listed: impl IntoIterator<Item = (u64, u64, u64)>) {
        let mut state = self.write();
        state.index.extend(
            listed
                .into_iter()
                .map(|(n, start, duration)| (n, (start, duration))),
        );
    }

    /// The listed segments numbered `first..=last`, at most `limit`, oldest first.
    pub fn listed(&self, first: u64, last: u64, limit: usize) -> Vec<manifest::SegmentRef> {
        let state = self.read();
        state
            .index
            .range(first..=last)
            .take(limit)
            .map(|(&n, &(start, duration))| segment_ref(n, start, duration))
            .collect()
    }

    /// The newest `count` listed segments at least `behind` segments behind the newest one.
    pub fn listed_behind(&self, behind: u64, count: usize) -> Vec<manifest::SegmentRef> {
        let state = self.read();
        let Some(&newest) = state.index.keys().next_back() else {
            return Vec::new();
        };
        let last = newest.saturating_sub(behind);
        let mut refs: Vec<_> = state
            .index
            .range(..=last)
            .rev()
            .take(count)
            .map(|(&n, &(start, duration))| segment_ref(n, start, duration))
            .collect();
        refs.reverse();
        refs
    }

    /// What the manifests say of this rendition, once its header is known.
    pub fn manifest_rendition(&self, spec: &ChannelSpec) -> Option<manifest::Rendition> {
        let state = self.read();
        let init = state.init.as_ref()?;
        let kind = match init.track.kind {
            TrackKind::Video { width, height } => manifest::RenditionKind::Video {
                width: width.into(),
                height: height.into(),
                frame_rate: spec.frame_rate,
            },
            TrackKind::Audio {
                sample_rate,
                channels,
            } => manifest::RenditionKind::Audio {
                sample_rate,
                channels,
                language: None,
            },
            TrackKind::Other { .. } => return None,
        };
        Some(manifest::Rendition {
            name: self.name.clone(),
            kind,
            codecs: init.track.codec.clone(),
            bandwidth: self.bandwidth,
            average_bandwidth: self.average_bandwidth,
            timescale: init.track.timescale,
        })
    }

    /// The last `count` segments, oldest first, as manifests list them.
    pub fn window(&self, count: u64) -> Vec<manifest::SegmentRef> {
        let state = self.read();
        let Some(&newest) = state.segments.keys().next_back() else {
            return Vec::new();
        };
        let first = newest.saturating_sub(count.saturating_sub(1));
        state
            .segments
            .range(first..)
            .map(|(&n, s)| segment_ref(n, s.start, s.duration))
            .collect()
    }
}

pub(crate) fn segment_ref(n: u64, start: u64, duration: u64) -> manifest::SegmentRef {
    manifest::SegmentRef {
        n,
        start,
        duration,
        discontinuity: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> LiveSegment {
        LiveSegment {
            start: n * 180_000,
            duration: 180_000,
            samples: 60,
            feed: Feed::A,
            quality: None,
            bytes: Bytes::new(),
            etag: String::new(),
        }
    }

    #[test]
    fn window_lists_the_newest_and_memory_stays_bounded() {
        let r = LiveRendition::new("360p", true, 1, 1);
        for n in 100..200 {
            r.insert(n, segment(n), 10);
        }
        assert_eq!(r.read().segments.len() as u64, 10 + EXTRA_SEGMENTS + 1);
        let window = r.window(10);
        assert_eq!(window.first().map(|s| s.n), Some(190));
        assert_eq!(window.last().map(|s| s.n), Some(199));
    }

    #[test]
    fn copies_compare_on_time_duration_and_samples() {
        let r = LiveRendition::new("360p", true, 1, 1);
        assert!(r.compare_copies(7, &segment(7), (7 * 180_000, 180_000, 60)));
        assert!(!r.compare_copies(8, &segment(8), (8 * 180_000 + 3000, 180_000, 60)));
        let a = r.alignment();
        assert_eq!((a.compared, a.misaligned), (2, 1));
        assert!(a.last_misaligned.unwrap().starts_with("segment 8:"));
    }

    #[test]
    fn the_index_keeps_the_startover_window_beyond_memory() {
        let r = LiveRendition::new("360p", true, 1, 1);
        r.index_listed((50..100).map(|n| (n, n * 180_000, 180_000)));
        for n in 100..200 {
            r.insert(n, segment(n), 10);
        }
        assert_eq!(r.read().index.len(), 150);
        let listed: Vec<_> = r.listed(60, 64, 100).iter().map(|s| s.n).collect();
        assert_eq!(listed, [60, 61, 62, 63, 64]);
        assert_eq!(r.listed(60, 1000, 3).len(), 3);
        // 199 is the newest: 79 behind it is 120.
        let behind: Vec<_> = r.listed_behind(79, 3).iter().map(|s| s.n).collect();
        assert_eq!(behind, [118, 119, 120]);
        r.forget_before(150);
        assert_eq!(r.read().index.keys().next(), Some(&150));
    }

    #[test]
    fn window_skips_missing_numbers() {
        let r = LiveRendition::new("360p", true, 1, 1);
        for n in [10, 11, 13] {
            r.insert(n, segment(n), 10);
        }
        assert_eq!(
            r.window(3).iter().map(|s| s.n).collect::<Vec<_>>(),
            [11, 13]
        );
    }
}
