//! One encoding pipeline (a or b) of a channel. Each of its inputs (a primary, maybe a backup)
//! is decoded onto the epoch grid ([`decode`]); a switcher takes every frame slot from the
//! input the failover policy picks, or fills it ([`switcher`]); supervised encoders turn that
//! one continuous raw stream into CMAF segments for every rendition ([`encoder`]), delivered
//! to the packagers with their quality score ([`deliver`]). A crash, hang, input loss or
//! timestamp jump is handled inside; nothing here can stop ingest, the other pipeline or the
//! origin.

mod command;
mod decode;
mod deliver;
mod encoder;
mod fault;
mod lock;
mod process;
mod segmenting;
mod status;
mod switcher;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use channel::{ChannelSpec, EventKind, Events};
use failover::QualityBook;
use ingest::InputPort;
use timeline::{Feed, SegmentGrid};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use command::{Canvas, DecoderPlan, EncoderPlan};
pub use deliver::{Delivery, PackagerTarget, PackagerTargets, Upload};
pub use fault::{Fault, Faults};
pub use lock::{Lock, LockError, SessionHead};
pub use segmenting::{Segmenting, SegmentingError};
pub use status::{InputState, Phase, PipelineState, PipelineStatus};

use decode::InputDecoder;
use encoder::{EncoderSupervisor, Kind};
use switcher::{Switcher, Tap};

/// What a pipeline needs to run.
pub struct PipelineConfig {
    pub spec: ChannelSpec,
    pub feed: Feed,
    /// The primary input, then the backup if there is one.
    pub inputs: Vec<Arc<InputPort>>,
    /// Where to deliver; followed while the pipeline runs.
    pub packagers: PackagerTargets,
    /// An encoder that takes input but writes nothing for this long is restarted.
    pub hang_timeout: Duration,
    pub status: Arc<PipelineStatus>,
    pub events: Events,
    /// Faults a chaos run injects into this pipeline's delivery.
    pub faults: Arc<Faults>,
    /// In a cluster, the epoch of the lease this pipeline runs under, sent with every upload.
    pub lease_epoch: Option<u64>,
    /// The client uploads go out with: the node's, which trusts the CA of its cluster's
    /// certificates.
    pub client: reqwest::Client,
}

pub(crate) struct PipelineCtx {
    spec: ChannelSpec,
    feed: Feed,
    grid: SegmentGrid,
    canvas: Canvas,
    /// How far behind real time the switcher takes its slots, as configured.
    latency: Duration,
    /// The switcher's latency now (it raises it for late inputs), in milliseconds.
    switcher_latency_ms: AtomicU64,
    delivery: Delivery,
    hang_timeout: Duration,
    status: Arc<PipelineStatus>,
    events: Events,
    faults: Arc<Faults>,
}

impl PipelineCtx {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("channel", self.spec.id.clone()),
            ("feed", self.feed.as_str().to_string()),
        ]
    }

    fn grid_duration(&self) -> Duration {
        Duration::from_secs_f64(self.grid.duration_secs())
    }

    fn emit(&self, kind: EventKind, detail: String) {
        self.events.emit(
            &self.spec.id,
            &format!("pipeline {}", self.feed),
            kind,
            detail,
        );
    }
}

/// Segments whose quality the switcher keeps for the encoders' output: far more than the
/// encoders lag behind it.
const QUALITY_BOOK: usize = 64;

/// Runs the pipeline until its input ports close. Abort the task to stop it.
pub async fn run(config: PipelineConfig) -> Result<(), String> {
    let grid = config.spec.grid()?;
    let latency = Duration::from_millis(config.spec.failover.latency_ms.into());
    let ctx = Arc::new(PipelineCtx {
        delivery: Delivery::start(
            config.packagers,
            &config.spec.id,
            config.feed,
            config.faults.clone(),
            config.lease_epoch,
            config.client.clone(),
        ),
        canvas: Canvas::of(&config.spec),
        spec: config.spec,
        feed: config.feed,
        grid,
        latency,
        switcher_latency_ms: AtomicU64::new(latency.as_millis() as u64),
        hang_timeout: config.hang_timeout,
        status: config.status,
        events: config.events,
        faults: config.faults,
    });
    ctx.status.update(|s| {
        s.inputs = config
            .inputs
            .iter()
            .enumerate()
            .map(|(i, port)| InputState {
                name: port.id().input.clone(),
                role: if i == 0 { "primary" } else { "backup" },
                ..InputState::default()
            })
            .collect();
    });
    // Room for a decoder to run a second ahead of the switcher, beyond the latency.
    let ahead = latency + Duration::from_secs(1);
    let pictures = ((ahead.as_secs_f64() * grid.rate().as_f64()) as usize).max(8);
    let chunks = (ahead.as_millis() as usize / 20).max(16);
    let mut decoders = JoinSet::new();
    let mut taps = Vec::new();
    for (index, port) in config.inputs.into_iter().enumerate() {
        let (video, video_rx) = mpsc::channel(pictures);
        let (audio, audio_rx) = mpsc::channel(chunks);
        taps.push(Tap::new(port.id().input.clone(), video_rx, audio_rx));
        decoders.spawn(
            InputDecoder {
                ctx: ctx.clone(),
                index,
                port,
                video,
                audio,
            }
            .run(),
        );
    }
    let book = Arc::new(Mutex::new(QualityBook::new(QUALITY_BOOK)));
    // Two segments of slots: an encoder restarting waits for the next boundary meanwhile.
    let queue = 2 * grid.frames() as usize;
    let (video_out, video_slots) = mpsc::channel(queue);
    let (audio_out, audio_slots) = mpsc::channel(queue);
    let mut workers = JoinSet::new();
    for (kind, slots) in [(Kind::Video, video_slots), (Kind::Audio, audio_slots)] {
        workers.spawn(
            EncoderSupervisor {
                ctx: ctx.clone(),
                kind,
                slots,
                book: book.clone(),
                skip_bytes: 0,
            }
            .run(),
        );
    }
    let slate = slate(&ctx).await;
    workers.spawn(
        Switcher {
            ctx: ctx.clone(),
            taps,
            book,
            video_out,
            audio_out,
            slate,
        }
        .run(),
    );
    while decoders.join_next().await.is_some() {}
    Ok(())
}

/// The channel's slate as one raw picture on the canvas; black stands in if it cannot be read.
async fn slate(ctx: &PipelineCtx) -> Option<Bytes> {
    let path = ctx.spec.failover.fill.slate.as_deref()?;
    let Canvas { width, height } = ctx.canvas;
    let filters = format!(
        "scale={width}:{height}:force_original_aspect_ratio=decrease,\
         pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p"
    );
    let run = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i", path])
        .args([
            "-vf",
            &filters,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "pipe:1",
        ])
        .kill_on_drop(true)
        .output();
    let why = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.stdout.len() == ctx.canvas.frame_bytes() => {
            return Some(Bytes::from(out.stdout));
        }
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "ffmpeg took over 10 s".to_string(),
    };
    tracing::error!(channel = %ctx.spec.id, path, %why, "slate unreadable; filling with black");
    None
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
