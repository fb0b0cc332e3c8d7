//! The packager's ingest endpoint: `PUT /ingest/{channel}/{feed}/{rendition}/{init.mp4|N.m4s}`.
//! Each upload is checked (credential, CMAF structure, place on the epoch grid) before it is
//! stored. A flawless copy of (rendition, N) is listed at once; a flawed one (its pipeline's
//! quality score below 100) waits a grace time for the other feed's. A listed copy is never
//! replaced.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use channel::EventKind;
use failover::cmsd;
use http_body_util::LengthLimitError;
use media::cmaf::{SegmentInfo, inspect_init, inspect_segment};
use media::fmp4::TrackInfo;
use std::time::Duration;
use store::{HeaderRow, InitRow};
use timeline::{Feed, Offer, SegmentChoice};

use crate::live::{Header, HeldCopy, LiveChannel, LiveRendition};
use crate::{MAX_UPLOAD, Origin, OriginError, StorePart};

mod publish;

pub use publish::Backlog;
use publish::{Published, catalog_down, compare, publish};

/// What became of an upload: its status for the pipeline and its outcome for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Stored,
    /// A flawed copy, waiting a grace time for the other feed's.
    Held,
    /// Stored while the catalog does not answer; listed when it does.
    Deferred,
    Duplicate,
}

impl Taken {
    fn status(self) -> StatusCode {
        match self {
            Taken::Stored => StatusCode::CREATED,
            Taken::Held | Taken::Deferred => StatusCode::ACCEPTED,
            Taken::Duplicate => StatusCode::OK,
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            Taken::Stored => "stored",
            Taken::Held => "held",
            Taken::Deferred => "deferred",
            Taken::Duplicate => "duplicate",
        }
    }
}

type Reply = Result<(Taken, String), OriginError>;

pub async fn put(
    State(origin): State<Arc<Origin>>,
    Path((channel_id, feed, rendition, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    let reply = accept(
        origin.clone(),
        &channel_id,
        &feed,
        &rendition,
        &file,
        &headers,
        body,
    )
    .await;
    let outcome = match &reply {
        Ok((taken, _)) => taken.outcome(),
        Err(OriginError::Fenced(_)) => "fenced",
        Err(e) => {
            tracing::warn!(channel = %channel_id, %feed, %rendition, %file, error = %e,
                "ingest refused");
            if e.status().is_server_error() {
                "error"
            } else {
                "refused"
            }
        }
    };
    // Label values come from the URL: keep them to known names so a peer can't grow the
    // metric set without bound.
    let known = origin
        .channel(&channel_id)
        .is_some_and(|c| c.renditions.contains_key(&rendition));
    let (channel_label, rendition_label) = if known {
        (channel_id, rendition)
    } else {
        ("unknown".into(), "unknown".into())
    };
    let feed_label = if feed == "a" || feed == "b" {
        feed
    } else {
        "unknown".into()
    };
    metrics::counter!("steadycast_segments_received_total", "channel" => channel_label,
        "feed" => feed_label, "rendition" => rendition_label, "outcome" => outcome)
    .increment(1);
    match reply {
        Ok((taken, why)) => (taken.status(), why).into_response(),
        // A refusal may leave the body unread (a stranger's is never read): the connection
        // cannot carry another request, and a client must not take it back to its pool.
        Err(e) => {
            let mut refused = e.into_response();
            refused
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            refused
        }
    }
}

async fn accept(
    origin: Arc<Origin>,
    channel_id: &str,
    feed: &str,
    rendition: &str,
    file: &str,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    let channel = origin
        .channel(channel_id)
        .ok_or_else(|| OriginError::NotFound(format!("unknown channel `{channel_id}`")))?;
    authorize(&origin, &channel, headers)?;
    let body = read_body(headers, body).await?;
    check_digest(headers, &body)?;
    let feed: Feed = feed.parse().map_err(OriginError::BadRequest)?;
    let live = channel.renditions.get(rendition).ok_or_else(|| {
        OriginError::NotFound(format!(
            "channel `{channel_id}` has no rendition `{rendition}`"
        ))
    })?;
    let epoch = check_fence(&origin, channel_id, feed, headers).await?;
    if file == "init.mp4" {
        return accept_init(&origin, &channel, live, feed, body).await;
    }
    let n = file
        .strip_suffix(".m4s")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| OriginError::BadRequest(format!("`{file}`: expected init.mp4 or N.m4s")))?;
    let quality = headers
        .get(cmsd::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(cmsd::parse_quality);
    let live = live.clone();
    let copy = Upload {
        feed,
        n,
        body,
        quality,
        epoch,
    };
    accept_segment(&origin, &channel, &live, copy).await
}

/// In a cluster, an upload is taken only from the current holder of its feed's lease: a
/// frozen node that wakes after a takeover stores nothing. Checked before the bytes are
/// written; the listing checks again in the transaction that lists. Returns the epoch.
async fn check_fence(
    origin: &Origin,
    channel: &str,
    feed: Feed,
    headers: &HeaderMap,
) -> Result<Option<u64>, OriginError> {
    if !origin.fenced {
        return Ok(None);
    }
    let epoch = headers
        .get(channel::LEASE_EPOCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            OriginError::BadRequest(format!(
                "this packager is in a cluster: uploads carry their pipeline's `{}`",
                channel::LEASE_EPOCH_HEADER
            ))
        })?;
    // A catalog that does not answer cannot say; the listing checks the epoch when it does,
    // and until then only the writer's own key is written.
    if origin.catalog_failing() {
        return Ok(Some(epoch));
    }
    let current = origin.catalog.lease_epoch(channel, feed).await;
    let current = match origin.store_write(channel, StorePart::Catalog, current) {
        Err(e) if catalog_down(&e) => return Ok(Some(epoch)),
        current => current?,
    };
    if current != Some(epoch) {
        return Err(fenced(origin, channel, feed, epoch, current));
    }
    Ok(Some(epoch))
}

fn fenced(
    origin: &Origin,
    channel: &str,
    feed: Feed,
    epoch: u64,
    current: Option<u64>,
) -> OriginError {
    let current = current.map_or("none".to_string(), |c| c.to_string());
    let detail = format!(
        "an upload of pipeline {feed} at lease epoch {epoch} refused: the current epoch is \
         {current} (another node runs it now)"
    );
    origin
        .events
        .emit(channel, "packager", EventKind::UploadFenced, detail.clone());
    OriginError::Fenced(detail)
}

/// A segment as a pipeline delivered it.
struct Upload {
    feed: Feed,
    n: u64,
    body: Bytes,
    quality: Option<u8>,
    epoch: Option<u64>,
}

/// Read only once the peer is known, and refused by its declared length before any of it is
/// read: a stranger cannot make the packager buffer 32 MiB, nor a client wait to send it.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, OriginError> {
    let too_large = || OriginError::TooLarge(format!("an upload is at most {MAX_UPLOAD} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_UPLOAD as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_UPLOAD).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<LengthLimitError>()) {
            too_large()
        } else {
            OriginError::BadRequest(format!("reading the upload: {e}"))
        }
    })
}

/// An upload carries the channel's ingest credential (a pipeline run anywhere) or, in a
/// cluster, the cluster's credential (a pipeline node's).
fn authorize(
    origin: &Origin,
    channel: &LiveChannel,
    headers: &HeaderMap,
) -> Result<(), OriginError> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            OriginError::Unauthorized("missing `Authorization: Bearer` credential".into())
        })?;
    let cluster = origin.cluster_credential.as_ref();
    if !(channel.credential.matches(given) || cluster.is_some_and(|c| c.matches(given))) {
        return Err(OriginError::Unauthorized("wrong ingest credential".into()));
    }
    Ok(())
}

/// Bytes damaged on the way can still parse as CMAF; a `Content-Digest` from the pipeline
/// catches them. Uploads without one are judged on their structure alone.
fn check_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), OriginError> {
    let Some(header) = headers.get("content-digest").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    match media::digest::matches_digest(header, body) {
        Some(false) => Err(OriginError::BadRequest(
            "Content-Digest does not match the body".into(),
        )),
        _ => Ok(()),
    }
}

async fn accept_init(
    origin: &Origin,
    channel: &LiveChannel,
    live: &LiveRendition,
    feed: Feed,
    body: Bytes,
) -> Reply {
    let track = inspect_init(&body).map_err(|e| OriginError::BadRequest(e.to_string()))?;
    if track.is_video() != live.is_video {
        let want = if live.is_video { "video" } else { "audio" };
        return Err(OriginError::BadRequest(format!(
            "rendition `{}` takes a {want} track",
            live.name
        )));
    }
    let header = Header::new(body, track, &channel.spec.id, &live.name, None);
    let _guard = live.publish.lock().await;
    let (known, current) = {
        let state = live.read();
        if state.feed_headers.get(&feed) == Some(&header.id) {
            return Ok((Taken::Duplicate, "header already stored\n".into()));
        }
        let current = state.current_header().map(|h| (h.id, h.track.timescale));
        (
            state.headers.get(&header.id).map(|h| h.key.clone()),
            current,
        )
    };
    // Segments are placed on the grid and listed in the rendition's one timescale.
    if let Some((_, timescale)) = current.filter(|(_, ts)| *ts != header.track.timescale) {
        return Err(OriginError::Conflict(format!(
            "rendition `{}` is in timescale {timescale}; this header has {}",
            live.name, header.track.timescale
        )));
    }
    if known.is_none() {
        let id = &channel.spec.id;
        let stored = origin.blobs.put(&header.key, &header.bytes).await;
        origin.store_write(id, StorePart::Blobs, stored)?;
        let row = HeaderRow {
            channel: id.clone(),
            rendition: live.name.clone(),
            id: header.id.to_string(),
            blob_key: header.key.clone(),
        };
        let listed = origin.catalog.put_header(&row).await;
        origin.store_write(id, StorePart::Catalog, listed)?;
    }
    let feed_row = InitRow {
        channel: channel.spec.id.clone(),
        rendition: live.name.clone(),
        feed,
        blob_key: known.unwrap_or_else(|| header.key.clone()),
        track: String::new(),
    };
    origin.catalog.put_init(&feed_row).await?;
    if let Some((served, _)) = current.filter(|(id, _)| *id != header.id) {
        report_new_header(origin, channel, live, feed, header.id, served);
    }
    let mut state = live.write();
    state.feed_headers.insert(feed, header.id);
    state.current.get_or_insert(header.id);
    let reply = if state.headers.contains_key(&header.id) {
        "header known; this feed now delivers it\n"
    } else {
        "header stored\n"
    };
    state.headers.entry(header.id).or_insert(header);
    Ok((Taken::Stored, reply.into()))
}

/// A feed now delivers another header than the one served (its encoder restarted with other
/// settings): its copies are not interchangeable with the served ones byte for byte, so the
/// packager keeps the served header's copies while they come, and announces a discontinuity
/// when it has to change.
fn report_new_header(
    origin: &Origin,
    channel: &LiveChannel,
    live: &LiveRendition,
    feed: Feed,
    header: manifest::HeaderId,
    served: manifest::HeaderId,
) {
    let detail = format!(
        "rendition {}: feed {feed} now delivers header {header}, not the served {served}; \
         a switch to it will be announced as a discontinuity",
        live.name
    );
    origin.events.emit(
        &channel.spec.id,
        "packager",
        EventKind::HeaderMismatch,
        detail,
    );
    metrics::counter!("steadycast_init_mismatch_total", "channel" => channel.spec.id.clone(),
        "rendition" => live.name.clone())
    .increment(1);
    tracing::warn!(channel = %channel.spec.id, rendition = %live.name, %feed, %header,
        %served, "a feed's CMAF header differs from the one served");
}

/// Checks a segment, then lists it, holds it for its grace time, or compares it with the
/// copy already listed (see [`SegmentChoice`]).
async fn accept_segment(
    origin: &Arc<Origin>,
    channel: &Arc<LiveChannel>,
    live: &Arc<LiveRendition>,
    upload: Upload,
) -> Reply {
    let Upload {
        feed,
        n,
        body,
        quality,
        epoch,
    } = upload;
    let (header, track) = {
        let state = live.read();
        let header = state.feed_headers.get(&feed).copied();
        let track = header
            .and_then(|h| state.headers.get(&h))
            .map(|h| h.track.clone());
        header.zip(track).ok_or_else(|| {
            OriginError::Conflict(format!("feed {feed}: PUT `{}/init.mp4` first", live.name))
        })?
    };
    let info = inspect_segment(&body).map_err(|e| OriginError::BadRequest(e.to_string()))?;
    check_on_grid(channel, live, &track, &info, n)?;
    let copy = HeldCopy {
        feed,
        quality,
        header,
        body,
        info,
        epoch,
    };
    let mut backlog = live.publish.lock().await;
    let in_memory = live.read().segments.get(&n).cloned();
    let kept = match &in_memory {
        Some(segment) => Some(segment.feed),
        None => kept_feed(origin, &channel.spec.id, &live.name, &backlog, n).await,
    };
    let (held, offered) = {
        let state = live.read();
        let held = state.held.get(&n).map(|h| h.offer(&state, n));
        (held, copy.offer(&state, n))
    };
    match SegmentChoice::offer(kept, held, offered) {
        Offer::AlreadyKept { kept } => {
            if let Some(segment) = in_memory.filter(|s| s.feed != feed) {
                compare(origin, channel, live, n, &segment, &copy.info);
            }
            let why = format!("segment {n} already kept from feed {kept}\n");
            Ok((Taken::Duplicate, why))
        }
        Offer::Keep => {
            let held = live.write().held.remove(&n);
            let published = publish(origin, channel, live, &mut backlog, n, copy).await?;
            if let (Published::Listed(listed), Some(held)) = (&published, held) {
                metrics::counter!("steadycast_segments_better_copy_total",
                    "channel" => channel.spec.id.clone(), "rendition" => live.name.clone())
                .increment(1);
                compare(origin, channel, live, n, listed, &held.info);
            }
            let why = format!("segment {n} stored\n");
            Ok(published_reply(n, &published, (Taken::Stored, why)))
        }
        Offer::KeepHeld => {
            let Some(held) = live.write().held.remove(&n) else {
                return Err(OriginError::Conflict(format!("segment {n}: no copy held")));
            };
            let kept = held.feed;
            let published = publish(origin, channel, live, &mut backlog, n, held).await?;
            if let Published::Listed(listed) = &published {
                compare(origin, channel, live, n, listed, &copy.info);
            }
            let why = format!("segment {n}: feed {kept}'s copy is no worse and was kept\n");
            Ok(published_reply(n, &published, (Taken::Duplicate, why)))
        }
        Offer::Hold => {
            drop(backlog);
            hold(origin, channel, live, n, copy);
            let why = format!("segment {n} held: the other feed's copy may be better\n");
            Ok((Taken::Held, why))
        }
    }
}

/// The feed whose copy of segment `n` is listed, or stored and waiting to be: `None` when
/// there is none, or the catalog cannot say (the listing settles it then: a duplicate is a
/// no-op).
async fn kept_feed(
    origin: &Origin,
    channel: &str,
    rendition: &str,
    backlog: &Backlog,
    n: u64,
) -> Option<Feed> {
    if let Some(feed) = backlog.feed_of(n) {
        return Some(feed);
    }
    if !backlog.is_empty() || origin.catalog_failing() {
        return None;
    }
    let found = origin.catalog.segment(channel, rendition, n).await;
    let found = origin
        .store_write(channel, StorePart::Catalog, found)
        .ok()?;
    found.map(|s| s.feed)
}

fn published_reply(n: u64, published: &Published, listed: (Taken, String)) -> (Taken, String) {
    match published {
        Published::Listed(_) => listed,
        Published::Elsewhere => (
            Taken::Duplicate,
            format!("segment {n}: another packager listed a copy first\n"),
        ),
        Published::Deferred => (
            Taken::Deferred,
            format!("segment {n} stored; it is listed when the catalog answers again\n"),
        ),
    }
}

/// Keeps a flawed copy aside; it is listed when its grace time ends unless a better copy (or
/// one no worse) from the other feed came first.
fn hold(
    origin: &Arc<Origin>,
    channel: &Arc<LiveChannel>,
    live: &Arc<LiveRendition>,
    n: u64,
    copy: HeldCopy,
) {
    let mut state = live.write();
    // A held copy lives for the grace time; far more than a handful means no timer runs.
    while state.held.len() >= MAX_HELD {
        state.held.pop_first();
    }
    state.held.insert(n, copy);
    drop(state);
    let grace = Duration::from_millis(channel.spec.failover.quality_grace_ms.into());
    let (origin, channel, live) = (origin.clone(), channel.clone(), live.clone());
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let mut backlog = live.publish.lock().await;
        let Some(copy) = live.write().held.remove(&n) else {
            return;
        };
        if let Err(e) = publish(&origin, &channel, &live, &mut backlog, n, copy).await {
            tracing::warn!(channel = %channel.spec.id, rendition = %live.name, n, error = %e,
                "held segment could not be listed");
        }
    });
}

const MAX_HELD: usize = 32;

/// A segment must be the header's track, start inside [N·D, (N+1)·D), last about D and, for
/// video, start with a keyframe: anything else would break the timeline players see.
fn check_on_grid(
    channel: &LiveChannel,
    live: &LiveRendition,
    track: &TrackInfo,
    info: &SegmentInfo,
    n: u64,
) -> Result<(), OriginError> {
    let bad = |why: String| {
        Err(OriginError::BadRequest(format!(
            "segment {n} of `{}`: {why}",
            live.name
        )))
    };
    if info.track_id != track.track_id {
        return bad(format!(
            "track {} but the header has track {}",
            info.track_id, track.track_id
        ));
    }
    let at = channel
        .grid
        .segment_of(info.base_decode_time, track.timescale);
    if at != n {
        return bad(format!(
            "its decode time {} lies in segment {at}",
            info.base_decode_time
        ));
    }
    let d = channel.grid.duration_secs() * f64::from(track.timescale);
    let duration = info.duration as f64;
    if duration < d * 0.5 || duration > d * 1.5 {
        return bad(format!(
            "it lasts {duration} ticks; segments last about {d}"
        ));
    }
    if live.is_video && !info.starts_with_sync {
        return bad("it does not start with a keyframe".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(total: usize) -> Body {
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let stream = futures::stream::iter(
            (0..total.div_ceil(1 << 20)).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn an_upload_past_the_cap_is_too_large_declared_or_not() {
        let mut declared = HeaderMap::new();
        declared.insert(
            CONTENT_LENGTH,
            (MAX_UPLOAD + 1).to_string().parse().unwrap(),
        );
        let refused = read_body(&declared, Body::empty()).await;
        assert!(
            matches!(refused, Err(OriginError::TooLarge(_))),
            "{refused:?}"
        );
        // Chunked, with no length: refused once the cap is passed.
        let refused = read_body(&HeaderMap::new(), chunks(MAX_UPLOAD + 1)).await;
        assert!(
            matches!(refused, Err(OriginError::TooLarge(_))),
            "{refused:?}"
        );
        let read = read_body(&HeaderMap::new(), chunks(MAX_UPLOAD)).await;
        assert_eq!(read.map(|b| b.len()).ok(), Some(MAX_UPLOAD));
    }
}
