//! Real browser players on our output: headless Chromium, driven over WebDriver (chromedriver,
//! plain JSON over HTTP), opens the dashboard at `/` and plays a test-pattern channel with
//! hls.js and then dash.js until the video has advanced 4 s with no player error.
//!
//! Needs `chromium` and `chromium-driver` (Debian); `scripts/setup.sh --browser` installs them.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

/// How far playback must get, in media seconds, for a player to count as playing.
const PLAYED_SECONDS: f64 = 4.0;
/// The test pattern's frame rate.
const FRAME_RATE: f64 = 15.0;

/// What the page exposes (`window.steadycast`) plus the video element's own state.
const SNAPSHOT: &str = r#"
const s = window.steadycast;
const v = document.getElementById('video');
if (!s || !v) return null;
return {
  listed: Array.from(document.querySelectorAll('#channels a')).map((a) => a.dataset.channel),
  engine: s.engine,
  manifestLoaded: s.manifestLoaded,
  segmentsLoaded: s.segmentsLoaded,
  errors: s.errors,
  warnings: s.warnings,
  stats: s.stats,
  currentTime: v.currentTime,
  frames: v.getVideoPlaybackQuality().totalVideoFrames,
  paused: v.paused,
  readyState: v.readyState,
  mediaError: v.error ? v.error.code + ' ' + v.error.message : null,
};
"#;

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// chromedriver and the headless Chromium it runs, in their own process group; the session is
/// closed and the group killed on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let missing = || {
            "headless Chromium is needed for this test: run scripts/setup.sh --browser \
             (installs the Debian packages chromium and chromium-driver)"
        };
        let chromedriver = find_program("chromedriver").unwrap_or_else(|| panic!("{}", missing()));
        let chromium = find_program("chromium")
            .or_else(|| find_program("chromium-browser"))
            .unwrap_or_else(|| panic!("{}", missing()));

        // Chromium's profile, and (through XDG_*) its crash reports, caches and PulseAudio
        // runtime files, stay in here.
        let profile = tempfile::tempdir().expect("profile dir");
        let runtime = profile.path().join("run");
        std::fs::create_dir(&runtime).expect("runtime dir");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .env("XDG_CACHE_HOME", profile.path().join("cache"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let status = format!("http://127.0.0.1:{port}/status");
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                let v: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
                (v["value"]["ready"] == true).then_some(())
            }
        })
        .await;

        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--mute-audio".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--window-size=1280,800".into(),
            format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser.call("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let request = match method {
            "POST" => self.http.post(&url).json(&body),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let v: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn navigate(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The browser console since the last call (for failure messages).
    async fn console(&self) -> String {
        let url = format!(
            "http://127.0.0.1:{}{}",
            self.port,
            self.session_path("/se/log")
        );
        let Ok(response) = self
            .http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        else {
            return String::new();
        };
        let v: Value = response.json().await.unwrap_or(Value::Null);
        v["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("  {} {}", e["level"], e["message"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium; a blocking request, since drop
        // cannot await. Then the whole process group goes, whatever is left of it.
        if !self.session.is_empty()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.session, self.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}

async fn failure(browser: &Browser, node: &TestNode, what: &str, snapshot: &Value) -> String {
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(30)..];
    format!(
        "{what}\npage state: {snapshot:#}\nbrowser console:\n{}\nnode log (last lines):\n{}",
        browser.console().await,
        tail.join("\n")
    )
}

/// Plays channel `web` with `player` on the dashboard until the video has advanced
/// `PLAYED_SECONDS`, with no error from the player or the media element.
async fn plays(browser: &Browser, node: &TestNode, player: &str) {
    let started = Instant::now();
    browser
        .navigate(&node.url(&format!(
            "/?channel=web&player={player}#token={ADMIN_TOKEN}"
        )))
        .await;
    let limit = Duration::from_secs(30);
    let deadline = started + limit;
    let mut first: Option<(f64, u64)> = None;
    loop {
        let snapshot = browser.eval(SNAPSHOT).await;
        let errors = snapshot["errors"].as_array().map_or(0, Vec::len);
        if errors > 0 || !snapshot["mediaError"].is_null() {
            let what = format!("{player}: the player failed");
            panic!("{}", failure(browser, node, &what, &snapshot).await);
        }
        let now = snapshot["currentTime"].as_f64().unwrap_or(0.0);
        let frames = snapshot["frames"].as_u64().unwrap_or(0);
        if now > 0.0 {
            let (from, from_frames) = *first.get_or_insert((now, frames));
            if now - from >= PLAYED_SECONDS {
                // Decoded pictures, not just a clock that moved (a player may jump a gap).
                let decoded = frames.saturating_sub(from_frames);
                assert!(
                    decoded as f64 >= PLAYED_SECONDS * FRAME_RATE * 0.75,
                    "{player}: only {decoded} frames decoded while the position moved {:.1} s: \
                     {snapshot}",
                    now - from
                );
                assert!(
                    snapshot["listed"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|c| c == "web")),
                    "{player}: the page does not list channel `web`: {snapshot}"
                );
                let engine = format!("{player}.js");
                assert_eq!(snapshot["engine"], engine.as_str(), "{snapshot}");
                assert_eq!(snapshot["manifestLoaded"], true, "{snapshot}");
                assert!(snapshot["segmentsLoaded"].as_u64() >= Some(2), "{snapshot}");
                eprintln!(
                    "{player}: played {:.1} s of media ({decoded} frames) in {:.1} s; {}; \
                     recovered warnings: {}",
                    now - from,
                    started.elapsed().as_secs_f64(),
                    snapshot["stats"],
                    snapshot["warnings"]
                );
                return;
            }
        }
        if Instant::now() >= deadline {
            let what = format!(
                "{player}: timed out after {limit:?} waiting for {PLAYED_SECONDS} s of playback \
                 (first position {first:?}, now {now})"
            );
            panic!("{}", failure(browser, node, &what, &snapshot).await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_and_dash_js_play_the_channel_in_chromium() {
    let channels = channel_toml("web", PATTERN);
    let (browser, node) = tokio::join!(Browser::start(), TestNode::serve(&channels));
    node.wait_for_segments("web", &RENDITIONS, 3).await;

    // The vendored players, as the page loads them.
    for script in ["/player/hls.min.js", "/player/dash.all.min.js"] {
        let response = reqwest::get(node.url(script)).await.unwrap();
        assert_eq!(response.status(), 200, "{script}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/javascript", "{script}");
        assert_eq!(
            headers["cache-control"], "public, max-age=86400",
            "{script}"
        );
    }

    // The browser must be able to decode what we encode; say so plainly if it cannot.
    let (_, main) = get(&node.url("/live/web/main.m3u8")).await.unwrap();
    let codecs: Vec<String> = main
        .split("CODECS=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .flat_map(|list| list.split(','))
        .map(str::to_string)
        .collect();
    assert!(!codecs.is_empty(), "no CODECS in main.m3u8:\n{main}");
    browser.navigate("about:blank").await;
    for codec in &codecs {
        let kind = if codec.starts_with("mp4a") {
            "audio"
        } else {
            "video"
        };
        let mime = format!("{kind}/mp4; codecs=\"{codec}\"");
        let supported = browser
            .eval(&format!(
                "return window.MediaSource ? MediaSource.isTypeSupported({}) : null;",
                json!(mime)
            ))
            .await;
        assert_eq!(
            supported, true,
            "this Chromium's Media Source Extensions cannot play {mime} (a build without \
             proprietary codecs?)"
        );
    }

    plays(&browser, &node, "hls").await;
    plays(&browser, &node, "dash").await;
}
