use super::{ValidationError, VerifiedId};
use uuid::Uuid;

/// Values a careless integration sends for "no user": accepting them would let strangers
/// share, and read, one another's tickets.
const GUESSABLE: &[&str] = &[
    "test",
    "null",
    "undefined",
    "anonymous",
    "none",
    "nil",
    "unknown",
    "guest",
    "user",
    "[object object]",
];

/// A visitor's id on the documented widget surface; it is the key to their tickets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistinctId(String);

impl DistinctId {
    /// Parses a client-supplied distinct_id: trimmed, 1–200 chars, no whitespace or control
    /// characters inside, not trivially guessable.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "distinct_id";
        let value = raw.trim();
        let chars = value.chars().count();
        if chars == 0 {
            return Err(ValidationError::new(FIELD, "distinct_id must not be empty"));
        }
        if chars > 200 {
            return Err(ValidationError::new(
                FIELD,
                "distinct_id must be at most 200 characters",
            ));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ValidationError::new(
                FIELD,
                "distinct_id must not contain whitespace or control characters",
            ));
        }
        let lower = value.to_lowercase();
        let mut it = value.chars();
        let first = it.next();
        let single_repeated = first.is_some_and(|f| it.all(|c| c == f));
        if single_repeated || GUESSABLE.contains(&lower.as_str()) {
            return Err(ValidationError::new(
                FIELD,
                "distinct_id is too easy to guess; use a stable, unique id for the visitor",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Rebuilds an id read back from our own database, where only parsed ids are written;
    /// re-checking would make a later rule change lock visitors out of old tickets.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The validated text, for storage and comparison.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DistinctId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key a widget request presents; a ticket answers only to the key it was opened with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VisitorKey {
    /// The documented surface: the visitor's own distinct_id.
    DistinctId(DistinctId),
    /// The posthog-js surface: a random session id kept in the browser.
    WidgetSession(Uuid),
    /// A distinct_id proven by an identity hash: it reaches every ticket of that person,
    /// on either surface. Never a ticket's own key. Only a hash that verifies makes one
    /// ([`super::IdentityVerification::verify`]).
    Verified(VerifiedId),
}

impl VisitorKey {
    /// The one access rule of both widget surfaces, called on a ticket's key: a request
    /// must present that key, or a verified identity of the ticket's person (`linked` is
    /// the distinct_id a posthog-js ticket is linked to).
    pub fn admits(&self, linked: Option<&str>, presented: &VisitorKey) -> bool {
        match presented {
            VisitorKey::Verified(id) => {
                matches!(self, VisitorKey::DistinctId(own) if own == id.distinct_id())
                    || linked == Some(id.as_str())
            }
            other => self == other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_realistic_ids() {
        for ok in [
            "user@example.com",
            "0190f1c2-7a3b-7cde-8f00-123456789abc",
            "  padded@example.com  ",
            "ab",
            "élodie",
            "12",
        ] {
            assert!(DistinctId::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        assert_eq!(
            DistinctId::parse("  padded@example.com ").map(|d| d.to_string()),
            Ok("padded@example.com".to_owned())
        );
    }

    #[test]
    fn rejects_empty_long_spaced_and_guessable_ids() {
        let long = "x".repeat(150) + &"y".repeat(51);
        for bad in [
            "",
            "   ",
            "1",
            "test",
            "TEST",
            "null",
            "undefined",
            "anonymous",
            "aaaa",
            "0000",
            "a b",
            "a\tb",
            "a\u{0}b",
            &long,
        ] {
            let err = DistinctId::parse(bad).expect_err(bad);
            assert_eq!(err.field, "distinct_id");
        }
    }

    #[test]
    fn two_hundred_characters_is_the_limit() {
        let max = "é".repeat(199) + "x";
        assert!(DistinctId::parse(&max).is_ok());
        assert!(DistinctId::parse(&(max + "z")).is_err());
    }

    #[test]
    fn keys_admit_only_themselves() {
        let a = VisitorKey::DistinctId(DistinctId::parse("alice@example.com").unwrap());
        let b = VisitorKey::DistinctId(DistinctId::parse("bob@example.com").unwrap());
        let s = VisitorKey::WidgetSession(Uuid::nil());
        assert!(a.admits(None, &a.clone()));
        assert!(!a.admits(None, &b));
        assert!(!a.admits(None, &s));
        assert!(
            !s.admits(Some("alice@example.com"), &a),
            "a bare distinct_id never reaches a session's ticket"
        );
        assert!(s.admits(None, &s.clone()));
    }

    #[test]
    fn a_verified_identity_reaches_its_persons_tickets_on_both_surfaces() {
        let alice = DistinctId::parse("alice@example.com").unwrap();
        let hash = crate::domain::identity_hash("k", "alice@example.com");
        let proof = crate::domain::IdentityVerification::Required
            .verify("k", &alice, Some(&hash))
            .unwrap()
            .unwrap();
        let verified = VisitorKey::Verified(proof);
        let documented = VisitorKey::DistinctId(alice);
        let session = VisitorKey::WidgetSession(Uuid::nil());
        assert!(documented.admits(None, &verified));
        assert!(session.admits(Some("alice@example.com"), &verified));
        assert!(!session.admits(Some("bob@example.com"), &verified));
        assert!(!session.admits(None, &verified));
    }

    proptest! {
        #[test]
        fn a_parsed_id_is_always_within_the_rules(raw in "\\PC{0,300}") {
            if let Ok(id) = DistinctId::parse(&raw) {
                let s = id.as_str();
                prop_assert!(!s.is_empty() && s.chars().count() <= 200);
                prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }
}
