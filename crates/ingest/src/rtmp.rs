//! RTMP push listener: `rtmp://HOST:PORT/live/{stream_key}`.
//!
//! The protocol is `rml_rtmp`'s sans-IO handshake and [`ServerSession`]. Its deserializer trusts
//! its input more than a listener on the internet may (a stray header can underflow a length,
//! a deeply nested AMF0 value recurses without limit), so every byte passes a [`ChunkGuard`]
//! first that checks the chunk framing and bounds message sizes, and the session itself runs
//! under `catch_unwind`: a peer can only ever end its own connection.
//!
//! A publish on a known stream key claims the input with [`Container::Flv`] and publishes the
//! FLV file header, `onMetaData` (if the encoder sends it) as a script tag, and every audio and
//! video message (sequence headers included) as a tag with its RTMP timestamp. Tags are
//! coalesced into chunks of at most 64 KiB; a tag larger than that travels alone in its chunk.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::flv;
use crate::registry::InputRegistry;
use crate::tcp::{IDLE_TIMEOUT, MAX_CHUNK};
use crate::{Container, InputId, Publisher};

/// The only RTMP application accepted.
pub const APP: &str = "live";
/// Connections beyond this many are closed at once.
const MAX_CONNECTIONS: usize = 128;
/// The handshake and the first publish must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest audio/video message of a publishing connection (RTMP's own 24-bit limit).
const MAX_MEDIA_MESSAGE: u32 = 16 * 1024 * 1024 - 1;
/// The largest audio/video message before the publish is accepted.
const MAX_MEDIA_MESSAGE_UNPUBLISHED: u32 = 64 * 1024;
/// The largest command/data/control message.
const MAX_AMF_MESSAGE: u32 = 64 * 1024;
/// The deepest AMF0 nesting accepted (`rml_amf0` decodes recursively; a few thousand levels
/// overflow a 2 MiB worker stack and abort the whole process).
const MAX_AMF_DEPTH: usize = 32;
/// The largest chunk size a peer may announce.
const MAX_CHUNK_SIZE: u32 = 1024 * 1024;

/// Serves RTMP publishers on `listener` until `cancel` is cancelled; then every connection is
/// closed (their sessions end).
pub async fn serve(listener: TcpListener, registry: Arc<InputRegistry>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "RTMP listener started");
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "RTMP connection refused: too many connections");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, registry.clone(), cancel.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    tracing::info!("RTMP listener stopped");
}

/// What the publishing side of a connection holds.
struct Publishing {
    input: InputId,
    publisher: Publisher,
    removed: CancellationToken,
    chunk: BytesMut,
}

impl Publishing {
    /// Appends a tag to the pending chunk, sending the chunk first if the tag would overflow it.
    /// Tags a decoder needs before any other (metadata, codec sequence headers) are sent on
    /// their own as prologue, so a pipeline that joins mid-session still gets them.
    fn push_tag(&mut self, tag_type: u8, timestamp: u32, body: &[u8]) -> Result<(), String> {
        if is_prologue_tag(tag_type, body) {
            self.flush();
            let tag = flv::tag(tag_type, timestamp, body).map_err(|e| e.to_string())?;
            self.publisher.send_prologue(tag);
            return Ok(());
        }
        if !self.chunk.is_empty() && self.chunk.len() + flv::tag_len(body.len()) > MAX_CHUNK {
            self.flush();
        }
        flv::write_tag(&mut self.chunk, tag_type, timestamp, body).map_err(|e| e.to_string())
    }

    fn flush(&mut self) {
        if !self.chunk.is_empty() {
            self.publisher.send(self.chunk.split().freeze());
        }
    }
}

/// Script data, and audio/video sequence headers: AVC/HEVC `AVCPacketType` 0, AAC
/// `AACPacketType` 0, enhanced-RTMP `PacketTypeSequenceStart` (and multichannel config for audio).
fn is_prologue_tag(tag_type: u8, body: &[u8]) -> bool {
    match (tag_type, body) {
        (flv::TAG_SCRIPT, _) => true,
        // Enhanced RTMP: IsExHeader bit set, packet type in the low nibble.
        (flv::TAG_VIDEO, [first, ..]) if first & 0x80 != 0 => first & 0x0F == 0,
        // Legacy AVC (7) and the common HEVC extension (12): AVCPacketType 0.
        (flv::TAG_VIDEO, [first, 0, ..]) => matches!(first & 0x0F, 7 | 12),
        // Enhanced audio (SoundFormat 9): AudioPacketType SequenceStart (0) or
        // MultichannelConfig (4).
        (flv::TAG_AUDIO, [first, ..]) if first >> 4 == 9 => matches!(first & 0x0F, 0 | 4),
        // AAC (10): AACPacketType 0.
        (flv::TAG_AUDIO, [first, 0, ..]) => first >> 4 == 10,
        _ => false,
    }
}

struct Conn {
    stream: TcpStream,
    peer: String,
    registry: Arc<InputRegistry>,
    session: ServerSession,
    guard: ChunkGuard,
    publishing: Option<Publishing>,
    /// Bytes to write to the peer, in order.
    out: Vec<u8>,
    /// Set when the connection must close once `out` is written.
    closing: Option<String>,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
) {
    let peer = peer.to_string();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let remaining = match timeout_at(deadline, handshake(&mut stream)).await {
        Ok(Ok(remaining)) => remaining,
        Ok(Err(reason)) => {
            tracing::warn!(%peer, reason, "RTMP handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "RTMP handshake timed out");
            return;
        }
    };
    let config = ServerSessionConfig::new();
    let (session, initial) = match ServerSession::new(config) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "RTMP session setup failed");
            return;
        }
    };
    let mut conn = Conn {
        stream,
        peer,
        registry,
        session,
        guard: ChunkGuard::new(),
        publishing: None,
        out: Vec::new(),
        closing: None,
    };
    let reason = tokio::select! {
        _ = cancel.cancelled() => "RTMP listener shutting down".to_string(),
        reason = conn.run(initial, remaining) => reason,
    };
    if let Some(mut p) = conn.publishing.take() {
        p.flush();
        p.publisher.end_because(reason.clone());
    }
    tracing::debug!(peer = %conn.peer, reason, "RTMP connection closed");
}

async fn handshake(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        let result = catch_unwind(AssertUnwindSafe(|| handshake.process_bytes(&buf[..n])))
            .map_err(|_| "malformed handshake (decoder panicked)".to_string())?
            .map_err(|e| format!("malformed handshake: {e}"))?;
        match result {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream
                    .write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("write error: {e}"))?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream
                    .write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("write error: {e}"))?;
                return Ok(remaining_bytes);
            }
        }
    }
}

impl Conn {
    /// Runs the connection until it ends; returns why.
    async fn run(&mut self, initial: Vec<ServerSessionResult>, remaining: Vec<u8>) -> String {
        if let Err(reason) = self.handle_results(initial) {
            return reason;
        }
        if let Err(reason) = self.feed(&remaining) {
            self.warn_malformed(&reason);
            return reason;
        }
        let mut buf = vec![0u8; MAX_CHUNK];
        let connected_at = Instant::now();
        loop {
            if let Err(reason) = self.write_out().await {
                return reason;
            }
            if let Some(reason) = self.closing.take() {
                let _ = self.stream.shutdown().await;
                return reason;
            }
            // A connection that never publishes is not kept around.
            let deadline = if self.publishing.is_none() {
                (connected_at + HANDSHAKE_TIMEOUT).max(Instant::now() + Duration::from_millis(1))
            } else {
                Instant::now() + IDLE_TIMEOUT
            };
            let removed = self.publishing.as_ref().map(|p| p.removed.clone());
            let read = tokio::select! {
                _ = async { match &removed { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                    return "input removed".to_string();
                }
                r = timeout_at(deadline, self.stream.read(&mut buf)) => r,
            };
            let n = match read {
                Err(_) if self.publishing.is_none() => return "no publish request in time".into(),
                Err(_) => return format!("no data for {} s", IDLE_TIMEOUT.as_secs()),
                Ok(Ok(0)) => return "connection closed by publisher".into(),
                Ok(Err(e)) => return format!("read error: {e}"),
                Ok(Ok(n)) => n,
            };
            if let Err(reason) = self.feed(&buf[..n]) {
                self.warn_malformed(&reason);
                return reason;
            }
            if let Some(p) = self.publishing.as_mut() {
                p.flush();
            }
        }
    }

    fn warn_malformed(&self, reason: &str) {
        let input = self.publishing.as_ref().map(|p| p.input.to_string());
        tracing::warn!(input, peer = %self.peer, reason, "malformed RTMP input, closing connection");
        if let Some(p) = &self.publishing {
            metrics::counter!(
                "steadycast_input_malformed_total",
                "channel" => p.input.channel.clone(),
                "input" => p.input.input.clone()
            )
            .increment(1);
        }
    }

    /// Checks and decodes `data`, acting on what the session raises.
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        self.guard.feed(data)?;
        let results = catch_unwind(AssertUnwindSafe(|| self.session.handle_input(data)))
            .map_err(|_| "RTMP decoder panicked".to_string())?
            .map_err(|e| format!("RTMP protocol error: {e}"))?;
        self.handle_results(results)
    }

    async fn write_out(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        match timeout(IDLE_TIMEOUT, self.stream.write_all(&out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write error: {e}")),
            Err(_) => Err("peer does not read".into()),
        }
    }

    fn handle_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), String> {
        let mut queue: VecDeque<ServerSessionResult> = results.into();
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes);
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let more = self.handle_event(event)?;
                    // Responses to this event go before anything raised after it.
                    for r in more.into_iter().rev() {
                        queue.push_front(r);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::trace!(peer = %self.peer, type_id = payload.type_id, "RTMP message ignored");
                }
            }
        }
        Ok(())
    }

    fn session_call(
        &mut self,
        f: impl FnOnce(
            &mut ServerSession,
        )
            -> Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
    ) -> Result<Vec<ServerSessionResult>, String> {
        catch_unwind(AssertUnwindSafe(|| f(&mut self.session)))
            .map_err(|_| "RTMP session panicked".to_string())?
            .map_err(|e| format!("RTMP session error: {e}"))
    }

    fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<ServerSessionResult>, String> {
        let (code, description) = (code.to_string(), description.to_string());
        self.closing = Some(description.clone());
        self.session_call(move |s| s.reject_request(request_id, &code, &description))
    }

    fn handle_event(
        &mut self,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, String> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name == APP {
                    self.session_call(|s| s.accept_request(request_id))
                } else {
                    tracing::warn!(peer = %self.peer, app = %truncate(&app_name, 64), "RTMP connect refused: unknown application (use /{APP}/STREAM_KEY)");
                    self.reject(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    )
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => self.publish_requested(request_id, &app_name, &stream_key),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(mut p) = self.publishing.take() {
                    p.flush();
                    p.publisher.end_because("publisher finished the stream");
                    self.guard.set_publishing(false);
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Some(p) = self.publishing.as_mut() {
                    let body = metadata_body(&metadata)?;
                    p.push_tag(flv::TAG_SCRIPT, 0, &body)?;
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                if let Some(p) = self.publishing.as_mut() {
                    p.push_tag(flv::TAG_AUDIO, timestamp.value, &data)?;
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                if let Some(p) = self.publishing.as_mut() {
                    p.push_tag(flv::TAG_VIDEO, timestamp.value, &data)?;
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                tracing::warn!(peer = %self.peer, "RTMP play refused: this listener only accepts publishers");
                self.reject(
                    request_id,
                    "NetStream.Play.Failed",
                    "playback is not offered here",
                )
            }
            _ => Ok(Vec::new()),
        }
    }

    fn publish_requested(
        &mut self,
        request_id: u32,
        app_name: &str,
        stream_key: &str,
    ) -> Result<Vec<ServerSessionResult>, String> {
        if app_name != APP {
            return self.reject(
                request_id,
                "NetStream.Publish.BadName",
                "unknown application",
            );
        }
        if self.publishing.is_some() {
            tracing::warn!(peer = %self.peer, "RTMP publish refused: this connection already publishes");
            return self.reject(
                request_id,
                "NetStream.Publish.BadName",
                "already publishing",
            );
        }
        let Some(lookup) = self.registry.lookup_stream_key(stream_key) else {
            tracing::warn!(peer = %self.peer, key = %redact(stream_key), "RTMP publish refused: wrong stream key");
            return self.reject(request_id, "NetStream.Publish.BadName", "wrong stream key");
        };
        let input = lookup.port.id().clone();
        let publisher = match lookup.port.publish(&self.peer, Container::Flv) {
            Ok(p) => p,
            Err(busy) => {
                tracing::warn!(input = %input, peer = %self.peer, reason = %busy, "RTMP publish refused: input busy");
                return self.reject(request_id, "NetStream.Publish.BadName", "input is busy");
            }
        };
        publisher.send_prologue(flv::file_header(true, true));
        let chunk = BytesMut::with_capacity(MAX_CHUNK);
        self.publishing = Some(Publishing {
            input,
            publisher,
            removed: lookup.removed,
            chunk,
        });
        self.guard.set_publishing(true);
        self.session_call(|s| s.accept_request(request_id))
    }
}

/// The body of an `onMetaData` script tag for what the encoder announced.
fn metadata_body(m: &StreamMetadata) -> Result<Vec<u8>, String> {
    let mut props = HashMap::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            props.insert(k.to_string(), Amf0Value::Number(v));
        }
    };
    num("width", m.video_width.map(f64::from));
    num("height", m.video_height.map(f64::from));
    num("videocodecid", m.video_codec_id.map(f64::from));
    num("videodatarate", m.video_bitrate_kbps.map(f64::from));
    num("framerate", m.video_frame_rate.map(f64::from));
    num("audiocodecid", m.audio_codec_id.map(f64::from));
    num("audiodatarate", m.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", m.audio_sample_rate.map(f64::from));
    num("audiochannels", m.audio_channels.map(f64::from));
    if let Some(stereo) = m.audio_is_stereo {
        props.insert("stereo".to_string(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &m.encoder {
        props.insert(
            "encoder".to_string(),
            Amf0Value::Utf8String(truncate(encoder, 256)),
        );
    }
    let values = vec![
        Amf0Value::Utf8String("onMetaData".to_string()),
        Amf0Value::Object(props),
    ];
    rml_amf0::serialize(&values).map_err(|e| format!("cannot encode onMetaData: {e}"))
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// A stream key for logs: enough to recognise it, not enough to use it.
fn redact(key: &str) -> String {
    let n = key.chars().count();
    if n <= 4 {
        format!("*** ({n} chars)")
    } else {
        format!("{}*** ({n} chars)", key.chars().take(2).collect::<String>())
    }
}

/// Follows the RTMP chunk framing of what a peer sends (without keeping payloads) and refuses
/// what `rml_rtmp` cannot handle safely: oversized messages, chunk sizes out of range, headers
/// that reference unknown chunk streams, a new message header before the previous message on
/// that chunk stream is complete, and chunk streams interleaved mid-message (rml_rtmp assembles
/// one message at a time).
struct ChunkGuard {
    chunk_size: u32,
    publishing: bool,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk stream whose message is partly received, if any.
    in_progress: Option<u32>,
    header: Vec<u8>,
    /// Payload bytes left in the current chunk, once its header is read.
    payload: Option<(u32, u32)>,
    /// The payload so far of the message in progress unless it is audio/video (bounded by
    /// [`MAX_AMF_MESSAGE`]).
    captured: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct ChunkStream {
    length: u32,
    type_id: u8,
    extended_timestamp: bool,
    remaining: u32,
}

impl ChunkGuard {
    fn new() -> Self {
        Self {
            chunk_size: 128,
            publishing: false,
            streams: HashMap::new(),
            in_progress: None,
            header: Vec::with_capacity(18),
            payload: None,
            captured: Vec::new(),
        }
    }

    fn set_publishing(&mut self, publishing: bool) {
        self.publishing = publishing;
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if let Some((csid, left)) = self.payload {
                let take = (left as usize).min(data.len());
                let (chunk, rest) = data.split_at(take);
                data = rest;
                let stream = self.streams.entry(csid).or_default();
                if !is_media(stream.type_id) {
                    self.captured.extend_from_slice(chunk);
                }
                stream.remaining -= take as u32;
                let left = left - take as u32;
                if left > 0 {
                    self.payload = Some((csid, left));
                } else {
                    self.payload = None;
                    self.chunk_done(csid)?;
                }
                continue;
            }
            // Header bytes: take one at a time until the header is complete (headers are tiny).
            self.header.push(data[0]);
            data = &data[1..];
            self.try_header()?;
        }
        Ok(())
    }

    fn try_header(&mut self) -> Result<(), String> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let basic = match h[0] & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let message_header = [11, 7, 3, 0][fmt as usize];
        if h.len() < basic + message_header {
            return Ok(());
        }
        let csid = match basic {
            2 => u32::from(h[1]) + 64,
            3 => u32::from(h[2]) * 256 + u32::from(h[1]) + 64,
            _ => u32::from(h[0] & 0x3F),
        };
        let previous = self.streams.get(&csid).copied();
        if fmt != 0 && previous.is_none() {
            return Err(format!("chunk on unknown chunk stream {csid}"));
        }
        let mh = &h[basic..basic + message_header];
        let extended = if fmt < 3 {
            u24(&mh[0..3]) == 0x00FF_FFFF
        } else {
            previous.is_some_and(|p| p.extended_timestamp)
        };
        if h.len() < basic + message_header + if extended { 4 } else { 0 } {
            return Ok(());
        }
        let mut stream = previous.unwrap_or_default();
        if fmt <= 1 {
            if stream.remaining != 0 {
                return Err(format!(
                    "new message on chunk stream {csid} before the previous one was complete"
                ));
            }
            stream.length = u24(&mh[3..6]);
            stream.type_id = mh[6];
        }
        if fmt < 3 {
            stream.extended_timestamp = extended;
        }
        if stream.remaining == 0 {
            // The first chunk of a message.
            if let Some(other) = self.in_progress
                && other != csid
            {
                return Err(format!(
                    "chunk stream {csid} interleaved with the incomplete message on {other}"
                ));
            }
            let limit = match stream.type_id {
                8 | 9 if self.publishing => MAX_MEDIA_MESSAGE,
                8 | 9 => MAX_MEDIA_MESSAGE_UNPUBLISHED,
                22 => MAX_MEDIA_MESSAGE,
                _ => MAX_AMF_MESSAGE,
            };
            if stream.length > limit {
                return Err(format!(
                    "message of type {} and {} bytes exceeds the {limit}-byte limit",
                    stream.type_id, stream.length
                ));
            }
            stream.remaining = stream.length;
            self.captured.clear();
        } else if self.in_progress != Some(csid) {
            return Err(format!(
                "chunk stream {csid} interleaved with the incomplete message on {:?}",
                self.in_progress
            ));
        }
        let left = stream.remaining.min(self.chunk_size);
        self.streams.insert(csid, stream);
        self.header.clear();
        if left == 0 {
            self.chunk_done(csid)
        } else {
            self.payload = Some((csid, left));
            self.in_progress = Some(csid);
            Ok(())
        }
    }

    fn chunk_done(&mut self, csid: u32) -> Result<(), String> {
        let Some(stream) = self.streams.get(&csid).copied() else {
            return Ok(());
        };
        if stream.remaining > 0 {
            self.in_progress = Some(csid);
            return Ok(());
        }
        self.in_progress = None;
        let captured = std::mem::take(&mut self.captured);
        let word = captured
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (stream.type_id, word) {
            (1, Some(value)) => {
                let size = value & 0x7FFF_FFFF;
                if !(1..=MAX_CHUNK_SIZE).contains(&size) {
                    return Err(format!("chunk size {size} out of range"));
                }
                self.chunk_size = size;
            }
            (1, None) => return Err("short set-chunk-size message".into()),
            (2, Some(value)) => {
                // Abort: the peer drops the partial message on that chunk stream.
                if let Some(s) = self.streams.get_mut(&value) {
                    s.remaining = 0;
                }
            }
            // AMF3 command/data: a format byte, then AMF0.
            (15 | 17, _) => check_amf0_depth(captured.get(1..).unwrap_or_default())?,
            (16 | 18 | 19 | 20, _) => check_amf0_depth(&captured)?,
            _ => {}
        }
        self.captured = captured;
        self.captured.clear();
        Ok(())
    }
}

fn is_media(type_id: u8) -> bool {
    matches!(type_id, 8 | 9 | 22)
}

/// Refuses AMF0 nested deeper than [`MAX_AMF_DEPTH`], following `rml_amf0`'s grammar without
/// recursion. Where the grammar stops making sense the scan stops: `rml_amf0` fails there too,
/// no deeper than the scan got.
fn check_amf0_depth(data: &[u8]) -> Result<(), String> {
    enum Frame {
        Object,
        Array(u32),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let s = data.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(s)
    };
    loop {
        // What comes next: a property of an object, an element of an array, or a top value.
        match stack.last_mut() {
            Some(Frame::Object) => {
                let Some(len) = take(&mut pos, 2) else {
                    return Ok(());
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len == 0 {
                    // Object end: 00 00 09.
                    if take(&mut pos, 1) != Some(&[9]) {
                        return Ok(());
                    }
                    stack.pop();
                    continue;
                }
                if take(&mut pos, len).is_none() {
                    return Ok(());
                }
            }
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(n)) => *n -= 1,
            None => {}
        }
        let Some(&[marker]) = take(&mut pos, 1) else {
            return Ok(());
        };
        match marker {
            0 => {
                if take(&mut pos, 8).is_none() {
                    return Ok(());
                }
            }
            1 => {
                if take(&mut pos, 1).is_none() {
                    return Ok(());
                }
            }
            2 => {
                let Some(len) = take(&mut pos, 2) else {
                    return Ok(());
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if take(&mut pos, len).is_none() {
                    return Ok(());
                }
            }
            5 | 6 => {}
            3 => stack.push(Frame::Object),
            8 => {
                if take(&mut pos, 4).is_none() {
                    return Ok(());
                }
                stack.push(Frame::Object);
            }
            10 => {
                let Some(n) = take(&mut pos, 4) else {
                    return Ok(());
                };
                stack.push(Frame::Array(u32::from_be_bytes([n[0], n[1], n[2], n[3]])));
            }
            // An end marker as a value ends an array early (or the top level); elsewhere, and
            // any other marker, rml_amf0 stops with an error.
            9 => match stack.last() {
                Some(Frame::Array(_)) => {
                    stack.pop();
                }
                None => return Ok(()),
                Some(Frame::Object) => return Ok(()),
            },
            _ => return Ok(()),
        }
        if stack.len() > MAX_AMF_DEPTH {
            return Err(format!(
                "AMF0 value nested deeper than {MAX_AMF_DEPTH} levels"
            ));
        }
    }
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn payload(type_id: u8, stream_id: u32, ts: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            message_stream_id: stream_id,
            type_id,
            data: data.into(),
        }
    }

    #[test]
    fn guard_follows_what_rml_rtmp_serializes() {
        let mut ser = ChunkSerializer::new();
        let mut bytes = Vec::new();
        // Starts at 128-byte chunks, switches to 4096, with extended timestamps.
        bytes.extend(
            ser.serialize(&payload(9, 1, 10, vec![7; 60_000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.set_max_chunk_size(4096, RtmpTimestamp::new(0))
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(9, 1, 40, vec![7; 100_000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(8, 1, 0x0100_0000, vec![1; 300]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(8, 1, 0x0100_0020, vec![1; 5000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(20, 0, 0, vec![2; 100]), false, false)
                .unwrap()
                .bytes,
        );
        let mut guard = ChunkGuard::new();
        guard.set_publishing(true);
        // Byte by byte and all at once.
        for b in &bytes {
            guard.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(guard.chunk_size, 4096);
        let mut guard = ChunkGuard::new();
        guard.set_publishing(true);
        guard.feed(&bytes).unwrap();
        assert!(guard.payload.is_none() && guard.in_progress.is_none());
    }

    #[test]
    fn guard_refuses_oversize_and_nonsense() {
        let mut ser = ChunkSerializer::new();
        let big_amf = ser
            .serialize(&payload(20, 0, 0, vec![2; 70_000]), false, false)
            .unwrap()
            .bytes;
        assert!(ChunkGuard::new().feed(&big_amf).is_err());
        let media = ser
            .serialize(&payload(9, 1, 0, vec![2; 100_000]), false, false)
            .unwrap()
            .bytes;
        assert!(
            ChunkGuard::new().feed(&media).is_err(),
            "large media before publish"
        );
        // A continuation header on a chunk stream never seen.
        assert!(ChunkGuard::new().feed(&[0xC5, 1, 2, 3]).is_err());
        // Chunk size zero.
        let zero = [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(ChunkGuard::new().feed(&zero).is_err());
        // A second full header on csid 4 before its 300-byte message is complete.
        let mut g = ChunkGuard::new();
        let first = [0x04, 0, 0, 0, 0, 0x01, 0x2C, 8, 1, 0, 0, 0];
        g.feed(&first).unwrap();
        g.feed(&[0; 128]).unwrap();
        assert!(g.feed(&first).is_err());
    }

    fn deep_object(levels: usize) -> Vec<u8> {
        // Object marker, then property "a" -> object ... (4 bytes a level).
        [0x03, 0x00, 0x01, b'a'].repeat(levels)
    }

    fn deep_array(levels: usize) -> Vec<u8> {
        [0x0A, 0, 0, 0, 1].repeat(levels)
    }

    /// What the guard lets through decodes on a 2 MiB stack (a tokio worker's default); what
    /// would overflow it (and abort the process) is refused.
    #[test]
    fn amf_nesting_is_bounded() {
        for bytes in [deep_object(MAX_AMF_DEPTH), deep_array(MAX_AMF_DEPTH)] {
            check_amf0_depth(&bytes).unwrap();
            let handle = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    let _ = rml_amf0::deserialize(&mut std::io::Cursor::new(bytes));
                })
                .unwrap();
            handle.join().unwrap();
        }
        assert!(check_amf0_depth(&deep_object(MAX_AMF_DEPTH + 1)).is_err());
        assert!(check_amf0_depth(&deep_array(MAX_AMF_DEPTH + 1)).is_err());
        // Wide is fine: an onMetaData-like object and a connect command.
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(
                (0..200)
                    .map(|i| (format!("k{i}"), Amf0Value::Number(f64::from(i))))
                    .collect(),
            ),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(true)]),
        ];
        check_amf0_depth(&rml_amf0::serialize(&values).unwrap()).unwrap();

        // Through the guard, as a command message of 16 KiB.
        let mut ser = ChunkSerializer::new();
        let deep = ser
            .serialize(&payload(20, 0, 0, deep_object(4000)), false, false)
            .unwrap()
            .bytes;
        let err = ChunkGuard::new().feed(&deep).unwrap_err();
        assert!(err.contains("nested"), "{err}");
    }

    #[test]
    fn redaction_hides_most_of_the_key() {
        assert_eq!(redact("supersecret"), "su*** (11 chars)");
        assert_eq!(redact("abc"), "*** (3 chars)");
    }

    #[test]
    fn metadata_becomes_an_on_metadata_script_body() {
        let mut m = StreamMetadata::new();
        m.video_width = Some(160);
        m.encoder = Some("Lavf".into());
        let body = metadata_body(&m).unwrap();
        let values = rml_amf0::deserialize(&mut std::io::Cursor::new(body)).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
        let Amf0Value::Object(props) = &values[1] else {
            panic!("not an object")
        };
        assert_eq!(props.get("width"), Some(&Amf0Value::Number(160.0)));
    }
}

#[cfg(test)]
mod ffmpeg_tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::InputSpec;
    use crate::tcp::test_support::{collect, ffmpeg, finish, probe_codecs};

    async fn start(
        key: &str,
    ) -> (
        Arc<InputRegistry>,
        Arc<crate::InputPort>,
        SocketAddr,
        CancellationToken,
    ) {
        let registry = Arc::new(InputRegistry::new());
        let port = registry
            .add(
                "demo",
                "a",
                InputSpec::Rtmp {
                    stream_key: key.into(),
                },
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, registry.clone(), cancel.clone()));
        (registry, port, addr, cancel)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ffmpeg_publish_becomes_a_valid_flv_session() {
        let (_registry, port, addr, cancel) = start("s3cret-key").await;
        let mut rx = port.subscribe();
        let child = ffmpeg("flv", &format!("rtmp://{addr}/live/s3cret-key"));
        let deadline = Instant::now() + Duration::from_secs(40);
        let (session, (ok, log)) = tokio::join!(
            collect(&mut rx, deadline),
            finish(child, Duration::from_secs(40))
        );
        assert!(ok, "ffmpeg failed: {log}");
        assert_eq!(session.started.map(|s| s.1), Some(Container::Flv));
        assert!(session.ended.is_some(), "session did not end");
        // Every chunk is whole tags: the first is the file header, the others parse on their own.
        assert_eq!(&session.chunks[0][..3], b"FLV");
        for chunk in &session.chunks[1..] {
            let mut framed = flv::file_header(true, true).to_vec();
            framed.extend_from_slice(chunk);
            let n: usize = flv::tags(&framed).map(|t| flv::tag_len(t.body.len())).sum();
            assert_eq!(n, chunk.len(), "chunk is not whole tags");
        }
        let bytes = session.bytes();
        let tags: Vec<_> = flv::tags(&bytes).collect();
        assert!(
            tags.iter().any(|t| t.tag_type == flv::TAG_SCRIPT),
            "no onMetaData"
        );
        let avc_header = tags
            .iter()
            .position(|t| t.tag_type == flv::TAG_VIDEO && t.body.starts_with(&[0x17, 0]));
        let aac_header = tags.iter().position(|t| {
            t.tag_type == flv::TAG_AUDIO
                && t.body.len() > 1
                && t.body[0] >> 4 == 10
                && t.body[1] == 0
        });
        let first_video = tags.iter().position(|t| t.tag_type == flv::TAG_VIDEO);
        let first_audio = tags.iter().position(|t| t.tag_type == flv::TAG_AUDIO);
        assert!(
            avc_header.is_some() && avc_header == first_video,
            "AVC sequence header first"
        );
        assert!(
            aac_header.is_some() && aac_header == first_audio,
            "AAC sequence header first"
        );
        let video = tags.iter().filter(|t| t.tag_type == flv::TAG_VIDEO).count();
        let audio = tags.iter().filter(|t| t.tag_type == flv::TAG_AUDIO).count();
        assert!(video >= 30 && audio >= 30, "video {video} audio {audio}");
        assert!(flv::first_timestamp(&bytes).is_some());
        let codecs = probe_codecs(&bytes, "flv").await;
        assert!(codecs.contains(&"h264".to_string()), "{codecs:?}");
        assert!(codecs.contains(&"aac".to_string()), "{codecs:?}");
        // The port is free again for the next publisher.
        assert!(port.live().is_none());
        cancel.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_key_is_refused_and_starts_no_session() {
        let (_registry, port, addr, cancel) = start("right-key").await;
        let mut rx = port.subscribe();
        let child = ffmpeg("flv", &format!("rtmp://{addr}/live/wrong-key"));
        let (ok, log) = finish(child, Duration::from_secs(30)).await;
        assert!(!ok, "ffmpeg should fail on a wrong key: {log}");
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
        assert!(port.live().is_none());

        // Wrong application too.
        let child = ffmpeg("flv", &format!("rtmp://{addr}/other/right-key"));
        let (ok, log) = finish(child, Duration::from_secs(30)).await;
        assert!(!ok, "ffmpeg should fail on a wrong app: {log}");
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
        cancel.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_publisher_is_refused_while_the_first_keeps_going() {
        let (_registry, port, addr, cancel) = start("busy-key").await;
        let mut rx = port.subscribe();
        let url = format!("rtmp://{addr}/live/busy-key");
        let first = ffmpeg("flv", &url);
        let deadline = Instant::now() + Duration::from_secs(40);
        let collecting = async {
            let event = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap()
                .unwrap();
            let crate::InputEvent::Started { session, container } = event else {
                panic!("expected Started, got {event:?}")
            };
            let (ok, log) = finish(ffmpeg("flv", &url), Duration::from_secs(30)).await;
            assert!(!ok, "second publisher should be refused: {log}");
            assert!(log.contains("busy"), "{log}");
            let started = Some((session, container));
            let seen = crate::tcp::test_support::Session {
                started,
                ..Default::default()
            };
            crate::tcp::test_support::collect_more(&mut rx, deadline, seen).await
        };
        let (session, (ok, log)) = tokio::join!(collecting, finish(first, Duration::from_secs(40)));
        assert!(ok, "first publisher failed: {log}");
        assert!(session.ended.is_some());
        let codecs = probe_codecs(&session.bytes(), "flv").await;
        assert!(codecs.contains(&"h264".to_string()), "{codecs:?}");
        cancel.cancel();
    }
}
