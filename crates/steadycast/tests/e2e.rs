//! End to end: real ffmpeg publishers over RTMP, SRT and UDP, a real node, ffmpeg and ffprobe as
//! players. Loopback only; every wait has a deadline.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::*;

async fn assert_plays(node: &TestNode, channel: &str) {
    for manifest in ["main.m3u8", "manifest.mpd"] {
        let url = node.url(&format!("/live/{channel}/{manifest}"));
        let (ok, errors) = play(&url, 4).await;
        assert!(
            ok && errors.trim().is_empty(),
            "{url} did not play: {errors}\n{}",
            node.log()
        );
    }
    let streams = probe(&node.url(&format!("/live/{channel}/main.m3u8"))).await;
    for (kind, w, h) in [("video", 320, 180), ("video", 160, 90), ("audio", 0, 0)] {
        assert!(
            streams
                .iter()
                .any(|(k, sw, sh)| k == kind && (kind == "audio" || (*sw, *sh) == (w, h))),
            "ffprobe did not find {kind} {w}x{h} in {streams:?}"
        );
    }
}

/// Waits until both pipelines' copies of at least `count` segments of every rendition have been
/// compared, and asserts they were all identical in time and sample count.
async fn assert_aligned(node: &TestNode, channel: &str, count: u64) {
    let url = node.url(&format!("/api/v1/channels/{channel}/alignment"));
    let report = wait_for("both feeds compared", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let (_, body) = get(&url).await?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let all = RENDITIONS
                .iter()
                .all(|r| v["renditions"][r]["compared"].as_u64() >= Some(count));
            all.then_some(v)
        }
    })
    .await;
    for r in RENDITIONS {
        assert_eq!(report["renditions"][r]["misaligned"], 0, "{r}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_plays_as_hls_and_dash() {
    let inputs = "[channels.inputs.main]\ntype = \"rtmp\"\nstream_key = \"key-rtmp\"";
    let node = TestNode::serve(&channel_toml("rtmp", inputs)).await;
    let _publisher = publish("flv", &format!("rtmp://{}/live/key-rtmp", node.rtmp));
    node.wait_for_segments("rtmp", &RENDITIONS, 4).await;

    // A wrong key and a second publisher on the busy input are refused; the first goes on.
    for key in ["wrong-key", "key-rtmp"] {
        let mut intruder = publish("flv", &format!("rtmp://{}/live/{key}", node.rtmp));
        let status = tokio::time::timeout(Duration::from_secs(20), intruder.wait())
            .await
            .expect("a refused publisher exits")
            .expect("wait");
        assert!(
            !status.success(),
            "publisher with key {key} was not refused"
        );
    }
    assert_plays(&node, "rtmp").await;
    // One RTMP session feeds both pipelines, which agree on its clock: copies interchange.
    assert_aligned(&node, "rtmp", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_publish_plays_as_hls_and_dash() {
    let inputs = "[channels.inputs.main]\ntype = \"srt\"";
    let node = TestNode::serve(&channel_toml("srt", inputs)).await;
    let _publisher = publish("mpegts", &format!("srt://{}?streamid=srt/main", node.srt));
    node.wait_for_segments("srt", &RENDITIONS, 4).await;
    assert_plays(&node, "srt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_ts_plays_as_hls_and_dash() {
    let port = free_udp_port();
    let inputs = format!("[channels.inputs.main]\ntype = \"udp\"\nbind = \"127.0.0.1:{port}\"");
    let node = TestNode::serve(&channel_toml("udp", &inputs)).await;
    let _publisher = publish("mpegts", &format!("udp://127.0.0.1:{port}?pkt_size=1316"));
    node.wait_for_segments("udp", &RENDITIONS, 4).await;
    assert_plays(&node, "udp").await;
}

/// A contribution without audio still gives a complete ladder: the pipelines make silence on
/// the epoch grid of AAC frames, so both copies of every audio segment agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_only_input_gets_silent_audio() {
    let port = free_udp_port();
    let inputs = format!("[channels.inputs.main]\ntype = \"udp\"\nbind = \"127.0.0.1:{port}\"");
    let node = TestNode::serve(&channel_toml("mute", &inputs)).await;
    let _publisher = publish_with(
        "mpegts",
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        false,
    );
    node.wait_for_segments("mute", &RENDITIONS, 4).await;
    assert_plays(&node, "mute").await;
    assert_aligned(&node, "mute", 3).await;
    let (_, events) = get(&node.url("/api/v1/channels/mute/events"))
        .await
        .unwrap();
    assert!(events.contains("no audio: silence made"), "{events}");
}
