//! One encoding pipeline (a or b) of a channel: it waits for its input, locks the input's
//! timestamps to the epoch grid, runs ffmpeg over the whole ladder, cuts CMAF segments and
//! delivers them to the packagers. A crash or hang of ffmpeg restarts it; nothing here can stop
//! ingest, the other pipeline or the origin.

mod command;
mod deliver;
mod encoder;
mod lock;
mod segmenting;

use std::sync::Arc;
use std::time::Duration;

use channel::ChannelSpec;
use ingest::{Container, InputEvent, InputPort};
use timeline::{Feed, SegmentGrid};
use tokio::sync::broadcast;

pub use command::EncoderPlan;
pub use deliver::{Delivery, PackagerTarget, Upload};
pub use encoder::RunEnd;
pub use lock::{Lock, LockError, SessionHead};
pub use segmenting::{Progress, Segmenting, SegmentingError};

/// What a pipeline needs to run.
pub struct PipelineConfig {
    pub spec: ChannelSpec,
    pub feed: Feed,
    pub input: Arc<InputPort>,
    pub packagers: Vec<PackagerTarget>,
    /// An encoder that takes input but writes nothing for this long is restarted.
    pub hang_timeout: Duration,
}

pub(crate) struct PipelineCtx {
    spec: ChannelSpec,
    feed: Feed,
    grid: SegmentGrid,
    delivery: Delivery,
    hang_timeout: Duration,
}

impl PipelineCtx {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("channel", self.spec.id.clone()),
            ("feed", self.feed.as_str().to_string()),
        ]
    }
}

/// Runs the pipeline until its input port closes. Abort the task to stop it.
pub async fn run(config: PipelineConfig) -> Result<(), String> {
    let grid = config.spec.grid()?;
    let ctx = PipelineCtx {
        delivery: Delivery::start(&config.packagers, &config.spec.id, config.feed),
        spec: config.spec,
        feed: config.feed,
        grid,
        hang_timeout: config.hang_timeout,
    };
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
        if next.is_none() && rx.is_closed() {
            return Ok(());
        }
    }
}

/// Encodes one publisher session, restarting the encoder as often as it fails. Returns the next
/// session if one began.
async fn run_session(
    ctx: &PipelineCtx,
    input: &InputPort,
    session: u64,
    container: Container,
    mut prologue: Vec<bytes::Bytes>,
    rx: &mut broadcast::Receiver<InputEvent>,
) -> Option<(u64, Container, Vec<bytes::Bytes>)> {
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut head = SessionHead::new(container, std::mem::take(&mut prologue));
        let lock = loop {
            match rx.recv().await {
                Ok(InputEvent::Data { session: s, bytes }) if s == session => {
                    match head.push(bytes, now()) {
                        Ok(Some(lock)) => break lock,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(channel = %ctx.spec.id, feed = %ctx.feed, error = %e,
                                "input unusable; waiting for the next session");
                            return None;
                        }
                    }
                }
                Ok(InputEvent::Ended { session: s, .. }) if s == session => return None,
                Ok(InputEvent::Started { session, container }) => {
                    return Some((session, container, Vec::new()));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        let lock = match lock.mode {
            timeline::LockMode::Source => lock,
            timeline::LockMode::Clock => Lock {
                offset_us: input.agree_offset(session, lock.offset_us),
                ..lock
            },
        };
        tracing::info!(channel = %ctx.spec.id, feed = %ctx.feed, mode = ?lock.mode,
            offset_us = lock.offset_us, "input locked to the epoch grid");
        metrics::gauge!("steadycast_pipeline_source_locked", &ctx.labels()).set(
            if lock.mode == timeline::LockMode::Source {
                1.0
            } else {
                0.0
            },
        );
        let plan = EncoderPlan {
            spec: &ctx.spec,
            grid: ctx.grid,
            container,
            offset_us: lock.offset_us,
        };
        let (replay, keep) = head.into_parts();
        let end = encoder::run(ctx, plan.args(), replay, session, container, rx).await;
        match end {
            RunEnd::InputEnded | RunEnd::PortClosed => return None,
            RunEnd::NewSession { session, container } => {
                return Some((session, container, Vec::new()));
            }
            RunEnd::EncoderDied(_) | RunEnd::Hung | RunEnd::Lagged => {
                metrics::counter!("steadycast_encoder_restarts_total", &ctx.labels()).increment(1);
                tracing::warn!(channel = %ctx.spec.id, feed = %ctx.feed, ?end, "encoder restarting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // A restart mid-session needs the session's prologue again (FLV headers).
                prologue = match input.live() {
                    Some(live) if live.session == session => live.prologue,
                    _ => keep,
                };
            }
        }
    }
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
