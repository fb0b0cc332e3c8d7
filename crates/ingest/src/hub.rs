use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::Cidr;
use bytes::Bytes;
use channel::{EventKind, Events};
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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
    /// The source networks that may publish here; empty: any.
    allowed: Vec<Cidr>,
    /// Sources refused so far, to log the first of a flood and then fewer.
    refused: AtomicU64,
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
    /// Set when the session is relayed from another node's input (a cluster's input relay).
    pub relayed: Option<Relayed>,
}

/// Where a relayed session's clock-lock offset is agreed: on the node the publisher is
/// connected to, so pipelines on any node stamp the same frames with the same times.
pub trait OffsetAgreement: Send + Sync {
    /// The agreed offset for `proposed_us`, or `None` when the other node cannot be asked.
    fn agree(&self, proposed_us: i64) -> BoxFuture<'_, Option<i64>>;
}

/// How long a decoder waits for a relayed session's agreement before agreeing locally.
const REMOTE_AGREEMENT: Duration = Duration::from_secs(1);

/// A relayed session's ties to its origin: where to agree offsets, and the token cancelled
/// when a local publisher takes the input over.
#[derive(Clone)]
pub struct Relayed {
    agreement: Arc<dyn OffsetAgreement>,
    preempted: CancellationToken,
}

impl fmt::Debug for Relayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Relayed")
    }
}

/// The most prologue a publisher may keep; codec headers are a few hundred bytes.
const MAX_PROLOGUE: usize = 1 << 20;

impl InputPort {
    pub fn new(id: InputId) -> Arc<Self> {
        Self::with_events(id, Events::default())
    }

    /// A port that reports its publishers coming and going to `log`.
    pub fn with_events(id: InputId, log: Events) -> Arc<Self> {
        Self::allowing(id, log, Vec::new())
    }

    /// A port only sources in `allowed` may publish to (any, when empty).
    pub fn allowing(id: InputId, log: Events, allowed: Vec<Cidr>) -> Arc<Self> {
        let (events, _) = broadcast::channel(PORT_CAPACITY);
        Arc::new(Self {
            id,
            events,
            live: Mutex::new(None),
            sessions: AtomicU64::new(0),
            log,
            allowed,
            refused: AtomicU64::new(0),
        })
    }

    /// Whether `peer` may publish here. Listeners ask before they read anything of a session
    /// (RTMP at its publish command, SRT at its handshake, TCP at accept, UDP per datagram);
    /// a refusal is counted, and logged for the 1st, 2nd, 4th, 8th… of them.
    pub fn admits(&self, peer: IpAddr, protocol: &'static str) -> bool {
        if access::cidr::allowed(&self.allowed, peer) {
            return true;
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if refused.is_power_of_two() {
            tracing::warn!(input = %self.id, %peer, protocol, refused,
                "source refused: not in the input's allowed networks");
        }
        metrics::counter!("steadycast_input_sources_refused_total",
            "channel" => self.id.channel.clone(), "input" => self.id.input.clone())
        .increment(1);
        false
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
    ///
    /// A relayed session agrees on the publisher's node, where pipelines of other nodes agree
    /// too; if that node cannot be asked within a second, the agreement is this node's.
    pub async fn agree_offset(&self, session: u64, proposed_us: i64) -> i64 {
        let relayed = match self.slot().as_ref() {
            Some(live) if live.session == session => live.relayed.clone(),
            _ => None,
        };
        if let Some(relayed) = relayed {
            let remote = relayed.agreement.agree(proposed_us);
            if let Ok(Some(agreed)) = tokio::time::timeout(REMOTE_AGREEMENT, remote).await {
                return self.agree_local(session, agreed);
            }
        }
        self.agree_local(session, proposed_us)
    }

    /// [`Self::agree_offset`] on this node alone: what the relay answers other nodes with.
    pub fn agree_local(&self, session: u64, proposed_us: i64) -> i64 {
        match self.slot().as_mut() {
            Some(live) if live.session == session => match live.offset_us {
                Some(agreed) if agreed.abs_diff(proposed_us) < SAME_TIMELINE_US => agreed,
                _ => *live.offset_us.insert(proposed_us),
            },
            _ => proposed_us,
        }
    }

    /// Claims the input for `peer`. A second publisher is refused; the first keeps the input.
    /// A session relayed from another node gives way: a publisher here is nearer the source.
    pub fn publish(self: &Arc<Self>, peer: &str, container: Container) -> Result<Publisher, Busy> {
        let mut slot = self.slot();
        if let Some(current) = slot.as_ref() {
            let Some(relayed) = &current.relayed else {
                return Err(Busy {
                    input: self.id.clone(),
                    peer: current.peer.clone(),
                });
            };
            relayed.preempted.cancel();
            let session = current.session;
            *slot = None;
            self.ended(
                session,
                "a publisher connected to this node took the input over",
            );
        }
        Ok(self.start(slot, peer, container, None))
    }

    /// Claims the input for a session relayed from another node, which `agreement` reaches.
    /// The returned token is cancelled when a publisher here takes the input over.
    pub fn publish_relayed(
        self: &Arc<Self>,
        peer: &str,
        container: Container,
        agreement: Arc<dyn OffsetAgreement>,
    ) -> Result<(Publisher, CancellationToken), Busy> {
        let slot = self.slot();
        if let Some(current) = slot.as_ref() {
            return Err(Busy {
                input: self.id.clone(),
                peer: current.peer.clone(),
            });
        }
        let preempted = CancellationToken::new();
        let relayed = Relayed {
            agreement,
            preempted: preempted.clone(),
        };
        Ok((self.start(slot, peer, container, Some(relayed)), preempted))
    }

    /// How many decoders (or relays) read this input now.
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    fn start(
        self: &Arc<Self>,
        mut slot: std::sync::MutexGuard<'_, Option<LiveSession>>,
        peer: &str,
        container: Container,
        relayed: Option<Relayed>,
    ) -> Publisher {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let preempted = relayed.as_ref().map(|r| r.preempted.clone());
        *slot = Some(LiveSession {
            peer: peer.to_string(),
            session,
            container,
            prologue: Vec::new(),
            offset_us: None,
            relayed,
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
        Publisher {
            port: self.clone(),
            session,
            reason: None,
            preempted,
        }
    }

    /// Reports the end of `session`, whose slot is already cleared.
    fn ended(&self, session: u64, reason: &str) {
        tracing::info!(input = %self.id, session, %reason, "input ended");
        let detail = format!("session {session}: {reason}");
        self.log.emit(
            &self.id.channel,
            &self.source(),
            EventKind::InputEnded,
            detail,
        );
        metrics::gauge!("steadycast_input_connected", &self.labels()).set(0.0);
        let _ = self.events.send(InputEvent::Ended {
            session,
            reason: reason.to_string(),
        });
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
    /// A relayed session's: cancelled when a publisher here takes the input over.
    preempted: Option<CancellationToken>,
}

impl Publisher {
    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn send(&self, bytes: Bytes) {
        // Only a relayed session is ever taken over; a local one sends without a lock.
        if self
            .preempted
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return;
        }
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
        if let Some(live) = self
            .port
            .slot()
            .as_mut()
            .filter(|l| l.session == self.session)
        {
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
        let mut slot = self.port.slot();
        // A preempted relay's session has already ended.
        if slot.as_ref().is_none_or(|l| l.session != self.session) {
            return;
        }
        *slot = None;
        drop(slot);
        let reason = self.reason.take();
        self.port
            .ended(self.session, reason.as_deref().unwrap_or("publisher left"));
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
        assert_eq!(port.agree_local(2, 1_000), 1_000);
        assert_eq!(port.agree_local(2, 2_000), 1_000, "the first proposal wins");
        assert_eq!(
            port.agree_local(1, 3_000),
            3_000,
            "an old session agrees on nothing"
        );
        assert_eq!(
            port.agree_local(2, 60_000_000),
            60_000_000,
            "a jump in the source's timestamps makes a new agreement"
        );
        assert_eq!(port.agree_local(2, 60_500_000), 60_000_000);
        drop(second);
        assert!(port.live().is_none());
    }

    /// Agrees on whatever it is asked, plus one: shows the answer came from here.
    struct Remote;

    impl OffsetAgreement for Remote {
        fn agree(&self, proposed_us: i64) -> BoxFuture<'_, Option<i64>> {
            Box::pin(async move { Some(proposed_us + 1) })
        }
    }

    #[tokio::test]
    async fn a_relayed_session_agrees_remotely_and_gives_way_to_a_local_publisher() {
        let port = port();
        let mut rx = port.subscribe();
        let (relay, preempted) = port
            .publish_relayed("10.0.0.9 via node-2", Container::Flv, Arc::new(Remote))
            .unwrap();
        assert!(
            port.publish_relayed("again", Container::Flv, Arc::new(Remote))
                .is_err(),
            "one relay at a time"
        );
        assert_eq!(port.agree_offset(1, 5_000).await, 5_001);
        assert_eq!(
            port.agree_offset(1, 5_100).await,
            5_001,
            "the remote answer is the local agreement too"
        );
        relay.send(Bytes::from_static(b"relayed"));
        let local = port.publish("10.0.0.1:5000", Container::Flv).unwrap();
        assert!(preempted.is_cancelled());
        relay.send(Bytes::from_static(b"late"));
        local.send(Bytes::from_static(b"local"));
        drop(relay);
        let mut seen = Vec::new();
        while let Ok(event) = rx.try_recv() {
            seen.push(match event {
                InputEvent::Started { session, .. } => format!("start {session}"),
                InputEvent::Data { session, bytes } => {
                    format!("{session}:{}", String::from_utf8_lossy(&bytes))
                }
                InputEvent::Ended { session, .. } => format!("end {session}"),
            });
        }
        assert_eq!(
            seen,
            ["start 1", "1:relayed", "end 1", "start 2", "2:local"],
            "the relay's late bytes and its drop touch nothing of the local session"
        );
        assert_eq!(port.live().unwrap().peer, "10.0.0.1:5000");
        assert_eq!(port.agree_offset(2, 7_000).await, 7_000, "agreed here");
        drop(local);
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
