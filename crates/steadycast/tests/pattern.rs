//! The built-in test pattern on both pipelines (source-locked): identical, epoch-locked segments;
//! a packager that refuses bad uploads without losing anything; a restart that continues.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use timeline::{FrameRate, SegmentGrid};

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

fn grid() -> SegmentGrid {
    SegmentGrid::new(FrameRate::new(15, 1).unwrap(), 15).unwrap()
}

fn listed(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s")?.rsplit('/').next()?.parse().ok())
        .collect()
}

async fn playlist(node: &TestNode, channel: &str, rendition: &str) -> Vec<u64> {
    let (status, body) = get(&node.url(&format!("/live/{channel}/{rendition}.m3u8")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    listed(&body)
}

/// Asserts that both pipelines' copies of at least 5 segments per rendition were identical in
/// time and sample count, and that the served segments sit exactly on the epoch grid.
async fn assert_epoch_locked(
    node: &TestNode,
    channel: &str,
    renditions: &[&str],
    grid: SegmentGrid,
) {
    node.wait_for_segments(channel, renditions, 4).await;
    let url = node.url(&format!("/api/v1/channels/{channel}/alignment"));
    let report = wait_for(
        "5 compared copies per rendition",
        Duration::from_secs(90),
        || {
            let url = url.clone();
            async move {
                let v: serde_json::Value = serde_json::from_str(&get(&url).await?.1).ok()?;
                renditions
                    .iter()
                    .all(|r| v["renditions"][r]["compared"].as_u64() >= Some(5))
                    .then_some(v)
            }
        },
    )
    .await;
    let frames = u64::from(grid.frames());
    for &r in renditions {
        assert_eq!(report["renditions"][r]["misaligned"], 0, "{r}: {report}");
        let numbers = playlist(node, channel, r).await;
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{r}: gap in {numbers:?}"
        );
        let newest = *numbers.last().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let behind = now.saturating_sub(grid.start_time(newest));
        assert!(
            behind < Duration::from_secs(15),
            "{r}: newest segment {newest} is {behind:?} old"
        );
        for &n in numbers.iter().rev().take(4) {
            let (status, bytes) =
                get_bytes(&node.url(&format!("/live/{channel}/{r}/{n}.m4s"))).await;
            if status != 200 {
                let listing = get(&node.url(&format!("/live/{channel}/{r}.m3u8"))).await;
                let warnings: Vec<_> = node
                    .log()
                    .lines()
                    .filter(|l| l.contains("WARN"))
                    .map(String::from)
                    .collect();
                panic!(
                    "{r} {n}: {status} for a listed segment; the playlist now: {listing:?}\nnode warnings:\n{}",
                    warnings.join("\n")
                );
            }
            let info = media::cmaf::inspect_segment(&bytes).unwrap();
            if r == "audio" {
                let start = grid.start_of(n, 48_000);
                let late = info.base_decode_time.checked_sub(start);
                assert!(
                    late.is_some_and(|l| l < 1024),
                    "audio {n}: tfdt {} vs {start}",
                    info.base_decode_time
                );
            } else {
                assert_eq!(info.base_decode_time, grid.start_of(n, 90_000), "{r} {n}");
                // DASH addresses the same segment by its time ($Time$), and only that time.
                let by_time = node.url(&format!(
                    "/live/{channel}/{r}/t{}.m4s",
                    info.base_decode_time
                ));
                assert_eq!(get_bytes(&by_time).await, (200, bytes.clone()), "{by_time}");
                let off = node.url(&format!(
                    "/live/{channel}/{r}/t{}.m4s",
                    info.base_decode_time + 1
                ));
                assert_eq!(get_bytes(&off).await.0, 404, "{off}");
                assert!(info.starts_with_sync, "{r} {n} starts without a keyframe");
                assert_eq!(u64::from(info.sample_count), frames, "{r} {n}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pipelines_cut_identical_segments_on_the_epoch_grid() {
    let node = TestNode::serve(&channel_toml("pattern", PATTERN)).await;
    assert_epoch_locked(&node, "pattern", &RENDITIONS, grid()).await;
}

/// PAL, NTSC and the high rates lock like 15 fps does: 2 s is 50, 60 (2.002 s = 180180 ticks),
/// 100 and 120 (2.002 s) frames. Two channels at a time: all four at once take 87 % of the two
/// cores CI has, and a test running beside them would starve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_frame_rates_lock_to_the_grid() {
    let rates = [
        ("pal", "25"),
        ("ntsc", "30000/1001"),
        ("p50", "50"),
        ("p5994", "60000/1001"),
    ];
    for pair in rates.chunks(2) {
        let mut nodes = Vec::new();
        for &(id, rate) in pair {
            nodes.push((
                id,
                rate.parse::<FrameRate>().unwrap(),
                TestNode::serve(&light_channel_toml(id, rate)).await,
            ));
        }
        let checks = nodes.iter().map(|(id, rate, node)| {
            let grid = SegmentGrid::nearest(*rate, 2.0).unwrap();
            assert!(grid.duration_ticks(90_000).is_some(), "{id}");
            assert_epoch_locked(node, id, &["90p", "audio"], grid)
        });
        futures::future::join_all(checks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packager_refuses_bad_uploads_and_loses_nothing() {
    let node = TestNode::serve(&channel_toml("guarded", PATTERN)).await;
    node.wait_for_segments("guarded", &RENDITIONS, 3).await;
    let before = playlist(&node, "guarded", "180p").await;
    let n = before[0];
    let segment_url = node.url(&format!("/live/guarded/180p/{n}.m4s"));
    let (_, original) = get_bytes(&segment_url).await;

    let client = reqwest::Client::new();
    let put = |path: String, credential: Option<&'static str>, body: Vec<u8>| {
        let mut request = client.put(node.url(&path)).body(body);
        if let Some(c) = credential {
            request = request.bearer_auth(c);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let good = Some("test-credential-guarded");
    let cases = [
        (
            format!("/ingest/guarded/a/180p/{n}.m4s"),
            None,
            original.to_vec(),
            401,
            "credential",
        ),
        (
            format!("/ingest/guarded/a/180p/{n}.m4s"),
            Some("nope"),
            original.to_vec(),
            401,
            "wrong",
        ),
        (
            format!("/ingest/guarded/a/180p/{n}.m4s"),
            good,
            b"garbage".to_vec(),
            400,
            "CMAF",
        ),
        (
            format!("/ingest/guarded/a/180p/{}.m4s", n + 1000),
            good,
            original.to_vec(),
            400,
            "lies in segment",
        ),
        (
            format!("/ingest/guarded/a/360p/{n}.m4s"),
            good,
            original.to_vec(),
            404,
            "no rendition",
        ),
        (
            format!("/ingest/elsewhere/a/180p/{n}.m4s"),
            good,
            original.to_vec(),
            404,
            "unknown channel",
        ),
        (
            format!("/ingest/guarded/c/180p/{n}.m4s"),
            good,
            original.to_vec(),
            400,
            "feed",
        ),
        (
            format!("/ingest/guarded/a/180p/{n}.ts"),
            good,
            original.to_vec(),
            400,
            "expected",
        ),
        (
            "/ingest/guarded/a/180p/init.mp4".to_string(),
            good,
            original.to_vec(),
            400,
            "header",
        ),
    ];
    for (path, credential, body, status, says) in cases {
        let (got, text) = put(path.clone(), credential, body).await;
        assert_eq!(got, status, "PUT {path}: {text}");
        assert!(
            text.contains(says),
            "PUT {path}: `{text}` does not say `{says}`"
        );
    }
    // A refusal closes its connection (the body may be unread), so no client reuses it.
    let refused = client
        .put(node.url(&format!("/ingest/guarded/a/180p/{n}.m4s")))
        .body(original.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["connection"], "close");
    // An upload too large, or from a stranger, is refused on its headers: the peer need not
    // send (nor the packager read) 33 MiB to learn it.
    let head = |credential: &str| {
        format!(
            "PUT /ingest/guarded/a/180p/{n}.m4s HTTP/1.1\r\nhost: x\r\n{credential}\
             content-length: {}\r\n\r\n",
            33 << 20
        )
    };
    for (credential, status) in [("nope", "401"), ("test-credential-guarded", "413")] {
        let head = head(&format!("authorization: Bearer {credential}\r\n"));
        let (answer, _) = raw_exchange(node.http, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    // A copy of a kept segment is acknowledged, not stored again.
    let (got, text) = put(
        format!("/ingest/guarded/b/180p/{n}.m4s"),
        good,
        original.to_vec(),
    )
    .await;
    assert_eq!(got, 200, "{text}");
    // Feed b's encoder now writes another header (90p's, another track): it is stored under
    // its own name, b's segments are judged against it, and a listed segment stays as it was.
    let (_, other_header) = get_bytes(&node.url("/live/guarded/90p/init.mp4")).await;
    let (got, text) = put(
        "/ingest/guarded/b/180p/init.mp4".into(),
        good,
        other_header.to_vec(),
    )
    .await;
    assert_eq!(got, 201, "{text}");
    let (got, text) = put(
        format!("/ingest/guarded/b/180p/{n}.m4s"),
        good,
        original.to_vec(),
    )
    .await;
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("the header has track"), "{text}");

    let (_, after) = get_bytes(&segment_url).await;
    assert_eq!(after, original, "a listed segment changed");
    let now_listed = playlist(&node, "guarded", "180p").await;
    assert!(
        before
            .iter()
            .all(|n| now_listed.contains(n) || *n < now_listed[0]),
        "{before:?} vs {now_listed:?}"
    );
    for (path, status) in [
        ("/live/guarded/180p/1.m4s", 404),
        ("/live/nope/main.m3u8", 404),
        ("/live/guarded/x.txt", 404),
    ] {
        assert_eq!(get(&node.url(path)).await.unwrap().0, status, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::serve_in(dir.path(), &channel_toml("durable", PATTERN)).await;
    node.wait_for_segments("durable", &RENDITIONS, 4).await;
    let before = playlist(&node, "durable", "180p").await;
    let kept = *before.last().unwrap();
    let (_, bytes) = get_bytes(&node.url(&format!("/live/durable/180p/{kept}.m4s"))).await;
    // The DVR view: everything since the first segment, with its wall-clock times.
    let dvr = format!(
        "/live/durable/180p.m3u8?start={}",
        grid().start_time(before[0]).as_secs()
    );
    let (_, dvr_before) = get(&node.url(&dvr)).await.unwrap();
    node.child.start_kill().unwrap();
    node.child.wait().await.unwrap();
    // What a crash can leave behind: a file never listed, a half-written one, and a listed
    // segment whose bytes a disk lost.
    let rendition_dir = dir.path().join("data/segments/live/durable/180p");
    let orphans = [rendition_dir.join("1.m4s"), rendition_dir.join("2.tmp.999")];
    for orphan in &orphans {
        std::fs::write(orphan, b"never listed").unwrap();
    }
    let lost = before[0];
    std::fs::remove_file(rendition_dir.join(format!("{lost}.m4s"))).unwrap();
    // And one cut short, as a full disk did under builds before the write was checked.
    let short = before[1];
    let short_file = rendition_dir.join(format!("{short}.m4s"));
    let whole = std::fs::read(&short_file).unwrap();
    std::fs::write(&short_file, &whole[..whole.len() / 2]).unwrap();

    let node = TestNode::serve_in(dir.path(), &channel_toml("durable", PATTERN)).await;
    for orphan in &orphans {
        assert!(!orphan.exists(), "{} survived the repair", orphan.display());
    }
    assert!(
        !playlist(&node, "durable", "180p").await.contains(&lost),
        "a listing without bytes"
    );
    let (_, events) = get(&node.url("/api/v1/channels/durable/events"))
        .await
        .unwrap();
    assert!(
        events.contains("store_repaired")
            && events
                .contains("1 listing(s) without bytes and 1 listing(s) whose bytes were cut short"),
        "{events}"
    );
    assert!(!short_file.exists(), "the short file was kept");
    assert!(
        !playlist(&node, "durable", "180p").await.contains(&short),
        "a listing whose bytes were cut short"
    );
    let after = playlist(&node, "durable", "180p").await;
    assert!(
        after.contains(&kept),
        "segment {kept} lost across the restart: {after:?}"
    );
    // Every entry the DVR playlist had is still there, same number, same time, but the one
    // whose bytes were lost.
    let (_, dvr_after) = get(&node.url(&dvr)).await.unwrap();
    let entries = |playlist: &str| -> Vec<(String, String)> {
        let lines: Vec<&str> = playlist.lines().collect();
        lines
            .windows(3)
            .filter(|w| {
                w[2].ends_with(".m4s")
                    && !w[2].ends_with(&format!("/{lost}.m4s"))
                    && !w[2].ends_with(&format!("/{short}.m4s"))
            })
            .map(|w| (w[0].to_string(), w[2].to_string()))
            .collect()
    };
    let (was, is) = (entries(&dvr_before), entries(&dvr_after));
    assert!(!was.is_empty(), "{dvr_before}");
    assert_eq!(
        is[..was.len()],
        was[..],
        "before:\n{dvr_before}\nafter:\n{dvr_after}"
    );
    let (status, again) = get_bytes(&node.url(&format!("/live/durable/180p/{kept}.m4s"))).await;
    assert_eq!(
        (status, again),
        (200, bytes),
        "segment {kept} changed across the restart"
    );
    let url = node.url("/live/durable/180p.m3u8");
    wait_for(
        "new segments after the restart",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                listed(&get(&url).await?.1)
                    .last()
                    .filter(|&&n| n > kept + 1)
                    .map(|_| ())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_past_the_startover_window_are_removed() {
    let channel = channel_toml("short", PATTERN).replace(
        "live_window_seconds = 20",
        "live_window_seconds = 6\nstartover_window_seconds = 8",
    );
    let node = TestNode::serve(&format!("retention_interval_seconds = 1\n{channel}")).await;
    node.wait_for_segments("short", &RENDITIONS, 3).await;
    let first = playlist(&node, "short", "180p").await[0];
    let file = node
        .dir
        .join(format!("data/segments/live/short/180p/{first}.m4s"));
    assert!(file.exists(), "{}", file.display());
    let url = node.url(&format!("/live/short/180p/{first}.m4s"));
    wait_for(
        "the oldest segment to pass the startover window",
        Duration::from_secs(60),
        || async { (get_bytes(&url).await.0 == 404).then_some(()) },
    )
    .await;
    // Unlisted first, then deleted: the bytes go a moment after the listing.
    wait_for(
        &format!("{} to be deleted", file.display()),
        Duration::from_secs(10),
        || async { (!file.exists()).then_some(()) },
    )
    .await;
    // The live window is untouched: every listed segment still answers.
    for n in playlist(&node, "short", "180p").await {
        assert_eq!(
            get_bytes(&node.url(&format!("/live/short/180p/{n}.m4s")))
                .await
                .0,
            200,
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_shifted_playlists_rewind_and_clip() {
    let node = TestNode::serve(&channel_toml("dvr", PATTERN)).await;
    node.wait_for_segments("dvr", &RENDITIONS, 8).await;
    let grid = grid();
    let live = playlist(&node, "dvr", "180p").await;
    let first = live[1];
    let start = grid.start_time(first).as_secs();

    // A closed range is a VOD playlist with ENDLIST that plays from start to end.
    let range = format!("start={start}&end={}", start + 4);
    let (status, vod) = get(&node.url(&format!("/live/dvr/180p.m3u8?{range}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{vod}");
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"),
        "{vod}"
    );
    assert_eq!(listed(&vod), (first..first + 4).collect::<Vec<_>>());
    // Every segment of a time-shifted playlist carries its wall-clock time, to seek by.
    let dated = vod.matches("#EXT-X-PROGRAM-DATE-TIME:").count();
    assert_eq!(dated, 4, "{vod}");
    let (status, mpd) = get(&node.url(&format!("/live/dvr/manifest.mpd?{range}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{mpd}");
    assert!(
        mpd.contains(r#"type="static""#),
        "a closed range is a static MPD:\n{mpd}"
    );
    let (status, main) = get(&node.url(&format!("/live/dvr/main.m3u8?{range}")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        main.contains(&format!("180p.m3u8?{range}")),
        "children keep the range:\n{main}"
    );
    let (ok, errors) = play(&node.url(&format!("/live/dvr/main.m3u8?{range}")), 10).await;
    assert!(
        ok && errors.trim().is_empty(),
        "the clip did not play: {errors}"
    );

    // An open start grows to the live edge; ISO 8601 works as well as Unix seconds.
    let iso = manifest::iso8601(start * 1000);
    let (status, event) = get(&node.url(&format!("/live/dvr/180p.m3u8?start={iso}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{event}");
    assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !event.contains("#EXT-X-ENDLIST"));
    assert_eq!(listed(&event)[0], first);
    assert_eq!(
        event.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
        listed(&event).len()
    );
    // A viewer of the growing EVENT playlist sees it only grow, never stale, never a gap.
    let (ok, report, _) = verify(
        &node.url(&format!("/live/dvr/main.m3u8?start={start}")),
        &["--seconds", "5"],
    )
    .await;
    assert_steady("the EVENT playlist", ok, &report);
    let (_, narrow) = get(&node.url("/live/dvr/180p.m3u8?manifest_window_seconds=3"))
        .await
        .unwrap();
    assert_eq!(listed(&narrow).len(), 3, "{narrow}");

    // A delayed live playlist ends about the delay behind the live one.
    let (_, delayed) = get(&node.url("/live/dvr/180p.m3u8?time_delay=3"))
        .await
        .unwrap();
    let (_, now) = get(&node.url("/live/dvr/180p.m3u8")).await.unwrap();
    let behind = listed(&now).last().unwrap() - listed(&delayed).last().unwrap();
    assert!(
        (2..=4).contains(&behind),
        "delayed by {behind} segments:\n{delayed}"
    );

    let too_old = start - 3 * 3600;
    for (query, status, says) in [
        ("start=yesterday".to_string(), 400, "ISO 8601"),
        (format!("start={too_old}"), 404, "startover window"),
        (
            format!("start={start}&end={}", start - 1),
            400,
            "after start",
        ),
        (format!("start={start}&end={}", start + 3600), 404, "future"),
    ] {
        let (got, body) = get(&node.url(&format!("/live/dvr/180p.m3u8?{query}")))
            .await
            .unwrap();
        assert_eq!(got, status, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harvested_range_plays_as_vod_from_the_origin_and_from_the_store() {
    let channel = channel_toml("live2vod", PATTERN).replace(
        "live_window_seconds = 20",
        "live_window_seconds = 20\nmax_harvest_seconds = 10",
    );
    let node = TestNode::serve(&channel).await;
    node.wait_for_segments("live2vod", &RENDITIONS, 7).await;
    let first = playlist(&node, "live2vod", "180p").await[1];
    let start = grid().start_time(first).as_secs();
    let (ok, out, err) = cli(&[
        "channel",
        "harvest",
        "live2vod",
        "--name",
        "clip",
        "--start",
        &start.to_string(),
        "--end",
        &(start + 5).to_string(),
        "--api",
        &node.url(""),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("/vod/clip/main.m3u8"), "{out}");
    let job = node.url("/api/v1/channels/live2vod/harvests/clip");
    let done = wait_for("the harvest to finish", Duration::from_secs(60), || async {
        let v: serde_json::Value = serde_json::from_str(&get(&job).await?.1).ok()?;
        (v["harvest"]["state"] != "queued" && v["harvest"]["state"] != "running").then_some(v)
    })
    .await;
    assert_eq!(done["harvest"]["state"], "done", "{done}");

    let asset = node.dir.join("data/segments/vod/clip");
    for url in [
        node.url("/vod/clip/main.m3u8"),
        node.url("/vod/clip/manifest.mpd"),
        asset.join("main.m3u8").display().to_string(),
    ] {
        let (ok, errors) = play(&url, 30).await;
        assert!(
            ok && errors.trim().is_empty(),
            "{url} did not play: {errors}"
        );
        let seconds = duration(&url).await;
        assert!(
            (4.0..=6.1).contains(&seconds),
            "{url} lasts {seconds} s, not about 5 s"
        );
    }
    let again = api_client()
        .post(node.url("/api/v1/channels/live2vod/harvests"))
        .json(&serde_json::json!({ "name": "clip", "start": start, "end": start + 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let future = api_client()
        .post(node.url("/api/v1/channels/live2vod/harvests"))
        .json(&serde_json::json!({ "name": "later", "start": start + 3600, "end": start + 3605 }))
        .send()
        .await
        .unwrap();
    assert_eq!(future.status(), 404, "{}", future.text().await.unwrap());
    let long = api_client()
        .post(node.url("/api/v1/channels/live2vod/harvests"))
        .json(&serde_json::json!({ "name": "long", "start": start, "end": start + 11 }))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 400);
    let why = long.text().await.unwrap();
    assert!(why.contains("at most 10 s"), "{why}");
}

async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .env("STEADYCAST_TOKEN", ADMIN_TOKEN)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// What ffprobe says the presentation at `url` lasts, in seconds.
async fn duration(url: &str) -> f64 {
    let out = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}
