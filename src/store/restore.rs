//! Restore by email: one-time tokens (stored as SHA-256, 60 minutes, single use, redeemed
//! atomically) and the outbox their mails go through. A mail's body holds a live link only
//! while it can still be delivered and used: it is redacted once delivered, and once its
//! token is used or expired ([`PgStore::redact_dead_links`]).

use super::{db_error, PgStore};
use crate::teams::token_digest;
use colloquy_actors::store::StoreError;
use uuid::Uuid;

/// The body a restore mail keeps once delivered: the link it carried is nobody's business.
const REDACTED_SENT: &str = "[redacted after delivery: the restore link is not kept]";
/// The body of a restore mail whose link was used or expired before it was sent.
const REDACTED_EXPIRED: &str = "[redacted: the restore link expired or was used before delivery]";
/// The body of a restore mail whose link was just used.
const REDACTED_USED: &str = "[redacted: the restore link was used]";

/// What redeeming a restore token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// No such token (for this team).
    Invalid,
    /// Older than 60 minutes.
    Expired,
    /// Already redeemed once.
    Used,
    /// The email's tickets now belong to the new session.
    Success(Vec<Uuid>),
}

/// A mail waiting for delivery.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Outbox row.
    pub id: i64,
    /// Address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Delivery attempts so far.
    pub attempts: i32,
}

impl PgStore {
    /// If the team has posthog-js tickets for `email`, stores a restore token and queues the
    /// mail `compose(token)` (subject, body) in one transaction. Returns whether a mail was
    /// queued. Called by the mailer's restore worker, never on the request path.
    pub async fn request_restore(
        &self,
        team_id: Uuid,
        email: &str,
        token: &str,
        compose: impl FnOnce(&str) -> (String, String),
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let exists = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM tickets WHERE team_id = $1
                   AND widget_session_id IS NOT NULL AND lower(traits->>'email') = lower($2))",
            )
            .await
            .map_err(db_error)?;
        if !tx
            .query_one(&exists, &[&team_id, &email])
            .await
            .map_err(db_error)?
            .get::<_, bool>(0)
        {
            return Ok(false);
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO restore_tokens (id, team_id, token_sha256, email, expires_at)
                 VALUES ($1, $2, $3, $4, now() + interval '60 minutes')",
            )
            .await
            .map_err(db_error)?;
        let token_id = Uuid::now_v7();
        tx.execute(
            &insert,
            &[&token_id, &team_id, &token_digest(token).as_slice(), &email],
        )
        .await
        .map_err(db_error)?;
        let (subject, body) = compose(token);
        let mail = tx
            .prepare_cached(
                "INSERT INTO outbox (team_id, recipient, subject, body, restore_token_id)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db_error)?;
        tx.execute(&mail, &[&team_id, &email, &subject, &body, &token_id])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Redeems a token once: marks it used and moves the email's tickets to `session`.
    pub async fn redeem_restore(
        &self,
        team_id: Uuid,
        token: &str,
        session: Uuid,
    ) -> Result<Redeemed, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let find = tx
            .prepare_cached(
                "SELECT id, email, expires_at < now(), used_at IS NOT NULL FROM restore_tokens
                 WHERE team_id = $1 AND token_sha256 = $2 FOR UPDATE",
            )
            .await
            .map_err(db_error)?;
        let Some(row) = tx
            .query_opt(&find, &[&team_id, &token_digest(token).as_slice()])
            .await
            .map_err(db_error)?
        else {
            return Ok(Redeemed::Invalid);
        };
        let (id, email, expired, used): (Uuid, String, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if used {
            return Ok(Redeemed::Used);
        }
        if expired {
            return Ok(Redeemed::Expired);
        }
        let mark = tx
            .prepare_cached("UPDATE restore_tokens SET used_at = now() WHERE id = $1")
            .await
            .map_err(db_error)?;
        tx.execute(&mark, &[&id]).await.map_err(db_error)?;
        // The link is spent: its mail no longer needs it (nor to be sent).
        let redact = tx
            .prepare_cached(
                "UPDATE outbox SET body = $2, redacted_at = now()
                 WHERE restore_token_id = $1 AND redacted_at IS NULL",
            )
            .await
            .map_err(db_error)?;
        tx.execute(&redact, &[&id, &REDACTED_USED])
            .await
            .map_err(db_error)?;
        let moved = tx
            .prepare_cached(
                "UPDATE tickets SET widget_session_id = $3, version = version + 1
                 WHERE team_id = $1 AND widget_session_id IS NOT NULL
                   AND lower(traits->>'email') = lower($2)
                 RETURNING id",
            )
            .await
            .map_err(db_error)?;
        let rows = tx
            .query(&moved, &[&team_id, &email, &session])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Redeemed::Success(rows.iter().map(|r| r.get(0)).collect()))
    }

    /// Claims up to `limit` due mails for a minute (so another node's mailer skips them).
    pub async fn claim_mail(&self, limit: i64) -> Result<Vec<Mail>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE outbox SET next_attempt_at = now() + interval '1 minute'
                 WHERE id IN (SELECT id FROM outbox
                              WHERE sent_at IS NULL AND redacted_at IS NULL
                                AND next_attempt_at <= now() AND attempts < 10
                              ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, recipient, subject, body, attempts",
            )
            .await
            .map_err(db_error)?;
        let rows = client.query(&stmt, &[&limit]).await.map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| Mail {
                id: r.get(0),
                recipient: r.get(1),
                subject: r.get(2),
                body: r.get(3),
                attempts: r.get(4),
            })
            .collect())
    }

    /// Records a delivery (`error` None), redacting the body it no longer needs, or a
    /// failure with the next attempt's delay.
    pub async fn mail_result(
        &self,
        id: i64,
        error: Option<&str>,
        retry_in_secs: i32,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1,
                     sent_at = CASE WHEN $2::text IS NULL THEN now() END,
                     body = CASE WHEN $2::text IS NULL THEN $4 ELSE body END,
                     redacted_at = CASE WHEN $2::text IS NULL THEN now() END,
                     last_error = $2,
                     next_attempt_at = now() + make_interval(secs => $3)
                 WHERE id = $1",
            )
            .await
            .map_err(db_error)?;
        client
            .execute(
                &stmt,
                &[&id, &error, &f64::from(retry_in_secs), &REDACTED_SENT],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Redacts the bodies of unsent restore mails whose token expired or was used (they are
    /// not sent any more), and deletes tokens a day past their expiry with their mails.
    /// Returns how many mails were redacted and how many tokens deleted.
    pub async fn redact_dead_links(&self) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let redact = client
            .prepare_cached(
                "UPDATE outbox o SET body = $1, redacted_at = now()
                 FROM restore_tokens r
                 WHERE o.restore_token_id = r.id AND o.redacted_at IS NULL
                   AND (r.expires_at <= now() OR r.used_at IS NOT NULL)",
            )
            .await
            .map_err(db_error)?;
        let redacted = client
            .execute(&redact, &[&REDACTED_EXPIRED])
            .await
            .map_err(db_error)?;
        let forget = client
            .prepare_cached(
                "DELETE FROM restore_tokens WHERE expires_at < now() - interval '1 day'",
            )
            .await
            .map_err(db_error)?;
        let deleted = client.execute(&forget, &[]).await.map_err(db_error)?;
        Ok((redacted, deleted))
    }
}
