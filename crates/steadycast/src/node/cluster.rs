//! A node as one of a cluster's: its identity in the catalog, its heartbeat, the pipelines its
//! leases place on it, and the channels its packager and origin follow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use channel::{ChannelSpec, InputSpec, Secret};
use cluster::{Keeper, PipelineHost, ROLE_INGEST, ROLE_ORIGIN, ROLE_PACKAGER, ROLE_PIPELINE};
use pipeline::{PackagerTarget, Phase};
use store::{NodeInfo, NodeRow};
use timeline::Feed;
use tokio::sync::watch;

use super::{Node, NodeError, RunningPipeline};
use crate::config::ServerConfig;

/// Segments whose uploads may still be under way: their end lies less than this in the past
/// (three delivery attempts of 10 s each, with room to spare).
const UPLOADS_IN_FLIGHT: Duration = Duration::from_secs(60);

/// This node as it registers: its id (configured, or made once and kept in the data
/// directory), roles, the URL others reach it at, and this process.
pub(super) fn node_info(server: &ServerConfig, http: SocketAddr) -> anyhow::Result<NodeInfo> {
    let id = match &server.node_id {
        Some(id) => id.clone(),
        None => stored_node_id(&server.data_dir)?,
    };
    let url = server.advertise_url.clone().unwrap_or_else(|| {
        let host = if http.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], http.port()))
        } else {
            http
        };
        let scheme = if server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    });
    Ok(NodeInfo {
        id,
        roles: server.roles.join(","),
        url: url.trim_end_matches('/').to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started_ms: super::now_ms(),
    })
}

fn stored_node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("node-{}", &super::new_secret()[..12]);
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// The first segment of a stored channel whose uploads other packagers may still be listing.
pub(super) fn in_flight_from(spec_json: &str) -> u64 {
    let Some(grid) = serde_json::from_str::<ChannelSpec>(spec_json)
        .ok()
        .and_then(|spec| spec.grid().ok())
    else {
        return 0;
    };
    let settled = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(UPLOADS_IN_FLIGHT);
    grid.segment_of(settled.as_millis() as u64, 1000)
}

impl Node {
    /// The heartbeat of every node; in a cluster also the lease keeper of a pipeline node and
    /// the channel follower of a packager or origin.
    pub(super) fn spawn_cluster_tasks(self: &Arc<Self>) {
        let leases = self.server.leases;
        let inputs = self.inputs.clone();
        tokio::spawn(cluster::heartbeat(
            self.catalog.clone(),
            self.info.clone(),
            move || inputs.publishing(),
            leases.renew_interval(),
            self.cancel.clone(),
        ));
        if !self.server.is_clustered() {
            return;
        }
        if self.server.has_role(ROLE_PIPELINE) {
            tokio::spawn(follow_nodes(self.clone(), leases.claim_interval()));
            let keeper = Keeper::new(
                self.catalog.clone(),
                self.info.clone(),
                leases,
                Host(self.clone()),
                self.events.clone(),
            );
            let task = tokio::spawn(keeper.run(self.cancel.clone()));
            *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        let serves = self.server.has_role(ROLE_PACKAGER) || self.server.has_role(ROLE_ORIGIN);
        if serves || self.server.has_role(ROLE_INGEST) {
            tokio::spawn(follow_channels(self.clone(), leases.claim_interval()));
        }
        if serves {
            tokio::spawn(follow_listings(self.clone(), leases.claim_interval()));
        }
    }

    /// In a cluster, a channel is served here by the packager and origin roles, and its
    /// contribution inputs wait for publishers here on an ingest node; its pipelines start
    /// where the leases place them. Adds only what is not here yet.
    pub(super) async fn follow_channel(&self, spec: &ChannelSpec) -> Result<(), NodeError> {
        if self.server.has_role(ROLE_INGEST) {
            for (name, input) in &spec.inputs {
                let generated = matches!(input, InputSpec::TestPattern { .. });
                if !generated && self.inputs.port(&spec.id, name).is_none() {
                    let allowed = spec.allowed_sources_of(name);
                    self.inputs
                        .add_allowing(&spec.id, name, input.clone(), allowed)?;
                }
            }
            self.apply_stream_keys(spec)?;
        }
        let serves = self.server.has_role(ROLE_PACKAGER) || self.server.has_role(ROLE_ORIGIN);
        if serves && self.origin.channel(&spec.id).is_none() {
            let credential = spec.ingest_credential.clone().unwrap_or_default();
            self.origin.add_channel(spec.clone(), credential).await?;
        }
        Ok(())
    }

    /// Whether channel `id` is already served here as [`Self::follow_channel`] would (a
    /// channel with no contribution input is looked at again each time).
    fn follows(&self, id: &str, inputs_here: &[ingest::InputId]) -> bool {
        let serves = self.server.has_role(ROLE_PACKAGER) || self.server.has_role(ROLE_ORIGIN);
        (!serves || self.origin.channel(id).is_some())
            && (!self.server.has_role(ROLE_INGEST) || inputs_here.iter().any(|i| i.channel == id))
    }

    /// The nodes seen alive (within a lease TTL), by node id.
    async fn alive(&self) -> Result<Vec<NodeRow>, String> {
        let mut nodes = self.catalog.nodes().await.map_err(|e| e.to_string())?;
        nodes.retain(|n| n.seen_ago_ms <= self.server.leases.ttl_ms);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Points the input relay at the ingest nodes alive now, other than this one.
    fn follow_ingest_nodes(&self, alive: &[NodeRow]) {
        let mut urls = urls_with(alive, ROLE_INGEST);
        urls.retain(|url| *url != self.info.url);
        self.ingest_nodes.send_if_modified(|known| {
            let changed = *known != urls;
            *known = urls;
            changed
        });
    }

    /// The packager nodes at `urls`, as a pipeline here delivers to them: with the cluster's
    /// credential, which no viewer or API caller ever sees.
    fn packager_targets(&self, urls: &[String]) -> Vec<PackagerTarget> {
        let credential = self.server.cluster_secret.as_ref();
        let credential = credential
            .map(|c| c.expose().to_string())
            .unwrap_or_default();
        urls.iter()
            .map(|url| PackagerTarget {
                base_url: url.clone(),
                credential: credential.clone(),
            })
            .collect()
    }

    /// Points this node's pipelines at the packager nodes alive now (one joined, one came
    /// back at another address); a pipeline keeps its targets while none is seen.
    fn follow_packagers(&self, alive: &[NodeRow]) {
        let urls = urls_with(alive, ROLE_PACKAGER);
        if urls.is_empty() {
            return;
        }
        for channel in self.lock_running().values() {
            for pipeline in &channel.pipelines {
                pipeline.packagers.send_if_modified(|targets| {
                    let fresh = self.packager_targets(&urls);
                    let changed = *targets != fresh;
                    *targets = fresh;
                    changed
                });
            }
        }
    }

    /// Starts pipeline `feed` of a stored channel under lease `epoch`, with its inputs here.
    async fn start_leased(&self, id: &str, feed: Feed, epoch: u64) -> Result<(), String> {
        let row = self.catalog.channel(id).await.map_err(|e| e.to_string())?;
        let row = row.ok_or_else(|| format!("channel `{id}` is gone"))?;
        let spec: ChannelSpec = serde_json::from_str(&row.spec).map_err(|e| e.to_string())?;
        let urls = urls_with(&self.alive().await?, ROLE_PACKAGER);
        if urls.is_empty() {
            return Err("no packager node is up".into());
        }
        let packagers = self.packager_targets(&urls);
        let mut inputs = Vec::new();
        for name in spec.inputs_of(feed) {
            let port = match self.inputs.port(id, name) {
                Some(port) => port,
                None => {
                    let input = spec.inputs.get(name).cloned();
                    let input = input.ok_or_else(|| format!("no input `{name}`"))?;
                    self.inputs
                        .add_allowing(id, name, input, spec.allowed_sources_of(name))
                        .map_err(|e| e.to_string())?
                }
            };
            inputs.push(port);
        }
        let pipeline = self.spawn_pipeline(&spec, feed, inputs, packagers, Some(epoch));
        let mut running = self.lock_running();
        let channel = running.entry(id.to_string()).or_default();
        channel.pipelines.retain(|p| running_apart(p, feed));
        channel.pipelines.push(pipeline);
        tracing::info!(channel = %id, %feed, epoch, "pipeline started under its lease");
        Ok(())
    }

    /// Stops a leased pipeline at once; the channel's inputs go with its last one here.
    fn stop_leased(&self, id: &str, feed: Feed) {
        let mut running = self.lock_running();
        let Some(channel) = running.get_mut(id) else {
            return;
        };
        channel.pipelines.retain(|p| running_apart(p, feed));
        if channel.pipelines.is_empty() {
            running.remove(id);
            drop(running);
            // An ingest node keeps waiting for (or serving) the channel's publishers.
            if self.server.has_role(ROLE_INGEST) {
                self.inputs.remove_generated(id);
            } else {
                self.inputs.remove_channel(id);
            }
        }
        tracing::info!(channel = %id, %feed, "pipeline stopped: its lease went");
    }
}

/// Whether `pipeline` is not pipeline `feed`; if it is, it is stopped (for a `retain`).
fn running_apart(pipeline: &RunningPipeline, feed: Feed) -> bool {
    if pipeline.feed == feed {
        pipeline.task.abort();
    }
    pipeline.feed != feed
}

/// The keeper's hands on this node.
struct Host(Arc<Node>);

impl PipelineHost for Host {
    async fn start(&self, channel: &str, feed: Feed, epoch: u64) -> Result<(), String> {
        self.0.start_leased(channel, feed, epoch).await
    }

    fn stop(&self, channel: &str, feed: Feed) {
        self.0.stop_leased(channel, feed);
    }

    fn delivers(&self, channel: &str, feed: Feed) -> bool {
        self.0.pipelines(channel).iter().any(|(f, state)| {
            *f == feed
                && matches!(state.phase, Phase::Encoding | Phase::Filling)
                && state.segments_this_run > 0
        })
    }
}

/// Keeps the channels a packager or origin serves in line with the catalog's: channels made or
/// deleted through any node's API appear or go here within `every`.
async fn follow_channels(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rows = match node.catalog.channels().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the channels; retrying");
                continue;
            }
        };
        applied.retain(|id, _| rows.iter().any(|r| &r.id == id));
        let inputs_here = node.inputs.inputs();
        for row in &rows {
            if node.follows(&row.id, &inputs_here) {
                // A definition changed elsewhere (a rotated stream key) applies here too.
                if applied.get(&row.id) != Some(&row.spec) {
                    let keys = serde_json::from_str::<ChannelSpec>(&row.spec)
                        .map_err(|e| e.to_string())
                        .and_then(|spec| node.apply_stream_keys(&spec).map_err(|e| e.to_string()));
                    match keys {
                        Ok(()) => {
                            applied.insert(row.id.clone(), row.spec.clone());
                        }
                        Err(e) => tracing::warn!(channel = %row.id, error = %e,
                            "cannot apply the channel's stream keys; retrying"),
                    }
                }
                continue;
            }
            let added = match serde_json::from_str::<ChannelSpec>(&row.spec) {
                Ok(spec) => node.follow_channel(&spec).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = added {
                tracing::warn!(channel = %row.id, error = %e, "cannot serve channel; retrying");
            }
        }
        let gone = |id: &str| !rows.iter().any(|r| r.id == id);
        for id in node.origin.channel_ids() {
            if gone(&id) {
                node.origin.remove_channel(&id);
            }
        }
        for input in node.inputs.inputs() {
            if gone(&input.channel) {
                node.inputs.remove_channel(&input.channel);
            }
        }
    }
}

/// Adds what other packagers list to this node's live windows: woken by the catalog's
/// notifications, backed by a poll every `every` (a notification is only a wake-up: those sent
/// while the listener was disconnected are lost, so every reconnection catches up in full).
async fn follow_listings(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener = None;
    loop {
        if listener.is_none() {
            match node.catalog.listen_listings().await {
                Ok(Some(l)) => listener = Some(l),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot listen for listings; polling"),
            }
            catch_up_all(&node).await;
        }
        let woke = async {
            match listener.as_mut() {
                Some(l) => l.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = tick.tick() => catch_up_all(&node).await,
            woke = woke => match woke {
                Ok(Some(id)) => catch_up(&node, &id).await,
                Ok(None) => {
                    tracing::info!("listing notifications reconnected; catching up");
                    catch_up_all(&node).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing notifications lost; reconnecting");
                    listener = None;
                }
            },
        }
    }
}

async fn catch_up_all(node: &Node) {
    for id in node.origin.channel_ids() {
        catch_up(node, &id).await;
    }
}

async fn catch_up(node: &Node, id: &str) {
    if let Err(e) = node.origin.catch_up(id).await {
        tracing::warn!(channel = %id, error = %e, "cannot follow the catalog's listings");
    }
}

/// Keeps a pipeline node's deliveries pointed at the packager nodes alive, and its input
/// relay at the ingest nodes.
async fn follow_nodes(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = tick.tick() => if let Ok(alive) = node.alive().await {
                node.follow_packagers(&alive);
                node.follow_ingest_nodes(&alive);
            }
        }
    }
}

/// The URLs of the nodes among `nodes` with `role`.
fn urls_with(nodes: &[NodeRow], role: &str) -> Vec<String> {
    let with = nodes.iter().filter(|n| n.has_role(role));
    with.map(|n| n.url.clone()).collect()
}

/// Relays an input into this node from the ingest nodes `nodes` names.
pub(super) fn relay_from(
    nodes: watch::Receiver<Vec<String>>,
    secret: Secret,
    client: reqwest::Client,
) -> ingest::Relay {
    Arc::new(move |port| {
        let (nodes, secret, client) = (nodes.clone(), secret.clone(), client.clone());
        Box::pin(::cluster::relay::pull(port, nodes, secret, client))
    })
}
