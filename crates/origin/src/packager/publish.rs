//! Storing and listing the copy chosen for a segment: stored, then listed in the catalog,
//! then shown in the live window. When the catalog cannot be written (a PostgreSQL outage),
//! stored copies wait in their rendition's [`Backlog`] and are listed, in order, once it
//! answers again, as long as they are still in the window: nothing made meanwhile is lost,
//! and no origin shows a segment the catalog does not list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use channel::EventKind;
use media::cmaf::SegmentInfo;
use store::{FencedListing, SegmentRow};
use timeline::Feed;

use super::fenced;
use crate::live::{HeldCopy, LiveChannel, LiveRendition, LiveSegment, content_etag, segment_key};
use crate::{Origin, OriginError, StorePart};

/// What became of a copy given to [`publish`].
pub(super) enum Published {
    /// Listed, and shown in this node's window.
    Listed(LiveSegment),
    /// Another packager of the cluster listed a copy first (this node's window gets that one
    /// from the catalog).
    Elsewhere,
    /// Stored; listed when the catalog answers again.
    Deferred,
}

/// Copies stored while the catalog could not list them, by segment number. Lives under the
/// rendition's publish lock, so that a segment is never listed twice nor out of order.
#[derive(Default)]
pub struct Backlog {
    waiting: BTreeMap<u64, Stored>,
    draining: bool,
}

impl Backlog {
    /// The feed whose copy of segment `n` waits to be listed.
    pub(super) fn feed_of(&self, n: u64) -> Option<Feed> {
        self.waiting.get(&n).map(|s| s.copy.feed)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// A copy whose bytes are in the store under `key`.
struct Stored {
    n: u64,
    copy: HeldCopy,
    key: String,
}

/// How often a rendition's backlog asks the catalog again.
const RETRY: Duration = Duration::from_millis(500);

/// Stores a copy and lists it (or, while the catalog does not answer, keeps it in the
/// backlog). Called under `live.publish`, whose guard is `backlog`.
pub(super) async fn publish(
    origin: &Arc<Origin>,
    channel: &Arc<LiveChannel>,
    live: &Arc<LiveRendition>,
    backlog: &mut Backlog,
    n: u64,
    copy: HeldCopy,
) -> Result<Published, OriginError> {
    // Refused before anything is stored: the window cannot take this copy.
    live.read()
        .placement(n, copy.header)
        .map_err(OriginError::Conflict)?;
    let key = segment_key(
        &channel.spec.id,
        &live.name,
        n,
        copy.epoch.map(|e| (copy.feed, e)),
    );
    let put = origin.blobs.put(&key, &copy.body).await;
    origin.store_write(&channel.spec.id, StorePart::Blobs, put)?;
    let stored = Stored { n, copy, key };
    if !backlog.is_empty() || origin.catalog_failing() {
        defer(origin, channel, live, backlog, stored);
        return Ok(Published::Deferred);
    }
    match list_stored(origin, channel, live, &stored).await {
        Err(e) if catalog_down(&e) => {
            defer(origin, channel, live, backlog, stored);
            Ok(Published::Deferred)
        }
        listed => Ok(listed?.map_or(Published::Elsewhere, Published::Listed)),
    }
}

/// A catalog that cannot be reached, as opposed to one that refused.
pub(super) fn catalog_down(e: &OriginError) -> bool {
    matches!(e, OriginError::Store(store::StoreError::Catalog(_)))
}

/// Puts a stored copy in the backlog, with no more than a window of them (the oldest go:
/// no player could ask for them any more), and starts draining it.
fn defer(
    origin: &Arc<Origin>,
    channel: &Arc<LiveChannel>,
    live: &Arc<LiveRendition>,
    backlog: &mut Backlog,
    stored: Stored,
) {
    let labels = [
        ("channel", channel.spec.id.clone()),
        ("rendition", live.name.clone()),
    ];
    metrics::counter!("steadycast_listings_deferred_total", &labels).increment(1);
    let newest = backlog
        .waiting
        .keys()
        .next_back()
        .map_or(stored.n, |&n| n.max(stored.n));
    backlog.waiting.insert(stored.n, stored);
    let oldest_kept = newest.saturating_sub(channel.window_segments());
    while let Some(entry) = backlog.waiting.first_entry() {
        if *entry.key() >= oldest_kept {
            break;
        }
        let dropped = entry.remove();
        drop_blob(origin, dropped.key);
        metrics::counter!("steadycast_listings_dropped_total", &labels).increment(1);
    }
    metrics::gauge!("steadycast_listing_backlog", &labels).set(backlog.waiting.len() as f64);
    if !backlog.draining {
        backlog.draining = true;
        tracing::warn!(channel = %channel.spec.id, rendition = %live.name,
            "the catalog does not answer: segments are stored and listed when it does");
        let (origin, channel, live) = (origin.clone(), channel.clone(), live.clone());
        tokio::spawn(drain(origin, channel, live));
    }
}

/// Lists the backlog, oldest first, once the catalog answers; holds the publish lock while it
/// does, so that uploads arriving meanwhile queue behind it.
async fn drain(origin: Arc<Origin>, channel: Arc<LiveChannel>, live: Arc<LiveRendition>) {
    let labels = [
        ("channel", channel.spec.id.clone()),
        ("rendition", live.name.clone()),
    ];
    let mut listed = 0;
    loop {
        tokio::time::sleep(RETRY).await;
        let mut backlog = live.publish.lock().await;
        while let Some(entry) = backlog.waiting.first_entry() {
            match list_stored(&origin, &channel, &live, entry.get()).await {
                Err(e) if catalog_down(&e) => break,
                Err(e) => {
                    tracing::warn!(channel = %channel.spec.id, rendition = %live.name,
                        n = entry.key(), error = %e, "a stored segment could not be listed");
                    drop_blob(&origin, entry.remove().key);
                }
                Ok(_) => {
                    entry.remove();
                    listed += 1;
                }
            }
        }
        metrics::gauge!("steadycast_listing_backlog", &labels).set(backlog.waiting.len() as f64);
        if backlog.waiting.is_empty() {
            backlog.draining = false;
            tracing::info!(channel = %channel.spec.id, rendition = %live.name, listed,
                "the catalog answers again: the segments stored meanwhile are listed");
            return;
        }
    }
}

/// Deletes a copy nothing will list, in the background: a failure leaves an orphan that the
/// next start-up repair removes.
fn drop_blob(origin: &Arc<Origin>, key: String) {
    let origin = origin.clone();
    tokio::spawn(async move {
        let _ = origin.blobs.delete(&key).await;
    });
}

/// Lists a stored copy in the catalog and shows it in the window; `None` when another
/// packager listed a copy first.
async fn list_stored(
    origin: &Origin,
    channel: &LiveChannel,
    live: &LiveRendition,
    stored: &Stored,
) -> Result<Option<LiveSegment>, OriginError> {
    let Stored { n, copy, key } = stored;
    let n = *n;
    let (timescale, placement) = {
        let state = live.read();
        let timescale = state.headers.get(&copy.header).map(|h| h.track.timescale);
        (timescale, state.placement(n, copy.header))
    };
    let timescale = timescale
        .ok_or_else(|| OriginError::Conflict(format!("PUT `{}/init.mp4` first", live.name)))?;
    let placement = placement.map_err(OriginError::Conflict)?;
    let row = SegmentRow {
        channel: channel.spec.id.clone(),
        rendition: live.name.clone(),
        n,
        feed: copy.feed,
        start: copy.info.base_decode_time,
        duration: copy.info.duration,
        timescale,
        byte_len: copy.body.len() as u64,
        blob_key: key.clone(),
        quality: copy.quality,
        header: Some(copy.header.to_string()),
        disc: placement.disc,
        listed_ms: now_ms(),
    };
    if !placement.continues {
        announce_discontinuity(origin, channel, live, n, copy.header).await?;
    }
    let Some(listed_ms) = list(origin, &row, copy.epoch).await? else {
        return Ok(None);
    };
    let segment = LiveSegment {
        start: copy.info.base_decode_time,
        duration: copy.info.duration,
        samples: copy.info.sample_count,
        feed: copy.feed,
        quality: copy.quality,
        header: copy.header,
        etag: content_etag(&copy.body),
        bytes: copy.body.clone(),
        listed_ms,
    };
    live.insert(
        n,
        segment.clone(),
        placement.disc,
        channel.window_segments(),
    );
    let (id, name) = (channel.spec.id.clone(), live.name.clone());
    metrics::counter!("steadycast_segments_published_total", "channel" => id.clone(),
        "feed" => copy.feed.as_str(), "rendition" => name.clone())
    .increment(1);
    if let Some(quality) = copy.quality {
        metrics::histogram!("steadycast_segment_quality", "channel" => id, "rendition" => name)
            .record(f64::from(quality));
    }
    Ok(Some(segment))
}

/// Lists a stored copy, fenced by its lease epoch in a cluster, and returns when the listed
/// row was listed: another packager may have listed the same writer's bytes a moment before,
/// and every origin must count from that row's time. `None` when another packager listed a
/// copy of another writer first: this one's bytes are deleted (nothing lists them).
async fn list(
    origin: &Origin,
    row: &SegmentRow,
    epoch: Option<u64>,
) -> Result<Option<u64>, OriginError> {
    let channel = &row.channel;
    let Some(epoch) = epoch else {
        let listed = origin.catalog.insert_segment(row).await;
        origin.store_write(channel, StorePart::Catalog, listed)?;
        return Ok(Some(row.listed_ms));
    };
    let listed = origin.catalog.insert_segment_fenced(row, epoch).await;
    let outcome = origin.store_write(channel, StorePart::Catalog, listed)?;
    if outcome == FencedListing::Listed {
        return Ok(Some(row.listed_ms));
    }
    // Another packager may have listed these very bytes (the same writer's key): they stay.
    let kept = origin
        .catalog
        .segment(channel, &row.rendition, row.n)
        .await?;
    let ours = kept
        .filter(|k| k.blob_key == row.blob_key)
        .map(|k| k.listed_ms);
    if ours.is_none() {
        let _ = origin.blobs.delete(&row.blob_key).await;
    }
    match outcome {
        FencedListing::Stale { current } => Err(fenced(origin, channel, row.feed, epoch, current)),
        _ => Ok(ours),
    }
}

/// Compares the other feed's copy with the listed one, for the alignment report.
pub(super) fn compare(
    origin: &Origin,
    channel: &LiveChannel,
    live: &LiveRendition,
    n: u64,
    kept: &LiveSegment,
    other: &SegmentInfo,
) {
    let other = (other.base_decode_time, other.duration, other.sample_count);
    let aligned = live.compare_copies(n, kept, other);
    if !aligned {
        let detail = live.alignment().last_misaligned.unwrap_or_default();
        let detail = format!("rendition {}: {detail}", live.name);
        origin.events.emit(
            &channel.spec.id,
            "packager",
            EventKind::CopiesMisaligned,
            detail,
        );
    }
    let result = if aligned { "aligned" } else { "misaligned" };
    let (id, name) = (channel.spec.id.clone(), live.name.clone());
    metrics::counter!("steadycast_feed_copies_compared_total", "channel" => id.clone(),
        "rendition" => name.clone(), "result" => result)
    .increment(1);
    metrics::gauge!("steadycast_pipelines_locked", "channel" => id, "rendition" => name)
        .set(f64::from(u8::from(aligned)));
}

/// Segment `n` is listed with another header than the one before it: playlists mark it with
/// EXT-X-DISCONTINUITY, and the MPD starts a Period there, recorded before the segment is
/// listed so that no MPD lists it in the Period before.
async fn announce_discontinuity(
    origin: &Origin,
    channel: &LiveChannel,
    live: &LiveRendition,
    n: u64,
    header: manifest::HeaderId,
) -> Result<(), OriginError> {
    let start_ms = channel.grid.start_of(n, 1000);
    origin
        .catalog
        .put_period(&channel.spec.id, n, start_ms)
        .await?;
    channel.add_period(n, start_ms);
    origin.events.emit(
        &channel.spec.id,
        "packager",
        EventKind::Discontinuity,
        format!(
            "rendition {}: segment {n} starts header {header}",
            live.name
        ),
    );
    metrics::counter!("steadycast_discontinuities_total", "channel" => channel.spec.id.clone(),
        "rendition" => live.name.clone())
    .increment(1);
    Ok(())
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
