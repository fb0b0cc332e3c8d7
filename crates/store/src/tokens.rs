//! The control API's tokens: a name, a scope and the hash of the secret (never the secret).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::catalog::now_millis;
use crate::{Catalog, Result};

/// A token as listed: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub name: String,
    /// `read`, `operator` or `admin`.
    pub scope: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl Catalog {
    /// Records a new token; false when a live token has that name (a revoked one's name is
    /// taken over).
    pub async fn insert_token(&self, name: &str, scope: &str, hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO api_tokens (name, scope, hash, created_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (name) DO UPDATE SET scope = excluded.scope, hash = excluded.hash,
                 created_ms = excluded.created_ms, revoked_ms = NULL
             WHERE api_tokens.revoked_ms IS NOT NULL",
        )
        .bind(name)
        .bind(scope)
        .bind(hash)
        .bind(now_millis())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes `name` the token with `hash`, live, whatever it was (a token from config).
    pub async fn put_token(&self, name: &str, scope: &str, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (name, scope, hash, created_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (name) DO UPDATE SET scope = excluded.scope, hash = excluded.hash,
                 revoked_ms = NULL",
        )
        .bind(name)
        .bind(scope)
        .bind(hash)
        .bind(now_millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live token whose secret hashes to `hash`: its name and scope.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT name, scope FROM api_tokens WHERE hash = $1 AND revoked_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((r.try_get("name")?, r.try_get("scope")?)))
            .transpose()
    }

    /// Every token, live and revoked, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows =
            sqlx::query("SELECT name, scope, created_ms, revoked_ms FROM api_tokens ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(token_row).collect()
    }

    /// Whether any token is live.
    pub async fn has_live_token(&self) -> Result<bool> {
        let row = sqlx::query("SELECT name FROM api_tokens WHERE revoked_ms IS NULL LIMIT 1")
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Revokes a live token; false when there is none of that name.
    pub async fn revoke_token(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
        )
        .bind(now_millis())
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn token_row(r: &AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get("name")?,
        scope: r.try_get("scope")?,
        created_ms: r.try_get::<i64, _>("created_ms")? as u64,
        revoked_ms: r
            .try_get::<Option<i64>, _>("revoked_ms")?
            .map(|ms| ms as u64),
    })
}
