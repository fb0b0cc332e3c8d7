//! Input failover inside one pipeline, as pure logic: which input each frame slot is taken
//! from ([`policy`]), what replaces a missing frame ([`fill`]), how good a segment turned out
//! ([`quality`]) and the cheap picture/sound measures the triggers use ([`analysis`]).
//! Time is a parameter (milliseconds on any monotonic scale); nothing here does I/O.

pub mod analysis;
pub mod cmsd;
pub mod fill;
pub mod policy;
pub mod quality;

pub use analysis::{mean_luma, pcm_level_dbfs};
pub use fill::{FillFrame, fill_frame, luma_black_frame};
pub use policy::{FailReason, InputSelector, Observation, Selection, Switch, SwitchReason};
pub use quality::{QualityBook, SegmentTally, SlotQuality};

use serde::{Deserialize, Serialize};

/// A channel's failover settings: `[failover]` in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSpec {
    /// An input that delivers no frame for this long is lost.
    #[serde(default = "default_input_loss_ms")]
    pub input_loss_ms: u32,
    /// Black video for long enough fails an input (off unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub black: Option<BlackTrigger>,
    /// Audio silence for long enough fails an input (off unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<SilenceTrigger>,
    /// How long a failed input must stay healthy before it is preferred again.
    #[serde(default = "default_error_clear_ms")]
    pub error_clear_ms: u32,
    #[serde(default)]
    pub preference: Preference,
    /// What a pipeline with no input left does.
    #[serde(default)]
    pub on_input_loss: LossBehavior,
    #[serde(default)]
    pub fill: FillSpec,
    /// How long a frame may take from its timestamp to the switcher (network, decoding); the
    /// switcher takes each frame slot this long after its time.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u32,
    /// How long the packager holds a flawed copy of a segment (quality below 100) for the
    /// other pipeline's, which may be better.
    #[serde(default = "default_quality_grace_ms")]
    pub quality_grace_ms: u32,
}

/// Black video: mean luma at or below `luma` (0-255, limited range black is 16) for `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackTrigger {
    #[serde(default = "default_black_luma")]
    pub luma: u8,
    pub ms: u32,
}

/// Silence: audio level at or below `db` dBFS for `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceTrigger {
    #[serde(default = "default_silence_db")]
    pub db: f32,
    pub ms: u32,
}

/// Whether a pipeline goes back to its primary input once that has cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preference {
    #[default]
    PrimaryPreferred,
    /// Stay on whichever input is active until it fails.
    Sticky,
}

/// What a pipeline emits while it has no input at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossBehavior {
    /// Repeat the last frame, then black, then the slate: the pipeline never stops.
    #[default]
    Fill,
    /// Finish the current segment with fill, then emit nothing, so that the packager serves
    /// the other pipeline.
    Pause,
}

/// The fill sequence: the last frame for `repeat_ms`, black for `black_ms`, then the slate
/// (black again when there is none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillSpec {
    #[serde(default = "default_repeat_ms")]
    pub repeat_ms: u32,
    #[serde(default = "default_fill_black_ms")]
    pub black_ms: u32,
    /// An image file (any format ffmpeg reads), scaled to the picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slate: Option<String>,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            input_loss_ms: default_input_loss_ms(),
            black: None,
            silence: None,
            error_clear_ms: default_error_clear_ms(),
            preference: Preference::default(),
            on_input_loss: LossBehavior::default(),
            fill: FillSpec::default(),
            latency_ms: default_latency_ms(),
            quality_grace_ms: default_quality_grace_ms(),
        }
    }
}

impl Default for FillSpec {
    fn default() -> Self {
        Self {
            repeat_ms: default_repeat_ms(),
            black_ms: default_fill_black_ms(),
            slate: None,
        }
    }
}

impl FailoverSpec {
    /// Every problem, each as a sentence naming the field.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(100..=60_000).contains(&self.input_loss_ms) {
            errors.push("failover.input_loss_ms: give 100 to 60000".to_string());
        }
        if self.error_clear_ms > 3_600_000 {
            errors.push("failover.error_clear_ms: give at most 3600000".to_string());
        }
        if !(100..=10_000).contains(&self.latency_ms) {
            errors.push("failover.latency_ms: give 100 to 10000".to_string());
        }
        if self.quality_grace_ms > 10_000 {
            errors.push("failover.quality_grace_ms: give at most 10000".to_string());
        }
        if let Some(black) = self.black
            && !(100..=600_000).contains(&black.ms)
        {
            errors.push("failover.black.ms: give 100 to 600000".to_string());
        }
        if let Some(silence) = self.silence {
            if !(100..=600_000).contains(&silence.ms) {
                errors.push("failover.silence.ms: give 100 to 600000".to_string());
            }
            if !(-120.0..=0.0).contains(&silence.db) {
                errors.push("failover.silence.db: give -120 to 0 (dBFS)".to_string());
            }
        }
        errors
    }
}

fn default_input_loss_ms() -> u32 {
    1000
}
fn default_error_clear_ms() -> u32 {
    5000
}
fn default_latency_ms() -> u32 {
    1000
}
fn default_quality_grace_ms() -> u32 {
    500
}
fn default_black_luma() -> u8 {
    20
}
fn default_silence_db() -> f32 {
    -60.0
}
fn default_repeat_ms() -> u32 {
    1000
}
fn default_fill_black_ms() -> u32 {
    2000
}
