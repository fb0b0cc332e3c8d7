//! The manifests of a channel, from the live window in memory or, for time-shifted and longer
//! windows, from the rendition's index of its startover window.

use std::time::Duration;

use manifest::{SegmentRef, dash, hls};

use crate::OriginError;
use crate::live::{LiveChannel, LiveRendition, Segments};
use crate::timeshift::{MAX_SPAN, Plan};

/// Every rendition whose CMAF header is known, as manifests describe it.
fn renditions(channel: &LiveChannel) -> Result<Vec<manifest::Rendition>, OriginError> {
    let list: Vec<_> = channel
        .renditions
        .values()
        .filter_map(|r| r.manifest_rendition(&channel.spec))
        .collect();
    if list.is_empty() {
        return Err(OriginError::NotFound(format!(
            "channel `{}` has no media yet",
            channel.spec.id
        )));
    }
    Ok(list)
}

/// The multivariant playlist; `query` (a time-shift, later a token) is passed to every child.
pub fn multivariant(channel: &LiveChannel, query: &str) -> Result<String, OriginError> {
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(hls::multivariant(&renditions(channel)?, &query))
}

/// A media playlist; `children` (`?st=…` or nothing) goes on every URL it names.
pub fn media_playlist(
    channel: &LiveChannel,
    name: &str,
    plan: Plan,
    children: &str,
) -> Result<String, OriginError> {
    let live = channel
        .renditions
        .get(name)
        .ok_or_else(|| OriginError::NotFound(format!("no rendition `{name}`")))?;
    let rendition = live
        .manifest_rendition(&channel.spec)
        .ok_or_else(|| OriginError::NotFound(format!("`{name}` has no media yet")))?;
    let listed = segments(channel, live, plan)?;
    let (playlist_type, ended) = match plan {
        Plan::Live { .. } => (None, false),
        Plan::From { .. } => (Some(hls::PlaylistType::Event), false),
        Plan::Range { .. } => (Some(hls::PlaylistType::Vod), true),
    };
    let params = hls::MediaPlaylistParams {
        target_duration_secs: target_duration(channel),
        discontinuity_sequence: listed.discontinuity_sequence,
        ended,
        playlist_type,
        query: children,
    };
    Ok(hls::media_playlist(&rendition, &listed.refs, &params))
}

/// Fixed per channel (it must not change between reloads): D plus the most an audio segment
/// can overrun it by, one AAC frame.
pub(crate) fn target_duration(channel: &LiveChannel) -> u32 {
    let audio_frame = 1024.0 / f64::from(channel.spec.audio.sample_rate);
    hls::target_duration(channel.grid.duration_secs() + audio_frame)
}

/// The MPD: dynamic for live, delayed or open-start requests, static for a closed range;
/// `children` goes on every URL it names.
pub fn mpd(
    channel: &LiveChannel,
    plan: Plan,
    now: Duration,
    children: &str,
) -> Result<String, OriginError> {
    let renditions = renditions(channel)?;
    let mut windows = Vec::with_capacity(renditions.len());
    for r in &renditions {
        let window = match channel.renditions.get(&r.name) {
            Some(live) => segments(channel, live, plan)?.refs,
            None => Vec::new(),
        };
        windows.push(window);
    }
    let slices: Vec<&[SegmentRef]> = windows.iter().map(Vec::as_slice).collect();
    let first_n = slices.iter().filter_map(|s| s.first()).map(|s| s.n).min();
    let last_n = slices.iter().filter_map(|s| s.last()).map(|s| s.n).max();
    let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
    let periods = match first_n.zip(last_n) {
        Some((first, last)) => channel.periods_from(first, last, &names),
        None => Vec::new(),
    };
    let d = channel.grid.duration_secs();
    // An open start keeps everything since the start reachable.
    let depth = match plan {
        Plan::Range { first_n, .. } => {
            let clip = clip_periods(channel, first_n, periods);
            return Ok(dash::static_mpd(
                &renditions,
                &slices,
                &clip,
                2.0 * d,
                children,
                dash::Addressing::Time,
            ));
        }
        Plan::From { .. } => channel.startover().as_secs_f64(),
        Plan::Live { .. } => f64::from(channel.spec.live_window_seconds),
    };
    let params = dash::MpdParams {
        now_unix_millis: now.as_millis() as u64,
        segment_duration_secs: d,
        time_shift_buffer_depth_secs: depth,
        suggested_presentation_delay_secs: 3.0 * d,
        min_buffer_time_secs: 2.0 * d,
        utc_timing_url: "/time",
        query: children,
        periods: &periods,
    };
    Ok(dash::live_mpd(&renditions, &slices, &params))
}

/// A clip's Periods: the first starts at the clip's first segment (its presentation's 0), the
/// others where the channel's do.
pub(crate) fn clip_periods(
    channel: &LiveChannel,
    first_n: u64,
    mut periods: Vec<dash::PeriodStart>,
) -> Vec<dash::PeriodStart> {
    let start = dash::PeriodStart {
        n: first_n,
        start_ms: channel.grid.start_of(first_n, 1000),
        ..dash::PeriodStart::EPOCH
    };
    match periods.first_mut() {
        Some(first) if first.n <= first_n => *first = start,
        _ => periods.insert(0, start),
    }
    if let Some(second) = periods.get_mut(1) {
        second.previous = Some(first_n);
    }
    periods
}

/// The segments a plan lists: the live window from memory, anything else from the index; live
/// and growing ones up to the rendition's settled edge.
fn segments(
    channel: &LiveChannel,
    live: &LiveRendition,
    plan: Plan,
) -> Result<Segments, OriginError> {
    // A plan spans at most MAX_SPAN: this bound is only a guard.
    let limit = (MAX_SPAN.as_secs_f64() / channel.grid.duration_secs()).ceil() as usize + 1;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let Some(edge) = live.edge(now_ms, channel.settle_ms) else {
        return Ok(Segments::default());
    };
    Ok(match plan {
        Plan::Live { behind: 0, count } if count <= channel.window_segments() => {
            live.window(edge, count)
        }
        Plan::Live { behind, count } => {
            live.listed_behind(edge, behind, (count as usize).min(limit))
        }
        Plan::From { first_n } => live.listed(first_n, edge, limit),
        Plan::Range { first_n, last_n } => {
            let listed = live.listed(first_n, last_n, limit);
            if listed.refs.is_empty() {
                return Err(OriginError::NotFound(format!(
                    "`{}` has no segment in that range",
                    live.name
                )));
            }
            listed
        }
    })
}
