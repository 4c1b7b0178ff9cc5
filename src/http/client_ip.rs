//! The client IP that rate limits key on: the TCP peer, unless the peer is a trusted proxy,
//! in which case the right-most untrusted `X-Forwarded-For` entry. A client can never pick
//! its own key by sending a header.

use ipnet::IpNet;
use std::net::IpAddr;

/// Derives the client IP from the peer address and the X-Forwarded-For values.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // Garbage in the chain: stop at the last address we could verify.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            client_ip(ip("203.0.113.9"), &["1.2.3.4"], &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &["1.2.3.4"], &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_wins() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client spoofed 6.6.6.6; the proxy appended the real address.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                &["6.6.6.6, 198.51.100.4, 10.0.0.1"],
                &trusted
            ),
            ip("198.51.100.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["6.6.6.6", "198.51.100.4"], &trusted),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn garbage_or_missing_headers_fall_back_to_what_is_verified() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["1.1.1.1, nonsense"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
    }
}
