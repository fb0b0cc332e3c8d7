//! HLS (RFC 8216) multivariant and media playlists for epoch-locked fMP4 renditions.
//!
//! Version 6 is the lowest that the tags need: media playlists carry `EXT-X-MAP` without
//! `EXT-X-I-FRAMES-ONLY` (RFC 8216 §7 requires 6 for that), and decimal `EXTINF` needs 3. The
//! multivariant playlist needs no particular version by itself; it states the same 6 so a client
//! that cannot play the media playlists learns it from the first file it loads.
//!
//! The media sequence number of a segment is its epoch number `N`, so a playlist rendered by
//! any node at any time names the same segment with the same number. RFC 8216 numbers segments
//! consecutively within a playlist, so a missing `N` is kept in the list as an `EXT-X-GAP`
//! placeholder (RFC 8216bis §4.4.4.7) rather than dropped: dropping it would shift the number
//! of every later segment until the hole slid out of the window.

use crate::text::{push_decimal, push_iso8601, push_uint, scale_round};
use crate::{Rendition, RenditionKind, SegmentRef};

/// RFC 8216 §7: `EXT-X-MAP` in a media playlist without `EXT-X-I-FRAMES-ONLY`.
const VERSION: u32 = 6;

/// The one audio group every video variant refers to.
const AUDIO_GROUP: &str = "aud";

/// `EXT-X-PLAYLIST-TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    /// Segments are only ever appended (a live event kept whole for DVR).
    Event,
    /// The playlist never changes (harvested VOD; pair with `ended`).
    Vod,
}

/// What a media playlist needs besides its rendition and segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPlaylistParams<'a> {
    /// `EXT-X-TARGETDURATION`; compute it once per channel with [`target_duration`] from the
    /// longest segment a rendition can have (D plus one audio frame), so it never changes
    /// between reloads (RFC 8216 §6.2.1 forbids changing it).
    pub target_duration_secs: u32,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: how many discontinuities slid out of the window before
    /// the first listed segment.
    pub discontinuity_sequence: u64,
    /// Append `EXT-X-ENDLIST` (the presentation is over).
    pub ended: bool,
    pub playlist_type: Option<PlaylistType>,
    /// Appended verbatim to every URI (`?token=…`), or empty. Must not contain `"` or a line
    /// break, which HLS cannot quote.
    pub query: &'a str,
}

/// `EXT-X-TARGETDURATION` for segments of at most `max_segment_secs`.
///
/// RFC 8216 §4.3.3.1: every `EXTINF`, rounded to the nearest integer, must be ≤ the target. The
/// duration is first rounded to the 5 decimals `EXTINF` is written with, so the check a player
/// makes on the written text holds too. 2.002 s gives 2, 6.006 s gives 6, 2.5 s gives 3.
pub fn target_duration(max_segment_secs: f64) -> u32 {
    if !max_segment_secs.is_finite() || max_segment_secs <= 0.0 {
        return 1;
    }
    let extinf = (max_segment_secs * 100_000.0).round() as u64;
    let rounded = (extinf + 50_000) / 100_000;
    rounded.clamp(1, u64::from(u32::MAX)) as u32
}

/// The multivariant playlist (`main.m3u8`) of a channel.
///
/// Video variants are listed by peak bandwidth, highest first. Clients that estimate bandwidth
/// themselves (hls.js, ExoPlayer, Shaka) ignore the order; Apple's players start with the first
/// listed variant, and on the networks a live origin mostly serves starting high and stepping
/// down once beats starting at the lowest picture for the first segments. Each video variant's
/// `BANDWIDTH` adds the largest audio peak, as RFC 8216 §4.3.4.2 asks for the worst playable
/// combination. A channel without video lists each audio rendition as a variant of its own.
pub fn multivariant(renditions: &[Rendition], query: &str) -> String {
    let mut video: Vec<&Rendition> = renditions.iter().filter(|r| r.is_video()).collect();
    let mut audio: Vec<&Rendition> = renditions.iter().filter(|r| !r.is_video()).collect();
    video.sort_by_key(|r| std::cmp::Reverse(r.bandwidth));

    let mut out = String::with_capacity(256 + renditions.len() * (200 + 2 * query.len()));
    w!(
        &mut out,
        "#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );

    if video.is_empty() {
        audio.sort_by_key(|r| std::cmp::Reverse(r.bandwidth));
        for a in audio {
            stream_inf(&mut out, a.bandwidth, a.average_bandwidth, &a.codecs, &[]);
            w!(&mut out, "\n{}.m3u8{query}\n", a.name);
        }
        return out;
    }

    // RFC 8216 §4.3.4.1.1: at most one member of a group has DEFAULT=YES; the first listed
    // audio rendition is the channel's main one.
    for (i, a) in audio.iter().enumerate() {
        let RenditionKind::Audio {
            channels, language, ..
        } = &a.kind
        else {
            continue;
        };
        w!(
            &mut out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"{}\"",
            a.name
        );
        if let Some(lang) = language {
            w!(&mut out, ",LANGUAGE=\"{lang}\"");
        }
        let default = if i == 0 { "YES" } else { "NO" };
        w!(
            &mut out,
            ",DEFAULT={default},AUTOSELECT=YES,CHANNELS=\"{channels}\""
        );
        w!(&mut out, ",URI=\"{}.m3u8{query}\"\n", a.name);
    }

    // CODECS lists every format of every rendition a variant may play (§4.3.4.2), so each
    // distinct audio codec once.
    let mut audio_codecs: Vec<&str> = Vec::new();
    for a in &audio {
        if !audio_codecs.contains(&a.codecs.as_str()) {
            audio_codecs.push(&a.codecs);
        }
    }
    let audio_peak = audio.iter().map(|a| a.bandwidth).max().unwrap_or(0);
    let audio_average = audio.iter().map(|a| a.average_bandwidth).max().unwrap_or(0);

    for v in video {
        let RenditionKind::Video {
            width,
            height,
            frame_rate,
        } = &v.kind
        else {
            continue;
        };
        stream_inf(
            &mut out,
            v.bandwidth + audio_peak,
            v.average_bandwidth + audio_average,
            &v.codecs,
            &audio_codecs,
        );
        // FRAME-RATE is a decimal "rounded to 3 decimal places" (§4.3.4.2): exact from the
        // fraction, 30000/1001 → 29.970.
        let milli_fps = (u64::from(frame_rate.num()) * 1000 * 2 + u64::from(frame_rate.den()))
            / (2 * u64::from(frame_rate.den()));
        w!(&mut out, ",RESOLUTION={width}x{height},FRAME-RATE=");
        push_decimal(&mut out, milli_fps, 3);
        if !audio.is_empty() {
            w!(&mut out, ",AUDIO=\"{AUDIO_GROUP}\"");
        }
        w!(&mut out, "\n{}.m3u8{query}\n", v.name);
    }
    out
}

fn stream_inf(out: &mut String, peak: u64, average: u64, codecs: &str, more_codecs: &[&str]) {
    w!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},CODECS=\"{codecs}"
    );
    for c in more_codecs {
        w!(out, ",{c}");
    }
    out.push('"');
}

/// The media playlist (`{rendition}.m3u8`) listing `segments`, which must be sorted by `n`
/// without duplicates.
///
/// Every segment carries `EXT-X-PROGRAM-DATE-TIME` (its `start` is Unix time, so the tag is
/// exact and the same on every node) and an `EXTINF` with 5 decimals computed from ticks. An
/// empty list still renders a valid playlist that players reload.
pub fn media_playlist(r: &Rendition, segments: &[SegmentRef], p: &MediaPlaylistParams) -> String {
    // PROGRAM-DATE-TIME (50) + EXTINF (~17) + URI: one allocation for a typical window.
    let per_segment = 100 + r.name.len() + p.query.len();
    let mut out = String::with_capacity(300 + r.name.len() + segments.len() * per_segment);
    let first = segments.first().map_or(0, |s| s.n);
    w!(&mut out, "#EXTM3U\n#EXT-X-VERSION:{VERSION}\n");
    w!(
        &mut out,
        "#EXT-X-TARGETDURATION:{}\n",
        p.target_duration_secs
    );
    w!(&mut out, "#EXT-X-MEDIA-SEQUENCE:{first}\n");
    w!(
        &mut out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
        p.discontinuity_sequence
    );
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    match p.playlist_type {
        Some(PlaylistType::Event) => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        Some(PlaylistType::Vod) => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        None => {}
    }

    let mut prev: Option<&SegmentRef> = None;
    for s in segments {
        debug_assert!(
            prev.is_none_or(|p| p.n < s.n),
            "segments sorted by n, no duplicates"
        );
        if let Some(prev) = prev.filter(|p| s.n > p.n + 1) {
            gap(&mut out, r, prev, s, p.query);
        }
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        // EXT-X-MAP applies until the next one (RFC 8216 §4.3.2.5): written where the header
        // changes, which the origin always marks as a discontinuity too.
        if prev.is_none_or(|p| p.header != s.header) {
            w!(
                &mut out,
                "#EXT-X-MAP:URI=\"{}/init-{}.mp4{}\"\n",
                r.name,
                s.header,
                p.query
            );
        }
        entry(&mut out, r, s.n, s.start, s.duration, p.query);
        prev = Some(s);
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Placeholders for the numbers missing between `prev` and `next`, sharing the hole's duration.
///
/// When `next` continues `prev`'s timeline the hole is measured from the timestamps, so the
/// placeholders' times are exact; across a discontinuity the timestamps say nothing, and each
/// missing segment is assumed as long as `prev`.
fn gap(out: &mut String, r: &Rendition, prev: &SegmentRef, next: &SegmentRef, query: &str) {
    let missing = next.n - prev.n - 1;
    let hole = if !next.discontinuity && next.start > prev.end() {
        next.start - prev.end()
    } else {
        missing * prev.duration
    };
    let at = |i: u64| prev.end() + (u128::from(hole) * u128::from(i) / u128::from(missing)) as u64;
    for i in 0..missing {
        let (from, to) = (at(i), at(i + 1));
        out.push_str("#EXT-X-GAP\n");
        entry(out, r, prev.n + 1 + i, from, to - from, query);
    }
}

fn entry(out: &mut String, r: &Rendition, n: u64, start: u64, duration: u64, query: &str) {
    // Hand-assembled rather than `write!`: this runs once per segment of every playlist.
    let ts = r.timescale;
    out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
    push_iso8601(out, scale_round(start, ts, 1000));
    out.push_str("\n#EXTINF:");
    push_decimal(out, scale_round(duration, ts, 100_000), 5);
    out.push_str(",\n");
    out.push_str(&r.name);
    out.push('/');
    push_uint(out, n, 1);
    out.push_str(".m4s");
    out.push_str(query);
    out.push('\n');
}

#[cfg(test)]
#[path = "hls_tests.rs"]
mod tests;
