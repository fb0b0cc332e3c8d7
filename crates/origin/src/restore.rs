//! When a node starts: bringing catalog and store back in line after a crash, then rebuilding
//! each channel's live window from them, so that a restart continues the same playlists with
//! the same bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use media::cmaf::{inspect_init, inspect_segment};
use store::{BlobStore, Catalog, HeaderRow, SegmentRow};

use crate::OriginError;
use crate::live::{Header, Listing, LiveChannel, LiveSegment, content_etag};

/// Catalog rows read at a time when an index is restored.
const RESTORE_PAGE: u32 = 10_000;

/// What a start-up repair found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Files no listing points at (a crash between storing and listing, or an interrupted
    /// write), deleted.
    pub orphan_files: usize,
    /// Listings whose bytes are gone (a disk lost them), unlisted: they would only 404.
    pub dead_listings: usize,
    /// Listings whose bytes are not as long as listed (cut short by a full disk under an
    /// older build), unlisted and deleted: a player would fail on them.
    pub short_listings: usize,
}

/// Makes the catalog and the store agree for one channel. Run before serving it: nothing is
/// being written then, but by other packagers of a cluster, whose files from segment
/// `in_flight_from` on (and headers) are kept.
pub async fn repair(
    channel: &str,
    catalog: &Catalog,
    blobs: &BlobStore,
    in_flight_from: Option<u64>,
) -> Result<Repair, OriginError> {
    let listed: HashMap<String, Option<u64>> =
        catalog.blob_keys(channel).await?.into_iter().collect();
    let stored: HashMap<String, u64> = blobs
        .list(&format!("live/{channel}"))
        .await?
        .into_iter()
        .map(|b| (b.key, b.size))
        .collect();
    let mut repair = Repair::default();
    let settled = |key: &str| match (in_flight_from, segment_of_key(key)) {
        (None, _) => true,
        (Some(first), Some((_, n))) => n < first,
        (Some(_), None) => false,
    };
    for orphan in stored
        .keys()
        .filter(|k| !listed.contains_key(*k) && settled(k))
    {
        blobs.delete(orphan).await?;
        repair.orphan_files += 1;
    }
    for (key, len) in &listed {
        let size = stored.get(key);
        let short = matches!((size, len), (Some(size), Some(len)) if size != len);
        if size.is_some() && !short {
            continue;
        }
        // Segment keys are `live/{channel}/{rendition}/{n}.m4s`; a lost header stays listed
        // (the next one from its feed replaces nothing) and is reported by the log.
        let Some((rendition, n)) = segment_of_key(key) else {
            tracing::warn!(%channel, %key, "a listed CMAF header has no bytes");
            continue;
        };
        catalog.delete_segment(channel, rendition, n).await?;
        if short {
            blobs.delete(key).await?;
            repair.short_listings += 1;
        } else {
            repair.dead_listings += 1;
        }
    }
    Ok(repair)
}

/// `…/{rendition}/{n}.m4s`, or `…/{rendition}/{n}-{feed}{epoch}.m4s` in a cluster.
fn segment_of_key(key: &str) -> Option<(&str, u64)> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?.strip_suffix(".m4s")?;
    let n = file.split('-').next()?.parse().ok()?;
    Some((parts.next()?, n))
}

pub async fn live_window(
    channel: &LiveChannel,
    catalog: &Catalog,
    blobs: &BlobStore,
) -> Result<(), OriginError> {
    let id = &channel.spec.id;
    let keep = channel.window_segments();
    restore_headers(channel, catalog, blobs).await?;
    for (n, start_ms) in catalog.periods(id).await? {
        channel.add_period(n, start_ms);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let oldest = channel
        .grid
        .segment_at(now.saturating_sub(channel.startover()));
    let mut restored = 0;
    for live in channel.renditions.values() {
        // In pages, so that a 14-day index never has its rows in memory all at once.
        let mut newest = VecDeque::with_capacity(keep as usize + 1);
        let mut from = oldest;
        loop {
            let page = catalog
                .segments_between(id, &live.name, from, u64::MAX, RESTORE_PAGE)
                .await?;
            live.index_listed(page.iter().filter_map(|r| Some((r.n, listing(r)?))));
            let full = page.len() == RESTORE_PAGE as usize;
            for row in page {
                from = row.n + 1;
                newest.push_back(row);
                if newest.len() > keep as usize {
                    newest.pop_front();
                }
            }
            if !full {
                break;
            }
        }
        // The live window is the newest of what the index was loaded from.
        for row in &newest {
            let Some(listing) = listing(row) else {
                continue;
            };
            let Some(segment) = load_segment(blobs, row, &listing).await? else {
                continue;
            };
            live.insert(row.n, segment, listing.disc, keep);
            restored += 1;
        }
    }
    if restored > 0 {
        tracing::info!(channel = %id, segments = restored, "live window restored from the store");
    }
    Ok(())
}

/// A listed segment's bytes from the store, as the live window keeps them; `None` (logged)
/// when the store has lost them.
pub(crate) async fn load_segment(
    blobs: &BlobStore,
    row: &SegmentRow,
    listing: &Listing,
) -> Result<Option<LiveSegment>, OriginError> {
    let Some(bytes) = blobs.get(&row.blob_key).await? else {
        tracing::warn!(channel = %row.channel, key = %row.blob_key, "catalog lists a missing segment");
        return Ok(None);
    };
    let samples = inspect_segment(&bytes).map(|i| i.sample_count).unwrap_or(0);
    Ok(Some(LiveSegment {
        start: row.start,
        duration: row.duration,
        samples,
        feed: row.feed,
        quality: row.quality,
        header: listing.header,
        etag: content_etag(&bytes),
        bytes,
        listed_ms: row.listed_ms,
    }))
}

/// A listed segment as the index keeps it; `None` for a header that is not a valid id.
pub(crate) fn listing(row: &SegmentRow) -> Option<Listing> {
    Some(Listing {
        start: row.start,
        duration: row.duration,
        header: row.header.as_deref()?.parse().ok()?,
        disc: row.disc,
    })
}

/// Loads every header of the channel's renditions, and which one each feed delivers now.
/// A catalog written before headers were named lists each feed's first header only in `inits`
/// and its segments without a header: those are named here, once.
pub(crate) async fn restore_headers(
    channel: &LiveChannel,
    catalog: &Catalog,
    blobs: &BlobStore,
) -> Result<(), OriginError> {
    let id = &channel.spec.id;
    let mut keys: Vec<(String, String)> = catalog
        .headers(id)
        .await?
        .into_iter()
        .map(|h| (h.rendition, h.blob_key))
        .collect();
    let named: HashSet<String> = keys.iter().map(|(_, key)| key.clone()).collect();
    let feeds = catalog.inits(id).await?;
    keys.extend(
        feeds
            .iter()
            .filter(|f| !named.contains(&f.blob_key))
            .map(|f| (f.rendition.clone(), f.blob_key.clone())),
    );
    for (rendition, key) in keys {
        let Some(live) = channel.renditions.get(&rendition) else {
            continue;
        };
        let Some(bytes) = blobs.get(&key).await? else {
            tracing::warn!(channel = %id, %key, "catalog lists a missing header");
            continue;
        };
        let Ok(track) = inspect_init(&bytes) else {
            continue;
        };
        let header = Header::new(bytes, track, id, &rendition, Some(key.clone()));
        if !named.contains(&key) {
            let row = HeaderRow {
                channel: id.clone(),
                rendition: rendition.clone(),
                id: header.id.to_string(),
                blob_key: key.clone(),
            };
            catalog.put_header(&row).await?;
            let unnamed = catalog
                .name_unnamed_segments(id, &rendition, &row.id)
                .await?;
            tracing::info!(channel = %id, %rendition, header = %row.id, segments = unnamed,
                "named the header of segments listed before headers had names");
        }
        let mut state = live.write();
        for feed in feeds
            .iter()
            .filter(|f| f.rendition == rendition && f.blob_key == key)
        {
            state.feed_headers.insert(feed.feed, header.id);
        }
        state.current.get_or_insert(header.id);
        state.headers.entry(header.id).or_insert(header);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::DirStore;
    use timeline::Feed;

    /// More listings than one page: the index holds them all, the live window the newest.
    #[tokio::test]
    async fn an_index_longer_than_a_page_is_restored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap();
        let blobs = BlobStore::from(DirStore::open(dir.path().join("b")).await.unwrap());
        let spec: channel::ChannelSpec = serde_json::from_value(serde_json::json!({
            "id": "long", "frame_rate": "15", "segment_seconds": 2.0,
            "live_window_seconds": 10, "startover_window_seconds": 86_400,
            "inputs": { "m": { "type": "test-pattern" } },
            "ladder": [{ "name": "v", "width": 160, "height": 90, "bitrate_kbps": 80 }],
        }))
        .unwrap();
        let channel = LiveChannel::new(spec, channel::Secret::new("")).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let last = channel.grid.segment_at(now);
        let count = u64::from(RESTORE_PAGE) + 5;
        let first = last - count + 1;
        for n in first..=last {
            let row = SegmentRow {
                channel: "long".into(),
                rendition: "v".into(),
                n,
                feed: Feed::A,
                start: channel.grid.start_of(n, 90_000),
                duration: 180_000,
                timescale: 90_000,
                byte_len: 1,
                blob_key: format!("live/long/v/{n}.m4s"),
                quality: None,
                header: Some("00000000000000ab".into()),
                disc: 0,
                listed_ms: channel.grid.start_of(n + 1, 1000),
            };
            catalog.insert_segment(&row).await.unwrap();
            if n + channel.window_segments() > last {
                blobs.put(&row.blob_key, &"x".into()).await.unwrap();
            }
        }
        live_window(&channel, &catalog, &blobs).await.unwrap();
        let live = &channel.renditions["v"];
        let index = live.listed(0, u64::MAX, usize::MAX);
        assert_eq!(index.refs.len() as u64, count);
        assert_eq!(index.refs.first().map(|r| r.n), Some(first));
        let window: Vec<u64> = live.read().segments.keys().copied().collect();
        let keep = channel.window_segments();
        assert_eq!(window, (last - keep + 1..=last).collect::<Vec<_>>());
    }

    #[test]
    fn segment_keys_name_rendition_and_number() {
        assert_eq!(
            segment_of_key("live/demo/360p/897808074.m4s"),
            Some(("360p", 897_808_074))
        );
        assert_eq!(
            segment_of_key("live/demo/360p/897808074-b12.m4s"),
            Some(("360p", 897_808_074))
        );
        assert_eq!(segment_of_key("live/demo/360p/init-a.mp4"), None);
        assert_eq!(segment_of_key("live/demo/360p/x.m4s"), None);
    }
}
