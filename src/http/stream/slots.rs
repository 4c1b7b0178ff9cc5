//! The caps on open streams: per client IP (IPv6 by its /64), per team and in total, so no
//! one client or tenant can hold every connection. The visitor's and the operators' streams
//! both take a slot before they subscribe ([`OpenStream`]) and give it back when they end.

use super::super::errors::ApiError;
use super::super::AppState;
use crate::config::StreamSettings;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// `Retry-After` of a stream refused by a cap: streams end and free slots all the time.
const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Which cap refused a stream; the label it is counted under in
/// `colloquy_rate_limited_total{tier}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    /// Streams per client IP (IPv6: per /64).
    Ip,
    /// Streams per team.
    Team,
    /// Streams in the process.
    Total,
}

impl StreamCap {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamCap::Ip => "stream_ip",
            StreamCap::Team => "stream_team",
            StreamCap::Total => "stream_total",
        }
    }
}

/// The key a client IP is counted under: IPv4 as it is, IPv6 by its /64 (what one
/// subscriber is given: rotating the low 64 bits buys no new streams), an IPv4-mapped
/// IPv6 address as its IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_team: HashMap<Uuid, usize>,
}

/// The open streams per client IP, per team and in total, so no one client or tenant can
/// hold every connection. A stream takes a [`StreamSlot`] before it subscribes and gives
/// it back when it ends. Entries exist only while streams are open, so the maps are
/// bounded by the total cap.
#[derive(Clone)]
pub struct StreamSlots {
    limits: StreamSettings,
    counts: Arc<Mutex<Counts>>,
}

impl StreamSlots {
    /// Slots bounded by `limits`.
    pub fn new(limits: StreamSettings) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// How long a stream may live.
    pub fn max_lifetime(&self) -> Duration {
        self.limits.max_lifetime
    }

    /// Takes a slot for a stream of `team` from `ip`, or names the cap that is full.
    pub fn acquire(&self, team: Uuid, ip: IpAddr) -> Result<StreamSlot, StreamCap> {
        let ip = ip_key(ip);
        let mut c = self.lock();
        if c.total >= self.limits.total {
            return Err(StreamCap::Total);
        }
        if c.per_team.get(&team).copied().unwrap_or(0) >= self.limits.per_team {
            return Err(StreamCap::Team);
        }
        if c.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip {
            return Err(StreamCap::Ip);
        }
        c.total += 1;
        *c.per_team.entry(team).or_default() += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            team,
            ip,
        })
    }

    /// Open streams now: in total, of a team, from an IP's key.
    #[cfg(test)]
    fn open(&self, team: Uuid, ip: IpAddr) -> (usize, usize, usize) {
        let c = self.lock();
        (
            c.total,
            c.per_team.get(&team).copied().unwrap_or(0),
            c.per_ip.get(&ip_key(ip)).copied().unwrap_or(0),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: each change is one step.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, team: Uuid, ip: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
            if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(key) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        down(&mut c.per_team, team);
        down(&mut c.per_ip, ip);
    }
}

/// One open stream's place under the caps; given back when dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    team: Uuid,
    ip: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.release(self.team, self.ip);
    }
}

/// Counts a stream as open, and holds its slot under the stream caps, for as long as it
/// lives; the visitor's and the operators' streams alike.
pub(in crate::http) struct OpenStream {
    gauge: prometheus::IntGauge,
    _slot: StreamSlot,
}

impl OpenStream {
    /// Takes a slot for a stream of `team` from `ip`; a full cap answers `429` (counted).
    pub(in crate::http) fn acquire(
        state: &AppState,
        team: Uuid,
        ip: IpAddr,
    ) -> Result<Self, ApiError> {
        let slot = state.streams.acquire(team, ip).map_err(|cap| {
            state
                .metrics
                .rate_limited
                .with_label_values(&[cap.as_str()])
                .inc();
            ApiError::RateLimited(CAP_RETRY_AFTER)
        })?;
        let gauge = state.metrics.streams_open.clone();
        gauge.inc();
        Ok(Self { gauge, _slot: slot })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_as_it_is() {
        assert_eq!(ip_key(ip("2001:db8:1:2::a")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff:1:2:3")), ip("2001:db8:1:2::"));
        assert_ne!(ip_key(ip("2001:db8:1:3::a")), ip_key(ip("2001:db8:1:2::a")));
        assert_eq!(ip_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(ip_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }

    fn slots(per_ip: usize, per_team: usize, total: usize) -> StreamSlots {
        StreamSlots::new(StreamSettings {
            per_ip,
            per_team,
            total,
            max_lifetime: Duration::from_secs(60),
        })
    }

    #[test]
    fn each_cap_refuses_the_stream_beyond_it_and_a_dropped_slot_frees_its_place() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let s = slots(2, 3, 4);
        let one = s.acquire(a, ip("2001:db8::1")).unwrap();
        let _two = s.acquire(a, ip("2001:db8::2")).unwrap();
        assert_eq!(s.acquire(a, ip("2001:db8::3")).err(), Some(StreamCap::Ip));
        let _three = s.acquire(a, ip("198.51.100.1")).unwrap();
        assert_eq!(
            s.acquire(a, ip("198.51.100.2")).err(),
            Some(StreamCap::Team)
        );
        let _four = s.acquire(b, ip("198.51.100.2")).unwrap();
        assert_eq!(
            s.acquire(b, ip("198.51.100.3")).err(),
            Some(StreamCap::Total)
        );
        drop(one);
        assert_eq!(s.open(a, ip("2001:db8::9")), (3, 2, 1));
        let _five = s
            .acquire(b, ip("2001:db8::3"))
            .expect("its place is free again");
        assert_eq!(s.open(b, ip("2001:db8::3")), (4, 2, 2));
    }

    #[test]
    fn no_entry_outlives_its_streams() {
        let s = slots(5, 5, 5);
        let held: Vec<_> = (0..5)
            .map(|i| {
                s.acquire(Uuid::now_v7(), ip(&format!("198.51.100.{i}")))
                    .unwrap()
            })
            .collect();
        drop(held);
        let c = s.lock();
        assert_eq!((c.total, c.per_ip.len(), c.per_team.len()), (0, 0, 0));
    }
}
