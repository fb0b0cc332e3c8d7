//! The encoders of a pipeline, one for every video rendition and one for audio, each fed the
//! switcher's raw stream and supervised: an encoder that exits, crashes or hangs is replaced by
//! one that starts on the next segment boundary, so a restarted pipeline rejoins the same grid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use channel::{AUDIO_RENDITION, ChannelSpec, EventKind};
use failover::QualityBook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::command::{EncoderPlan, sample_bytes};
use crate::deliver::Delivery;
use crate::process::Ffmpeg;
use crate::segmenting::Segmenting;
use crate::status::Phase;
use crate::switcher::RawSlot;
use crate::{PipelineCtx, PipelineStatus, Upload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Video,
    Audio,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }
}

/// Why a run of an encoder ended.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum RunEnd {
    /// The channel pauses: the encoder flushed what it had.
    #[error("paused")]
    Paused,
    /// The switcher skipped slots (it fell behind, or this encoder's queue was full).
    #[error("slots skipped")]
    Gap,
    /// The switcher is gone: the pipeline stops.
    #[error("stopped")]
    Closed,
    #[error("the encoder died: {0}")]
    Died(String),
    #[error("the encoder hung: input taken, nothing written")]
    Hung,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Starting x264 before the first output.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(5);

pub(crate) struct EncoderSupervisor {
    pub ctx: Arc<PipelineCtx>,
    pub kind: Kind,
    pub slots: mpsc::Receiver<RawSlot>,
    pub book: Arc<Mutex<QualityBook>>,
    /// Bytes of raw input still to drop before the encoder's first sample.
    pub skip_bytes: usize,
}

impl EncoderSupervisor {
    pub async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let Some(first) = self.next_boundary().await else {
                return;
            };
            let started = Instant::now();
            let end = self.run_once(first).await;
            match end {
                RunEnd::Closed => return,
                RunEnd::Paused => {
                    if self.kind == Kind::Video {
                        self.ctx
                            .emit(EventKind::EncoderStopped, "no input: paused".to_string());
                    }
                }
                RunEnd::Gap => {
                    tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed,
                        kind = ?self.kind, "encoder input skipped slots; restarting on the next boundary");
                    let [channel, feed] = self.ctx.labels();
                    metrics::counter!(
                        "steadycast_encoder_fell_behind_total",
                        &[channel, feed, ("kind", self.kind.as_str().to_string())]
                    )
                    .increment(1);
                }
                RunEnd::Died(_) | RunEnd::Hung => {
                    let why = end.to_string();
                    self.report_restart(&why);
                    if started.elapsed() > STABLE_RUN {
                        backoff = MIN_BACKOFF;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits for the first slot of a segment: an encoder starts there, so that its frame count
    /// lines up with the grid.
    async fn next_boundary(&mut self) -> Option<(u64, bytes::Bytes)> {
        let frames = u64::from(self.ctx.grid.frames());
        loop {
            match self.slots.recv().await? {
                RawSlot::Data { slot, bytes } if slot.is_multiple_of(frames) => {
                    return Some((slot, bytes));
                }
                _ => {}
            }
        }
    }

    fn report_restart(&self, why: &str) {
        let kind = self.kind.as_str();
        let [channel, feed] = self.ctx.labels();
        metrics::counter!(
            "steadycast_encoder_restarts_total",
            &[channel, feed, ("kind", kind.to_string())]
        )
        .increment(1);
        tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed, kind, %why,
            "encoder restarting");
        self.ctx.emit(
            EventKind::EncoderRestarted,
            format!("{kind} encoder: {why}"),
        );
        self.ctx.status.update(|s| {
            s.restarts += 1;
            s.last_error = Some(why.to_string());
            if self.kind == Kind::Video {
                (s.phase, s.encoder_pid) = (Phase::Restarting, None);
            }
        });
    }

    /// One encoder process, from slot `first` until something ends it.
    async fn run_once(&mut self, (first, bytes): (u64, bytes::Bytes)) -> RunEnd {
        // A chaos run's rolling upgrade: this video encoder runs other settings.
        let upgraded = match self.kind {
            Kind::Video => self.ctx.faults.preset().map(|preset| ChannelSpec {
                preset,
                ..self.ctx.spec.clone()
            }),
            Kind::Audio => None,
        };
        let plan = EncoderPlan {
            spec: upgraded.as_ref().unwrap_or(&self.ctx.spec),
            grid: self.ctx.grid,
            canvas: self.ctx.canvas,
            start_slot: first,
        };
        let (args, renditions) = match self.kind {
            Kind::Video => (
                plan.video_args(),
                self.ctx
                    .spec
                    .ladder
                    .iter()
                    .map(|r| r.name.clone())
                    .collect(),
            ),
            Kind::Audio => (plan.audio_args(), vec![AUDIO_RENDITION.to_string()]),
        };
        // Audio starts on the epoch's AAC frame grid, a little into the first slot.
        self.skip_bytes = match self.kind {
            Kind::Video => 0,
            Kind::Audio => plan.audio_start().1 as usize * sample_bytes(&self.ctx.spec.audio),
        };
        let what = format!("encoder {:?}", self.kind).to_lowercase();
        let (mut ffmpeg, mut stdin, stdout) = match Ffmpeg::spawn(&args, &self.ctx.spec.id, what) {
            Ok(spawned) => spawned,
            Err(e) => return RunEnd::Died(format!("cannot start ffmpeg: {e}")),
        };
        match self.kind {
            Kind::Video => self.ctx.status.update(|s| {
                s.encoder_pid = ffmpeg.pid();
                s.segments_this_run = 0;
                if s.phase != Phase::Filling {
                    s.phase = Phase::Encoding;
                }
            }),
            Kind::Audio => self
                .ctx
                .status
                .update(|s| s.audio_encoder_pid = ffmpeg.pid()),
        }
        let last_output = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut output = tokio::spawn(segment_output(
            stdout,
            Segmenting::new(renditions, self.ctx.grid),
            OutputSide {
                ctx: self.ctx.clone(),
                delivery: self.ctx.delivery.clone(),
                book: self.book.clone(),
                last_output: last_output.clone(),
                started,
                status: (self.kind == Kind::Video).then(|| self.ctx.status.clone()),
            },
        ));
        // The pipeline is up while its video encoder runs.
        let up = (self.kind == Kind::Video)
            .then(|| metrics::gauge!("steadycast_pipeline_up", &self.ctx.labels()));
        if let Some(up) = &up {
            up.set(1.0);
        }
        let end = match self.write(&mut stdin, &bytes).await {
            Err(end) => end,
            Ok(()) => {
                self.feed(&mut stdin, first + 1, &mut output, &last_output, started)
                    .await
            }
        };
        if let Some(up) = &up {
            up.set(0.0);
        }
        drop(stdin);
        let end = match end {
            RunEnd::Paused | RunEnd::Gap | RunEnd::Closed => {
                // Closing stdin flushes the encoder: its last segment is delivered if whole.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut output).await;
                end
            }
            RunEnd::Died(why) => RunEnd::Died(ffmpeg.explain(why).await),
            RunEnd::Hung => RunEnd::Hung,
        };
        output.abort();
        ffmpeg.stop().await;
        end
    }

    async fn write(&mut self, stdin: &mut ChildStdin, bytes: &[u8]) -> Result<(), RunEnd> {
        let skip = self.skip_bytes.min(bytes.len());
        self.skip_bytes -= skip;
        let bytes = &bytes[skip..];
        match tokio::time::timeout(self.ctx.hang_timeout, stdin.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RunEnd::Died("ffmpeg closed its input".to_string())),
            Err(_) => Err(RunEnd::Hung),
        }
    }

    /// Writes the switcher's slots, in order, until something ends the run.
    async fn feed(
        &mut self,
        stdin: &mut ChildStdin,
        mut expected: u64,
        output: &mut JoinHandle<String>,
        last_output: &AtomicU64,
        started: Instant,
    ) -> RunEnd {
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                slot = self.slots.recv() => match slot {
                    None => return RunEnd::Closed,
                    Some(RawSlot::Pause) => return RunEnd::Paused,
                    Some(RawSlot::Data { slot, bytes }) if slot == expected => {
                        if let Err(end) = self.write(stdin, &bytes).await {
                            return end;
                        }
                        expected += 1;
                    }
                    Some(RawSlot::Data { .. }) => return RunEnd::Gap,
                },
                why = &mut *output => {
                    return RunEnd::Died(why.unwrap_or_else(|e| e.to_string()));
                }
                _ = watchdog.tick() => {
                    let out_ms = last_output.load(Ordering::Relaxed);
                    if self.is_hung(out_ms, started.elapsed()) {
                        return RunEnd::Hung;
                    }
                }
            }
        }
    }

    /// Hung: fed all along, but the last output (`out_ms` after start, 0 for none) is older
    /// than the timeout; before its first output an encoder gets a segment more and x264's start.
    fn is_hung(&self, out_ms: u64, running: Duration) -> bool {
        let timeout = if out_ms == 0 {
            self.ctx.hang_timeout + STARTUP_ALLOWANCE + self.ctx.grid_duration()
        } else {
            self.ctx.hang_timeout
        };
        running > Duration::from_millis(out_ms) + timeout
    }
}

/// Where the output task's segments go, and what it reports.
struct OutputSide {
    ctx: Arc<PipelineCtx>,
    delivery: Delivery,
    book: Arc<Mutex<QualityBook>>,
    /// Milliseconds after `started` of the last output, for the hang watchdog.
    last_output: Arc<AtomicU64>,
    started: Instant,
    /// The video encoder reports its segments in the pipeline's status.
    status: Option<Arc<PipelineStatus>>,
}

impl OutputSide {
    /// Delivers an upload with its segment's quality score, capped for a late encode.
    fn deliver(&self, mut upload: Upload) {
        if let Some(n) = upload.segment {
            upload.quality = self.book.lock().ok().and_then(|book| book.score(n));
            if self.encoded_late(n) {
                upload.quality = upload.quality.map(|q| q.min(LATE_ENCODE_SCORE));
                metrics::counter!("steadycast_segments_encoded_late_total", &self.ctx.labels())
                    .increment(1);
            }
            if let Some(status) = &self.status {
                status.update(|s| s.segments_this_run += 1);
            }
        }
        self.delivery.send(upload);
    }
}

impl OutputSide {
    /// Segment `n` came out of the encoder more than a segment's duration after the switcher
    /// handed over its last slot: the encoder is falling behind real time.
    fn encoded_late(&self, n: u64) -> bool {
        let latency = Duration::from_millis(self.ctx.switcher_latency_ms.load(Ordering::Relaxed));
        let due = self.ctx.grid.start_time(n + 1) + latency + self.ctx.grid_duration();
        crate::now() > due
    }
}

/// The most a segment encoded late can score: its pictures are whole, but it came late.
const LATE_ENCODE_SCORE: u8 = 50;

/// Reads ffmpeg's output until it ends, cutting and delivering segments; returns why it ended.
async fn segment_output(
    mut stdout: ChildStdout,
    mut segmenting: Segmenting,
    side: OutputSide,
) -> String {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) => {
                let _ = segmenting.finish(&mut |upload| side.deliver(upload));
                return "ffmpeg closed its output".to_string();
            }
            Ok(n) => n,
            Err(e) => return format!("reading ffmpeg output: {e}"),
        };
        let at = side.started.elapsed().as_millis() as u64;
        side.last_output.store(at, Ordering::Relaxed);
        if let Err(e) = segmenting.push(&buf[..n], &mut |upload| side.deliver(upload)) {
            return e.to_string();
        }
    }
}
