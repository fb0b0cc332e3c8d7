//! One input's health, judged from what it delivered slot by slot.

use super::{FailReason, Observation};
use crate::FailoverSpec;

/// The failure thresholds, widened to `u64` once so that every comparison is against `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Thresholds {
    pub loss_ms: u64,
    pub black_ms: Option<u64>,
    pub silence_ms: Option<u64>,
}

impl Thresholds {
    pub fn from_spec(spec: &FailoverSpec) -> Self {
        Self {
            loss_ms: u64::from(spec.input_loss_ms),
            black_ms: spec.black.map(|b| u64::from(b.ms)),
            silence_ms: spec.silence.map(|s| u64::from(s.ms)),
        }
    }
}

/// Only the start of each run is kept: whether a run has lasted long enough depends on `now`,
/// which the caller gives, so nothing here needs a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Health {
    last_frame: Option<u64>,
    black_since: Option<u64>,
    silent_since: Option<u64>,
    clear_since: Option<u64>,
}

impl Health {
    /// Loss outranks black, black outranks silence: a missing picture has neither.
    pub fn failing(&self, t: &Thresholds, now: u64) -> Option<FailReason> {
        if self.lost(t, now) {
            Some(FailReason::Loss)
        } else if run_reached(self.black_since, t.black_ms, now) {
            Some(FailReason::Black)
        } else if run_reached(self.silent_since, t.silence_ms, now) {
            Some(FailReason::Silence)
        } else {
            None
        }
    }

    pub fn lost(&self, t: &Thresholds, now: u64) -> bool {
        self.last_frame
            .is_none_or(|last| now.saturating_sub(last) >= t.loss_ms)
    }

    /// How long the input has been healthy without a break; None while it is failing.
    pub fn clear_for(&self, t: &Thresholds, now: u64) -> Option<u64> {
        if self.failing(t, now).is_some() {
            return None;
        }
        self.clear_since.map(|since| now.saturating_sub(since))
    }

    /// A slot without a frame changes nothing: loss is measured from the last frame, and a
    /// black or silent run only ends when a frame shows otherwise. Every failure ends on a
    /// frame, so comparing before and after this frame is enough to date the recovery.
    pub fn observe(&mut self, t: &Thresholds, obs: Observation, now: u64) {
        if !obs.frame {
            return;
        }
        let was_failing = self.failing(t, now).is_some();
        if self.lost(t, now) {
            // What came before a loss says nothing about the picture that came back.
            self.black_since = None;
            self.silent_since = None;
        }
        self.last_frame = Some(now);
        self.black_since = run_start(self.black_since, obs.black, now);
        self.silent_since = run_start(self.silent_since, obs.silent, now);
        if was_failing && self.failing(t, now).is_none() {
            self.clear_since = Some(now);
        }
    }
}

fn run_start(since: Option<u64>, on: bool, now: u64) -> Option<u64> {
    on.then_some(since.unwrap_or(now))
}

fn run_reached(since: Option<u64>, limit: Option<u64>, now: u64) -> bool {
    matches!((since, limit), (Some(s), Some(l)) if now.saturating_sub(s) >= l)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        loss_ms: 1000,
        black_ms: Some(2000),
        silence_ms: None,
    };

    fn frame(black: bool) -> Observation {
        Observation {
            frame: true,
            black,
            silent: false,
        }
    }

    #[test]
    fn never_seen_is_lost() {
        assert_eq!(Health::default().failing(&T, 0), Some(FailReason::Loss));
        assert_eq!(Health::default().clear_for(&T, 0), None);
    }

    #[test]
    fn clear_since_first_frame_then_since_recovery() {
        let mut h = Health::default();
        h.observe(&T, frame(false), 100);
        assert_eq!(h.clear_for(&T, 600), Some(500));
        h.observe(&T, frame(false), 2500);
        assert_eq!(h.clear_for(&T, 2500), Some(0), "a 2400 ms gap was a loss");
    }

    #[test]
    fn short_black_run_does_not_reset_clear_time() {
        let mut h = Health::default();
        h.observe(&T, frame(false), 0);
        for now in (400..=2000).step_by(400) {
            h.observe(&T, frame(true), now);
        }
        assert_eq!(h.failing(&T, 2000), None, "black for 1600 ms of 2000");
        h.observe(&T, frame(false), 2100);
        assert_eq!(h.clear_for(&T, 3000), Some(3000));
    }

    #[test]
    fn black_run_restarts_after_a_loss() {
        let mut h = Health::default();
        h.observe(&T, frame(true), 0);
        for now in [1500, 2400, 3300] {
            h.observe(&T, frame(true), now);
        }
        assert_eq!(h.failing(&T, 3499), None, "the run restarted at 1500");
        assert_eq!(h.failing(&T, 3500), Some(FailReason::Black));
    }

    #[test]
    fn empty_slots_do_not_end_a_black_run() {
        let mut h = Health::default();
        h.observe(&T, frame(true), 0);
        h.observe(&T, Observation::default(), 500);
        h.observe(&T, frame(true), 900);
        h.observe(&T, frame(true), 1800);
        assert_eq!(h.failing(&T, 1999), None);
        assert_eq!(h.failing(&T, 2000), Some(FailReason::Black));
    }
}
