//! The client address that budgets, scores and blocks key on.

use std::net::{IpAddr, Ipv6Addr};

/// The network one client controls: an IPv6 client by its /64 (the smallest allocation a
/// subscriber gets, whose 2^64 addresses it can rotate through at will), an IPv4-mapped
/// IPv6 address as the IPv4 client it is, an IPv4 address as itself. Keying per-IP budgets,
/// scores and blocks on this means rotating addresses inside one's own /64 gains nothing.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_ipv4_by_itself() {
        let cases = [
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
            ("::1", "::"),
            ("198.51.100.7", "198.51.100.7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
        ];
        for (given, key) in cases {
            assert_eq!(client_network(ip(given)), ip(key), "{given}");
        }
    }

    proptest! {
        #[test]
        fn keying_is_idempotent_and_keeps_the_64(a in any::<u128>(), b in any::<u64>()) {
            let addr = IpAddr::V6(Ipv6Addr::from(a));
            let key = client_network(addr);
            prop_assert_eq!(client_network(key), key);
            if !matches!(addr.to_canonical(), IpAddr::V4(_)) {
                let sibling = IpAddr::V6(Ipv6Addr::from((a & !u128::from(u64::MAX)) | u128::from(b)));
                prop_assert_eq!(client_network(sibling), key);
            }
        }

        #[test]
        fn distinct_ipv4_clients_stay_distinct(a in any::<u32>(), b in any::<u32>()) {
            prop_assume!(a != b);
            let (x, y) = (IpAddr::from(a.to_be_bytes()), IpAddr::from(b.to_be_bytes()));
            prop_assert_ne!(client_network(x), client_network(y));
            let mapped = IpAddr::V6(std::net::Ipv4Addr::from(a).to_ipv6_mapped());
            prop_assert_eq!(client_network(mapped), x);
        }
    }
}
