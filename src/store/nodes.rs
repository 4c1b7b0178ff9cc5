//! The node registry (`nodes`): who serves this database, whether they announce changes.

use super::{db_error, PgStore};
use colloquy_actors::store::StoreError;
use std::time::Duration;
use uuid::Uuid;

impl PgStore {
    /// Adds this node to the registry, forgetting nodes silent for an hour and an earlier
    /// node of the same name (`host:port`: this one's crashed predecessor).
    pub async fn register_node(&self, id: Uuid, name: &str, feed: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM nodes WHERE heartbeat_at < now() - interval '1 hour' OR name = $1",
                &[&name],
            )
            .await
            .map_err(db_error)?;
        client
            .execute(
                "INSERT INTO nodes (id, name, feed) VALUES ($1, $2, $3)",
                &[&id, &name, &feed],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Records this node's heartbeat and returns the change feed of every other node seen
    /// within `window`.
    pub async fn node_heartbeat(
        &self,
        id: Uuid,
        name: &str,
        feed: &str,
        window: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let millis = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "WITH beat AS (
                     INSERT INTO nodes (id, name, feed) VALUES ($1, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
                 )
                 SELECT feed FROM nodes
                 WHERE id <> $1 AND heartbeat_at > now() - make_interval(secs => $2::bigint / 1000.0)",
                &[&id, &millis, &name, &feed],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Leaves the registry (at shutdown).
    pub async fn deregister_node(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM nodes WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Tells the other nodes someone is typing (there is no commit to raise it).
    pub async fn announce_typing(
        &self,
        node: Uuid,
        ticket_id: Uuid,
        customer: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let payload = format!("y {node} {ticket_id} {}", if customer { "c" } else { "o" });
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&crate::cluster::feed::CHANNEL, &payload],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
