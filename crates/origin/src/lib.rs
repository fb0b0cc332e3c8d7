//! The packager's ingest endpoint and the playback origin. Pipelines PUT CMAF headers and
//! segments here; the first complete copy of each (rendition, N) is stored, listed, and served
//! as HLS and DASH from one URL per channel, whichever pipeline made it.

mod error;
mod follow;
mod gate;
mod harvest;
mod live;
mod manifests;
mod packager;
mod playback;
mod restore;
mod retention;
mod timeshift;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, put};
use channel::{ChannelSpec, EventKind, Events, Secret};
use store::{BlobStore, Catalog};
use tower_http::cors::{Any, CorsLayer};

pub use error::OriginError;
pub use live::{Alignment, LiveChannel};
pub use restore::Repair;
pub use timeshift::parse_time;

/// The largest object a pipeline may PUT: a 2 s segment at 100 Mb/s is 25 MB.
pub const MAX_UPLOAD: usize = 32 << 20;

/// How an origin takes part in a cluster.
pub struct InCluster {
    /// How long after its listing a segment appears in live manifests.
    pub settle: Duration,
    /// The credential pipeline nodes deliver with (beside each channel's own).
    pub credential: Secret,
}

/// What the origin checks viewers' requests with: the keys of signed URLs, and which peers
/// are proxies whose `X-Forwarded-For` names the client (for client-bound tokens).
#[derive(Debug, Clone, Default)]
pub struct ViewerAccess {
    pub playback_keys: access::PlaybackKeys,
    pub trusted_proxies: Vec<access::Cidr>,
}

/// The origin's state: the durable store and each channel's live window.
pub struct Origin {
    catalog: Catalog,
    blobs: BlobStore,
    events: Events,
    channels: RwLock<HashMap<String, Arc<LiveChannel>>>,
    /// In a cluster: uploads must carry their pipeline's lease epoch, and segments are listed
    /// only while it is current.
    fenced: bool,
    /// In a cluster: how long after its listing a segment appears in live manifests.
    settle_ms: u64,
    /// In a cluster: the credential pipeline nodes deliver with.
    cluster_credential: Option<Secret>,
    /// Whether the last write to each [`StorePart`] failed: failures and recoveries are
    /// reported once each, not once per segment.
    store_failing: [AtomicBool; 2],
    /// How signed playback URLs are checked (channels that ask for them).
    viewers: ViewerAccess,
}

/// The two halves of the store, which fail apart (a full disk, a database down).
#[derive(Debug, Clone, Copy)]
enum StorePart {
    Blobs = 0,
    Catalog = 1,
}

impl StorePart {
    fn name(self) -> &'static str {
        match self {
            StorePart::Blobs => "blobs",
            StorePart::Catalog => "catalog",
        }
    }
}

impl Origin {
    /// `cluster`: one of a cluster's packagers and origins; pipelines' uploads are then fenced
    /// by their leases.
    pub fn new(
        catalog: Catalog,
        blobs: BlobStore,
        events: Events,
        cluster: Option<InCluster>,
        viewers: ViewerAccess,
    ) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            blobs,
            events,
            viewers,
            fenced: cluster.is_some(),
            settle_ms: cluster.as_ref().map_or(0, |c| c.settle.as_millis() as u64),
            cluster_credential: cluster.map(|c| c.credential),
            channels: RwLock::new(HashMap::new()),
            store_failing: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    /// Whether the catalog's last answer to the packager was a failure.
    fn catalog_failing(&self) -> bool {
        self.store_failing[StorePart::Catalog as usize].load(Ordering::Relaxed)
    }

    /// Reports the outcome of a write to `part` of the store for `channel` (or of a read the
    /// packager needs before one): the first failure and the first success after failures
    /// become events; the gauge follows every outcome.
    fn store_write<T>(
        &self,
        channel: &str,
        part: StorePart,
        result: Result<T, store::StoreError>,
    ) -> Result<T, OriginError> {
        let failing = result.is_err();
        let was_failing = self.store_failing[part as usize].swap(failing, Ordering::Relaxed);
        metrics::gauge!("steadycast_store_failing", "part" => part.name()).set(if failing {
            1.0
        } else {
            0.0
        });
        match &result {
            Err(e) if !was_failing => {
                let detail = format!("{e}; new segments wait until the store recovers");
                self.events
                    .emit(channel, "store", EventKind::StoreFailed, detail);
            }
            Ok(_) if was_failing => {
                let detail = format!("writes to the {} succeed again", part.name());
                self.events
                    .emit(channel, "store", EventKind::StoreRecovered, detail);
            }
            _ => {}
        }
        Ok(result?)
    }

    /// Starts serving a channel, restoring its live window from the store (a restart continues
    /// where it stopped).
    pub async fn add_channel(
        &self,
        spec: ChannelSpec,
        credential: String,
    ) -> Result<(), OriginError> {
        let mut channel =
            LiveChannel::new(spec, Secret::new(credential)).map_err(OriginError::BadRequest)?;
        channel.settle_ms = self.settle_ms;
        let channel = Arc::new(channel);
        restore::live_window(&channel, &self.catalog, &self.blobs).await?;
        let id = channel.spec.id.clone();
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, channel);
        Ok(())
    }

    /// Brings catalog and store back in line for a channel after a crash (orphan files
    /// deleted, listings without bytes removed) and reports what it did. Call at start-up,
    /// before the channel is written to. `in_flight_from`: in a cluster, the first segment
    /// number other packagers may still be storing: files of it and later ones, and headers,
    /// are theirs to list and are kept even when no row lists them yet.
    pub async fn repair(
        &self,
        id: &str,
        in_flight_from: Option<u64>,
    ) -> Result<restore::Repair, OriginError> {
        let repair = restore::repair(id, &self.catalog, &self.blobs, in_flight_from).await?;
        if repair != restore::Repair::default() {
            let detail = format!(
                "removed {} orphan file(s), {} listing(s) without bytes and {} listing(s) whose \
                 bytes were cut short",
                repair.orphan_files, repair.dead_listings, repair.short_listings
            );
            tracing::warn!(channel = %id, %detail, "catalog and store repaired");
            self.events
                .emit(id, "store", EventKind::StoreRepaired, detail);
        }
        Ok(repair)
    }

    pub fn remove_channel(&self, id: &str) -> bool {
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// The channels served now.
    pub fn channel_ids(&self) -> Vec<String> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn channel(&self, id: &str) -> Option<Arc<LiveChannel>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The playback routes, with CORS for browser players.
    pub fn playback_router(self: &Arc<Self>) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
            .allow_headers(Any)
            .expose_headers(Any)
            .max_age(Duration::from_secs(86_400));
        Router::new()
            .route("/live/{channel}/{file}", get(playback::manifest))
            .route("/live/{channel}/{rendition}/{file}", get(playback::media))
            .route("/time", get(playback::time))
            .route("/vod/{name}/{*path}", get(playback::vod))
            .layer(cors)
            .with_state(self.clone())
    }

    /// The packager's ingest route, where pipelines deliver.
    pub fn ingest_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/ingest/{channel}/{feed}/{rendition}/{file}",
                put(packager::put),
            )
            .with_state(self.clone())
    }
}
