//! SRT listener: callers publish MPEG-TS with `streamid={channel}/{input}` (or the access-control
//! form `#!::r={channel}/{input},m=publish`), e.g. `srt://HOST:PORT?streamid=demo/a`, plus
//! `&passphrase=…` when the input requires one.
//!
//! The SRT implementation is `srt-tokio` 0.4, which says of itself that it is not production
//! ready. Everything that depends on it is in the [`backend`] module; the decisions (which input,
//! passphrase policy, busy) and the TS re-chunking are independent of it, so a different SRT
//! implementation (e.g. an FFI to libsrt) replaces one module.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::registry::{InputRegistry, Lookup};
use crate::tcp::{IDLE_TIMEOUT, Malformed, TsAligner};
use crate::{Container, InputId, Publisher};

/// Most connections being set up or served at once; more are refused.
const MAX_CONNECTIONS: usize = 128;
/// Time allowed for the handshake after the listener accepted a caller.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves SRT callers on `bind` until `cancel` is cancelled. Fails only if `bind` cannot be
/// bound.
pub async fn serve(
    bind: SocketAddr,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind(bind)?;
    serve_socket(socket, registry, cancel).await
}

/// Like [`serve`] on a socket the caller bound (so "address in use" is seen before spawning,
/// and port 0 works).
pub async fn serve_socket(
    socket: std::net::UdpSocket,
    registry: Arc<InputRegistry>,
    cancel: CancellationToken,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    tracing::info!(addr = %local, "SRT listener started");
    backend::run(socket, local, registry, cancel).await;
    tracing::info!(addr = %local, "SRT listener stopped");
    Ok(())
}

/// Why a caller is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No stream id, or one that names no SRT input.
    UnknownInput,
    /// The stream id asks for something other than publishing.
    BadMode,
    /// The input's passphrase cannot be used (the registry validates it, so this is a bug).
    BadPassphrase,
    /// Another publisher has the input.
    Busy,
    /// Too many connections.
    Overload,
    /// The caller's address is not in the input's allowed networks.
    Source,
}

/// Decodes `%XX` escapes (ffmpeg passes `streamid=%23!::r=…` through undecoded).
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The input a stream id names: `{channel}/{input}` or `#!::r={channel}/{input}[,m=publish]…`.
fn parse_stream_id(sid: &str) -> Result<(&str, &str), Refusal> {
    let resource = if let Some(acl) = sid.strip_prefix("#!::") {
        let mut resource = None;
        for pair in acl.split(',') {
            let (k, v) = pair.split_once('=').ok_or(Refusal::UnknownInput)?;
            match k {
                "r" => resource = Some(v),
                "m" if v != "publish" => return Err(Refusal::BadMode),
                _ => {}
            }
        }
        resource.ok_or(Refusal::UnknownInput)?
    } else {
        sid
    };
    let (channel, input) = resource.split_once('/').ok_or(Refusal::UnknownInput)?;
    if channel.is_empty() || input.is_empty() || input.contains('/') {
        return Err(Refusal::UnknownInput);
    }
    Ok((channel, input))
}

/// Decides whether to accept a caller, before the handshake completes. The passphrase is
/// checked by the SRT handshake itself (a caller cannot be seen to encrypt before that).
fn decide(
    registry: &InputRegistry,
    stream_id: Option<&str>,
    peer: IpAddr,
) -> Result<Lookup, Refusal> {
    let sid = percent_decode(stream_id.ok_or(Refusal::UnknownInput)?);
    let (channel, input) = parse_stream_id(&sid)?;
    let lookup = registry
        .lookup_srt(channel, input)
        .ok_or(Refusal::UnknownInput)?;
    if !lookup.port.admits(peer, "srt") {
        return Err(Refusal::Source);
    }
    if lookup.port.live().is_some() {
        return Err(Refusal::Busy);
    }
    Ok(lookup)
}

/// Publishes what a connected caller sends until it stops, the input is removed or the data is
/// not MPEG-TS at all; returns why the session ended.
async fn pump(
    mut data: impl Stream<Item = io::Result<Bytes>> + Unpin,
    publisher: &Publisher,
    input: &InputId,
    peer: &str,
    removed: &CancellationToken,
) -> String {
    let mut aligner = TsAligner::new();
    let mut malformed = Malformed::new(input.clone());
    loop {
        let next = tokio::select! {
            _ = removed.cancelled() => return "input removed".into(),
            next = tokio::time::timeout(IDLE_TIMEOUT, data.next()) => next,
        };
        let bytes = match next {
            Err(_) => return format!("no data for {} s", IDLE_TIMEOUT.as_secs()),
            Ok(None) => return "caller disconnected".into(),
            Ok(Some(Err(e))) => return format!("SRT error: {e}"),
            Ok(Some(Ok(bytes))) => bytes,
        };
        aligner.push(&bytes);
        while let Some(chunk) = aligner.next_chunk() {
            publisher.send(chunk);
        }
        let (losses, _) = aligner.take_losses();
        if losses > 0 {
            malformed.record(peer, "SRT payload is not aligned MPEG-TS packets", losses);
        }
    }
}

/// Claims the input for an accepted caller and publishes its data.
async fn run_session(
    lookup: Lookup,
    peer: String,
    data: impl Stream<Item = io::Result<Bytes>> + Unpin,
) -> Result<(), Refusal> {
    let input = lookup.port.id().clone();
    let mut publisher = match lookup.port.publish(&peer, Container::MpegTs) {
        Ok(p) => p,
        Err(busy) => {
            tracing::warn!(input = %input, peer, reason = %busy, "SRT caller closed: input busy");
            return Err(Refusal::Busy);
        }
    };
    let reason = pump(data, &publisher, &input, &peer, &lookup.removed).await;
    publisher.end_because(reason);
    Ok(())
}

/// Everything that depends on `srt-tokio`.
mod backend {
    use std::panic::AssertUnwindSafe;

    use futures::FutureExt;
    use srt_protocol::packet::CoreRejectReason;
    use srt_protocol::settings::KeySettings;
    use srt_tokio::access::{RejectReason, ServerRejectReason};
    use srt_tokio::options::Passphrase;
    use srt_tokio::{ConnectionRequest, SrtListener};
    use tokio::task::JoinSet;

    use super::*;

    fn reject_reason(r: Refusal) -> RejectReason {
        match r {
            Refusal::UnknownInput => RejectReason::Server(ServerRejectReason::Notfound),
            Refusal::BadMode => RejectReason::Server(ServerRejectReason::BadMode),
            Refusal::BadPassphrase => RejectReason::Core(CoreRejectReason::BadSecret),
            Refusal::Busy => RejectReason::Server(ServerRejectReason::Conflict),
            Refusal::Overload => RejectReason::Server(ServerRejectReason::Overload),
            Refusal::Source => RejectReason::Server(ServerRejectReason::Forbidden),
        }
    }

    /// Runs the listener until cancelled. `srt-tokio` runs its listener in a task of its own; if
    /// that task dies (it has `unimplemented!()`s reachable by odd handshakes), the incoming
    /// stream ends and the listener is bound again.
    pub(super) async fn run(
        socket: std::net::UdpSocket,
        local: SocketAddr,
        registry: Arc<InputRegistry>,
        cancel: CancellationToken,
    ) {
        let mut socket = Some(socket);
        let mut connections = JoinSet::new();
        while !cancel.is_cancelled() {
            let bound = match socket.take() {
                Some(s) => Ok(s),
                None => std::net::UdpSocket::bind(local).and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(s)
                }),
            }
            .and_then(tokio::net::UdpSocket::from_std);
            let started = match bound {
                Ok(s) => SrtListener::builder().socket(s).bind(local).await,
                Err(e) => Err(e),
            };
            let (mut listener, mut incoming) = match started {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(addr = %local, error = %e, "SRT listener cannot start; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let incoming = incoming.incoming();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    request = incoming.next() => match request {
                        Some(request) => {
                            if connections.len() >= MAX_CONNECTIONS {
                                connections.spawn(refuse(request, Refusal::Overload));
                            } else {
                                connections.spawn(handle(request, registry.clone()));
                            }
                        }
                        None => {
                            tracing::error!(addr = %local, "SRT listener task ended; restarting it");
                            break;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            // Stops srt-tokio's listener task (dropping the listener does not).
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                AssertUnwindSafe(listener.close()).catch_unwind(),
            )
            .await;
            if !cancel.is_cancelled() {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
        connections.shutdown().await;
    }

    async fn refuse(request: ConnectionRequest, refusal: Refusal) {
        let peer = request.remote();
        tracing::warn!(%peer, ?refusal, "SRT caller refused");
        let _ = request.reject(reject_reason(refusal)).await;
    }

    async fn handle(request: ConnectionRequest, registry: Arc<InputRegistry>) {
        let peer = request.remote().to_string();
        let stream_id = request.stream_id().map(|s| s.as_str().to_string());
        // libsrt callers leave the handshake's key size at 0 ("unspecified"); srt-tokio then
        // uses AES-128, libsrt's default. It must be passed back unchanged: srt-protocol hits
        // `unimplemented!` on a mismatch.
        let key_size = request.key_size();
        let lookup = match decide(&registry, stream_id.as_deref(), request.remote().ip()) {
            Ok(l) => l,
            Err(refusal) => {
                let sid: String = stream_id
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(80)
                    .collect();
                let sid = percent_decode(&sid);
                let input = parse_stream_id(&sid).ok().map(|(c, i)| format!("{c}/{i}"));
                tracing::warn!(input, peer, stream_id = %sid, ?refusal, "SRT caller refused");
                let _ = request.reject(reject_reason(refusal)).await;
                return;
            }
        };
        let input = lookup.port.id().clone();
        let keys = match &lookup.passphrase {
            Some(p) => match Passphrase::try_from(p.clone()) {
                Ok(passphrase) => Some(KeySettings {
                    key_size,
                    passphrase,
                }),
                Err(e) => {
                    tracing::warn!(input = %input, peer, error = %e, "SRT input passphrase unusable");
                    let _ = request.reject(reject_reason(Refusal::BadPassphrase)).await;
                    return;
                }
            },
            None => None,
        };
        // A wrong passphrase fails the handshake inside srt-tokio (BadSecret to the caller), and
        // so does a caller that does not encrypt when the input has a passphrase (Unsecure).
        let socket = match tokio::time::timeout(ACCEPT_TIMEOUT, request.accept(keys)).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                tracing::warn!(input = %input, peer, error = %e, "SRT caller refused: handshake failed (wrong passphrase?)");
                return;
            }
            Err(_) => {
                tracing::warn!(input = %input, peer, "SRT caller refused: handshake timed out (wrong passphrase?)");
                return;
            }
        };
        let mut socket = socket;
        let data = (&mut socket).map(|r| r.map(|(_, bytes)| bytes));
        let _ = run_session(lookup, peer, data).await;
        // Tell the caller; do not wait long for a peer that is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), futures::SinkExt::close(&mut socket))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InputSpec;

    #[test]
    fn stream_ids() {
        assert_eq!(parse_stream_id("demo/a"), Ok(("demo", "a")));
        assert_eq!(parse_stream_id("#!::r=demo/a,m=publish"), Ok(("demo", "a")));
        assert_eq!(parse_stream_id("#!::u=joe,r=demo/b"), Ok(("demo", "b")));
        assert_eq!(
            parse_stream_id("#!::r=demo/a,m=request"),
            Err(Refusal::BadMode)
        );
        assert_eq!(parse_stream_id("#!::m=publish"), Err(Refusal::UnknownInput));
        assert_eq!(parse_stream_id("demo"), Err(Refusal::UnknownInput));
        assert_eq!(parse_stream_id("demo/a/b"), Err(Refusal::UnknownInput));
        assert_eq!(parse_stream_id("/a"), Err(Refusal::UnknownInput));
    }

    #[tokio::test]
    async fn decisions() {
        let reg = InputRegistry::new();
        reg.add("demo", "open", InputSpec::Srt { passphrase: None })
            .unwrap();
        reg.add(
            "demo",
            "locked",
            InputSpec::Srt {
                passphrase: Some("0123456789".into()),
            },
        )
        .unwrap();
        reg.add(
            "demo",
            "rtmp",
            InputSpec::Rtmp {
                stream_key: "k".into(),
            },
        )
        .unwrap();
        assert!(decide(&reg, Some("demo/open"), LOCAL).is_ok());
        let locked = decide(&reg, Some("%23!::r=demo/locked,m=publish"), LOCAL)
            .ok()
            .unwrap();
        assert_eq!(locked.passphrase.as_deref(), Some("0123456789"));
        let refusal = |sid| decide(&reg, sid, LOCAL).err();
        assert_eq!(refusal(None), Some(Refusal::UnknownInput));
        assert_eq!(refusal(Some("demo/nope")), Some(Refusal::UnknownInput));
        assert_eq!(refusal(Some("demo/rtmp")), Some(Refusal::UnknownInput));
        let port = reg.port("demo", "open").unwrap();
        let _p = port.publish("someone", Container::MpegTs).unwrap();
        assert_eq!(refusal(Some("demo/open")), Some(Refusal::Busy));
        assert_eq!(percent_decode("%23!::r=a/b%2"), "#!::r=a/b%2");
        // An input with allowed networks: other sources are refused before anything else.
        let only = vec!["192.0.2.0/24".parse().unwrap()];
        reg.add_allowing("demo", "guarded", InputSpec::Srt { passphrase: None }, only)
            .unwrap();
        assert_eq!(refusal(Some("demo/guarded")), Some(Refusal::Source));
        let inside = IpAddr::from([192, 0, 2, 9]);
        assert!(decide(&reg, Some("demo/guarded"), inside).is_ok());
    }

    /// Any stream id a caller sends is decoded and parsed or refused, never a panic; decoding
    /// never lengthens it, and an accepted one names a channel and one input.
    #[test]
    fn fuzz_srt_stream_id() {
        let words = &[
            "#!::", "%23", "r=", "m=", "publish", "u=", ",", "/", "%2F", "%2C", "%",
        ];
        fuzzing::Target::new("srt_stream_id")
            .words(words)
            .run(|data| {
                let raw = String::from_utf8_lossy(data);
                let sid = percent_decode(&raw);
                assert!(sid.len() <= raw.len());
                if let Ok((channel, input)) = parse_stream_id(&sid) {
                    assert!(!channel.is_empty() && !input.is_empty() && !input.contains('/'));
                }
            });
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
}

#[cfg(test)]
mod ffmpeg_tests {
    use tokio::time::Instant;

    use super::*;
    use crate::tcp::test_support::*;
    use crate::{InputEvent, InputPort, InputSpec};

    async fn start() -> (Arc<InputRegistry>, SocketAddr, CancellationToken) {
        let registry = Arc::new(InputRegistry::new());
        registry
            .add("demo", "a", InputSpec::Srt { passphrase: None })
            .unwrap();
        registry
            .add(
                "demo",
                "locked",
                InputSpec::Srt {
                    passphrase: Some("0123456789".into()),
                },
            )
            .unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve_socket(socket, registry.clone(), cancel.clone()));
        (registry, addr, cancel)
    }

    async fn publish_ok(port: &Arc<InputPort>, url: &str) {
        let mut rx = port.subscribe();
        let child = ffmpeg("mpegts", url);
        let deadline = Instant::now() + Duration::from_secs(40);
        let (session, (ok, log)) = tokio::join!(
            collect(&mut rx, deadline),
            finish(child, Duration::from_secs(40))
        );
        assert!(ok, "ffmpeg failed: {log}");
        assert_eq!(
            session.started.map(|s| s.1),
            Some(Container::MpegTs),
            "{log}"
        );
        assert!(session.ended.is_some(), "session did not end");
        session.chunks.iter().for_each(|c| assert_whole_ts(c));
        let bytes = session.bytes();
        assert!(bytes.len() > 50 * 188);
        let codecs = probe_codecs(&bytes, "ts").await;
        assert!(
            codecs.contains(&"h264".into()) && codecs.contains(&"aac".into()),
            "{codecs:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ffmpeg_caller_publishes_mpegts() {
        let (registry, addr, cancel) = start().await;
        let port = registry.port("demo", "a").unwrap();
        publish_ok(&port, &format!("srt://{addr}?streamid=demo/a")).await;
        cancel.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passphrase_is_enforced() {
        let (registry, addr, cancel) = start().await;
        let port = registry.port("demo", "locked").unwrap();
        let mut rx = port.subscribe();
        for url in [
            format!("srt://{addr}?streamid=demo/locked&passphrase=9876543210"),
            format!("srt://{addr}?streamid=demo/locked"),
            format!("srt://{addr}?streamid=demo/nope"),
        ] {
            let (ok, log) = finish(ffmpeg("mpegts", &url), Duration::from_secs(30)).await;
            assert!(!ok, "ffmpeg should be refused for {url}: {log}");
        }
        assert!(rx.try_recv().is_err(), "a refused caller started a session");
        assert!(port.live().is_none());
        publish_ok(
            &port,
            &format!("srt://{addr}?streamid=%23!::r=demo/locked,m=publish&passphrase=0123456789"),
        )
        .await;
        cancel.cancel();
    }

    /// Runs an odd caller (`query` after `streamid=demo/a`) while a session publishes to
    /// another input of the same socket: the caller is refused, and the session never notices
    /// (upstream srt-protocol panicked the listener task on such handshakes, ending every
    /// session on the socket: vendor/srt-protocol/PATCHED.md).
    async fn odd_caller_is_refused_and_others_go_on(query: &str) {
        let (registry, addr, cancel) = start().await;
        let locked = registry.port("demo", "locked").unwrap();
        let mut rx = locked.subscribe();
        let publisher = ffmpeg(
            "mpegts",
            &format!("srt://{addr}?streamid=demo/locked&passphrase=0123456789"),
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut session = Session::default();
        while session.chunks.is_empty() {
            let event = tokio::time::timeout_at(deadline, rx.recv()).await;
            match event.expect("no data from the publisher").unwrap() {
                InputEvent::Started {
                    session: id,
                    container,
                } => {
                    session.started = Some((id, container));
                }
                InputEvent::Data { bytes, .. } => session.chunks.push(bytes),
                InputEvent::Ended { reason, .. } => panic!("ended early: {reason}"),
            }
        }
        let url = format!("srt://{addr}?streamid=demo/a&{query}");
        let (ok, log) = finish(ffmpeg("mpegts", &url), Duration::from_secs(30)).await;
        assert!(!ok, "`{query}` was let in: {log}");
        // Refused, it holds no session of the input (one it briefly had is gone).
        let open = registry.port("demo", "a").unwrap();
        let gone = Instant::now() + Duration::from_secs(5);
        while open.live().is_some() {
            assert!(Instant::now() < gone, "the refused caller holds the input");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (session, (ok, log)) = tokio::join!(
            collect_more(&mut rx, deadline, session),
            finish(publisher, Duration::from_secs(40))
        );
        assert!(ok, "the publisher's session broke: {log}");
        assert_eq!(session.ended.as_deref(), Some("caller disconnected"));
        // All of the publisher's 3 s came through, not what it sent before the refusal.
        let seconds = probe_duration(&session.bytes(), "ts").await;
        assert!(seconds > 2.5, "{seconds} s of the 3 s published");
        cancel.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encrypting_caller_on_an_open_input_is_refused_and_others_go_on() {
        odd_caller_is_refused_and_others_go_on("passphrase=0123456789").await;
    }

    /// A file-transfer caller asks for the `file` congestion control, a handshake extension
    /// srt-protocol did not know.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_mode_caller_is_refused_and_others_go_on() {
        odd_caller_is_refused_and_others_go_on("transtype=file").await;
    }
}
