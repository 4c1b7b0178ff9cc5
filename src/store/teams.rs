//! Team queries.

use super::{db_error, PgStore};
use crate::teams::{token_digest, SettingsPatch, Team};
use colloquy_actors::domain::{
    AllowedDomains, IdentityVerification, RateLimits, SuspicionSettings,
};
use colloquy_actors::store::StoreError;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

const TEAM_COLUMNS: &str = "id, name, public_token, conversations_enabled, allowed_widget_domains,
    rate_limits, identity_verification, identity_secret, notification_recipients, suspicion";

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
        identity_verification: IdentityVerification::from_stored(
            r.get::<_, &str>("identity_verification"),
        ),
        identity_secret: r.get("identity_secret"),
        notification_recipients: r.get("notification_recipients"),
        suspicion: SuspicionSettings::default()
            .merge_json(&r.get::<_, Json<serde_json::Value>>("suspicion").0)
            .unwrap_or_default(),
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
                     allowed_widget_domains, rate_limits, suspicion)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(db_error)?;
        let limits = serde_json::to_value(team.rate_limits)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let suspicion = serde_json::to_value(team.suspicion)
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
                    &team.identity_verification.as_str(),
                    &team.conversations_enabled,
                    &team.allowed_widget_domains.entries(),
                    &Json(limits),
                    &Json(suspicion),
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn team_where(&self, condition: &str, digest: &[u8]) -> Result<Option<Team>, StoreError> {
        let client = self.reader().await?;
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

    /// Applies a settings change and returns the team as it now is.
    pub async fn update_settings(
        &self,
        team_id: uuid::Uuid,
        p: &SettingsPatch,
    ) -> Result<Option<Team>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE teams SET
                 conversations_enabled = COALESCE($2, conversations_enabled),
                 allowed_widget_domains = COALESCE($3, allowed_widget_domains),
                 rate_limits = COALESCE($4, rate_limits),
                 identity_verification = COALESCE($5, identity_verification),
                 notification_recipients = COALESCE($6, notification_recipients),
                 suspicion = COALESCE($7, suspicion)
             WHERE id = $1 RETURNING {TEAM_COLUMNS}"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let limits = p
            .rate_limits
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map(Json);
        let domains = p
            .allowed_widget_domains
            .as_ref()
            .map(|d| d.entries().to_vec());
        let suspicion = p
            .suspicion
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map(Json);
        let row = client
            .query_opt(
                &stmt,
                &[
                    &team_id,
                    &p.conversations_enabled,
                    &domains,
                    &limits,
                    &p.identity_verification.map(IdentityVerification::as_str),
                    &p.notification_recipients,
                    &suspicion,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(row.as_ref().map(team_from_row))
    }

    /// Replaces the widget token; the old one stops working at once.
    pub async fn set_public_token(
        &self,
        team_id: uuid::Uuid,
        token: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE teams SET public_token = $2, public_token_sha256 = $3 WHERE id = $1",
            )
            .await
            .map_err(db_error)?;
        client
            .execute(&stmt, &[&team_id, &token, &token_digest(token).as_slice()])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Replaces the identity verification secret.
    pub async fn set_identity_secret(
        &self,
        team_id: uuid::Uuid,
        secret: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("UPDATE teams SET identity_secret = $2 WHERE id = $1")
            .await
            .map_err(db_error)?;
        client
            .execute(&stmt, &[&team_id, &secret])
            .await
            .map_err(db_error)?;
        Ok(())
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
