use super::*;
use crate::fixture::{self, N0, VIDEO_D, seg};

fn params(query: &str) -> MpdParams<'_> {
    MpdParams {
        now_unix_millis: 1_795_616_158_000,
        segment_duration_secs: 2.002,
        time_shift_buffer_depth_secs: 60.0,
        suggested_presentation_delay_secs: 6.0,
        min_buffer_time_secs: 4.0,
        utc_timing_url: "/time",
        query,
        periods: &[],
    }
}

/// The Period of a clip starting at segment `n` (D = 2.002 s).
fn clip_start(n: u64) -> PeriodStart {
    PeriodStart {
        n,
        start_ms: n * 2002,
        ..PeriodStart::EPOCH
    }
}

/// A segment as (t, d): what a `$Time$` template addresses it by.
type Pair = (u64, u64);

/// Expands every Representation's SegmentTimeline back into (id, [(t, d)]) following
/// ISO/IEC 23009-1 5.3.9.6: `@t` restarts time, else it runs on.
fn expand(mpd: &str) -> Vec<(String, Vec<Pair>)> {
    let doc = roxmltree::Document::parse(mpd).unwrap_or_else(|e| panic!("{e}\n{mpd}"));
    let num = |n: roxmltree::Node, a: &str| n.attribute(a).map(|v| v.parse::<u64>().unwrap());
    let mut reps = Vec::new();
    for rep in doc
        .descendants()
        .filter(|n| n.has_tag_name("Representation"))
    {
        let template = rep
            .children()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .unwrap();
        let timeline = template
            .children()
            .find(|n| n.has_tag_name("SegmentTimeline"))
            .unwrap();
        assert_eq!(template.attribute("startNumber"), None);
        let mut t = 0;
        let mut out = Vec::new();
        for s in timeline.children().filter(|n| n.has_tag_name("S")) {
            assert_eq!(s.attribute("n"), None, "a $Time$ timeline needs no @n");
            t = num(s, "t").unwrap_or(t);
            let d = num(s, "d").unwrap();
            for _ in 0..=num(s, "r").unwrap_or(0) {
                out.push((t, d));
                t += d;
            }
        }
        reps.push((rep.attribute("id").unwrap().to_string(), out));
    }
    reps
}

fn pairs(segments: &[SegmentRef]) -> Vec<Pair> {
    segments.iter().map(|s| (s.start, s.duration)).collect()
}

#[test]
fn mpd_expected_text() {
    let (video, audio) = (fixture::video_segments(), fixture::audio_segments());
    let text = live_mpd(
        &fixture::renditions(),
        &[&video, &video, &audio],
        &params("?token=a&b=1"),
    );
    let want = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z" publishTime="2026-11-25T14:15:58.000Z" minimumUpdatePeriod="PT2.002S" timeShiftBufferDepth="PT1M" suggestedPresentationDelay="PT6S" minBufferTime="PT4S" maxSegmentDuration="PT2.006S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" maxWidth="320" maxHeight="180" maxFrameRate="30000/1001">
      <Representation id="v160" bandwidth="150000" codecs="avc1.42C00C" width="160" height="90" frameRate="30000/1001" sar="1:1">
        <SegmentTemplate timescale="90000" presentationTimeOffset="0" initialization="$RepresentationID$/init-0123456789abcdef.mp4?token=a&amp;b=1" media="$RepresentationID$/t$Time$.m4s?token=a&amp;b=1">
          <SegmentTimeline>
            <S t="161605453529520" d="180180" r="1"/>
            <S t="161605454070060" d="180180"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
      <Representation id="v320" bandwidth="400000" codecs="avc1.42C01E" width="320" height="180" frameRate="30000/1001" sar="1:1">
        <SegmentTemplate timescale="90000" presentationTimeOffset="0" initialization="$RepresentationID$/init-0123456789abcdef.mp4?token=a&amp;b=1" media="$RepresentationID$/t$Time$.m4s?token=a&amp;b=1">
          <SegmentTimeline>
            <S t="161605453529520" d="180180" r="1"/>
            <S t="161605454070060" d="180180"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true" startWithSAP="1">
      <Representation id="audio" bandwidth="69000" codecs="mp4a.40.2" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SegmentTemplate timescale="48000" presentationTimeOffset="0" initialization="$RepresentationID$/init-0123456789abcdef.mp4?token=a&amp;b=1" media="$RepresentationID$/t$Time$.m4s?token=a&amp;b=1">
          <SegmentTimeline>
            <S t="86189575216128" d="96256" r="1"/>
            <S t="86189575504896" d="95232"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/time"/>
</MPD>
"#;
    assert_eq!(text, want);
}

#[test]
fn timeline_expands_back_across_gaps_and_runs() {
    // An hour of video with two holes, and the matching audio with its uneven durations.
    let ns: Vec<u64> = (N0..N0 + 1800)
        .filter(|n| *n != N0 + 10 && !(N0 + 500..N0 + 503).contains(n))
        .collect();
    let video: Vec<_> = ns.iter().map(|&n| seg(n, n * VIDEO_D, VIDEO_D)).collect();
    let audio = fixture::audio_segments_of(&ns);
    let text = live_mpd(
        &fixture::renditions(),
        &[&video, &video, &audio],
        &params(""),
    );
    let reps = expand(&text);
    let ids: Vec<_> = reps.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["v160", "v320", "audio"]);
    assert_eq!(reps[0].1, pairs(&video));
    assert_eq!(reps[1].1, pairs(&video));
    assert_eq!(reps[2].1, pairs(&audio));
    // Video compresses to one S per contiguous run: three runs.
    let v160 = text.split("</Representation>").next().unwrap();
    assert_eq!(v160.matches("<S ").count(), 3, "{v160}");
}

#[test]
fn unequal_durations_are_never_merged() {
    let mut segs = Vec::new();
    let mut t = fixture::audio_start(N0);
    for (i, n) in (N0..N0 + 6).enumerate() {
        let d = if i % 2 == 0 { 96_256 } else { 95_232 };
        segs.push(seg(n, t, d));
        t += d;
    }
    let a = [fixture::audio()];
    let text = live_mpd(&a, &[&segs], &params(""));
    assert!(!text.contains(" r=\""), "{text}");
    assert_eq!(
        text.matches(" t=\"").count(),
        1,
        "only the first S needs @t"
    );
    assert_eq!(text.matches("<S ").count(), 6);
    assert_eq!(expand(&text)[0].1, pairs(&segs));
}

#[test]
fn a_time_jump_states_t() {
    let mut segs: Vec<_> = (N0..N0 + 4).map(|n| seg(n, n * VIDEO_D, VIDEO_D)).collect();
    for s in &mut segs[2..] {
        s.start += 3000;
    }
    segs[2].discontinuity = true;
    let rs = &fixture::renditions()[..1];
    let text = live_mpd(rs, &[&segs], &params(""));
    assert!(
        text.contains(&format!(
            "<S t=\"{}\" d=\"180180\" r=\"1\"/>",
            segs[2].start
        )),
        "{text}"
    );
    assert!(!text.contains(" n=\""), "{text}");
    assert_eq!(expand(&text)[0].1, pairs(&segs));
}

#[test]
fn query_is_xml_escaped_and_dollar_doubled() {
    let segs = fixture::video_segments();
    let rs = &fixture::renditions()[..1];
    let text = live_mpd(rs, &[&segs], &params("?token=x$y&exp=1<2"));
    assert!(
        text.contains(r#"media="$RepresentationID$/t$Time$.m4s?token=x$$y&amp;exp=1&lt;2""#),
        "{text}"
    );
    let doc = roxmltree::Document::parse(&text).unwrap();
    let t = doc
        .descendants()
        .find(|n| n.has_tag_name("SegmentTemplate"))
        .unwrap();
    assert_eq!(
        t.attribute("initialization"),
        Some("$RepresentationID$/init-0123456789abcdef.mp4?token=x$$y&exp=1<2")
    );
}

#[test]
fn empty_representations_are_left_out() {
    let (video, audio) = (fixture::video_segments(), fixture::audio_segments());
    let rs = fixture::renditions();
    let text = live_mpd(&rs, &[&[], &video, &audio], &params(""));
    let ids: Vec<_> = expand(&text).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["v320", "audio"]);

    let text = live_mpd(&rs, &[&[], &[], &[]], &params(""));
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert!(doc.descendants().any(|n| n.has_tag_name("Period")));
    assert!(!doc.descendants().any(|n| n.has_tag_name("AdaptationSet")));
    assert!(text.contains(r#"maxSegmentDuration="PT2.002S""#), "{text}");
}

#[test]
fn one_segment() {
    let segs = [seg(N0, N0 * VIDEO_D, VIDEO_D)];
    let rs = &fixture::renditions()[1..2];
    let text = live_mpd(rs, &[&segs], &params(""));
    assert!(
        text.contains(&format!(
            "t$Time$.m4s\">\n          <SegmentTimeline>\n            <S t=\"{}\" d=\"180180\"/>\n",
            N0 * VIDEO_D
        )),
        "{text}"
    );
    assert_eq!(expand(&text)[0].1, pairs(&segs));
}

#[test]
fn audio_languages_get_their_own_adaptation_sets() {
    let mut rs = vec![fixture::audio(), fixture::audio(), fixture::audio()];
    rs[1].name = "audio_lo".into();
    rs[2].name = "audio_fr".into();
    if let RenditionKind::Audio { language, .. } = &mut rs[2].kind {
        *language = Some("fr".into());
    }
    let segs = fixture::audio_segments();
    let text = live_mpd(&rs, &[&segs, &segs, &segs], &params(""));
    let doc = roxmltree::Document::parse(&text).unwrap();
    let sets: Vec<(Option<&str>, usize)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("AdaptationSet"))
        .map(|n| {
            (
                n.attribute("lang"),
                n.children()
                    .filter(|c| c.has_tag_name("Representation"))
                    .count(),
            )
        })
        .collect();
    assert_eq!(sets, [(Some("en"), 2), (Some("fr"), 1)]);
}

#[test]
fn max_frame_rate_is_the_fastest_fraction() {
    let mut rs = fixture::renditions();
    if let RenditionKind::Video { frame_rate, .. } = &mut rs[0].kind {
        *frame_rate = "30".parse().unwrap();
    }
    let segs = fixture::video_segments();
    let text = live_mpd(&rs[..2], &[&segs, &segs], &params(""));
    assert!(text.contains(r#"maxFrameRate="30">"#), "{text}");
    assert!(text.contains(r#"frameRate="30" sar"#), "{text}");
}

#[test]
fn xsd_duration_public_form() {
    assert_eq!(xsd_duration(2.002), "PT2.002S");
    assert_eq!(xsd_duration(60.0), "PT1M");
    assert_eq!(xsd_duration(5400.0), "PT1H30M");
    assert_eq!(xsd_duration(0.0), "PT0S");
    assert_eq!(xsd_duration(-1.0), "PT0S");
    assert_eq!(xsd_duration(2.0020000000000002), "PT2.002S");
}

#[test]
fn static_mpd_of_a_clip_starts_at_zero() {
    let (video, audio) = (fixture::video_segments(), fixture::audio_segments());
    let text = static_mpd(
        &fixture::renditions(),
        &[&video, &video, &audio],
        &[clip_start(N0)],
        4.0,
        "",
        Addressing::Time,
    );
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mpd = doc.root_element();
    assert_eq!(mpd.attribute("type"), Some("static"));
    assert_eq!(mpd.attribute("minimumUpdatePeriod"), None);
    // Video N0..N0+3 with N0+2 missing: from the first start to the last end, 4 segments.
    assert_eq!(mpd.attribute("mediaPresentationDuration"), Some("PT8.008S"));
    let offsets: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("SegmentTemplate"))
        .map(|n| {
            n.attribute("presentationTimeOffset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .collect();
    // Media time N0·D is the clip's 0 in every Representation; audio's first frame starts a
    // little after it, as it does live.
    assert_eq!(offsets, [video[0].start, video[0].start, N0 * 96_096]);
    assert_eq!(expand(&text)[0].1, pairs(&video));
}

#[test]
fn numbered_static_mpd_states_the_number_after_a_gap() {
    let video = fixture::video_segments();
    let rs = &fixture::renditions()[..1];
    let text = static_mpd(
        rs,
        &[&video],
        &[clip_start(N0)],
        4.0,
        "",
        Addressing::Number,
    );
    assert!(
        text.contains(&format!(
            r#"media="$RepresentationID$/$Number$.m4s" startNumber="{N0}""#
        )),
        "{text}"
    );
    // N0, N0+1 run on; N0+3 follows a hole, so it states its time and number.
    assert!(
        text.contains(&format!(
            r#"<S t="{}" n="{}" d="180180"/>"#,
            video[2].start,
            N0 + 3
        )),
        "{text}"
    );
}

#[test]
fn a_header_change_starts_a_period_that_other_sets_continue() {
    let rs = fixture::renditions();
    let ns: Vec<u64> = (N0..N0 + 6).collect();
    let mut video: Vec<_> = ns.iter().map(|&n| seg(n, n * VIDEO_D, VIDEO_D)).collect();
    for s in &mut video[3..] {
        s.header = crate::HeaderId(0xfeed);
    }
    video[3].discontinuity = true;
    let audio = fixture::audio_segments_of(&ns);
    // Both video renditions (0 and 1) change their header; audio (2) keeps its own.
    let periods = [
        PeriodStart::EPOCH,
        PeriodStart {
            previous: Some(0),
            changed: 0b011,
            ..clip_start(N0 + 3)
        },
    ];
    let text = live_mpd(
        &rs,
        &[&video, &video, &audio],
        &MpdParams {
            periods: &periods,
            ..params("")
        },
    );
    let doc = roxmltree::Document::parse(&text).unwrap();
    let found: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Period"))
        .map(|p| (p.attribute("id").unwrap(), p.attribute("start").unwrap()))
        .collect();
    let second_start = crate::text::XsdDuration((N0 + 3) * 2002).to_string();
    let second_id = (N0 + 3).to_string();
    assert_eq!(
        found,
        [("0", "PT0S"), (second_id.as_str(), second_start.as_str())],
        "{text}"
    );
    // Video changed its header: a new one, and no continuity. Audio continues the Period
    // before it, timed from the new Period's start.
    let second = text.split("<Period id=\"").nth(2).unwrap();
    assert!(second.contains("init-000000000000feed.mp4"), "{second}");
    assert_eq!(
        second.matches("period-continuity").count(),
        1,
        "only the audio set continues: {second}"
    );
    assert!(
        second.contains(
            "startWithSAP=\"1\">\n      <SupplementalProperty \
             schemeIdUri=\"urn:mpeg:dash:period-continuity:2015\" value=\"0\"/>\n      \
             <Representation id=\"audio\""
        ),
        "{second}"
    );
    assert!(
        second.contains(&format!(
            "presentationTimeOffset=\"{}\"",
            (N0 + 3) * 180_180
        )),
        "{second}"
    );
    // Each segment appears in exactly one Period.
    let reps = expand(&text);
    let v160: Vec<Pair> = reps
        .iter()
        .filter(|(id, _)| id == "v160")
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert_eq!(v160, pairs(&video));
}
