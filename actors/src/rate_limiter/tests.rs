//! Unit tests of the budgets, the team actors and the shared-store fallback.

use super::table::TeamState;
use super::*;
use crate::domain::Limit;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const S: Duration = Duration::from_secs(1);

#[test]
fn admits_a_burst_of_the_limit_then_refuses() {
    let limit = Limit::per_minute(10);
    let mut tat = None;
    for i in 0..10 {
        tat = Some(gcra(tat, Duration::ZERO, limit).unwrap_or_else(|_| panic!("request {i}")));
    }
    assert_eq!(gcra(tat, Duration::ZERO, limit), Err(6 * S));
}

#[test]
fn refills_at_the_sustained_rate_never_a_doubled_burst() {
    let limit = Limit::per_minute(10);
    let mut tat = None;
    for _ in 0..10 {
        tat = Some(gcra(tat, Duration::ZERO, limit).unwrap());
    }
    // A fixed window would allow another 10 at t = 60 s; GCRA allows one per 6 s.
    assert!(gcra(tat, 5 * S, limit).is_err());
    let tat = Some(gcra(tat, 6 * S, limit).unwrap());
    assert!(gcra(tat, 6 * S, limit).is_err());
    let mut tat2 = tat;
    let mut admitted = 0;
    for t in 0..=60 {
        if let Ok(n) = gcra(tat2, (6 + t) * S, limit) {
            tat2 = Some(n);
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 10,
        "in 60 s after exhaustion, exactly the sustained rate"
    );
}

#[test]
fn a_refused_request_charges_no_tier() {
    let mut rl = TeamState::default();
    let c = |tier, n| RateCheck {
        tier,
        key: "k".into(),
        limit: Limit::per_minute(n),
    };
    let checks = [c(Tier::MessageIp, 100), c(Tier::MessageDistinctId, 1)];
    assert!(rl.check(&checks, Duration::ZERO).is_ok());
    let Err(refused) = rl.check(&checks, Duration::ZERO) else {
        panic!("the second request must be refused by a budget");
    };
    assert_eq!(refused.tier, Tier::MessageDistinctId);
    let ip_tat = rl.tats[&(Tier::MessageIp, "k".to_string())];
    assert_eq!(
        ip_tat,
        Duration::from_millis(600),
        "only the admitted request was charged"
    );
}

fn one(key: &str) -> [RateCheck; 1] {
    [RateCheck {
        tier: Tier::ReadDistinctId,
        key: key.into(),
        limit: Limit::per_minute(10),
    }]
}

#[test]
fn a_full_table_forgets_its_oldest_keys_and_admits_the_newcomer() {
    let mut rl = TeamState::with_max_keys(32);
    // A busy visitor (budget nearly spent) and 40 one-off keys, one second apart.
    for _ in 0..9 {
        assert!(rl.check(&one("busy"), Duration::ZERO).is_ok());
    }
    for i in 0..40u64 {
        let r = rl.check(&one(&format!("k{i}")), Duration::from_secs(i) / 10);
        assert!(r.is_ok(), "key {i} is admitted although the table is full");
        assert!(rl.tats.len() <= 32, "the table stays bounded");
    }
    assert!(
        rl.tats
            .contains_key(&(Tier::ReadDistinctId, "busy".to_string())),
        "the busy key (latest TAT) is kept"
    );
    assert!(
        !rl.tats
            .contains_key(&(Tier::ReadDistinctId, "k0".to_string())),
        "the oldest one-off key went first"
    );
    assert!(rl.check(&one("busy"), Duration::from_secs(4)).is_ok());
    assert!(
        rl.check(&one("busy"), Duration::from_secs(4)).is_err(),
        "the busy visitor's budget survived the flood"
    );
}

#[actix::test]
async fn a_refund_forgets_created_keys_and_restores_charged_ones() {
    let limiters = RateLimiters::default();
    let team = Uuid::now_v7();
    limiters.check(team, one("known").to_vec()).await.unwrap();
    let keys = |l: &RateLimiters| l.keys_per_team()[0].1;
    assert_eq!(keys(&limiters), 1);
    let mut both = one("known").to_vec();
    both.extend(one("new"));
    let charged = limiters.check(team, both).await.unwrap();
    assert_eq!(keys(&limiters), 2);
    charged.settle(Err::<(), ()>(())).unwrap_err();
    for _ in 0..9 {
        limiters.check(team, one("known").to_vec()).await.unwrap();
    }
    assert_eq!(keys(&limiters), 1, "the refused request's new key is gone");
    assert!(
        limiters.check(team, one("known").to_vec()).await.is_err(),
        "the known key was charged once, not twice"
    );
    let kept = limiters.check(team, one("other").to_vec()).await.unwrap();
    assert_eq!(kept.settle(Ok::<u8, ()>(1)), Ok(1));
    assert_eq!(keys(&limiters), 2, "a served request keeps its charge");
}

#[actix::test]
async fn a_refund_leaves_a_key_alone_that_another_request_charged_since() {
    let limiters = RateLimiters::default();
    let team = Uuid::now_v7();
    let first = limiters.check(team, one("shared").to_vec()).await.unwrap();
    limiters.check(team, one("shared").to_vec()).await.unwrap();
    first.refund();
    limiters.check(team, one("other").to_vec()).await.unwrap();
    assert_eq!(limiters.keys_per_team(), vec![(team, 2)]);
}

#[actix::test]
async fn the_gate_is_charged_even_when_the_request_is_refused() {
    let limiters = RateLimiters::default();
    let team = Uuid::now_v7();
    let gate = || {
        vec![RateCheck {
            tier: Tier::WidgetIp,
            key: "1.2.3.4".into(),
            limit: Limit::per_minute(3),
        }]
    };
    let tight = || {
        vec![RateCheck {
            tier: Tier::MessageDistinctId,
            key: "v".into(),
            limit: Limit::per_minute(1),
        }]
    };
    assert!(limiters.check_gated(team, gate(), tight()).await.is_ok());
    let r = limiters
        .check_gated(team, gate(), tight())
        .await
        .unwrap_err();
    assert_eq!(r.tier, Tier::MessageDistinctId);
    assert!(limiters.check_gated(team, gate(), vec![]).await.is_ok());
    let r = limiters
        .check_gated(team, gate(), vec![])
        .await
        .unwrap_err();
    assert_eq!(r.tier, Tier::WidgetIp, "three requests paid the gate");
}

#[actix::test]
async fn limiters_are_per_team_and_exact_under_concurrent_requests() {
    let limiters = RateLimiters::default();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let checks = || {
        vec![RateCheck {
            tier: Tier::MessageTeam,
            key: String::new(),
            limit: Limit::per_hour(50),
        }]
    };
    let mut asks = Vec::new();
    for _ in 0..80 {
        let (l, c) = (limiters.clone(), checks());
        asks.push(actix::spawn(async move { l.check(a, c).await.is_ok() }));
    }
    let mut admitted = 0;
    for ask in asks {
        admitted += usize::from(ask.await.unwrap());
    }
    assert_eq!(admitted, 50, "exactly the burst is admitted");
    assert!(
        limiters.check(b, checks()).await.is_ok(),
        "team b has its own budget"
    );
    let s = limiters.stats();
    assert_eq!(
        (s.alive, s.handled),
        (2, 81),
        "one actor per team, every check"
    );
}

#[actix::test]
async fn an_idle_team_actor_forgets_whole_budgets_and_stops() {
    let limiters = RateLimiters::with_idle(MAX_KEYS, None, Duration::from_millis(40));
    let team = Uuid::now_v7();
    let checks = || {
        vec![RateCheck {
            tier: Tier::ReadDistinctId,
            key: "v".into(),
            limit: Limit {
                count: 1,
                period: Duration::from_millis(1),
            },
        }]
    };
    assert!(limiters.check(team, checks()).await.is_ok());
    assert_eq!(limiters.keys_per_team(), vec![(team, 1)]);
    assert_eq!(limiters.stats().alive, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(limiters.keys_per_team(), vec![]);
    let s = limiters.stats();
    assert_eq!((s.alive, s.evictions), (0, 1));
    assert!(
        limiters.check(team, checks()).await.is_ok(),
        "a fresh actor and budget after the eviction"
    );
    assert_eq!(limiters.stats().alive, 1);
}

/// A shared store in memory that can be switched off.
#[derive(Default)]
struct FakeShared {
    down: AtomicBool,
    calls: AtomicUsize,
    state: std::sync::Mutex<TeamState>,
}

#[async_trait]
impl SharedBudgets for FakeShared {
    async fn check(
        &self,
        _team_id: Uuid,
        gate: &[RateCheck],
        checks: &[RateCheck],
    ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown> {
        self.calls.fetch_add(1, Relaxed);
        if self.down.load(Relaxed) {
            return Err(SharedDown);
        }
        let mut state = self.state.lock().unwrap();
        let now = Duration::ZERO;
        if let Err(r) = state.check(gate, now) {
            return Ok(Err(r));
        }
        Ok(state.check(checks, now).map(|_| SharedCharge::default()))
    }
    async fn refund(&self, _charge: SharedCharge) {}
    fn healthy(&self) -> bool {
        !self.down.load(Relaxed)
    }
    fn live_nodes(&self) -> usize {
        2
    }
    fn calls(&self) -> u64 {
        self.calls.load(Relaxed) as u64
    }
}

#[actix::test]
async fn without_the_shared_store_each_node_allows_its_share_and_goes_back_by_itself() {
    let shared = Arc::new(FakeShared::default());
    let limiters = RateLimiters::new(MAX_KEYS, Some(shared.clone()));
    let team = Uuid::now_v7();
    let check = |key: &str| one(key).to_vec();
    let admitted = |l: RateLimiters, key: &'static str| async move {
        let mut n = 0;
        for _ in 0..20 {
            n += usize::from(l.check(team, check(key)).await.is_ok());
        }
        n
    };
    assert_eq!(admitted(limiters.clone(), "a").await, 10);
    assert_eq!(limiters.budgets().mode, "cluster");
    assert_eq!(shared.calls.load(Relaxed), 20);

    shared.down.store(true, Relaxed);
    assert_eq!(
        admitted(limiters.clone(), "b").await,
        5,
        "limit 10 over 2 live nodes"
    );
    let b = limiters.budgets();
    assert_eq!((b.mode, b.live_nodes, b.fallbacks), ("fallback", 2, 1));
    assert_eq!(b.fallback_checks, 20);
    assert_eq!(
        shared.calls.load(Relaxed),
        20,
        "no waiting on a store known down"
    );

    shared.down.store(false, Relaxed);
    assert_eq!(admitted(limiters.clone(), "c").await, 10);
    let b = limiters.budgets();
    assert_eq!((b.mode, b.fallbacks, b.fallback_checks), ("cluster", 1, 20));
}

#[actix::test]
async fn a_store_failing_mid_check_is_answered_locally() {
    struct Flaky;
    #[async_trait]
    impl SharedBudgets for Flaky {
        async fn check(
            &self,
            _: Uuid,
            _: &[RateCheck],
            _: &[RateCheck],
        ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown> {
            Err(SharedDown)
        }
        async fn refund(&self, _charge: SharedCharge) {}
        fn healthy(&self) -> bool {
            true
        }
        fn live_nodes(&self) -> usize {
            3
        }
        fn calls(&self) -> u64 {
            0
        }
    }
    let limiters = RateLimiters::new(MAX_KEYS, Some(Arc::new(Flaky)));
    let team = Uuid::now_v7();
    let mut n = 0;
    for _ in 0..10 {
        n += usize::from(limiters.check(team, one("v").to_vec()).await.is_ok());
    }
    assert_eq!(n, 3, "10 / 3 live nodes");
    assert_eq!(limiters.budgets().fallback_checks, 10);
}
