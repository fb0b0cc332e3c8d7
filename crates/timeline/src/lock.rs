//! How a pipeline maps its input's timestamps onto Unix time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// MPEG-TS timestamps count 90 kHz ticks modulo 2^33 (about 26.5 hours).
pub const TS_TIMESCALE: u32 = 90_000;
pub const PTS_WRAP: u64 = 1 << 33;

/// Which clock the output timeline follows (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// The source's own timestamps are Unix time (modulo 2^33 in MPEG-TS): both pipelines fed
    /// the same source produce frame-accurate identical timelines.
    Source,
    /// The source's timestamps are arbitrary: each pipeline maps them onto its own NTP-synced
    /// clock when the input starts; frames land on the same grid within a frame of each other.
    Clock,
}

/// Restores the absolute 90 kHz timestamp of a 33-bit `pts` that was stamped from Unix time: the
/// value congruent to `pts` modulo 2^33 that is nearest to `now`.
pub fn unwrap_pts(pts: u64, now: Duration) -> u64 {
    let pts = pts % PTS_WRAP;
    let now_ticks = (now.as_nanos() * TS_TIMESCALE as u128 / 1_000_000_000) as u64;
    let base = now_ticks - now_ticks % PTS_WRAP;
    // Candidates in the wrap period of `now` and its neighbours; pick the nearest.
    [
        base.checked_sub(PTS_WRAP),
        Some(base),
        base.checked_add(PTS_WRAP),
    ]
    .into_iter()
    .flatten()
    .map(|b| b + pts)
    .min_by_key(|&t| t.abs_diff(now_ticks))
    .unwrap_or(pts)
}

/// The offset, in microseconds (ffmpeg's `-itsoffset` resolution), that turns a source-locked
/// MPEG-TS input whose first PTS is `first_pts` back into Unix time: a whole number of wraps.
pub fn source_lock_offset(first_pts: u64, now: Duration) -> i64 {
    let wraps = (unwrap_pts(first_pts, now) - first_pts % PTS_WRAP) / PTS_WRAP;
    (wraps as u128 * PTS_WRAP as u128 * 1_000_000 / TS_TIMESCALE as u128) as i64
}

/// How far a source's timestamps may be from our clock and still count as Unix time.
pub const SOURCE_LOCK_TOLERANCE: Duration = Duration::from_secs(120);

/// The lock of an MPEG-TS input whose first PTS is `first_pts`: source-locked when its unwrapped
/// timestamps are within [`SOURCE_LOCK_TOLERANCE`] of `now`, else clock-locked. Returns the mode
/// and the offset in microseconds to add to the input's timestamps.
pub fn lock_mpegts(first_pts: u64, now: Duration) -> (LockMode, i64) {
    let unwrapped = unwrap_pts(first_pts, now);
    let at = Duration::from_micros((unwrapped as u128 * 1_000_000 / TS_TIMESCALE as u128) as u64);
    if at.abs_diff(now) <= SOURCE_LOCK_TOLERANCE {
        (LockMode::Source, source_lock_offset(first_pts, now))
    } else {
        let first = Duration::from_micros((first_pts % PTS_WRAP) * 1_000_000 / TS_TIMESCALE as u64);
        (LockMode::Clock, clock_lock_offset(first, now))
    }
}

/// The offset, in microseconds, that maps an input whose first timestamp is `first_ts` seconds
/// (in its own arbitrary clock) to `now`.
pub fn clock_lock_offset(first_ts: Duration, now: Duration) -> i64 {
    now.as_micros() as i64 - first_ts.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_795_616_148);

    fn ticks(d: Duration) -> u64 {
        (d.as_nanos() * 90_000 / 1_000_000_000) as u64
    }

    #[test]
    fn unwraps_a_pts_stamped_from_now() {
        let abs = ticks(NOW);
        assert_eq!(unwrap_pts(abs % PTS_WRAP, NOW), abs);
        // A source a few seconds behind or ahead of our clock still resolves.
        let behind = abs - 5 * 90_000;
        assert_eq!(unwrap_pts(behind % PTS_WRAP, NOW), behind);
        let ahead = abs + 5 * 90_000;
        assert_eq!(unwrap_pts(ahead % PTS_WRAP, NOW), ahead);
    }

    #[test]
    fn unwraps_across_the_33_bit_wrap() {
        // `now` just after a wrap, the source's PTS just before it, and the reverse.
        let wrap = (ticks(NOW) / PTS_WRAP + 1) * PTS_WRAP;
        let at = |t: u64| Duration::from_micros((t as u128 * 1_000_000 / 90_000) as u64);
        let now_after = at(wrap + 90_000);
        let pts_before = wrap - 2 * 90_000;
        assert_eq!(unwrap_pts(pts_before % PTS_WRAP, now_after), pts_before);
        let now_before = at(wrap - 90_000);
        let pts_after = wrap + 2 * 90_000;
        assert_eq!(unwrap_pts(pts_after % PTS_WRAP, now_before), pts_after);
    }

    #[test]
    fn source_offset_is_whole_wraps() {
        let abs = ticks(NOW);
        let pts = abs % PTS_WRAP;
        let offset = source_lock_offset(pts, NOW);
        let wraps = abs / PTS_WRAP;
        assert_eq!(
            offset,
            (wraps as u128 * PTS_WRAP as u128 * 1_000_000 / 90_000) as i64
        );
        // The restored time is within a microsecond of the true one.
        let restored_us = pts as i64 * 1_000_000 / 90_000 + offset;
        assert!((restored_us - NOW.as_micros() as i64).abs() <= 1);
    }

    #[test]
    fn epoch_stamped_ts_is_source_locked_and_other_ts_clock_locked() {
        let abs = ticks(NOW) - 3 * 90_000;
        let (mode, offset) = lock_mpegts(abs % PTS_WRAP, NOW);
        assert_eq!(mode, LockMode::Source);
        assert_eq!(offset, source_lock_offset(abs % PTS_WRAP, NOW));
        // An encoder whose clock starts at 10 s: its first frame is mapped to now.
        let (mode, offset) = lock_mpegts(900_000, NOW);
        assert_eq!(mode, LockMode::Clock);
        assert_eq!(offset + 10_000_000, NOW.as_micros() as i64);
    }

    #[test]
    fn clock_offset_maps_first_timestamp_to_now() {
        let first = Duration::from_millis(1_500);
        assert_eq!(
            clock_lock_offset(first, NOW) + 1_500_000,
            NOW.as_micros() as i64
        );
    }
}
