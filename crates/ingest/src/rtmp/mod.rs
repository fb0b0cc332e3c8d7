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

mod guard;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::guard::ChunkGuard;
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

/// A connection's bytes: a TCP stream, or TLS over one (RTMPS).
trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

/// Serves RTMP publishers on `listener` until `cancel` is cancelled; then every connection is
/// closed (their sessions end).
pub async fn serve(listener: TcpListener, registry: Arc<InputRegistry>, cancel: CancellationToken) {
    serve_with(listener, registry, cancel, None).await
}

/// [`serve`] for RTMPS: each connection is TLS (with the certificate `tls` holds), then RTMP
/// with the same stream keys.
pub async fn serve_tls(
    listener: TcpListener,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
    tls: TlsAcceptor,
) {
    serve_with(listener, registry, cancel, Some(tls)).await
}

async fn serve_with(
    listener: TcpListener,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
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
                    let (registry, cancel, tls) = (registry.clone(), cancel.clone(), tls.clone());
                    connections.spawn(connection(stream, peer, registry, cancel, tls));
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
    stream: Box<dyn Link>,
    peer: String,
    peer_ip: IpAddr,
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
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let peer_ip = peer.ip();
    let peer = peer.to_string();
    // The TLS handshake and the RTMP one share the handshake's time.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut stream: Box<dyn Link> = match tls {
        None => Box::new(stream),
        Some(tls) => match timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "RTMPS TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "RTMPS TLS handshake timed out");
                return;
            }
        },
    };
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
        peer_ip,
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

async fn handshake(stream: &mut Box<dyn Link>) -> Result<Vec<u8>, String> {
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
        if !lookup.port.admits(self.peer_ip, "rtmp") {
            return self.reject(
                request_id,
                "NetStream.Publish.BadName",
                "source not allowed",
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
mod ffmpeg_tests;
