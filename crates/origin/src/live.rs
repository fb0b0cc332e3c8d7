//! The live window of each channel, in memory: the CMAF header and the recent segments of each
//! rendition. Manifests and segment responses are served from here without touching the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use channel::{AUDIO_RENDITION, ChannelSpec, Secret};
use manifest::HeaderId;
use manifest::dash::PeriodStart;
use media::cmaf::SegmentInfo;
use media::fmp4::{TrackInfo, TrackKind};
use timeline::{CopyOffer, Feed, SegmentChoice, SegmentGrid};

use crate::packager::Backlog;

/// Segments kept in memory beyond the live window, for players a little behind it.
const EXTRA_SEGMENTS: u64 = 5;

/// A channel as the origin sees it.
pub struct LiveChannel {
    pub spec: ChannelSpec,
    pub grid: SegmentGrid,
    pub credential: Secret,
    pub renditions: BTreeMap<String, Arc<LiveRendition>>,
    /// Where the DASH Periods begin (segment number → Unix ms): at each segment where some
    /// rendition's header changed. Few, and kept for the startover window.
    pub periods: RwLock<BTreeMap<u64, u64>>,
    /// How long after its listing a segment appears in live manifests (0 on a single node;
    /// see [`LiveRendition::edge`]).
    pub settle_ms: u64,
    /// Since when this origin has failed to read segments the catalog lists (a cluster's
    /// origin whose store is unreachable): its view is stale.
    pub(crate) behind_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl LiveChannel {
    pub fn new(spec: ChannelSpec, credential: Secret) -> Result<Self, String> {
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
            periods: RwLock::new(BTreeMap::new()),
            settle_ms: 0,
            behind_since: Default::default(),
        })
    }

    /// The Periods an MPD listing segments from `first_n` on (to `last_n`) writes: the one in
    /// force at `first_n`, then every later one. `renditions` are the names the MPD lists, in
    /// its order, for [`PeriodStart::changed`].
    pub fn periods_from(&self, first_n: u64, last_n: u64, renditions: &[&str]) -> Vec<PeriodStart> {
        let periods = self.periods.read().unwrap_or_else(|e| e.into_inner());
        let in_force = periods.range(..=first_n).next_back().map(|(&n, _)| n);
        let mut out = vec![PeriodStart::EPOCH];
        let mut previous = periods
            .range(..in_force.unwrap_or(0))
            .next_back()
            .map(|(&n, _)| n);
        let starts = in_force.into_iter().chain(
            periods
                .range(first_n.saturating_add(1)..=last_n.max(first_n))
                .map(|(&n, _)| n),
        );
        for n in starts {
            let start_ms = periods.get(&n).copied().unwrap_or_default();
            let start = PeriodStart {
                n,
                start_ms,
                previous: Some(previous.unwrap_or(0)),
                changed: self.header_changes_at(n, renditions),
            };
            if in_force == Some(n) {
                out[0] = start;
            } else {
                out.push(start);
            }
            previous = Some(n);
        }
        out
    }

    /// Which of `renditions` change their header at segment `n`, as [`PeriodStart::changed`].
    fn header_changes_at(&self, n: u64, renditions: &[&str]) -> u64 {
        let mut changed = 0;
        for (i, name) in renditions.iter().enumerate().take(64) {
            let changes = self.renditions.get(*name).is_some_and(|r| {
                let state = r.read();
                let before = state.index.range(..n).next_back().map(|(_, l)| l.disc);
                let after = state.index.range(n..).next().map(|(_, l)| l.disc);
                before.zip(after).is_some_and(|(b, a)| b != a)
            });
            changed |= u64::from(changes) << i;
        }
        changed
    }

    /// Records that a Period begins at segment `n`, `start_ms` after the epoch.
    pub fn add_period(&self, n: u64, start_ms: u64) {
        let mut periods = self.periods.write().unwrap_or_else(|e| e.into_inner());
        periods.insert(n, start_ms);
    }

    /// Forgets the Periods that began before the one in force at `n` and the one before it
    /// (which MPDs name as the Period the one in force continues).
    pub fn forget_periods_before(&self, n: u64) {
        let mut periods = self.periods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&kept) = periods.range(..=n).rev().nth(1).map(|(k, _)| k) {
            *periods = periods.split_off(&kept);
        }
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

/// A CMAF header of a rendition, with what manifests need to know of its track.
#[derive(Debug, Clone)]
pub struct Header {
    pub id: HeaderId,
    pub bytes: Bytes,
    pub track: TrackInfo,
    /// Where its bytes are in the store.
    pub key: String,
}

impl Header {
    /// A header of `rendition`, stored under its own name unless `key` says otherwise.
    pub fn new(
        bytes: Bytes,
        track: TrackInfo,
        channel: &str,
        rendition: &str,
        key: Option<String>,
    ) -> Self {
        let id = HeaderId(media::digest::content_id(&bytes));
        Self {
            key: key.unwrap_or_else(|| format!("live/{channel}/{rendition}/init-{id}.mp4")),
            id,
            bytes,
            track,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveSegment {
    pub start: u64,
    pub duration: u64,
    pub samples: u32,
    pub feed: Feed,
    /// The pipeline's quality score, 0-100, when it gave one.
    pub quality: Option<u8>,
    pub header: HeaderId,
    pub bytes: Bytes,
    /// The strong ETag of `bytes`, computed once when the segment is listed rather than on
    /// every request for it.
    pub etag: String,
    /// When the packager listed it (Unix ms, its clock): in a cluster, origins show it in
    /// live manifests a settle time later, all at once.
    pub listed_ms: u64,
}

/// What manifests need of a listed segment: 32 bytes, so a 14-day index stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub start: u64,
    pub duration: u64,
    pub header: HeaderId,
    /// How many times the rendition's header changed up to this segment.
    pub disc: u32,
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
    /// Every header the rendition's segments decode with, by id.
    pub headers: HashMap<HeaderId, Header>,
    /// The header of the newest listed segment (before any, the first stored): what
    /// manifests describe the rendition by.
    pub current: Option<HeaderId>,
    /// Each feed's latest header: its next segments decode with it.
    pub feed_headers: HashMap<Feed, HeaderId>,
    pub segments: BTreeMap<u64, LiveSegment>,
    /// Every listed segment of the startover window, as manifests need it: time-shifted
    /// manifests render from here without a catalog query.
    pub index: BTreeMap<u64, Listing>,
    /// Flawed copies waiting out their grace time for a better one, by N.
    pub held: BTreeMap<u64, HeldCopy>,
    /// In a cluster: when the oldest segment the catalog lists that this origin has not read
    /// yet was listed (see [`LiveChannel::lagging`]).
    pub unread_since: Option<u64>,
}

/// Where a copy of segment N would sit among the listed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// It decodes with the header of the segments around it: no discontinuity.
    pub continues: bool,
    /// Its discontinuity count.
    pub disc: u32,
}

impl RenditionState {
    /// The discontinuity count of the listed segment before `n`.
    fn disc_before(&self, n: u64) -> Option<u32> {
        self.index.range(..n).next_back().map(|(_, l)| l.disc)
    }

    /// The header manifests describe the rendition by.
    pub fn current_header(&self) -> Option<&Header> {
        self.headers.get(&self.current?)
    }

    /// Where a copy of `n` decoding with `header` would be listed, or why it cannot be: a copy
    /// listed late, between two listed segments, may not change the header there, since the
    /// segments after it were already announced without a discontinuity before them.
    pub fn placement(&self, n: u64, header: HeaderId) -> Result<Placement, String> {
        let before = self.index.range(..n).next_back().map(|(_, l)| *l);
        let after = self
            .index
            .range(n.saturating_add(1)..)
            .next()
            .map(|(_, l)| *l);
        match (before, after) {
            (Some(b), Some(_)) | (Some(b), None) if b.header == header => Ok(Placement {
                continues: true,
                disc: b.disc,
            }),
            (Some(b), None) => Ok(Placement {
                continues: false,
                disc: b.disc.saturating_add(1),
            }),
            (None, Some(a)) if a.header == header => Ok(Placement {
                continues: true,
                disc: a.disc,
            }),
            (None, None) => Ok(Placement {
                continues: true,
                disc: 0,
            }),
            _ => Err(format!(
                "segment {n} comes after later segments were listed, and its header differs \
                 from theirs: listing it would need a discontinuity they were announced without"
            )),
        }
    }
}

/// A complete, checked copy of a segment that is not listed yet.
pub struct HeldCopy {
    pub feed: Feed,
    pub quality: Option<u8>,
    pub header: HeaderId,
    pub body: Bytes,
    pub info: SegmentInfo,
    /// The lease epoch its pipeline delivered it under (in a cluster).
    pub epoch: Option<u64>,
}

impl HeldCopy {
    /// The copy as the choice between feeds sees it, placed among the listed segments.
    pub fn offer(&self, state: &RenditionState, n: u64) -> CopyOffer {
        CopyOffer {
            feed: self.feed,
            quality: self.quality.unwrap_or(SegmentChoice::FLAWLESS),
            continues: state.placement(n, self.header).is_ok_and(|p| p.continues),
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
    /// delivering the same N never both write it; guards the copies waiting for the catalog.
    pub publish: tokio::sync::Mutex<Backlog>,
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
            publish: tokio::sync::Mutex::default(),
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
    pub fn insert(&self, n: u64, segment: LiveSegment, disc: u32, keep: u64) {
        let mut state = self.write();
        let listing = Listing {
            start: segment.start,
            duration: segment.duration,
            header: segment.header,
            disc,
        };
        state.index.insert(n, listing);
        if state.index.keys().next_back() == Some(&n) {
            state.current = Some(segment.header);
        }
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
    pub fn index_listed(&self, listed: impl IntoIterator<Item = (u64, Listing)>) {
        let mut state = self.write();
        state.index.extend(listed);
        if let Some(newest) = state.index.values().next_back() {
            state.current = Some(newest.header);
        }
    }

    /// The newest segment live manifests may list at `now_ms`: one listed at least `settle_ms`
    /// ago, so that every origin of a cluster, each learning of a listing a little apart from
    /// the others, shows it from the same moment and no playlist goes backwards for a viewer
    /// whose requests alternate between them. `None` while nothing has settled.
    ///
    /// Segments listed out of order (copies stored during a catalog outage, listed by several
    /// packagers at once when it returns) settle together: a segment waits for an older one
    /// listed less than a settle time after it, rather than show a gap that fills a moment
    /// later.
    pub fn edge(&self, now_ms: u64, settle_ms: u64) -> Option<u64> {
        if settle_ms == 0 {
            return Some(u64::MAX);
        }
        let state = self.read();
        let mut oldest_unsettled = u64::MAX;
        let mut edge = None;
        for (&n, s) in &state.segments {
            let settles_at = s.listed_ms.saturating_add(settle_ms);
            if settles_at > now_ms {
                oldest_unsettled = oldest_unsettled.min(s.listed_ms);
            } else if oldest_unsettled >= settles_at {
                edge = Some(n);
            }
        }
        if edge.is_some() {
            return edge;
        }
        // What the index holds from before the window in memory settled long ago.
        let oldest = state.segments.keys().next().copied().unwrap_or(u64::MAX);
        state.index.range(..oldest).next_back().map(|(&n, _)| n)
    }

    /// The listed segments numbered `first..=last`, at most `limit`, oldest first.
    pub fn listed(&self, first: u64, last: u64, limit: usize) -> Segments {
        let state = self.read();
        Segments::of(
            state.disc_before(first),
            state.index.range(first..=last).take(limit),
        )
    }

    /// The newest `count` listed segments at least `behind` segments behind `edge`.
    pub fn listed_behind(&self, edge: u64, behind: u64, count: usize) -> Segments {
        let state = self.read();
        let Some(&newest) = state.index.range(..=edge).next_back().map(|(n, _)| n) else {
            return Segments::default();
        };
        let last = newest.saturating_sub(behind);
        let first = state
            .index
            .range(..=last)
            .rev()
            .take(count)
            .last()
            .map_or(last, |(&n, _)| n);
        Segments::of(state.disc_before(first), state.index.range(first..=last))
    }

    /// What the manifests say of this rendition, once its header is known.
    pub fn manifest_rendition(&self, spec: &ChannelSpec) -> Option<manifest::Rendition> {
        let state = self.read();
        let init = state.current_header()?;
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

    /// The last `count` segment numbers up to `edge`, oldest first, as live manifests list
    /// them.
    pub fn window(&self, edge: u64, count: u64) -> Segments {
        let state = self.read();
        let Some(&newest) = state.segments.range(..=edge).next_back().map(|(n, _)| n) else {
            return Segments::default();
        };
        let first = newest.saturating_sub(count.saturating_sub(1));
        Segments::of(state.disc_before(first), state.index.range(first..=newest))
    }
}

/// Where a copy of a segment is stored. In a cluster each writer, a feed's lease epoch, has
/// keys of its own, so no packager ever overwrites another's copy, listed or not (object
/// stores' conditional writes are no fence); only the catalog row makes one visible.
pub fn segment_key(channel: &str, rendition: &str, n: u64, writer: Option<(Feed, u64)>) -> String {
    match writer {
        Some((feed, epoch)) => format!("live/{channel}/{rendition}/{n}-{feed}{epoch}.m4s"),
        None => format!("live/{channel}/{rendition}/{n}.m4s"),
    }
}

/// Segments as a manifest lists them, with the discontinuity sequence of the first: each one
/// whose discontinuity count differs from the one before it is marked.
#[derive(Debug, Default)]
pub struct Segments {
    pub refs: Vec<manifest::SegmentRef>,
    pub discontinuity_sequence: u64,
}

impl Segments {
    /// `before`: the discontinuity count of the listed segment before the first, so that the
    /// first keeps its EXT-X-DISCONTINUITY while it is listed (RFC 8216 §6.2.2: the sequence
    /// counts only the tags that left the playlist).
    pub(crate) fn of<'a>(
        before: Option<u32>,
        listings: impl Iterator<Item = (&'a u64, &'a Listing)>,
    ) -> Self {
        let mut out = Segments::default();
        let mut prev_disc = before;
        for (&n, l) in listings {
            let discontinuity = prev_disc.is_some_and(|d| d != l.disc);
            if out.refs.is_empty() {
                out.discontinuity_sequence =
                    u64::from(l.disc.saturating_sub(u32::from(discontinuity)));
            }
            out.refs.push(manifest::SegmentRef {
                n,
                start: l.start,
                duration: l.duration,
                header: l.header,
                discontinuity,
            });
            prev_disc = Some(l.disc);
        }
        out
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
