//! The switcher of a pipeline. Once per frame slot, `latency` after the slot's time, it takes
//! the picture and the slot's PCM from the input the failover policy picks, or a fill picture
//! and silence, and hands the encoders one continuous raw stream: input losses, switches and
//! timestamp jumps never reach the encoders as a gap. It scores every slot for the quality
//! book, which the segment output reads when it delivers segment N.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use channel::EventKind;
use failover::{
    FailReason, FillFrame, InputSelector, LossBehavior, Observation, QualityBook, SlotQuality,
    Switch, fill_frame, mean_luma, pcm_level_dbfs,
};
use tokio::sync::mpsc;

use crate::command::sample_bytes;
use crate::decode::{DecodedAudio, DecodedFrame};
use crate::status::Phase;
use crate::{PipelineCtx, now};

/// What the switcher hands an encoder: the raw data of one slot, or a pause (no input, and the
/// channel pauses rather than fills).
pub enum RawSlot {
    Data { slot: u64, bytes: Bytes },
    Pause,
}

/// A slot handled this much after its due time was late (the switcher fell behind).
const LATE: Duration = Duration::from_millis(200);
/// Further behind than this, the switcher skips ahead to now rather than catching up.
const SKIP_AHEAD: Duration = Duration::from_secs(3);
/// The most the switcher's latency grows to for late inputs, and the margin (and step) it adds.
const MAX_LATENCY: Duration = Duration::from_secs(5);
const LATENCY_MARGIN: Duration = Duration::from_millis(250);
/// How long an input's pictures must keep coming late before the latency is raised: longer
/// than a decoder takes to flush the burst of stale pictures it makes after a gap.
const LATE_FOR: Duration = Duration::from_secs(1);

/// The switcher's end of one input's decoders.
pub(crate) struct Tap {
    pub name: String,
    pub video: mpsc::Receiver<DecodedFrame>,
    pub audio: mpsc::Receiver<DecodedAudio>,
    peeked: Option<DecodedFrame>,
    pcm: VecDeque<DecodedAudio>,
    /// The newest picture that came after its slot was taken: the input is later than the
    /// switcher's latency.
    newest_stale: Option<u64>,
    /// Slots in a row that found only stale pictures of this input.
    late_streak: u32,
}

impl Tap {
    pub fn new(
        name: String,
        video: mpsc::Receiver<DecodedFrame>,
        audio: mpsc::Receiver<DecodedAudio>,
    ) -> Self {
        Self {
            name,
            video,
            audio,
            peeked: None,
            pcm: VecDeque::new(),
            newest_stale: None,
            late_streak: 0,
        }
    }

    /// The picture of `slot`, if it came in time; older pictures are dropped, newer kept.
    fn take_picture(&mut self, slot: u64) -> Option<Bytes> {
        loop {
            let frame = match self.peeked.take() {
                Some(frame) => frame,
                None => self.video.try_recv().ok()?,
            };
            match frame.slot.cmp(&slot) {
                std::cmp::Ordering::Less => {
                    self.newest_stale = Some(frame.slot);
                    continue;
                }
                std::cmp::Ordering::Equal => return Some(frame.picture),
                std::cmp::Ordering::Greater => {
                    self.peeked = Some(frame);
                    return None;
                }
            }
        }
    }

    /// Samples `[from, to)` into `out` (silence where missing); whether all of them were there.
    fn take_pcm(&mut self, from: u64, to: u64, sample_bytes: usize, out: &mut BytesMut) -> bool {
        while self.pcm.back().is_none_or(|c| end_of(c, sample_bytes) < to) {
            match self.audio.try_recv() {
                Ok(chunk) => self.pcm.push_back(chunk),
                Err(_) => break,
            }
        }
        while self
            .pcm
            .front()
            .is_some_and(|c| end_of(c, sample_bytes) <= from)
        {
            self.pcm.pop_front();
        }
        let start = out.len();
        out.resize(start + (to - from) as usize * sample_bytes, 0);
        let mut covered = 0;
        for chunk in &self.pcm {
            let lo = chunk.first_sample.max(from);
            let hi = end_of(chunk, sample_bytes).min(to);
            if lo >= hi {
                continue;
            }
            let src = (lo - chunk.first_sample) as usize * sample_bytes;
            let dst = start + (lo - from) as usize * sample_bytes;
            let len = (hi - lo) as usize * sample_bytes;
            out[dst..dst + len].copy_from_slice(&chunk.pcm[src..src + len]);
            covered += hi - lo;
        }
        covered == to - from
    }
}

/// Bytes of PCM in the longest frame slot (slots differ by a sample at rates like 29.97).
fn longest_slot_pcm(ctx: &PipelineCtx) -> usize {
    let rate = ctx.grid.rate();
    let samples = (u64::from(ctx.spec.audio.sample_rate) * u64::from(rate.den()))
        .div_ceil(u64::from(rate.num()));
    samples as usize * sample_bytes(&ctx.spec.audio)
}

fn end_of(chunk: &DecodedAudio, sample_bytes: usize) -> u64 {
    chunk.first_sample + (chunk.pcm.len() / sample_bytes) as u64
}

pub(crate) struct Switcher {
    pub ctx: Arc<PipelineCtx>,
    pub taps: Vec<Tap>,
    pub book: Arc<Mutex<QualityBook>>,
    pub video_out: mpsc::Sender<RawSlot>,
    pub audio_out: mpsc::Sender<RawSlot>,
    /// The slate picture, if the channel has one (black otherwise).
    pub slate: Option<Bytes>,
}

/// What the switcher remembers between slots.
struct State {
    selector: InputSelector,
    last_picture: Option<Bytes>,
    black: Bytes,
    /// Zeros for the longest slot of PCM; a fill slot's silence is a slice of it.
    silence: Bytes,
    /// When (slot time, ms) the last input picture went out.
    last_source_ms: Option<u64>,
    paused: bool,
    failing: Vec<Option<FailReason>>,
    /// Whether each input has delivered a picture yet.
    delivered: Vec<bool>,
    /// How long after its time a slot is taken: the configured latency, raised when an input's
    /// pictures keep coming later than that (never lowered: that would cut slots out).
    latency: Duration,
}

impl Switcher {
    pub async fn run(mut self) {
        let rate = self.ctx.grid.rate();
        let canvas = self.ctx.canvas;
        let mut state = State {
            selector: InputSelector::new(&self.ctx.spec.failover, self.taps.len()),
            last_picture: None,
            black: Bytes::from(failover::luma_black_frame(canvas.width, canvas.height)),
            silence: Bytes::from(vec![0u8; longest_slot_pcm(&self.ctx)]),
            last_source_ms: None,
            paused: false,
            failing: vec![None; self.taps.len()],
            delivered: vec![false; self.taps.len()],
            latency: self.ctx.latency,
        };
        let mut slot = rate.slot_at(now().saturating_sub(state.latency)) + 1;
        loop {
            let due = rate.slot_time(slot) + state.latency;
            let now = now();
            if due > now {
                tokio::time::sleep(due - now).await;
            } else if now - due > SKIP_AHEAD {
                tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed,
                    behind_ms = (now - due).as_millis() as u64, "switcher fell behind; skipping ahead");
                slot = rate.slot_at(now.saturating_sub(state.latency));
                continue;
            }
            let late = crate::now().saturating_sub(due) > LATE;
            if self.step(&mut state, slot, late).is_err() {
                return;
            }
            slot += 1;
        }
    }

    /// Handles one slot. `Err` when the encoders are gone (the pipeline is stopping).
    fn step(&mut self, state: &mut State, slot: u64, late: bool) -> Result<(), ()> {
        let rate = self.ctx.grid.rate();
        let at_ms = rate.slot_time(slot).as_millis() as u64;
        let audio = &self.ctx.spec.audio;
        let sb = sample_bytes(audio);
        let (from, to) = (
            rate.first_sample(slot, audio.sample_rate),
            rate.first_sample(slot + 1, audio.sample_rate),
        );
        let (takes, late_by) = self.take_inputs(state, slot, (from, to), at_ms);
        if late_by > 0 {
            self.raise_latency(state, late_by);
        }
        let failover = &self.ctx.spec.failover;
        let at_boundary = slot.is_multiple_of(u64::from(self.ctx.grid.frames()));
        let selection = state.selector.select(at_ms, at_boundary);
        if let Some(switch) = &selection.switch {
            self.report_switch(switch);
        }
        self.report_failing(state, at_ms);
        let active = selection.active;
        let taken = active.and_then(|i| {
            let (picture, pcm) = takes.get(i)?;
            Some((picture.clone()?, pcm.clone(), i))
        });
        let (picture, pcm, quality) = match taken {
            Some((picture, pcm, i)) => {
                state.last_source_ms = Some(at_ms);
                state.last_picture = Some(picture.clone());
                let quality = if state.failing.get(i).copied().flatten().is_some() {
                    SlotQuality::Degraded
                } else {
                    SlotQuality::Source
                };
                (picture, pcm, quality)
            }
            // Nothing has ever come in: there is nothing to fill for yet.
            None if state.last_source_ms.is_none() => return Ok(()),
            None => {
                if active.is_none() && failover.on_input_loss == LossBehavior::Pause {
                    // Finish the segment in progress, then stop until an input returns.
                    if at_boundary && !state.paused {
                        state.paused = true;
                        self.pause()?;
                    }
                    if state.paused {
                        return Ok(());
                    }
                }
                let since = at_ms.saturating_sub(state.last_source_ms.unwrap_or(at_ms));
                let picture = self.fill(state, since);
                let silence = state.silence.slice(..(to - from) as usize * sb);
                (picture, silence, SlotQuality::Filled)
            }
        };
        if state.paused {
            // Resume only on a segment boundary: the encoders start on one.
            if !at_boundary {
                return Ok(());
            }
            state.paused = false;
        }
        let quality = if late { SlotQuality::Late } else { quality };
        self.record(slot, quality);
        self.send(slot, picture, pcm)
    }

    /// Every input's picture and PCM for `slot`, observed by the failover policy; and by how
    /// many slots an input's pictures keep coming late, if they do.
    fn take_inputs(
        &mut self,
        state: &mut State,
        slot: u64,
        (from, to): (u64, u64),
        at_ms: u64,
    ) -> (Vec<(Option<Bytes>, Bytes)>, u64) {
        let failover = &self.ctx.spec.failover;
        let canvas = self.ctx.canvas;
        let sb = sample_bytes(&self.ctx.spec.audio);
        let late_streak = (LATE_FOR.as_secs_f64() * self.ctx.grid.rate().as_f64()).ceil() as u32;
        let mut late_by = 0;
        let mut takes = Vec::with_capacity(self.taps.len());
        for (i, tap) in self.taps.iter_mut().enumerate() {
            let picture = tap.take_picture(slot);
            let mut pcm = BytesMut::new();
            tap.take_pcm(from, to, sb, &mut pcm);
            let black = match (&picture, failover.black) {
                (Some(p), Some(black)) => mean_luma(p, canvas.width, canvas.height) <= black.luma,
                _ => false,
            };
            let obs = Observation {
                frame: picture.is_some(),
                black,
                silent: failover
                    .silence
                    .is_some_and(|s| pcm_level_dbfs(&pcm) <= s.db),
            };
            state.selector.observe(i, obs, at_ms);
            state.delivered[i] |= obs.frame;
            // A burst of stale pictures (a decoder catching up after a gap) is not lateness;
            // pictures that keep coming after their slot are.
            match (&picture, tap.newest_stale.take()) {
                (None, Some(stale)) => {
                    tap.late_streak += 1;
                    if tap.late_streak >= late_streak {
                        late_by = late_by.max(slot - stale);
                        tap.late_streak = 0;
                    }
                }
                (Some(_), _) => tap.late_streak = 0,
                (None, None) => {}
            }
            takes.push((picture, pcm.freeze()));
        }
        (takes, late_by)
    }

    /// An input's pictures came `late_by` slots after the switcher took their slot: wait that
    /// much longer (and a margin) from now on, so that its next pictures make it.
    fn raise_latency(&self, state: &mut State, late_by: u64) {
        let cap = MAX_LATENCY.max(self.ctx.latency);
        if state.latency >= cap {
            return;
        }
        let frame = Duration::from_secs_f64(1.0 / self.ctx.grid.rate().as_f64());
        let wanted = state.latency + frame * late_by as u32 + LATENCY_MARGIN;
        // In whole steps, so that two pipelines on one late input most likely agree.
        let steps = wanted.as_nanos().div_ceil(LATENCY_MARGIN.as_nanos()) as u32;
        let raised = (LATENCY_MARGIN * steps).min(cap);
        tracing::info!(channel = %self.ctx.spec.id, feed = %self.ctx.feed,
            latency_ms = raised.as_millis() as u64, "input later than the switcher's latency; latency raised");
        state.latency = raised;
        self.ctx
            .switcher_latency_ms
            .store(raised.as_millis() as u64, Ordering::Relaxed);
        metrics::gauge!("steadycast_switcher_latency_seconds", &self.ctx.labels())
            .set(raised.as_secs_f64());
    }

    fn fill(&self, state: &State, since_ms: u64) -> Bytes {
        match fill_frame(&self.ctx.spec.failover.fill, since_ms) {
            FillFrame::Repeat => state
                .last_picture
                .clone()
                .unwrap_or_else(|| state.black.clone()),
            FillFrame::Black => state.black.clone(),
            FillFrame::Slate => self.slate.clone().unwrap_or_else(|| state.black.clone()),
        }
    }

    fn record(&self, slot: u64, quality: SlotQuality) {
        let n = slot / u64::from(self.ctx.grid.frames());
        if let Ok(mut book) = self.book.lock() {
            book.record(n, quality);
        }
        if quality != SlotQuality::Source {
            let kind = match quality {
                SlotQuality::Degraded => "degraded",
                SlotQuality::Filled => "filled",
                _ => "late",
            };
            let [channel, feed] = self.ctx.labels();
            metrics::counter!(
                "steadycast_switcher_frames_total",
                &[channel, feed, ("kind", kind.to_string())]
            )
            .increment(1);
        }
    }

    /// Hands the slot to both encoders without ever waiting: a stuck encoder loses slots (and
    /// restarts on the gap), it never holds up the switcher.
    fn send(&self, slot: u64, picture: Bytes, pcm: Bytes) -> Result<(), ()> {
        let outs = [(&self.video_out, picture), (&self.audio_out, pcm)];
        for (out, bytes) in outs {
            match out.try_send(RawSlot::Data { slot, bytes }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("steadycast_switcher_dropped_total", &self.ctx.labels())
                        .increment(1);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        Ok(())
    }

    fn pause(&self) -> Result<(), ()> {
        self.ctx.status.update(|s| s.phase = Phase::Paused);
        for out in [&self.video_out, &self.audio_out] {
            if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(RawSlot::Pause) {
                return Err(());
            }
        }
        Ok(())
    }

    fn report_switch(&self, switch: &Switch) {
        let name = |i: Option<usize>| {
            i.and_then(|i| self.taps.get(i))
                .map_or("none".to_string(), |t| t.name.clone())
        };
        let (from, to) = (name(switch.from), name(switch.to));
        let reason = format!("{:?}", switch.reason);
        tracing::warn!(channel = %self.ctx.spec.id, feed = %self.ctx.feed, %from, %to,
            %reason, "input switch");
        let [channel, feed] = self.ctx.labels();
        for (i, tap) in self.taps.iter().enumerate() {
            let active = switch.to == Some(i);
            let role = if i == 0 { "primary" } else { "backup" };
            let labels = [
                channel.clone(),
                feed.clone(),
                ("input", tap.name.clone()),
                ("role", role.to_string()),
            ];
            metrics::gauge!("steadycast_pipeline_active_input", &labels)
                .set(f64::from(u8::from(active)));
        }
        let kind = match switch.to {
            Some(_) => EventKind::InputSwitched,
            None => EventKind::InputLost,
        };
        if switch.from.is_some() {
            metrics::counter!("steadycast_input_switches_total", &[channel, feed]).increment(1);
        }
        self.ctx
            .emit(kind, format!("from {from} to {to}: {reason}"));
        // Pausing fills until the segment ends too; `pause` says when it stops.
        let phase = if switch.to.is_some() {
            Phase::Encoding
        } else {
            Phase::Filling
        };
        self.ctx.status.update(|s| {
            s.input = switch.to.map(|_| to.clone());
            s.phase = phase;
            s.switches += u64::from(switch.from.is_some());
        });
    }

    /// Events and status when an input starts or stops failing; time lost in metrics.
    fn report_failing(&self, state: &mut State, at_ms: u64) {
        let frame_ms =
            1000 * u64::from(self.ctx.grid.rate().den()) / u64::from(self.ctx.grid.rate().num());
        for (i, tap) in self.taps.iter().enumerate() {
            let failing = state.selector.failing(i, at_ms);
            if failing == Some(FailReason::Loss) {
                let [channel, feed] = self.ctx.labels();
                metrics::counter!(
                    "steadycast_input_loss_milliseconds_total",
                    &[channel, feed, ("input", tap.name.clone())]
                )
                .increment(frame_ms);
            }
            if state.failing[i] != failing {
                state.failing[i] = failing;
                let why = failing.map(|f| format!("{f:?}").to_lowercase());
                // An input that never delivered is waiting, not failing.
                if let Some(why) = why.as_ref().filter(|_| state.delivered[i]) {
                    self.ctx.emit(
                        EventKind::InputFailed,
                        format!("input {} failing: {why}", tap.name),
                    );
                }
                self.ctx.status.update_input(i, |s| s.failing = why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> (Tap, mpsc::Sender<DecodedFrame>, mpsc::Sender<DecodedAudio>) {
        let (video, video_rx) = mpsc::channel(16);
        let (audio, audio_rx) = mpsc::channel(16);
        (Tap::new("main".into(), video_rx, audio_rx), video, audio)
    }

    fn picture(slot: u64) -> DecodedFrame {
        DecodedFrame {
            slot,
            picture: Bytes::from(vec![slot as u8; 4]),
        }
    }

    #[test]
    fn pictures_are_taken_by_slot_stale_ones_dropped_early_ones_kept() {
        let (mut tap, video, _audio) = tap();
        for slot in [5, 6, 8] {
            video.try_send(picture(slot)).unwrap();
        }
        assert_eq!(tap.take_picture(4), None);
        assert_eq!(tap.take_picture(5), Some(Bytes::from(vec![5u8; 4])));
        assert_eq!(tap.newest_stale, None);
        // 6 came too late for slot 7; 8 waits for its slot.
        assert_eq!(tap.take_picture(7), None);
        assert_eq!(tap.newest_stale, Some(6));
        assert_eq!(tap.take_picture(8), Some(Bytes::from(vec![8u8; 4])));
        assert_eq!(tap.take_picture(9), None);
    }

    #[test]
    fn pcm_is_cut_at_any_sample_and_silence_fills_what_is_missing() {
        let (mut tap, _video, audio) = tap();
        // Two chunks of 100 stereo s16 samples (4 bytes each), samples 100..300.
        for (first, value) in [(100u64, 1u8), (200, 2)] {
            let pcm = Bytes::from(vec![value; 400]);
            audio
                .try_send(DecodedAudio {
                    first_sample: first,
                    pcm,
                })
                .unwrap();
        }
        let mut out = BytesMut::new();
        assert!(tap.take_pcm(150, 250, 4, &mut out));
        assert_eq!(out.len(), 400);
        assert!(out[..200].iter().all(|&b| b == 1) && out[200..].iter().all(|&b| b == 2));
        let mut out = BytesMut::new();
        assert!(!tap.take_pcm(290, 310, 4, &mut out));
        assert!(out[..40].iter().all(|&b| b == 2) && out[40..].iter().all(|&b| b == 0));
        // Chunks wholly before the range are gone.
        assert_eq!(tap.pcm.len(), 1);
    }
}
