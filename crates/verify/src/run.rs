//! The thin async shell around [`crate::check::Checker`]: HTTP with reqwest, one task per
//! rendition (a reloader and a downloader joined by a bounded queue), and a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::hls::{self, HlsEntry};
use crate::check::{Checker, ErrorKind, FetchError, Job, Options, Report};

/// `steadycast verify`: play a live stream as a viewer would and check its steady state.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The stream: an HLS multivariant or media playlist (`.m3u8`) or a DASH MPD (`.mpd`).
    pub url: String,
    /// How long to watch, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    pub seconds: f64,
    /// Watch only this rendition (HLS: the playlist's name without `.m3u8`; DASH: the
    /// Representation id). Repeatable; all renditions when absent.
    #[arg(long = "rendition", value_name = "NAME")]
    pub renditions: Vec<String>,
    /// The modelled player's buffer: it joins this many segments back from the live edge,
    /// starts once they are downloaded, and stalls when the next one is not there in time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub buffer_segments: u16,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Trust this PEM CA certificate for https:// (besides the public roots).
    #[arg(long, env = "STEADYCAST_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 7.0 * 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 604800]")),
    }
}

/// A request that takes longer than this failed (a player would have given up as well).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger bodies are refused: far above any segment, and the bound on memory per download.
const MAX_BODY: usize = 64 << 20;
/// Jobs queued between a rendition's reloader and its downloader.
const JOB_QUEUE: usize = 256;
/// Wait before reloading a manifest whose fetch failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Runs verify, prints the report, and fails when the stream violated the steady state.
pub async fn main(args: VerifyArgs) -> anyhow::Result<()> {
    let report = run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if report.passed() {
        Ok(())
    } else {
        anyhow::bail!(
            "verify: {} violation(s) of the steady state",
            report.violations
        )
    }
}

#[derive(Clone)]
struct Shell {
    client: reqwest::Client,
    checker: Arc<Mutex<Checker>>,
    start: Instant,
}

impl Shell {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn checker(&self) -> MutexGuard<'_, Checker> {
        // Nothing panics while holding it; if something did, the findings are still good.
        self.checker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// GET `url`: the whole body on 200, at most [`MAX_BODY`] bytes.
    async fn get(&self, url: &Url) -> Result<Bytes, FetchError> {
        let failed = |e: reqwest::Error| FetchError::Failed(e.without_url().to_string());
        let mut response = self.client.get(url.clone()).send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::Failed(format!(
                    "body larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Fetches one job: its init segment first if not fetched yet, then the segment.
    async fn download(&self, base: &Url, job: &Job) {
        let init = job.init_uri.as_deref();
        let init = init.filter(|i| self.checker().needs_init(&job.rendition, i));
        if let Some(init) = init {
            match self.fetch(base, init).await {
                Ok(bytes) => self
                    .checker()
                    .on_init(&job.rendition, init, &bytes, self.now()),
                Err(e) => self
                    .checker()
                    .on_fetch_error(&job.rendition, init, e, self.now()),
            }
        }
        match self.fetch(base, &job.uri).await {
            // The bytes are checked and dropped here: memory stays at one segment per task.
            Ok(bytes) => self
                .checker()
                .on_segment(&job.rendition, &job.uri, &bytes, self.now()),
            Err(e) => self
                .checker()
                .on_fetch_error(&job.rendition, &job.uri, e, self.now()),
        }
    }

    async fn fetch(&self, base: &Url, uri: &str) -> Result<Bytes, FetchError> {
        let url = base
            .join(uri)
            .map_err(|e| FetchError::Failed(format!("not a URL: {e}")))?;
        self.get(&url).await
    }
}

/// Watches `args.url` for `args.seconds` and returns the report.
pub async fn run(args: &VerifyArgs) -> anyhow::Result<Report> {
    let url = Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("{url}: only http:// and https:// URLs can be verified");
    }
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(path) = &args.ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(ca);
    }
    let client = builder.build().context("building the HTTP client")?;
    let checker = Checker::new(Options {
        buffer_segments: usize::from(args.buffer_segments),
        renditions: args.renditions.clone(),
    });
    let shell = Shell {
        client,
        checker: Arc::new(Mutex::new(checker)),
        start: Instant::now(),
    };
    let deadline = shell.start + Duration::from_secs_f64(args.seconds);
    let mut tasks = JoinSet::new();

    match shell.get(&url).await {
        Err(e) => shell
            .checker()
            .on_fetch_error("entry", url.as_str(), e, shell.now()),
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            if text.trim_start().starts_with("#EXTM3U") {
                for (name, playlist) in hls_renditions(&shell, &url, &text, &args.renditions)? {
                    tasks.spawn(hls_rendition(shell.clone(), name, playlist));
                }
            } else if text.contains("<MPD") {
                tasks.spawn(dash(shell.clone(), url.clone()));
            } else {
                let message = "neither an HLS playlist nor a DASH MPD".to_string();
                shell
                    .checker()
                    .record(ErrorKind::BadManifest, "entry", shell.now(), message);
            }
        }
    }
    if !tasks.is_empty() {
        tokio::time::sleep_until(deadline).await;
    }
    tasks.abort_all();
    let now = shell.now();
    Ok(shell.checker().report(url.as_str(), now))
}

/// The media playlists to watch: the multivariant playlist's (filtered by `--rendition`), or
/// the entry URL itself when it is a media playlist.
fn hls_renditions(
    shell: &Shell,
    url: &Url,
    text: &str,
    wanted: &[String],
) -> anyhow::Result<Vec<(String, Url)>> {
    let all = match hls::parse_entry(text) {
        Ok(HlsEntry::Multivariant(list)) => list
            .into_iter()
            .filter_map(|r| Some((r.name, url.join(&r.uri).ok()?)))
            .collect::<Vec<_>>(),
        Ok(HlsEntry::Media) => vec![(hls::rendition_name(url.path()), url.clone())],
        Err(e) => {
            shell
                .checker()
                .record(ErrorKind::BadManifest, "entry", shell.now(), e);
            return Ok(Vec::new());
        }
    };
    if let Some(missing) = wanted.iter().find(|w| !all.iter().any(|(n, _)| n == *w)) {
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        anyhow::bail!(
            "no rendition {missing:?} in {url}; it has: {}",
            names.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
        .collect())
}

/// One HLS rendition: reload the media playlist at the RFC 8216 cadence, download each new
/// segment once, in order.
async fn hls_rendition(shell: Shell, name: String, url: Url) {
    let (tx, mut rx) = mpsc::channel::<Job>(JOB_QUEUE);
    let reloader = async {
        loop {
            let began = Instant::now();
            let after = match shell.get(&url).await {
                Ok(body) => {
                    let text = String::from_utf8_lossy(&body);
                    let update = shell.checker().on_playlist(&name, &text, shell.now());
                    for job in update.jobs {
                        if tx.send(job).await.is_err() {
                            return;
                        }
                    }
                    update.reload_after
                }
                Err(e) => {
                    shell
                        .checker()
                        .on_fetch_error(&name, url.as_str(), e, shell.now());
                    RETRY_AFTER
                }
            };
            tokio::time::sleep_until(began + after).await;
        }
    };
    let downloader = async {
        while let Some(job) = rx.recv().await {
            shell.download(&url, &job).await;
        }
    };
    tokio::join!(reloader, downloader);
}

/// DASH: one reloader for the MPD at `minimumUpdatePeriod`, one downloader per Representation.
async fn dash(shell: Shell, url: Url) {
    let mut downloaders: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
    // Dropped (and so aborted) with this task.
    let mut tasks = JoinSet::new();
    loop {
        let began = Instant::now();
        let after = match shell.get(&url).await {
            Ok(body) => {
                let text = String::from_utf8_lossy(&body);
                let update = shell.checker().on_mpd(&text, shell.now());
                for job in update.jobs {
                    let tx = downloaders.entry(job.rendition.clone()).or_insert_with(|| {
                        let (tx, mut rx) = mpsc::channel::<Job>(JOB_QUEUE);
                        let (shell, url) = (shell.clone(), url.clone());
                        tasks.spawn(async move {
                            while let Some(job) = rx.recv().await {
                                shell.download(&url, &job).await;
                            }
                        });
                        tx
                    });
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
                update.reload_after
            }
            Err(e) => {
                shell
                    .checker()
                    .on_fetch_error("mpd", url.as_str(), e, shell.now());
                RETRY_AFTER
            }
        };
        tokio::time::sleep_until(began + after).await;
    }
}
