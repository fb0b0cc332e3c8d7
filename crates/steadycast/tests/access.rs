//! The control API's door: a first start makes an admin token (kept in a private file, never
//! logged); without a token every `/api/v1` call is refused (health and playback stay open);
//! tokens have scopes, are created, listed and revoked through the CLI and the API, and every
//! change names the token that made it; an address that guesses is refused.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

const STREAM_KEY: &str = "news-stream-key-5f1c9a";
const PASSPHRASE: &str = "news-srt-passphrase-77c2";

/// `method url` with `token` (if any): status, `WWW-Authenticate`, JSON body.
async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The secret `steadycast token create` printed.
fn secret_in(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("sct_"))
        .unwrap_or_else(|| panic!("no token in `{stdout}`"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_locked_and_tokens_have_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::serve_bare(dir.path(), "", "").await;
    let base = node.url("");
    let channels = node.url("/api/v1/channels");

    // The first start made an admin token: in a file only the node's user can read.
    let file = dir.path().join("data/admin-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let admin = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(admin.starts_with("sct_") && admin.len() > 40, "{admin}");

    // No token, a wrong one: 401 with a challenge and a reason that names no token.
    let (status, challenge, body) = call("GET", &channels, None, None).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Bearer realm=\"steadycast\"")
    );
    assert!(
        body["error"].as_str().unwrap().contains("needs a token"),
        "{body}"
    );
    let (status, _, body) = call(
        "DELETE",
        &node.url("/api/v1/channels/x"),
        Some("sct_wrong"),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.to_string().contains("admin"), "{body}");
    // Health, metrics and the dashboard's page stay open.
    for open in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(get(&node.url(open)).await.unwrap().0, 200, "{open}");
    }

    // The admin makes a read token and an operator token with the CLI.
    let (ok, out, err) = cli_as(&admin, &["token", "create", "watcher", "--api", &base]).await;
    assert!(ok, "{err}");
    let reader = secret_in(&out);
    let (ok, out, err) = cli_as(
        &admin,
        &[
            "token", "create", "ops", "--scope", "operator", "--api", &base,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let operator = secret_in(&out);
    let (ok, _, err) = cli_as(&admin, &["token", "create", "ops", "--api", &base]).await;
    assert!(!ok && err.contains("a live token is named `ops`"), "{err}");
    let (ok, _, err) = cli_as(&reader, &["token", "list", "--api", &base]).await;
    assert!(
        !ok && err.contains("403") && err.contains("admin scope"),
        "{err}"
    );
    let (ok, listed, err) = cli_as(&admin, &["token", "list", "--api", &base]).await;
    assert!(ok, "{err}");
    for name in ["admin", "watcher", "ops"] {
        assert!(listed.contains(name), "{listed}");
    }
    let (_, _, tokens) = call("GET", &node.url("/api/v1/tokens"), Some(&admin), None).await;
    for secret in [&admin, &reader, &operator] {
        assert!(
            !tokens.to_string().contains(secret.as_str()),
            "a secret listed: {tokens}"
        );
        let hash = access::token_hash(secret);
        assert!(
            !tokens.to_string().contains(&hash),
            "a hash listed: {tokens}"
        );
    }

    // Read reads; a change needs an operator; tokens need the admin.
    let spec = json!({
        "id": "news",
        "inputs": {
            "a": { "type": "rtmp", "stream_key": STREAM_KEY },
            "b": { "type": "srt", "passphrase": PASSPHRASE },
        },
        "preset": "ultrafast",
        "ladder": [{ "name": "90p", "width": 160, "height": 90, "bitrate_kbps": 80 }],
    });
    assert_eq!(call("GET", &channels, Some(&reader), None).await.0, 200);
    let (status, _, body) = call("POST", &channels, Some(&reader), Some(spec.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("operator scope"),
        "{body}"
    );
    let (status, _, body) = call("POST", &channels, Some(&operator), Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    // The input secrets are in the answer that creates the channel, and nowhere after.
    let created = body.to_string();
    assert!(
        created.contains(STREAM_KEY) && created.contains(PASSPHRASE),
        "{body}"
    );
    let credential = body["channel"]["ingest_credential"]
        .as_str()
        .unwrap()
        .to_string();
    let mut answers = String::new();
    for path in [
        "/api/v1/channels",
        "/api/v1/channels/news",
        "/api/v1/channels/news/events",
    ] {
        let (status, _, body) = call("GET", &node.url(path), Some(&admin), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body.to_string());
    }
    assert!(answers.contains("rtmp://"), "{answers}");
    for secret in [STREAM_KEY, PASSPHRASE, &credential] {
        assert!(!answers.contains(secret), "a secret in a GET: {answers}");
    }
    let (status, _, _) = call("GET", &node.url("/api/v1/tokens"), Some(&operator), None).await;
    assert_eq!(status, 403);
    let events = node.url("/api/v1/channels/news/events");
    let (_, _, changes) = call("GET", &events, Some(&reader), None).await;
    assert!(
        changes
            .to_string()
            .contains("token `ops`: created the channel"),
        "{changes}"
    );

    // Revoked, a token opens nothing, on this node at once.
    let (status, _, _) = call(
        "DELETE",
        &node.url("/api/v1/tokens/watcher"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(call("GET", &channels, Some(&reader), None).await.0, 401);
    let (_, _, audit) = call("GET", &node.url("/api/v1/events"), Some(&admin), None).await;
    assert!(
        audit
            .to_string()
            .contains("token `admin`: revoked token `watcher`"),
        "{audit}"
    );

    // A restart keeps the tokens and makes no new one.
    node.child.start_kill().unwrap();
    node.child.wait().await.unwrap();
    node.restart().await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), admin);
    assert_eq!(call("GET", &channels, Some(&operator), None).await.0, 200);

    // No secret in the log.
    let log = node.log();
    for secret in [
        &admin,
        &reader,
        &operator,
        STREAM_KEY,
        PASSPHRASE,
        &credential,
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }

    // An address that guesses is refused for a while, before its guesses cost a lookup.
    for _ in 0..10 {
        assert_eq!(call("GET", &channels, Some("sct_guess"), None).await.0, 401);
    }
    let refused = reqwest::Client::new()
        .get(&channels)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("steadycast_api_auth_refused_total{reason=\"limited\"}"),
        "{metrics}"
    );
}
