//! Property tests of the HTTP helpers that read raw request text: `extract::clamped` (every
//! integer query parameter: `limit`, `offset`, `hours`) and `client_ip::client_ip` (the
//! rate-limit key from the peer and `X-Forwarded-For`). Arbitrary and near-valid inputs;
//! nothing may panic, and the results keep their promises. Failing cases are kept in
//! `tests/http_parsers.proptest-regressions` (commit it). No database needed.

use colloquy::http::client_ip::client_ip;
use colloquy::http::extract::clamped;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Query values: digits of any length (beyond i64, up to and past the 4096-digit cap),
/// signs, whitespace, and garbage.
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ \t]{0,2}[-+]?[0-9]{1,30}[ \t]{0,2}",
        1 => "-?[0-9]{4090,4100}",
        2 => ".{0,12}",
        1 => proptest::collection::vec(any::<char>(), 0..12).prop_map(|v| v.into_iter().collect::<String>()),
        1 => Just(String::new()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn is_integer_text(raw: &str) -> bool {
    let t = raw.trim();
    let d = t.strip_prefix('-').unwrap_or(t);
    !d.is_empty() && d.len() <= 4096 && d.bytes().all(|b| b.is_ascii_digit())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        // Mostly inside the trusted 10/8, so chains of proxies happen.
        any::<[u8; 3]>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, b[0], b[1], b[2]))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
    ]
}

/// One X-Forwarded-For entry: an address (with odd spacing), or garbage.
fn xff_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (ip(), "[ ]{0,2}", "[ ]{0,2}").prop_map(|(ip, a, b)| format!("{a}{ip}{b}")),
        1 => "[^,]{0,10}",
        1 => Just("unknown".to_owned()),
        1 => Just(String::new()),
    ]
}

fn xff_header() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(xff_entry(), 0..6).prop_map(|v| v.join(",")),
        1 => proptest::collection::vec(any::<char>(), 0..30).prop_map(|v| v.into_iter().collect::<String>()),
    ]
}

fn trusted() -> Vec<IpNet> {
    vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn clamped_parses_integers_and_refuses_the_rest(
        raw in proptest::option::of(query_value()),
        a in any::<i64>(),
        b in any::<i64>(),
        default in any::<i64>(),
    ) {
        let (min, max) = (a.min(b), a.max(b));
        let mut q = HashMap::new();
        if let Some(raw) = &raw {
            q.insert("limit".to_owned(), raw.clone());
        }
        match (clamped(&q, "limit", default, min, max), raw) {
            (Ok(n), None) => prop_assert_eq!(n, default),
            (Ok(n), Some(raw)) => {
                prop_assert!(is_integer_text(&raw), "accepted {:?}", raw);
                prop_assert!((min..=max).contains(&n));
                // The exact value, clamped; beyond i64 saturates before clamping.
                let t = raw.trim();
                let exact = t.parse::<i64>().unwrap_or(if t.starts_with('-') { i64::MIN } else { i64::MAX });
                prop_assert_eq!(n, exact.clamp(min, max));
            }
            (Err(_), None) => prop_assert!(false, "an absent parameter is the default"),
            (Err(e), Some(raw)) => {
                prop_assert!(!is_integer_text(&raw), "refused {:?}", raw);
                prop_assert!(e.to_string().contains("limit"));
            }
        }
    }

    #[test]
    fn client_ip_is_one_of_the_candidates(
        peer in ip(),
        headers in proptest::collection::vec(xff_header(), 0..3),
    ) {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let nets = trusted();
        let got = client_ip(peer, &headers, &nets);
        let is_trusted = |ip: &IpAddr| nets.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer) {
            prop_assert_eq!(got, peer, "an untrusted peer is the client, whatever it sends");
        } else if got != peer {
            let entries: Vec<IpAddr> = headers
                .iter()
                .flat_map(|h| h.split(','))
                .filter_map(|e| e.trim().parse().ok())
                .collect();
            prop_assert!(entries.contains(&got), "{} is not in {:?}", got, headers);
        }
        // Nothing trusted is ever returned unless every hop up to it was trusted too;
        // with no proxies trusted, the peer always wins.
        prop_assert_eq!(client_ip(peer, &headers, &[]), peer);
    }

    #[test]
    fn a_client_cannot_choose_its_own_key(
        spoofed in proptest::collection::vec(xff_entry(), 0..5),
        real in any::<[u8; 4]>().prop_filter("untrusted", |b| b[0] != 10),
        hops in proptest::collection::vec(any::<[u8; 3]>(), 0..4),
        last in any::<[u8; 3]>(),
        split in any::<bool>(),
    ) {
        // What the client sent (anything), then what each trusted proxy appended: the real
        // client address, then the earlier proxies; the peer is the last proxy.
        let real = IpAddr::V4(Ipv4Addr::from(real));
        let mut appended = vec![real.to_string()];
        appended.extend(hops.iter().map(|h| Ipv4Addr::new(10, h[0], h[1], h[2]).to_string()));
        let peer = IpAddr::V4(Ipv4Addr::new(10, last[0], last[1], last[2]));
        let spoofed = spoofed.join(",");
        let appended = appended.join(", ");
        let got = if split {
            // Proxies may add a second header line instead of extending the first.
            client_ip(peer, &[spoofed.as_str(), appended.as_str()], &trusted())
        } else {
            let joined = if spoofed.is_empty() { appended } else { format!("{spoofed},{appended}") };
            client_ip(peer, &[joined.as_str()], &trusted())
        };
        prop_assert_eq!(got, real);
    }
}
