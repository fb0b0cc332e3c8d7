//! Manifests rendered by the `manifest` crate, as the origin serves them: a steady window
//! passes, and a segment neither pipeline made shows up as a gap and nothing else.

use manifest::dash::{MpdParams, PeriodStart, live_mpd};
use manifest::hls::{MediaPlaylistParams, media_playlist};
use manifest::{HeaderId, Rendition, RenditionKind, SegmentRef};
use timeline::FrameRate;

use super::*;

fn video_rendition() -> Rendition {
    Rendition {
        name: "v".into(),
        kind: RenditionKind::Video {
            width: 320,
            height: 180,
            frame_rate: FrameRate::new(15, 1).expect("15 fps"),
        },
        codecs: "avc1.64001F".into(),
        bandwidth: 200_000,
        average_bandwidth: 180_000,
        timescale: 90_000,
    }
}

fn audio_rendition() -> Rendition {
    Rendition {
        name: "audio".into(),
        kind: RenditionKind::Audio {
            sample_rate: 48_000,
            channels: 2,
            language: None,
        },
        codecs: "opus".into(),
        bandwidth: 64_000,
        average_bandwidth: 64_000,
        timescale: 48_000,
    }
}

/// Audio segment N: the 1024-sample frames whose start lies in [N·D, (N+1)·D).
fn audio_span(n: u64) -> (u64, u64) {
    let first = (n * 48_000).div_ceil(1024);
    let end = ((n + 1) * 48_000).div_ceil(1024);
    (first * 1024, (end - first) * 1024)
}

fn video_refs(numbers: impl Iterator<Item = u64>) -> Vec<SegmentRef> {
    numbers
        .map(|n| SegmentRef {
            n,
            start: n * D,
            duration: D,
            header: HeaderId(1),
            discontinuity: false,
        })
        .collect()
}

fn audio_refs(numbers: impl Iterator<Item = u64>) -> Vec<SegmentRef> {
    numbers
        .map(|n| {
            let (start, duration) = audio_span(n);
            SegmentRef {
                n,
                start,
                duration,
                header: HeaderId(1),
                discontinuity: false,
            }
        })
        .collect()
}

/// From segment `at` on, another header, announced (or not) by a discontinuity; the
/// discontinuity sequence the origin would give a playlist starting with these segments.
fn change_header(refs: &mut [SegmentRef], at: u64, announce: bool) -> u64 {
    for s in refs.iter_mut().filter(|s| s.n >= at) {
        s.header = HeaderId(2);
    }
    if let Some(first_new) = refs.iter_mut().find(|s| s.n == at) {
        first_new.discontinuity = announce;
    }
    u64::from(announce && refs.first().is_some_and(|s| s.n > at))
}

fn mpd_params(periods: &[PeriodStart]) -> MpdParams<'_> {
    MpdParams {
        now_unix_millis: 0,
        segment_duration_secs: 1.0,
        time_shift_buffer_depth_secs: 20.0,
        suggested_presentation_delay_secs: 3.0,
        min_buffer_time_secs: 2.0,
        utc_timing_url: "/time",
        query: "",
        periods,
    }
}

fn hls(r: &Rendition, segments: &[SegmentRef]) -> String {
    hls_from(r, segments, 0)
}

fn hls_from(r: &Rendition, segments: &[SegmentRef], discontinuity_sequence: u64) -> String {
    let p = MediaPlaylistParams {
        target_duration_secs: 1,
        discontinuity_sequence,
        ended: false,
        playlist_type: None,
        query: "",
    };
    media_playlist(r, segments, &p)
}

/// The origin's server: `v/N.m4s`, `audio/N.m4s`, `v/tT.m4s`, `audio/tT.m4s`.
fn origin_server(uri: &str) -> Answer {
    let by_time = uri.contains("/t");
    match (uri.starts_with("audio/"), number_in(uri)) {
        (false, Some(x)) => Answer::Bytes(video(if by_time { x / D } else { x })),
        (true, Some(x)) => {
            let n = if by_time { x / 48_000 } else { x };
            let (start, duration) = audio_span(n);
            Answer::Bytes(audio_at(start, duration / 1024))
        }
        _ => Answer::Status(404),
    }
}

#[test]
fn origin_hls_with_a_missing_segment() {
    let mut sim = Sim::new(3, origin_server);
    let (v, a) = (video_rendition(), audio_rendition());
    for i in 0..8u64 {
        // Segment N0+5 never existed: the origin lists it as EXT-X-GAP.
        let numbers = || (N0 + i..N0 + i + 6).filter(|n| *n != N0 + 5);
        let now = i as f64;
        let u = sim
            .checker
            .on_playlist("v", &hls(&v, &video_refs(numbers())), s(now));
        for job in &u.jobs {
            if let Some(init_uri) = &job.init_uri
                && sim.checker.needs_init("v", init_uri)
            {
                sim.checker.on_init("v", init_uri, &init(true), s(now));
            }
            if let Answer::Bytes(b) = origin_server(&job.uri) {
                sim.checker.on_segment("v", &job.uri, &b, s(now));
            }
        }
        let text = hls(&a, &audio_refs(numbers()));
        let u = sim.checker.on_playlist("audio", &text, s(now));
        for job in &u.jobs {
            if let Some(init_uri) = &job.init_uri
                && sim.checker.needs_init("audio", init_uri)
            {
                sim.checker.on_init("audio", init_uri, &init(false), s(now));
            }
            if let Answer::Bytes(b) = origin_server(&job.uri) {
                sim.checker.on_segment("audio", &job.uri, &b, s(now));
            }
        }
    }
    let r = sim.report(7.5);
    assert_eq!(sim.kinds(), [ErrorKind::Gap], "{}", r.to_text());
    assert_eq!(sim.count(ErrorKind::Gap), 2, "once per rendition");
    for rendition in &r.renditions {
        assert_eq!(rendition.stalls, 0, "{}", r.to_text());
        assert_eq!(rendition.missing_seconds.round(), 1.0);
    }
}

#[test]
fn origin_dash_steady_then_a_missing_segment() {
    let mut sim = Sim::new(3, origin_server);
    let renditions = [video_rendition(), audio_rendition()];
    let params = mpd_params(&[]);
    for i in 0..8u64 {
        let numbers = || (N0 + i..N0 + i + 6).filter(|n| *n != N0 + 5);
        let (v, a) = (video_refs(numbers()), audio_refs(numbers()));
        let text = live_mpd(&renditions, &[&v, &a], &params);
        let u = sim.mpd(&text, i as f64);
        assert_eq!(u.reload_after, s(1.0));
    }
    let r = sim.report(7.5);
    assert_eq!(sim.kinds(), [ErrorKind::Gap], "{}", r.to_text());
    assert_eq!(sim.count(ErrorKind::Gap), 2, "once per Representation");
    let names: Vec<&str> = r.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["audio", "v"]);
    for rendition in &r.renditions {
        assert_eq!(rendition.stalls, 0);
        assert!(rendition.segments_checked >= 9, "{}", r.to_text());
    }
}

/// A video playlist whose header changes at `N0 + 4`, watched across the change.
fn watch_header_change(announce: bool) -> Sim {
    let mut sim = Sim::new(3, origin_server);
    let v = video_rendition();
    for i in 0..8u64 {
        let mut refs = video_refs(N0 + i..N0 + i + 6);
        let sequence = change_header(&mut refs, N0 + 4, announce);
        sim.playlist(&hls_from(&v, &refs, sequence), i as f64);
    }
    sim
}

#[test]
fn origin_hls_announces_a_header_change() {
    let sim = watch_header_change(true);
    let r = sim.report(7.5);
    assert_eq!(r.violations, 0, "{}", r.to_text());
}

#[test]
fn a_header_change_without_a_discontinuity_is_a_violation() {
    let sim = watch_header_change(false);
    assert_eq!(sim.kinds(), [ErrorKind::UnannouncedHeaderChange]);
    assert_eq!(sim.count(ErrorKind::UnannouncedHeaderChange), 1);
}

#[test]
fn origin_dash_starts_a_period_where_video_changes_and_audio_continues() {
    let mut sim = Sim::new(3, origin_server);
    let renditions = [video_rendition(), audio_rendition()];
    let periods = [
        PeriodStart::EPOCH,
        PeriodStart {
            n: N0 + 4,
            start_ms: (N0 + 4) * 1000,
            previous: Some(0),
            changed: 0b01,
        },
    ];
    for i in 0..8u64 {
        let numbers = || N0 + i..N0 + i + 6;
        let (mut v, a) = (video_refs(numbers()), audio_refs(numbers()));
        change_header(&mut v, N0 + 4, true);
        // Once the window starts at the change, only its Period is in force.
        let in_force = if i >= 4 { &periods[1..] } else { &periods[..] };
        let params = mpd_params(in_force);
        let text = live_mpd(&renditions, &[&v, &a], &params);
        sim.mpd(&text, i as f64);
    }
    let r = sim.report(7.5);
    assert_eq!(r.violations, 0, "{}", r.to_text());
    for rendition in &r.renditions {
        assert!(rendition.segments_checked >= 9, "{}", r.to_text());
    }
}
