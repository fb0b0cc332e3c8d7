//! Many nodes, one channel. Nodes register in the catalog and heartbeat; pipelines a and b of
//! every channel are placed on pipeline nodes by leases whose expiry is the database's clock
//! and whose epoch fences the holder's deliveries at the packager. [`placement`] decides
//! (pure); [`keeper`] acts on a node.

pub mod keeper;
pub mod placement;
pub mod relay;

use std::time::Duration;

use serde::Deserialize;

pub use keeper::{Keeper, PipelineHost, heartbeat};

pub const ROLE_INGEST: &str = "ingest";
pub const ROLE_PIPELINE: &str = "pipeline";
pub const ROLE_PACKAGER: &str = "packager";
pub const ROLE_ORIGIN: &str = "origin";
pub const ROLE_API: &str = "api";
/// Every role, in the order they are shown.
pub const ROLES: [&str; 5] = [
    ROLE_INGEST,
    ROLE_PIPELINE,
    ROLE_PACKAGER,
    ROLE_ORIGIN,
    ROLE_API,
];

/// How pipeline leases are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// A lease not renewed for this long is free for another node to take: the longest a dead
    /// or frozen node keeps a pipeline (the other pipeline covers meanwhile).
    #[serde(default = "default_ttl")]
    pub ttl_ms: u64,
    /// How often a holder renews; several renewals fit in a TTL, so one slow query loses
    /// nothing.
    #[serde(default = "default_renew")]
    pub renew_interval_ms: u64,
    /// How often a node heartbeats and looks for free leases.
    #[serde(default = "default_claim")]
    pub claim_interval_ms: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl_ms: default_ttl(),
            renew_interval_ms: default_renew(),
            claim_interval_ms: default_claim(),
        }
    }
}

impl LeaseSettings {
    /// The problems with these settings, for the config's error message.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.renew_interval_ms == 0 || self.claim_interval_ms == 0 {
            problems.push("lease renew and claim intervals must be above 0".to_string());
        }
        if self.renew_interval_ms * 2 > self.ttl_ms {
            problems.push(format!(
                "lease ttl_ms ({}) must be at least twice renew_interval_ms ({})",
                self.ttl_ms, self.renew_interval_ms
            ));
        }
        problems
    }

    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_interval_ms.max(1))
    }

    pub fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.claim_interval_ms.max(1))
    }
}

fn default_ttl() -> u64 {
    5_000
}

fn default_renew() -> u64 {
    1_000
}

fn default_claim() -> u64 {
    1_000
}
