//! What a pipeline is doing, for the API and the chaos runner: its phase, input, lock, the
//! encoder's process id and how often it restarted.

use std::sync::Mutex;

use serde::Serialize;
use timeline::LockMode;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No publisher on the pipeline's input.
    #[default]
    WaitingForInput,
    /// A session started; reading its first timestamps.
    Locking,
    Encoding,
    /// The encoder failed; waiting out the backoff before the next start.
    Restarting,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineState {
    pub phase: Phase,
    pub input: String,
    pub session: Option<u64>,
    pub lock: Option<LockMode>,
    /// Microseconds added to the input's timestamps to make them Unix time.
    pub offset_us: Option<i64>,
    pub encoder_pid: Option<u32>,
    /// Segments the running encoder has delivered: a restarted pipeline has rejoined once
    /// this counts again.
    pub segments_this_run: u64,
    pub restarts: u64,
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
}
