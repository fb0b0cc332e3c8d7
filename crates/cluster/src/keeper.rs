//! The lease keeper of a pipeline node: it claims the leases [`plan`] picks, renews the ones
//! it holds and stops a pipeline the moment its lease is found lost. Its host starts and
//! stops the pipelines. Every node, pipeline or not, runs [`heartbeat`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use channel::{EventKind, Events};
use store::{Catalog, LeaseRow, NodeInfo, NodeRow};
use timeline::Feed;
use tokio_util::sync::CancellationToken;

use crate::placement::{Peer, Slot, plan};
use crate::{LeaseSettings, ROLE_PIPELINE};

/// What runs the pipelines whose leases the keeper holds.
pub trait PipelineHost: Send + Sync + 'static {
    /// Starts pipeline `feed` of `channel`, fencing its deliveries with `epoch`.
    fn start(
        &self,
        channel: &str,
        feed: Feed,
        epoch: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Stops it at once.
    fn stop(&self, channel: &str, feed: Feed);
    /// Whether it delivers segments now.
    fn delivers(&self, channel: &str, feed: Feed) -> bool;
}

type Key = (String, Feed);

pub struct Keeper<H> {
    catalog: Catalog,
    node: NodeInfo,
    settings: LeaseSettings,
    host: H,
    events: Events,
    /// The leases held, with their epochs.
    held: Mutex<HashMap<Key, u64>>,
    /// Whether the catalog's last answer was an error, and since when it answers again.
    outage: Mutex<Outage>,
}

/// A catalog outage as one keeper saw it. While the catalog is down every lease runs out on
/// the database's clock; once it is back, a holder that lived through it renews within a
/// renew interval. Until a TTL has passed, an expired lease with a holder is not claimed:
/// a takeover then would restart every pipeline of the cluster after each outage.
#[derive(Default)]
struct Outage {
    failing: bool,
    back_since: Option<Instant>,
}

impl<H: PipelineHost> Keeper<H> {
    pub fn new(
        catalog: Catalog,
        node: NodeInfo,
        settings: LeaseSettings,
        host: H,
        events: Events,
    ) -> Self {
        Self {
            catalog,
            node,
            settings,
            host,
            events,
            held: Mutex::default(),
            outage: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn catalog_answered(&self, answered: bool) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if !answered {
            outage.failing = true;
        } else if outage.failing {
            outage.failing = false;
            outage.back_since = Some(Instant::now());
            tracing::info!(
                "catalog answers again; expired leases stay with their holders for a TTL"
            );
        }
    }

    /// Whether expired leases still count as their holders' (see [`Outage`]).
    fn trusting_holders(&self) -> bool {
        let outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = std::time::Duration::from_millis(self.settings.ttl_ms);
        outage.failing || outage.back_since.is_some_and(|t| t.elapsed() < ttl)
    }

    /// Runs until `cancel`, then stops its pipelines and releases their leases, so that other
    /// nodes take them at once instead of after the TTL.
    pub async fn run(self, cancel: CancellationToken) {
        let mut claim = tokio::time::interval(self.settings.claim_interval());
        let mut renew = tokio::time::interval(self.settings.renew_interval());
        claim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut free_since: HashMap<Key, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = renew.tick() => self.renew_all().await,
                _ = claim.tick() => {
                    let placed = self.place(&mut free_since).await;
                    self.catalog_answered(placed.is_ok());
                    if let Err(e) = placed {
                        tracing::warn!(error = %e, "lease placement round failed; retrying");
                    }
                }
            }
        }
        let held: Vec<Key> = self.held().keys().cloned().collect();
        for (channel, feed) in held {
            self.release(&channel, feed).await;
        }
    }

    /// Reads nodes and leases, and claims or releases what the plan says.
    async fn place(&self, free_since: &mut HashMap<Key, Instant>) -> Result<(), store::StoreError> {
        let nodes = self.catalog.nodes().await?;
        let leases = self.catalog.leases().await?;
        let channels: Vec<String> = self
            .catalog
            .channels()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        self.drop_deleted(&channels).await;
        let slots = slots(&channels, &leases, free_since, self.trusting_holders());
        let peers = peers(&nodes, self.settings.ttl_ms);
        let draining = nodes.iter().any(|n| n.id == self.node.id && n.draining);
        let grace = self.settings.claim_interval_ms * 3;
        let plan = plan(&self.node.id, draining, &peers, &slots, grace);
        for (channel, feed) in plan.release {
            self.release(&channel, feed).await;
        }
        for (channel, feed) in plan.claim {
            self.claim(&channel, feed).await?;
        }
        metrics::gauge!("steadycast_leases_held").set(self.held().len() as f64);
        Ok(())
    }

    async fn claim(&self, channel: &str, feed: Feed) -> Result<(), store::StoreError> {
        let ttl = self.settings.ttl_ms;
        let Some(epoch) = self
            .catalog
            .claim_lease(channel, feed, &self.node.id, ttl)
            .await?
        else {
            return Ok(());
        };
        let key = (channel.to_string(), feed);
        // A lease of ours from a previous incarnation, or one we held: its pipeline restarts
        // with the new epoch.
        if self.held().remove(&key).is_some() {
            self.host.stop(channel, feed);
        }
        if let Err(e) = self.host.start(channel, feed, epoch).await {
            tracing::error!(%channel, %feed, error = %e, "cannot start a claimed pipeline");
            let _ = self
                .catalog
                .release_lease(channel, feed, &self.node.id, epoch)
                .await;
            return Ok(());
        }
        self.held().insert(key, epoch);
        metrics::counter!("steadycast_lease_changes_total", "change" => "claimed").increment(1);
        let detail = format!(
            "node {} runs pipeline {feed} at lease epoch {epoch}",
            self.node.id
        );
        self.events
            .emit(channel, "cluster", EventKind::LeaseClaimed, detail);
        Ok(())
    }

    async fn release(&self, channel: &str, feed: Feed) {
        let Some(epoch) = self.held().remove(&(channel.to_string(), feed)) else {
            return;
        };
        self.host.stop(channel, feed);
        let released = self
            .catalog
            .release_lease(channel, feed, &self.node.id, epoch)
            .await;
        if let Err(e) = released {
            tracing::warn!(%channel, %feed, error = %e, "lease not released; it will expire");
        }
        metrics::counter!("steadycast_lease_changes_total", "change" => "released").increment(1);
        let detail = format!("node {} gave pipeline {feed} up", self.node.id);
        self.events
            .emit(channel, "cluster", EventKind::LeaseReleased, detail);
    }

    /// Renews every held lease. One the catalog says is gone stops its pipeline at once. One
    /// the catalog cannot be asked about keeps running: its uploads are fenced at the
    /// packager if another node has taken over meanwhile, and a catalog outage does not take
    /// every pipeline of the cluster down with it.
    async fn renew_all(&self) {
        let held: Vec<_> = self
            .held()
            .iter()
            .map(|(k, epoch)| (k.clone(), *epoch))
            .collect();
        for ((channel, feed), epoch) in held {
            let renewed = self
                .catalog
                .renew_lease(
                    &channel,
                    feed,
                    &self.node.id,
                    epoch,
                    self.settings.ttl_ms,
                    self.host.delivers(&channel, feed),
                )
                .await;
            self.catalog_answered(renewed.is_ok());
            match renewed {
                Ok(true) => {}
                Ok(false) => self.lost(&channel, feed, epoch),
                Err(e) => {
                    tracing::warn!(%channel, %feed, error = %e, "lease renewal failed; retrying")
                }
            }
        }
    }

    fn lost(&self, channel: &str, feed: Feed, epoch: u64) {
        self.held().remove(&(channel.to_string(), feed));
        self.host.stop(channel, feed);
        metrics::counter!("steadycast_lease_changes_total", "change" => "lost").increment(1);
        let detail = format!(
            "node {} lost pipeline {feed}'s lease (epoch {epoch}) and stopped it",
            self.node.id
        );
        tracing::warn!(%channel, %feed, epoch, "lease lost; pipeline stopped");
        self.events
            .emit(channel, "cluster", EventKind::LeaseLost, detail);
    }

    /// Pipelines of channels deleted meanwhile stop, and their leases go.
    async fn drop_deleted(&self, channels: &[String]) {
        let gone: Vec<Key> = self
            .held()
            .keys()
            .filter(|(c, _)| !channels.contains(c))
            .cloned()
            .collect();
        for (channel, feed) in gone {
            self.release(&channel, feed).await;
        }
    }
}

/// Every pipeline of every channel, with how long this node has seen each one free. An expired
/// lease still counts as its holder's while `trust_holders`.
fn slots(
    channels: &[String],
    leases: &[LeaseRow],
    free_since: &mut HashMap<Key, Instant>,
    trust_holders: bool,
) -> Vec<Slot> {
    let now = Instant::now();
    let mut slots = Vec::new();
    for channel in channels {
        for feed in Feed::BOTH {
            let lease = leases
                .iter()
                .find(|l| &l.channel == channel && l.feed == feed);
            let held = lease.filter(|l| !l.is_free() || (trust_holders && l.holder.is_some()));
            let holder = held.and_then(|l| l.holder.clone());
            let key = (channel.clone(), feed);
            let free_for_ms = if holder.is_some() {
                free_since.remove(&key);
                0
            } else {
                let since = *free_since.entry(key).or_insert(now);
                now.duration_since(since).as_millis() as u64
            };
            slots.push(Slot {
                channel: channel.clone(),
                feed,
                holder,
                free_for_ms,
                ready: held.is_some_and(|l| l.ready),
            });
        }
    }
    free_since.retain(|(c, _), _| channels.contains(c));
    slots
}

/// The pipeline nodes, each available when seen within a lease TTL and not draining.
fn peers(nodes: &[NodeRow], ttl_ms: u64) -> Vec<Peer> {
    nodes
        .iter()
        .filter(|n| n.has_role(ROLE_PIPELINE))
        .map(|n| Peer {
            id: n.id.clone(),
            available: n.seen_ago_ms <= ttl_ms && !n.draining,
        })
        .collect()
}

/// Registers the node and renews its heartbeat every `interval` until `cancel`, with the
/// inputs `publishing` names; the other nodes count on it while it is seen within a lease TTL.
pub async fn heartbeat(
    catalog: Catalog,
    node: NodeInfo,
    publishing: impl Fn() -> Vec<String>,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        match catalog.heartbeat(&node, &publishing()).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeats reach the catalog again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "heartbeat failed; retrying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(feed: Feed, holder: Option<&str>, remaining_ms: i64) -> LeaseRow {
        LeaseRow {
            channel: "ch".into(),
            feed,
            holder: holder.map(str::to_string),
            epoch: 3,
            remaining_ms,
            ready: true,
        }
    }

    #[test]
    fn after_an_outage_an_expired_lease_stays_with_its_holder() {
        let channels = ["ch".to_string()];
        let leases = [lease(Feed::A, Some("n1"), -4000), lease(Feed::B, None, 0)];
        let holders = |trust| {
            slots(&channels, &leases, &mut HashMap::new(), trust)
                .into_iter()
                .map(|s| s.holder)
                .collect::<Vec<_>>()
        };
        assert_eq!(holders(false), [None, None]);
        // A released lease is free whatever happened.
        assert_eq!(holders(true), [Some("n1".to_string()), None]);
    }
}
