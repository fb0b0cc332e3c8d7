//! What replaces a missing frame: the last good frame for a moment (a short glitch goes
//! unnoticed), then black (honest about the outage), then the slate (tells viewers it is known).

use crate::FillSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillFrame {
    /// The last frame the switcher emitted.
    Repeat,
    Black,
    Slate,
}

pub fn fill_frame(spec: &FillSpec, since_loss_ms: u64) -> FillFrame {
    let repeat_end = u64::from(spec.repeat_ms);
    let black_end = repeat_end.saturating_add(u64::from(spec.black_ms));
    if since_loss_ms < repeat_end {
        FillFrame::Repeat
    } else if since_loss_ms < black_end || spec.slate.is_none() {
        FillFrame::Black
    } else {
        FillFrame::Slate
    }
}

/// One yuv420p frame of limited-range black (Y=16, U=V=128). Odd sizes round the chroma planes
/// up, as ffmpeg does, so the length is `width*height*3/2` for the even sizes video uses.
pub fn luma_black_frame(width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let luma = w * h;
    let chroma = 2 * w.div_ceil(2) * h.div_ceil(2);
    let mut frame = vec![16; luma + chroma];
    frame[luma..].fill(128);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(slate: bool) -> FillSpec {
        FillSpec {
            repeat_ms: 1000,
            black_ms: 2000,
            slate: slate.then(|| "slate.png".to_string()),
        }
    }

    #[test]
    fn repeat_then_black_then_slate() {
        let s = spec(true);
        assert_eq!(fill_frame(&s, 0), FillFrame::Repeat);
        assert_eq!(fill_frame(&s, 999), FillFrame::Repeat);
        assert_eq!(fill_frame(&s, 1000), FillFrame::Black);
        assert_eq!(fill_frame(&s, 2999), FillFrame::Black);
        assert_eq!(fill_frame(&s, 3000), FillFrame::Slate);
        assert_eq!(fill_frame(&s, u64::MAX), FillFrame::Slate);
    }

    #[test]
    fn black_for_good_without_a_slate() {
        assert_eq!(fill_frame(&spec(false), 3000), FillFrame::Black);
        assert_eq!(fill_frame(&spec(false), u64::MAX), FillFrame::Black);
    }

    #[test]
    fn zero_repeat_starts_black() {
        let s = FillSpec {
            repeat_ms: 0,
            ..spec(true)
        };
        assert_eq!(fill_frame(&s, 0), FillFrame::Black);
    }

    #[test]
    fn black_frame_layout() {
        let frame = luma_black_frame(4, 2);
        assert_eq!(frame.len(), 12);
        assert_eq!(frame, [16, 16, 16, 16, 16, 16, 16, 16, 128, 128, 128, 128]);
        assert_eq!(luma_black_frame(1920, 1080).len(), 1920 * 1080 * 3 / 2);
        assert_eq!(luma_black_frame(3, 3).len(), 9 + 2 * 4);
        assert!(luma_black_frame(0, 0).is_empty());
    }

    proptest! {
        #[test]
        fn fill_only_moves_forward(
            repeat in 0u32..10_000, black in 0u32..10_000, slate: bool,
            a in 0u64..30_000, b in 0u64..30_000,
        ) {
            let s = FillSpec { repeat_ms: repeat, black_ms: black, slate: slate.then(String::new) };
            let rank = |f| match f { FillFrame::Repeat => 0, FillFrame::Black => 1, FillFrame::Slate => 2 };
            let (early, late) = (a.min(b), a.max(b));
            prop_assert!(rank(fill_frame(&s, early)) <= rank(fill_frame(&s, late)));
        }
    }
}
