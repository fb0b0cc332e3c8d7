//! ffmpeg's real output (tests/fixtures/ladder.mp4, see its README): parse, segment on the
//! 2 s / 30 fps grid, write CMAF and read it back.

// Test helpers outside #[test] fns: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used)]

use media::cmaf::{
    CutSegment, DropReason, SegmenterEvent, TrackSegmenter, init_segment, inspect_init,
    inspect_segment, media_segment,
};
use media::fmp4::{FragmentEvent, FragmentReader, Movie, Sample, TrackKind};
use timeline::{FrameRate, SegmentGrid};

const FIXTURE: &[u8] = include_bytes!("fixtures/ladder.mp4");

fn read_all(bytes: &[u8], chunk: usize) -> (Movie, Vec<(u32, Vec<Sample>)>) {
    let mut r = FragmentReader::new(1 << 20);
    let mut movie = None;
    let mut runs = Vec::new();
    for c in bytes.chunks(chunk) {
        r.push(c);
        while let Some(e) = r.next_event().unwrap() {
            match e {
                FragmentEvent::Init(m) => movie = Some(m),
                FragmentEvent::Samples { track_id, samples } => runs.push((track_id, samples)),
            }
        }
    }
    (movie.unwrap(), runs)
}

fn grid() -> SegmentGrid {
    SegmentGrid::new(FrameRate::new(30, 1).unwrap(), 60).unwrap()
}

#[test]
fn parses_ffmpeg_tracks() {
    let (movie, runs) = read_all(FIXTURE, 4096);
    let summary: Vec<_> = movie
        .tracks
        .iter()
        .map(|t| (t.track_id, t.kind.clone(), t.timescale, t.codec.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                1,
                TrackKind::Video {
                    width: 160,
                    height: 90
                },
                90_000,
                "avc1.42C00B"
            ),
            (
                2,
                TrackKind::Video {
                    width: 96,
                    height: 54
                },
                90_000,
                "avc1.42C00A"
            ),
            (
                3,
                TrackKind::Audio {
                    sample_rate: 48_000,
                    channels: 1
                },
                48_000,
                "mp4a.40.2"
            ),
        ]
    );
    // Chunking does not matter.
    assert_eq!(read_all(FIXTURE, 1).1, runs);
    assert_eq!(read_all(FIXTURE, FIXTURE.len()).1, runs);
    for id in [1, 2, 3] {
        let samples: Vec<&Sample> = runs
            .iter()
            .filter(|r| r.0 == id)
            .flat_map(|r| &r.1)
            .collect();
        // Decode times are contiguous across fragments and absolute (≈ 1.6e14 at 90 kHz).
        for w in samples.windows(2) {
            assert_eq!(w[0].end(), w[1].dts, "track {id}");
        }
        assert!(samples[0].is_sync());
        if id != 3 {
            // 5.4 s at 30 fps from an even second, a keyframe every 2 s.
            assert_eq!(samples.len(), 162);
            assert_eq!(samples[0].dts, 1_795_616_830 * 90_000);
            let sync: Vec<usize> = (0..162).filter(|&i| samples[i].is_sync()).collect();
            assert_eq!(sync, [0, 60, 120]);
        }
    }
}

fn cut(track_id: u32) -> (Movie, Vec<SegmenterEvent>) {
    let (movie, runs) = read_all(FIXTURE, 65536);
    let track = movie.track(track_id).unwrap().clone();
    let mut seg = TrackSegmenter::new(&track, grid());
    let mut events = Vec::new();
    for (_, samples) in runs.into_iter().filter(|r| r.0 == track_id) {
        for s in samples {
            events.extend(seg.push(s).unwrap());
        }
    }
    events.extend(seg.flush());
    (movie, events)
}

fn segments(events: &[SegmenterEvent]) -> Vec<&CutSegment> {
    events
        .iter()
        .filter_map(|e| {
            if let SegmenterEvent::Segment(s) = e {
                Some(s)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn video_segments_sit_on_the_grid() {
    let g = grid();
    for id in [1, 2] {
        let (_, events) = cut(id);
        let segs = segments(&events);
        // Two whole segments, and the tail ffmpeg wrote past the last boundary, flushed.
        assert_eq!(segs.len(), 3, "track {id}: {} events", events.len());
        assert!(!segs[2].complete);
        let segs = &segs[..2];
        assert_eq!(segs[0].n, 897_808_415);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.n, segs[0].n + i as u64);
            assert_eq!(s.base_decode_time, g.start_of(s.n, 90_000));
            assert_eq!(s.samples.len(), 60, "track {id} segment {}", s.n);
            assert_eq!(s.duration, 180_000);
            assert!(s.starts_with_sync && s.samples[0].is_sync() && s.complete);
        }
    }
}

#[test]
fn audio_segments_start_within_one_frame_and_the_partial_one_is_dropped() {
    let g = grid();
    let (_, events) = cut(3);
    assert!(matches!(
        events[0],
        SegmenterEvent::Dropped {
            n: 897_808_414,
            reason: DropReason::JoinedMidway { .. }
        }
    ));
    let segs = segments(&events);
    assert!(segs.len() >= 2);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.n, 897_808_415 + i as u64);
        let start = g.start_of(s.n, 48_000);
        assert!(s.base_decode_time >= start && s.base_decode_time < start + 1024);
    }
    assert!(segs[0].complete);
    assert_eq!(
        segs[1].base_decode_time,
        segs[0].base_decode_time + segs[0].duration
    );
}

#[test]
fn cmaf_round_trip_on_every_track() {
    for id in [1, 2, 3] {
        let (movie, events) = cut(id);
        let init = init_segment(&movie, id).unwrap();
        let track = inspect_init(&init).unwrap();
        let original = movie.track(id).unwrap();
        assert_eq!(
            (track.track_id, &track.codec, &track.kind),
            (id, &original.codec, &original.kind)
        );
        // A single-track header parses as a movie with that track only.
        let mut stream = init.to_vec();
        let mut expected = Vec::new();
        for s in segments(&events) {
            let bytes = media_segment(id, s.n as u32, s.base_decode_time, &s.samples).unwrap();
            let info = inspect_segment(&bytes).unwrap();
            assert_eq!(info.track_id, id);
            assert_eq!(info.sequence_number, s.n as u32);
            assert_eq!(info.base_decode_time, s.base_decode_time);
            assert_eq!(info.duration, s.duration);
            assert_eq!(info.sample_count as usize, s.samples.len());
            assert!(info.starts_with_sync);
            if let Ok(dir) = std::env::var("MEDIA_DUMP_DIR") {
                std::fs::write(format!("{dir}/track{id}-{}.m4s", s.n), &bytes).unwrap();
                std::fs::write(format!("{dir}/track{id}-init.mp4",), &init).unwrap();
            }
            stream.extend_from_slice(&bytes);
            expected.extend(s.samples.iter().cloned());
        }
        let (movie2, runs) = read_all(&stream, 1000);
        assert_eq!(movie2.tracks.len(), 1);
        let got: Vec<Sample> = runs.into_iter().flat_map(|r| r.1).collect();
        assert_eq!(got, expected, "track {id}");
    }
}
