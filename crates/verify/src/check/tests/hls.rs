//! HLS rules, each broken on purpose.

use std::collections::HashMap;

use super::*;
use crate::check::hls::{HlsEntry, HlsRendition, parse_entry};

/// A media playlist of rendition `v`: numbers `first..first+count`, 1 s each.
#[derive(Clone, Default)]
struct Pl {
    first: u64,
    count: u64,
    ds: u64,
    gaps: Vec<u64>,
    discs: Vec<u64>,
    durations: HashMap<u64, f64>,
    uris: HashMap<u64, String>,
    ended: bool,
}

fn pl(first: u64, count: u64) -> Pl {
    Pl {
        first: N0 + first,
        count,
        ..Pl::default()
    }
}

impl Pl {
    fn gap(mut self, n: u64) -> Self {
        self.gaps.push(N0 + n);
        self
    }
    fn disc(mut self, n: u64) -> Self {
        self.discs.push(N0 + n);
        self
    }
    fn ds(mut self, ds: u64) -> Self {
        self.ds = ds;
        self
    }
    fn duration(mut self, n: u64, secs: f64) -> Self {
        self.durations.insert(N0 + n, secs);
        self
    }
    fn uri(mut self, n: u64, uri: &str) -> Self {
        self.uris.insert(N0 + n, uri.into());
        self
    }
    fn ended(mut self) -> Self {
        self.ended = true;
        self
    }
    fn text(&self) -> String {
        let mut t = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-MAP:URI=\"v/init.mp4\"\n",
            self.first, self.ds
        );
        for n in self.first..self.first + self.count {
            if self.gaps.contains(&n) {
                t.push_str("#EXT-X-GAP\n");
            }
            if self.discs.contains(&n) {
                t.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let d = self.durations.get(&n).copied().unwrap_or(1.0);
            let uri = self.uris.get(&n).cloned().unwrap_or(format!("v/{n}.m4s"));
            t.push_str(&format!("#EXTINF:{d:.5},\n{uri}\n"));
        }
        if self.ended {
            t.push_str("#EXT-X-ENDLIST\n");
        }
        t
    }
}

/// Loads `first..first+count` for `seconds` reloads, one segment more each second.
fn steady(sim: &mut Sim, from: u64, seconds: u64) {
    for i in 0..seconds {
        sim.playlist(&pl(from + i, 5).text(), i as f64);
    }
}

#[test]
fn a_steady_stream_passes_without_stall() {
    let mut sim = Sim::new(3, good_server);
    steady(&mut sim, 0, 10);
    let r = sim.report(9.5);
    assert!(r.passed(), "{}", r.to_text());
    let [v] = r.renditions.as_slice() else {
        panic!("one rendition: {r:?}")
    };
    // Joined 3 segments back from the edge, then one new segment per reload.
    assert_eq!((v.segments_listed, v.segments_checked), (12, 12));
    assert!(v.playing);
    assert_eq!((r.stall.seconds, r.stall.count), (0.0, 0));
}

#[test]
fn reloads_at_the_target_duration_or_half_of_it_when_unchanged() {
    let mut sim = Sim::new(3, good_server);
    assert_eq!(sim.playlist(&pl(0, 5).text(), 0.0).reload_after, s(1.0));
    assert_eq!(sim.playlist(&pl(0, 5).text(), 1.0).reload_after, s(0.5));
    assert_eq!(sim.playlist(&pl(1, 5).text(), 1.5).reload_after, s(1.0));
}

#[test]
fn skipped_numbers_are_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    // The window moved by 8 between two reloads: 5, 6 and 7 were never listed.
    sim.playlist(&pl(8, 5).text(), 1.0);
    assert_eq!(sim.kinds(), [ErrorKind::Skipped]);
}

#[test]
fn gap_entries_are_reported_and_timestamps_continue_across_them() {
    let server = |uri: &str| {
        if uri.ends_with(&format!("{}.m4s", N0 + 6)) {
            Answer::Status(404)
        } else {
            good_server(uri)
        }
    };
    let mut sim = Sim::new(2, server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    sim.playlist(&pl(1, 6).gap(6).text(), 1.0);
    sim.playlist(&pl(2, 6).gap(6).text(), 2.0);
    assert_eq!(sim.kinds(), [ErrorKind::Gap]);
    assert_eq!(sim.count(ErrorKind::Gap), 1, "reported once");
    let r = sim.report(2.5);
    assert_eq!(r.renditions[0].missing_seconds, 1.0);
    assert_eq!(r.stall.count, 0);
}

#[test]
fn m3u8_rs_keeps_ext_x_gap_for_us() {
    // The origin's own placeholders: GAP before the EXTINF, after PROGRAM-DATE-TIME.
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:7\n\
                #EXT-X-MAP:URI=\"v/init.mp4\"\n#EXTINF:1.0,\nv/7.m4s\n\
                #EXT-X-GAP\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T00:00:08.000Z\n#EXTINF:1.0,\nv/8.m4s\n";
    let mut sim = Sim::new(1, good_server);
    sim.playlist(text, 0.0);
    assert_eq!(sim.kinds(), [ErrorKind::Gap]);
}

#[test]
fn a_rewritten_segment_is_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    sim.playlist(&pl(1, 5).uri(3, "v/other.m4s").text(), 1.0);
    assert_eq!(sim.kinds(), [ErrorKind::Rewritten]);
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    // Within 1 ms is the same duration; 2 ms is not.
    sim.playlist(&pl(1, 5).duration(2, 1.0009).text(), 1.0);
    assert!(sim.kinds().is_empty());
    sim.playlist(&pl(2, 5).duration(3, 1.002).text(), 2.0);
    assert_eq!(sim.kinds(), [ErrorKind::Rewritten]);
}

#[test]
fn a_dropped_segment_is_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    // Segment 4 was listed and is gone while 0..3 are still there.
    sim.playlist(&pl(0, 4).text(), 0.5);
    assert!(
        sim.kinds().contains(&ErrorKind::Dropped),
        "{:?}",
        sim.kinds()
    );
}

#[test]
fn media_sequence_going_back_is_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(5, 5).text(), 0.0);
    sim.playlist(&pl(4, 6).text(), 1.0);
    assert_eq!(sim.kinds(), [ErrorKind::MediaSequence]);
}

#[test]
fn discontinuity_sequence_must_count_what_slid_out() {
    // A real jump at 3 (the server shifts everything from 3 on by half a second).
    let server = |uri: &str| match number_in(uri) {
        Some(n) if n >= N0 + 3 => Answer::Bytes(video_at(n * D + D / 2, 15, true)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    };
    let mut good = Sim::new(3, server);
    good.playlist(&pl(0, 5).disc(3).text(), 0.0);
    good.playlist(&pl(3, 5).disc(3).text(), 1.0);
    good.playlist(&pl(4, 5).ds(1).text(), 2.0);
    assert!(good.kinds().is_empty(), "{:?}", good.kinds());

    let mut bad = Sim::new(3, server);
    bad.playlist(&pl(0, 5).disc(3).text(), 0.0);
    bad.playlist(&pl(4, 5).text(), 1.0); // the discontinuity left; the sequence did not move
    assert_eq!(bad.kinds(), [ErrorKind::DiscontinuitySequence]);
}

#[test]
fn a_stale_playlist_is_reported_once() {
    let mut sim = Sim::new(3, good_server);
    let text = pl(0, 5).text();
    sim.playlist(&text, 0.0);
    sim.playlist(&text, 1.0);
    sim.playlist(&text, 1.5); // exactly 1.5 target durations: still fine
    assert!(sim.kinds().is_empty());
    sim.playlist(&text, 2.0);
    sim.playlist(&text, 2.5);
    assert_eq!(sim.kinds(), [ErrorKind::Stale]);
    assert_eq!(sim.count(ErrorKind::Stale), 1);
    // It advances, then stalls again: a second episode.
    sim.playlist(&pl(1, 5).text(), 3.0);
    sim.playlist(&pl(1, 5).text(), 4.6);
    assert_eq!(sim.count(ErrorKind::Stale), 2);
}

#[test]
fn a_timestamp_jump_without_discontinuity_is_reported() {
    let server = |uri: &str| match number_in(uri) {
        Some(n) if n == N0 + 4 => Answer::Bytes(video_at(n * D + 2 * FRAME, 15, true)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    };
    let mut sim = Sim::new(3, server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    assert_eq!(sim.kinds(), [ErrorKind::TimestampJump]);
    // One frame off is within tolerance.
    let server = |uri: &str| match number_in(uri) {
        Some(n) if n == N0 + 4 => Answer::Bytes(video_at(n * D + FRAME, 15, true)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    };
    let mut sim = Sim::new(3, server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    assert!(sim.kinds().is_empty(), "{:?}", sim.kinds());
}

#[test]
fn an_announced_discontinuity_must_be_real() {
    let jump = |uri: &str| match number_in(uri) {
        Some(n) if n >= N0 + 4 => Answer::Bytes(video_at(n * D + 7 * D, 15, true)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    };
    let mut real = Sim::new(3, jump);
    real.playlist(&pl(0, 5).disc(4).text(), 0.0);
    assert!(real.kinds().is_empty(), "{:?}", real.kinds());

    let mut fake = Sim::new(3, good_server);
    fake.playlist(&pl(0, 5).disc(4).text(), 0.0);
    assert_eq!(fake.kinds(), [ErrorKind::FalseDiscontinuity]);
}

#[test]
fn a_segment_not_starting_with_a_keyframe_is_reported() {
    let server = |uri: &str| match number_in(uri) {
        Some(n) if n == N0 + 3 => Answer::Bytes(video_at(n * D, 15, false)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    };
    let mut sim = Sim::new(3, server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    assert_eq!(sim.kinds(), [ErrorKind::NotKeyframe]);
}

#[test]
fn audio_segments_need_no_keyframe_flag() {
    let mut c = Checker::new(Options {
        buffer_segments: 1,
        renditions: vec![],
    });
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n\
                #EXT-X-MAP:URI=\"audio/init.mp4\"\n#EXTINF:1.0,\naudio/1.m4s\n";
    let u = c.on_playlist("audio", text, s(0.0));
    assert!(c.needs_init("audio", "audio/init.mp4"));
    c.on_init("audio", "audio/init.mp4", &init(false), s(0.0));
    let bytes = audio_at(48_000, 47);
    c.on_segment("audio", &u.jobs[0].uri, &bytes, s(0.0));
    assert_eq!(c.errors().total(), 0);
}

#[test]
fn a_404_is_reported_and_the_player_skips_it() {
    let server = |uri: &str| match number_in(uri) {
        Some(n) if n == N0 + 5 => Answer::Status(404),
        _ => good_server(uri),
    };
    let mut sim = Sim::new(3, server);
    steady(&mut sim, 0, 4);
    assert_eq!(sim.kinds(), [ErrorKind::Http]);
    let r = sim.report(3.5);
    assert_eq!(r.renditions[0].missing_seconds, 1.0);
    assert_eq!(r.errors[&ErrorKind::Http].examples[0].rendition, "v");
    assert!(
        r.errors[&ErrorKind::Http].examples[0]
            .message
            .contains("HTTP 404")
    );
}

#[test]
fn a_late_segment_is_a_stall() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0); // 2, 3, 4 buffered at 0: 5 is needed at 3.0
    sim.playlist(&pl(1, 5).text(), 1.0);
    sim.delay = s(3.25);
    sim.playlist(&pl(2, 5).text(), 1.0); // 6 arrives at 4.25, needed at 4.0
    assert_eq!(sim.kinds(), [ErrorKind::Late]);
    let r = sim.report(4.5);
    assert_eq!((r.stall.seconds, r.stall.count), (0.25, 1));
    assert!(!r.passed());
}

#[test]
fn a_stream_that_stops_is_a_stall_in_progress() {
    let mut sim = Sim::new(3, good_server);
    sim.playlist(&pl(0, 5).text(), 0.0);
    let r = sim.report(5.0); // playing since 0 with 3 s buffered
    assert_eq!((r.stall.seconds, r.stall.count), (2.0, 1));
    assert!(r.errors.contains_key(&ErrorKind::Late));
}

#[test]
fn endlist_and_garbage_are_reported() {
    let mut sim = Sim::new(3, |_: &str| Answer::Bytes(Bytes::from_static(b"not mp4")));
    sim.playlist(&pl(0, 5).ended().text(), 0.0);
    assert_eq!(sim.kinds(), [ErrorKind::BadSegment, ErrorKind::Ended]);
    sim.playlist("<html>", 1.0);
    assert!(sim.kinds().contains(&ErrorKind::BadManifest));
}

#[test]
fn multivariant_renditions_by_playlist_name() {
    let text = "#EXTM3U\n#EXT-X-VERSION:6\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio.m3u8?t=1\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=300000,CODECS=\"avc1.64001F,mp4a.40.2\",AUDIO=\"aud\"\n180p.m3u8?t=1\n\
        #EXT-X-STREAM-INF:BANDWIDTH=100000,CODECS=\"avc1.64001F,mp4a.40.2\",AUDIO=\"aud\"\nsub/90p.m3u8\n";
    let Ok(HlsEntry::Multivariant(r)) = parse_entry(text) else {
        panic!("a multivariant playlist")
    };
    let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["180p", "90p", "audio"]);
    assert_eq!(
        r[0],
        HlsRendition {
            name: "180p".into(),
            uri: "180p.m3u8?t=1".into()
        }
    );
    assert_eq!(parse_entry(&pl(0, 1).text()), Ok(HlsEntry::Media));
    assert!(parse_entry("nonsense").is_err());
}
