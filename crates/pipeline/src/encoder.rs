//! One run of the encoder: an ffmpeg child fed from the input port, its output segmented and
//! delivered, watched for death and for hangs.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ingest::{Container, InputEvent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::broadcast;

use crate::deliver::Delivery;
use crate::segmenting::Segmenting;
use crate::{PipelineCtx, PipelineStatus};

/// Why a run of the encoder ended.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunEnd {
    /// The publisher left; the encoder flushed what it had.
    #[error("the input ended")]
    InputEnded,
    /// A new publisher session began; the next run starts from it.
    #[error("a new input session {session} began")]
    NewSession { session: u64, container: Container },
    /// The encoder exited or crashed while its input was live.
    #[error("the encoder died: {0}")]
    EncoderDied(String),
    /// The encoder took input but wrote nothing for the hang timeout.
    #[error("the encoder hung: input taken, nothing written")]
    Hung,
    /// The subscription fell too far behind to continue this container (FLV cannot resync).
    #[error("the encoder fell behind its input")]
    Lagged,
    /// The input port is gone (channel deleted).
    #[error("the input was removed")]
    PortClosed,
}

/// Starts ffmpeg with `args`, writes `head` (the bytes that decided the lock) and then the live
/// session from `rx` until the session or the encoder ends.
pub async fn run(
    ctx: &PipelineCtx,
    args: Vec<String>,
    head: Vec<Bytes>,
    session: u64,
    container: Container,
    rx: &mut broadcast::Receiver<InputEvent>,
) -> RunEnd {
    let mut child = match spawn(&args) {
        Ok(child) => child,
        Err(e) => return RunEnd::EncoderDied(format!("cannot start ffmpeg: {e}")),
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return RunEnd::EncoderDied("ffmpeg pipes not captured".to_string());
    };
    let labels = ctx.labels();
    ctx.status.update(|s| {
        (s.phase, s.encoder_pid, s.segments_this_run) = (crate::Phase::Encoding, child.id(), 0);
    });
    let last_words = Arc::new(Mutex::new(VecDeque::new()));
    let relay = tokio::spawn(relay_log(
        stderr,
        ctx.spec.id.clone(),
        ctx.feed.as_str(),
        last_words.clone(),
    ));
    let last_output = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut output = tokio::spawn(segment_output(
        stdout,
        OutputSide {
            segmenting: Segmenting::new(&ctx.spec, ctx.grid),
            delivery: ctx.delivery.clone(),
            last_output: last_output.clone(),
            started,
            status: ctx.status.clone(),
        },
    ));
    metrics::gauge!("steadycast_pipeline_up", &labels).set(1.0);

    let mut end = None;
    for chunk in head {
        if stdin.write_all(&chunk).await.is_err() {
            end = Some(RunEnd::EncoderDied("ffmpeg closed its input".to_string()));
            break;
        }
    }
    let end = match end {
        Some(end) => end,
        None => {
            feed(
                ctx,
                &mut stdin,
                session,
                container,
                rx,
                &mut output,
                &last_output,
                started,
            )
            .await
        }
    };
    metrics::gauge!("steadycast_pipeline_up", &labels).set(0.0);
    finish(child, stdin, output, &end).await;
    match end {
        // Say why, in ffmpeg's own words (its stderr ends just after its output does).
        RunEnd::EncoderDied(why) => {
            let _ = tokio::time::timeout(Duration::from_millis(500), relay).await;
            let said: Vec<String> = last_words
                .lock()
                .map(|w| w.iter().cloned().collect())
                .unwrap_or_default();
            if said.is_empty() {
                RunEnd::EncoderDied(why)
            } else {
                RunEnd::EncoderDied(format!("{why}; ffmpeg said: {}", said.join(" | ")))
            }
        }
        end => end,
    }
}

/// Forwards the session's bytes to ffmpeg until something ends the run.
#[allow(clippy::too_many_arguments)]
async fn feed(
    ctx: &PipelineCtx,
    stdin: &mut ChildStdin,
    session: u64,
    container: Container,
    rx: &mut broadcast::Receiver<InputEvent>,
    output: &mut tokio::task::JoinHandle<String>,
    last_output: &AtomicU64,
    started: Instant,
) -> RunEnd {
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let mut last_input = started;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(InputEvent::Data { session: s, bytes }) if s == session => {
                    last_input = Instant::now();
                    match tokio::time::timeout(ctx.hang_timeout, stdin.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return RunEnd::EncoderDied("ffmpeg closed its input".into()),
                        Err(_) => return RunEnd::Hung,
                    }
                }
                Ok(InputEvent::Ended { session: s, .. }) if s == session => return RunEnd::InputEnded,
                Ok(InputEvent::Started { session, container }) => {
                    return RunEnd::NewSession { session, container };
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    metrics::counter!("steadycast_pipeline_input_lagged_total", &ctx.labels())
                        .increment(skipped);
                    // TS resynchronises on the next packet; an FLV tag stream does not.
                    if container == Container::Flv {
                        return RunEnd::Lagged;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return RunEnd::PortClosed,
            },
            why = &mut *output => {
                return RunEnd::EncoderDied(why.unwrap_or_else(|e| e.to_string()));
            }
            _ = watchdog.tick() => {
                let out = last_output.load(Ordering::Relaxed);
                let fed_for = last_input.duration_since(started);
                if is_hung(ctx, out, fed_for, last_input.elapsed()) {
                    return RunEnd::Hung;
                }
            }
        }
    }
}

/// Hung: the input kept coming (fed until `fed_for` after start, last `since_input` ago) but the
/// last output (`out_ms` after start, 0 for none) is older than the timeout. Before its first
/// output an encoder also probes its input and waits for a segment boundary, so it gets longer.
fn is_hung(ctx: &PipelineCtx, out_ms: u64, fed_for: Duration, since_input: Duration) -> bool {
    let timeout = if out_ms == 0 {
        ctx.hang_timeout + STARTUP_ALLOWANCE + ctx.grid_duration() * 2
    } else {
        ctx.hang_timeout
    };
    since_input < timeout && fed_for > Duration::from_millis(out_ms) + timeout
}

/// Probing the input (`-analyzeduration`) and starting the encoders.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(5);

/// Lets a flushing encoder finish its last fragments, then makes sure it is gone.
async fn finish(
    mut child: Child,
    stdin: ChildStdin,
    output: tokio::task::JoinHandle<String>,
    end: &RunEnd,
) {
    drop(stdin);
    if *end == RunEnd::InputEnded {
        let _ = tokio::time::timeout(Duration::from_secs(5), output).await;
    } else {
        output.abort();
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn spawn(args: &[String]) -> std::io::Result<Child> {
    Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// What the output task owns: the segmenter, where uploads go, and what it reports.
struct OutputSide {
    segmenting: Segmenting,
    delivery: Delivery,
    /// Milliseconds after `started` of the last output, for the hang watchdog.
    last_output: Arc<AtomicU64>,
    started: Instant,
    status: Arc<PipelineStatus>,
}

/// Reads ffmpeg's output until it ends; returns why it ended.
async fn segment_output(mut stdout: ChildStdout, mut side: OutputSide) -> String {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) => return "ffmpeg closed its output".to_string(),
            Ok(n) => n,
            Err(e) => return format!("reading ffmpeg output: {e}"),
        };
        let at = side.started.elapsed().as_millis() as u64;
        side.last_output.store(at, Ordering::Relaxed);
        let delivery = &side.delivery;
        match side
            .segmenting
            .push(&buf[..n], &mut |upload| delivery.send(upload))
        {
            Ok(progress) if progress.segments > 0 => {
                side.status
                    .update(|s| s.segments_this_run += u64::from(progress.segments));
            }
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// ffmpeg's stderr, at debug level (joining a stream mid-way makes it chatty), keeping its last
/// lines to explain a crash.
async fn relay_log(
    stderr: tokio::process::ChildStderr,
    channel: String,
    feed: &'static str,
    last_words: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(%channel, feed, "ffmpeg: {line}");
        if let Ok(mut words) = last_words.lock() {
            if words.len() == LAST_WORDS {
                words.pop_front();
            }
            words.push_back(line);
        }
    }
}

const LAST_WORDS: usize = 3;
