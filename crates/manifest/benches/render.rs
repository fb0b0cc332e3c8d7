//! `cargo bench -p manifest`: time to render one hour of live window (1800 segments of 2.002 s
//! per rendition) for each manifest. Prints timings; asserts nothing about them.

use std::hint::black_box;
use std::time::Instant;

use manifest::dash::{MpdParams, live_mpd};
use manifest::hls::{MediaPlaylistParams, media_playlist, multivariant};
use manifest::{Rendition, RenditionKind, SegmentRef};

const N0: u64 = 896_911_164;
const SEGMENTS: u64 = 1800;

fn main() {
    let rate = "30000/1001".parse().expect("frame rate");
    let video = |name: &str, width, height, bandwidth| Rendition {
        name: name.into(),
        kind: RenditionKind::Video {
            width,
            height,
            frame_rate: rate,
        },
        codecs: "avc1.64001F".into(),
        bandwidth,
        average_bandwidth: bandwidth * 4 / 5,
        timescale: 90_000,
    };
    let renditions = vec![
        video("1080p", 1920, 1080, 6_000_000),
        video("720p", 1280, 720, 3_000_000),
        video("360p", 640, 360, 800_000),
        Rendition {
            name: "audio".into(),
            kind: RenditionKind::Audio {
                sample_rate: 48_000,
                channels: 2,
                language: None,
            },
            codecs: "mp4a.40.2".into(),
            bandwidth: 128_000,
            average_bandwidth: 128_000,
            timescale: 48_000,
        },
    ];
    let v: Vec<SegmentRef> = (N0..N0 + SEGMENTS)
        .map(|n| SegmentRef {
            n,
            start: n * 180_180,
            duration: 180_180,
            header: manifest::HeaderId(1),
            discontinuity: false,
        })
        .collect();
    let audio_start = |n: u64| (n * 96_096).div_ceil(1024) * 1024;
    let a: Vec<SegmentRef> = (N0..N0 + SEGMENTS)
        .map(|n| SegmentRef {
            n,
            start: audio_start(n),
            duration: audio_start(n + 1) - audio_start(n),
            header: manifest::HeaderId(1),
            discontinuity: false,
        })
        .collect();
    let query = "?token=0123456789abcdef0123456789abcdef";
    let hls = MediaPlaylistParams {
        target_duration_secs: 2,
        discontinuity_sequence: 0,
        ended: false,
        playlist_type: None,
        query,
    };
    let mpd = MpdParams {
        now_unix_millis: 1_795_616_148_000,
        segment_duration_secs: 2.002,
        time_shift_buffer_depth_secs: 3600.0,
        suggested_presentation_delay_secs: 6.0,
        min_buffer_time_secs: 4.0,
        utc_timing_url: "/time",
        query,
        periods: &[],
    };

    time("multivariant", || multivariant(&renditions, query));
    time("media playlist, video, 1800 segments", || {
        media_playlist(&renditions[0], &v, &hls)
    });
    time("media playlist, audio, 1800 segments", || {
        media_playlist(&renditions[3], &a, &hls)
    });
    time("MPD, 3 video + 1 audio, 1800 segments each", || {
        live_mpd(&renditions, &[&v, &v, &v, &a], &mpd)
    });
}

fn time(what: &str, render: impl Fn() -> String) {
    let bytes = render().len();
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(render());
    }
    let each = started.elapsed() / rounds;
    println!("{what}: {each:?} per render, {bytes} bytes");
}
