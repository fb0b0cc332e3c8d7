//! Which input each frame slot is taken from.
//!
//! Involuntary switches (the active input failed) happen at once, on any slot: the picture is
//! already broken. The one voluntary switch, back to a primary that has been clear for
//! `error_clear_ms`, waits for a segment boundary so that the picture changes on a segment's
//! first frame.

mod health;

use health::{Health, Thresholds};
use serde::Serialize;

use crate::{FailoverSpec, Preference};

/// What one input delivered for one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// A decoded frame was there in time.
    pub frame: bool,
    /// Its mean luma is at or below the black trigger's luma.
    pub black: bool,
    /// Its audio is at or below the silence trigger's level.
    pub silent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    Loss,
    Black,
    Silence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchReason {
    FirstInput,
    Failed(FailReason),
    PrimaryRestored,
    AllLost,
    Recovered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Switch {
    pub from: Option<usize>,
    pub to: Option<usize>,
    pub reason: SwitchReason,
}

/// The outcome for one slot; `switch` is Some only when `active` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub active: Option<usize>,
    pub switch: Option<Switch>,
}

#[derive(Debug, Clone)]
pub struct InputSelector {
    thresholds: Thresholds,
    error_clear_ms: u64,
    preference: Preference,
    inputs: Vec<Health>,
    active: Option<usize>,
    ever_active: bool,
}

impl InputSelector {
    /// `inputs` is 1 or 2 in practice; index 0 is the primary.
    pub fn new(spec: &FailoverSpec, inputs: usize) -> Self {
        Self {
            thresholds: Thresholds::from_spec(spec),
            error_clear_ms: u64::from(spec.error_clear_ms),
            preference: spec.preference,
            inputs: vec![Health::default(); inputs],
            active: None,
            ever_active: false,
        }
    }

    pub fn observe(&mut self, input: usize, obs: Observation, now_ms: u64) {
        if let Some(health) = self.inputs.get_mut(input) {
            health.observe(&self.thresholds, obs, now_ms);
        }
    }

    pub fn select(&mut self, now_ms: u64, at_boundary: bool) -> Selection {
        let next = self.next_active(now_ms, at_boundary);
        let switch = (next != self.active).then(|| Switch {
            from: self.active,
            to: next,
            reason: self.reason(next, now_ms),
        });
        self.active = next;
        self.ever_active |= next.is_some();
        Selection {
            active: next,
            switch,
        }
    }

    /// An input that does not exist has never delivered a frame, so it reads as lost.
    pub fn failing(&self, input: usize, now_ms: u64) -> Option<FailReason> {
        self.inputs.get(input).map_or(Some(FailReason::Loss), |h| {
            h.failing(&self.thresholds, now_ms)
        })
    }

    pub fn active(&self) -> Option<usize> {
        self.active
    }

    fn next_active(&self, now: u64, at_boundary: bool) -> Option<usize> {
        match self.active {
            Some(a) if self.failing(a, now).is_none() => {
                let back = at_boundary && a != 0 && self.primary_restored(now);
                Some(if back { 0 } else { a })
            }
            // A failing picture still beats a fill frame, and the active one beats another
            // failing one: switching between two broken inputs only adds a cut.
            active => self
                .first_where(|i| self.failing(i, now).is_none())
                .or(active.filter(|&a| !self.lost(a, now)))
                .or_else(|| self.first_where(|i| !self.lost(i, now))),
        }
    }

    fn primary_restored(&self, now: u64) -> bool {
        self.preference == Preference::PrimaryPreferred
            && self
                .inputs
                .first()
                .and_then(|h| h.clear_for(&self.thresholds, now))
                .is_some_and(|clear| clear >= self.error_clear_ms)
    }

    /// Called before `self.active` is updated, so the old input's failure is still visible.
    fn reason(&self, next: Option<usize>, now: u64) -> SwitchReason {
        match (self.active, next) {
            (None, _) if self.ever_active => SwitchReason::Recovered,
            (None, _) => SwitchReason::FirstInput,
            (Some(_), None) => SwitchReason::AllLost,
            (Some(old), Some(_)) => self
                .failing(old, now)
                .map_or(SwitchReason::PrimaryRestored, SwitchReason::Failed),
        }
    }

    fn first_where(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.inputs.len()).find(|&i| ok(i))
    }

    fn lost(&self, input: usize, now: u64) -> bool {
        self.inputs
            .get(input)
            .is_none_or(|h| h.lost(&self.thresholds, now))
    }
}

#[cfg(test)]
mod tests;
