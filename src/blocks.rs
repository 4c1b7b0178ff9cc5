//! The block list every request checks: unexpired blocks of all teams, held in memory and
//! refreshed from the database every 2 seconds (so a block set on any node, or by the
//! suspicion detector, takes effect everywhere within that time, and at once on the node
//! that set it). Checking is a read of an immutable snapshot: no lock is held for long.
//!
//! IP blocks match the client's network as [`client_network`] keys it: a block of one IPv6
//! address blocks its whole /64 (a client rotates through its /64 at will), and an
//! IPv4-mapped IPv6 address matches the IPv4 block.

use crate::store::{ActiveBlock, PgStore};
use colloquy_actors::domain::client_network;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use uuid::Uuid;

/// Blocks by team (team ids are the server's, so the fast hasher; the sets keep SipHash).
type TeamMap = HashMap<Uuid, TeamBlocks, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct TeamBlocks {
    ips: HashSet<IpAddr>,
    distinct_ids: HashSet<String>,
}

/// The shared snapshot of active blocks.
#[derive(Clone, Default)]
pub struct BlockList {
    snapshot: Arc<RwLock<Arc<TeamMap>>>,
}

impl BlockList {
    /// Whether the IP (its network: an IPv6 /64), or the visitor, is blocked for the team.
    pub fn is_blocked(&self, team_id: Uuid, ip: IpAddr, distinct_id: Option<&str>) -> bool {
        let snapshot = match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        snapshot.get(&team_id).is_some_and(|t| {
            t.ips.contains(&client_network(ip))
                || distinct_id.is_some_and(|d| t.distinct_ids.contains(d))
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
        let mut map = TeamMap::default();
        for b in rows {
            let t = map.entry(b.team_id).or_default();
            if let Some(ip) = b.ip {
                t.ips.insert(client_network(ip));
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

    #[test]
    fn an_ipv6_block_covers_its_64_and_an_ipv4_block_its_mapped_form() {
        let team = Uuid::now_v7();
        let list = BlockList::default();
        let block = |ip: &str| ActiveBlock {
            team_id: team,
            ip: Some(ip.parse().unwrap()),
            distinct_id: None,
        };
        list.replace(vec![block("2001:db8:1:2::5"), block("198.51.100.7")]);
        let blocked = |ip: &str| list.is_blocked(team, ip.parse().unwrap(), None);
        assert!(blocked("2001:db8:1:2::5"));
        assert!(blocked("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert!(!blocked("2001:db8:1:3::5"));
        assert!(blocked("198.51.100.7"));
        assert!(blocked("::ffff:198.51.100.7"));
        assert!(!blocked("198.51.100.8"));
    }
}
