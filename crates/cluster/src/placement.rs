//! Which pipeline leases a node should claim or give up, from what the catalog says now. No
//! I/O and no clock: how long a lease has looked free is a parameter.
//!
//! The rules, in order:
//! - A draining node claims nothing, and gives its leases up one at a time, each only while
//!   the channel's other pipeline delivers (so the channel never loses both).
//! - A free lease (never taken, released or expired) is claimed at once unless another
//!   pipeline node is a better home: one that runs neither of the channel's pipelines when
//!   this node runs the other one (a and b of a channel never share a node while another is
//!   free), or one that holds fewer leases. Then this node waits `grace_ms` for it first.
//! - A node running both pipelines of a channel gives one up when a node that runs neither
//!   and holds fewer leases has joined, once the one it keeps delivers: that one covers
//!   while the other moves.

use std::collections::BTreeSet;

use timeline::Feed;

/// A pipeline node as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    /// Seen recently enough to count on, and not draining.
    pub available: bool,
}

/// One pipeline of a channel and who runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub channel: String,
    pub feed: Feed,
    /// The node holding an unexpired lease on it.
    pub holder: Option<String>,
    /// How long this node has seen it free; 0 when held.
    pub free_for_ms: u64,
    /// Its holder's pipeline delivers segments.
    pub ready: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub claim: Vec<(String, Feed)>,
    pub release: Vec<(String, Feed)>,
}

/// What node `me` should do now. `peers` are the other pipeline nodes; `slots` every pipeline
/// of every channel.
pub fn plan(me: &str, draining: bool, peers: &[Peer], slots: &[Slot], grace_ms: u64) -> Plan {
    let mut held: Held = slots
        .iter()
        .filter_map(|s| Some((s.holder.as_deref()?, s.feed, s.channel.as_str())))
        .collect();
    let mut plan = Plan::default();
    if draining {
        plan.release.extend(drain_step(me, slots));
        return plan;
    }
    let others: Vec<&str> = peers
        .iter()
        .filter(|p| p.available && p.id != me)
        .map(|p| p.id.as_str())
        .collect();
    for slot in slots.iter().filter(|s| s.holder.is_none()) {
        let (channel, sibling) = (slot.channel.as_str(), slot.feed.other());
        let mine = count(&held, me);
        let runs_sibling = held.contains(&(me, sibling, channel));
        let better_home = others.iter().any(|&o| {
            !held.contains(&(o, sibling, channel)) && (runs_sibling || count(&held, o) < mine)
        });
        if !better_home || slot.free_for_ms >= grace_ms {
            held.insert((me, slot.feed, channel));
            plan.claim.push((slot.channel.clone(), slot.feed));
        }
    }
    plan.release
        .extend(rebalance_step(me, &others, &held, slots));
    plan
}

/// Who runs what: (node, feed, channel).
type Held<'a> = BTreeSet<(&'a str, Feed, &'a str)>;

/// How many pipelines `node` runs.
fn count(held: &Held, node: &str) -> usize {
    held.iter().filter(|(h, _, _)| *h == node).count()
}

/// Whether pipeline `feed` of `channel` runs and delivers.
fn delivers(slots: &[Slot], channel: &str, feed: Feed) -> bool {
    slots
        .iter()
        .any(|s| s.channel == channel && s.feed == feed && s.holder.is_some() && s.ready)
}

/// One lease a draining node may give up now: one whose channel's other pipeline delivers
/// on another node, or, where this node runs both, b once a delivers.
fn drain_step(me: &str, slots: &[Slot]) -> Option<(String, Feed)> {
    let mine = slots.iter().filter(|s| s.holder.as_deref() == Some(me));
    let mut fallback = None;
    for slot in mine {
        let (channel, sibling) = (slot.channel.as_str(), slot.feed.other());
        if !delivers(slots, channel, sibling) {
            continue;
        }
        let sibling_mine = slots
            .iter()
            .any(|s| s.channel == channel && s.feed == sibling && s.holder.as_deref() == Some(me));
        if !sibling_mine {
            return Some((slot.channel.clone(), slot.feed));
        }
        if slot.feed == Feed::B {
            fallback = fallback.or(Some((slot.channel.clone(), Feed::B)));
        }
    }
    fallback
}

/// Where this node runs both pipelines of a channel, a delivers, and a peer that runs neither
/// holds at least two leases fewer, gives b up, one channel per round.
fn rebalance_step(
    me: &str,
    others: &[&str],
    held: &Held,
    slots: &[Slot],
) -> Option<(String, Feed)> {
    let mine = count(held, me);
    let channels = held
        .iter()
        .filter(|(h, f, _)| *h == me && *f == Feed::A)
        .map(|(_, _, c)| *c);
    for channel in channels {
        if !held.contains(&(me, Feed::B, channel)) || !delivers(slots, channel, Feed::A) {
            continue;
        }
        let free_peer = others.iter().any(|&o| {
            count(held, o) + 2 <= mine
                && !held.contains(&(o, Feed::A, channel))
                && !held.contains(&(o, Feed::B, channel))
        });
        if free_peer {
            return Some((channel.to_string(), Feed::B));
        }
    }
    None
}

#[cfg(test)]
mod tests;
