use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    #[error("frame rate `{0}` is not a positive number like 25, 29.97 or 30000/1001")]
    BadFrameRate(String),
    #[error("a segment must hold at least one frame")]
    ZeroFrames,
    #[error("segment duration {0} s is outside 0.1..=60 s")]
    DurationOutOfRange(f64),
}

/// An output frame rate as an exact fraction (`30000/1001`, never `29.97` rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FrameRate {
    num: u32,
    den: u32,
}

impl FrameRate {
    pub fn new(num: u32, den: u32) -> Result<Self, GridError> {
        if num == 0 || den == 0 {
            return Err(GridError::BadFrameRate(format!("{num}/{den}")));
        }
        let g = gcd(num as u64, den as u64) as u32;
        Ok(Self {
            num: num / g,
            den: den / g,
        })
    }

    pub fn num(self) -> u32 {
        self.num
    }

    pub fn den(self) -> u32 {
        self.den
    }

    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// The frame slot (frame number since the epoch) in progress at `unix`.
    pub fn slot_at(self, unix: Duration) -> u64 {
        (unix.as_nanos() * self.num as u128 / (1_000_000_000 * self.den as u128)) as u64
    }

    /// When slot `slot` starts, rounded up to the nanosecond.
    pub fn slot_time(self, slot: u64) -> Duration {
        let nanos = (slot as u128 * self.den as u128 * 1_000_000_000).div_ceil(self.num as u128);
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }

    /// The first audio sample (counted from the epoch at `sample_rate`) that belongs to slot
    /// `slot`: samples `[first_sample(s), first_sample(s + 1))` play with frame `s`.
    pub fn first_sample(self, slot: u64, sample_rate: u32) -> u64 {
        (slot as u128 * self.den as u128 * sample_rate as u128).div_ceil(self.num as u128) as u64
    }
}

impl FromStr for FrameRate {
    type Err = GridError;

    /// Accepts `25`, `30000/1001`, and the customary decimals `23.976`, `29.97`, `59.94`, which
    /// mean the NTSC fractions.
    fn from_str(s: &str) -> Result<Self, GridError> {
        let bad = || GridError::BadFrameRate(s.to_string());
        let s = s.trim();
        if let Some((n, d)) = s.split_once('/') {
            let num = n.trim().parse().map_err(|_| bad())?;
            let den = d.trim().parse().map_err(|_| bad())?;
            return FrameRate::new(num, den);
        }
        match s {
            "23.976" | "23.98" => return FrameRate::new(24000, 1001),
            "29.97" => return FrameRate::new(30000, 1001),
            "59.94" => return FrameRate::new(60000, 1001),
            _ => {}
        }
        let whole: u32 = s.parse().map_err(|_| bad())?;
        FrameRate::new(whole, 1)
    }
}

impl TryFrom<String> for FrameRate {
    type Error = GridError;
    fn try_from(s: String) -> Result<Self, GridError> {
        s.parse()
    }
}

impl From<FrameRate> for String {
    fn from(r: FrameRate) -> String {
        r.to_string()
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// The segment grid of a channel: `D = frames / rate` seconds, anchored at the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentGrid {
    rate: FrameRate,
    frames: u32,
}

impl SegmentGrid {
    pub fn new(rate: FrameRate, frames: u32) -> Result<Self, GridError> {
        if frames == 0 {
            return Err(GridError::ZeroFrames);
        }
        let grid = Self { rate, frames };
        let d = grid.duration_secs();
        if !(0.1..=60.0).contains(&d) {
            return Err(GridError::DurationOutOfRange(d));
        }
        Ok(grid)
    }

    /// The grid whose duration is the whole number of frames nearest to `seconds`
    /// (2 s at 30000/1001 becomes 60 frames = 2.002 s).
    pub fn nearest(rate: FrameRate, seconds: f64) -> Result<Self, GridError> {
        let frames = (seconds * rate.as_f64()).round();
        if !frames.is_finite() || frames < 1.0 || frames > u32::MAX as f64 {
            return Err(GridError::DurationOutOfRange(seconds));
        }
        Self::new(rate, frames as u32)
    }

    pub fn rate(&self) -> FrameRate {
        self.rate
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    pub fn duration_secs(&self) -> f64 {
        self.frames as f64 * self.rate.den as f64 / self.rate.num as f64
    }

    /// `D` in ticks of `timescale` when it is a whole number of them (video at 90 kHz always is
    /// for the supported rates), else `None`.
    pub fn duration_ticks(&self, timescale: u32) -> Option<u64> {
        let n = self.frames as u128 * self.rate.den as u128 * timescale as u128;
        n.is_multiple_of(self.rate.num as u128)
            .then(|| (n / self.rate.num as u128) as u64)
    }

    /// The segment holding the instant `ts / timescale` seconds after the epoch:
    /// `floor(ts / (D · timescale))`, computed exactly.
    pub fn segment_of(&self, ts: u64, timescale: u32) -> u64 {
        let num = ts as u128 * self.rate.num as u128;
        let den = timescale as u128 * self.frames as u128 * self.rate.den as u128;
        (num / den) as u64
    }

    /// The first tick of `timescale` at or after the start of segment `n`, so that
    /// `segment_of(start_of(n)) == n` in every timescale.
    pub fn start_of(&self, n: u64, timescale: u32) -> u64 {
        let num = n as u128 * self.frames as u128 * self.rate.den as u128 * timescale as u128;
        num.div_ceil(self.rate.num as u128) as u64
    }

    /// The segment in progress at `unix` (time since the epoch).
    pub fn segment_at(&self, unix: Duration) -> u64 {
        // Nanoseconds keep the arithmetic exact for every supported rate.
        let nanos = unix.as_nanos();
        let num = nanos * self.rate.num as u128;
        let den = 1_000_000_000u128 * self.frames as u128 * self.rate.den as u128;
        (num / den) as u64
    }

    /// The Unix time at which segment `n` starts, rounded up to the nanosecond.
    pub fn start_time(&self, n: u64) -> Duration {
        let nanos = self.start_of_nanos(n);
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }

    /// The first frame slot of segment `n`.
    pub fn first_slot(&self, n: u64) -> u64 {
        n * self.frames as u64
    }

    fn start_of_nanos(&self, n: u64) -> u128 {
        let num = n as u128 * self.frames as u128 * self.rate.den as u128 * 1_000_000_000;
        num.div_ceil(self.rate.num as u128)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate(s: &str) -> FrameRate {
        s.parse().unwrap()
    }

    #[test]
    fn parses_rates() {
        assert_eq!(rate("25"), FrameRate::new(25, 1).unwrap());
        assert_eq!(rate("30000/1001"), FrameRate::new(30000, 1001).unwrap());
        assert_eq!(rate("29.97"), FrameRate::new(30000, 1001).unwrap());
        assert_eq!(rate("60/2"), FrameRate::new(30, 1).unwrap());
        assert_eq!(rate("60000/1001").to_string(), "60000/1001");
        assert!("0".parse::<FrameRate>().is_err());
        assert!("abc".parse::<FrameRate>().is_err());
        assert!("30/0".parse::<FrameRate>().is_err());
    }

    #[test]
    fn nearest_grid_is_whole_frames() {
        let cases = [
            ("25", 50, 2.0),
            ("30", 60, 2.0),
            ("30000/1001", 60, 2.002),
            ("50", 100, 2.0),
            ("60000/1001", 120, 2.002),
        ];
        for (r, frames, secs) in cases {
            let g = SegmentGrid::nearest(rate(r), 2.0).unwrap();
            assert_eq!(g.frames(), frames, "{r}");
            assert!((g.duration_secs() - secs).abs() < 1e-9, "{r}");
            assert!(g.duration_ticks(90_000).is_some(), "{r} at 90 kHz");
        }
    }

    #[test]
    fn ntsc_segment_boundaries_at_90khz_and_48khz() {
        let g = SegmentGrid::nearest(rate("30000/1001"), 2.0).unwrap();
        assert_eq!(g.duration_ticks(90_000), Some(180_180));
        assert_eq!(g.duration_ticks(48_000), Some(96_096));
        assert_eq!(g.duration_ticks(44_100), None);
        assert_eq!(g.start_of(10, 90_000), 1_801_800);
        assert_eq!(g.segment_of(1_801_799, 90_000), 9);
        assert_eq!(g.segment_of(1_801_800, 90_000), 10);
        // 44.1 kHz: boundary 10 is at 882882.0 ticks exactly, boundary 1 at 88288.2.
        assert_eq!(g.start_of(1, 44_100), 88_289);
        assert_eq!(g.segment_of(88_288, 44_100), 0);
        assert_eq!(g.segment_of(88_289, 44_100), 1);
    }

    #[test]
    fn epoch_numbers_today() {
        let g = SegmentGrid::nearest(rate("30"), 2.0).unwrap();
        let t = Duration::from_secs(1_795_616_148);
        assert_eq!(g.segment_at(t), 897_808_074);
        assert_eq!(g.start_time(897_808_074), t);
        assert_eq!(g.segment_at(t - Duration::from_nanos(1)), 897_808_073);
    }

    #[test]
    fn leap_second_does_not_disturb_numbering() {
        // Unix time repeats 1483228799 across the 2016-12-31 leap second; numbering is a pure
        // function of Unix time, so the repeated second maps to the same N and never goes back
        // further than the clock does.
        let g = SegmentGrid::nearest(rate("25"), 2.0).unwrap();
        let before = g.segment_at(Duration::from_millis(1_483_228_799_500));
        let after = g.segment_at(Duration::from_millis(1_483_228_800_000));
        assert_eq!(before, 741_614_399);
        assert_eq!(after, 741_614_400);
        assert_eq!(g.start_time(after), Duration::from_secs(1_483_228_800));
    }

    #[test]
    fn slots_and_their_audio_samples() {
        let ntsc = FrameRate::new(30000, 1001).unwrap();
        let t = Duration::from_secs(1_795_616_150);
        let slot = ntsc.slot_at(t);
        assert!(ntsc.slot_time(slot) <= t && t < ntsc.slot_time(slot + 1));
        assert_eq!(ntsc.slot_at(ntsc.slot_time(slot + 7)), slot + 7);
        // A 2.002 s segment holds 96 096 samples at 48 kHz, split over 60 frames of 1601-1602.
        let g = SegmentGrid::new(ntsc, 60).unwrap();
        let first = g.first_slot(1000);
        let samples = ntsc.first_sample(first + 60, 48_000) - ntsc.first_sample(first, 48_000);
        assert_eq!(samples, 96_096);
        let per_frame = ntsc.first_sample(first + 1, 48_000) - ntsc.first_sample(first, 48_000);
        assert!((1601..=1602).contains(&per_frame));
        let fifteen = FrameRate::new(15, 1).unwrap();
        assert_eq!(fifteen.first_sample(15, 48_000), 48_000);
    }

    #[test]
    fn rejects_silly_durations() {
        assert_eq!(SegmentGrid::new(rate("30"), 0), Err(GridError::ZeroFrames));
        assert!(SegmentGrid::new(rate("30"), 30 * 61).is_err());
        assert!(SegmentGrid::nearest(rate("30"), f64::NAN).is_err());
    }

    proptest! {
        #[test]
        fn start_of_inverts_segment_of(
            n in 0u64..2_000_000_000,
            rate_ix in 0usize..5,
            secs in 1u32..10,
            timescale in prop::sample::select(vec![1000u32, 44_100, 48_000, 90_000]),
        ) {
            let rates = ["25", "30", "30000/1001", "50", "60000/1001"];
            let g = SegmentGrid::nearest(rate(rates[rate_ix]), secs as f64).unwrap();
            let start = g.start_of(n, timescale);
            prop_assert_eq!(g.segment_of(start, timescale), n);
            prop_assert_eq!(g.segment_of(start.saturating_sub(1), timescale), n.saturating_sub(1));
            prop_assert_eq!(g.segment_at(g.start_time(n)), n);
        }
    }
}
