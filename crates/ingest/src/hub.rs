use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use channel::{EventKind, Events};
use tokio::sync::broadcast;

/// How many chunks a subscriber may fall behind before it is told it lagged. Chunks are at most
/// 64 KiB, so a port holds at most 64 MiB however slow its pipelines are.
const PORT_CAPACITY: usize = 1024;

/// The container a publisher's bytes are in; the pipeline's decoder is told which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    MpegTs,
    Flv,
}

impl Container {
    /// ffmpeg's name for the demuxer.
    pub fn ffmpeg_format(self) -> &'static str {
        match self {
            Container::MpegTs => "mpegts",
            Container::Flv => "flv",
        }
    }
}

/// Two proposed offsets closer than this describe one timeline (arrival jitter, a later lock).
const SAME_TIMELINE_US: u64 = 2_000_000;

/// A channel's input, by name (`a`, `b`, or any name the channel's config gives).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputId {
    pub channel: String,
    pub input: String,
}

impl fmt::Display for InputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.channel, self.input)
    }
}

/// What a subscriber of an input sees. `session` numbers one publisher's connection: a new
/// session restarts the container (a new FLV header, a new TS program).
#[derive(Debug, Clone)]
pub enum InputEvent {
    Started {
        session: u64,
        container: Container,
    },
    /// Whole TS packets or whole FLV tags (the FLV file header comes first), never a torn unit,
    /// so a subscriber that lagged can drop whole chunks and resynchronise.
    Data {
        session: u64,
        bytes: Bytes,
    },
    Ended {
        session: u64,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("input {input} is already being published by {peer}")]
pub struct Busy {
    pub input: InputId,
    pub peer: String,
}

/// One input of one channel: at most one publisher at a time, any number of subscribers.
pub struct InputPort {
    id: InputId,
    events: broadcast::Sender<InputEvent>,
    live: Mutex<Option<LiveSession>>,
    sessions: AtomicU64,
    log: Events,
}

/// The session in progress, for a subscriber that joins (or restarts) in the middle of it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub peer: String,
    pub session: u64,
    pub container: Container,
    /// What a decoder needs before the live bytes: the FLV file header, metadata and codec
    /// sequence headers. Empty for MPEG-TS, which repeats its tables.
    pub prologue: Vec<Bytes>,
    /// The clock-lock offset the session's first encoder chose (see [`InputPort::agree_offset`]).
    pub offset_us: Option<i64>,
}

/// The most prologue a publisher may keep; codec headers are a few hundred bytes.
const MAX_PROLOGUE: usize = 1 << 20;

impl InputPort {
    pub fn new(id: InputId) -> Arc<Self> {
        Self::with_events(id, Events::default())
    }

    /// A port that reports its publishers coming and going to `log`.
    pub fn with_events(id: InputId, log: Events) -> Arc<Self> {
        let (events, _) = broadcast::channel(PORT_CAPACITY);
        Arc::new(Self {
            id,
            events,
            live: Mutex::new(None),
            sessions: AtomicU64::new(0),
            log,
        })
    }

    fn source(&self) -> String {
        format!("input {}", self.id.input)
    }

    pub fn id(&self) -> &InputId {
        &self.id
    }

    pub fn subscribe(&self) -> broadcast::Receiver<InputEvent> {
        self.events.subscribe()
    }

    /// The session in progress, if any. Subscribe first, then ask, so that nothing is missed.
    pub fn live(&self) -> Option<LiveSession> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<LiveSession>> {
        // The guarded value is always consistent, so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset from the session's timestamps to Unix time that every decoder of `session`
    /// uses: the first proposal wins. Decoders sharing one session (both pipelines, or a restart
    /// of one) then stamp the same frames with the same times, so their segments interchange.
    /// A proposal far from the agreed offset means the source's timestamps jumped: it becomes
    /// the new agreement.
    pub fn agree_offset(&self, session: u64, proposed_us: i64) -> i64 {
        match self.slot().as_mut() {
            Some(live) if live.session == session => match live.offset_us {
                Some(agreed) if agreed.abs_diff(proposed_us) < SAME_TIMELINE_US => agreed,
                _ => *live.offset_us.insert(proposed_us),
            },
            _ => proposed_us,
        }
    }

    /// Claims the input for `peer`. A second publisher is refused; the first keeps the input.
    pub fn publish(self: &Arc<Self>, peer: &str, container: Container) -> Result<Publisher, Busy> {
        let mut slot = self.slot();
        if let Some(current) = slot.as_ref() {
            return Err(Busy {
                input: self.id.clone(),
                peer: current.peer.clone(),
            });
        }
        let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some(LiveSession {
            peer: peer.to_string(),
            session,
            container,
            prologue: Vec::new(),
            offset_us: None,
        });
        drop(slot);
        let labels = self.labels();
        metrics::gauge!("steadycast_input_connected", &labels).set(1.0);
        metrics::counter!("steadycast_input_sessions_total", &labels).increment(1);
        tracing::info!(input = %self.id, peer, session, ?container, "input started");
        let detail = format!("{peer} publishing {container:?}, session {session}");
        self.log.emit(
            &self.id.channel,
            &self.source(),
            EventKind::InputStarted,
            detail,
        );
        let _ = self.events.send(InputEvent::Started { session, container });
        Ok(Publisher {
            port: self.clone(),
            session,
            reason: None,
        })
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("channel", self.id.channel.clone()),
            ("input", self.id.input.clone()),
        ]
    }
}

/// The right to publish on an input, held for the duration of one connection. Dropping it ends
/// the session and frees the input for the next publisher.
pub struct Publisher {
    port: Arc<InputPort>,
    session: u64,
    reason: Option<String>,
}

impl Publisher {
    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn send(&self, bytes: Bytes) {
        let labels = self.port.labels();
        metrics::counter!("steadycast_input_bytes_total", &labels).increment(bytes.len() as u64);
        // No subscriber is not an error: the input is live, nobody encodes it right now.
        let _ = self.port.events.send(InputEvent::Data {
            session: self.session,
            bytes,
        });
    }

    /// Sends bytes that a decoder joining later also needs (see [`LiveSession::prologue`]).
    pub fn send_prologue(&self, bytes: Bytes) {
        if let Some(live) = self.port.slot().as_mut() {
            let kept: usize = live.prologue.iter().map(Bytes::len).sum();
            if kept + bytes.len() <= MAX_PROLOGUE {
                live.prologue.push(bytes.clone());
            }
        }
        self.send(bytes);
    }

    /// Records why the session ends (reported when the publisher is dropped).
    pub fn end_because(&mut self, reason: impl Into<String>) {
        self.reason = Some(reason.into());
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let reason = self
            .reason
            .take()
            .unwrap_or_else(|| "publisher left".to_string());
        tracing::info!(input = %self.port.id, session = self.session, %reason, "input ended");
        let detail = format!("session {}: {reason}", self.session);
        self.port.log.emit(
            &self.port.id.channel,
            &self.port.source(),
            EventKind::InputEnded,
            detail,
        );
        metrics::gauge!("steadycast_input_connected", &self.port.labels()).set(0.0);
        let _ = self.port.events.send(InputEvent::Ended {
            session: self.session,
            reason,
        });
        *self.port.slot() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> Arc<InputPort> {
        InputPort::new(InputId {
            channel: "demo".into(),
            input: "a".into(),
        })
    }

    #[tokio::test]
    async fn second_publisher_is_refused_and_first_keeps_publishing() {
        let port = port();
        let mut rx = port.subscribe();
        let first = port.publish("10.0.0.1:5000", Container::Flv).unwrap();
        let busy = port.publish("10.0.0.2:5000", Container::Flv).err().unwrap();
        assert_eq!(busy.peer, "10.0.0.1:5000");
        first.send(Bytes::from_static(b"FLV"));
        assert!(matches!(
            rx.recv().await,
            Ok(InputEvent::Started { session: 1, .. })
        ));
        assert!(matches!(
            rx.recv().await,
            Ok(InputEvent::Data { session: 1, .. })
        ));
        drop(first);
        assert!(matches!(
            rx.recv().await,
            Ok(InputEvent::Ended { session: 1, .. })
        ));
        let second = port.publish("10.0.0.2:5000", Container::Flv).unwrap();
        assert_eq!(second.session(), 2);
        second.send_prologue(Bytes::from_static(b"FLV\x01"));
        second.send(Bytes::from_static(b"tag"));
        let live = port.live().unwrap();
        assert_eq!((live.session, live.peer.as_str()), (2, "10.0.0.2:5000"));
        assert_eq!(live.prologue, [Bytes::from_static(b"FLV\x01")]);
        assert_eq!(port.agree_offset(2, 1_000), 1_000);
        assert_eq!(
            port.agree_offset(2, 2_000),
            1_000,
            "the first proposal wins"
        );
        assert_eq!(
            port.agree_offset(1, 3_000),
            3_000,
            "an old session agrees on nothing"
        );
        assert_eq!(
            port.agree_offset(2, 60_000_000),
            60_000_000,
            "a jump in the source's timestamps makes a new agreement"
        );
        assert_eq!(port.agree_offset(2, 60_500_000), 60_000_000);
        drop(second);
        assert!(port.live().is_none());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_and_never_blocks_the_publisher() {
        let port = port();
        let mut rx = port.subscribe();
        let publisher = port.publish("peer", Container::MpegTs).unwrap();
        for _ in 0..PORT_CAPACITY * 2 {
            publisher.send(Bytes::from_static(&[0x47; 188]));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
