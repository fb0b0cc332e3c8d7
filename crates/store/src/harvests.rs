//! Harvest jobs in the catalog: what was asked, how far it got, how it ended.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Catalog, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HarvestRow {
    /// Also the asset's prefix in the store: `vod/{name}/`.
    pub name: String,
    pub channel: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Percent of segments copied.
    pub progress: u8,
    /// What happened (the error when failed).
    pub detail: String,
}

impl Catalog {
    /// Records a new job; false when the name is taken.
    pub async fn insert_harvest(&self, job: &HarvestRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO harvests (name, channel, start_ms, end_ms, state, progress, detail, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&job.name)
        .bind(&job.channel)
        .bind(job.start_ms as i64)
        .bind(job.end_ms as i64)
        .bind(&job.state)
        .bind(i64::from(job.progress))
        .bind(&job.detail)
        .bind(crate::catalog::now_millis())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn update_harvest(
        &self,
        name: &str,
        state: &str,
        progress: u8,
        detail: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE harvests SET state = $1, progress = $2, detail = $3 WHERE name = $4")
            .bind(state)
            .bind(i64::from(progress))
            .bind(detail)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn harvest(&self, name: &str) -> Result<Option<HarvestRow>> {
        let row = sqlx::query(&format!("{COLUMNS} WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(harvest_row).transpose()
    }

    /// A channel's jobs, newest first.
    pub async fn harvests(&self, channel: &str) -> Result<Vec<HarvestRow>> {
        let rows = sqlx::query(&format!(
            "{COLUMNS} WHERE channel = $1 ORDER BY created_ms DESC LIMIT 100"
        ))
        .bind(channel)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(harvest_row).collect()
    }
}

const COLUMNS: &str =
    "SELECT name, channel, start_ms, end_ms, state, progress, detail FROM harvests";

fn harvest_row(r: &AnyRow) -> Result<HarvestRow> {
    Ok(HarvestRow {
        name: r.try_get("name")?,
        channel: r.try_get("channel")?,
        start_ms: r.try_get::<i64, _>("start_ms")? as u64,
        end_ms: r.try_get::<i64, _>("end_ms")? as u64,
        state: r.try_get("state")?,
        progress: r.try_get::<i64, _>("progress")?.clamp(0, 100) as u8,
        detail: r.try_get("detail")?,
    })
}
