//! Unit tests of the rules and of the text features they read.

use super::*;
use crate::suspicion::TextFeatures;

fn ip(n: u8) -> IpAddr {
    IpAddr::from([203, 0, 113, n])
}

fn settings() -> SuspicionSettings {
    SuspicionSettings::default()
}

fn msg(visitor: &str, ip_n: u8, ticket: Uuid, opened: bool, text: &str) -> Observation {
    Observation::Message(MessageSeen {
        team_id: Uuid::nil(),
        ticket_id: ticket,
        opened_ticket: opened,
        visitor: visitor.into(),
        ip: ip(ip_n),
        text: TextFeatures::of(text),
        settings: settings(),
    })
}

fn reasons(v: &[Verdict]) -> Vec<&'static str> {
    v.iter()
        .filter_map(|v| match v {
            Verdict::Flag(f) => Some(f.reason),
            Verdict::Block(_) => None,
        })
        .collect()
}

fn blocks(v: &[Verdict]) -> usize {
    v.iter().filter(|v| matches!(v, Verdict::Block(_))).count()
}

#[test]
fn text_features_count_links_and_ignore_case_and_spacing() {
    let a = TextFeatures::of("Buy NOW at https://x.test");
    let b = TextFeatures::of("buy now   at HTTPS://X.TEST");
    assert_eq!(a.hash, b.hash);
    assert_eq!((a.words, a.links), (4, 1));
    assert!(!TextFeatures::of(
        "my order https://shop.test/o/1 never arrived, can you check it please"
    )
    .is_link_heavy());
    assert!(TextFeatures::of("https://a.test https://b.test https://c.test").is_link_heavy());
    assert!(TextFeatures::of("www.cheap.test").is_link_heavy());
}

#[test]
fn a_honeypot_hit_scores_high_enough_to_block_the_ip() {
    let mut r = Rules::default();
    let v = r.observe(
        &Observation::Honeypot {
            team_id: Uuid::nil(),
            ip: ip(1),
            settings: settings(),
        },
        Instant::now(),
    );
    assert_eq!(reasons(&v), ["honeypot"]);
    assert_eq!(blocks(&v), 1);
}

#[test]
fn a_normal_conversation_raises_nothing() {
    let mut r = Rules::default();
    let now = Instant::now();
    let t = Uuid::now_v7();
    let mut all = vec![];
    for (i, text) in [
        "Hi, my parcel is late",
        "Order 1234, placed Monday",
        "see https://shop.test/o/1234 for the order",
        "thanks!",
    ]
    .iter()
    .enumerate()
    {
        all.extend(r.observe(&msg("ann@example.com", 1, t, i == 0, text), now));
    }
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn a_repeating_link_spammer_is_flagged_then_blocked() {
    let mut r = Rules::default();
    let now = Instant::now();
    let t = Uuid::now_v7();
    let spam = "CHEAP PILLS https://a.test https://b.test https://c.test";
    let mut all = vec![];
    for i in 0..3 {
        all.extend(r.observe(&msg("bot-1@x.test", 9, t, i == 0, spam), now));
    }
    assert_eq!(reasons(&all), ["link_density", "repeated_message"]);
    let scores: Vec<i16> = all
        .iter()
        .filter_map(|v| match v {
            Verdict::Flag(f) => Some(f.score),
            _ => None,
        })
        .collect();
    assert_eq!(scores, [50, 90], "scores add up per visitor");
    assert_eq!(blocks(&all), 1, "90 reaches the block threshold of 80");
    for _ in 0..3 {
        all.extend(r.observe(
            &Observation::RateLimited {
                team_id: Uuid::nil(),
                tier: Tier::MessageDistinctId,
                visitor: Some("bot-1@x.test".into()),
                ip: ip(9),
                settings: settings(),
            },
            now,
        ));
    }
    assert!(reasons(&all).contains(&"rate_limited"));
}

#[test]
fn many_visitor_ids_from_one_ip_is_enumeration() {
    let mut r = Rules::default();
    let now = Instant::now();
    let mut all = vec![];
    for i in 0..KEYS_PER_IP {
        all.extend(r.observe(
            &msg(&format!("user{i}@x.test"), 7, Uuid::now_v7(), true, "hello"),
            now,
        ));
    }
    assert_eq!(reasons(&all), ["enumeration"]);
}

#[test]
fn the_same_text_from_several_visitors_is_flagged_but_short_greetings_are_not() {
    let mut r = Rules::default();
    let now = Instant::now();
    let mut all = vec![];
    for i in 0..5u8 {
        all.extend(r.observe(
            &msg(
                &format!("v{i}@x.test"),
                10 + i,
                Uuid::now_v7(),
                true,
                "Thanks for looking into it.",
            ),
            now,
        ));
    }
    assert!(all.is_empty(), "common short phrases are not a campaign");
    for i in 0..4u8 {
        all.extend(r.observe(
            &msg(
                &format!("v{i}@x.test"),
                10 + i,
                Uuid::now_v7(),
                true,
                "Earn money fast working from home today, ask me how",
            ),
            now,
        ));
    }
    assert_eq!(reasons(&all), ["repeated_across_visitors"]);
}

#[test]
fn a_burst_right_after_opening_a_ticket_is_flagged() {
    let mut r = Rules::default();
    let now = Instant::now();
    let t = Uuid::now_v7();
    let mut all = vec![];
    for i in 0..BURST_MESSAGES {
        all.extend(r.observe(
            &msg("fast@x.test", 3, t, i == 0, &format!("message number {i}")),
            now,
        ));
    }
    assert_eq!(reasons(&all), ["burst_after_creation"]);
}

#[test]
fn per_team_weights_and_thresholds_apply() {
    let mut r = Rules::default();
    let mut s = settings();
    s.weights.honeypot = 10;
    let v = r.observe(
        &Observation::Honeypot {
            team_id: Uuid::nil(),
            ip: ip(1),
            settings: s,
        },
        Instant::now(),
    );
    assert_eq!(blocks(&v), 0);
    match &v[0] {
        Verdict::Flag(f) => assert_eq!(f.score, 10),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_honeypot_hit_is_scored_against_the_ip_only() {
    let mut r = Rules::default();
    let v = r.observe(
        &Observation::Honeypot {
            team_id: Uuid::nil(),
            ip: ip(1),
            settings: settings(),
        },
        Instant::now(),
    );
    let Some(Verdict::Flag(f)) = v.first() else {
        panic!("a flag: {v:?}");
    };
    assert_eq!(f.distinct_id, None);
    assert!(r.scores.keys().all(|(_, s)| matches!(s, Subject::Ip(_))));
}

#[test]
fn a_full_map_forgets_its_oldest_keys_so_new_visitors_are_still_scored() {
    let mut r = Rules::with_max_keys(32);
    let start = Instant::now();
    for i in 0..100u8 {
        r.observe(
            &Observation::Honeypot {
                team_id: Uuid::nil(),
                ip: ip(i),
                settings: settings(),
            },
            start + Duration::from_millis(u64::from(i)),
        );
        assert!(r.scores.len() <= 32, "the score map stays bounded");
    }
    assert!(
        r.take_evictions() >= 68,
        "the overflow was evicted and counted"
    );
    assert!(
        r.scores.contains_key(&(Uuid::nil(), Subject::Ip(ip(99)))),
        "the newest key is kept"
    );
    assert!(
        !r.scores.contains_key(&(Uuid::nil(), Subject::Ip(ip(0)))),
        "the oldest key went first"
    );
    let v = r.observe(
        &msg(
            "newcomer@x.test",
            200,
            Uuid::now_v7(),
            true,
            "https://a.test https://b.test https://c.test",
        ),
        start + Duration::from_secs(1),
    );
    assert_eq!(reasons(&v), ["link_density"], "the newcomer is scored");
}

#[test]
fn old_activity_is_forgotten_and_memory_is_bounded() {
    let mut r = Rules::default();
    let start = Instant::now();
    for i in 0..(MAX_KEYS + 100) {
        r.observe(
            &msg(&format!("v{i}"), (i % 250) as u8, Uuid::nil(), false, "x"),
            start,
        );
    }
    assert!(r.texts.len() <= MAX_KEYS && r.ip_keys.len() <= MAX_KEYS && r.scores.len() <= MAX_KEYS);
    r.sweep(start + WINDOW + Duration::from_secs(1));
    assert_eq!(r.tracked_keys(), 0);
}
