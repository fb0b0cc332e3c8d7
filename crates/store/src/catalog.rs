use std::path::Path;
use std::str::FromStr;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channel::Event;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use timeline::Feed;

use crate::{Result, StoreError};

/// The index of a node's durable state: channels, CMAF headers, kept segments, events and
/// harvest jobs. One schema on SQLite (embedded, the default) or PostgreSQL (scale-out); the
/// queries are shared, written in the dialect both accept.
#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    /// For the listener's own connection; it may hold a password, so never printed.
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("backend", &self.backend)
            .field("url", &redact(&self.url))
            .finish()
    }
}

/// Which database a [`Catalog`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub id: String,
    /// The channel's spec as JSON, owned by the layer that defines channels.
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRow {
    pub channel: String,
    pub rendition: String,
    pub feed: Feed,
    pub blob_key: String,
    /// The track description as JSON (codec, size, timescale), for manifests after a restart.
    pub track: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    pub channel: String,
    pub rendition: String,
    pub n: u64,
    pub feed: Feed,
    /// tfdt, in `timescale` ticks since the epoch.
    pub start: u64,
    pub duration: u64,
    pub timescale: u32,
    pub byte_len: u64,
    pub blob_key: String,
    /// The pipeline's quality score of the kept copy, 0-100.
    pub quality: Option<u8>,
    /// The id of the header it decodes with ([`HeaderRow::id`]); `None` for segments listed
    /// before headers were named, which decode with their rendition's first legacy init.
    pub header: Option<String>,
    /// How many times the rendition's header changed up to this segment.
    pub disc: u32,
    /// When it was listed, Unix milliseconds by the listing packager's clock: origins make a
    /// segment visible a settle time after it, all at once.
    pub listed_ms: u64,
}

/// A distinct CMAF header of a rendition, named by a hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRow {
    pub channel: String,
    pub rendition: String,
    /// 16 hex digits.
    pub id: String,
    pub blob_key: String,
}

impl Catalog {
    /// Opens the catalog at `url` (`sqlite://path` or `postgres://…`), creating a SQLite file
    /// when missing, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(format!(
                "catalog URL `{}` is neither sqlite:// nor postgres://",
                redact(url)
            )));
        };
        // A catalog that is down must fail a request within a pipeline's delivery timeout
        // (10 s), or the request is cancelled before anyone is told. A server that is down
        // fails at once, so 3 s; an embedded file is only ever busy, so it may wait longer.
        let options = AnyPoolOptions::new();
        let pool = match backend {
            // Per connection: WAL readers never block the writer, and a busy writer is waited
            // for rather than failed.
            Backend::Sqlite => options
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(8))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let pragmas = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                   PRAGMA busy_timeout = 5000";
                        conn.execute(pragmas).await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => options
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(3)),
        }
        .connect(url)
        .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations-postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            url: url.into(),
        })
    }

    /// Opens (creating if needed) the SQLite catalog at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        Self::open(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn put_channel(&self, id: &str, spec: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO channels (id, spec, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET spec = excluded.spec",
        )
        .bind(id)
        .bind(spec)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a channel definition; its segments stay until retention removes them.
    pub async fn delete_channel(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM channels WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn channels(&self) -> Result<Vec<ChannelRow>> {
        let rows = sqlx::query("SELECT id, spec FROM channels ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(channel_row).collect()
    }

    pub async fn channel(&self, id: &str) -> Result<Option<ChannelRow>> {
        let row = sqlx::query("SELECT id, spec FROM channels WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(channel_row).transpose()
    }

    /// Records the header a feed delivers for a rendition now (its latest `init.mp4`), so
    /// that a restarted node knows what that feed's next segments decode with.
    pub async fn put_init(&self, init: &InitRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO inits (channel, rendition, feed, blob_key, track, stored_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, rendition, feed)
             DO UPDATE SET blob_key = excluded.blob_key, track = excluded.track
             WHERE inits.blob_key <> excluded.blob_key",
        )
        .bind(&init.channel)
        .bind(&init.rendition)
        .bind(init.feed.as_str())
        .bind(&init.blob_key)
        .bind(&init.track)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn inits(&self, channel: &str) -> Result<Vec<InitRow>> {
        let rows = sqlx::query(
            "SELECT channel, rendition, feed, blob_key, track FROM inits
             WHERE channel = $1 ORDER BY rendition, stored_at",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InitRow {
                    channel: r.try_get("channel")?,
                    rendition: r.try_get("rendition")?,
                    feed: feed(r)?,
                    blob_key: r.try_get("blob_key")?,
                    track: r.try_get("track")?,
                })
            })
            .collect()
    }

    /// Records a stored header; false when it was known already.
    pub async fn put_header(&self, h: &HeaderRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO headers (channel, rendition, id, blob_key, stored_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&h.channel)
        .bind(&h.rendition)
        .bind(&h.id)
        .bind(&h.blob_key)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A channel's headers, oldest first.
    pub async fn headers(&self, channel: &str) -> Result<Vec<HeaderRow>> {
        let rows = sqlx::query(
            "SELECT channel, rendition, id, blob_key FROM headers
             WHERE channel = $1 ORDER BY stored_at, rendition",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeaderRow {
                    channel: r.try_get("channel")?,
                    rendition: r.try_get("rendition")?,
                    id: r.try_get("id")?,
                    blob_key: r.try_get("blob_key")?,
                })
            })
            .collect()
    }

    /// Names the header of the segments listed before headers were named (migration 0005).
    pub async fn name_unnamed_segments(
        &self,
        channel: &str,
        rendition: &str,
        header: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE segments SET header = $1 WHERE channel = $2 AND rendition = $3 AND header IS NULL",
        )
        .bind(header)
        .bind(channel)
        .bind(rendition)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records where a DASH Period begins: at segment `n`, `start_ms` after the epoch.
    pub async fn put_period(&self, channel: &str, n: u64, start_ms: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO periods (channel, n, start_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(channel)
        .bind(n as i64)
        .bind(start_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A channel's Period starts `(n, start_ms)`, oldest first.
    pub async fn periods(&self, channel: &str) -> Result<Vec<(u64, u64)>> {
        let rows = sqlx::query("SELECT n, start_ms FROM periods WHERE channel = $1 ORDER BY n")
            .bind(channel)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                let start_ms: i64 = r.try_get("start_ms")?;
                Ok((n as u64, start_ms as u64))
            })
            .collect()
    }

    /// Forgets the Periods that began before `n` (retention), but for the one in force at `n`
    /// and the one before it, which MPDs name as the one it continues.
    pub async fn delete_periods_before(&self, channel: &str, n: u64) -> Result<()> {
        sqlx::query(
            "DELETE FROM periods WHERE channel = $1 AND n < (SELECT n FROM periods \
             WHERE channel = $1 AND n <= $2 ORDER BY n DESC LIMIT 1 OFFSET 1)",
        )
        .bind(channel)
        .bind(n.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lists a stored segment. Returns false when a copy of (channel, rendition, n) is already
    /// listed: the first complete copy wins and listed bytes never change.
    pub async fn insert_segment(&self, s: &SegmentRow) -> Result<bool> {
        let done = insert_segment_query(s).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn segment(
        &self,
        channel: &str,
        rendition: &str,
        n: u64,
    ) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(&format!(
            "{SEGMENT_COLUMNS} WHERE channel = $1 AND rendition = $2 AND n = $3"
        ))
        .bind(channel)
        .bind(rendition)
        .bind(n as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(segment_row).transpose()
    }

    /// The segments of a rendition numbered `first_n..=last_n`, oldest first, at most `limit`.
    /// Served by the primary key, never a scan.
    pub async fn segments_between(
        &self,
        channel: &str,
        rendition: &str,
        first_n: u64,
        last_n: u64,
        limit: u32,
    ) -> Result<Vec<SegmentRow>> {
        let clamp = |n: u64| n.min(i64::MAX as u64) as i64;
        let rows = sqlx::query(&format!(
            "{SEGMENT_COLUMNS} WHERE channel = $1 AND rendition = $2 AND n >= $3 AND n <= $4 \
             ORDER BY n LIMIT $5"
        ))
        .bind(channel)
        .bind(rendition)
        .bind(clamp(first_n))
        .bind(clamp(last_n))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment_row).collect()
    }

    /// The oldest segments of a rendition numbered below `before_n`, at most `limit`: what
    /// retention removes next. Served by the primary key.
    pub async fn segments_before(
        &self,
        channel: &str,
        rendition: &str,
        before_n: u64,
        limit: u32,
    ) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!(
            "{SEGMENT_COLUMNS} WHERE channel = $1 AND rendition = $2 AND n < $3 ORDER BY n LIMIT $4"
        ))
        .bind(channel)
        .bind(rendition)
        .bind(before_n.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment_row).collect()
    }

    /// Every blob the catalog lists for a channel, for a repair: segments with their length,
    /// headers without.
    pub async fn blob_keys(&self, channel: &str) -> Result<Vec<(String, Option<u64>)>> {
        let rows = sqlx::query(
            "SELECT blob_key, byte_len FROM segments WHERE channel = $1
             UNION ALL SELECT blob_key, CAST(NULL AS BIGINT) FROM inits WHERE channel = $1
             UNION ALL SELECT blob_key, CAST(NULL AS BIGINT) FROM headers WHERE channel = $1",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let len: Option<i64> = r.try_get(1)?;
                Ok((r.try_get(0)?, len.map(|l| l as u64)))
            })
            .collect()
    }

    /// Unlists a segment (retention): its bytes may be deleted afterwards.
    pub async fn delete_segment(&self, channel: &str, rendition: &str, n: u64) -> Result<()> {
        sqlx::query("DELETE FROM segments WHERE channel = $1 AND rendition = $2 AND n = $3")
            .bind(channel)
            .bind(rendition)
            .bind(n as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_event(&self, e: &Event) -> Result<()> {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from));
        sqlx::query(
            "INSERT INTO events (channel, at_ms, source, kind, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&e.channel)
        .bind(e.at_ms as i64)
        .bind(&e.source)
        .bind(kind.unwrap_or_default())
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` events of a channel, newest first.
    pub async fn events(&self, channel: &str, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT channel, at_ms, source, kind, detail FROM events
             WHERE channel = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(channel)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            // A kind this build does not know (written by a newer one) is skipped, not fatal.
            let Ok(kind) = serde_json::from_value(serde_json::Value::String(kind)) else {
                continue;
            };
            events.push(Event {
                at_ms: r.try_get::<i64, _>("at_ms")? as u64,
                channel: r.try_get("channel")?,
                source: r.try_get("source")?,
                kind,
                detail: r.try_get("detail")?,
            });
        }
        Ok(events)
    }

    /// Forgets events older than `before_ms` (Unix milliseconds).
    pub async fn prune_events(&self, before_ms: u64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE at_ms < $1")
            .bind(before_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The statement that lists a segment unless a copy of its (channel, rendition, n) is listed.
pub(crate) fn insert_segment_query(
    s: &SegmentRow,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO segments
         (channel, rendition, n, feed, start, duration, timescale, byte_len, blob_key, quality,
          header, disc, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
    )
    .bind(&s.channel)
    .bind(&s.rendition)
    .bind(s.n as i64)
    .bind(s.feed.as_str())
    .bind(s.start as i64)
    .bind(s.duration as i64)
    .bind(s.timescale as i64)
    .bind(s.byte_len as i64)
    .bind(&s.blob_key)
    .bind(s.quality.map(i64::from))
    .bind(&s.header)
    .bind(i64::from(s.disc))
    .bind(s.listed_ms as i64)
}

const SEGMENT_COLUMNS: &str = "SELECT channel, rendition, n, feed, start, duration, timescale, \
                               byte_len, blob_key, quality, header, disc, stored_at FROM segments";

fn channel_row(r: &AnyRow) -> Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.try_get("id")?,
        spec: r.try_get("spec")?,
    })
}

fn segment_row(r: &AnyRow) -> Result<SegmentRow> {
    Ok(SegmentRow {
        channel: r.try_get("channel")?,
        rendition: r.try_get("rendition")?,
        n: r.try_get::<i64, _>("n")? as u64,
        feed: feed(r)?,
        start: r.try_get::<i64, _>("start")? as u64,
        duration: r.try_get::<i64, _>("duration")? as u64,
        timescale: r.try_get::<i64, _>("timescale")? as u32,
        byte_len: r.try_get::<i64, _>("byte_len")? as u64,
        blob_key: r.try_get("blob_key")?,
        quality: r
            .try_get::<Option<i64>, _>("quality")?
            .and_then(|q| u8::try_from(q).ok()),
        header: r.try_get("header")?,
        disc: u32::try_from(r.try_get::<i64, _>("disc")?).unwrap_or(0),
        listed_ms: r.try_get::<i64, _>("stored_at")?.max(0) as u64,
    })
}

fn feed(r: &AnyRow) -> Result<Feed> {
    let s: String = r.try_get("feed")?;
    Feed::from_str(&s).map_err(|e| sqlx::Error::Decode(e.into()).into())
}

/// A catalog URL for messages: without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact("postgres://steadycast:s3cr@t@db:5432/x"),
            "postgres://steadycast:***@db:5432/x"
        );
        assert_eq!(
            redact("sqlite://data/catalog.db"),
            "sqlite://data/catalog.db"
        );
    }
}
