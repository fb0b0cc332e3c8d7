use super::*;
use crate::HeaderId;
use crate::fixture::{self, N0, VIDEO_D, seg};
use m3u8_rs::Playlist;

fn params(query: &str) -> MediaPlaylistParams<'_> {
    MediaPlaylistParams {
        target_duration_secs: 2,
        discontinuity_sequence: 0,
        ended: false,
        playlist_type: None,
        query,
    }
}

fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{text}"),
    }
}

fn parse_multivariant(text: &str) -> m3u8_rs::MasterPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a multivariant playlist: {other:?}\n{text}"),
    }
}

#[test]
fn multivariant_expected_text() {
    let text = multivariant(&fixture::renditions(), "?token=abc");
    let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"audio\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio.m3u8?token=abc\"
#EXT-X-STREAM-INF:BANDWIDTH=469000,AVERAGE-BANDWIDTH=414000,CODECS=\"avc1.42C01E,mp4a.40.2\",RESOLUTION=320x180,FRAME-RATE=29.970,AUDIO=\"aud\"
v320.m3u8?token=abc
#EXT-X-STREAM-INF:BANDWIDTH=219000,AVERAGE-BANDWIDTH=184000,CODECS=\"avc1.42C00C,mp4a.40.2\",RESOLUTION=160x90,FRAME-RATE=29.970,AUDIO=\"aud\"
v160.m3u8?token=abc
";
    assert_eq!(text, want);
}

#[test]
fn multivariant_parses_back() {
    let p = parse_multivariant(&multivariant(&fixture::renditions(), ""));
    assert_eq!(p.version, Some(6));
    assert!(p.independent_segments);
    let v: Vec<_> = p.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(v, ["v320.m3u8", "v160.m3u8"]);
    let top = &p.variants[0];
    assert_eq!(top.bandwidth, 469_000);
    assert_eq!(top.average_bandwidth, Some(414_000));
    assert_eq!(top.codecs.as_deref(), Some("avc1.42C01E,mp4a.40.2"));
    let res = top.resolution.unwrap();
    assert_eq!((res.width, res.height), (320, 180));
    assert_eq!(top.frame_rate, Some(29.97));
    assert_eq!(top.audio.as_deref(), Some("aud"));
    let [a] = p.alternatives.as_slice() else {
        panic!("one EXT-X-MEDIA")
    };
    assert_eq!(a.uri.as_deref(), Some("audio.m3u8"));
    assert_eq!(
        (a.group_id.as_str(), a.language.as_deref()),
        ("aud", Some("en"))
    );
    assert!(a.default && a.autoselect);
    assert_eq!(a.channels.as_deref(), Some("2"));
}

#[test]
fn multivariant_with_two_audio_tracks_has_one_default() {
    let mut rs = fixture::renditions();
    let mut fr = fixture::audio();
    fr.name = "audio_fr".into();
    fr.codecs = "mp4a.40.5".into();
    fr.bandwidth = 99_000;
    if let RenditionKind::Audio { language, .. } = &mut fr.kind {
        *language = Some("fr".into());
    }
    rs.push(fr);
    let p = parse_multivariant(&multivariant(&rs, ""));
    let defaults: Vec<_> = p.alternatives.iter().map(|a| a.default).collect();
    assert_eq!(defaults, [true, false]);
    // Largest audio peak, every audio codec once.
    assert_eq!(p.variants[0].bandwidth, 400_000 + 99_000);
    assert_eq!(
        p.variants[0].codecs.as_deref(),
        Some("avc1.42C01E,mp4a.40.2,mp4a.40.5")
    );
}

#[test]
fn audio_only_channel_lists_the_audio_playlist_as_variant() {
    let text = multivariant(&[fixture::audio()], "");
    let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=69000,AVERAGE-BANDWIDTH=64000,CODECS=\"mp4a.40.2\"
audio.m3u8
";
    assert_eq!(text, want);
    assert_eq!(parse_multivariant(&text).variants.len(), 1);
}

#[test]
fn video_only_channel_has_no_audio_group() {
    let rs = &fixture::renditions()[..2];
    let text = multivariant(rs, "");
    assert!(!text.contains("AUDIO="), "{text}");
    assert!(text.contains("CODECS=\"avc1.42C01E\","), "{text}");
}

#[test]
fn frame_rates_to_three_decimals() {
    let mut rs = fixture::renditions();
    for (r, rate) in rs.iter_mut().zip(["60000/1001", "25"]) {
        if let RenditionKind::Video { frame_rate, .. } = &mut r.kind {
            *frame_rate = rate.parse().unwrap();
        }
    }
    let text = multivariant(&rs, "");
    assert!(text.contains("FRAME-RATE=59.940"), "{text}");
    assert!(text.contains("FRAME-RATE=25.000"), "{text}");
}

#[test]
fn video_media_playlist_expected_text() {
    let rs = fixture::renditions();
    let text = media_playlist(&rs[1], &fixture::video_segments(), &params(""));
    // N0 + 2 is missing: a GAP placeholder keeps N0 + 3 at media sequence N0 + 3, and its
    // times come from the timestamps on both sides.
    let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:896911164
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"v320/init-0123456789abcdef.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:50.328Z
#EXTINF:2.00200,
v320/896911164.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:52.330Z
#EXTINF:2.00200,
v320/896911165.m4s
#EXT-X-GAP
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:54.332Z
#EXTINF:2.00200,
v320/896911166.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:56.334Z
#EXTINF:2.00200,
v320/896911167.m4s
";
    assert_eq!(text, want);
}

#[test]
fn audio_media_playlist_expected_text() {
    let p = MediaPlaylistParams {
        target_duration_secs: 2,
        discontinuity_sequence: 3,
        ended: false,
        playlist_type: Some(PlaylistType::Event),
        query: "?token=a&b=1",
    };
    let text = media_playlist(&fixture::audio(), &fixture::audio_segments(), &p);
    // Audio starts on the AAC frame grid: 1795616152.341333 s prints .341, and the gap
    // placeholder spans exactly from the end of N0+1 to the start of N0+3.
    let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:896911164
#EXT-X-DISCONTINUITY-SEQUENCE:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PLAYLIST-TYPE:EVENT
#EXT-X-MAP:URI=\"audio/init-0123456789abcdef.mp4?token=a&b=1\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:50.336Z
#EXTINF:2.00533,
audio/896911164.m4s?token=a&b=1
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:52.341Z
#EXTINF:2.00533,
audio/896911165.m4s?token=a&b=1
#EXT-X-GAP
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:54.347Z
#EXTINF:2.00533,
audio/896911166.m4s?token=a&b=1
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:56.352Z
#EXTINF:1.98400,
audio/896911167.m4s?token=a&b=1
";
    assert_eq!(text, want);
}

#[test]
fn media_playlist_parses_back() {
    let segs = fixture::audio_segments_of(&[N0, N0 + 1, N0 + 2, N0 + 3, N0 + 4]);
    let text = media_playlist(&fixture::audio(), &segs, &params("?t=1"));
    let p = parse_media(&text);
    assert_eq!(p.version, Some(6));
    assert_eq!(p.target_duration, 2);
    assert_eq!(p.media_sequence, N0);
    assert!(p.independent_segments && !p.end_list);
    assert_eq!(p.segments.len(), segs.len());
    assert_eq!(
        p.segments[0].map.as_ref().unwrap().uri,
        "audio/init-0123456789abcdef.mp4?t=1"
    );
    for (got, want) in p.segments.iter().zip(&segs) {
        assert_eq!(got.uri, format!("audio/{}.m4s?t=1", want.n));
        let secs = want.duration as f64 / 48_000.0;
        assert!(
            (f64::from(got.duration) - secs).abs() < 1e-5,
            "{} vs {secs}",
            got.duration
        );
        // Rounded to the nearest millisecond from the exact tick count.
        let ms = (want.start * 1000 + 24_000) / 48_000;
        assert_eq!(got.program_date_time.unwrap().timestamp_millis() as u64, ms);
        assert!(got.duration.round() as u64 <= p.target_duration);
    }
}

#[test]
fn empty_playlist_is_valid_and_reloadable() {
    let text = media_playlist(&fixture::audio(), &[], &params(""));
    let p = parse_media(&text);
    assert!(p.segments.is_empty() && !p.end_list);
    assert_eq!(p.media_sequence, 0);
    // No segment, no header to name yet.
    assert!(!text.contains("#EXT-X-MAP"), "{text}");
}

#[test]
fn a_new_header_gets_its_map_after_the_discontinuity() {
    let rs = fixture::renditions();
    let mut segs: Vec<_> = (N0..N0 + 4).map(|n| seg(n, n * VIDEO_D, VIDEO_D)).collect();
    for s in &mut segs[2..] {
        s.header = HeaderId(0xfeed);
    }
    segs[2].discontinuity = true;
    let p = MediaPlaylistParams {
        discontinuity_sequence: 7,
        ..params("?t=1")
    };
    let text = media_playlist(&rs[0], &segs, &p);
    assert_eq!(text.matches("#EXT-X-MAP:").count(), 2, "{text}");
    assert!(
        text.contains(&format!(
            "v160/{}.m4s?t=1\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"v160/init-000000000000feed.mp4?t=1\"\n",
            N0 + 1
        )),
        "{text}"
    );
    let parsed = parse_media(&text);
    assert_eq!(parsed.discontinuity_sequence, 7);
    let maps: Vec<_> = parsed
        .segments
        .iter()
        .map(|s| s.map.as_ref().map(|m| m.uri.clone()))
        .collect();
    assert_eq!(
        maps,
        [
            Some("v160/init-0123456789abcdef.mp4?t=1".to_string()),
            None,
            Some("v160/init-000000000000feed.mp4?t=1".to_string()),
            None
        ]
    );
}

#[test]
fn header_ids_name_urls_one_way() {
    assert_eq!(HeaderId(0xfeed).to_string(), "000000000000feed");
    assert_eq!("000000000000feed".parse(), Ok(HeaderId(0xfeed)));
    for bad in [
        "feed",
        "000000000000FEED",
        "+00000000000feed",
        "000000000000feedx",
        "",
    ] {
        assert!(bad.parse::<HeaderId>().is_err(), "{bad}");
    }
}

#[test]
fn one_segment() {
    let rs = fixture::renditions();
    let segs = [seg(N0, N0 * VIDEO_D, VIDEO_D)];
    let p = parse_media(&media_playlist(&rs[0], &segs, &params("")));
    assert_eq!(p.media_sequence, N0);
    let [s] = p.segments.as_slice() else {
        panic!("one segment")
    };
    assert_eq!(s.uri, format!("v160/{N0}.m4s"));
}

#[test]
fn discontinuity_and_ended_vod() {
    let rs = fixture::renditions();
    let mut segs = fixture::video_segments();
    // The third segment comes from a copy that could not be aligned: its timestamps jump, so
    // the hole before it cannot be measured and the placeholder takes the previous duration.
    segs[2].discontinuity = true;
    segs[2].start += 12_345;
    let p = MediaPlaylistParams {
        ended: true,
        playlist_type: Some(PlaylistType::Vod),
        ..params("")
    };
    let text = media_playlist(&rs[0], &segs, &p);
    assert!(text.ends_with("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T14:15:56.471Z\n#EXTINF:2.00200,\nv160/896911167.m4s\n#EXT-X-ENDLIST\n"), "{text}");
    let parsed = parse_media(&text);
    assert!(parsed.end_list);
    assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    let disc: Vec<_> = parsed.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(disc, [false, false, false, true]);
    assert!((parsed.segments[2].duration - 2.002).abs() < 1e-6);
}

#[test]
fn gap_of_several_segments_splits_the_hole_exactly() {
    let segs = fixture::audio_segments_of(&[N0, N0 + 4]);
    let text = media_playlist(&fixture::audio(), &segs, &params(""));
    let p = parse_media(&text);
    let uris: Vec<_> = p.segments.iter().map(|s| s.uri.clone()).collect();
    let want: Vec<_> = (N0..=N0 + 4).map(|n| format!("audio/{n}.m4s")).collect();
    assert_eq!(uris, want);
    assert_eq!(text.matches("#EXT-X-GAP\n").count(), 3);
    // The placeholders' start times tile the hole: the one after the gap starts where the
    // three placeholders end.
    let total: f64 = p.segments[1..4].iter().map(|s| f64::from(s.duration)).sum();
    let hole = (segs[1].start - segs[0].end()) as f64 / 48_000.0;
    assert!((total - hole).abs() < 5e-5, "{total} vs {hole}");
}

#[test]
fn target_durations() {
    assert_eq!(target_duration(2.002), 2);
    assert_eq!(target_duration(2.002 + 1024.0 / 48_000.0), 2);
    assert_eq!(target_duration(6.006), 6);
    assert_eq!(target_duration(2.5), 3);
    assert_eq!(
        target_duration(2.499_996),
        3,
        "EXTINF prints 2.50000, which rounds to 3"
    );
    assert_eq!(target_duration(2.499_994), 2);
    assert_eq!(target_duration(0.4), 1);
    assert_eq!(target_duration(f64::NAN), 1);
}

#[test]
fn program_date_time_rounds_to_the_nearest_millisecond() {
    let a = fixture::audio();
    // 1024 ticks at 48 kHz: 21.333 ms after the epoch second, then 42.667 ms.
    let segs = [seg(
        1_795_616_148 * 48_000 + 1024,
        1_795_616_148 * 48_000 + 1024,
        1024,
    )];
    let text = media_playlist(&a, &segs, &params(""));
    assert!(
        text.contains("PROGRAM-DATE-TIME:2026-11-25T14:15:48.021Z\n#EXTINF:0.02133,"),
        "{text}"
    );
    let segs = [seg(1, 1_795_616_148 * 48_000 + 2048, 2048)];
    let text = media_playlist(&a, &segs, &params(""));
    assert!(
        text.contains("PROGRAM-DATE-TIME:2026-11-25T14:15:48.043Z\n#EXTINF:0.04267,"),
        "{text}"
    );
}
