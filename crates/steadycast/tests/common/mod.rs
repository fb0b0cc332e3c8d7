//! The end-to-end harness: a real `steadycast` process on loopback ports, real ffmpeg
//! publishers and players, and polling with deadlines (never bare sleeps).

#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The secret a test cluster's nodes authenticate each other with.
pub const CLUSTER_SECRET: &str = "cluster_secret = \"test-cluster-secret-0123456789\"";

pub const BIN: &str = env!("CARGO_BIN_EXE_steadycast");

/// A free loopback port (bound then released; the node binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A running node. Killed (SIGKILL) when dropped.
pub struct TestNode {
    pub child: Child,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    pub srt: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts `steadycast serve` with `channels_toml` (the `[[channels]]` part of a config).
    pub async fn serve(channels_toml: &str) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node = Self::serve_in(&dir, channels_toml).await;
        node._tmp = Some(tmp);
        node
    }

    /// Starts `steadycast serve` in `dir` (kept by the caller, so a restart finds its data).
    pub async fn serve_in(dir: &Path, channels_toml: &str) -> TestNode {
        Self::serve_with(dir, "", channels_toml).await
    }

    /// As [`TestNode::serve_in`], with more keys of the `[server]` table (`server_toml`, one
    /// `key = value` per line: the catalog URL, the blob store as an inline table). Its API
    /// takes [`ADMIN_TOKEN`].
    pub async fn serve_with(dir: &Path, server_toml: &str, channels_toml: &str) -> TestNode {
        let server_toml = format!("admin_token = \"{ADMIN_TOKEN}\"\n{server_toml}");
        Self::serve_bare(dir, &server_toml, channels_toml).await
    }

    /// As [`TestNode::serve_with`], with no admin token given: the node makes one.
    pub async fn serve_bare(dir: &Path, server_toml: &str, channels_toml: &str) -> TestNode {
        let node = Self::spawn(dir, server_toml, channels_toml);
        node.wait_until_ready().await;
        node
    }

    /// Starts the node and returns at once (for a node [`TestNode::url`] cannot reach: one
    /// serving HTTPS).
    pub fn spawn(dir: &Path, server_toml: &str, channels_toml: &str) -> TestNode {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let rtmp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let srt = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let config = format!(
            "[server]\nlisten = \"{http}\"\ndata_dir = \"{}\"\nrtmp_listen = \"{rtmp}\"\n\
             srt_listen = \"{srt}\"\n{server_toml}\n{channels_toml}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("steadycast.toml"), config).expect("write config");
        TestNode {
            child: spawn_node(dir),
            http,
            rtmp,
            srt,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Starts the node again (after it was killed) with the same config, ports and data.
    pub async fn restart(&mut self) {
        self.child = spawn_node(&self.dir);
        self.wait_until_ready().await;
    }

    /// Ready: the node's channels are started, a restarted one's window restored.
    async fn wait_until_ready(&self) {
        let url = self.url("/readyz");
        wait_for("the node's /readyz", Duration::from_secs(20), || {
            let url = url.clone();
            async move { get(&url).await.filter(|(s, _)| *s == 200).map(|_| ()) }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Waits until every media playlist of `channel` lists at least `segments` segments.
    pub async fn wait_for_segments(&self, channel: &str, renditions: &[&str], segments: usize) {
        for r in renditions {
            let url = self.url(&format!("/live/{channel}/{r}.m3u8"));
            wait_for(
                &format!("{segments} segments in {url}"),
                Duration::from_secs(90),
                || {
                    let url = url.clone();
                    async move {
                        let (status, body) = get(&url).await?;
                        let listed = body.lines().filter(|l| l.ends_with(".m4s")).count();
                        (status == 200 && listed >= segments).then_some(())
                    }
                },
            )
            .await;
        }
    }
}

/// `steadycast serve` with the config in `dir`, logging to `dir/node.log` (appended, so a
/// restarted node's log follows the one before).
fn spawn_node(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .expect("log file");
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("steadycast.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn steadycast")
}

/// The admin token of every node [`TestNode::serve_with`] starts.
pub const ADMIN_TOKEN: &str = "sct_test-admin-token-of-every-test-node";

/// A client that presents [`ADMIN_TOKEN`] (playback ignores it).
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    headers.insert("authorization", bearer.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// GET `url` with the admin token: status and body as text, or `None` if the request failed.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let response = api_client().get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

pub async fn get_bytes(url: &str) -> (u16, bytes::Bytes) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body"))
}

/// ffmpeg publishing a small test pattern and tone (15 fps, like the test channels) to `output`
/// in `format`, until killed.
pub fn publish(format: &str, output: &str) -> Child {
    publish_with(format, output, true)
}

/// [`publish`], with or without the tone.
pub fn publish_with(format: &str, output: &str, audio: bool) -> Child {
    publish_source(format, output, audio, "testsrc2=size=320x180:rate=15", &[])
}

/// ffmpeg publishing the lavfi `video` source (and the tone if `audio`) to `output`, with
/// `extra` output options, until killed.
pub fn publish_source(
    format: &str,
    output: &str,
    audio: bool,
    video: &str,
    extra: &[&str],
) -> Child {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-nostats", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", video]);
    if audio {
        command
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-c:a", "aac", "-b:a", "64k"]);
    }
    command
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "15",
        ])
        .args(extra)
        .args(["-f", format, output])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

/// Plays `url` for `seconds` with ffmpeg as the client; returns its exit success and errors.
pub async fn play(url: &str, seconds: u32) -> (bool, String) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-loglevel", "error", "-i", url])
        .args(["-t", &seconds.to_string(), "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ffmpeg player");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The streams ffprobe finds at `url`, as (codec_type, width, height).
pub async fn probe(url: &str) -> Vec<(String, u32, u32)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,width,height",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .await
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let kind = f.next()?.to_string();
            let w = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let h = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            Some((kind, w, h))
        })
        .collect()
}

/// A test channel: tiny ladder (320x180 and 160x90 at 15 fps), 1 s segments, ultrafast.
pub fn channel_toml(id: &str, inputs: &str) -> String {
    format!(
        r#"
[[channels]]
id = "{id}"
frame_rate = "15"
segment_seconds = 1.0
preset = "ultrafast"
live_window_seconds = 20
ingest_credential = "test-credential-{id}"
audio = {{ bitrate_kbps = 64 }}
ladder = [
  {{ name = "180p", width = 320, height = 180, bitrate_kbps = 200 }},
  {{ name = "90p", width = 160, height = 90, bitrate_kbps = 80 }},
]
{inputs}
"#
    )
}

pub const RENDITIONS: [&str; 3] = ["180p", "90p", "audio"];

/// A light test-pattern channel (one 160x90 rendition and audio, 2 s segments) at `rate`, so
/// that several run side by side.
pub fn light_channel_toml(id: &str, rate: &str) -> String {
    let pattern = format!(
        "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"160x90\"\n\
         frame_rate = \"{rate}\""
    );
    light_channel_with(id, rate, &pattern)
}

/// [`light_channel_toml`] with other inputs (TOML tables under `channels.`).
pub fn light_channel_with(id: &str, rate: &str, inputs: &str) -> String {
    format!(
        r#"
[[channels]]
id = "{id}"
frame_rate = "{rate}"
segment_seconds = 2.0
preset = "ultrafast"
audio = {{ bitrate_kbps = 64 }}
ladder = [{{ name = "90p", width = 160, height = 90, bitrate_kbps = 80 }}]
{inputs}
"#
    )
}

/// Runs `steadycast verify URL ARGS… --json`: exit success and the parsed report.
pub async fn verify(url: &str, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(url)
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run steadycast verify");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON report ({e}):\n{stdout}\n{stderr}"));
    (out.status.success(), report, stderr)
}

pub fn assert_steady(what: &str, ok: bool, report: &serde_json::Value) {
    let pretty = serde_json::to_string_pretty(report).unwrap();
    assert!(ok, "{what}: verify failed:\n{pretty}");
    assert_eq!(report["verdict"], "pass", "{what}:\n{pretty}");
    assert_eq!(report["violations"], 0, "{what}:\n{pretty}");
    assert_eq!(report["errors"], serde_json::json!({}), "{what}:\n{pretty}");
    assert_eq!(report["stall"]["seconds"], 0.0, "{what}:\n{pretty}");
    assert_eq!(report["stall"]["count"], 0, "{what}:\n{pretty}");
    let renditions = report["renditions"].as_array().unwrap();
    for name in RENDITIONS {
        let r = renditions
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{what}: no rendition {name}:\n{pretty}"));
        assert!(
            r["segments_checked"].as_u64().unwrap() > 0,
            "{what}: {name}:\n{pretty}"
        );
        assert_eq!(r["stalls"], 0, "{what}: {name}:\n{pretty}");
        assert_eq!(r["playing"], true, "{what}: {name}:\n{pretty}");
    }
}

/// The events of kind `kind` the node recorded for `channel`, as `source: detail` lines.
pub async fn events_of(node: &TestNode, channel: &str, kind: &str) -> Vec<String> {
    let url = node.url(&format!("/api/v1/channels/{channel}/events?limit=1000"));
    let (_, body) = get(&url).await.unwrap();
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| format!("{}: {}", e["source"], e["detail"]))
        .collect()
}

/// Injects `fault` (the API's JSON) into `channel` of a node started with `allow_faults`.
pub async fn inject_fault(node: &TestNode, channel: &str, fault: serde_json::Value) {
    let response = api_client()
        .post(node.url(&format!("/api/v1/channels/{channel}/faults")))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "{fault}");
}

/// Writes `bytes` and reads until the server answers and closes, or `limit` passes; returns
/// what came back and whether the server closed the connection.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&answer).into(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into(), false),
        }
    }
}

/// `steadycast ARGS…` with `token` in `STEADYCAST_TOKEN`: success, stdout, stderr.
pub async fn cli_as(token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("STEADYCAST_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run steadycast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
