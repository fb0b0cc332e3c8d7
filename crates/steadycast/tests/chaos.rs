//! `steadycast chaos` end to end: each scenario against a real node while `verify` watches as a
//! viewer; the design promises every one of them seamless (zero gaps, zero stalls).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::process::Stdio;

use common::*;
use tokio::process::Command;

/// A light channel whose node accepts faults and detects hangs quickly.
fn channel(id: &str) -> String {
    format!(
        "allow_faults = true\nhang_timeout_seconds = 4\n{}",
        light_channel_toml(id, "15")
    )
}

async fn seamless(scenario: &str) {
    let node = TestNode::serve(&channel("chaos")).await;
    node.wait_for_segments("chaos", &["90p", "audio"], 3).await;
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--scenario",
            scenario,
            "--channel",
            "chaos",
            "--seconds",
            "36",
        ])
        .args(["--node", &node.url("")])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario} was not seamless:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PASS") && stdout.contains("0 violation(s)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_pipeline_is_seamless() {
    seamless("kill-pipeline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_pipeline_is_seamless() {
    seamless("hang-pipeline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_packager_ingest_is_seamless() {
    seamless("slow-packager-ingest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_feed_is_seamless() {
    seamless("corrupt-feed").await;
}

#[tokio::test]
async fn list_explains_every_scenario() {
    let out = Command::new(BIN)
        .args(["chaos", "--list"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in [
        "kill-pipeline",
        "hang-pipeline",
        "slow-packager-ingest",
        "corrupt-feed",
    ] {
        assert!(text.contains(name), "{text}");
    }
}
