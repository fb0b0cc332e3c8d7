//! Retention: segments that fell out of a channel's startover window are unlisted from the
//! catalog, then their bytes are deleted. The live window is never touched: the startover window
//! is at least as long (checked when the channel is defined).

use std::time::Duration;

use crate::live::LiveChannel;
use crate::{Origin, OriginError};

/// Segments removed per rendition per sweep, so that one sweep never holds the catalog long.
const BATCH: u32 = 500;

impl Origin {
    /// Removes every segment older than its channel's startover window at `now` (Unix time).
    /// Returns how many were removed.
    pub async fn sweep_retention(&self, now: Duration) -> Result<u64, OriginError> {
        let channels: Vec<_> = {
            let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        let mut removed = 0;
        for channel in channels {
            removed += self.sweep_channel(&channel, now).await?;
        }
        Ok(removed)
    }

    async fn sweep_channel(
        &self,
        channel: &LiveChannel,
        now: Duration,
    ) -> Result<u64, OriginError> {
        let id = &channel.spec.id;
        let cutoff = channel
            .grid
            .segment_at(now.saturating_sub(channel.startover()));
        let mut removed = 0;
        for live in channel.renditions.values() {
            live.forget_before(cutoff);
            loop {
                let expired = self
                    .catalog
                    .segments_before(id, &live.name, cutoff, BATCH)
                    .await?;
                for row in &expired {
                    // Unlisted first: a crash between the two leaves an orphan file, never a
                    // listed segment without bytes.
                    self.catalog.delete_segment(id, &live.name, row.n).await?;
                    self.blobs.delete(&row.blob_key).await?;
                }
                removed += expired.len() as u64;
                if expired.len() < BATCH as usize {
                    break;
                }
            }
        }
        // The Period in force at the cutoff stays: the oldest listed segments are in it.
        self.catalog.delete_periods_before(id, cutoff).await?;
        channel.forget_periods_before(cutoff);
        if removed > 0 {
            metrics::counter!("steadycast_retention_removed_total", "channel" => id.clone())
                .increment(removed);
            tracing::info!(channel = %id, removed, cutoff, "segments past the startover window removed");
        }
        Ok(removed)
    }
}
