//! A node: ingest listeners, pipelines, the packager and the origin, in one process. On the
//! embedded store (SQLite + a directory) it runs both pipelines of every channel itself; on a
//! shared PostgreSQL catalog it is one node of a cluster ([`cluster`]): its roles say what it
//! runs, and pipelines go wherever the leases place them.

mod cluster;
mod keys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use channel::{ChannelSpec, Event, Events, InputSpec};
use ingest::InputRegistry;
use origin::{InCluster, Origin};
use pipeline::{Faults, PackagerTarget, PipelineConfig, PipelineState, PipelineStatus};
use rand::Rng;
use store::{BlobStore, Catalog, DirStore, S3Store};
use timeline::Feed;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BlobsConfig, ServerConfig};

/// A channel's pipelines running on this node: both in a single node, those whose leases it
/// holds in a cluster.
#[derive(Default)]
struct RunningChannel {
    pipelines: Vec<RunningPipeline>,
}

struct RunningPipeline {
    feed: Feed,
    status: Arc<PipelineStatus>,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
    /// Where it delivers; a cluster's node keeps it to the packager nodes alive.
    packagers: tokio::sync::watch::Sender<Vec<PackagerTarget>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid channel: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("channel `{0}` already exists")]
    Exists(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Input(#[from] ingest::RegistryError),
    #[error("{0}")]
    Origin(#[from] origin::OriginError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
}

pub struct Node {
    pub origin: Arc<Origin>,
    pub catalog: Catalog,
    pub inputs: Arc<InputRegistry>,
    pub server: ServerConfig,
    /// The HTTP address this node answers on.
    pub http: SocketAddr,
    /// This node in the catalog: its id, roles, and the URL others reach it at (where its
    /// own pipelines deliver in a single node).
    pub info: store::NodeInfo,
    running: Mutex<HashMap<String, RunningChannel>>,
    pub events: Events,
    pub cancel: CancellationToken,
    /// Set once the configured and stored channels are started: `/readyz` answers 503 before,
    /// so a load balancer does not send viewers to a node that does not know their channel yet.
    started: AtomicBool,
    /// The lease keeper (a cluster's pipeline node), awaited at shutdown: it gives the leases
    /// up, so that other nodes take the pipelines over at once rather than at expiry.
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// What this node's own requests (deliveries, relays) go out with.
    client: reqwest::Client,
    /// The TLS certificate HTTPS and RTMPS serve (reloaded when its files change).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The ingest nodes this node's inputs are relayed from (a cluster's pipeline node).
    ingest_nodes: tokio::sync::watch::Sender<Vec<String>>,
}

impl Node {
    /// Opens the store and starts the ingest listeners. Channels start with [`Node::start_channel`].
    pub async fn open(server: ServerConfig, http: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let problems = server.cluster_problems();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        std::fs::create_dir_all(&server.data_dir)
            .with_context(|| format!("creating data directory {}", server.data_dir.display()))?;
        let url = server.catalog_url();
        let catalog = Catalog::open(&url)
            .await
            .with_context(|| format!("opening the catalog {}", store::redact(&url)))?;
        let blobs: BlobStore = match &server.blobs {
            BlobsConfig::Dir => DirStore::open(server.data_dir.join("segments"))
                .await?
                .into(),
            BlobsConfig::S3(s3) => S3Store::open(s3)?.into(),
        };
        tracing::info!(catalog = %store::redact(&url), blobs = %blobs.describe(), "store open");
        let events = event_log(catalog.clone());
        let clustered = server.is_clustered();
        let packager = server.has_role(::cluster::ROLE_PACKAGER);
        let in_cluster = server
            .cluster_secret
            .clone()
            .filter(|_| clustered)
            .map(|credential| InCluster {
                settle: Duration::from_millis(server.listing_settle_ms),
                credential,
            });
        let playback_keys = access::PlaybackKeys::parse(
            server
                .playback_keys
                .iter()
                .map(|(id, secret)| (id.as_str(), secret.expose())),
        )
        .map_err(anyhow::Error::msg)?;
        let viewers = origin::ViewerAccess {
            playback_keys,
            trusted_proxies: server.trusted_proxies.clone(),
        };
        let origin = Origin::new(catalog.clone(), blobs, events.clone(), in_cluster, viewers);
        let ingest = server.has_role(::cluster::ROLE_INGEST);
        let client = crate::tls::internal_client(server.trust_ca.as_deref())?;
        let (ingest_nodes, relay_from) = tokio::sync::watch::channel(Vec::new());
        let inputs = InputRegistry::with_events(events.clone());
        let inputs = match server.cluster_secret.clone() {
            Some(secret) if clustered && server.has_role(::cluster::ROLE_PIPELINE) => {
                let relay = cluster::relay_from(relay_from, secret, client.clone());
                inputs.relaying(relay, !ingest)
            }
            _ => inputs,
        };
        let inputs = Arc::new(inputs);
        // Before anything is served or written: a crash may have left the two apart. In a
        // cluster other packagers are writing meanwhile: what no row lists yet may be theirs.
        if packager {
            for row in catalog.channels().await? {
                let in_flight_from = clustered.then(|| cluster::in_flight_from(&row.spec));
                origin
                    .repair(&row.id, in_flight_from)
                    .await
                    .with_context(|| format!("repairing channel `{}`", row.id))?;
            }
        }
        let cancel = CancellationToken::new();
        tokio::spawn(sweep_retention(
            origin.clone(),
            server.retention_interval_seconds,
            cancel.clone(),
        ));
        if let Some(addr) = server.rtmp_listen.filter(|_| ingest) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the RTMP listener on {addr}"))?;
            tracing::info!(%addr, "RTMP listener up");
            tokio::spawn(ingest::rtmp::serve(
                listener,
                inputs.clone(),
                cancel.clone(),
            ));
        }
        let tls = server.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        if let Some(addr) = server.rtmps_listen.filter(|_| ingest) {
            let acceptor = tls
                .clone()
                .context("rtmps_listen needs the certificate of `tls`")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the RTMPS listener on {addr}"))?;
            tracing::info!(%addr, "RTMPS listener up");
            tokio::spawn(ingest::rtmp::serve_tls(
                listener,
                inputs.clone(),
                cancel.clone(),
                acceptor,
            ));
        }
        if let Some(addr) = server.srt_listen.filter(|_| ingest) {
            let srt = ingest::srt::serve(addr, inputs.clone(), cancel.clone());
            tokio::spawn(async move {
                if let Err(e) = srt.await {
                    tracing::error!(%addr, error = %e, "SRT listener failed");
                }
            });
        }
        let info = cluster::node_info(&server, http)?;
        catalog
            .heartbeat(&info, &[])
            .await
            .context("registering the node in the catalog")?;
        tracing::info!(node = %info.id, roles = %info.roles, url = %info.url, "node registered");
        let node = Arc::new(Self {
            origin,
            catalog,
            inputs,
            server,
            http,
            info,
            running: Mutex::new(HashMap::new()),
            events,
            cancel,
            started: AtomicBool::new(false),
            keeper: Mutex::new(None),
            ingest_nodes,
            client,
            tls,
        });
        node.spawn_cluster_tasks();
        Ok(node)
    }

    /// Validates, completes (credential), persists and starts a new channel.
    pub async fn create_channel(&self, mut spec: ChannelSpec) -> Result<ChannelSpec, NodeError> {
        spec.validate().map_err(NodeError::Invalid)?;
        self.check_playback(&spec)?;
        if self.catalog.channel(&spec.id).await?.is_some() {
            return Err(NodeError::Exists(spec.id));
        }
        if spec.ingest_credential.is_none() {
            spec.ingest_credential = Some(new_secret());
        }
        self.start_channel(&spec).await?;
        let json = serde_json::to_string(&spec).unwrap_or_default();
        if let Err(e) = self.catalog.put_channel(&spec.id, &json).await {
            self.stop_channel(&spec.id);
            return Err(e.into());
        }
        tracing::info!(channel = %spec.id, "channel created");
        Ok(spec)
    }

    /// Makes a channel from the config file or the demo run; updates the stored definition.
    pub async fn ensure_channel(&self, mut spec: ChannelSpec) -> Result<ChannelSpec, NodeError> {
        spec.validate().map_err(NodeError::Invalid)?;
        self.check_playback(&spec)?;
        if spec.ingest_credential.is_none() {
            let stored = self.catalog.channel(&spec.id).await?;
            let previous =
                stored.and_then(|row| serde_json::from_str::<ChannelSpec>(&row.spec).ok());
            spec.ingest_credential = Some(
                previous
                    .and_then(|p| p.ingest_credential)
                    .unwrap_or_else(new_secret),
            );
        }
        let json = serde_json::to_string(&spec).unwrap_or_default();
        self.catalog.put_channel(&spec.id, &json).await?;
        self.start_channel(&spec).await?;
        Ok(spec)
    }

    pub async fn delete_channel(&self, id: &str) -> Result<bool, NodeError> {
        let existed = self.catalog.delete_channel(id).await?;
        self.stop_channel(id);
        if existed {
            tracing::info!(channel = %id, "channel deleted");
        }
        Ok(existed)
    }

    /// Starts every channel stored in the catalog (a restart resumes them).
    pub async fn resume_stored_channels(&self) -> anyhow::Result<()> {
        for row in self.catalog.channels().await? {
            if self.is_running(&row.id) {
                continue;
            }
            match serde_json::from_str::<ChannelSpec>(&row.spec) {
                Ok(spec) => {
                    if let Err(e) = self.start_channel(&spec).await {
                        tracing::error!(channel = %row.id, error = %e, "cannot resume channel");
                    }
                }
                Err(e) => {
                    tracing::error!(channel = %row.id, error = %e, "stored channel unreadable")
                }
            }
        }
        Ok(())
    }

    /// Stops the node's tasks; a cluster's pipeline node first gives its leases up (within
    /// 3 s).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(keeper) = keeper {
            let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
        }
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.lock_running().contains_key(id)
    }

    async fn start_channel(&self, spec: &ChannelSpec) -> Result<(), NodeError> {
        if self.server.is_clustered() {
            return self.follow_channel(spec).await;
        }
        self.stop_channel(&spec.id);
        let credential = spec.ingest_credential.clone().unwrap_or_default();
        let mut ports = HashMap::new();
        for (name, input) in &spec.inputs {
            let allowed = spec.allowed_sources_of(name);
            match self
                .inputs
                .add_allowing(&spec.id, name, input.clone(), allowed)
            {
                Ok(port) => {
                    ports.insert(name.clone(), port);
                }
                Err(e) => {
                    self.inputs.remove_channel(&spec.id);
                    return Err(e.into());
                }
            }
        }
        if let Err(e) = self.apply_stream_keys(spec) {
            self.inputs.remove_channel(&spec.id);
            return Err(e);
        }
        if let Err(e) = self
            .origin
            .add_channel(spec.clone(), credential.clone())
            .await
        {
            self.inputs.remove_channel(&spec.id);
            return Err(e.into());
        }
        let packagers = vec![PackagerTarget {
            base_url: self.info.url.clone(),
            credential,
        }];
        let mut running = RunningChannel::default();
        for feed in Feed::BOTH {
            let inputs: Vec<_> = spec
                .inputs_of(feed)
                .into_iter()
                .filter_map(|name| ports.get(name).cloned())
                .collect();
            if !inputs.is_empty() {
                let pipeline = self.spawn_pipeline(spec, feed, inputs, packagers.clone(), None);
                running.pipelines.push(pipeline);
            }
        }
        self.lock_running().insert(spec.id.clone(), running);
        Ok(())
    }

    /// Starts pipeline `feed` of `spec`, delivering to `packagers`.
    fn spawn_pipeline(
        &self,
        spec: &ChannelSpec,
        feed: Feed,
        inputs: Vec<Arc<ingest::InputPort>>,
        packagers: Vec<PackagerTarget>,
        lease_epoch: Option<u64>,
    ) -> RunningPipeline {
        let (targets, packagers) = tokio::sync::watch::channel(packagers);
        let config = PipelineConfig {
            spec: spec.clone(),
            feed,
            inputs,
            packagers,
            hang_timeout: Duration::from_secs(self.server.hang_timeout_seconds),
            status: Arc::default(),
            events: self.events.clone(),
            faults: Arc::default(),
            lease_epoch,
            client: self.client.clone(),
        };
        let (status, faults) = (config.status.clone(), config.faults.clone());
        let id = spec.id.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pipeline::run(config).await {
                tracing::error!(channel = %id, %feed, error = %e, "pipeline stopped");
            }
        });
        RunningPipeline {
            feed,
            status,
            faults,
            task,
            packagers: targets,
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningChannel>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_channel(&self, id: &str) {
        let running = self.lock_running().remove(id);
        for pipeline in running.into_iter().flat_map(|r| r.pipelines) {
            pipeline.task.abort();
        }
        self.inputs.remove_channel(id);
        self.origin.remove_channel(id);
    }

    /// What each pipeline of a running channel is doing.
    pub fn pipelines(&self, id: &str) -> Vec<(Feed, PipelineState)> {
        let running = self.lock_running();
        let Some(channel) = running.get(id) else {
            return Vec::new();
        };
        channel
            .pipelines
            .iter()
            .map(|p| (p.feed, p.status.snapshot()))
            .collect()
    }

    /// The fault-injection handle of a running pipeline.
    pub fn faults(&self, id: &str, feed: Feed) -> Option<Arc<Faults>> {
        let running = self.lock_running();
        let channel = running.get(id)?;
        channel
            .pipelines
            .iter()
            .find(|p| p.feed == feed)
            .map(|p| p.faults.clone())
    }

    /// A channel with signed URLs needs keys to check them with (on every origin node).
    fn check_playback(&self, spec: &ChannelSpec) -> Result<(), NodeError> {
        if spec.playback.signed_urls && self.server.playback_keys.is_empty() {
            return Err(NodeError::Invalid(vec![
                "playback.signed_urls: this node has no playback_keys to check tokens with \
                 ([server] playback_keys or STEADYCAST_PLAYBACK_KEYS)"
                    .into(),
            ]));
        }
        Ok(())
    }

    /// The URLs a user gives their encoder, one per input (give it `spec.redacted()` for
    /// URLs without the stream keys).
    pub fn input_urls(&self, spec: &ChannelSpec) -> Vec<(String, String)> {
        spec.inputs
            .iter()
            .map(|(name, input)| {
                let url = match input {
                    InputSpec::Rtmp { stream_key } => match self.server.rtmp_listen {
                        Some(a) => format!("rtmp://{a}/live/{stream_key}"),
                        None => "(RTMP listener disabled)".to_string(),
                    },
                    InputSpec::Srt { passphrase } => match self.server.srt_listen {
                        Some(a) => {
                            let pass = if passphrase.is_some() {
                                "&passphrase=…"
                            } else {
                                ""
                            };
                            format!("srt://{a}?streamid={}/{name}{pass}", spec.id)
                        }
                        None => "(SRT listener disabled)".to_string(),
                    },
                    InputSpec::Udp {
                        bind, multicast, ..
                    } => match multicast {
                        Some(group) => format!("udp://{group}:{}", bind.port()),
                        None => format!("udp://{bind}"),
                    },
                    InputSpec::Tcp { bind } => format!("tcp://{bind}"),
                    InputSpec::TestPattern { .. } => "(built-in test pattern)".to_string(),
                };
                (name.clone(), url)
            })
            .collect()
    }
}

/// Removes segments past each channel's startover window, every `interval_seconds`.
async fn sweep_retention(origin: Arc<Origin>, interval_seconds: u64, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(interval_seconds.max(1)));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if let Err(e) = origin.sweep_retention(now).await {
            tracing::warn!(error = %e, "retention sweep failed; retrying next interval");
        }
    }
}

/// Events go to the log (target `steadycast::event`, JSON with `--log-format json`) and, through
/// a bounded queue, to the catalog; when the catalog falls behind, events are still logged.
fn event_log(catalog: Catalog) -> Events {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    tokio::spawn(async move {
        let mut written = 0u64;
        while let Some(event) = rx.recv().await {
            if let Err(e) = catalog.insert_event(&event).await {
                tracing::warn!(error = %e, "event not stored");
            }
            written += 1;
            if written.is_multiple_of(1000) {
                let week_ago = event.at_ms.saturating_sub(7 * 24 * 3600 * 1000);
                let _ = catalog.prune_events(week_ago).await;
            }
        }
    });
    Events::new(move |event| {
        tracing::info!(target: "steadycast::event", channel = %event.channel, source = %event.source,
            kind = ?event.kind, detail = %event.detail, "event");
        if tx.try_send(event).is_err() {
            metrics::counter!("steadycast_events_dropped_total").increment(1);
        }
    })
}

/// This machine's clock, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A random 128-bit secret, hex.
pub fn new_secret() -> String {
    let bytes: [u8; 16] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
