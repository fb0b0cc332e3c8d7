//! The catalog's part in a cluster: node registration and heartbeats, pipeline leases with
//! fencing epochs, and listing a segment only while its writer's epoch is current. Every time
//! here is the database's clock (Unix milliseconds): nodes' clocks are never compared.

use std::str::FromStr;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::postgres::PgListener;
use timeline::Feed;

use crate::catalog::insert_segment_query;
use crate::{Backend, Catalog, Result, SegmentRow, StoreError};

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Its roles, comma-separated (`ingest,pipeline,packager,origin,api`).
    pub roles: String,
    /// The base URL the other nodes reach its HTTP listener at.
    pub url: String,
    pub version: String,
    pub pid: u32,
    /// When this incarnation started, by its own clock (shown, never compared).
    pub started_ms: u64,
}

/// A registered node as the catalog sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub id: String,
    pub roles: Vec<String>,
    pub url: String,
    pub version: String,
    pub pid: u32,
    pub started_ms: u64,
    /// How long ago, by the database's clock, the node last said it was alive.
    pub seen_ago_ms: u64,
    pub draining: bool,
    /// The inputs (`channel/input`) a publisher is connected to on this node.
    pub publishing: Vec<String>,
}

impl NodeRow {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The lease of one pipeline of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub channel: String,
    pub feed: Feed,
    /// The node holding it; `None` once released.
    pub holder: Option<String>,
    pub epoch: u64,
    /// Milliseconds until it expires by the database's clock; negative once expired.
    pub remaining_ms: i64,
    /// Whether the holder's pipeline delivered segments at its last renewal.
    pub ready: bool,
}

impl LeaseRow {
    /// Whether no node holds it now (released or expired).
    pub fn is_free(&self) -> bool {
        self.holder.is_none() || self.remaining_ms < 0
    }
}

/// What became of a fenced listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedListing {
    Listed,
    /// A copy of (channel, rendition, n) was listed already; nothing changed.
    Duplicate,
    /// The writer's epoch is not the lease's current one: a newer holder took the pipeline
    /// over (or no lease exists). Nothing changed.
    Stale {
        current: Option<u64>,
    },
}

impl Catalog {
    /// The database's clock, in Unix milliseconds, as an SQL expression.
    fn clock(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// Registers a node or renews its heartbeat (and its roles, URL and pid, which a restart
    /// may change). A draining mark stays until [`Catalog::set_draining`] clears it.
    pub async fn heartbeat(&self, node: &NodeInfo, publishing: &[String]) -> Result<()> {
        let now = self.clock();
        sqlx::query(&format!(
            "INSERT INTO nodes (id, roles, url, version, pid, started_ms, seen_ms, inputs)
             VALUES ($1, $2, $3, $4, $5, $6, {now}, $7) ON CONFLICT (id) DO UPDATE SET
             roles = excluded.roles, url = excluded.url, version = excluded.version,
             pid = excluded.pid, started_ms = excluded.started_ms, seen_ms = excluded.seen_ms,
             inputs = excluded.inputs"
        ))
        .bind(&node.id)
        .bind(&node.roles)
        .bind(&node.url)
        .bind(&node.version)
        .bind(i64::from(node.pid))
        .bind(node.started_ms as i64)
        .bind(publishing.join(","))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every registered node, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(&format!(
            "SELECT id, roles, url, version, pid, started_ms, draining, inputs,
             {} - seen_ms AS seen_ago_ms FROM nodes ORDER BY id",
            self.clock()
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(node_row).collect()
    }

    /// Marks a node as draining (its leases go elsewhere, it claims none) or back in service.
    /// False when no such node is registered.
    pub async fn set_draining(&self, id: &str, draining: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE nodes SET draining = $1 WHERE id = $2")
            .bind(i64::from(draining))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every lease, by channel and feed.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let rows = sqlx::query(&format!(
            "SELECT channel, feed, holder, epoch, ready, expires_ms - {} AS remaining_ms
             FROM leases ORDER BY channel, feed",
            self.clock()
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(lease_row).collect()
    }

    /// Takes the lease of pipeline `feed` of `channel` for `ttl_ms` if it is free (never
    /// taken, released or expired) or already `holder`'s (a restarted node takes its own
    /// back at once). Returns the new epoch, or `None` when another node holds it. One
    /// statement: of nodes racing for a lease, exactly one gets it.
    pub async fn claim_lease(
        &self,
        channel: &str,
        feed: Feed,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Option<u64>> {
        let now = self.clock();
        let row = sqlx::query(&format!(
            "INSERT INTO leases (channel, feed, holder, epoch, expires_ms)
             VALUES ($1, $2, $3, 1, {now} + $4) ON CONFLICT (channel, feed) DO UPDATE SET
             holder = excluded.holder, epoch = leases.epoch + 1, expires_ms = excluded.expires_ms,
             ready = 0 WHERE leases.holder IS NULL OR leases.holder = excluded.holder
                OR leases.expires_ms < {now}
             RETURNING epoch"
        ))
        .bind(channel)
        .bind(feed.as_str())
        .bind(holder)
        .bind(ttl_ms as i64)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("epoch")? as u64))
            .transpose()
    }

    /// Extends a held lease by `ttl_ms` from now, saying whether its pipeline delivers
    /// (`ready`). An expired lease nobody has claimed since is still this holder's (its epoch
    /// is unchanged, so nothing it listed meanwhile was fenced): after a catalog outage longer
    /// than the TTL, pipelines go on. False when another node took it (or it was released):
    /// the holder must stop at once.
    pub async fn renew_lease(
        &self,
        channel: &str,
        feed: Feed,
        holder: &str,
        epoch: u64,
        ttl_ms: u64,
        ready: bool,
    ) -> Result<bool> {
        let now = self.clock();
        let done = sqlx::query(&format!(
            "UPDATE leases SET expires_ms = {now} + $1, ready = $6 WHERE channel = $2
             AND feed = $3 AND holder = $4 AND epoch = $5"
        ))
        .bind(ttl_ms as i64)
        .bind(channel)
        .bind(feed.as_str())
        .bind(holder)
        .bind(epoch as i64)
        .bind(i64::from(ready))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives a held lease up (a drain, a rebalance, a deleted channel): the next claim takes
    /// it at once, with the next epoch.
    pub async fn release_lease(
        &self,
        channel: &str,
        feed: Feed,
        holder: &str,
        epoch: u64,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE leases SET holder = NULL, expires_ms = {} WHERE channel = $1 AND feed = $2
             AND holder = $3 AND epoch = $4",
            self.clock()
        ))
        .bind(channel)
        .bind(feed.as_str())
        .bind(holder)
        .bind(epoch as i64)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The current epoch of a pipeline's lease, if it was ever taken.
    pub async fn lease_epoch(&self, channel: &str, feed: Feed) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT epoch FROM leases WHERE channel = $1 AND feed = $2")
            .bind(channel)
            .bind(feed.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("epoch")? as u64))
            .transpose()
    }

    /// Lists a segment only if `epoch` is the current epoch of its feed's lease, in one
    /// transaction: on PostgreSQL the lease row is share-locked, so a claim that bumps the
    /// epoch waits for this listing or makes it fail, never slips between check and insert.
    pub async fn insert_segment_fenced(&self, s: &SegmentRow, epoch: u64) -> Result<FencedListing> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        };
        let mut tx = self.pool().begin().await?;
        let current = sqlx::query(&format!(
            "SELECT epoch FROM leases WHERE channel = $1 AND feed = $2{lock}"
        ))
        .bind(&s.channel)
        .bind(s.feed.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<i64, _>("epoch").map(|e| e as u64))
        .transpose()?;
        if current != Some(epoch) {
            tx.rollback().await?;
            return Ok(FencedListing::Stale { current });
        }
        let done = insert_segment_query(s).execute(&mut *tx).await?;
        if done.rows_affected() > 0 && self.backend() == Backend::Postgres {
            // Delivered at commit, and only then: a woken origin finds the row.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(LISTINGS)
                .bind(&s.channel)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(if done.rows_affected() > 0 {
            FencedListing::Listed
        } else {
            FencedListing::Duplicate
        })
    }

    /// Listens for new listings, on PostgreSQL; `None` on SQLite, where one node is all.
    pub async fn listen_listings(&self) -> Result<Option<ListingListener>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(self.url()).await?;
        listener.listen(LISTINGS).await?;
        Ok(Some(ListingListener(listener)))
    }
}

/// The notification channel a fenced listing wakes origins on; its payload is the channel id.
const LISTINGS: &str = "steadycast.listings";

/// Wake-ups for new listings. Only a wake-up: notifications sent while the connection was
/// down are lost, so after [`ListingListener::next`] says it reconnected, re-read the tables.
pub struct ListingListener(PgListener);

impl ListingListener {
    /// The channel of the next listing; `None` when the connection was lost and made again
    /// (whatever was listed meanwhile was not announced).
    pub async fn next(&mut self) -> Result<Option<String>> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_string()))
    }
}

fn node_row(r: &AnyRow) -> Result<NodeRow> {
    let list = |column: &str| -> Result<Vec<String>> {
        let text: String = r.try_get(column)?;
        Ok(text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    };
    Ok(NodeRow {
        id: r.try_get("id")?,
        roles: list("roles")?,
        publishing: list("inputs")?,
        url: r.try_get("url")?,
        version: r.try_get("version")?,
        pid: u32::try_from(r.try_get::<i64, _>("pid")?).unwrap_or(0),
        started_ms: r.try_get::<i64, _>("started_ms")? as u64,
        seen_ago_ms: r.try_get::<i64, _>("seen_ago_ms")?.max(0) as u64,
        draining: r.try_get::<i64, _>("draining")? != 0,
    })
}

fn lease_row(r: &AnyRow) -> Result<LeaseRow> {
    let feed: String = r.try_get("feed")?;
    Ok(LeaseRow {
        channel: r.try_get("channel")?,
        feed: Feed::from_str(&feed)
            .map_err(|e| StoreError::Catalog(sqlx::Error::Decode(e.into())))?,
        holder: r.try_get("holder")?,
        epoch: r.try_get::<i64, _>("epoch")? as u64,
        remaining_ms: r.try_get("remaining_ms")?,
        ready: r.try_get::<i64, _>("ready")? != 0,
    })
}
