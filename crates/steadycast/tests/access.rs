//! The control API's door: a first start makes an admin token (kept in a private file, never
//! logged); without a token every `/api/v1` call is refused (health and playback stay open);
//! tokens have scopes, are created, listed and revoked through the CLI and the API, and every
//! change names the token that made it; an address that guesses is refused.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

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
    // The API describes itself (openly), and every operation it describes is locked.
    let (status, body) = get(&node.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let document: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut described = 0;
    for (path, methods) in document["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in methods.as_object().unwrap() {
            let scope = operation["x-steadycast-scope"].as_str().unwrap();
            assert!(
                ["read", "operator", "admin"].contains(&scope),
                "{operation}"
            );
            let method = method.to_uppercase();
            let (status, challenge, _) = call(&method, &node.url(&concrete), None, None).await;
            assert_eq!(
                (status, challenge.is_empty()),
                (401, false),
                "{method} {path}"
            );
            described += 1;
        }
    }
    assert!(described >= 18, "{described} operations described");
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

const K1: &str = "playback-key-one-0123456789abcdefghij";
const K2: &str = "playback-key-two-0123456789abcdefghij";
const METRICS_TOKEN: &str = "metrics-token-0123456789";
const CDN_VALUES: [&str; 2] = ["cdn-value-one-0123456", "cdn-value-two-0123456"];

/// GET `url` from `local` (a loopback address), with `headers`: status and body.
async fn fetch_from(local: [u8; 4], url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .build()
        .unwrap();
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_playback_urls_and_the_cdn_header() {
    let dir = tempfile::tempdir().unwrap();
    let signed = format!(
        "{}[channels.playback]\nsigned_urls = true\n",
        light_channel_toml("locked", "15")
    );
    let cdn = format!(
        "{}[channels.playback]\ncdn_header = \"X-CDN-Auth\"\ncdn_values = [\"{}\", \"{}\"]\n",
        light_channel_toml("shielded", "15"),
        CDN_VALUES[0],
        CDN_VALUES[1]
    );
    let server = format!(
        "playback_keys = {{ k1 = \"{K1}\", k2 = \"{K2}\" }}\nmetrics_token = \"{METRICS_TOKEN}\"\n\
         trusted_proxies = [\"127.0.0.3/32\"]"
    );
    let node = TestNode::serve_with(dir.path(), &server, &format!("{signed}\n{cdn}")).await;
    let keys = access::PlaybackKeys::parse([("k1", K1), ("k2", K2)]).unwrap();
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let sign = |key: &str, prefix: &str, expires: u64, client: Option<[u8; 4]>| {
        keys.sign(key, prefix, expires, client.map(std::net::IpAddr::from))
            .unwrap()
    };
    let token = sign("k1", "/live/locked/", in_an_hour, None);
    let main = node.url("/live/locked/main.m3u8");

    // Wait for media, then follow every URL the playlists name: each carries the token.
    let playlist = node.url(&format!("/live/locked/90p.m3u8?st={token}"));
    let body = wait_for(
        "segments of the signed channel",
        Duration::from_secs(60),
        || {
            let playlist = playlist.clone();
            async move {
                let (status, body) = fetch_from([127, 0, 0, 1], &playlist, &[]).await;
                (status == 200 && body.matches(".m4s").count() >= 2).then_some(body)
            }
        },
    )
    .await;
    let (status, _) = fetch_from([127, 0, 0, 1], &format!("{main}?st={token}"), &[]).await;
    assert_eq!(status, 200);
    let uris: Vec<&str> = body
        .lines()
        .filter(|l| l.ends_with(&format!("?st={token}")) || l.contains(&format!("?st={token}\"")))
        .collect();
    assert!(uris.len() >= 3, "URLs without the token:\n{body}");
    let segment = body.lines().find(|l| l.contains(".m4s?st=")).unwrap();
    let segment_url = node.url(&format!("/live/locked/{segment}"));
    assert_eq!(fetch_from([127, 0, 0, 1], &segment_url, &[]).await.0, 200);
    let bare = segment_url.split('?').next().unwrap();
    let (status, refusal) = fetch_from([127, 0, 0, 1], bare, &[]).await;
    assert_eq!(status, 403);
    assert!(
        refusal.contains("needs a valid, unexpired token"),
        "{refusal}"
    );
    let (_, mpd) = fetch_from(
        [127, 0, 0, 1],
        &node.url(&format!("/live/locked/manifest.mpd?st={token}")),
        &[],
    )
    .await;
    assert!(mpd.contains(&format!(".m4s?st={token}\"")), "{mpd}");

    // Refused: expired, tampered, another channel's, another key's secret, another client's.
    let past = in_an_hour - 7200;
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 2.., "AA");
    let other_keys = access::PlaybackKeys::parse([("k1", K2)]).unwrap();
    let forged = other_keys
        .sign("k1", "/live/locked/", in_an_hour, None)
        .unwrap();
    for (what, bad) in [
        ("expired", sign("k1", "/live/locked/", past, None)),
        ("tampered", tampered),
        (
            "another channel's",
            sign("k1", "/live/shielded/", in_an_hour, None),
        ),
        ("forged", forged),
        (
            "another client's",
            sign("k1", "/live/locked/", in_an_hour, Some([127, 0, 0, 2])),
        ),
    ] {
        let (status, _) = fetch_from([127, 0, 0, 1], &format!("{main}?st={bad}"), &[]).await;
        assert_eq!(status, 403, "a token {what} opened the channel");
    }
    // Accepted: bound to this client, and signed with the second key (rotation).
    let mine = sign("k2", "/live/locked/", in_an_hour, Some([127, 0, 0, 2]));
    let (status, _) = fetch_from([127, 0, 0, 2], &format!("{main}?st={mine}"), &[]).await;
    assert_eq!(status, 200);
    // Behind a trusted proxy the client is the one its X-Forwarded-For names; anyone else's
    // header is not believed.
    let forwarded = [("x-forwarded-for", "127.0.0.2")];
    let via_proxy = fetch_from([127, 0, 0, 3], &format!("{main}?st={mine}"), &forwarded).await;
    assert_eq!(via_proxy.0, 200);
    let claimed = fetch_from([127, 0, 0, 1], &format!("{main}?st={mine}"), &forwarded).await;
    assert_eq!(
        claimed.0, 403,
        "a client's own X-Forwarded-For was believed"
    );

    // A player follows the signed URLs.
    let (ok, report, _) = verify(&format!("{main}?st={token}"), &["--seconds", "6"]).await;
    assert!(ok, "{report:#}");

    // The token from the CLI opens the channel too.
    let (ok, out, err) = cli_as(
        ADMIN_TOKEN,
        &[
            "sign",
            "--channel",
            "locked",
            "--playback-keys",
            &format!("k1={K1}"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (status, _) = fetch_from([127, 0, 0, 1], &format!("{main}?st={}", out.trim()), &[]).await;
    assert_eq!(status, 200);

    // The CDN header: either accepted value opens the channel; none or another does not.
    let shielded = node.url("/live/shielded/main.m3u8");
    wait_for(
        "the shielded channel's media",
        Duration::from_secs(60),
        || {
            let shielded = shielded.clone();
            async move {
                let (status, _) =
                    fetch_from([127, 0, 0, 1], &shielded, &[("x-cdn-auth", CDN_VALUES[1])]).await;
                (status == 200).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        fetch_from([127, 0, 0, 1], &shielded, &[("X-CDN-Auth", CDN_VALUES[0])])
            .await
            .0,
        200
    );
    assert_eq!(fetch_from([127, 0, 0, 1], &shielded, &[]).await.0, 403);
    assert_eq!(
        fetch_from(
            [127, 0, 0, 1],
            &shielded,
            &[("X-CDN-Auth", "cdn-value-three-012345")]
        )
        .await
        .0,
        403
    );
    // Signing is off there, and on nowhere else: the API does not show the CDN values.
    let (_, described) = get(&node.url("/api/v1/channels/shielded")).await.unwrap();
    assert!(!described.contains(CDN_VALUES[0]), "{described}");
    // This node's metrics are for its scraper only.
    assert_eq!(get(&node.url("/metrics")).await.unwrap().0, 401);
    let metrics = reqwest::Client::new()
        .get(node.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    for reason in [
        "missing",
        "expired",
        "bad_signature",
        "other_path",
        "other_client",
        "cdn_header",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_stream_key_moves_the_publisher_without_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::serve_with(dir.path(), "", "").await;
    let spec = json!({
        "id": "rotating",
        "inputs": { "main": { "type": "rtmp", "stream_key": "first-key-0123456789" } },
        "frame_rate": "15",
        "preset": "ultrafast",
        "ladder": [{ "name": "90p", "width": 160, "height": 90, "bitrate_kbps": 80 }],
    });
    let channels = node.url("/api/v1/channels");
    let (status, _, body) = call("POST", &channels, Some(ADMIN_TOKEN), Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    let rtmp = |key: &str| format!("rtmp://{}/live/{key}", node.rtmp);
    let sessions = |kind: &'static str| {
        let node = &node;
        async move { events_of(node, "rotating", kind).await.len() }
    };
    // Waits until `count` sessions have had an event of `kind` (started, ended).
    let wait_sessions = |kind: &'static str, count: usize| async move {
        wait_for(kind, Duration::from_secs(30), || async {
            (sessions(kind).await >= count).then_some(())
        })
        .await
    };
    let base = node.url("");
    let rotate = |grace: &'static str| {
        let base = base.clone();
        async move {
            let args = ["channel", "rotate-key", "rotating", "--input", "main"];
            let grace = ["--grace-seconds", grace, "--api", &base];
            let (ok, out, err) = cli_as(ADMIN_TOKEN, &[&args[..], &grace[..]].concat()).await;
            assert!(ok, "{err}");
            serde_json::from_str::<Value>(&out).unwrap()
        }
    };

    let mut first = publish("flv", &rtmp("first-key-0123456789"));
    wait_sessions("input_started", 1).await;
    let rotated = rotate("30").await;
    let new_key = rotated["stream_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, "first-key-0123456789");
    assert!(
        rotated["input_url"].as_str().unwrap().ends_with(&new_key),
        "{rotated}"
    );
    // The session on the old key goes on: segments keep coming, it does not end.
    let playlist = node.url("/live/rotating/90p.m3u8");
    let listed = |body: &str| body.matches(".m4s").count();
    let (_, before) = get(&playlist).await.unwrap();
    let newest = |body: &str| {
        body.lines()
            .rev()
            .find(|l| l.ends_with(".m4s"))
            .map(str::to_string)
    };
    let at_rotation = newest(&before);
    wait_for(
        "segments after the rotation",
        Duration::from_secs(30),
        || async {
            let (_, now) = get(&playlist).await?;
            (listed(&now) > 0 && newest(&now) != at_rotation).then_some(())
        },
    )
    .await;
    assert_eq!(
        sessions("input_ended").await,
        0,
        "the rotation cut the publisher"
    );
    // Neither key is in what the API shows now.
    let (_, shown) = get(&node.url("/api/v1/channels/rotating")).await.unwrap();
    assert!(
        !shown.contains(&new_key) && !shown.contains("first-key-0123456789"),
        "{shown}"
    );

    // Within the grace both keys open the input; after it, only the new one.
    first.kill().await.unwrap();
    wait_sessions("input_ended", 1).await;
    let mut again = publish("flv", &rtmp("first-key-0123456789"));
    wait_sessions("input_started", 2).await;
    again.kill().await.unwrap();
    wait_sessions("input_ended", 2).await;
    let mut moved = publish("flv", &rtmp(&new_key));
    wait_sessions("input_started", 3).await;
    moved.kill().await.unwrap();
    // The input is free again: a refusal below is the key's, not a busy input's.
    wait_sessions("input_ended", 3).await;

    let newest_key = rotate("0").await;
    let mut stale = publish("flv", &rtmp(&new_key));
    let refused = tokio::time::timeout(Duration::from_secs(20), stale.wait()).await;
    assert!(
        refused.is_ok_and(|status| !status.unwrap().success()),
        "a key past its grace opened the input"
    );
    let audit = events_of(&node, "rotating", "api_change").await;
    assert!(
        audit
            .iter()
            .any(|e| e.contains("rotated the stream key of input `main`")),
        "{audit:?}"
    );
    assert!(newest_key["stream_key"].as_str().is_some());
}
