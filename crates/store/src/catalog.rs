use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channel::Event;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use timeline::Feed;

use crate::Result;

/// The index of a node's durable state: channels, CMAF headers and kept segments.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: SqlitePool,
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
    /// Opens (creating if needed) the SQLite catalog at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn put_channel(&self, id: &str, spec: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO channels (id, spec, created_at) VALUES (?, ?, ?)
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
        let done = sqlx::query("DELETE FROM channels WHERE id = ?")
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
        let row = sqlx::query("SELECT id, spec FROM channels WHERE id = ?")
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel, rendition, feed)
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
             WHERE channel = ? ORDER BY rendition, stored_at",
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
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
             WHERE channel = ? ORDER BY stored_at, rendition",
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
            "UPDATE segments SET header = ? WHERE channel = ? AND rendition = ? AND header IS NULL",
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
            "INSERT INTO periods (channel, n, start_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
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
        let rows = sqlx::query("SELECT n, start_ms FROM periods WHERE channel = ? ORDER BY n")
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
            "DELETE FROM periods WHERE channel = ? AND n < (SELECT n FROM periods \
             WHERE channel = ? AND n <= ? ORDER BY n DESC LIMIT 1 OFFSET 1)",
        )
        .bind(channel)
        .bind(channel)
        .bind(n.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lists a stored segment. Returns false when a copy of (channel, rendition, n) is already
    /// listed: the first complete copy wins and listed bytes never change.
    pub async fn insert_segment(&self, s: &SegmentRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO segments
             (channel, rendition, n, feed, start, duration, timescale, byte_len, blob_key, quality,
              header, disc, stored_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn segment(
        &self,
        channel: &str,
        rendition: &str,
        n: u64,
    ) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(&format!(
            "{SEGMENT_COLUMNS} WHERE channel = ? AND rendition = ? AND n = ?"
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
            "{SEGMENT_COLUMNS} WHERE channel = ? AND rendition = ? AND n >= ? AND n <= ? \
             ORDER BY n LIMIT ?"
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
            "{SEGMENT_COLUMNS} WHERE channel = ? AND rendition = ? AND n < ? ORDER BY n LIMIT ?"
        ))
        .bind(channel)
        .bind(rendition)
        .bind(before_n.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment_row).collect()
    }

    /// Every blob key the catalog lists for a channel (segments and headers), for a repair.
    pub async fn blob_keys(&self, channel: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT blob_key FROM segments WHERE channel = ?
             UNION ALL SELECT blob_key FROM inits WHERE channel = ?
             UNION ALL SELECT blob_key FROM headers WHERE channel = ?",
        )
        .bind(channel)
        .bind(channel)
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("blob_key")?)).collect()
    }

    /// Unlists a segment (retention): its bytes may be deleted afterwards.
    pub async fn delete_segment(&self, channel: &str, rendition: &str, n: u64) -> Result<()> {
        sqlx::query("DELETE FROM segments WHERE channel = ? AND rendition = ? AND n = ?")
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
            "INSERT INTO events (channel, at_ms, source, kind, detail) VALUES (?, ?, ?, ?, ?)",
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
             WHERE channel = ? ORDER BY id DESC LIMIT ?",
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
        let done = sqlx::query("DELETE FROM events WHERE at_ms < ?")
            .bind(before_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const SEGMENT_COLUMNS: &str = "SELECT channel, rendition, n, feed, start, duration, timescale, \
                               byte_len, blob_key, quality, header, disc FROM segments";

fn channel_row(r: &SqliteRow) -> Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.try_get("id")?,
        spec: r.try_get("spec")?,
    })
}

fn segment_row(r: &SqliteRow) -> Result<SegmentRow> {
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
    })
}

fn feed(r: &SqliteRow) -> Result<Feed> {
    let s: String = r.try_get("feed")?;
    Feed::from_str(&s).map_err(|e| sqlx::Error::Decode(e.into()).into())
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel::EventKind;

    async fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_sqlite(&dir.path().join("catalog.db"))
            .await
            .unwrap();
        (dir, catalog)
    }

    fn segment(n: u64, feed: Feed) -> SegmentRow {
        SegmentRow {
            channel: "demo".into(),
            rendition: "360p".into(),
            n,
            feed,
            start: n * 180_000,
            duration: 180_000,
            timescale: 90_000,
            byte_len: 1000 + n,
            blob_key: format!("live/demo/360p/{n}.m4s"),
            quality: n.is_multiple_of(2).then_some(90),
            header: Some("00000000000000ab".into()),
            disc: 3,
        }
    }

    #[tokio::test]
    async fn first_copy_of_a_segment_wins() {
        let (_dir, catalog) = catalog().await;
        assert!(
            catalog
                .insert_segment(&segment(897_808_074, Feed::B))
                .await
                .unwrap()
        );
        assert!(
            !catalog
                .insert_segment(&segment(897_808_074, Feed::A))
                .await
                .unwrap()
        );
        let kept = catalog
            .segment("demo", "360p", 897_808_074)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept, segment(897_808_074, Feed::B));
    }

    #[tokio::test]
    async fn retention_finds_and_unlists_the_oldest() {
        let (_dir, catalog) = catalog().await;
        for n in 100..110 {
            catalog.insert_segment(&segment(n, Feed::A)).await.unwrap();
        }
        let old = catalog
            .segments_before("demo", "360p", 104, 3)
            .await
            .unwrap();
        assert_eq!(old.iter().map(|s| s.n).collect::<Vec<_>>(), [100, 101, 102]);
        for s in &old {
            catalog.delete_segment("demo", "360p", s.n).await.unwrap();
        }
        let left = catalog
            .segments_before("demo", "360p", 104, 10)
            .await
            .unwrap();
        assert_eq!(left.iter().map(|s| s.n).collect::<Vec<_>>(), [103]);
        assert!(
            catalog
                .segment("demo", "360p", 100)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            catalog
                .segment("demo", "360p", 104)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn events_newest_first_and_pruned() {
        let (_dir, catalog) = catalog().await;
        for (i, kind) in [
            EventKind::InputStarted,
            EventKind::EncoderStarted,
            EventKind::EncoderRestarted,
        ]
        .into_iter()
        .enumerate()
        {
            let event = Event {
                at_ms: 1_000 + i as u64,
                channel: "demo".into(),
                source: "pipeline a".into(),
                kind,
                detail: format!("#{i}"),
            };
            catalog.insert_event(&event).await.unwrap();
        }
        let events = catalog.events("demo", 2).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::EncoderRestarted, EventKind::EncoderStarted]
        );
        assert!(catalog.events("other", 10).await.unwrap().is_empty());
        assert_eq!(catalog.prune_events(1_002).await.unwrap(), 2);
        assert_eq!(catalog.events("demo", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn channels_and_inits_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let catalog = Catalog::open_sqlite(&path).await.unwrap();
            catalog
                .put_channel("demo", r#"{"id":"demo"}"#)
                .await
                .unwrap();
            catalog.put_channel("news", "{}").await.unwrap();
            assert!(catalog.delete_channel("news").await.unwrap());
            let init = InitRow {
                channel: "demo".into(),
                rendition: "360p".into(),
                feed: Feed::A,
                blob_key: "live/demo/360p/init.mp4".into(),
                track: "{}".into(),
            };
            assert!(catalog.put_init(&init).await.unwrap());
            assert!(!catalog.put_init(&init).await.unwrap());
            let newer = InitRow {
                blob_key: "live/demo/360p/init-00000000000000ab.mp4".into(),
                ..init.clone()
            };
            assert!(catalog.put_init(&newer).await.unwrap(), "the latest wins");
            catalog.close().await;
        }
        let catalog = Catalog::open_sqlite(&path).await.unwrap();
        let channels = catalog.channels().await.unwrap();
        assert_eq!(
            channels,
            [ChannelRow {
                id: "demo".into(),
                spec: r#"{"id":"demo"}"#.into()
            }]
        );
        let inits = catalog.inits("demo").await.unwrap();
        assert_eq!(inits.len(), 1);
        assert!(inits[0].blob_key.ends_with("init-00000000000000ab.mp4"));
        assert_eq!(catalog.headers("demo").await.unwrap(), []);
        assert!(catalog.channel("news").await.unwrap().is_none());
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[tokio::test]
    async fn headers_are_kept_once_and_periods_pruned_behind_the_one_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap();
        let header = HeaderRow {
            channel: "demo".into(),
            rendition: "360p".into(),
            id: "0123456789abcdef".into(),
            blob_key: "live/demo/360p/init-0123456789abcdef.mp4".into(),
        };
        assert!(catalog.put_header(&header).await.unwrap());
        assert!(!catalog.put_header(&header).await.unwrap());
        assert_eq!(catalog.headers("demo").await.unwrap(), [header]);
        assert_eq!(catalog.blob_keys("demo").await.unwrap().len(), 1);

        for n in [100, 200, 300, 400] {
            catalog.put_period("demo", n, n * 2000).await.unwrap();
        }
        catalog.put_period("demo", 200, 1).await.unwrap();
        catalog.delete_periods_before("demo", 350).await.unwrap();
        // 300 is in force at 350, and continues 200: only 100 goes.
        assert_eq!(
            catalog.periods("demo").await.unwrap(),
            [(200, 400_000), (300, 600_000), (400, 800_000)]
        );
        catalog.delete_periods_before("demo", 50).await.unwrap();
        catalog.delete_periods_before("demo", 250).await.unwrap();
        assert_eq!(catalog.periods("demo").await.unwrap().len(), 3);
    }
}
