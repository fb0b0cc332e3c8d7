use super::*;

fn segment(n: u64) -> LiveSegment {
    LiveSegment {
        start: n * 180_000,
        duration: 180_000,
        samples: 60,
        feed: Feed::A,
        quality: None,
        header: HeaderId(1),
        bytes: Bytes::new(),
        etag: String::new(),
        listed_ms: n * 1000,
    }
}

fn listing(n: u64, header: u64, disc: u32) -> Listing {
    Listing {
        start: n * 180_000,
        duration: 180_000,
        header: HeaderId(header),
        disc,
    }
}

#[test]
fn a_header_change_is_a_discontinuity_only_at_the_live_edge() {
    let mut state = RenditionState::default();
    let (old, new) = (HeaderId(1), HeaderId(2));
    assert_eq!(
        state.placement(10, new),
        Ok(Placement {
            continues: true,
            disc: 0
        })
    );
    state.index.insert(10, listing(10, 1, 4));
    state.index.insert(12, listing(12, 1, 4));
    let at_edge = state.placement(13, new);
    assert_eq!(
        at_edge,
        Ok(Placement {
            continues: false,
            disc: 5
        })
    );
    assert_eq!(state.placement(13, old).map(|p| p.disc), Ok(4));
    // 11 arrives late, between two listed segments: only the header around it will do.
    assert_eq!(state.placement(11, old).map(|p| p.continues), Ok(true));
    assert!(state.placement(11, new).is_err());
    assert!(state.placement(9, new).is_err());
    assert_eq!(state.placement(9, old).map(|p| p.disc), Ok(4));
}

#[test]
fn manifests_mark_where_the_count_changes_and_start_from_the_first_count() {
    let index: BTreeMap<u64, Listing> = [
        (20, listing(20, 1, 2)),
        (21, listing(21, 2, 3)),
        (22, listing(22, 2, 3)),
        (24, listing(24, 1, 4)),
    ]
    .into_iter()
    .collect();
    let segments = Segments::of(None, index.iter());
    assert_eq!(segments.discontinuity_sequence, 2);
    let marks: Vec<_> = segments.refs.iter().map(|s| s.discontinuity).collect();
    assert_eq!(marks, [false, true, false, true]);
    // Starting at 21, whose tag is still listed: the sequence counts the tags gone.
    let later = Segments::of(Some(2), index.range(21..));
    assert_eq!(later.discontinuity_sequence, 2);
    assert!(later.refs[0].discontinuity);
    let after = Segments::of(Some(3), index.range(22..));
    assert_eq!(after.discontinuity_sequence, 3);
    assert!(!after.refs[0].discontinuity);
}

#[test]
fn periods_keep_the_one_in_force_and_say_what_changed() {
    let spec: ChannelSpec = serde_json::from_str(
        r#"{"id":"demo","frame_rate":"30","segment_seconds":2.0,
            "inputs":{"main":{"type":"rtmp","stream_key":"k"}}}"#,
    )
    .unwrap();
    let channel = LiveChannel::new(spec, channel::Secret::new("")).unwrap();
    let names = ["360p", "audio"];
    assert_eq!(channel.periods_from(100, 200, &names), [PeriodStart::EPOCH]);
    // 360p changes its header at 150; audio never does.
    let video = &channel.renditions["360p"];
    for n in 140..190 {
        let (header, disc) = if n < 150 { (1, 0) } else { (2, 1) };
        video.write().index.insert(n, listing(n, header, disc));
    }
    let at = |n: u64, previous: u64, changed: u64| PeriodStart {
        n,
        start_ms: channel.grid.start_of(n, 1000),
        previous: Some(previous),
        changed,
    };
    for n in [150, 180, 150] {
        channel.add_period(n, channel.grid.start_of(n, 1000));
    }
    assert_eq!(
        channel.periods_from(100, 200, &names),
        [PeriodStart::EPOCH, at(150, 0, 0b01), at(180, 150, 0)]
    );
    assert_eq!(channel.periods_from(160, 170, &names), [at(150, 0, 0b01)]);
    channel.add_period(300, channel.grid.start_of(300, 1000));
    channel.forget_periods_before(310);
    // 300 is in force; 180 stays, named as the Period 300 continues.
    assert_eq!(channel.periods_from(310, 320, &names), [at(300, 180, 0)]);
    assert_eq!(channel.periods.read().unwrap().len(), 2);
}

#[test]
fn window_lists_the_newest_and_memory_stays_bounded() {
    let r = LiveRendition::new("360p", true, 1, 1);
    for n in 100..200 {
        r.insert(n, segment(n), 0, 10);
    }
    assert_eq!(r.read().segments.len() as u64, 10 + EXTRA_SEGMENTS + 1);
    let window = r.window(u64::MAX, 10).refs;
    assert_eq!(window.first().map(|s| s.n), Some(190));
    assert_eq!(window.last().map(|s| s.n), Some(199));
}

#[test]
fn copies_compare_on_time_duration_and_samples() {
    let r = LiveRendition::new("360p", true, 1, 1);
    assert!(r.compare_copies(7, &segment(7), (7 * 180_000, 180_000, 60)));
    assert!(!r.compare_copies(8, &segment(8), (8 * 180_000 + 3000, 180_000, 60)));
    let a = r.alignment();
    assert_eq!((a.compared, a.misaligned), (2, 1));
    assert!(a.last_misaligned.unwrap().starts_with("segment 8:"));
}

#[test]
fn the_index_keeps_the_startover_window_beyond_memory() {
    let r = LiveRendition::new("360p", true, 1, 1);
    r.index_listed((50..100).map(|n| (n, listing(n, 1, 0))));
    for n in 100..200 {
        r.insert(n, segment(n), 0, 10);
    }
    assert_eq!(r.read().index.len(), 150);
    let listed: Vec<_> = r.listed(60, 64, 100).refs.iter().map(|s| s.n).collect();
    assert_eq!(listed, [60, 61, 62, 63, 64]);
    assert_eq!(r.listed(60, 1000, 3).refs.len(), 3);
    // 199 is the newest: 79 behind it is 120.
    let behind: Vec<_> = r
        .listed_behind(u64::MAX, 79, 3)
        .refs
        .iter()
        .map(|s| s.n)
        .collect();
    assert_eq!(behind, [118, 119, 120]);
    r.forget_before(150);
    assert_eq!(r.read().index.keys().next(), Some(&150));
}

#[test]
fn the_edge_is_the_newest_segment_listed_a_settle_time_ago() {
    let r = LiveRendition::new("360p", true, 1, 1);
    assert_eq!(r.edge(0, 500), None);
    r.index_listed((50..100).map(|n| (n, listing(n, 1, 0))));
    for n in 100..110 {
        r.insert(n, segment(n), 0, 100);
    }
    // Segment n was listed at n s.
    assert_eq!(r.edge(105_499, 500), Some(104));
    assert_eq!(r.edge(105_500, 500), Some(105));
    assert_eq!(r.edge(200_000, 500), Some(109));
    assert_eq!(r.edge(100_000, 500), Some(99), "the index settled long ago");
    // 111 listed at 111 s, then 110 a moment later: 111 waits for 110.
    let late = |n, listed_ms| LiveSegment {
        listed_ms,
        ..segment(n)
    };
    r.insert(111, late(111, 111_000), 0, 100);
    r.insert(110, late(110, 111_100), 0, 100);
    assert_eq!(r.edge(111_550, 500), Some(109));
    assert_eq!(r.edge(111_600, 500), Some(111));
    // One listed a settle time or more after a newer one no longer holds it back: the
    // newer one was shown already.
    r.insert(113, late(113, 113_000), 0, 100);
    r.insert(112, late(112, 113_600), 0, 100);
    assert_eq!(r.edge(113_700, 500), Some(113));
    assert_eq!(
        r.edge(0, 0),
        Some(u64::MAX),
        "a single node has no settle time"
    );
    let window: Vec<_> = r.window(105, 3).refs.iter().map(|s| s.n).collect();
    assert_eq!(window, [103, 104, 105]);
    let behind: Vec<_> = r
        .listed_behind(105, 2, 2)
        .refs
        .iter()
        .map(|s| s.n)
        .collect();
    assert_eq!(behind, [102, 103]);
}

#[test]
fn window_skips_missing_numbers() {
    let r = LiveRendition::new("360p", true, 1, 1);
    for n in [10, 11, 13] {
        r.insert(n, segment(n), 0, 10);
    }
    assert_eq!(
        r.window(u64::MAX, 3)
            .refs
            .iter()
            .map(|s| s.n)
            .collect::<Vec<_>>(),
        [11, 13]
    );
}
