//! The small channel the expected-text tests render: two NTSC video renditions, one stereo
//! audio rendition, D = 2.002 s, and three segments with segment `N0 + 2` missing.

use crate::{HeaderId, Rendition, RenditionKind, SegmentRef};

/// A segment number of 2026-11-25 (14:15:50.328 UTC) at D = 2.002 s.
pub const N0: u64 = 896_911_164;
/// The CMAF header every fixture segment decodes with.
pub const HEADER: HeaderId = HeaderId(0x0123_4567_89ab_cdef);
/// D at 90 kHz: 60 frames of 30000/1001.
pub const VIDEO_D: u64 = 180_180;

pub fn renditions() -> Vec<Rendition> {
    let rate = "30000/1001".parse().unwrap();
    vec![
        // Listed low first so the tests see the multivariant sort.
        Rendition {
            name: "v160".into(),
            kind: RenditionKind::Video {
                width: 160,
                height: 90,
                frame_rate: rate,
            },
            codecs: "avc1.42C00C".into(),
            bandwidth: 150_000,
            average_bandwidth: 120_000,
            timescale: 90_000,
        },
        Rendition {
            name: "v320".into(),
            kind: RenditionKind::Video {
                width: 320,
                height: 180,
                frame_rate: rate,
            },
            codecs: "avc1.42C01E".into(),
            bandwidth: 400_000,
            average_bandwidth: 350_000,
            timescale: 90_000,
        },
        audio(),
    ]
}

pub fn audio() -> Rendition {
    Rendition {
        name: "audio".into(),
        kind: RenditionKind::Audio {
            sample_rate: 48_000,
            channels: 2,
            language: Some("en".into()),
        },
        codecs: "mp4a.40.2".into(),
        bandwidth: 69_000,
        average_bandwidth: 64_000,
        timescale: 48_000,
    }
}

pub fn seg(n: u64, start: u64, duration: u64) -> SegmentRef {
    SegmentRef {
        n,
        start,
        duration,
        header: HEADER,
        discontinuity: false,
    }
}

/// `N0`, `N0+1`, `N0+3`: exactly D each, at `N·D`.
pub fn video_segments() -> Vec<SegmentRef> {
    [N0, N0 + 1, N0 + 3]
        .map(|n| seg(n, n * VIDEO_D, VIDEO_D))
        .to_vec()
}

/// Audio cut at the first AAC frame (1024 ticks, on the epoch's frame grid) at or after `N·D`:
/// 96256 or 95232 ticks long, never exactly D = 96096.
pub fn audio_start(n: u64) -> u64 {
    (n * 96_096).div_ceil(1024) * 1024
}

pub fn audio_segments_of(ns: &[u64]) -> Vec<SegmentRef> {
    ns.iter()
        .map(|&n| seg(n, audio_start(n), audio_start(n + 1) - audio_start(n)))
        .collect()
}

pub fn audio_segments() -> Vec<SegmentRef> {
    audio_segments_of(&[N0, N0 + 1, N0 + 3])
}
