//! `steadycast verify URL`: plays a live HLS or DASH stream at the live edge as a player would,
//! downloads every segment listed from where it joined, and checks the steady state of
//! DESIGN.md §7 — every listed URL answers 200 in time, the manifests advance and never
//! rewrite what they listed, timestamps continue from segment to segment unless a
//! discontinuity is announced (and every announced one is real), every video segment starts
//! with a keyframe — and reports the stall a player with an N-segment buffer would have had.
//!
//! [`check`] is the sans-IO core (texts, bytes and time in; findings out); [`run`] is the
//! async shell that does the HTTP.

pub mod check;
mod run;

pub use run::{VerifyArgs, main, run};
