//! What a pipeline is doing, for the API and the chaos runner: its phase, the input it takes
//! pictures from, each input's decoder and lock, the encoder's process id and how often it
//! restarted.

use std::sync::Mutex;

use serde::Serialize;
use timeline::LockMode;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No input has delivered a picture yet.
    #[default]
    WaitingForInput,
    /// The encoders run on pictures from an input.
    Encoding,
    /// The encoders run on fill pictures: no input delivers.
    Filling,
    /// No input delivers and the channel pauses: nothing is encoded.
    Paused,
    /// An encoder failed; waiting out the backoff before the next start.
    Restarting,
}

/// One input of the pipeline, as its decoder sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputState {
    pub name: String,
    /// `primary` or `backup`.
    pub role: &'static str,
    pub session: Option<u64>,
    pub lock: Option<LockMode>,
    /// Microseconds added to the input's timestamps to make them Unix time.
    pub offset_us: Option<i64>,
    pub decoder_pid: Option<u32>,
    pub decoder_restarts: u64,
    /// Why the failover policy counts this input as failing (`loss`, `black`, `silence`).
    pub failing: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineState {
    pub phase: Phase,
    /// The input the pictures are taken from now.
    pub input: Option<String>,
    pub inputs: Vec<InputState>,
    /// The video encoder's process id.
    pub encoder_pid: Option<u32>,
    pub audio_encoder_pid: Option<u32>,
    /// Segments the running encoders have delivered: a restarted pipeline has rejoined once
    /// this counts again.
    pub segments_this_run: u64,
    pub restarts: u64,
    pub switches: u64,
    pub last_error: Option<String>,
}

/// Shared between a running pipeline and whoever reports on it.
#[derive(Debug, Default)]
pub struct PipelineStatus(Mutex<PipelineState>);

impl PipelineStatus {
    pub fn snapshot(&self) -> PipelineState {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut PipelineState)) {
        change(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn update_input(&self, index: usize, change: impl FnOnce(&mut InputState)) {
        self.update(|s| {
            if let Some(input) = s.inputs.get_mut(index) {
                change(input);
            }
        });
    }
}
