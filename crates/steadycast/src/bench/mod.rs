//! `steadycast bench`: release-build figures for the README. It encodes a real ladder with the
//! pipeline's own ffmpeg command, then measures the segmenter on that output, the packager
//! storing it, and the origin answering playlists, MPDs and segments over loopback HTTP.
//! Timings are printed, never asserted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use ingest::Container;
use origin::Origin;
use pipeline::{Canvas, DecoderPlan, EncoderPlan, Segmenting, Upload};
use store::{BlobStore, Catalog, DirStore};

#[derive(Args)]
pub struct BenchArgs {
    /// Seconds of media to encode for the measurements.
    #[arg(long, default_value_t = 30)]
    pub media_seconds: u32,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent HTTP clients in the origin measurements.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Days of segments to list in the catalog for the DVR measurements (14 for the two-week
    /// figures: several minutes).
    #[arg(long, default_value_t = 1)]
    pub dvr_days: u32,
    /// Measure on this catalog (`postgres://…`, an empty database) instead of a fresh SQLite.
    #[arg(long)]
    pub catalog: Option<String>,
    /// Measure a running cluster instead (`make cluster`), through this node's API: visibility
    /// on every origin, the shield's collapse, CPU and memory per node.
    #[arg(long)]
    pub cluster: Option<String>,
    /// With `--cluster`: the channel.
    #[arg(long, default_value = "demo")]
    pub channel: String,
    /// With `--cluster`: the shield viewers play through (none: no viewers).
    #[arg(long)]
    pub shield: Option<String>,
    /// With `--cluster`: concurrent viewers through the shield.
    #[arg(long, default_value_t = 50)]
    pub viewers: usize,
    /// With `--cluster`: how long to measure.
    #[arg(long, default_value_t = 60)]
    pub cluster_seconds: u64,
    /// With `--cluster`: a read token for the API.
    #[command(flatten)]
    pub token: crate::cli::TokenArg,
}

mod cluster;
mod dvr;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(api) = &args.cluster {
        return cluster::run(&args, api).await;
    }
    let dir = tempfile::tempdir()?;
    // The DVR measurements reach back days: keep them inside the startover window.
    let spec = channel::ChannelSpec {
        startover_window_seconds: (args.dvr_days + 1) * 86_400,
        ..crate::demo::channel()
    };
    let grid = spec.grid().map_err(anyhow::Error::msg)?;
    println!(
        "steadycast bench: demo ladder {} (video), {} s of media",
        ladder_names(&spec),
        args.media_seconds
    );
    let encoded = encode(dir.path(), &spec, args.media_seconds).await?;

    // Segmenter: ffmpeg's fragmented MP4 in 64 KiB reads, as the pipeline reads its stdout.
    let started = Instant::now();
    let (mut rounds, mut uploads) = (0u64, Vec::new());
    let names = ladder(&spec);
    while rounds == 0 || started.elapsed() < Duration::from_secs(args.seconds) {
        uploads.clear();
        let mut segmenting = Segmenting::new(names.clone(), grid);
        for chunk in encoded.chunks(64 * 1024) {
            segmenting.push(chunk, &mut |u| uploads.push(u))?;
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let megabytes = (encoded.len() as u64 * rounds) as f64 / 1e6;
    println!(
        "segmenter: {:.0} MB/s of fMP4 cut ({} uploads per pass, {rounds} passes of {:.1} MB)",
        megabytes / secs,
        uploads.len(),
        encoded.len() as f64 / 1e6
    );

    let catalog = match &args.catalog {
        Some(url) => Catalog::open(url).await?,
        None => Catalog::open_sqlite(&dir.path().join("catalog.db")).await?,
    };
    let blobs = BlobStore::from(DirStore::open(dir.path().join("segments")).await?);
    let base = serve_origin(&catalog, &blobs, &spec, Default::default()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    let started = Instant::now();
    for upload in &uploads {
        put(&client, &base, upload).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "packager: {:.0} uploads/s stored and listed (one at a time, fsync each: {} in {secs:.2} s)",
        uploads.len() as f64 / secs,
        uploads.len()
    );
    // The same channel with signed URLs, on a second origin over the same store and catalog:
    // every request checks an HMAC token.
    let key = "bench-playback-key-0123456789abcdef";
    let keys = access::PlaybackKeys::parse([("k1", key)]).map_err(anyhow::Error::msg)?;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let token = keys
        .sign("k1", "/live/demo/", expires, None)
        .map_err(anyhow::Error::msg)?;
    let mut signed_spec = spec.clone();
    signed_spec.playback.signed_urls = true;
    let signed_base = serve_origin(&catalog, &blobs, &signed_spec, keys).await?;

    let segment = uploads
        .iter()
        .rev()
        .find(|u| u.rendition == "360p" && u.segment.is_some())
        .context("no 360p segment")?;
    let targets = [
        ("HLS media playlist", "/live/demo/360p.m3u8".to_string()),
        ("DASH MPD", "/live/demo/manifest.mpd".to_string()),
        (
            "360p segment",
            format!("/live/demo/360p/{}", segment.name()),
        ),
    ];
    for (what, path) in targets {
        let (rate, p50, p99) = load(&client, &format!("{base}{path}"), &args).await?;
        println!(
            "origin: {what}: {rate:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} clients, loopback, \
             load generator in the same process)",
            p50 * 1e3,
            p99 * 1e3,
            args.concurrency
        );
        let signed = format!("{signed_base}{path}?st={token}");
        let (rate, p50, p99) = load(&client, &signed, &args).await?;
        println!(
            "origin, signed URLs: {what}: {rate:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
            p50 * 1e3,
            p99 * 1e3
        );
    }
    dvr::run(&catalog, &blobs, &spec, args.dvr_days).await
}

/// An origin for `spec` over `catalog` and `blobs`, with its packager, on a loopback port;
/// returns its base URL.
async fn serve_origin(
    catalog: &Catalog,
    blobs: &BlobStore,
    spec: &channel::ChannelSpec,
    keys: access::PlaybackKeys,
) -> anyhow::Result<String> {
    let origin = Origin::new(
        catalog.clone(),
        blobs.clone(),
        channel::Events::default(),
        None,
        origin::ViewerAccess {
            playback_keys: keys,
            ..Default::default()
        },
    );
    origin
        .add_channel(spec.clone(), "bench".to_string())
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = origin.playback_router().merge(origin.ingest_router());
    tokio::spawn(crate::http::serve(listener, app, None));
    Ok(base)
}

fn ladder(spec: &channel::ChannelSpec) -> Vec<String> {
    spec.ladder.iter().map(|r| r.name.clone()).collect()
}

fn ladder_names(spec: &channel::ChannelSpec) -> String {
    spec.ladder
        .iter()
        .map(|r| format!("{}x{}", r.width, r.height))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Encodes `seconds` of the test pattern with the pipeline's own command (file in, file out).
async fn encode(dir: &Path, spec: &channel::ChannelSpec, seconds: u32) -> anyhow::Result<Bytes> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let source = dir.join("source.ts");
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            &seconds.to_string(),
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "30",
            "-c:a",
            "aac",
        ])
        .args([
            "-output_ts_offset",
            &now.as_secs().to_string(),
            "-f",
            "mpegts",
            "-y",
        ])
        .arg(&source)
        .status()
        .await
        .context("running ffmpeg (is it installed?)")?;
    if !status.success() {
        bail!("ffmpeg could not make the source");
    }
    let head = std::fs::read(&source)?;
    let pts = media::ts::first_pts(&head)?.context("source without timestamps")?;
    let (_, offset_us) = timeline::lock_mpegts(pts, now);
    let grid = spec.grid().map_err(anyhow::Error::msg)?;
    let canvas = Canvas::of(spec);
    let start_slot = grid.first_slot(grid.segment_at(now) + 1);
    // The pipeline's two stages over files: decode onto the grid, then encode the ladder.
    let decoder = DecoderPlan {
        container: Container::MpegTs,
        offset_us,
        rate: grid.rate(),
        canvas,
        audio: &spec.audio,
        start_slot,
    };
    let raw = dir.join("pictures.yuv");
    run_ffmpeg(decoder.video_args(), &source, &raw).await?;
    let encoder = EncoderPlan {
        spec,
        grid,
        canvas,
        start_slot,
    };
    let output = dir.join("ladder.mp4");
    run_ffmpeg(encoder.video_args(), &raw, &output).await?;
    Ok(Bytes::from(std::fs::read(&output)?))
}

/// Runs one of the pipeline's ffmpeg commands with files in place of its pipes.
async fn run_ffmpeg(args: Vec<String>, input: &Path, output: &Path) -> anyhow::Result<()> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.as_str() {
            "pipe:0" => input.display().to_string(),
            "pipe:1" => output.display().to_string(),
            _ => a,
        })
        .collect();
    let status = tokio::process::Command::new("ffmpeg")
        .arg("-y")
        .args(&args)
        .status()
        .await?;
    if !status.success() {
        bail!("the pipeline's ffmpeg command failed");
    }
    Ok(())
}

async fn put(client: &reqwest::Client, base: &str, upload: &Upload) -> anyhow::Result<()> {
    let url = format!(
        "{base}/ingest/demo/a/{}/{}",
        upload.rendition,
        upload.name()
    );
    let response = client
        .put(&url)
        .bearer_auth("bench")
        .body(upload.body.clone())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("PUT {url}: {}", response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// `concurrency` clients GET `url` in a loop for `seconds`: requests/s, p50 and p99 latency.
async fn load(
    client: &reqwest::Client,
    url: &str,
    args: &BenchArgs,
) -> anyhow::Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let url: Arc<str> = url.into();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match client.get(&*url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    return Err(anyhow::anyhow!("GET {url} failed"));
                }
                latencies.push(t.elapsed().as_secs_f64());
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    Ok((
        all.len() as f64 / args.seconds as f64,
        at(0.5).unwrap_or(0.0),
        at(0.99).unwrap_or(0.0),
    ))
}
