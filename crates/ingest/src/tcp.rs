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
        && data.len() % TS_PACKET == 0
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
            .find(|&p| self.buf[p] == TS_SYNC && (p + TS_PACKET >= len || self.buf[p + TS_PACKET] == TS_SYNC))
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
        Self { input, total: 0, since_log: 0, last_log: None }
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
        if self.last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
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
