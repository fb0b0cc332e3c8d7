//! Playback: manifests rendered on request from the live window, and segments served from
//! memory (or from the store once they left it), with the cache headers a CDN needs.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use manifest::{dash, hls};

use crate::live::{LiveChannel, LiveRendition};
use crate::{Origin, OriginError};

const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";

pub async fn time() -> impl IntoResponse {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "no-store")],
        manifest::iso8601(now.as_millis() as u64),
    )
}

pub async fn manifest(
    State(origin): State<Arc<Origin>>,
    Path((channel_id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let channel = find_channel(&origin, &channel_id)?;
    let (body, content_type) = if file == "main.m3u8" {
        (multivariant(&channel)?, "application/vnd.apple.mpegurl")
    } else if file == "manifest.mpd" {
        (mpd(&channel)?, "application/dash+xml")
    } else if let Some(name) = file.strip_suffix(".m3u8") {
        (
            media_playlist(&channel, name)?,
            "application/vnd.apple.mpegurl",
        )
    } else {
        return Err(OriginError::NotFound(format!(
            "no `{file}` here: try main.m3u8 or manifest.mpd"
        )));
    };
    let max_age = (channel.grid.duration_secs() / 2.0).floor().max(1.0);
    Ok(cacheable(
        body.into(),
        content_type,
        &format!("public, max-age={max_age}"),
        &headers,
    ))
}

pub async fn media(
    State(origin): State<Arc<Origin>>,
    Path((channel_id, rendition, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let channel = find_channel(&origin, &channel_id)?;
    let live = channel.renditions.get(&rendition).ok_or_else(|| {
        OriginError::NotFound(format!(
            "channel `{channel_id}` has no rendition `{rendition}`"
        ))
    })?;
    let content_type = if live.is_video {
        "video/mp4"
    } else {
        "audio/mp4"
    };
    let bytes = if file == "init.mp4" {
        let init = live.read().init.as_ref().map(|i| i.bytes.clone());
        init.ok_or_else(|| OriginError::NotFound(format!("`{rendition}` has no header yet")))?
    } else {
        let name = file
            .strip_suffix(".m4s")
            .ok_or_else(|| OriginError::NotFound(format!("no `{file}` here")))?;
        let (n, time) = segment_address(&channel, live, name)?;
        let in_memory = live
            .read()
            .segments
            .get(&n)
            .map(|s| (s.start, s.bytes.clone()));
        let (start, bytes) = match in_memory {
            Some(found) => found,
            None => stored_segment(&origin, &channel_id, &rendition, n).await?,
        };
        if time.is_some_and(|t| t != start) {
            return Err(OriginError::NotFound(format!(
                "no segment of `{rendition}` starts at {name}"
            )));
        }
        bytes
    };
    ranged(bytes, content_type, &headers)
}

fn find_channel(origin: &Origin, id: &str) -> Result<Arc<LiveChannel>, OriginError> {
    origin
        .channel(id)
        .ok_or_else(|| OriginError::NotFound(format!("unknown channel `{id}`")))
}

/// A segment's number, from `N` (HLS) or `t{tfdt}` (DASH's `$Time$`; the time is returned too,
/// so that only the segment starting exactly there answers).
fn segment_address(
    channel: &LiveChannel,
    live: &LiveRendition,
    name: &str,
) -> Result<(u64, Option<u64>), OriginError> {
    let not_here = || OriginError::NotFound(format!("no `{name}.m4s` here"));
    if let Some(time) = name.strip_prefix('t') {
        let time: u64 = time.parse().map_err(|_| not_here())?;
        let timescale = live
            .read()
            .init
            .as_ref()
            .map(|i| i.track.timescale)
            .ok_or_else(not_here)?;
        return Ok((channel.grid.segment_of(time, timescale), Some(time)));
    }
    Ok((name.parse().map_err(|_| not_here())?, None))
}

async fn stored_segment(
    origin: &Origin,
    channel: &str,
    rendition: &str,
    n: u64,
) -> Result<(u64, Bytes), OriginError> {
    let not_yet =
        || OriginError::NotFound(format!("segment {n} of `{rendition}` is not published"));
    let row = origin
        .catalog
        .segment(channel, rendition, n)
        .await?
        .ok_or_else(not_yet)?;
    let bytes = origin.blobs.get(&row.blob_key).await?.ok_or_else(not_yet)?;
    Ok((row.start, bytes))
}

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

fn multivariant(channel: &LiveChannel) -> Result<String, OriginError> {
    Ok(hls::multivariant(&renditions(channel)?, ""))
}

fn media_playlist(channel: &LiveChannel, name: &str) -> Result<String, OriginError> {
    let live = channel
        .renditions
        .get(name)
        .ok_or_else(|| OriginError::NotFound(format!("no rendition `{name}`")))?;
    let rendition = live
        .manifest_rendition(&channel.spec)
        .ok_or_else(|| OriginError::NotFound(format!("`{name}` has no media yet")))?;
    let segments = live.window(channel.window_segments());
    let params = hls::MediaPlaylistParams {
        target_duration_secs: target_duration(channel),
        discontinuity_sequence: 0,
        ended: false,
        playlist_type: None,
        query: "",
    };
    Ok(hls::media_playlist(&rendition, &segments, &params))
}

/// Fixed per channel (it must not change between reloads): D plus the most an audio segment
/// can overrun it by, one AAC frame.
fn target_duration(channel: &LiveChannel) -> u32 {
    let audio_frame = 1024.0 / f64::from(channel.spec.audio.sample_rate);
    hls::target_duration(channel.grid.duration_secs() + audio_frame)
}

fn mpd(channel: &LiveChannel) -> Result<String, OriginError> {
    let renditions = renditions(channel)?;
    let windows: Vec<_> = renditions
        .iter()
        .map(|r| {
            channel
                .renditions
                .get(&r.name)
                .map(|l| l.window(channel.window_segments()))
                .unwrap_or_default()
        })
        .collect();
    let slices: Vec<&[manifest::SegmentRef]> = windows.iter().map(Vec::as_slice).collect();
    let d = channel.grid.duration_secs();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let params = dash::MpdParams {
        now_unix_millis: now.as_millis() as u64,
        segment_duration_secs: d,
        time_shift_buffer_depth_secs: f64::from(channel.spec.live_window_seconds),
        suggested_presentation_delay_secs: 3.0 * d,
        min_buffer_time_secs: 2.0 * d,
        utc_timing_url: "/time",
        query: "",
    };
    Ok(dash::live_mpd(&renditions, &slices, &params))
}

/// A manifest response with a strong ETag, answering a matching If-None-Match with 304.
fn cacheable(body: Bytes, content_type: &str, cache: &str, headers: &HeaderMap) -> Response {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{:016x}\"", hasher.finish());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let status = if matches {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if matches {
        Body::empty()
    } else {
        Body::from(body)
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    set(h, header::CONTENT_TYPE, content_type);
    set(h, header::CACHE_CONTROL, cache);
    set(h, header::ETAG, &etag);
    set(
        h,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(SystemTime::now()),
    );
    response
}

/// A segment or header: immutable, with a strong ETag from its content, and single byte
/// ranges (players and CDNs use them for partial fetches).
fn ranged(bytes: Bytes, content_type: &str, headers: &HeaderMap) -> Result<Response, OriginError> {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let etag = format!("\"{:016x}-{:x}\"", hasher.finish(), bytes.len());
    let total = bytes.len() as u64;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) => Some(parse_range(spec, total)?),
        None => None,
    };
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let mut response = if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if let Some((start, end)) = range {
        let part = bytes.slice(start as usize..=end as usize);
        let mut r = (StatusCode::PARTIAL_CONTENT, part).into_response();
        set(
            r.headers_mut(),
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{total}"),
        );
        r
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = response.headers_mut();
    set(h, header::CONTENT_TYPE, content_type);
    set(h, header::CACHE_CONTROL, SEGMENT_CACHE);
    set(h, header::ETAG, &etag);
    set(h, header::ACCEPT_RANGES, "bytes");
    Ok(response)
}

/// One `bytes=` range (first-last, first-, or -suffix) within `total` bytes; inclusive bounds.
fn parse_range(spec: &str, total: u64) -> Result<(u64, u64), OriginError> {
    let bad = || OriginError::Range(format!("`{spec}` for {total} bytes"));
    let ranges = spec.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if ranges.contains(',') {
        return Err(OriginError::Range("multiple ranges are not served".into()));
    }
    let (first, last) = ranges.split_once('-').ok_or_else(bad)?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| bad())?;
        if suffix == 0 {
            return Err(bad());
        }
        (
            total.saturating_sub(suffix),
            total.checked_sub(1).ok_or_else(bad)?,
        )
    } else {
        let start: u64 = first.parse().map_err(|_| bad())?;
        let end = if last.is_empty() {
            u64::MAX
        } else {
            last.parse().map_err(|_| bad())?
        };
        (start, end.min(total.saturating_sub(1)))
    };
    if start > end || start >= total {
        return Err(bad());
    }
    Ok((start, end))
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000).unwrap(), (0, 99));
        assert_eq!(parse_range("bytes=900-", 1000).unwrap(), (900, 999));
        assert_eq!(parse_range("bytes=-100", 1000).unwrap(), (900, 999));
        assert_eq!(parse_range("bytes=990-2000", 1000).unwrap(), (990, 999));
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=-0",
            "bytes=a-b",
        ] {
            assert!(parse_range(bad, 1000).is_err(), "{bad}");
        }
        assert!(parse_range("bytes=0-", 0).is_err());
    }
}
