//! DASH (ISO/IEC 23009-1, live profile) MPD for epoch-locked fMP4 renditions.
//!
//! Anchored at the Unix epoch: `availabilityStartTime` is 1970-01-01T00:00:00Z and each Period's
//! `presentationTimeOffset` is its start, so a media timestamp in seconds *is* the Unix time of
//! that sample. A channel has one Period until a rendition's CMAF header changes (encoder
//! settings that differ between pipelines); each change starts a new one. Every Representation carries an
//! explicit `SegmentTimeline` because audio cuts land within one AAC frame of `N·D` (DESIGN.md
//! §2): only a timeline states them exactly.
//!
//! Segments are addressed by time (`$Time$`, the segment's tfdt), not by number: after a gap
//! (a segment neither pipeline made) a `$Number$` template would need `S@n`, which dash.js
//! ignores, and players would ask for the wrong segments. The origin maps a time back to `N`.

use crate::text::{
    TemplateLiteral, XmlAttr, XsdDuration, push_iso8601, push_uint, scale_ceil, secs_to_millis,
};
use crate::{Rendition, RenditionKind, SegmentRef};

/// What an MPD needs besides the renditions and their segments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MpdParams<'a> {
    /// `@publishTime`: when this MPD was generated.
    pub now_unix_millis: u64,
    /// The channel's segment duration D; also `@minimumUpdatePeriod`, since the MPD changes once
    /// per new segment.
    pub segment_duration_secs: f64,
    /// `@timeShiftBufferDepth`: the DVR window.
    pub time_shift_buffer_depth_secs: f64,
    /// `@suggestedPresentationDelay`: how far behind the live edge players sit.
    pub suggested_presentation_delay_secs: f64,
    /// `@minBufferTime`.
    pub min_buffer_time_secs: f64,
    /// Where players fetch the time (`urn:mpeg:dash:utc:http-iso:2014`), e.g. `/time`.
    pub utc_timing_url: &'a str,
    /// Appended to every segment URL template (`?token=…`), or empty; escaped here.
    pub query: &'a str,
    /// The Periods to write, oldest first; empty for the one Period anchored at the epoch.
    pub periods: &'a [PeriodStart],
}

/// Where a Period begins: at segment `n`, whose interval starts `start_ms` after the epoch.
/// A Period is named by `n`, and the origin keeps these, so a Period is described the same way
/// on every reload however far its first segments slid out of the window. The first Period
/// takes every listed segment before the second one's `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodStart {
    pub n: u64,
    pub start_ms: u64,
    /// The id (`n`) of the Period before it, which AdaptationSets whose Representations keep
    /// their headers continue.
    pub previous: Option<u64>,
    /// Bit `i`: `renditions[i]` starts another header here. A Representation past bit 63
    /// counts as changed.
    pub changed: u64,
}

impl PeriodStart {
    /// The Period of a channel that never changed its headers: at the epoch.
    pub const EPOCH: PeriodStart = PeriodStart {
        n: 0,
        start_ms: 0,
        previous: None,
        changed: 0,
    };

    /// Whether rendition `index` (in the renditions given to the writer) keeps its header
    /// from the Period before.
    pub fn keeps(&self, index: usize) -> bool {
        index < 64 && self.changed & (1 << index) == 0
    }
}

/// A new Period's AdaptationSet whose Representations keep their headers continues the one of
/// the previous Period seamlessly (DASH-IF IOP 4.3 §4.3.3.3.2).
const PERIOD_CONTINUITY: &str = "urn:mpeg:dash:period-continuity:2015";

/// An `xs:duration` in its shortest form, rounded to the millisecond: `PT2.002S`, `PT1M`,
/// `PT1H30M`, `PT0S`. Negative or NaN inputs give `PT0S`.
pub fn xsd_duration(secs: f64) -> String {
    XsdDuration(secs_to_millis(secs)).to_string()
}

/// The live MPD (`manifest.mpd`) of a channel. `segments[i]` lists the segments of
/// `renditions[i]`, sorted by `n` without duplicates.
///
/// A Representation with no segment yet is left out (a `SegmentTimeline` needs at least one
/// `S`), and so is an AdaptationSet left with none: players retry at `minimumUpdatePeriod`.
/// Audio renditions are grouped into one AdaptationSet per language, as one AdaptationSet
/// holds one language.
pub fn live_mpd(renditions: &[Rendition], segments: &[&[SegmentRef]], p: &MpdParams) -> String {
    debug_assert_eq!(
        renditions.len(),
        segments.len(),
        "one segment list per rendition"
    );
    let reps = listed_representations(renditions, segments);
    let mut out = output_buffer(&reps, p.query);

    let d_ms = secs_to_millis(p.segment_duration_secs);
    // The longest segment any Representation lists (audio runs up to one frame over D),
    // rounded up since players size their buffers on it.
    let max_ms = reps
        .iter()
        .flat_map(|(r, s)| s.iter().map(|s| scale_ceil(s.duration, r.timescale, 1000)))
        .fold(d_ms, u64::max);

    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"dynamic\" \
         availabilityStartTime=\"1970-01-01T00:00:00Z\"",
    );
    out.push_str(" publishTime=\"");
    push_iso8601(&mut out, p.now_unix_millis);
    out.push('"');
    w!(&mut out, " minimumUpdatePeriod=\"{}\"", XsdDuration(d_ms));
    w!(
        &mut out,
        " timeShiftBufferDepth=\"{}\"",
        XsdDuration(secs_to_millis(p.time_shift_buffer_depth_secs))
    );
    w!(
        &mut out,
        " suggestedPresentationDelay=\"{}\"",
        XsdDuration(secs_to_millis(p.suggested_presentation_delay_secs))
    );
    w!(
        &mut out,
        " minBufferTime=\"{}\"",
        XsdDuration(secs_to_millis(p.min_buffer_time_secs))
    );
    w!(
        &mut out,
        " maxSegmentDuration=\"{}\">\n",
        XsdDuration(max_ms)
    );
    let epoch = [PeriodStart::EPOCH];
    let periods = if p.periods.is_empty() {
        &epoch[..]
    } else {
        p.periods
    };
    write_periods(
        &mut out,
        renditions,
        &reps,
        periods,
        0,
        p.query,
        Addressing::Time,
    );
    w!(
        &mut out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{}\"/>\n",
        XmlAttr(p.utc_timing_url)
    );
    out.push_str("</MPD>\n");
    out
}

/// How segment URLs are formed: by the segment's time (`t$Time$.m4s`, the origin's form, robust
/// across gaps) or by its number (`$Number$.m4s`, files of a harvested asset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    Time,
    Number,
}

/// A Representation and the segments it lists (in one Period).
type Rep<'a> = (&'a Rendition, &'a [SegmentRef]);
type Reps<'a> = [Rep<'a>];

/// Writes each Period with the segments of each Representation that fall in it. Period starts
/// are written relative to `zero_ms` (the epoch for live, the clip's start for static MPDs).
fn write_periods(
    out: &mut String,
    renditions: &[Rendition],
    reps: &Reps,
    periods: &[PeriodStart],
    zero_ms: u64,
    query: &str,
    addressing: Addressing,
) {
    for (i, start) in periods.iter().enumerate() {
        let end = periods.get(i + 1).map_or(u64::MAX, |next| next.n);
        let first = i == 0;
        let members: Vec<Rep> = reps
            .iter()
            .map(|&(r, segments)| {
                let from = if first {
                    0
                } else {
                    segments.partition_point(|s| s.n < start.n)
                };
                let to = segments.partition_point(|s| s.n < end);
                (r, &segments[from..to.max(from)])
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if members.is_empty() && !(first && periods.len() == 1) {
            continue;
        }
        let this = Period {
            start: *start,
            zero_ms,
            renditions,
        };
        period(out, &this, &members, query, addressing);
    }
}

/// One Period, and the renditions its [`PeriodStart::changed`] bits refer to.
struct Period<'a> {
    start: PeriodStart,
    zero_ms: u64,
    renditions: &'a [Rendition],
}

impl Period<'_> {
    /// The Period an AdaptationSet continues: the one before, when every member keeps its
    /// header.
    fn continues(&self, members: &Reps) -> Option<u64> {
        let keeps = |r: &Rendition| {
            let index = self.renditions.iter().position(|x| x.name == r.name);
            index.is_some_and(|i| self.start.keeps(i))
        };
        self.start
            .previous
            .filter(|_| members.iter().all(|(r, _)| keeps(r)))
    }
}

fn period(out: &mut String, p: &Period, reps: &Reps, query: &str, addressing: Addressing) {
    w!(
        out,
        "  <Period id=\"{}\" start=\"{}\">\n",
        p.start.n,
        XsdDuration(p.start.start_ms.saturating_sub(p.zero_ms))
    );
    let timing = Timing {
        start_ms: p.start.start_ms,
        addressing,
    };

    let mut set_id = 0;
    let video: Vec<_> = reps.iter().filter(|(r, _)| r.is_video()).copied().collect();
    if !video.is_empty() {
        video_set(out, set_id, &video, p.continues(&video), query, timing);
        set_id += 1;
    }

    // One AdaptationSet per language, in the order the languages first appear.
    let audio: Vec<_> = reps
        .iter()
        .filter(|(r, _)| !r.is_video())
        .copied()
        .collect();
    let mut languages: Vec<Option<&str>> = Vec::new();
    for (r, _) in &audio {
        let lang = language(r);
        if !languages.contains(&lang) {
            languages.push(lang);
        }
    }
    for lang in languages {
        let members: Vec<_> = audio
            .iter()
            .filter(|(r, _)| language(r) == lang)
            .copied()
            .collect();
        audio_set(
            out,
            set_id,
            lang,
            &members,
            p.continues(&members),
            query,
            timing,
        );
        set_id += 1;
    }

    out.push_str("  </Period>\n");
}

/// A static MPD of a closed range (a time-shifted clip, a harvested VOD): every segment listed,
/// the presentation starting at 0 at `periods[0]`, which the caller places at the clip's first
/// segment (and a later Period at each header change).
pub fn static_mpd(
    renditions: &[Rendition],
    segments: &[&[SegmentRef]],
    periods: &[PeriodStart],
    min_buffer_time_secs: f64,
    query: &str,
    addressing: Addressing,
) -> String {
    let reps = listed_representations(renditions, segments);
    let mut out = output_buffer(&reps, query);
    let zero_ms = periods.first().map_or(0, |p| p.start_ms);
    // The clip lasts until its longest Representation ends.
    let duration_ms = reps
        .iter()
        .filter_map(|(r, s)| Some(scale_ceil(s.last()?.end(), r.timescale, 1000)))
        .max()
        .map_or(0, |end| end.saturating_sub(zero_ms));
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\"",
    );
    w!(
        &mut out,
        " mediaPresentationDuration=\"{}\"",
        XsdDuration(duration_ms)
    );
    w!(
        &mut out,
        " minBufferTime=\"{}\">\n",
        XsdDuration(secs_to_millis(min_buffer_time_secs))
    );
    write_periods(
        &mut out, renditions, &reps, periods, zero_ms, query, addressing,
    );
    out.push_str("</MPD>\n");
    out
}

/// The renditions that list at least one segment, with their segments: a SegmentTimeline
/// needs at least one `S`.
fn listed_representations<'a>(
    renditions: &'a [Rendition],
    segments: &[&'a [SegmentRef]],
) -> Vec<(&'a Rendition, &'a [SegmentRef])> {
    renditions
        .iter()
        .zip(segments.iter().copied())
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// One allocation for the whole MPD.
fn output_buffer(reps: &Reps, query: &str) -> String {
    let entries: usize = reps.iter().map(|(_, s)| s.len()).sum();
    String::with_capacity(1500 + reps.len() * (600 + query.len()) + entries * 48)
}

fn language(r: &Rendition) -> Option<&str> {
    match &r.kind {
        RenditionKind::Audio { language, .. } => language.as_deref(),
        RenditionKind::Video { .. } => None,
    }
}

fn video_set(
    out: &mut String,
    id: u32,
    reps: &Reps,
    continues: Option<u64>,
    query: &str,
    timing: Timing,
) {
    let (mut max_w, mut max_h, mut max_rate) = (0, 0, None);
    for (r, _) in reps {
        if let RenditionKind::Video {
            width,
            height,
            frame_rate,
        } = r.kind
        {
            max_w = max_w.max(width);
            max_h = max_h.max(height);
            // Compare fractions exactly: a/b > c/d ⇔ a·d > c·b.
            let faster = |m: timeline::FrameRate| {
                u64::from(frame_rate.num()) * u64::from(m.den())
                    > u64::from(m.num()) * u64::from(frame_rate.den())
            };
            if max_rate.is_none_or(faster) {
                max_rate = Some(frame_rate);
            }
        }
    }
    w!(
        out,
        "    <AdaptationSet id=\"{id}\" contentType=\"video\" mimeType=\"video/mp4\" \
         segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"{max_w}\" maxHeight=\"{max_h}\""
    );
    if let Some(rate) = max_rate {
        w!(out, " maxFrameRate=\"{rate}\"");
    }
    out.push_str(">\n");
    continuity(out, continues);
    for (r, segments) in reps {
        let RenditionKind::Video {
            width,
            height,
            frame_rate,
        } = r.kind
        else {
            continue;
        };
        w!(
            out,
            "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" width=\"{width}\" \
             height=\"{height}\" frameRate=\"{frame_rate}\" sar=\"1:1\">\n",
            XmlAttr(&r.name),
            r.bandwidth,
            XmlAttr(&r.codecs)
        );
        segment_template(out, r, segments, query, timing);
        out.push_str("      </Representation>\n");
    }
    out.push_str("    </AdaptationSet>\n");
}

fn audio_set(
    out: &mut String,
    id: u32,
    lang: Option<&str>,
    reps: &Reps,
    continues: Option<u64>,
    query: &str,
    timing: Timing,
) {
    w!(
        out,
        "    <AdaptationSet id=\"{id}\" contentType=\"audio\" mimeType=\"audio/mp4\""
    );
    if let Some(lang) = lang {
        w!(out, " lang=\"{}\"", XmlAttr(lang));
    }
    out.push_str(" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
    continuity(out, continues);
    for (r, segments) in reps {
        let RenditionKind::Audio {
            sample_rate,
            channels,
            ..
        } = r.kind
        else {
            continue;
        };
        w!(
            out,
            "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" \
             audioSamplingRate=\"{sample_rate}\">\n",
            XmlAttr(&r.name),
            r.bandwidth,
            XmlAttr(&r.codecs)
        );
        w!(
            out,
            "        <AudioChannelConfiguration \
             schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" \
             value=\"{channels}\"/>\n"
        );
        segment_template(out, r, segments, query, timing);
        out.push_str("      </Representation>\n");
    }
    out.push_str("    </AdaptationSet>\n");
}

fn continuity(out: &mut String, continues: Option<u64>) {
    if let Some(previous) = continues {
        w!(
            out,
            "      <SupplementalProperty schemeIdUri=\"{PERIOD_CONTINUITY}\" value=\"{previous}\"/>\n"
        );
    }
}

/// How a Period's Representations place and name their segments.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The Period's start after the epoch: its media time is `presentationTimeOffset`.
    start_ms: u64,
    addressing: Addressing,
}

fn segment_template(
    out: &mut String,
    r: &Rendition,
    segments: &[SegmentRef],
    query: &str,
    timing: Timing,
) {
    let Some(first) = segments.first() else {
        return;
    };
    let offset = u128::from(timing.start_ms) * u128::from(r.timescale) / 1000;
    let q = TemplateLiteral(query);
    let (media, start_number) = match timing.addressing {
        Addressing::Time => ("t$Time$", None),
        Addressing::Number => ("$Number$", Some(first.n)),
    };
    w!(
        out,
        "        <SegmentTemplate timescale=\"{}\" presentationTimeOffset=\"{offset}\" \
         initialization=\"$RepresentationID$/init-{}.mp4{q}\" \
         media=\"$RepresentationID$/{media}.m4s{q}\"",
        r.timescale,
        first.header,
    );
    if let Some(n) = start_number {
        w!(out, " startNumber=\"{n}\"");
    }
    out.push_str(">\n          <SegmentTimeline>\n");
    timeline(out, segments, timing.addressing);
    out.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n");
}

/// `S` entries: a run of segments, each starting where the previous ended, with one duration
/// becomes one `S` with `@r`. `@t` is written on the first entry and wherever the time jumps;
/// with `$Number$` addressing, `@n` wherever the number jumps (ISO/IEC 23009-1 5.3.9.6).
fn timeline(out: &mut String, segments: &[SegmentRef], addressing: Addressing) {
    let numbered = addressing == Addressing::Number;
    let follows =
        |a: &SegmentRef, b: &SegmentRef| b.start == a.end() && (!numbered || b.n == a.n + 1);
    let mut prev: Option<&SegmentRef> = None;
    let mut i = 0;
    while let Some(s) = segments.get(i) {
        let mut repeat = 0;
        while let (Some(a), Some(b)) = (segments.get(i + repeat), segments.get(i + repeat + 1)) {
            if !follows(a, b) || b.duration != s.duration {
                break;
            }
            repeat += 1;
        }
        out.push_str("            <S");
        if prev.is_none_or(|p| s.start != p.end()) {
            out.push_str(" t=\"");
            push_uint(out, s.start, 1);
            out.push('"');
        }
        if numbered && prev.is_some_and(|p| s.n != p.n + 1) {
            out.push_str(" n=\"");
            push_uint(out, s.n, 1);
            out.push('"');
        }
        out.push_str(" d=\"");
        push_uint(out, s.duration, 1);
        out.push('"');
        if repeat > 0 {
            out.push_str(" r=\"");
            push_uint(out, repeat as u64, 1);
            out.push('"');
        }
        out.push_str("/>\n");
        i += repeat + 1;
        prev = segments.get(i - 1);
    }
}

#[cfg(test)]
#[path = "dash_tests.rs"]
mod tests;
