//! Delivery faults injected into one pipeline: its damaged or late uploads never reach a viewer;
//! the other pipeline's copies are served and no playlist has a gap.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

/// The number of uploads from `feed` the packager refused, from /metrics.
async fn refused(node: &TestNode, feed: &str) -> u64 {
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("steadycast_segments_received_total{"))
        .filter(|l| l.contains(&format!("feed=\"{feed}\"")) && l.contains("outcome=\"refused\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn assert_clean_playlists(node: &TestNode) {
    for r in RENDITIONS {
        let (_, body) = get(&node.url(&format!("/live/cf/{r}.m3u8"))).await.unwrap();
        assert!(!body.contains("#EXT-X-GAP"), "{r} has a gap:\n{body}");
        for n in body.lines().filter(|l| l.ends_with(".m4s")) {
            let (status, bytes) = get_bytes(&node.url(&format!("/live/cf/{n}"))).await;
            assert_eq!(status, 200, "{n}");
            let info = media::cmaf::inspect_segment(&bytes).unwrap();
            assert!(info.duration > 0, "{n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_uploads_of_one_feed_never_reach_viewers() {
    let node = TestNode::serve(&format!(
        "allow_faults = true\n{}",
        channel_toml("cf", PATTERN)
    ))
    .await;
    node.wait_for_segments("cf", &RENDITIONS, 3).await;
    // Both pipelines deliver before either is damaged (alone, a damaged feed is a real gap).
    let alignment = node.url("/api/v1/channels/cf/alignment");
    wait_for("both feeds delivering", Duration::from_secs(60), || async {
        let v: serde_json::Value = serde_json::from_str(&get(&alignment).await?.1).ok()?;
        RENDITIONS
            .iter()
            .all(|r| v["renditions"][r]["compared"].as_u64() >= Some(2))
            .then_some(())
    })
    .await;
    let client = api_client();
    let faults = node.url("/api/v1/channels/cf/faults");

    for (feed, kind) in [("a", "corrupt"), ("b", "truncate")] {
        let before = refused(&node, feed).await;
        let fault = json!({ "feed": feed, "fault": { "kind": kind }, "seconds": 4 });
        let response = client.post(&faults).json(&fault).send().await.unwrap();
        assert_eq!(response.status(), 204);
        wait_for(
            &format!("{kind} uploads of feed {feed} refused"),
            Duration::from_secs(30),
            || async { (refused(&node, feed).await >= before + 6).then_some(()) },
        )
        .await;
        // One damaged feed at a time: with both damaged, a gap would be the truth.
        assert_eq!(client.delete(&faults).send().await.unwrap().status(), 204);
        assert_clean_playlists(&node).await;
    }
    // A slow feed: the other one's copies arrive first and are the ones listed.
    let fault = json!({ "feed": "a", "fault": { "kind": "delay", "ms": 3000 }, "seconds": 6 });
    assert_eq!(
        client
            .post(&faults)
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    node.wait_for_segments("cf", &RENDITIONS, 8).await;
    assert_clean_playlists(&node).await;
    assert!(
        node.log()
            .contains("Content-Digest does not match the body"),
        "corruption not caught by its digest"
    );
}
