//! `steadycast verify` against a real node: a steady test-pattern channel passes on HLS and on
//! DASH in every rendition with no stall, and a URL that 404s fails with an `http` error.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::*;
use tokio::process::Command;

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

#[tokio::test]
async fn verify_passes_a_steady_channel_on_hls_and_dash_and_fails_a_404() {
    let node = TestNode::serve(&channel_toml("v", PATTERN)).await;
    node.wait_for_segments("v", &RENDITIONS, 3).await;

    let hls = node.url("/live/v/main.m3u8");
    let dash = node.url("/live/v/manifest.mpd");
    let missing = node.url("/live/nosuch/main.m3u8");
    let ((hls_ok, hls_report, _), (dash_ok, dash_report, _), (bad_ok, bad_report, bad_err)) = tokio::join!(
        verify(&hls, &["--seconds", "12"]),
        verify(&dash, &["--seconds", "12"]),
        verify(&missing, &["--seconds", "2"]),
    );
    assert_steady("HLS", hls_ok, &hls_report);
    assert_eq!(hls_report["format"], "hls");
    assert_steady("DASH", dash_ok, &dash_report);
    assert_eq!(dash_report["format"], "dash");

    let pretty = serde_json::to_string_pretty(&bad_report).unwrap();
    assert!(!bad_ok, "a 404 must fail verify:\n{pretty}");
    assert_eq!(bad_report["verdict"], "fail", "{pretty}");
    assert!(
        bad_report["errors"]["http"]["count"].as_u64() >= Some(1),
        "{pretty}"
    );
    let message = bad_report["errors"]["http"]["examples"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("404"), "{pretty}");
    assert!(bad_err.contains("violation"), "{bad_err}");

    // A rendition that is not there is a usage error, not a report.
    let out = Command::new(BIN)
        .args(["verify", &hls, "--seconds", "1", "--rendition", "4k"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no rendition \"4k\""), "{stderr}");
}
