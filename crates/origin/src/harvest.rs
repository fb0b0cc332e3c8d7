//! Live-to-VOD harvest: a past range of a channel copied, in the background, into a
//! self-contained asset under `vod/{name}/` in the store — CMAF headers and segments, HLS
//! multivariant and media playlists, a static MPD — that plays from the origin and from the
//! store alone (every URI in it is relative).

use std::sync::Arc;
use std::time::Duration;

use manifest::{SegmentRef, dash, hls};
use store::HarvestRow;

use crate::live::LiveChannel;
use crate::manifests::clip_periods;
use crate::timeshift::{Plan, TimeShift};
use crate::{Origin, OriginError};

/// A bound on the segments of one rendition an asset copies.
const MAX_SEGMENTS: usize = 100_000;

impl Origin {
    /// Checks and records a harvest of `[start, end)` of a channel as asset `name`, and starts
    /// copying. The job's row says how it goes.
    pub async fn harvest(
        self: &Arc<Self>,
        channel_id: &str,
        name: &str,
        range: (Duration, Duration),
        now: Duration,
    ) -> Result<HarvestRow, OriginError> {
        let channel = self
            .channel(channel_id)
            .ok_or_else(|| OriginError::NotFound(format!("unknown channel `{channel_id}`")))?;
        if !channel::is_name(name) {
            return Err(OriginError::BadRequest(format!(
                "name `{name}`: use 1-64 of a-z, 0-9, `-`, `_`"
            )));
        }
        let (start, end) = range;
        let longest = channel.spec.max_harvest_seconds;
        if end.saturating_sub(start) > Duration::from_secs(longest.into()) {
            return Err(OriginError::BadRequest(format!(
                "a harvest of channel `{channel_id}` lasts at most {longest} s (max_harvest_seconds)"
            )));
        }
        let shift = TimeShift {
            start: Some(start),
            end: Some(end),
            ..TimeShift::default()
        };
        let plan = shift.plan(
            channel.grid,
            now,
            channel.window_segments(),
            channel.startover(),
        );
        let (first_n, last_n) = match plan {
            Ok(Plan::Range { first_n, last_n }) => (first_n, last_n),
            Ok(_) => return Err(OriginError::BadRequest("give a start and an end".into())),
            Err(refusal) => return Err(refusal.into()),
        };
        let job = HarvestRow {
            name: name.to_string(),
            channel: channel_id.to_string(),
            start_ms: start.as_millis() as u64,
            end_ms: end.as_millis() as u64,
            state: "queued".into(),
            progress: 0,
            detail: String::new(),
        };
        if !self.catalog.insert_harvest(&job).await? {
            return Err(OriginError::Conflict(format!(
                "a harvest named `{name}` exists"
            )));
        }
        let (origin, running) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let job = running;
            let result = origin
                .copy_asset(&channel, &job.name, first_n, last_n)
                .await;
            let (state, detail) = match result {
                Ok(summary) => ("done", summary),
                Err(e) => ("failed", e.to_string()),
            };
            tracing::info!(channel = %job.channel, harvest = %job.name, state, %detail, "harvest ended");
            if let Err(e) = origin
                .catalog
                .update_harvest(&job.name, state, 100, &detail)
                .await
            {
                tracing::warn!(harvest = %job.name, error = %e, "harvest state not stored");
            }
        });
        Ok(job)
    }

    async fn copy_asset(
        &self,
        channel: &LiveChannel,
        name: &str,
        first_n: u64,
        last_n: u64,
    ) -> Result<String, OriginError> {
        let mut renditions = Vec::new();
        for live in channel.renditions.values() {
            let Some(rendition) = live.manifest_rendition(&channel.spec) else {
                continue;
            };
            let listed = live.listed(first_n, last_n, MAX_SEGMENTS);
            let headers: Vec<_> = {
                let state = live.read();
                let mut ids: Vec<_> = listed.refs.iter().map(|s| s.header).collect();
                ids.dedup();
                ids.iter()
                    .filter_map(|id| state.headers.get(id))
                    .map(|h| (h.id, h.bytes.clone()))
                    .collect()
            };
            renditions.push((rendition, headers, listed.refs));
        }
        let total: usize = renditions.iter().map(|(_, _, refs)| refs.len()).sum();
        if total == 0 {
            return Err(OriginError::NotFound("no segment in that range".into()));
        }
        self.catalog.update_harvest(name, "running", 0, "").await?;
        let mut copied = 0;
        for (rendition, headers, refs) in &renditions {
            let prefix = format!("vod/{name}/{}", rendition.name);
            for (id, bytes) in headers {
                self.blobs
                    .put(&format!("{prefix}/init-{id}.mp4"), bytes)
                    .await?;
            }
            for s in refs {
                let gone = || {
                    OriginError::NotFound(format!(
                        "segment {} of `{}` is gone",
                        s.n, rendition.name
                    ))
                };
                let row = self.catalog.segment(&channel.spec.id, &rendition.name, s.n);
                let row = row.await?.ok_or_else(gone)?;
                let bytes = self.blobs.get(&row.blob_key).await?.ok_or_else(|| {
                    OriginError::NotFound(format!(
                        "segment {} of `{}` is gone",
                        s.n, rendition.name
                    ))
                })?;
                self.blobs
                    .put(&format!("{prefix}/{}.m4s", s.n), &bytes)
                    .await?;
                copied += 1;
                if copied % 50 == 0 {
                    let progress = (copied * 100 / total) as u8;
                    self.catalog
                        .update_harvest(name, "running", progress, "")
                        .await?;
                }
            }
        }
        let (renditions, timelines): (Vec<_>, Vec<_>) = renditions
            .into_iter()
            .map(|(rendition, _, refs)| (rendition, refs))
            .unzip();
        self.write_manifests(channel, name, first_n, last_n, &renditions, &timelines)
            .await?;
        Ok(format!(
            "{copied} segments in {} renditions",
            renditions.len()
        ))
    }

    async fn write_manifests(
        &self,
        channel: &LiveChannel,
        name: &str,
        first_n: u64,
        last_n: u64,
        renditions: &[manifest::Rendition],
        timelines: &[Vec<SegmentRef>],
    ) -> Result<(), OriginError> {
        let params = hls::MediaPlaylistParams {
            target_duration_secs: crate::manifests::target_duration(channel),
            discontinuity_sequence: 0,
            ended: true,
            playlist_type: Some(hls::PlaylistType::Vod),
            query: "",
        };
        for (rendition, segments) in renditions.iter().zip(timelines) {
            let playlist = hls::media_playlist(rendition, segments, &params);
            self.blobs
                .put(
                    &format!("vod/{name}/{}.m3u8", rendition.name),
                    &playlist.into(),
                )
                .await?;
        }
        let main = hls::multivariant(renditions, "");
        self.blobs
            .put(&format!("vod/{name}/main.m3u8"), &main.into())
            .await?;
        let slices: Vec<&[SegmentRef]> = timelines.iter().map(Vec::as_slice).collect();
        let d = channel.grid.duration_secs();
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        let periods = channel.periods_from(first_n, last_n, &names);
        let periods = clip_periods(channel, first_n, periods);
        let mpd = dash::static_mpd(
            renditions,
            &slices,
            &periods,
            2.0 * d,
            "",
            dash::Addressing::Number,
        );
        self.blobs
            .put(&format!("vod/{name}/manifest.mpd"), &mpd.into())
            .await?;
        Ok(())
    }

    /// A file of a harvested asset.
    pub async fn vod_file(&self, name: &str, path: &str) -> Result<bytes::Bytes, OriginError> {
        let key = format!("vod/{name}/{path}");
        self.blobs
            .get(&key)
            .await?
            .ok_or_else(|| OriginError::NotFound(format!("no `{key}`")))
    }
}
