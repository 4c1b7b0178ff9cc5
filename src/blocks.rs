//! The block list every request checks: unexpired blocks of all teams, held in memory and
//! refreshed from the database every 2 seconds (so a block set on any node, or by the
//! suspicion detector, takes effect everywhere within that time, and at once on the node
//! that set it). Checking is a read of an immutable snapshot: no lock is held for long.

use crate::store::{ActiveBlock, PgStore};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Default)]
struct TeamBlocks {
    ips: HashSet<IpAddr>,
    distinct_ids: HashSet<String>,
}

/// The shared snapshot of active blocks.
#[derive(Clone, Default)]
pub struct BlockList {
    snapshot: Arc<RwLock<Arc<HashMap<Uuid, TeamBlocks>>>>,
}

impl BlockList {
    /// Whether the IP, or the visitor, is blocked for the team.
    pub fn is_blocked(&self, team_id: Uuid, ip: IpAddr, distinct_id: Option<&str>) -> bool {
        let snapshot = match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        snapshot.get(&team_id).is_some_and(|t| {
            t.ips.contains(&ip) || distinct_id.is_some_and(|d| t.distinct_ids.contains(d))
        })
    }

    /// Reloads the snapshot from the database; on failure the old one stays.
    pub async fn refresh(&self, store: &PgStore) {
        match store.active_blocks().await {
            Ok(rows) => self.replace(rows),
            Err(e) => tracing::debug!(error = %e, "block list not refreshed"),
        }
    }

    fn replace(&self, rows: Vec<ActiveBlock>) {
        let mut map: HashMap<Uuid, TeamBlocks> = HashMap::new();
        for b in rows {
            let t = map.entry(b.team_id).or_default();
            if let Some(ip) = b.ip {
                t.ips.insert(ip);
            }
            if let Some(d) = b.distinct_id {
                t.distinct_ids.insert(d);
            }
        }
        let fresh = Arc::new(map);
        match self.snapshot.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// Refreshes every 2 seconds for as long as the System runs.
    pub fn keep_fresh(&self, store: PgStore) {
        let list = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                list.refresh(&store).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_apply_per_team_to_ips_and_visitors() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let list = BlockList::default();
        list.replace(vec![
            ActiveBlock {
                team_id: a,
                ip: Some(ip),
                distinct_id: None,
            },
            ActiveBlock {
                team_id: a,
                ip: None,
                distinct_id: Some("spam@x.test".into()),
            },
        ]);
        assert!(list.is_blocked(a, ip, None));
        assert!(list.is_blocked(a, "198.51.100.1".parse().unwrap(), Some("spam@x.test")));
        assert!(!list.is_blocked(a, "198.51.100.1".parse().unwrap(), Some("ann@x.test")));
        assert!(
            !list.is_blocked(b, ip, Some("spam@x.test")),
            "another team is unaffected"
        );
        list.replace(vec![]);
        assert!(
            !list.is_blocked(a, ip, None),
            "a removed block lapses at the next refresh"
        );
    }
}
