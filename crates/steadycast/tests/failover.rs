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
    wait_for(
        &format!("pipeline {feed} to restart"),
        Duration::from_secs(60),
        || async {
            let state = channel(node, "fo").await["pipelines"][feed].clone();
            let back = state["restarts"] == restarts
                && state["phase"] == "encoding"
                && state["encoder_pid"].as_u64().is_some_and(|p| p != old_pid);
            back.then_some(state)
        },
    )
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

async fn assert_no_gaps(node: &TestNode) {
    for r in RENDITIONS {
        let (_, body) = get(&node.url(&format!("/live/fo/{r}.m3u8"))).await.unwrap();
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
    assert_no_gaps(&node).await;

    // Freeze pipeline b's encoder: it takes no input and writes nothing, so it is hung.
    let b = channel(&node, "fo").await["pipelines"]["b"].clone();
    let pid_b = b["encoder_pid"].as_u64().unwrap();
    signal(pid_b, "-STOP").await;
    let b = wait_for_restart(&node, "b", 1, pid_b).await;
    assert!(b["last_error"].as_str().unwrap().contains("hung"), "{b}");
    wait_for_both_feeds(&node, 3).await;
    assert_no_gaps(&node).await;

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
    assert!(
        metrics.contains(
            "steadycast_encoder_restarts_total{channel=\"fo\",feed=\"a\",kind=\"video\"} 1"
        ),
        "{metrics}"
    );
}
