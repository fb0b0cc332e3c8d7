//! An origin of a cluster following the catalog: segments other packagers listed are read once
//! from the store into this node's live window, so that every origin serves every listed
//! segment from memory with the same bytes. What wakes it (a notification, a timer) is the
//! caller's; a catch-up only ever adds what the catalog lists.

use std::time::{Instant, SystemTime};

use crate::live::{LiveChannel, LiveRendition};
use crate::restore::{listing, load_segment, restore_headers};
use crate::{Origin, OriginError};

/// How far behind its newest listing a rendition looks for segments listed late (a held copy's
/// grace time, an upload's retries): about 40 s of segments.
const LATE_LISTINGS_SECS: f64 = 40.0;

impl Origin {
    /// Adds to a channel's live window and index what the catalog lists beyond them. Returns
    /// how many segments were added. A failure to read what the catalog lists marks the
    /// channel behind (see [`Origin::stale`]); a catalog that cannot be asked does not.
    pub async fn catch_up(&self, id: &str) -> Result<usize, OriginError> {
        let Some(channel) = self.channel(id) else {
            return Ok(0);
        };
        let mut added = 0;
        for live in channel.renditions.values() {
            let result = self.catch_up_rendition(&channel, live).await;
            let mut behind = channel
                .behind_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match &result {
                Ok(_) => *behind = None,
                Err(OriginError::Store(store::StoreError::Catalog(_))) => {}
                Err(_) => {
                    behind.get_or_insert_with(Instant::now);
                }
            }
            added += result?;
        }
        if added > 0 {
            metrics::counter!("steadycast_origin_followed_total", "channel" => id.to_string())
                .increment(added as u64);
        }
        Ok(added)
    }

    async fn catch_up_rendition(
        &self,
        channel: &LiveChannel,
        live: &LiveRendition,
    ) -> Result<usize, OriginError> {
        let id = &channel.spec.id;
        let keep = channel.window_segments();
        let late = (LATE_LISTINGS_SECS / channel.grid.duration_secs()).ceil() as u64;
        // Never beside this node's own packager listing into the same window.
        let _guard = live.publish.lock().await;
        let from = match live.read().index.keys().next_back() {
            Some(&newest) => newest.saturating_sub(late),
            None => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                channel
                    .grid
                    .segment_at(now.saturating_sub(channel.startover()))
            }
        };
        let limit = u32::try_from(keep + late + 1).unwrap_or(u32::MAX);
        let rows = self
            .catalog
            .segments_between(id, &live.name, from, u64::MAX, limit)
            .await?;
        let mut added = 0;
        let mut disc = live.read().index.values().next_back().map(|l| l.disc);
        for row in rows {
            if live.read().index.contains_key(&row.n) {
                continue;
            }
            let Some(listing) = listing(&row) else {
                continue;
            };
            if !live.read().headers.contains_key(&listing.header) {
                restore_headers(channel, &self.catalog, &self.blobs).await?;
            }
            if disc.is_some_and(|d| d != listing.disc) {
                for (n, start_ms) in self.catalog.periods(id).await? {
                    channel.add_period(n, start_ms);
                }
            }
            disc = Some(listing.disc);
            live.write().unread_since.get_or_insert(row.listed_ms);
            let Some(segment) = load_segment(&self.blobs, &row, &listing).await? else {
                continue;
            };
            live.insert(row.n, segment, listing.disc, keep);
            added += 1;
        }
        live.write().unread_since = None;
        Ok(added)
    }
}

impl LiveChannel {
    /// Why this origin must not answer live manifests now, if so: a segment the catalog
    /// lists is due in every origin's manifests (listed `settle_ms` ago) and this origin has
    /// not read it (its store is slow or unreachable). Its manifests would lag the others', so
    /// it answers 503 and the load balancer asks another origin.
    pub fn lagging(&self, now_ms: u64) -> Option<String> {
        if self.settle_ms == 0 {
            return None;
        }
        self.renditions.values().find_map(|live| {
            let since = live.read().unread_since?;
            (since.saturating_add(self.settle_ms) <= now_ms).then(|| {
                format!(
                    "this origin has not yet read segments of `{}` the catalog listed {} ms \
                     ago; another origin has them",
                    live.name,
                    now_ms.saturating_sub(since)
                )
            })
        })
    }
}

impl Origin {
    /// Why this origin's view of a live channel is stale, if it is: it has failed to read what
    /// the catalog lists for more than 1.5 segment durations. A load balancer should route
    /// around it (`/readyz`).
    pub fn stale(&self) -> Option<String> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.values().find_map(|channel| {
            let since = (*channel
                .behind_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()))?;
            let limit = std::time::Duration::from_secs_f64(channel.grid.duration_secs() * 1.5);
            (since.elapsed() > limit).then(|| {
                format!(
                    "channel `{}`: segments the catalog lists could not be read for {:.1} s",
                    channel.spec.id,
                    since.elapsed().as_secs_f64()
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_lags_once_an_unread_listing_is_due_everywhere() {
        let spec = serde_json::from_str(
            r#"{"id":"demo","inputs":{"main":{"type":"rtmp","stream_key":"k"}}}"#,
        )
        .unwrap();
        let mut channel = LiveChannel::new(spec, channel::Secret::new("")).unwrap();
        let video = channel.renditions.values().next().unwrap().clone();
        video.write().unread_since = Some(10_000);
        assert_eq!(channel.lagging(20_000), None, "a single node never lags");
        channel.settle_ms = 500;
        assert_eq!(channel.lagging(10_499), None, "not yet due on any origin");
        let why = channel.lagging(10_500).unwrap();
        assert!(why.contains("500 ms ago"), "{why}");
        video.write().unread_since = None;
        assert_eq!(channel.lagging(10_500), None);
    }
}
