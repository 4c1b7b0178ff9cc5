//! Team queries.

use super::{db_error, PgStore};
use crate::teams::{token_digest, Team};
use colloquy_actors::domain::{AllowedDomains, RateLimits};
use colloquy_actors::store::StoreError;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

const TEAM_COLUMNS: &str = "id, name, public_token, conversations_enabled, allowed_widget_domains,
    rate_limits, identity_verification, identity_secret";

fn team_from_row(r: &Row) -> Team {
    let limits: Json<serde_json::Value> = r.get("rate_limits");
    Team {
        id: r.get("id"),
        name: r.get("name"),
        public_token: r.get("public_token"),
        conversations_enabled: r.get("conversations_enabled"),
        allowed_widget_domains: AllowedDomains::new(
            r.get::<_, Vec<String>>("allowed_widget_domains"),
        ),
        // Stored limits were validated on the way in; keys added later take their defaults.
        rate_limits: RateLimits::default()
            .merge_json(&limits.0)
            .unwrap_or_default(),
        identity_verification: r.get("identity_verification"),
        identity_secret: r.get("identity_secret"),
    }
}

impl PgStore {
    /// Stores a new team; only digests of its tokens are indexed, the secret key only hashed.
    pub async fn insert_team(
        &self,
        team: &Team,
        secret_digest: &[u8; 32],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO teams (id, name, public_token, public_token_sha256, secret_key_sha256,
                     identity_secret, identity_verification, conversations_enabled,
                     allowed_widget_domains, rate_limits)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .await
            .map_err(db_error)?;
        let limits = serde_json::to_value(team.rate_limits)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        client
            .execute(
                &stmt,
                &[
                    &team.id,
                    &team.name,
                    &team.public_token,
                    &token_digest(&team.public_token).as_slice(),
                    &secret_digest.as_slice(),
                    &team.identity_secret,
                    &team.identity_verification,
                    &team.conversations_enabled,
                    &team.allowed_widget_domains.entries(),
                    &Json(limits),
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn team_where(&self, condition: &str, digest: &[u8]) -> Result<Option<Team>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE {condition} = $1");
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&digest])
            .await
            .map_err(db_error)?;
        Ok(row.as_ref().map(team_from_row))
    }

    /// The team owning a widget token (by its digest).
    pub async fn team_by_public_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<Team>, StoreError> {
        self.team_where("public_token_sha256", digest).await
    }

    /// The team owning an operator key (by its digest).
    pub async fn team_by_secret_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<Team>, StoreError> {
        self.team_where("secret_key_sha256", digest).await
    }

    /// The oldest team with this name (for `team create --if-not-exists`).
    pub async fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1 ORDER BY created_at LIMIT 1");
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client.query_opt(&stmt, &[&name]).await.map_err(db_error)?;
        Ok(row.as_ref().map(team_from_row))
    }
}
