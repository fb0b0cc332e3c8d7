//! MPEG-TS over TCP: one connection is one session; a second concurrent connection is closed at
//! once while the first keeps publishing. Also home of the TS re-chunking shared by the TCP, UDP
//! and SRT listeners.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{Container, InputId, InputPort, Publisher};

/// Size of one MPEG-TS packet.
pub(crate) const TS_PACKET: usize = 188;
/// The TS sync byte.
pub(crate) const TS_SYNC: u8 = 0x47;
/// The largest chunk handed to [`Publisher::send`].
pub(crate) const MAX_CHUNK: usize = 64 * 1024;
/// The largest chunk of whole TS packets (348 packets).
pub(crate) const MAX_TS_CHUNK: usize = MAX_CHUNK / TS_PACKET * TS_PACKET;
/// A connected publisher that sends nothing for this long has lost its input.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// True if `data` is a non-empty run of whole TS packets, each starting with the sync byte.
pub(crate) fn is_whole_ts(data: &[u8]) -> bool {
    !data.is_empty()
        && data.len().is_multiple_of(TS_PACKET)
        && data.chunks_exact(TS_PACKET).all(|p| p[0] == TS_SYNC)
}

/// Re-chunks a byte stream into runs of whole TS packets (at most [`MAX_TS_CHUNK`] bytes each).
/// Bytes that are not part of a packet in sync are dropped: on a bad sync byte it resyncs on the
/// next 0x47 that is followed by another 0x47 one packet later (when that far is buffered).
/// Holds at most one partial packet between pushes.
#[derive(Default)]
pub(crate) struct TsAligner {
    buf: BytesMut,
    /// Number of times sync was lost (each loss drops at least one byte).
    resyncs: u64,
    dropped_bytes: u64,
}

impl TsAligner {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next chunk of whole packets, if any. Call until `None` after every push.
    pub(crate) fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let mut good = 0;
            while good + TS_PACKET <= self.buf.len()
                && good + TS_PACKET <= MAX_TS_CHUNK
                && self.buf[good] == TS_SYNC
            {
                good += TS_PACKET;
            }
            if good > 0 {
                return Some(self.buf.split_to(good).freeze());
            }
            if self.buf.is_empty() || self.buf[0] == TS_SYNC {
                // A partial packet in sync: wait for the rest.
                return None;
            }
            self.resync();
        }
    }

    /// Drops bytes up to the next plausible packet start.
    fn resync(&mut self) {
        let len = self.buf.len();
        let start = (1..len)
            .find(|&p| {
                self.buf[p] == TS_SYNC
                    && (p + TS_PACKET >= len || self.buf[p + TS_PACKET] == TS_SYNC)
            })
            .unwrap_or(len);
        let _ = self.buf.split_to(start);
        self.resyncs += 1;
        self.dropped_bytes += start as u64;
    }

    /// Sync losses and dropped bytes since the last call.
    pub(crate) fn take_losses(&mut self) -> (u64, u64) {
        let out = (self.resyncs, self.dropped_bytes);
        self.resyncs = 0;
        self.dropped_bytes = 0;
        out
    }
}

/// Counts malformed input (`steadycast_input_malformed_total`) and logs it, at most once every
/// ten seconds per session so a peer sending garbage cannot flood the log.
pub(crate) struct Malformed {
    input: InputId,
    total: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl Malformed {
    pub(crate) fn new(input: InputId) -> Self {
        Self {
            input,
            total: 0,
            since_log: 0,
            last_log: None,
        }
    }

    pub(crate) fn record(&mut self, peer: &str, reason: &str, units: u64) {
        metrics::counter!(
            "steadycast_input_malformed_total",
            "channel" => self.input.channel.clone(),
            "input" => self.input.input.clone()
        )
        .increment(units);
        self.total += units;
        self.since_log += units;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                input = %self.input,
                peer,
                reason,
                dropped = self.since_log,
                total = self.total,
                "malformed input dropped"
            );
            self.last_log = Some(now);
            self.since_log = 0;
        }
    }
}

/// Accepts MPEG-TS publishers on `listener` for `port` until the task is aborted. Aborting it
/// also ends the connection being served.
pub(crate) async fn run(listener: TcpListener, port: Arc<InputPort>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((_, peer)) if !port.admits(peer.ip(), "tcp") => {}
                Ok((stream, peer)) => {
                    let peer = peer.to_string();
                    match port.publish(&peer, Container::MpegTs) {
                        Ok(publisher) => {
                            let input = port.id().clone();
                            sessions.spawn(serve_connection(stream, peer, input, publisher));
                        }
                        Err(busy) => {
                            tracing::warn!(
                                input = %port.id(), peer, reason = %busy,
                                "refusing TCP connection: input busy"
                            );
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(input = %port.id(), error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: String,
    input: InputId,
    mut publisher: Publisher,
) {
    let mut malformed = Malformed::new(input);
    let mut aligner = TsAligner::new();
    let mut buf = vec![0u8; MAX_CHUNK];
    let reason = loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => break format!("no data for {} s", IDLE_TIMEOUT.as_secs()),
            Ok(Ok(0)) => break "connection closed by publisher".to_string(),
            Ok(Err(e)) => break format!("read error: {e}"),
            Ok(Ok(n)) => n,
        };
        aligner.push(&buf[..n]);
        while let Some(chunk) = aligner.next_chunk() {
            publisher.send(chunk);
        }
        let (losses, _) = aligner.take_losses();
        if losses > 0 {
            malformed.record(&peer, "lost MPEG-TS sync", losses);
        }
    };
    publisher.end_because(reason);
}

/// Helpers for the listener tests: real ffmpeg publishers and session collection.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::HashMap;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use metrics::{Key, KeyName, Metadata, SharedString, Unit};

    use bytes::Bytes;
    use tokio::process::{Child, Command};
    use tokio::sync::broadcast;
    use tokio::time::Instant;

    use crate::{Container, InputEvent};

    /// Asserts that `chunk` is whole TS packets.
    pub(crate) fn assert_whole_ts(chunk: &[u8]) {
        assert!(
            super::is_whole_ts(chunk),
            "chunk of {} bytes is not whole TS packets",
            chunk.len()
        );
        assert!(chunk.len() <= super::MAX_TS_CHUNK);
    }

    /// An ffmpeg publishing a 3 s test pattern with a tone (H.264 + AAC) to `output`.
    pub(crate) fn ffmpeg(format: &str, output: &str) -> Child {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostats", "-loglevel", "warning", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=15"])
            .args(["-f", "lavfi", "-i", "sine", "-t", "3"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "15",
                "-c:a",
                "aac",
            ])
            .args(["-f", format, output])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ffmpeg must be installed")
    }

    /// Waits for ffmpeg to exit; returns whether it succeeded and what it logged.
    pub(crate) async fn finish(child: Child, within: Duration) -> (bool, String) {
        let out = tokio::time::timeout(within, child.wait_with_output())
            .await
            .expect("ffmpeg did not exit in time")
            .expect("ffmpeg wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[derive(Debug, Default)]
    pub(crate) struct Session {
        pub(crate) started: Option<(u64, Container)>,
        pub(crate) chunks: Vec<Bytes>,
        pub(crate) ended: Option<String>,
    }

    impl Session {
        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.chunks.concat()
        }
    }

    /// Collects the first session seen on `rx` until it ends or `deadline` passes.
    pub(crate) async fn collect(
        rx: &mut broadcast::Receiver<InputEvent>,
        deadline: Instant,
    ) -> Session {
        collect_more(rx, deadline, Session::default()).await
    }

    /// Like [`collect`], continuing a session already partly seen.
    pub(crate) async fn collect_more(
        rx: &mut broadcast::Receiver<InputEvent>,
        deadline: Instant,
        mut s: Session,
    ) -> Session {
        while let Ok(event) = tokio::time::timeout_at(deadline, rx.recv()).await {
            match event.expect("subscriber lagged or port closed") {
                InputEvent::Started { session, container } => {
                    assert!(
                        s.started.is_none(),
                        "second session started before the first ended"
                    );
                    s.started = Some((session, container));
                }
                InputEvent::Data { session, bytes } => {
                    assert_eq!(Some(session), s.started.map(|x| x.0));
                    assert!(
                        bytes.len() <= super::MAX_CHUNK
                            || s.started.map(|x| x.1) == Some(Container::Flv)
                    );
                    s.chunks.push(bytes);
                }
                InputEvent::Ended { session, reason } => {
                    assert_eq!(Some(session), s.started.map(|x| x.0));
                    s.ended = Some(reason);
                    break;
                }
            }
        }
        s
    }

    /// A process-wide metrics recorder that keeps counters, so tests can read
    /// `steadycast_input_malformed_total` for their own (uniquely named) input.
    pub(crate) fn counter(name: &str, channel: &str, input: &str) -> u64 {
        recorder().get(&format!("{name}{{{channel}/{input}}}"))
    }

    /// Installs the recorder (once); call before the code under test records anything.
    pub(crate) fn install_recorder() {
        let _ = recorder();
    }

    fn recorder() -> &'static TestRecorder {
        static RECORDER: std::sync::OnceLock<&'static TestRecorder> = std::sync::OnceLock::new();
        RECORDER.get_or_init(|| {
            let r: &'static TestRecorder = Box::leak(Box::default());
            let _ = metrics::set_global_recorder(r);
            r
        })
    }

    #[derive(Default)]
    struct TestRecorder {
        counters: Mutex<HashMap<String, Arc<Count>>>,
    }

    #[derive(Default)]
    struct Count(AtomicU64);

    impl metrics::CounterFn for Count {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.fetch_max(value, Ordering::Relaxed);
        }
    }

    impl TestRecorder {
        fn get(&self, key: &str) -> u64 {
            let counters = self.counters.lock().unwrap();
            counters.get(key).map_or(0, |c| c.0.load(Ordering::Relaxed))
        }
    }

    impl metrics::Recorder for &'static TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
            let label = |n: &str| {
                key.labels()
                    .find(|l| l.key() == n)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let name = format!("{}{{{}/{}}}", key.name(), label("channel"), label("input"));
            let mut counters = self.counters.lock().unwrap();
            metrics::Counter::from_arc(counters.entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// The codec names ffprobe finds in `bytes`.
    pub(crate) async fn probe_codecs(bytes: &[u8], ext: &str) -> Vec<String> {
        ffprobe(bytes, ext, "stream=codec_name").await
    }

    /// The duration ffprobe finds in `bytes`, in seconds.
    pub(crate) async fn probe_duration(bytes: &[u8], ext: &str) -> f64 {
        let found = ffprobe(bytes, ext, "format=duration").await;
        found.first().and_then(|d| d.parse().ok()).unwrap_or(0.0)
    }

    /// ffprobe's `entries` of `bytes` (written to a temporary file), one value a line.
    async fn ffprobe(bytes: &[u8], ext: &str, entries: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("capture.{ext}"));
        std::fs::write(&path, bytes).expect("write capture");
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .await
            .expect("ffprobe must be installed");
        assert!(
            out.status.success(),
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    use super::test_support::*;
    use super::*;
    use crate::{InputEvent, InputRegistry, InputSpec};

    fn packets(n: usize, fill: u8) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(TS_SYNC);
            v.extend(std::iter::repeat_n(fill, TS_PACKET - 1));
        }
        v
    }

    #[test]
    fn aligner_rechunks_and_resyncs() {
        let mut a = TsAligner::new();
        let data = packets(400, 1);
        // Pushed in odd pieces: out come whole packets only, in chunks of at most 348.
        let mut out = Vec::new();
        for piece in data.chunks(1000) {
            a.push(piece);
            while let Some(c) = a.next_chunk() {
                assert!(is_whole_ts(&c) && c.len() <= MAX_TS_CHUNK);
                out.extend_from_slice(&c);
            }
        }
        assert_eq!(out, data);
        assert_eq!(a.take_losses(), (0, 0));

        // Garbage, a torn packet, then good packets again.
        let mut a = TsAligner::new();
        let mut data = vec![0xAB; 50];
        data.extend_from_slice(&packets(1, 2)[..100]);
        data.extend_from_slice(&packets(3, 3));
        a.push(&data);
        let mut out = Vec::new();
        while let Some(c) = a.next_chunk() {
            out.extend_from_slice(&c);
        }
        assert_eq!(out, packets(3, 3));
        let (losses, dropped) = a.take_losses();
        assert!(losses >= 1);
        assert_eq!(dropped, 150);
        // Nothing is held back beyond a partial packet.
        a.push(&[0x11; 10_000]);
        assert!(a.next_chunk().is_none());
        assert!(a.buf.len() < TS_PACKET);
    }

    #[test]
    fn whole_ts_check() {
        assert!(is_whole_ts(&packets(7, 0)));
        assert!(!is_whole_ts(&[]));
        assert!(!is_whole_ts(&packets(7, 0)[..1315]));
        let mut bad = packets(7, 0);
        bad[188 * 3] = 0;
        assert!(!is_whole_ts(&bad));
    }

    /// Any byte stream, in pieces of any size: out come only whole packets in bounded chunks,
    /// at most a partial packet is held, and every byte is either passed on, dropped (and
    /// counted) or still held.
    #[test]
    fn fuzz_ts_aligner() {
        fuzzing::Target::new("ts_aligner").run(|data| {
            // Reads of the socket: sizes from the data itself, so they vary with the input.
            let piece = 1 + usize::from(data.first().copied().unwrap_or(0)) * 7;
            let mut a = TsAligner::new();
            let (mut passed, mut dropped) = (0, 0);
            for chunk in data.chunks(piece) {
                a.push(chunk);
                while let Some(c) = a.next_chunk() {
                    assert!(is_whole_ts(&c) && c.len() <= MAX_TS_CHUNK);
                    passed += c.len() as u64;
                }
                assert!(a.buf.len() < TS_PACKET);
                dropped += a.take_losses().1;
            }
            assert_eq!(passed + dropped + a.buf.len() as u64, data.len() as u64);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ffmpeg_over_tcp_and_a_second_connection_is_refused() {
        install_recorder();
        let registry = InputRegistry::new();
        let bind = "127.0.0.1:0".parse().unwrap();
        let port = registry
            .add("tcptest", "a", InputSpec::Tcp { bind })
            .unwrap();
        let addr = registry.local_addr("tcptest", "a").unwrap();
        let mut rx = port.subscribe();
        let child = ffmpeg("mpegts", &format!("tcp://{addr}"));
        let deadline = Instant::now() + Duration::from_secs(40);
        let collecting = async {
            // Wait for the session, then try a second publisher: it is closed at once.
            let first = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(
                first,
                InputEvent::Started {
                    container: Container::MpegTs,
                    ..
                }
            ));
            let mut second = TcpStream::connect(addr).await.unwrap();
            let _ = second.write_all(&packets(7, 9)).await;
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout_at(deadline, second.read(&mut buf))
                .await
                .unwrap();
            assert!(
                matches!(n, Ok(0) | Err(_)),
                "second connection must be closed"
            );
            let started = match first {
                InputEvent::Started { session, container } => Some((session, container)),
                _ => None,
            };
            collect_more(
                &mut rx,
                deadline,
                Session {
                    started,
                    ..Session::default()
                },
            )
            .await
        };
        let (session, (ok, log)) = tokio::join!(collecting, finish(child, Duration::from_secs(40)));
        assert!(ok, "ffmpeg failed: {log}");
        assert!(session.ended.is_some(), "session did not end");
        session.chunks.iter().for_each(|c| assert_whole_ts(c));
        let bytes = session.bytes();
        assert!(bytes.len() > 50 * TS_PACKET);
        let codecs = probe_codecs(&bytes, "ts").await;
        assert!(
            codecs.contains(&"h264".into()) && codecs.contains(&"aac".into()),
            "{codecs:?}"
        );
        assert_eq!(
            counter("steadycast_input_malformed_total", "tcptest", "a"),
            0
        );
        // Free again: a new connection is a new session.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(&packets(2, 1)).await.unwrap();
        let again = collect(&mut rx, Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(again.started.map(|s| s.1), Some(Container::MpegTs));
        assert_eq!(again.bytes(), packets(2, 1));
    }
}
