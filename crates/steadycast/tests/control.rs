//! The control surface: config errors, the channel API and the `steadycast channel` CLI, and
//! channels surviving a restart.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_broken_config_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 1\n",
            "broken.toml:3:1: unknown field `listen_typo`",
        ),
        (
            "[[channels]]\nid = \"x\"\nframe_rate = \"fast\"\n",
            "broken.toml:3:",
        ),
        (
            "[[channels]]\nid = \"x\"\npreset = \"warp\"\n[channels.inputs.m]\ntype = \"srt\"\n",
            "broken.toml:2: channel `x`: preset `warp`",
        ),
    ];
    for (text, says) in cases {
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) =
            cli_as(ADMIN_TOKEN, &["serve", "--config", path.to_str().unwrap()]).await;
        assert!(!ok, "a broken config was accepted:\n{text}");
        assert!(stderr.contains(says), "`{stderr}` does not say `{says}`");
    }
    let (ok, _, stderr) = cli_as(
        ADMIN_TOKEN,
        &["serve", "--config", "/nonexistent/steadycast.toml"],
    )
    .await;
    assert!(
        !ok && stderr.contains("/nonexistent/steadycast.toml: cannot read"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_managed_by_api_and_cli_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::serve_in(dir.path(), "").await;
    let api = node.url("/api/v1/channels");
    let client = api_client();
    let port = free_udp_port();
    let spec = json!({
        "id": "news",
        "inputs": { "main": { "type": "udp", "bind": format!("127.0.0.1:{port}") } },
        "preset": "ultrafast",
        "ladder": [{ "name": "90p", "width": 160, "height": 90, "bitrate_kbps": 80 }],
    });

    let created = client.post(&api).json(&spec).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert!(
        created["channel"]["ingest_credential"]
            .as_str()
            .is_some_and(|c| c.len() == 32)
    );
    assert_eq!(
        created["input_urls"]["main"],
        format!("udp://127.0.0.1:{port}")
    );

    let again = client.post(&api).json(&spec).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let invalid = client
        .post(&api)
        .json(&json!({ "id": "Bad Id", "inputs": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let body: serde_json::Value = invalid.json().await.unwrap();
    let details = body["details"].to_string();
    assert!(
        details.contains("id `Bad Id`") && details.contains("inputs"),
        "{body}"
    );
    let malformed = client
        .post(&api)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    let channel_file = dir.path().join("sports.toml");
    std::fs::write(
        &channel_file,
        "id = \"sports\"\npreset = \"ultrafast\"\n[inputs.main]\ntype = \"srt\"\n",
    )
    .unwrap();
    let base = node.url("");
    let (ok, out, err) = cli_as(
        ADMIN_TOKEN,
        &[
            "channel",
            "create",
            channel_file.to_str().unwrap(),
            "--api",
            &base,
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"sports\""), "{out}");
    let (ok, out, _) = cli_as(ADMIN_TOKEN, &["channel", "list", "--api", &base]).await;
    assert!(
        ok && out.contains("\"news\"") && out.contains("\"sports\""),
        "{out}"
    );
    assert!(
        !out.contains("ingest_credential"),
        "the list shows secrets: {out}"
    );
    let (ok, _, err) = cli_as(
        ADMIN_TOKEN,
        &["channel", "delete", "nothing", "--api", &base],
    )
    .await;
    assert!(
        !ok && err.contains("404") && err.contains("no channel `nothing`"),
        "{err}"
    );
    let (ok, _, _) = cli_as(
        ADMIN_TOKEN,
        &["channel", "delete", "sports", "--api", &base],
    )
    .await;
    assert!(ok);
    assert_eq!(
        get(&node.url("/api/v1/channels/sports")).await.unwrap().0,
        404
    );
    drop(node);

    let node = TestNode::serve_in(dir.path(), "").await;
    let (status, body) = get(&node.url("/api/v1/channels/news")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["running"], true, "{shown}");
    assert_eq!(
        get(&node.url("/api/v1/channels/sports")).await.unwrap().0,
        404
    );
    let fault = json!({ "feed": "a", "fault": { "kind": "corrupt" }, "seconds": 5 });
    let refused = client
        .post(node.url("/api/v1/channels/news/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "fault injection must be off by default"
    );
    let (status, metrics) = get(&node.url("/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("steadycast_http_requests_total"),
        "{metrics}"
    );
}
