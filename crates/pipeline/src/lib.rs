//! One encoding pipeline (a or b) of a channel: it waits for its input, locks the input's
//! timestamps to the epoch grid, runs ffmpeg over the whole ladder, cuts CMAF segments and
//! delivers them to the packagers. A crash or hang of ffmpeg restarts it; nothing here can stop
//! ingest, the other pipeline or the origin.

mod command;
mod deliver;
mod encoder;
mod fault;
mod lock;
mod segmenting;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use channel::{ChannelSpec, EventKind, Events};
use ingest::{Container, InputEvent, InputPort};
use timeline::{Feed, LockMode, SegmentGrid};
use tokio::sync::broadcast;

pub use command::{EncoderPlan, silence_start};
pub use deliver::{Delivery, PackagerTarget, Upload};
pub use encoder::RunEnd;
pub use fault::{DeliveryFault, Faults};
pub use lock::{Lock, LockError, SessionHead};
pub use segmenting::{Progress, Segmenting, SegmentingError};
pub use status::{Phase, PipelineState, PipelineStatus};

/// What a pipeline needs to run.
pub struct PipelineConfig {
    pub spec: ChannelSpec,
    pub feed: Feed,
    pub input: Arc<InputPort>,
    pub packagers: Vec<PackagerTarget>,
    /// An encoder that takes input but writes nothing for this long is restarted.
    pub hang_timeout: Duration,
    pub status: Arc<PipelineStatus>,
    pub events: Events,
    /// Faults a chaos run injects into this pipeline's delivery.
    pub faults: Arc<Faults>,
}

pub(crate) struct PipelineCtx {
    spec: ChannelSpec,
    feed: Feed,
    grid: SegmentGrid,
    delivery: Delivery,
    hang_timeout: Duration,
    status: Arc<PipelineStatus>,
    events: Events,
}

impl PipelineCtx {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("channel", self.spec.id.clone()),
            ("feed", self.feed.as_str().to_string()),
        ]
    }

    fn grid_duration(&self) -> Duration {
        Duration::from_secs_f64(self.grid.duration_secs())
    }

    fn emit(&self, kind: EventKind, detail: String) {
        self.events.emit(
            &self.spec.id,
            &format!("pipeline {}", self.feed),
            kind,
            detail,
        );
    }
}

/// Runs the pipeline until its input port closes. Abort the task to stop it.
pub async fn run(config: PipelineConfig) -> Result<(), String> {
    let grid = config.spec.grid()?;
    let ctx = PipelineCtx {
        delivery: Delivery::start(
            &config.packagers,
            &config.spec.id,
            config.feed,
            config.faults.clone(),
        ),
        spec: config.spec,
        feed: config.feed,
        grid,
        hang_timeout: config.hang_timeout,
        status: config.status,
        events: config.events,
    };
    ctx.status
        .update(|s| s.input = config.input.id().input.clone());
    // Subscribe before looking at the live session, so no event falls in between.
    let mut rx = config.input.subscribe();
    let mut next = config
        .input
        .live()
        .map(|l| (l.session, l.container, l.prologue));
    loop {
        let (session, container, prologue) = match next.take() {
            Some(s) => s,
            None => match wait_for_session(&mut rx).await {
                Some((session, container)) => (session, container, Vec::new()),
                None => return Ok(()),
            },
        };
        tracing::info!(channel = %ctx.spec.id, feed = %ctx.feed, session, "pipeline input started");
        next = run_session(&ctx, &config.input, session, container, prologue, &mut rx).await;
        ctx.status
            .update(|s| (s.phase, s.session) = (Phase::WaitingForInput, None));
        if next.is_none() && rx.is_closed() {
            return Ok(());
        }
    }
}

type NextSession = Option<(u64, Container, Vec<Bytes>)>;

/// Encodes one publisher session, restarting the encoder as often as it fails. Returns the next
/// session if one began.
async fn run_session(
    ctx: &PipelineCtx,
    input: &InputPort,
    session: u64,
    container: Container,
    mut prologue: Vec<Bytes>,
    rx: &mut broadcast::Receiver<InputEvent>,
) -> NextSession {
    let mut backoff = MIN_BACKOFF;
    loop {
        ctx.status
            .update(|s| (s.phase, s.session) = (Phase::Locking, Some(session)));
        let head = SessionHead::new(container, std::mem::take(&mut prologue));
        let (lock, head) = match wait_for_lock(ctx, session, head, rx).await {
            Ok(locked) => locked,
            Err(next) => return next,
        };
        // Every encoder of one session, on either pipeline, uses the offset agreed first.
        let lock = match lock.mode {
            LockMode::Source => lock,
            LockMode::Clock => Lock {
                offset_us: input.agree_offset(session, lock.offset_us),
                ..lock
            },
        };
        report_lock(ctx, session, lock);
        let plan = EncoderPlan {
            spec: &ctx.spec,
            grid: ctx.grid,
            container,
            offset_us: lock.offset_us,
            silence_from: (!lock.has_audio)
                .then(|| silence_start(now(), ctx.spec.audio.sample_rate)),
        };
        let (replay, keep) = head.into_parts();
        let started = Instant::now();
        let end = encoder::run(ctx, plan.args(), replay, session, container, rx).await;
        ctx.status.update(|s| s.encoder_pid = None);
        match end {
            RunEnd::InputEnded | RunEnd::PortClosed => {
                ctx.emit(
                    EventKind::EncoderStopped,
                    format!("session {session}: input ended"),
                );
                return None;
            }
            RunEnd::NewSession { session, container } => {
                return Some((session, container, Vec::new()));
            }
            RunEnd::EncoderDied(_) | RunEnd::Hung | RunEnd::Lagged => {
                let why = end.to_string();
                metrics::counter!("steadycast_encoder_restarts_total", &ctx.labels()).increment(1);
                tracing::warn!(channel = %ctx.spec.id, feed = %ctx.feed, %why, "encoder restarting");
                ctx.emit(EventKind::EncoderRestarted, why.clone());
                ctx.status.update(|s| {
                    (s.phase, s.restarts, s.last_error) =
                        (Phase::Restarting, s.restarts + 1, Some(why));
                });
                // An encoder that ran for a while restarts at once; one that keeps failing backs off.
                if started.elapsed() > STABLE_RUN {
                    backoff = MIN_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // A restart mid-session needs the session's prologue again (FLV headers).
                prologue = match input.live() {
                    Some(live) if live.session == session => live.prologue,
                    _ => keep,
                };
            }
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STABLE_RUN: Duration = Duration::from_secs(30);

/// Reads the session until its first timestamps decide the lock. `Err` carries what to do
/// instead: the session ended (`None`) or another began.
async fn wait_for_lock(
    ctx: &PipelineCtx,
    session: u64,
    mut head: SessionHead,
    rx: &mut broadcast::Receiver<InputEvent>,
) -> Result<(Lock, SessionHead), NextSession> {
    loop {
        match rx.recv().await {
            Ok(InputEvent::Data { session: s, bytes }) if s == session => {
                match head.push(bytes, now()) {
                    Ok(Some(lock)) => return Ok((lock, head)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(channel = %ctx.spec.id, feed = %ctx.feed, error = %e,
                        "input unusable; waiting for the next session");
                        ctx.status.update(|s| {
                            (s.phase, s.last_error) = (Phase::WaitingForInput, Some(e.to_string()))
                        });
                        return Err(None);
                    }
                }
            }
            Ok(InputEvent::Ended { session: s, .. }) if s == session => return Err(None),
            Ok(InputEvent::Started { session, container }) => {
                return Err(Some((session, container, Vec::new())));
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return Err(None),
        }
    }
}

fn report_lock(ctx: &PipelineCtx, session: u64, lock: Lock) {
    tracing::info!(channel = %ctx.spec.id, feed = %ctx.feed, mode = ?lock.mode,
        offset_us = lock.offset_us, "input locked to the epoch grid");
    let source_locked = lock.mode == LockMode::Source;
    metrics::gauge!("steadycast_pipeline_source_locked", &ctx.labels())
        .set(f64::from(u8::from(source_locked)));
    ctx.status
        .update(|s| (s.lock, s.offset_us) = (Some(lock.mode), Some(lock.offset_us)));
    let mode = if source_locked {
        "source-locked"
    } else {
        "clock-locked"
    };
    let audio = if lock.has_audio {
        ""
    } else {
        ", no audio: silence made"
    };
    ctx.emit(
        EventKind::EncoderStarted,
        format!(
            "session {session}, {mode}, offset {} µs{audio}",
            lock.offset_us
        ),
    );
}

async fn wait_for_session(rx: &mut broadcast::Receiver<InputEvent>) -> Option<(u64, Container)> {
    loop {
        match rx.recv().await {
            Ok(InputEvent::Started { session, container }) => return Some((session, container)),
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
