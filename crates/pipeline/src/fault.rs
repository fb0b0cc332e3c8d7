//! Faults a chaos run injects into one pipeline for a while: uploads delayed, corrupted (same
//! length, damaged bytes) or truncated after their digest was taken, as a slow or damaging
//! network would; or an input cut off (or flapping), as a failed contribution link would.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Every upload waits this long before it is sent.
    Delay { ms: u64 },
    /// Every media segment's bytes are damaged in the middle.
    Corrupt,
    /// Every media segment loses its second half.
    Truncate,
    /// The pipeline's next video encoder runs this x264 preset instead of the channel's: a
    /// rolling upgrade, whose encoder writes another CMAF header than the other pipeline's.
    Preset { preset: String },
    /// The pipeline receives nothing from `input` (every input of the pipeline when absent);
    /// with `flap_ms`, the input is alternately cut and restored for that long.
    CutInput {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flap_ms: Option<u64>,
    },
}

/// The fault in force on a pipeline, if any, since when and until when.
#[derive(Debug, Default)]
pub struct Faults(Mutex<Option<(Fault, Instant, Instant)>>);

impl Fault {
    /// Refuses a fault that could not be carried out (a preset x264 does not have).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Fault::Preset { preset } if !channel::X264_PRESETS.contains(&preset.as_str()) => {
                Err(format!(
                    "preset `{preset}`: give one of {}",
                    channel::X264_PRESETS.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Faults {
    pub fn inject(&self, fault: Fault, lasting: Duration) {
        let now = Instant::now();
        *self.lock() = Some((fault, now, now + lasting));
    }

    /// Whether the pipeline's input `name` is cut off at this moment.
    pub fn input_cut(&self, name: &str) -> bool {
        let slot = self.lock();
        let Some((Fault::CutInput { input, flap_ms }, since, until)) = slot.as_ref() else {
            return false;
        };
        let now = Instant::now();
        if now >= *until || input.as_deref().is_some_and(|i| i != name) {
            return false;
        }
        // Flapping: cut during even periods, restored during odd ones.
        flap_ms.filter(|ms| *ms > 0).is_none_or(|ms| {
            (now.duration_since(*since).as_millis() / u128::from(ms)).is_multiple_of(2)
        })
    }

    /// The x264 preset a video encoder started now runs, when a fault overrides it.
    pub fn preset(&self) -> Option<String> {
        match self.current() {
            Some(Fault::Preset { preset }) => Some(preset),
            _ => None,
        }
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub fn current(&self) -> Option<Fault> {
        let mut slot = self.lock();
        match slot.as_ref() {
            Some((fault, _, until)) if Instant::now() < *until => Some(fault.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Fault, Instant, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body as the fault leaves it (headers are never damaged: a packager must be able to
/// accept a header to judge later segments).
pub fn damage(fault: &Fault, body: &Bytes) -> Bytes {
    match fault {
        Fault::Delay { .. } | Fault::CutInput { .. } | Fault::Preset { .. } => body.clone(),
        Fault::Corrupt => {
            let mut damaged = body.to_vec();
            let middle = damaged.len() / 2;
            for b in damaged.iter_mut().skip(middle).take(64) {
                *b ^= 0x5A;
            }
            Bytes::from(damaged)
        }
        Fault::Truncate => body.slice(..body.len() / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_expire() {
        let faults = Faults::default();
        faults.inject(Fault::Corrupt, Duration::from_secs(60));
        assert_eq!(faults.current(), Some(Fault::Corrupt));
        faults.inject(Fault::Truncate, Duration::ZERO);
        assert_eq!(faults.current(), None);
        faults.inject(Fault::Delay { ms: 5 }, Duration::from_secs(60));
        faults.clear();
        assert_eq!(faults.current(), None);
    }

    #[test]
    fn damage_keeps_or_halves_length() {
        let body = Bytes::from(vec![1u8; 1000]);
        let corrupt = damage(&Fault::Corrupt, &body);
        assert_eq!(corrupt.len(), 1000);
        assert_ne!(corrupt, body);
        assert_eq!(damage(&Fault::Truncate, &body).len(), 500);
        let json = serde_json::to_string(&Fault::Delay { ms: 3000 }).unwrap();
        assert_eq!(json, r#"{"kind":"delay","ms":3000}"#);
    }

    #[test]
    fn an_input_cut_names_its_input_and_may_flap() {
        let faults = Faults::default();
        assert!(!faults.input_cut("main"));
        let cut = |input: Option<&str>| Fault::CutInput {
            input: input.map(str::to_string),
            flap_ms: None,
        };
        faults.inject(cut(Some("main")), Duration::from_secs(60));
        assert!(faults.input_cut("main"));
        assert!(!faults.input_cut("backup"));
        faults.inject(cut(None), Duration::from_secs(60));
        assert!(faults.input_cut("main") && faults.input_cut("backup"));
        faults.inject(cut(None), Duration::ZERO);
        assert!(!faults.input_cut("main"));
        let json = r#"{"kind":"cut-input","input":"main","flap_ms":300}"#;
        let flap: Fault = serde_json::from_str(json).unwrap();
        // The first flap period is a cut.
        faults.inject(flap, Duration::from_secs(60));
        assert!(faults.input_cut("main"));
    }
}
