//! When a node starts: bringing catalog and store back in line after a crash, then rebuilding
//! each channel's live window from them, so that a restart continues the same playlists with
//! the same bytes.

use std::collections::HashSet;
use std::time::SystemTime;

use media::cmaf::{inspect_init, inspect_segment};
use store::{Catalog, DirStore};

use crate::OriginError;
use crate::live::{LiveChannel, LiveSegment, ServedInit, content_etag};

/// What a start-up repair found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Files no listing points at (a crash between storing and listing, or an interrupted
    /// write), deleted.
    pub orphan_files: usize,
    /// Listings whose bytes are gone (a disk lost them), unlisted: they would only 404.
    pub dead_listings: usize,
}

/// Makes the catalog and the store agree for one channel. Run before serving it: nothing is
/// being written then.
pub async fn repair(
    channel: &str,
    catalog: &Catalog,
    blobs: &DirStore,
) -> Result<Repair, OriginError> {
    let listed: HashSet<String> = catalog.blob_keys(channel).await?.into_iter().collect();
    let stored: HashSet<String> = blobs
        .list(&format!("live/{channel}"))
        .await?
        .into_iter()
        .collect();
    let mut repair = Repair::default();
    for orphan in stored.difference(&listed) {
        blobs.delete(orphan).await?;
        repair.orphan_files += 1;
    }
    for dead in listed.difference(&stored) {
        // Segment keys are `live/{channel}/{rendition}/{n}.m4s`; a lost header stays listed
        // (the next one from its feed replaces nothing) and is reported by the log.
        let Some((rendition, n)) = segment_of_key(dead) else {
            tracing::warn!(%channel, key = %dead, "a listed CMAF header has no bytes");
            continue;
        };
        catalog.delete_segment(channel, rendition, n).await?;
        repair.dead_listings += 1;
    }
    Ok(repair)
}

fn segment_of_key(key: &str) -> Option<(&str, u64)> {
    let mut parts = key.rsplit('/');
    let n = parts.next()?.strip_suffix(".m4s")?.parse().ok()?;
    Some((parts.next()?, n))
}

pub async fn live_window(
    channel: &LiveChannel,
    catalog: &Catalog,
    blobs: &DirStore,
) -> Result<(), OriginError> {
    let id = &channel.spec.id;
    let keep = channel.window_segments();
    // Headers come oldest first, so the first one met per rendition is the one served before.
    for row in catalog.inits(id).await? {
        let Some(live) = channel.renditions.get(&row.rendition) else {
            continue;
        };
        let Some(bytes) = blobs.get(&row.blob_key).await? else {
            tracing::warn!(channel = %id, key = %row.blob_key, "catalog lists a missing header");
            continue;
        };
        let Ok(track) = inspect_init(&bytes) else {
            continue;
        };
        let mut state = live.write();
        state.feed_inits.insert(row.feed, bytes.clone());
        state.latest_inits.insert(row.feed, bytes.clone());
        if state.init.is_none() {
            state.init = Some(ServedInit {
                bytes,
                track,
                feed: row.feed,
            });
        }
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let oldest = channel
        .grid
        .segment_at(now.saturating_sub(channel.startover()));
    let mut restored = 0;
    for live in channel.renditions.values() {
        let listed = catalog
            .segments_between(id, &live.name, oldest, u64::MAX, u32::MAX)
            .await?;
        live.index_listed(listed.iter().map(|r| (r.n, r.start, r.duration)));
        // The live window is the newest of what the index was loaded from.
        for row in &listed[listed.len().saturating_sub(keep as usize)..] {
            let Some(bytes) = blobs.get(&row.blob_key).await? else {
                tracing::warn!(channel = %id, key = %row.blob_key, "catalog lists a missing segment");
                continue;
            };
            let samples = inspect_segment(&bytes).map(|i| i.sample_count).unwrap_or(0);
            let segment = LiveSegment {
                start: row.start,
                duration: row.duration,
                samples,
                feed: row.feed,
                quality: row.quality,
                etag: content_etag(&bytes),
                bytes,
            };
            live.insert(row.n, segment, keep);
            restored += 1;
        }
    }
    if restored > 0 {
        tracing::info!(channel = %id, segments = restored, "live window restored from the store");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_name_rendition_and_number() {
        assert_eq!(
            segment_of_key("live/demo/360p/897808074.m4s"),
            Some(("360p", 897_808_074))
        );
        assert_eq!(segment_of_key("live/demo/360p/init-a.mp4"), None);
        assert_eq!(segment_of_key("live/demo/360p/x.m4s"), None);
    }
}
