//! What a channel is: its inputs, which input feeds each pipeline, its ABR ladder, its segment
//! grid and its windows. Defined in TOML (`steadycast serve --config`) or JSON (the REST API),
//! checked by [`ChannelSpec::validate`] before anything runs.

mod event;
mod input;
mod playback;
mod secret;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timeline::{Feed, FrameRate, SegmentGrid};

pub use failover::FailoverSpec;

pub use event::{Event, EventKind, Events};
pub use input::InputSpec;
pub use playback::PlaybackAccess;
pub use secret::Secret;

/// A channel definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// Appears in every URL: `[a-z0-9_-]`, 1 to 64 characters.
    pub id: String,
    /// Inputs by name. One input feeds both pipelines; with two, see `pipelines`.
    pub inputs: BTreeMap<String, InputSpec>,
    /// Which input each pipeline encodes; by default the only input, or inputs named `a`/`b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<PipelineInputs>,
    #[serde(default = "default_frame_rate")]
    pub frame_rate: FrameRate,
    /// Target segment duration; rounded to a whole number of frames.
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: f64,
    #[serde(default = "default_ladder")]
    pub ladder: Vec<RenditionSpec>,
    #[serde(default)]
    pub audio: AudioSpec,
    /// x264 preset of every rendition.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// How many seconds a live playlist or MPD lists.
    #[serde(default = "default_live_window")]
    pub live_window_seconds: u32,
    /// How far back segments are kept (the startover / DVR window); older ones are deleted
    /// from the catalog and the store.
    #[serde(default = "default_startover_window")]
    pub startover_window_seconds: u32,
    /// The longest range one live-to-VOD harvest may copy.
    #[serde(default = "default_max_harvest")]
    pub max_harvest_seconds: u32,
    /// Input failover inside each pipeline, and what a pipeline without input emits.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// The secret pipelines present when they PUT segments to the packager. Generated when
    /// absent; never shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_credential: Option<String>,
    /// Signed playback URLs and a CDN's header; both off by default.
    #[serde(default)]
    pub playback: PlaybackAccess,
    /// Per input, the source networks that may publish to it (`{ main = ["203.0.113.0/24"] }`),
    /// as a managed encoder's input security group; an input not named here takes any source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_sources: BTreeMap<String, Vec<access::Cidr>>,
    /// Stream keys replaced by a rotation that still open their input for a while.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_keys: Vec<RetiringKey>,
}

/// A stream key replaced by a rotation: it opens `input` until `until_ms` (Unix ms), so the
/// publisher moves to the new key without a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiringKey {
    pub input: String,
    pub stream_key: String,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInputs {
    pub a: PipelineInput,
    pub b: PipelineInput,
}

/// The input(s) one pipeline encodes: a name, or a primary with a backup it fails over to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PipelineInput {
    Only(String),
    Pair {
        primary: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup: Option<String>,
    },
}

impl PipelineInput {
    /// The primary first, then the backup.
    pub fn names(&self) -> Vec<&str> {
        match self {
            PipelineInput::Only(name) => vec![name.as_str()],
            PipelineInput::Pair { primary, backup } => std::iter::once(primary.as_str())
                .chain(backup.as_deref())
                .collect(),
        }
    }
}

/// One video rendition of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    #[serde(default = "default_audio_bitrate")]
    pub bitrate_kbps: u32,
    #[serde(default = "default_audio_channels")]
    pub channels: u16,
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
}

impl Default for AudioSpec {
    fn default() -> Self {
        Self {
            bitrate_kbps: default_audio_bitrate(),
            channels: default_audio_channels(),
            sample_rate: default_sample_rate(),
        }
    }
}

/// The audio rendition's name in URLs.
pub const AUDIO_RENDITION: &str = "audio";

/// The header in which a pipeline in a cluster sends, with every upload, the epoch of the lease
/// it runs under; the packager lists nothing from an epoch that is no longer current.
pub const LEASE_EPOCH_HEADER: &str = "steadycast-lease-epoch";

/// What a redacted secret reads as.
pub const REDACTED: &str = "…";

impl ChannelSpec {
    /// The definition without its secrets (stream keys, SRT passphrases, the ingest
    /// credential), as it is shown after the answer that created it.
    pub fn redacted(&self) -> ChannelSpec {
        let mut shown = self.clone();
        shown.ingest_credential = None;
        shown.playback.redact();
        for retiring in &mut shown.retiring_keys {
            retiring.stream_key = REDACTED.into();
        }
        for input in shown.inputs.values_mut() {
            match input {
                InputSpec::Rtmp { stream_key } => *stream_key = REDACTED.into(),
                InputSpec::Srt {
                    passphrase: Some(p),
                } => *p = REDACTED.into(),
                _ => {}
            }
        }
        shown
    }

    /// The keys of `input` still open after a rotation at `now_ms`, with their ends.
    pub fn retiring_keys_of(&self, input: &str, now_ms: u64) -> Vec<(String, u64)> {
        self.retiring_keys
            .iter()
            .filter(|r| r.input == input && r.until_ms > now_ms)
            .map(|r| (r.stream_key.clone(), r.until_ms))
            .collect()
    }

    /// The networks that may publish to `input` (empty: any).
    pub fn allowed_sources_of(&self, input: &str) -> Vec<access::Cidr> {
        self.allowed_sources.get(input).cloned().unwrap_or_default()
    }

    /// The epoch grid: `segment_seconds` rounded to whole frames.
    pub fn grid(&self) -> Result<SegmentGrid, String> {
        SegmentGrid::nearest(self.frame_rate, self.segment_seconds).map_err(|e| e.to_string())
    }

    /// The inputs that pipeline `feed` encodes: its primary, then its backup if it has one.
    /// Empty when the definition does not say (see [`ChannelSpec::validate`]).
    pub fn inputs_of(&self, feed: Feed) -> Vec<&str> {
        if let Some(p) = &self.pipelines {
            return match feed {
                Feed::A => p.a.names(),
                Feed::B => p.b.names(),
            };
        }
        let mut names = self.inputs.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => vec![only.as_str()],
            _ => self
                .inputs
                .get_key_value(feed.as_str())
                .map(|(k, _)| vec![k.as_str()])
                .unwrap_or_default(),
        }
    }

    /// Every problem with the definition, each as a sentence naming the field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if !is_name(&self.id) {
            errors.push(format!("id `{}`: use 1-64 of a-z, 0-9, `-`, `_`", self.id));
        }
        if let Err(e) = self.grid() {
            errors.push(format!("segment_seconds: {e}"));
        }
        if self.inputs.is_empty() || self.inputs.len() > MAX_INPUTS {
            errors.push(format!(
                "inputs: give 1 to {MAX_INPUTS} inputs, not {}",
                self.inputs.len()
            ));
        }
        for name in self.inputs.keys() {
            if !is_name(name) {
                errors.push(format!(
                    "inputs.{name}: input names use 1-64 of a-z, 0-9, `-`, `_`"
                ));
            }
        }
        for feed in Feed::BOTH {
            let names = self.inputs_of(feed);
            if names.is_empty() {
                errors.push(format!(
                    "pipelines.{feed}: with several inputs not named `a` and `b`, say which \
                     input each pipeline encodes"
                ));
            }
            for name in &names {
                if !self.inputs.contains_key(*name) {
                    errors.push(format!("pipelines.{feed}: no input named `{name}`"));
                }
            }
            if names.len() == 2 && names[0] == names[1] {
                errors.push(format!(
                    "pipelines.{feed}: the backup must be another input than the primary"
                ));
            }
        }
        errors.extend(self.failover.validate());
        self.playback.validate(&mut errors);
        for (input, networks) in &self.allowed_sources {
            if !self.inputs.contains_key(input) {
                errors.push(format!("allowed_sources.{input}: no input named `{input}`"));
            }
            if networks.is_empty() || networks.len() > 64 {
                errors.push(format!("allowed_sources.{input}: give 1 to 64 networks"));
            }
        }
        self.validate_ladder(&mut errors);
        if !(6..=86_400).contains(&self.live_window_seconds) {
            errors.push("live_window_seconds: give 6 to 86400".to_string());
        }
        if self.startover_window_seconds < self.live_window_seconds {
            errors.push("startover_window_seconds: give at least live_window_seconds".to_string());
        }
        if !(1..=86_400).contains(&self.max_harvest_seconds) {
            errors.push("max_harvest_seconds: give 1 to 86400".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validate_ladder(&self, errors: &mut Vec<String>) {
        if self.ladder.is_empty() {
            errors.push("ladder: give at least one rendition".to_string());
        }
        for (i, r) in self.ladder.iter().enumerate() {
            if !is_name(&r.name) || r.name == AUDIO_RENDITION {
                errors.push(format!(
                    "ladder[{i}].name `{}`: use a-z, 0-9, `-`, `_`, not `audio`",
                    r.name
                ));
            }
            if self.ladder[..i].iter().any(|o| o.name == r.name) {
                errors.push(format!("ladder[{i}].name `{}` is used twice", r.name));
            }
            let even = |v: u32| (16..=7680).contains(&v) && v.is_multiple_of(2);
            if !even(r.width) || !even(r.height) {
                errors.push(format!(
                    "ladder[{i}]: {}x{} must be even, 16..7680",
                    r.width, r.height
                ));
            }
            if !(16..=100_000).contains(&r.bitrate_kbps) {
                errors.push(format!("ladder[{i}].bitrate_kbps: give 16 to 100000"));
            }
        }
        if ![32_000, 44_100, 48_000].contains(&self.audio.sample_rate) {
            errors.push("audio.sample_rate: give 32000, 44100 or 48000".to_string());
        }
        if !(1..=2).contains(&self.audio.channels) {
            errors.push("audio.channels: give 1 or 2".to_string());
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            errors.push(format!(
                "preset `{}`: give one of {}",
                self.preset,
                X264_PRESETS.join(", ")
            ));
        }
    }
}

/// Two contribution feeds, each with a backup path.
const MAX_INPUTS: usize = 4;

/// The x264 presets a channel (or a chaos run's `preset` fault) may name.
pub const X264_PRESETS: [&str; 9] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

/// A name that appears in URLs and file names: 1 to 64 of `a-z`, `0-9`, `-`, `_`.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn default_frame_rate() -> FrameRate {
    FrameRate::new(30, 1).unwrap_or_else(|_| unreachable!("30/1 is a valid rate"))
}

fn default_segment_seconds() -> f64 {
    2.0
}

fn default_preset() -> String {
    "veryfast".to_string()
}

fn default_live_window() -> u32 {
    60
}

fn default_startover_window() -> u32 {
    2 * 3600
}

fn default_max_harvest() -> u32 {
    24 * 3600
}

fn default_audio_bitrate() -> u32 {
    128
}

fn default_audio_channels() -> u16 {
    2
}

fn default_sample_rate() -> u32 {
    48_000
}

/// The default ladder of `serve`: 720p, 480p and 360p.
pub fn default_ladder() -> Vec<RenditionSpec> {
    [
        ("720p", 1280, 720, 3000),
        ("480p", 854, 480, 1500),
        ("360p", 640, 360, 800),
    ]
    .into_iter()
    .map(|(name, width, height, bitrate_kbps)| RenditionSpec {
        name: name.to_string(),
        width,
        height,
        bitrate_kbps,
    })
    .collect()
}

#[cfg(test)]
mod tests;
