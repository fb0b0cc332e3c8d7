//! DASH rules, each broken on purpose, and the MPD pieces (durations, templates).

use super::*;
use crate::check::dash::{expand_template, parse_mpd, parse_xs_duration};

/// One Period's worth of `(t, d)` entries for Representation `v` at 90 kHz.
struct Period<'a> {
    id: &'a str,
    start: &'a str,
    entries: Vec<(u64, u64)>,
}

fn mpd_of(periods: &[Period<'_>], kind: &str) -> String {
    let mut t = format!(
        "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"{kind}\" \
         availabilityStartTime=\"1970-01-01T00:00:00Z\" minimumUpdatePeriod=\"PT1S\">\n"
    );
    for p in periods {
        t.push_str(&format!(
            "<Period id=\"{}\" start=\"{}\"><AdaptationSet contentType=\"video\">\
             <SegmentTemplate timescale=\"90000\" initialization=\"$RepresentationID$/init.mp4\" \
             media=\"$RepresentationID$/t$Time$.m4s\"><SegmentTimeline>",
            p.id, p.start
        ));
        for (st, d) in &p.entries {
            t.push_str(&format!("<S t=\"{st}\" d=\"{d}\"/>"));
        }
        t.push_str(
            "</SegmentTimeline></SegmentTemplate>\
             <Representation id=\"v\" bandwidth=\"1000\"/></AdaptationSet></Period>\n",
        );
    }
    t.push_str("</MPD>\n");
    t
}

/// Segments `first..first+count` on the grid, in one Period at the epoch.
fn mpd(first: u64, count: u64) -> String {
    let entries = (first..first + count).map(|n| ((N0 + n) * D, D)).collect();
    mpd_of(
        &[Period {
            id: "0",
            start: "PT0S",
            entries,
        }],
        "dynamic",
    )
}

fn mpd_entries(entries: Vec<(u64, u64)>) -> String {
    mpd_of(
        &[Period {
            id: "0",
            start: "PT0S",
            entries,
        }],
        "dynamic",
    )
}

fn grid(n: u64) -> (u64, u64) {
    ((N0 + n) * D, D)
}

#[test]
fn a_steady_mpd_passes_and_reloads_at_the_minimum_update_period() {
    let mut sim = Sim::new(3, good_server);
    for i in 0..8 {
        let u = sim.mpd(&mpd(i, 5), i as f64);
        assert_eq!(u.reload_after, s(1.0));
    }
    let r = sim.report(7.5);
    assert!(r.passed(), "{}", r.to_text());
    assert_eq!(r.renditions[0].segments_checked, 10);
    assert_eq!(r.format, crate::check::Format::Dash);
}

#[test]
fn a_rewritten_s_is_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.mpd(&mpd(0, 5), 0.0);
    let mut e: Vec<_> = (1..6).map(grid).collect();
    e[1].1 = D + 1; // segment 2 changes its duration
    sim.mpd(&mpd_entries(e), 1.0);
    assert!(
        sim.kinds().contains(&ErrorKind::Rewritten),
        "{:?}",
        sim.kinds()
    );
}

#[test]
fn a_hole_in_time_is_a_gap() {
    let mut sim = Sim::new(3, good_server);
    sim.mpd(&mpd(0, 5), 0.0);
    // 5 never came; 6 follows with an explicit S@t.
    let e = vec![grid(2), grid(3), grid(4), grid(6)];
    sim.mpd(&mpd_entries(e.clone()), 2.0);
    sim.mpd(&mpd_entries(e), 2.5);
    assert_eq!(sim.kinds(), [ErrorKind::Gap]);
    assert_eq!(sim.count(ErrorKind::Gap), 1, "reported once");
    let r = sim.report(2.5);
    assert_eq!(r.renditions[0].missing_seconds, 1.0);
}

#[test]
fn segments_that_slid_by_unseen_are_skipped() {
    let mut sim = Sim::new(3, good_server);
    sim.mpd(&mpd(0, 5), 0.0);
    sim.mpd(&mpd(7, 5), 1.0);
    assert_eq!(sim.kinds(), [ErrorKind::Skipped]);
}

#[test]
fn a_dropped_tail_and_a_stale_mpd_are_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.mpd(&mpd(0, 5), 0.0);
    sim.mpd(&mpd(0, 4), 1.0);
    assert_eq!(sim.kinds(), [ErrorKind::Dropped]);
    sim.mpd(&mpd(0, 4), 2.0);
    assert_eq!(sim.kinds(), [ErrorKind::Stale, ErrorKind::Dropped]);
}

#[test]
fn tfdt_must_match_the_timeline() {
    let server = |uri: &str| match number_in(uri) {
        // The origin names the segment by S@t but its tfdt is a second later.
        Some(t) if t == (N0 + 4) * D => Answer::Bytes(video_at(t + D, 15, true)),
        Some(t) => Answer::Bytes(video_at(t, 15, true)),
        None => Answer::Status(404),
    };
    let mut sim = Sim::new(3, server);
    sim.mpd(&mpd(0, 5), 0.0);
    assert!(
        sim.kinds().contains(&ErrorKind::TimelineMismatch),
        "{:?}",
        sim.kinds()
    );
}

#[test]
fn a_new_period_must_be_a_real_jump() {
    let server = |uri: &str| match number_in(uri) {
        Some(t) => Answer::Bytes(video_at(t, 15, true)),
        None => Answer::Status(404),
    };
    let p0 = Period {
        id: "0",
        start: "PT0S",
        entries: vec![grid(0), grid(1), grid(2)],
    };
    // Period 1 restarts its media timeline at 0: a real jump.
    let jump = Period {
        id: "1",
        start: &format!("PT{}S", N0 + 3),
        entries: vec![(0, D), (D, D)],
    };
    let mut real = Sim::new(5, server);
    real.mpd(&mpd_of(&[p0, jump], "dynamic"), 0.0);
    assert!(real.kinds().is_empty(), "{:?}", real.kinds());

    // Period 1 continues the same media timeline: nothing needed a new Period.
    let p0 = Period {
        id: "0",
        start: "PT0S",
        entries: vec![grid(0), grid(1), grid(2)],
    };
    // Period 1 starts at 0 with a presentation time that continues Period 0's.
    let same = Period {
        id: "1",
        start: "PT0S",
        entries: vec![grid(3), grid(4)],
    };
    let mut fake = Sim::new(5, server);
    fake.mpd(&mpd_of(&[p0, same], "dynamic"), 0.0);
    assert_eq!(fake.kinds(), [ErrorKind::FalseDiscontinuity]);
}

#[test]
fn a_static_mpd_is_not_live() {
    let mut sim = Sim::new(3, good_server);
    let text = mpd(0, 5).replace("type=\"dynamic\"", "type=\"static\"");
    sim.mpd(&text, 0.0);
    assert_eq!(sim.kinds(), [ErrorKind::Ended]);
    sim.mpd("<html/>", 1.0);
    assert!(sim.kinds().contains(&ErrorKind::BadManifest));
}

#[test]
fn number_templates_and_repeats() {
    let text = "<MPD type=\"dynamic\" minimumUpdatePeriod=\"PT0.5S\"><Period id=\"p\">\
        <AdaptationSet><Representation id=\"a\" bandwidth=\"64000\">\
        <SegmentTemplate timescale=\"48000\" startNumber=\"10\" media=\"$RepresentationID$/$Number%05d$-$Bandwidth$.m4s\">\
        <SegmentTimeline><S t=\"96000\" d=\"48000\" r=\"2\"/><S d=\"47104\"/></SegmentTimeline>\
        </SegmentTemplate></Representation></AdaptationSet></Period></MPD>";
    let mpd = parse_mpd(text).expect("parses");
    assert_eq!(mpd.minimum_update_period, Some(s(0.5)));
    let [rep] = mpd.representations.as_slice() else {
        panic!("one Representation")
    };
    let got: Vec<(&str, u64, u64)> = rep
        .segments
        .iter()
        .map(|x| (x.uri.as_str(), x.t, x.key))
        .collect();
    assert_eq!(
        got,
        [
            ("a/00010-64000.m4s", 96_000, 2_000_000),
            ("a/00011-64000.m4s", 144_000, 3_000_000),
            ("a/00012-64000.m4s", 192_000, 4_000_000),
            ("a/00013-64000.m4s", 240_000, 5_000_000),
        ]
    );
    assert!(parse_mpd(&text.replace("r=\"2\"", "r=\"-1\"")).is_err());
}

#[test]
fn xs_durations_and_templates() {
    assert_eq!(parse_xs_duration("PT1S"), Some(s(1.0)));
    assert_eq!(parse_xs_duration("PT0.5S"), Some(s(0.5)));
    assert_eq!(parse_xs_duration("PT1M30S"), Some(s(90.0)));
    assert_eq!(parse_xs_duration("P1DT1H"), Some(s(90_000.0)));
    assert_eq!(parse_xs_duration("P1Y"), None);
    assert_eq!(parse_xs_duration("1S"), None);
    assert_eq!(
        expand_template("$RepresentationID$/t$Time$.m4s?x=$$1", "180p", 0, 1, 42),
        "180p/t42.m4s?x=$1"
    );
    assert_eq!(expand_template("a$Unknown$b", "r", 0, 1, 0), "a$Unknown$b");
}

#[test]
fn renditions_are_filtered_and_a_missing_one_is_reported() {
    let mut sim = Sim::new(3, good_server);
    sim.checker = Checker::new(Options {
        buffer_segments: 3,
        renditions: vec!["v".into(), "4k".into()],
    });
    let text = mpd(0, 5).replace(
        "</AdaptationSet></Period>",
        "</AdaptationSet><AdaptationSet><SegmentTemplate media=\"a/$Time$\">\
         <SegmentTimeline><S t=\"0\" d=\"1\"/></SegmentTimeline></SegmentTemplate>\
         <Representation id=\"a\"/></AdaptationSet></Period>",
    );
    let u = sim.mpd(&text, 0.0);
    assert!(u.jobs.iter().all(|j| j.rendition == "v"), "{u:?}");
    let r = sim.report(0.5);
    let names: Vec<&str> = r.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["v"]);
    assert_eq!(r.errors[&ErrorKind::NoSegments].count, 1, "{}", r.to_text());
    assert!(!r.passed());
}
