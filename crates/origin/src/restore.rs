//! Rebuilding a channel's live window from the store when a node starts, so that a restart
//! continues the same playlists with the same bytes.

use std::time::SystemTime;

use media::cmaf::{inspect_init, inspect_segment};
use store::{Catalog, DirStore};

use crate::OriginError;
use crate::live::{LiveChannel, LiveSegment, ServedInit};

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
        if state.init.is_none() {
            state.init = Some(ServedInit {
                bytes,
                track,
                feed: row.feed,
            });
        }
    }
    let mut restored = 0;
    for live in channel.renditions.values() {
        for row in catalog
            .recent_segments(id, &live.name, u64::MAX, keep as u32)
            .await?
        {
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
                bytes,
                stored_at: SystemTime::now(),
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
