//! Credentials: fresh random tokens and secrets, and the SHA-256 digests that the database
//! indexes and the cache keys on (secrets are never stored or compared in clear).

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// SHA-256 of a token: what the database indexes and the cache keys on.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two secrets in constant time (via their digests, so lengths leak nothing).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (token_digest(a), token_digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A fresh widget token.
pub fn new_public_token() -> String {
    random_token("pub_", 32)
}

/// A fresh operator key (`sk_…`): returned once, stored only as its digest.
pub fn new_secret_key() -> String {
    random_token("sk_", 43)
}

/// A fresh identity verification secret.
pub fn new_identity_secret() -> String {
    random_token("", 48)
}

fn random_token(prefix: &str, len: usize) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_equal("a-long-admin-token", "a-long-admin-token"));
        assert!(!secrets_equal("a-long-admin-token", "a-long-admin-tokeN"));
        assert!(!secrets_equal("", "x"));
    }
}
