//! Blocks and the suspicious-activity listing.

use super::{db_error, PgStore};
use chrono::{DateTime, Utc};
use colloquy_actors::store::{NewBlock, StoreError};
use std::net::IpAddr;
use uuid::Uuid;

/// A block as operators list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    /// Block id.
    pub id: Uuid,
    /// A blocked IP (an IPv6 one blocks its /64), or
    pub ip: Option<IpAddr>,
    /// a blocked visitor.
    pub distinct_id: Option<String>,
    /// Why.
    pub reason: String,
    /// `operator` or `detector`.
    pub source: String,
    /// When it ends; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl BlockRow {
    /// From `id, ip, distinct_id, reason, source, expires_at, created_at`.
    fn read(r: &tokio_postgres::Row) -> Self {
        Self {
            id: r.get(0),
            ip: r.get(1),
            distinct_id: r.get(2),
            reason: r.get(3),
            source: r.get(4),
            expires_at: r.get(5),
            created_at: r.get(6),
        }
    }
}

/// A visitor or IP the suspicion detector flagged, with everything it observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspiciousRow {
    /// The visitor, if known.
    pub distinct_id: Option<String>,
    /// The IP, if known.
    pub ip: Option<IpAddr>,
    /// Highest score.
    pub score: i32,
    /// Rules that fired.
    pub reasons: Vec<String>,
    /// Tickets involved.
    pub ticket_ids: Vec<Uuid>,
    /// Last observation.
    pub last_seen_at: DateTime<Utc>,
    /// Details, `; `-separated.
    pub details: Option<String>,
}

/// One unexpired block, as the request path checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBlock {
    /// The team.
    pub team_id: Uuid,
    /// A blocked IP, or
    pub ip: Option<IpAddr>,
    /// a blocked visitor.
    pub distinct_id: Option<String>,
}

impl PgStore {
    /// Stores the suspicion detector's automatic IP blocks.
    pub(super) async fn insert_detector_blocks(
        &self,
        blocks: &[NewBlock],
    ) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO blocks (id, team_id, ip, reason, source, expires_at)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::inet[], $4::text[],
                                      $5::text[], $6::timestamptz[])",
            )
            .await
            .map_err(db_error)?;
        let ids: Vec<Uuid> = blocks.iter().map(|_| Uuid::now_v7()).collect();
        let teams: Vec<Uuid> = blocks.iter().map(|b| b.team_id).collect();
        let ips: Vec<IpAddr> = blocks.iter().map(|b| b.ip).collect();
        let reasons: Vec<&str> = blocks.iter().map(|b| b.reason.as_str()).collect();
        let sources: Vec<&str> = blocks.iter().map(|_| "detector").collect();
        let expires: Vec<DateTime<Utc>> = blocks.iter().map(|b| b.expires_at).collect();
        client
            .execute(&stmt, &[&ids, &teams, &ips, &reasons, &sources, &expires])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Every unexpired block of every team (the in-memory block list's refresh).
    pub async fn active_blocks(&self) -> Result<Vec<ActiveBlock>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT team_id, ip, distinct_id FROM blocks
                 WHERE expires_at IS NULL OR expires_at > now()",
            )
            .await
            .map_err(db_error)?;
        let rows = client.query(&stmt, &[]).await.map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| ActiveBlock {
                team_id: r.get(0),
                ip: r.get(1),
                distinct_id: r.get(2),
            })
            .collect())
    }

    /// An operator's block; returns it as stored.
    pub async fn create_block(
        &self,
        team_id: Uuid,
        ip: Option<IpAddr>,
        distinct_id: Option<&str>,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<BlockRow, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO blocks (id, team_id, ip, distinct_id, reason, source, expires_at)
                 VALUES ($1, $2, $3, $4, $5, 'operator', $6)
                 RETURNING id, ip, distinct_id, reason, source, expires_at, created_at",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &ip,
                    &distinct_id,
                    &reason,
                    &expires_at,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(BlockRow::read(&row))
    }

    /// The team's unexpired blocks, newest first.
    pub async fn list_blocks(&self, team_id: Uuid) -> Result<Vec<BlockRow>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, ip, distinct_id, reason, source, expires_at, created_at FROM blocks
                 WHERE team_id = $1 AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY created_at DESC LIMIT 1000",
            )
            .await
            .map_err(db_error)?;
        let rows = client.query(&stmt, &[&team_id]).await.map_err(db_error)?;
        Ok(rows.iter().map(BlockRow::read).collect())
    }

    /// Removes a block; whether it existed (for this team).
    pub async fn delete_block(&self, team_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM blocks WHERE id = $1 AND team_id = $2")
            .await
            .map_err(db_error)?;
        Ok(client
            .execute(&stmt, &[&id, &team_id])
            .await
            .map_err(db_error)?
            > 0)
    }

    /// Visitors and IPs whose score reached `threshold` in the last `hours`, highest first,
    /// with their reasons and tickets.
    pub async fn suspicious(
        &self,
        team_id: Uuid,
        threshold: i16,
        hours: i32,
    ) -> Result<Vec<SuspiciousRow>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT distinct_id, ip, max(score)::int4, array_agg(DISTINCT reason),
                        array_remove(array_agg(DISTINCT ticket_id), NULL), max(observed_at),
                        string_agg(DISTINCT detail, '; ')
                 FROM suspicion_flags
                 WHERE team_id = $1 AND observed_at > now() - make_interval(hours => $3)
                 GROUP BY distinct_id, ip
                 HAVING max(score) >= $2
                 ORDER BY max(score) DESC, max(observed_at) DESC
                 LIMIT 500",
            )
            .await
            .map_err(db_error)?;
        let rows = client
            .query(&stmt, &[&team_id, &threshold, &hours])
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| SuspiciousRow {
                distinct_id: r.get(0),
                ip: r.get(1),
                score: r.get(2),
                reasons: r.get(3),
                ticket_ids: r.get(4),
                last_seen_at: r.get(5),
                details: r.get(6),
            })
            .collect())
    }
}
