//! The measures the black and silence triggers compare against, cheap enough to run on every
//! frame of every input: no allocation, and a sparse sample of the picture.

/// Every 4th pixel of every 4th row: a 16th of the picture is plenty to tell black from not.
const STEP: usize = 4;

/// The floor for silence: a log of zero has no value, and nothing quieter is meaningful for s16.
const SILENCE_DBFS: f32 = -120.0;

/// Mean luma of a yuv420p frame's Y plane; 0 for a frame too short to hold one, so that a
/// truncated frame reads as black instead of panicking.
pub fn mean_luma(frame: &[u8], width: u32, height: u32) -> u8 {
    let (w, h) = (width as usize, height as usize);
    let Some(plane) = w.checked_mul(h).and_then(|len| frame.get(..len)) else {
        return 0;
    };
    if plane.is_empty() {
        return 0;
    }
    let (sum, count) = plane
        .chunks_exact(w)
        .step_by(STEP)
        .flat_map(|row| row.iter().step_by(STEP))
        .fold((0u64, 0u64), |(sum, count), &y| {
            (sum + u64::from(y), count + 1)
        });
    u8::try_from((sum + count / 2) / count).unwrap_or(u8::MAX)
}

/// RMS level of interleaved s16le PCM in dBFS, where a full-scale square wave is 0 and a
/// full-scale sine about -3. Channels are pooled: silence means every channel is quiet.
pub fn pcm_level_dbfs(pcm: &[u8]) -> f32 {
    let (sum, count) = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .fold((0.0, 0u64), |(sum, count), s| (sum + s * s, count + 1));
    if sum == 0.0 {
        return SILENCE_DBFS;
    }
    let rms = (sum / count as f64).sqrt() / 32768.0;
    ((20.0 * rms.log10()) as f32).max(SILENCE_DBFS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uniform(width: u32, height: u32, y: u8) -> Vec<u8> {
        let mut frame = crate::fill::luma_black_frame(width, height);
        frame[..(width * height) as usize].fill(y);
        frame
    }

    fn pcm(samples: impl IntoIterator<Item = i16>) -> Vec<u8> {
        samples.into_iter().flat_map(i16::to_le_bytes).collect()
    }

    fn square(amplitude: i16) -> Vec<u8> {
        pcm((0..4800).map(|i| {
            if i / 24 % 2 == 0 {
                amplitude
            } else {
                -amplitude
            }
        }))
    }

    #[test]
    fn black_and_white_frames() {
        assert_eq!(
            mean_luma(&crate::fill::luma_black_frame(1280, 720), 1280, 720),
            16
        );
        assert_eq!(mean_luma(&uniform(1280, 720, 235), 1280, 720), 235);
        assert_eq!(mean_luma(&uniform(6, 2, 100), 6, 2), 100);
    }

    #[test]
    fn only_the_sampled_pixels_count() {
        let mut frame = uniform(8, 8, 0);
        for row in (0..8).step_by(4) {
            for col in (0..8).step_by(4) {
                frame[row * 8 + col] = 200;
            }
        }
        assert_eq!(mean_luma(&frame, 8, 8), 200);
    }

    #[test]
    fn short_or_empty_frames_read_zero() {
        assert_eq!(mean_luma(&[], 1920, 1080), 0);
        assert_eq!(mean_luma(&[200; 100], 20, 20), 0);
        assert_eq!(mean_luma(&[200; 100], 0, 0), 0);
        assert_eq!(mean_luma(&[200; 100], u32::MAX, u32::MAX), 0);
    }

    #[test]
    fn silence_is_the_floor() {
        assert_eq!(pcm_level_dbfs(&[]), SILENCE_DBFS);
        assert_eq!(pcm_level_dbfs(&[0; 3840]), SILENCE_DBFS);
        assert_eq!(
            pcm_level_dbfs(&[0, 0, 0x7f]),
            SILENCE_DBFS,
            "odd byte ignored"
        );
    }

    #[test]
    fn square_waves() {
        let full = pcm_level_dbfs(&square(i16::MAX));
        assert!(full.abs() < 0.01, "{full}");
        let half = pcm_level_dbfs(&square(16_384));
        assert!((half + 6.02).abs() < 0.01, "{half}");
    }

    #[test]
    fn full_scale_sine_is_about_minus_3() {
        let sine = (0..48_000).map(|i| {
            let phase = f64::from(i) * 1000.0 * std::f64::consts::TAU / 48_000.0;
            (phase.sin() * f64::from(i16::MAX)) as i16
        });
        let level = pcm_level_dbfs(&pcm(sine));
        assert!((level + 3.01).abs() < 0.01, "{level}");
    }

    #[test]
    fn a_single_lsb_is_above_the_floor() {
        let level = pcm_level_dbfs(&pcm([1, -1, 1, -1]));
        assert!((level + 90.31).abs() < 0.01, "{level}");
    }

    proptest! {
        #[test]
        fn uniform_frames_read_their_value(w in 1u32..64, h in 1u32..64, y: u8) {
            prop_assert_eq!(mean_luma(&uniform(w, h, y), w, h), y);
        }

        #[test]
        fn never_panics_and_stays_in_range(
            frame in prop::collection::vec(any::<u8>(), 0..2000), w in 0u32..64, h in 0u32..64,
        ) {
            mean_luma(&frame, w, h);
            let level = pcm_level_dbfs(&frame);
            prop_assert!((SILENCE_DBFS..=0.0).contains(&level), "{}", level);
        }
    }
}
