//! Pipeline failover: an encoder killed or hung is restarted by its supervisor, the other
//! pipeline's copies cover the gap, and the restarted one rejoins on the same grid.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

async fn channel(node: &TestNode, id: &str) -> Value {
    let (status, body) = get(&node.url(&format!("/api/v1/channels/{id}")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn signal(pid: u64, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until pipeline `feed` has restarted `restarts` times and is encoding again.
async fn wait_for_restart(node: &TestNode, feed: &str, restarts: u64, old_pid: u64) -> Value {
    let what = format!("pipeline {feed} to restart");
    wait_for_pipeline(node, "fo", feed, &what, |state| {
        state["restarts"] == restarts
            && state["phase"] == "encoding"
            && state["encoder_pid"].as_u64().is_some_and(|p| p != old_pid)
    })
    .await
}

async fn compared(node: &TestNode) -> Vec<u64> {
    let (_, body) = get(&node.url("/api/v1/channels/fo/alignment"))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    for r in RENDITIONS {
        assert_eq!(v["renditions"][r]["misaligned"], 0, "{r}: {v}");
    }
    RENDITIONS
        .iter()
        .map(|r| v["renditions"][r]["compared"].as_u64().unwrap_or(0))
        .collect()
}

/// Both pipelines deliver again: every rendition has `more` further copies compared, all aligned.
async fn wait_for_both_feeds(node: &TestNode, more: u64) {
    let before = compared(node).await;
    wait_for(
        "both feeds to deliver again",
        Duration::from_secs(60),
        || async {
            let now = compared(node).await;
            now.iter()
                .zip(&before)
                .all(|(n, b)| *n >= b + more)
                .then_some(())
        },
    )
    .await;
}

async fn assert_gapless(node: &TestNode, id: &str) {
    for r in RENDITIONS {
        let (_, body) = get(&node.url(&format!("/live/{id}/{r}.m3u8")))
            .await
            .unwrap();
        assert!(!body.contains("#EXT-X-GAP"), "{r} has a gap:\n{body}");
        let numbers: Vec<u64> = body
            .lines()
            .filter_map(|l| l.strip_suffix(".m4s")?.rsplit('/').next()?.parse().ok())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{r}: {numbers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_hung_encoders_restart_while_the_other_pipeline_covers() {
    let config = format!("hang_timeout_seconds = 3\n{}", channel_toml("fo", PATTERN));
    let node = TestNode::serve(&config).await;
    node.wait_for_segments("fo", &RENDITIONS, 3).await;
    wait_for_both_feeds(&node, 2).await;

    // kill -9 pipeline a's encoder.
    let a = channel(&node, "fo").await["pipelines"]["a"].clone();
    let pid_a = a["encoder_pid"].as_u64().unwrap();
    signal(pid_a, "-KILL").await;
    let a = wait_for_restart(&node, "a", 1, pid_a).await;
    assert!(a["last_error"].as_str().unwrap().contains("died"), "{a}");
    wait_for_both_feeds(&node, 3).await;
    assert_gapless(&node, "fo").await;

    // kill -9 its audio encoder: the new one starts a segment or more later, on the same
    // epoch grid of AAC frames, so the copies still agree.
    let audio_pid = a["audio_encoder_pid"].as_u64().unwrap();
    signal(audio_pid, "-KILL").await;
    wait_for_pipeline(&node, "fo", "a", "a new audio encoder", |p| {
        p["restarts"] == 2
            && p["audio_encoder_pid"]
                .as_u64()
                .is_some_and(|p| p != audio_pid)
    })
    .await;
    wait_for_both_feeds(&node, 3).await;
    assert_gapless(&node, "fo").await;

    // Freeze pipeline b's encoder: it takes no input and writes nothing, so it is hung.
    let b = channel(&node, "fo").await["pipelines"]["b"].clone();
    let pid_b = b["encoder_pid"].as_u64().unwrap();
    signal(pid_b, "-STOP").await;
    let b = wait_for_restart(&node, "b", 1, pid_b).await;
    assert!(b["last_error"].as_str().unwrap().contains("hung"), "{b}");
    wait_for_both_feeds(&node, 3).await;
    assert_gapless(&node, "fo").await;

    let (_, body) = get(&node.url("/api/v1/channels/fo/events")).await.unwrap();
    let events: Value = serde_json::from_str(&body).unwrap();
    let restarts: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "encoder_restarted")
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert!(
        restarts.contains(&"pipeline a") && restarts.contains(&"pipeline b"),
        "{events}"
    );
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    for kind in ["video", "audio"] {
        let restarted = format!(
            "steadycast_encoder_restarts_total{{channel=\"fo\",feed=\"a\",kind=\"{kind}\"}} 1"
        );
        assert!(metrics.contains(&restarted), "{metrics}");
    }
}

/// A pipeline state once `done` holds for it.
async fn wait_for_pipeline(
    node: &TestNode,
    id: &str,
    feed: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, Duration::from_secs(60), || async {
        let state = channel(node, id).await["pipelines"][feed].clone();
        done(&state).then_some(state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_timestamp_reset_is_absorbed_without_a_jump() {
    let port = free_udp_port();
    let inputs = format!("[channels.inputs.main]\ntype = \"udp\"\nbind = \"127.0.0.1:{port}\"");
    let node = TestNode::serve(&channel_toml("reset", &inputs)).await;
    let url = format!("udp://127.0.0.1:{port}?pkt_size=1316");
    let source = "testsrc2=size=320x180:rate=15";
    let offset = |s: &'static str| ["-output_ts_offset", s];
    let mut first = publish_source("mpegts", &url, true, source, &offset("1000"));
    node.wait_for_segments("reset", &RENDITIONS, 3).await;
    let hls = node.url("/live/reset/main.m3u8");
    let viewer = tokio::spawn(async move { verify(&hls, &["--seconds", "30"]).await });
    node.wait_for_segments("reset", &RENDITIONS, 8).await;
    // The encoder upstream restarts: its timestamps start again 49 000 s later.
    first.kill().await.unwrap();
    let _second = publish_source("mpegts", &url, true, source, &offset("50000"));
    wait_for(
        "both pipelines to relock",
        Duration::from_secs(60),
        || async {
            let locks = events_of(&node, "reset", "input_locked").await;
            (locks.len() >= 4).then_some(())
        },
    )
    .await;
    let (ok, report, _) = viewer.await.unwrap();
    assert_steady("a timestamp reset", ok, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_without_input_pauses_and_the_other_covers() {
    let config = format!(
        "allow_faults = true\n{}\n[channels.failover]\non_input_loss = \"pause\"\n\
         input_loss_ms = 500\n",
        channel_toml("pause", PATTERN)
    );
    let node = TestNode::serve(&config).await;
    node.wait_for_segments("pause", &RENDITIONS, 3).await;
    let cut = serde_json::json!({ "feed": "a", "fault": { "kind": "cut-input" }, "seconds": 8 });
    inject_fault(&node, "pause", cut).await;
    wait_for_pipeline(&node, "pause", "a", "pipeline a to pause", |p| {
        p["phase"] == "paused"
    })
    .await;
    wait_for("the encoders to stop", Duration::from_secs(30), || async {
        let stopped = events_of(&node, "pause", "encoder_stopped").await;
        stopped.iter().any(|e| e.contains("paused")).then_some(())
    })
    .await;
    // b's copies keep every playlist whole while a makes nothing.
    node.wait_for_segments("pause", &RENDITIONS, 12).await;
    assert_gapless(&node, "pause").await;
    wait_for_pipeline(&node, "pause", "a", "pipeline a to resume", |p| {
        p["phase"] == "encoding" && p["segments_this_run"].as_u64() > Some(3)
    })
    .await;
    assert_gapless(&node, "pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_primary_fails_over_to_the_backup() {
    let inputs = "[channels.inputs.cam]\ntype = \"rtmp\"\nstream_key = \"cam\"\n\
                  [channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\n\
                  frame_rate = \"15\"\n[channels.pipelines]\n\
                  a = { primary = \"cam\", backup = \"pattern\" }\n\
                  b = { primary = \"cam\", backup = \"pattern\" }\n\
                  [channels.failover]\nblack = { luma = 24, ms = 1000 }\nerror_clear_ms = 2000";
    let node = TestNode::serve(&channel_toml("black", inputs)).await;
    let black = "color=c=black:size=320x180:rate=15";
    let _cam = publish_source(
        "flv",
        &format!("rtmp://{}/live/cam", node.rtmp),
        true,
        black,
        &[],
    );
    for feed in ["a", "b"] {
        let state = wait_for_pipeline(&node, "black", feed, "the primary to fail black", |p| {
            p["inputs"][0]["failing"] == "black" && p["input"] == "pattern"
        })
        .await;
        assert_eq!(state["inputs"][1]["failing"], Value::Null, "{state}");
    }
    node.wait_for_segments("black", &RENDITIONS, 3).await;
    let failed = events_of(&node, "black", "input_failed").await;
    assert!(
        failed
            .iter()
            .any(|e| e.contains("input cam failing: black")),
        "{failed:?}"
    );
}

/// The colour of the first picture of `segment` of `rendition`, as 8-bit RGB.
async fn first_picture_rgb(node: &TestNode, id: &str, rendition: &str, segment: &str) -> [u8; 3] {
    let (_, init) = get_bytes(&node.url(&format!("/live/{id}/{rendition}/init.mp4"))).await;
    let (_, media) = get_bytes(&node.url(&format!("/live/{id}/{segment}"))).await;
    let file = node.dir.join("picture.mp4");
    std::fs::write(&file, [init, media].concat()).unwrap();
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&file)
        .args(["-frames:v", "1", "-vf", "scale=1:1", "-pix_fmt", "rgb24"])
        .args(["-f", "rawvideo", "pipe:1"])
        .output()
        .await
        .unwrap();
    let rgb = out.stdout;
    assert_eq!(rgb.len(), 3, "{}", String::from_utf8_lossy(&out.stderr));
    [rgb[0], rgb[1], rgb[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_input_the_pipelines_fill_with_the_slate() {
    let dir = tempfile::tempdir().unwrap();
    let slate = dir.path().join("slate.png");
    let made = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "color=c=red:size=64x36", "-frames:v", "1"])
        .arg(&slate)
        .status()
        .await
        .unwrap();
    assert!(made.success());
    let config = format!(
        "allow_faults = true\n{}\n[channels.failover]\ninput_loss_ms = 500\n\
         fill = {{ repeat_ms = 500, black_ms = 500, slate = \"{}\" }}\n",
        channel_toml("slate", PATTERN),
        slate.display()
    );
    let node = TestNode::serve_in(dir.path(), &config).await;
    node.wait_for_segments("slate", &RENDITIONS, 3).await;
    for feed in ["a", "b"] {
        let cut =
            serde_json::json!({ "feed": feed, "fault": { "kind": "cut-input" }, "seconds": 60 });
        inject_fault(&node, "slate", cut).await;
    }
    // A segment of fill scores 0, and is listed since neither pipeline has better.
    let newest = || async {
        let (_, playlist) = get(&node.url("/live/slate/180p.m3u8")).await?;
        let uri = playlist.lines().rfind(|l| l.ends_with(".m4s"))?.to_string();
        let n: u64 = uri
            .strip_prefix("180p/")?
            .strip_suffix(".m4s")?
            .parse()
            .ok()?;
        let response = reqwest::get(node.url(&format!("/live/slate/{uri}")))
            .await
            .ok()?;
        let cmsd = response
            .headers()
            .get("cmsd-static")?
            .to_str()
            .ok()?
            .to_string();
        Some((n, cmsd))
    };
    let filled = wait_for("a fill segment", Duration::from_secs(60), || async {
        let (n, cmsd) = newest().await?;
        cmsd.ends_with("quality=0").then_some(n)
    })
    .await;
    // Past the repeated picture (0.5 s) and black (0.5 s), the slate: two segments on.
    let segment = wait_for("a slate segment", Duration::from_secs(60), || async {
        let (n, cmsd) = newest().await?;
        (n >= filled + 2 && cmsd.ends_with("quality=0")).then(|| format!("180p/{n}.m4s"))
    })
    .await;
    let [r, g, b] = first_picture_rgb(&node, "slate", "180p", &segment).await;
    assert!(
        r > 180 && g < 80 && b < 80,
        "not the red slate: {r} {g} {b}"
    );
    assert_eq!(
        channel(&node, "slate").await["pipelines"]["a"]["phase"],
        "filling"
    );
}

/// The discontinuity sequence number a media playlist's last segment is in, and its headers.
async fn discontinuities(node: &TestNode, id: &str, rendition: &str) -> (u64, Vec<String>) {
    let (_, body) = get(&node.url(&format!("/live/{id}/{rendition}.m3u8")))
        .await
        .unwrap();
    let sequence: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no discontinuity sequence:\n{body}"));
    let tags = body.matches("#EXT-X-DISCONTINUITY\n").count() as u64;
    let maps = body
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-MAP:URI="))
        .map(str::to_string)
        .collect();
    (sequence + tags, maps)
}

/// A rolling upgrade: each pipeline's video encoder restarts with another preset, so it writes
/// another CMAF header. While one copy continues the served header the packager keeps to it;
/// when only the new one is left, the switch is announced once (EXT-X-DISCONTINUITY and a new
/// EXT-X-MAP, a new DASH Period), and viewers of both see no violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_is_announced_once() {
    // When a's copies stop, b's (the new header) wait out the grace time before the switch, and
    // both encoders restart on two cores: 2 s segments give verify's staleness limit
    // (1.5 × target duration) room for that beside the grace.
    let roll =
        channel_toml("roll", PATTERN).replace("segment_seconds = 1.0", "segment_seconds = 2.0");
    let config =
        format!("allow_faults = true\n{roll}\n[channels.failover]\nquality_grace_ms = 200\n");
    let node = TestNode::serve(&config).await;
    node.wait_for_segments("roll", &RENDITIONS, 3).await;
    let upgrade = |feed: &str| {
        serde_json::json!({ "feed": feed, "fault": { "kind": "preset", "preset": "superfast" },
            "seconds": 600 })
    };

    // b first: its new header is stored and reported, and a's copies are still served.
    inject_fault(&node, "roll", upgrade("b")).await;
    let pid_b = channel(&node, "roll").await["pipelines"]["b"]["encoder_pid"]
        .as_u64()
        .unwrap();
    signal(pid_b, "-KILL").await;
    wait_for("b's new header", Duration::from_secs(60), || async {
        let reported = events_of(&node, "roll", "header_mismatch").await;
        (reported.len() >= 2).then_some(())
    })
    .await;
    node.wait_for_segments("roll", &RENDITIONS, 6).await;
    assert_eq!(discontinuities(&node, "roll", "180p").await.0, 0);

    let hls = node.url("/live/roll/main.m3u8");
    let dash = node.url("/live/roll/manifest.mpd");
    let args = ["--seconds", "30"];
    let hls_viewer = tokio::spawn(async move { verify(&hls, &args).await });
    let dash_viewer = tokio::spawn(async move { verify(&dash, &args).await });

    // Then a: while it restarts only b's copies (the new header) are left.
    inject_fault(&node, "roll", upgrade("a")).await;
    let pid_a = channel(&node, "roll").await["pipelines"]["a"]["encoder_pid"]
        .as_u64()
        .unwrap();
    signal(pid_a, "-KILL").await;
    wait_for_restart_of(&node, "roll", "a", pid_a).await;
    let (count, maps) = wait_for("the switch", Duration::from_secs(60), || async {
        let found = discontinuities(&node, "roll", "180p").await;
        (found.0 > 0).then_some(found)
    })
    .await;
    assert_eq!(count, 1, "{maps:?}");
    for (what, viewer) in [("HLS", hls_viewer), ("DASH", dash_viewer)] {
        let (ok, report, _) = viewer.await.unwrap();
        assert_steady(what, ok, &report);
    }
    // Both pipelines run the new settings now: no further switch.
    node.wait_for_segments("roll", &RENDITIONS, 8).await;
    assert_eq!(discontinuities(&node, "roll", "180p").await.0, 1);
    assert_eq!(discontinuities(&node, "roll", "audio").await.0, 0);
    let (_, mpd) = get(&node.url("/live/roll/manifest.mpd")).await.unwrap();
    assert!(mpd.contains("period-continuity"), "audio continues:\n{mpd}");
    let announced = events_of(&node, "roll", "discontinuity").await;
    assert_eq!(announced.len(), 2, "180p and 90p: {announced:?}");
}

async fn wait_for_restart_of(node: &TestNode, id: &str, feed: &str, old_pid: u64) {
    wait_for_pipeline(node, id, feed, "a new encoder", |state| {
        state["phase"] == "encoding" && state["encoder_pid"].as_u64().is_some_and(|p| p != old_pid)
    })
    .await;
}
