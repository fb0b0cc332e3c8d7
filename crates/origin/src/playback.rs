//! Playback: manifests rendered on request from the live window, and segments served from
//! memory (or from the store once they left it), with the cache headers a CDN needs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use failover::cmsd;
use store::SegmentRow;

use crate::gate::{Token, admit, child_query};
use crate::live::{LiveChannel, LiveRendition, content_etag};
use crate::manifests;
use crate::timeshift::{Plan, TimeShift};
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
    RawQuery(query): RawQuery,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let query = query.unwrap_or_default();
    let (channel, token) = admitted(&origin, &channel_id, &uri, &query, &headers, peer)?;
    let children = child_query(&token);
    // Child playlist URIs carry the query on; HLS cannot quote these characters.
    if query.contains(['"', '\n', '\r']) {
        return Err(OriginError::BadRequest(
            "the query holds a quote or a line break".into(),
        ));
    }
    let shift = TimeShift::parse(&query)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if let Some(why) = channel.lagging(now.as_millis() as u64) {
        return Err(OriginError::Unavailable(why));
    }
    let plan = shift.plan(
        channel.grid,
        now,
        channel.window_segments(),
        channel.startover(),
    )?;
    let (body, content_type) = if file == "main.m3u8" {
        (
            manifests::multivariant(&channel, &query)?,
            "application/vnd.apple.mpegurl",
        )
    } else if file == "manifest.mpd" {
        let mpd = manifests::mpd(&channel, plan, now, &children)?;
        (mpd, "application/dash+xml")
    } else if let Some(name) = file.strip_suffix(".m3u8") {
        let playlist = manifests::media_playlist(&channel, name, plan, &children)?;
        (playlist, "application/vnd.apple.mpegurl")
    } else {
        return Err(OriginError::NotFound(format!(
            "no `{file}` here: try main.m3u8 or manifest.mpd"
        )));
    };
    // A closed range never changes; everything else follows the live edge.
    let cache = match plan {
        Plan::Range { .. } => "public, max-age=3600".to_string(),
        _ => format!(
            "public, max-age={}",
            (channel.grid.duration_secs() / 2.0).floor().max(1.0)
        ),
    };
    Ok(cacheable(body.into(), content_type, &cache, &headers))
}

/// A file of a harvested asset: manifests revalidated, media immutable.
pub async fn vod(
    State(origin): State<Arc<Origin>>,
    Path((name, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let bytes = origin.vod_file(&name, &path).await?;
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => Ok(cacheable(
            bytes,
            "application/vnd.apple.mpegurl",
            "public, max-age=60",
            &headers,
        )),
        Some("mpd") => Ok(cacheable(
            bytes,
            "application/dash+xml",
            "public, max-age=60",
            &headers,
        )),
        _ => {
            let etag = content_etag(&bytes);
            ranged(bytes, &etag, "video/mp4", &headers)
        }
    }
}

pub async fn media(
    State(origin): State<Arc<Origin>>,
    Path((channel_id, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let query = query.unwrap_or_default();
    let (channel, _) = admitted(&origin, &channel_id, &uri, &query, &headers, peer)?;
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
    let (bytes, etag, quality) = if let Some(init) = header_of(live, &file) {
        let init = init.ok_or_else(|| OriginError::NotFound(format!("no `{file}` here")))?;
        let etag = content_etag(&init);
        (init, etag, None)
    } else {
        let name = file
            .strip_suffix(".m4s")
            .ok_or_else(|| OriginError::NotFound(format!("no `{file}` here")))?;
        let (n, time) = segment_address(&channel, live, name)?;
        let in_memory = live
            .read()
            .segments
            .get(&n)
            .map(|s| (s.start, s.bytes.clone(), s.etag.clone(), s.quality));
        let (start, bytes, etag, quality) = match in_memory {
            Some(found) => found,
            None => {
                let (row, bytes) = stored_segment(&origin, &channel_id, &rendition, n).await?;
                let etag = content_etag(&bytes);
                (row.start, bytes, etag, row.quality)
            }
        };
        if time.is_some_and(|t| t != start) {
            return Err(OriginError::NotFound(format!(
                "no segment of `{rendition}` starts at {name}"
            )));
        }
        (bytes, etag, quality)
    };
    let mut response = ranged(bytes, &etag, content_type, &headers)?;
    if file == "init.mp4" {
        // Not named by its content: the next header change gives it other bytes.
        set(response.headers_mut(), header::CACHE_CONTROL, "no-cache");
    }
    // The pipeline's quality score, CMSD-style, for CDNs, players and monitoring.
    if let Some(score) = quality
        && let Ok(value) = HeaderValue::from_str(&cmsd::static_value(live.is_video, score))
    {
        response.headers_mut().insert(cmsd::HEADER, value);
    }
    Ok(response)
}

/// A header's bytes when `file` names one: `init-{id}.mp4` (what manifests list, and never
/// changes) or `init.mp4` (the one the newest segment decodes with).
fn header_of(live: &LiveRendition, file: &str) -> Option<Option<Bytes>> {
    let state = live.read();
    if file == "init.mp4" {
        return Some(state.current_header().map(|h| h.bytes.clone()));
    }
    let id = file.strip_prefix("init-")?.strip_suffix(".mp4")?;
    let header = id.parse().ok().and_then(|id| state.headers.get(&id));
    Some(header.map(|h| h.bytes.clone()))
}

/// The channel a playback request names, if the request may play it (see [`admit`]).
fn admitted(
    origin: &Origin,
    channel_id: &str,
    uri: &Uri,
    query: &str,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<(Arc<LiveChannel>, Token), OriginError> {
    let channel = find_channel(origin, channel_id)?;
    let token = admit(
        origin,
        &channel,
        uri.path(),
        query,
        headers,
        peer.map(|p| p.0),
    )?;
    Ok((channel, token))
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
            .current_header()
            .map(|h| h.track.timescale)
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
) -> Result<(SegmentRow, Bytes), OriginError> {
    let not_yet =
        || OriginError::NotFound(format!("segment {n} of `{rendition}` is not published"));
    let row = origin
        .catalog
        .segment(channel, rendition, n)
        .await?
        .ok_or_else(not_yet)?;
    let bytes = origin.blobs.get(&row.blob_key).await?.ok_or_else(not_yet)?;
    Ok((row, bytes))
}

/// A manifest response with a strong ETag, answering a matching If-None-Match with 304.
fn cacheable(body: Bytes, content_type: &str, cache: &str, headers: &HeaderMap) -> Response {
    let etag = content_etag(&body);
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
fn ranged(
    bytes: Bytes,
    etag: &str,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, OriginError> {
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
    set(h, header::ETAG, etag);
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
