//! Round trips through the writer, the inspector and the fragment reader, and the cutting
//! rules of the segmenter.

use bytes::Bytes;
use timeline::{FrameRate, SegmentGrid};

use super::*;
use crate::Error;
use crate::fmp4::{
    FragmentEvent, FragmentReader, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS, Sample, TrackInfo,
    TrackKind,
};
use crate::testutil::tiny_moov;

/// 2026-11-25, in 90 kHz ticks: ≈ 1.6e14, needs the 64-bit tfdt.
const T0: u64 = 1_795_616_830 * 90_000;

fn sample(dts: u64, duration: u32, cto: i32, sync: bool, len: usize) -> Sample {
    Sample {
        dts,
        duration,
        cto,
        flags: if sync {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        },
        data: Bytes::from(
            (0..len)
                .map(|i| (dts as usize + i) as u8)
                .collect::<Vec<_>>(),
        ),
    }
}

/// 30 fps video; frame `i` is a keyframe when `(phase + i) % gop == 0`.
fn video_run_at(first_dts: u64, count: usize, gop: usize, phase: usize) -> Vec<Sample> {
    (0..count)
        .map(|i| {
            let cto = if i % 3 == 1 { -3000 } else { 6000 };
            sample(
                first_dts + 3000 * i as u64,
                3000,
                cto,
                (phase + i).is_multiple_of(gop),
                10 + i % 7,
            )
        })
        .collect()
}

fn video_run(first_dts: u64, count: usize, gop: usize) -> Vec<Sample> {
    video_run_at(first_dts, count, gop, 0)
}

fn grid() -> SegmentGrid {
    SegmentGrid::new(FrameRate::new(30, 1).unwrap(), 60).unwrap()
}

fn video_track() -> TrackInfo {
    TrackInfo::new(
        1,
        TrackKind::Video {
            width: 320,
            height: 180,
        },
        90_000,
        "avc1.42C00D",
    )
}

fn audio_track() -> TrackInfo {
    TrackInfo::new(
        3,
        TrackKind::Audio {
            sample_rate: 48_000,
            channels: 2,
        },
        48_000,
        "mp4a.40.2",
    )
}

#[test]
fn segment_round_trips_through_inspect_and_reader() {
    let samples = video_run(T0, 60, 60);
    let seg = media_segment(7, 4_000_000_001, T0, &samples).unwrap();
    let info = inspect_segment(&seg).unwrap();
    assert_eq!(
        info,
        SegmentInfo {
            track_id: 7,
            sequence_number: 4_000_000_001,
            base_decode_time: T0,
            duration: 180_000,
            sample_count: 60,
            starts_with_sync: true,
            byte_len: seg.len(),
        }
    );

    // The reader needs a moov: a hand-made track 7 one.
    let mut reader = FragmentReader::new(1 << 20);
    reader
        .push_box(crate::mp4::Mp4Box {
            kind: *b"moov",
            bytes: tiny_moov(&[7]),
        })
        .unwrap();
    reader.push(&seg);
    let mut got = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        got.push(e);
    }
    assert!(matches!(got.first(), Some(FragmentEvent::Init(_))));
    assert_eq!(
        got.get(1),
        Some(&FragmentEvent::Samples {
            track_id: 7,
            samples
        })
    );
}

#[test]
fn segment_without_cto_uses_trun_v0_and_no_cto_column() {
    let samples: Vec<_> = (0..3)
        .map(|i| sample(T0 + 1024 * i, 1024, 0, true, 5))
        .collect();
    let seg = media_segment(3, 1, T0, &samples).unwrap();
    // styp 24 + moof (8 + mfhd 16 + traf 8 + tfhd 16 + tfdt 20 + trun 20 + 3·12) + mdat 8 + 15
    assert_eq!(seg.len(), 24 + 8 + 16 + 8 + 16 + 20 + 20 + 36 + 8 + 15);
    let info = inspect_segment(&seg).unwrap();
    assert_eq!(
        (info.duration, info.sample_count, info.base_decode_time),
        (3072, 3, T0)
    );
    assert!(media_segment(3, 1, T0, &[]).is_err());
}

#[test]
fn tiny_moov_parses_and_makes_a_header() {
    let movie = crate::fmp4::Movie::from_bytes(tiny_moov(&[7])).unwrap();
    let t = movie.track(7).unwrap();
    assert_eq!(t.codec, "avc1.64001F");
    assert_eq!(
        t.kind,
        TrackKind::Video {
            width: 320,
            height: 180
        }
    );
    let init = init_segment(&movie, 7).unwrap();
    let back = inspect_init(&init).unwrap();
    assert_eq!(back.track_id, 7);
    assert_eq!(back.default_sample_flags, 0x10000);
    assert_eq!(init_segment(&movie, 8), Err(Error::NoSuchTrack(8)));
    assert!(matches!(
        init_segment(&movie, 7).map(|b| inspect_segment(&b)),
        Ok(Err(Error::NotCmafSegment(_)))
    ));
}

#[test]
fn inspect_rejects_what_is_not_a_segment() {
    let seg = media_segment(1, 1, T0, &video_run(T0, 5, 60)).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"hello world, this is no mp4".to_vec()),
        ("truncated", seg[..seg.len() - 1].to_vec()),
        ("extra box", [&seg[..], b"\0\0\0\x08free"].concat()),
        ("no moof", seg[..24].to_vec()),
    ];
    for (name, bytes) in cases {
        let e = inspect_segment(&bytes).unwrap_err();
        assert!(
            e.to_string().starts_with("not a CMAF media segment: "),
            "{name}: {e}"
        );
    }
    // styp is optional.
    assert!(inspect_segment(&seg[24..]).is_ok());
    // A trun claiming more samples than its bytes hold: bump sample_count of the trun.
    let mut lying = seg.to_vec();
    let at = find(&lying, b"trun") + 8;
    lying[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    let e = inspect_segment(&lying).unwrap_err();
    assert!(e.to_string().contains("trun sample table"), "{e}");
    // A sample pointing past the mdat: grow the last sample size.
    let mut outside = seg.to_vec();
    let at = find(&outside, b"trun") + 16 + 4 * 16 + 4;
    outside[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
    let e = inspect_segment(&outside).unwrap_err();
    assert!(e.to_string().contains("outside the mdat"), "{e}");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn cut_all(seg: &mut TrackSegmenter, samples: Vec<Sample>) -> Vec<SegmenterEvent> {
    let mut out = Vec::new();
    for s in samples {
        out.extend(seg.push(s).unwrap());
    }
    out
}

fn segments(events: &[SegmenterEvent]) -> Vec<&CutSegment> {
    events
        .iter()
        .filter_map(|e| match e {
            SegmenterEvent::Segment(s) => Some(s),
            SegmenterEvent::Dropped { .. } => None,
        })
        .collect()
}

#[test]
fn video_is_cut_on_the_grid_and_a_mid_segment_join_is_dropped() {
    let g = grid();
    let n0 = g.segment_of(T0, 90_000);
    let start = g.start_of(n0, 90_000);
    // Joined 10 frames into segment n0, then three whole segments.
    let mut seg = TrackSegmenter::new(&video_track(), g);
    let events = cut_all(&mut seg, video_run_at(start + 30_000, 50 + 180, 60, 10));
    assert_eq!(
        events[0],
        SegmenterEvent::Dropped {
            n: n0,
            reason: DropReason::JoinedMidway {
                first_dts: start + 30_000,
                segment_start: start
            }
        }
    );
    let segs = segments(&events);
    assert_eq!(segs.len(), 3);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.n, n0 + 1 + i as u64);
        assert_eq!(s.base_decode_time, g.start_of(s.n, 90_000));
        assert_eq!((s.samples.len(), s.duration), (60, 180_000));
        assert!(s.starts_with_sync && s.complete);
    }
    assert!(seg.flush().is_empty());
    assert_eq!(seg.stats().emitted, 3);
    assert_eq!(seg.stats().dropped_joined_midway, 1);
}

#[test]
fn video_segment_without_keyframe_start_is_dropped() {
    let g = grid();
    let start = g.start_of(g.segment_of(T0, 90_000), 90_000);
    let mut seg = TrackSegmenter::new(&video_track(), g);
    // GOP of 45 frames: the second segment starts on frame 60, not a keyframe.
    let events = cut_all(&mut seg, video_run(start, 120, 45));
    assert!(matches!(events[0], SegmenterEvent::Segment(_)));
    assert!(matches!(
        events[1],
        SegmenterEvent::Dropped {
            reason: DropReason::NoSyncStart,
            ..
        }
    ));
    assert_eq!(seg.stats().dropped_no_sync, 1);
}

#[test]
fn audio_frames_go_to_the_segment_holding_their_start() {
    let g = grid();
    let ts = 48_000;
    let n0 = g.segment_of(T0 / 90_000 * ts as u64, ts);
    // Start 5 frames before segment n0 + 1, run for 3 segments' worth.
    let first = g.start_of(n0 + 1, ts) - 5 * 1024 + 300;
    let frames: Vec<_> = (0..300)
        .map(|i| sample(first + 1024 * i, 1024, 0, true, 6))
        .collect();
    let mut seg = TrackSegmenter::new(&audio_track(), g);
    let mut events = cut_all(&mut seg, frames);
    events.extend(seg.flush());
    assert!(
        matches!(events[0], SegmenterEvent::Dropped { n, reason: DropReason::JoinedMidway { .. } } if n == n0)
    );
    let segs = segments(&events);
    for s in &segs {
        let start = g.start_of(s.n, ts);
        assert!(
            s.base_decode_time >= start && s.base_decode_time - start <= 1024,
            "{}",
            s.n
        );
        // Contiguous: the next segment begins where this one ends.
        assert!(s.samples.iter().all(|x| g.segment_of(x.dts, ts) == s.n));
    }
    assert_eq!(segs[0].n, n0 + 1);
    assert_eq!(
        segs[1].base_decode_time,
        segs[0].base_decode_time + segs[0].duration
    );
    let last = segs.last().unwrap();
    assert!(!last.complete, "the flushed tail is partial");
}

#[test]
fn a_flushed_short_last_frame_plays_as_long_as_the_others() {
    let g = grid();
    let ts = 48_000;
    let n = g.segment_of(T0 / 90_000 * ts as u64, ts) + 1;
    let start = g.start_of(n, ts);
    // 2 s segments hold 93.75 AAC frames: frame 93 starts 768 samples before the next segment
    // and, flushed at the boundary, holds just those.
    let mut frames: Vec<_> = (0..94)
        .map(|i| sample(start + 1024 * i, 1024, 0, true, 6))
        .collect();
    frames.last_mut().unwrap().duration = 768;
    let mut seg = TrackSegmenter::new(&audio_track(), g);
    let mut events = cut_all(&mut seg, frames.clone());
    events.extend(seg.flush());
    let flushed = segments(&events)[0].clone();

    let mut seg = TrackSegmenter::new(&audio_track(), g);
    frames.last_mut().unwrap().duration = 1024;
    frames.push(sample(start + 1024 * 94, 1024, 0, true, 6));
    let ran_on = segments(&cut_all(&mut seg, frames))[0].clone();
    assert_eq!(flushed, ran_on);
    assert_eq!(flushed.duration, 94 * 1024);
    assert!(flushed.complete);
}

#[test]
fn gaps_close_segments_and_rewinds_are_rejected() {
    let g = grid();
    let start = g.start_of(g.segment_of(T0, 90_000), 90_000);
    let mut seg = TrackSegmenter::new(&video_track(), g);
    let run = video_run(start, 30, 60);
    let rewind = run[10].clone();
    cut_all(&mut seg, run);
    // Backwards by more than a tick: refused, state kept.
    assert!(matches!(
        seg.push(rewind),
        Err(SegmentError::Backwards { .. })
    ));
    assert_eq!(seg.stats().rejected_samples, 1);
    // One tick of overlap is tolerated, and shortens the previous sample.
    let mut s = sample(start + 90_000 - 1, 3001, 0, false, 4);
    assert!(seg.push(s.clone()).unwrap().is_empty());
    // A jump to a later segment closes the half-full one as incomplete.
    s = sample(start + 3 * 180_000, 3000, 0, true, 4);
    let events = seg.push(s).unwrap();
    let [SegmenterEvent::Segment(cut)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(cut.samples.len(), 31);
    assert!(!cut.complete);
    assert_eq!(cut.samples[29].duration, 2999);
    assert_eq!(cut.duration, 90_000 - 1 + 3001);
    // Its segment is closed for good.
    assert!(
        seg.push(sample(start + 3 * 180_000 + 3000, 3000, 0, false, 1))
            .is_ok()
    );
}

#[test]
fn caps_drop_the_segment_with_an_error_and_keep_going() {
    let g = grid();
    let start = g.start_of(g.segment_of(T0, 90_000), 90_000);
    let mut seg = TrackSegmenter::new(&video_track(), g).with_limits(10, 1 << 20);
    let mut errors = 0;
    let mut events = Vec::new();
    for s in video_run(start, 120, 60) {
        match seg.push(s) {
            Ok(e) => events.extend(e),
            Err(SegmentError::TooManySamples { max: 10, .. }) => errors += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        errors, 2,
        "one error per segment, then its samples are discarded quietly"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                SegmenterEvent::Dropped {
                    reason: DropReason::Overflow,
                    ..
                }
            ))
            .count(),
        2
    );
    let mut seg = TrackSegmenter::new(&video_track(), g).with_limits(100, 20);
    assert!(
        seg.push(sample(start, 3000, 0, true, 15))
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        seg.push(sample(start + 3000, 3000, 0, false, 15)),
        Err(SegmentError::TooManyBytes { .. })
    ));
}

#[test]
fn zero_timescale_is_an_error_not_a_division_by_zero() {
    let mut t = video_track();
    t.timescale = 0;
    let mut seg = TrackSegmenter::new(&t, grid());
    assert_eq!(
        seg.push(sample(0, 1, 0, true, 1)),
        Err(SegmentError::ZeroTimescale)
    );
}

/// Any header a pipeline (or anyone holding its credential) uploads is inspected or refused,
/// never a panic; an accepted one has what the packager divides and looks up by.
#[test]
fn fuzz_cmaf_init() {
    fuzzing::Target::new("cmaf_init").run(|data| {
        if let Ok(track) = inspect_init(data) {
            assert!(track.track_id != 0 && track.timescale != 0);
        }
    });
}

/// Any media segment uploaded is inspected or refused, never a panic; an accepted one has a
/// sample and says how long it is.
#[test]
fn fuzz_cmaf_segment() {
    fuzzing::Target::new("cmaf_segment").run(|data| {
        if let Ok(info) = inspect_segment(data) {
            assert_eq!(info.byte_len, data.len());
            assert!(info.sample_count >= 1);
            assert!(info.duration <= u64::from(info.sample_count) * u64::from(u32::MAX));
        }
    });
}
