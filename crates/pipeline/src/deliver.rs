//! Delivery of a pipeline's segments to the packagers by HTTP PUT (the boundary that later puts
//! packagers on other machines). One bounded queue and worker per packager: a slow or dead
//! packager loses its own uploads and never stalls the encoder or the other packager.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use failover::cmsd;
use timeline::Feed;
use tokio::sync::{mpsc, watch};

use crate::fault::{Fault, Faults, damage};

/// Uploads waiting per packager; about a minute of a 4-rendition ladder at 2 s segments.
const QUEUE: usize = 128;
const ATTEMPTS: u32 = 3;
/// An upload not answered in this long is retried (a packager that fails waits no longer).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a pipeline delivers: the packager's base URL (`http://host:port`) and the channel's
/// ingest credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagerTarget {
    pub base_url: String,
    pub credential: String,
}

/// One object to PUT: `rendition/init.mp4` (no segment number) or `rendition/{n}.m4s`.
#[derive(Debug, Clone)]
pub struct Upload {
    pub rendition: String,
    pub body: Bytes,
    /// The segment number of a media segment; `None` for the CMAF header.
    pub segment: Option<u64>,
    /// The pipeline's quality score of a media segment, 0-100.
    pub quality: Option<u8>,
}

impl Upload {
    pub fn init(rendition: &str, body: Bytes) -> Self {
        Self {
            rendition: rendition.to_string(),
            body,
            segment: None,
            quality: None,
        }
    }

    pub fn segment(rendition: &str, n: u64, body: Bytes) -> Self {
        Self {
            rendition: rendition.to_string(),
            body,
            segment: Some(n),
            quality: None,
        }
    }

    /// The file name the packager takes it under.
    pub fn name(&self) -> String {
        match self.segment {
            Some(n) => format!("{n}.m4s"),
            None => "init.mp4".to_string(),
        }
    }
}

/// The packagers a pipeline delivers to, which may change while it runs (a packager node
/// joins a cluster, or comes back at another address).
pub type PackagerTargets = watch::Receiver<Vec<PackagerTarget>>;

/// One queue per packager, by base URL.
type Queues = Vec<(String, mpsc::Sender<Upload>)>;

#[derive(Clone)]
pub struct Delivery {
    queues: Arc<Mutex<Queues>>,
    channel: String,
    feed: Feed,
}

impl Delivery {
    /// Starts a worker per packager, and follows `targets`: a new packager gets a worker, a
    /// gone one's worker ends with its queue.
    pub fn start(
        mut targets: PackagerTargets,
        channel: &str,
        feed: Feed,
        faults: Arc<Faults>,
        lease_epoch: Option<u64>,
        client: reqwest::Client,
    ) -> Self {
        let delivery = Self {
            queues: Arc::default(),
            channel: channel.to_string(),
            feed,
        };
        let shared = Arc::new(Shared {
            client,
            channel: channel.to_string(),
            feed,
            faults,
            lease_epoch,
        });
        let queues = Arc::downgrade(&delivery.queues);
        delivery.follow(&targets.borrow_and_update(), &shared);
        tokio::spawn(async move {
            while targets.changed().await.is_ok() {
                let Some(queues) = queues.upgrade() else {
                    return;
                };
                let current = targets.borrow_and_update().clone();
                let delivery = Delivery {
                    queues,
                    channel: shared.channel.clone(),
                    feed,
                };
                delivery.follow(&current, &shared);
            }
        });
        delivery
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the workers those of `targets`.
    fn follow(&self, targets: &[PackagerTarget], shared: &Arc<Shared>) {
        let mut queues = self.lock();
        queues.retain(|(url, _)| targets.iter().any(|t| &t.base_url == url));
        for target in targets {
            if queues.iter().any(|(url, _)| url == &target.base_url) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let worker = Worker {
                target: target.clone(),
                shared: shared.clone(),
            };
            tokio::spawn(worker.run(rx));
            queues.push((target.base_url.clone(), tx));
        }
    }

    /// Queues `upload` for every packager; a full queue drops it for that packager (counted).
    pub fn send(&self, upload: Upload) {
        for (_, queue) in self.lock().iter() {
            if queue.try_send(upload.clone()).is_err() {
                metrics::counter!("steadycast_delivery_dropped_total",
                    "channel" => self.channel.clone(), "feed" => self.feed.as_str())
                .increment(1);
                tracing::warn!(channel = %self.channel, feed = %self.feed,
                    rendition = %upload.rendition, name = %upload.name(),
                    "packager queue full; upload dropped");
            }
        }
    }
}

/// What every worker of a pipeline's delivery shares.
struct Shared {
    client: reqwest::Client,
    channel: String,
    feed: Feed,
    faults: Arc<Faults>,
    /// In a cluster, the epoch of the lease this pipeline runs under: the packager lists
    /// nothing from an older one.
    lease_epoch: Option<u64>,
}

struct Worker {
    target: PackagerTarget,
    shared: Arc<Shared>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Upload>) {
        while let Some(upload) = rx.recv().await {
            self.put(&upload).await;
        }
    }

    async fn put(&self, upload: &Upload) {
        let url = format!(
            "{}/ingest/{}/{}/{}/{}",
            self.target.base_url,
            self.shared.channel,
            self.shared.feed,
            upload.rendition,
            upload.name()
        );
        let labels = [
            ("channel", self.shared.channel.clone()),
            ("feed", self.shared.feed.as_str().to_string()),
        ];
        // The digest is of what the pipeline made; a fault damages the bytes after it, as a
        // network would.
        let digest = media::digest::content_digest(&upload.body);
        let body = match self.shared.faults.current() {
            Some(Fault::Delay { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                upload.body.clone()
            }
            Some(fault) if upload.segment.is_some() => damage(&fault, &upload.body),
            _ => upload.body.clone(),
        };
        let quality = upload.quality.map(|score| {
            let video = upload.rendition != channel::AUDIO_RENDITION;
            cmsd::static_value(video, score)
        });
        for attempt in 1..=ATTEMPTS {
            let mut put = self
                .shared
                .client
                .put(&url)
                .timeout(UPLOAD_TIMEOUT)
                .bearer_auth(&self.target.credential)
                .header("content-type", "video/mp4")
                .header("content-digest", &digest);
            if let Some(quality) = &quality {
                put = put.header(cmsd::HEADER, quality);
            }
            if let Some(epoch) = self.shared.lease_epoch {
                put = put.header(channel::LEASE_EPOCH_HEADER, epoch);
            }
            let sent = put.body(body.clone()).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("steadycast_delivery_uploads_total", &labels).increment(1);
                    return;
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let why = r.text().await.unwrap_or_default();
                    tracing::warn!(%url, %status, %why, "packager refused upload");
                    break;
                }
                Ok(r) => tracing::warn!(%url, status = %r.status(), attempt, "packager error"),
                Err(e) => tracing::warn!(%url, error = %e, attempt, "packager unreachable"),
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        metrics::counter!("steadycast_delivery_failures_total", &labels).increment(1);
    }
}
