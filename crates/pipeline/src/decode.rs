//! One input of a pipeline, decoded onto the epoch grid. For every publisher session it locks
//! the session's timestamps (see [`crate::lock`]) and runs two ffmpeg decoders over it, one for
//! pictures and one for sound, handing the switcher each picture tagged with its frame slot and
//! each PCM chunk with its first epoch sample. A decoder that dies, stalls or jumps ahead is
//! restarted with a fresh lock: a source timestamp jump or reset becomes a short loss that the
//! switcher covers, never a jump in the output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use channel::EventKind;
use ingest::{Container, InputEvent, InputPort};
use timeline::LockMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::command::{DecoderPlan, sample_bytes};
use crate::lock::{Lock, SessionHead, drift_us};
use crate::process::Ffmpeg;
use crate::{PipelineCtx, now};

/// One decoded picture and the frame slot (frame number since the epoch) it shows.
pub struct DecodedFrame {
    pub slot: u64,
    pub picture: Bytes,
}

/// Decoded sound: interleaved s16 PCM starting at epoch sample `first_sample`.
pub struct DecodedAudio {
    pub first_sample: u64,
    pub pcm: Bytes,
}

/// Input chunks queued for one decoder's stdin (the ingest port's chunks are up to 64 KiB).
const STDIN_QUEUE: usize = 512;
/// Sample frames per PCM chunk handed to the switcher: about 21 ms at 48 kHz.
const PCM_CHUNK: usize = 1024;
/// Source timestamps that move this far against the clock have jumped.
const JUMP: Duration = Duration::from_secs(5);
/// A decoder fed input that outputs no picture for this long (plus the latency) has stalled:
/// its timestamps went backwards, or it hangs.
const STALL: Duration = Duration::from_secs(3);
/// Probing the input before the first picture.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(5);
/// An input silent for longer than this is relocked when it comes back.
const RELOCK_AFTER: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STABLE_RUN: Duration = Duration::from_secs(30);

/// Why one run of an input's decoders ended.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum DecodeEnd {
    #[error("the input ended")]
    InputEnded,
    #[error("a new input session {session} began")]
    NewSession { session: u64, container: Container },
    #[error("the input was removed")]
    PortClosed,
    #[error("the decoder died: {0}")]
    Died(String),
    #[error("the decoder stalled: input taken, no picture out")]
    Stalled,
    #[error("the input's timestamps jumped")]
    Jumped,
    #[error("the decoder fell behind its input")]
    Lagged,
    /// The input came back after a gap: a fresh lock saves the decoder from making up every
    /// picture of the gap (which the switcher no longer wants).
    #[error("the input resumed after {} ms without data", .0.as_millis())]
    Resumed(Duration),
}

type NextSession = Option<(u64, Container, Vec<Bytes>)>;

/// Decodes input `index` (0 primary, 1 backup) of a pipeline for as long as the pipeline runs.
pub(crate) struct InputDecoder {
    pub ctx: Arc<PipelineCtx>,
    pub index: usize,
    pub port: Arc<InputPort>,
    pub video: mpsc::Sender<DecodedFrame>,
    pub audio: mpsc::Sender<DecodedAudio>,
}

impl InputDecoder {
    pub async fn run(self) {
        // Subscribe before looking at the live session, so no event falls in between.
        let mut rx = self.port.subscribe();
        let mut next = self
            .port
            .live()
            .map(|l| (l.session, l.container, l.prologue));
        loop {
            let (session, container, prologue) = match next.take() {
                Some(s) => s,
                None => match wait_for_session(&mut rx).await {
                    Some((session, container)) => (session, container, Vec::new()),
                    None => return,
                },
            };
            self.ctx.status.update_input(self.index, |s| {
                (s.session, s.lock, s.offset_us) = (Some(session), None, None)
            });
            next = self
                .run_session(session, container, prologue, &mut rx)
                .await;
            self.ctx
                .status
                .update_input(self.index, |s| (s.session, s.decoder_pid) = (None, None));
            if next.is_none() && rx.is_closed() {
                return;
            }
        }
    }

    fn name(&self) -> &str {
        &self.port.id().input
    }

    /// Decodes one publisher session, restarting the decoders as often as they fail. Returns
    /// the next session if one began.
    async fn run_session(
        &self,
        session: u64,
        container: Container,
        mut prologue: Vec<Bytes>,
        rx: &mut broadcast::Receiver<InputEvent>,
    ) -> NextSession {
        let mut backoff = MIN_BACKOFF;
        loop {
            let head = SessionHead::new(container, std::mem::take(&mut prologue));
            let (lock, head) = match self.wait_for_lock(session, head, rx).await {
                Ok(locked) => locked,
                Err(next) => return next,
            };
            let lock = match lock.mode {
                LockMode::Source => lock,
                // Every decoder of one session, on either pipeline, uses the offset agreed first.
                LockMode::Clock => Lock {
                    offset_us: self.port.agree_offset(session, lock.offset_us).await,
                    ..lock
                },
            };
            self.report_lock(session, lock);
            let (replay, keep) = head.into_parts();
            let started = Instant::now();
            let end = self.decode(session, container, lock, replay, rx).await;
            self.ctx
                .status
                .update_input(self.index, |s| s.decoder_pid = None);
            match end {
                DecodeEnd::InputEnded | DecodeEnd::PortClosed => return None,
                DecodeEnd::NewSession { session, container } => {
                    return Some((session, container, Vec::new()));
                }
                DecodeEnd::Died(_)
                | DecodeEnd::Stalled
                | DecodeEnd::Jumped
                | DecodeEnd::Lagged
                | DecodeEnd::Resumed(_) => {
                    let why = end.to_string();
                    metrics::counter!("steadycast_decoder_restarts_total", &self.labels())
                        .increment(1);
                    tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed,
                        input = self.name(), %why, "decoder restarting");
                    self.ctx.emit(
                        EventKind::DecoderRestarted,
                        format!("input {}: {why}", self.name()),
                    );
                    self.ctx
                        .status
                        .update_input(self.index, |s| s.decoder_restarts += 1);
                    if started.elapsed() > STABLE_RUN {
                        backoff = MIN_BACKOFF;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // A restart mid-session needs the session's prologue again (FLV headers).
                    prologue = match self.port.live() {
                        Some(live) if live.session == session => live.prologue,
                        _ => keep,
                    };
                }
            }
        }
    }

    fn labels(&self) -> [(&'static str, String); 3] {
        let [channel, feed] = self.ctx.labels();
        [channel, feed, ("input", self.name().to_string())]
    }

    /// Reads the session until its first timestamps decide the lock. `Err` carries what to do
    /// instead: the session ended (`None`) or another began.
    async fn wait_for_lock(
        &self,
        session: u64,
        mut head: SessionHead,
        rx: &mut broadcast::Receiver<InputEvent>,
    ) -> Result<(Lock, SessionHead), NextSession> {
        loop {
            match rx.recv().await {
                Ok(InputEvent::Data { session: s, .. })
                    if s == session && self.ctx.faults.input_cut(self.name()) => {}
                Ok(InputEvent::Data { session: s, bytes }) if s == session => {
                    match head.push(bytes, now()) {
                        Ok(Some(lock)) => return Ok((lock, head)),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed,
                                input = self.name(), error = %e,
                                "input unusable; waiting for the next session");
                            self.ctx
                                .status
                                .update(|s| s.last_error = Some(e.to_string()));
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

    fn report_lock(&self, session: u64, lock: Lock) {
        tracing::info!(channel = %self.ctx.spec.id, feed = %self.ctx.feed, input = self.name(),
            mode = ?lock.mode, offset_us = lock.offset_us, "input locked to the epoch grid");
        let source_locked = lock.mode == LockMode::Source;
        metrics::gauge!("steadycast_input_source_locked", &self.labels())
            .set(f64::from(u8::from(source_locked)));
        self.ctx.status.update_input(self.index, |s| {
            (s.lock, s.offset_us) = (Some(lock.mode), Some(lock.offset_us))
        });
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
        self.ctx.emit(
            EventKind::InputLocked,
            format!(
                "input {} session {session}, {mode}, offset {} µs{audio}",
                self.name(),
                lock.offset_us
            ),
        );
    }

    /// Runs the decoders over the session (`replay` first) until something ends the run.
    async fn decode(
        &self,
        session: u64,
        container: Container,
        lock: Lock,
        replay: Vec<Bytes>,
        rx: &mut broadcast::Receiver<InputEvent>,
    ) -> DecodeEnd {
        let rate = self.ctx.grid.rate();
        // The switcher is `latency` behind now: pictures from there on are still wanted.
        let start_slot = rate.slot_at(now().saturating_sub(self.ctx.latency));
        let plan = DecoderPlan {
            container,
            offset_us: lock.offset_us,
            rate,
            canvas: self.ctx.canvas,
            audio: &self.ctx.spec.audio,
            start_slot,
        };
        let mut running = match self.start(&plan, lock.has_audio) {
            Ok(running) => running,
            Err(e) => return DecodeEnd::Died(format!("cannot start ffmpeg: {e}")),
        };
        for chunk in replay {
            if !running.feed(chunk) {
                return running.end(DecodeEnd::Lagged).await;
            }
        }
        let end = self
            .follow(session, container, lock.offset_us, &mut running, rx)
            .await;
        running.end(end).await
    }

    fn start(&self, plan: &DecoderPlan<'_>, has_audio: bool) -> std::io::Result<Running> {
        let channel = &self.ctx.spec.id;
        let frame_bytes = self.ctx.canvas.frame_bytes();
        let progress = Arc::new(Progress::default());
        let (video, stdin, stdout) = Ffmpeg::spawn(
            &plan.video_args(),
            channel,
            format!("decoder {} video", self.name()),
        )?;
        self.ctx
            .status
            .update_input(self.index, |s| s.decoder_pid = video.pid());
        let mut running = Running {
            processes: vec![video],
            writers: vec![spawn_writer(stdin)],
            readers: vec![tokio::spawn(read_pictures(
                stdout,
                frame_bytes,
                plan.start_slot,
                self.video.clone(),
                progress.clone(),
            ))],
            progress,
            started: Instant::now(),
        };
        if has_audio {
            let (audio, stdin, stdout) = Ffmpeg::spawn(
                &plan.audio_args(),
                channel,
                format!("decoder {} audio", self.name()),
            )?;
            let first = plan
                .rate
                .first_sample(plan.start_slot, plan.audio.sample_rate);
            running.processes.push(audio);
            running.writers.push(spawn_writer(stdin));
            running.readers.push(tokio::spawn(read_pcm(
                stdout,
                sample_bytes(plan.audio),
                first,
                self.audio.clone(),
            )));
        }
        Ok(running)
    }

    /// Forwards the session to the decoders and watches them.
    async fn follow(
        &self,
        session: u64,
        container: Container,
        offset_us: i64,
        running: &mut Running,
        rx: &mut broadcast::Receiver<InputEvent>,
    ) -> DecodeEnd {
        let mut watchdog = tokio::time::interval(Duration::from_millis(500));
        let mut last_input = Instant::now();
        let (mut newest, mut baseline) = (None::<Bytes>, None);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Ok(InputEvent::Data { session: s, .. })
                        if s == session && self.ctx.faults.input_cut(self.name()) => {}
                    Ok(InputEvent::Data { session: s, bytes }) if s == session => {
                        let gap = last_input.elapsed();
                        if gap > RELOCK_AFTER {
                            return DecodeEnd::Resumed(gap);
                        }
                        last_input = Instant::now();
                        newest = Some(bytes.clone());
                        if !running.feed(bytes) {
                            return DecodeEnd::Lagged;
                        }
                    }
                    Ok(InputEvent::Ended { session: s, .. }) if s == session => {
                        return DecodeEnd::InputEnded;
                    }
                    Ok(InputEvent::Started { session, container }) => {
                        return DecodeEnd::NewSession { session, container };
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        metrics::counter!("steadycast_pipeline_input_lagged_total", &self.labels())
                            .increment(skipped);
                        // TS resynchronises on the next packet; an FLV tag stream does not.
                        if container == Container::Flv {
                            return DecodeEnd::Lagged;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return DecodeEnd::PortClosed,
                },
                why = running.any_reader_end() => return DecodeEnd::Died(why),
                _ = watchdog.tick() => {
                    if self.stalled(running, last_input) {
                        return DecodeEnd::Stalled;
                    }
                    // The source's timestamps against the clock: steady, or it jumped.
                    let drift = newest.take().and_then(|chunk| {
                        drift_us(container, &chunk, offset_us, now())
                    });
                    if let Some(drift) = drift {
                        let base = *baseline.get_or_insert(drift);
                        if drift.abs_diff(base) > JUMP.as_micros() as u64 {
                            return DecodeEnd::Jumped;
                        }
                    }
                }
            }
        }
    }

    /// A stall: input flows, but no picture comes out although the switcher has room.
    fn stalled(&self, running: &Running, last_input: Instant) -> bool {
        let last_slot = running.progress.slot.load(Ordering::Relaxed);
        let out_ms = running.progress.at_ms.load(Ordering::Relaxed);
        let allowance = if last_slot == 0 {
            STALL + STARTUP_ALLOWANCE
        } else {
            STALL
        } + self.ctx.latency;
        let since_out = running
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(out_ms));
        let fed = last_input.elapsed() < Duration::from_secs(1);
        let room = self.video.capacity() > 0;
        fed && room && since_out > allowance
    }
}

/// The decoders of one run and their plumbing.
struct Running {
    processes: Vec<Ffmpeg>,
    writers: Vec<mpsc::Sender<Bytes>>,
    readers: Vec<JoinHandle<String>>,
    progress: Arc<Progress>,
    started: Instant,
}

/// The picture decoder's last output: its slot and when (ms after the run started).
#[derive(Default)]
struct Progress {
    slot: AtomicU64,
    at_ms: AtomicU64,
}

impl Running {
    /// Queues an input chunk for every decoder; false when a decoder fell too far behind.
    fn feed(&self, chunk: Bytes) -> bool {
        self.writers
            .iter()
            .all(|w| w.try_send(chunk.clone()).is_ok())
    }

    async fn any_reader_end(&mut self) -> String {
        let ends = self.readers.iter_mut();
        let (why, _, _) = futures::future::select_all(ends).await;
        why.unwrap_or_else(|e| e.to_string())
    }

    async fn end(mut self, end: DecodeEnd) -> DecodeEnd {
        let end = match end {
            DecodeEnd::Died(why) => match self.processes.first_mut() {
                Some(p) => DecodeEnd::Died(p.explain(why).await),
                None => DecodeEnd::Died(why),
            },
            end => end,
        };
        for reader in &self.readers {
            reader.abort();
        }
        for process in self.processes {
            process.stop().await;
        }
        end
    }
}

fn spawn_writer(mut stdin: ChildStdin) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if stdin.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// Reads whole pictures; picture `k` is slot `first_slot + k`. Waits while the switcher's
/// queue is full, so ffmpeg (and then its input queue) takes the backpressure.
async fn read_pictures(
    mut stdout: ChildStdout,
    frame_bytes: usize,
    first_slot: u64,
    tx: mpsc::Sender<DecodedFrame>,
    progress: Arc<Progress>,
) -> String {
    let started = Instant::now();
    let mut slot = first_slot;
    loop {
        let mut picture = BytesMut::zeroed(frame_bytes);
        if let Err(e) = stdout.read_exact(&mut picture).await {
            return format!("decoder output ended: {e}");
        }
        progress.slot.store(slot, Ordering::Relaxed);
        progress
            .at_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let frame = DecodedFrame {
            slot,
            picture: picture.freeze(),
        };
        if tx.send(frame).await.is_err() {
            return "the switcher is gone".to_string();
        }
        slot += 1;
    }
}

/// Reads PCM in chunks of whole sample frames, counting epoch samples from `first_sample`.
async fn read_pcm(
    mut stdout: ChildStdout,
    sample_bytes: usize,
    first_sample: u64,
    tx: mpsc::Sender<DecodedAudio>,
) -> String {
    let mut sample = first_sample;
    loop {
        let mut pcm = BytesMut::zeroed(PCM_CHUNK * sample_bytes);
        if let Err(e) = stdout.read_exact(&mut pcm).await {
            return format!("audio decoder output ended: {e}");
        }
        let chunk = DecodedAudio {
            first_sample: sample,
            pcm: pcm.freeze(),
        };
        if tx.send(chunk).await.is_err() {
            return "the switcher is gone".to_string();
        }
        sample += PCM_CHUNK as u64;
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
