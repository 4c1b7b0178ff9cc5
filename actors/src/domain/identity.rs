//! Identity verification (per team: off | optional | required), as Intercom and Chatwoot do
//! it: the customer's server signs a distinct_id with the team's secret, and only a signature
//! that verifies turns a distinct_id into a key that reaches that person's tickets.
//!
//! [`VerifiedId`] has no public constructor: the only way to get one — and so the only way
//! to build [`super::VisitorKey::Verified`] — is [`IdentityVerification::verify`] with a hash
//! that checks out. A caller that forgets to look at the result cannot grant access by
//! accident, which is how the posthog-js surface once admitted an unproven identity.

use super::{DistinctId, ValidationError};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How a team treats identity hashes; one enum so no surface compares strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityVerification {
    /// Identity fields are ignored: a distinct_id is only ever the visitor's own key.
    #[default]
    Off,
    /// A hash that is sent must verify; without one the visitor is not verified.
    Optional,
    /// Every widget request must carry a hash that verifies.
    Required,
}

/// Why an identity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// The team requires a hash and none was sent.
    Required,
    /// A hash was sent and it is wrong (or malformed).
    Invalid,
}

/// A distinct_id proven by its identity hash: the only thing that reaches a person's tickets
/// across both widget surfaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedId(DistinctId);

impl VerifiedId {
    /// The proven distinct_id, for storage and comparison.
    pub fn distinct_id(&self) -> &DistinctId {
        &self.0
    }

    /// The proven distinct_id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Gives up the proof, keeping the id (e.g. as a ticket's own key).
    pub fn into_distinct_id(self) -> DistinctId {
        self.0
    }
}

impl std::fmt::Display for VerifiedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl IdentityVerification {
    /// Parses the admin and settings API value.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        match raw {
            "off" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            _ => Err(ValidationError::new(
                field,
                "identity_verification must be off, optional or required",
            )),
        }
    }

    /// Reads the mode back from the database; anything unexpected fails closed.
    pub fn from_stored(stored: &str) -> Self {
        Self::parse(stored, "identity_verification").unwrap_or(Self::Required)
    }

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }

    /// Checks `hash` = hex(HMAC-SHA256(secret, distinct_id)) in constant time, as this mode
    /// asks. `Ok(Some)` only for a hash that verifies (never under `off`, where identity
    /// fields are ignored); `Ok(None)`: no proof, and the mode allows that.
    pub fn verify(
        self,
        secret: &str,
        distinct_id: &DistinctId,
        hash: Option<&str>,
    ) -> Result<Option<VerifiedId>, IdentityError> {
        let hash = hash.map(str::trim).filter(|h| !h.is_empty());
        match (self, hash) {
            (Self::Off, _) | (Self::Optional, None) => Ok(None),
            (Self::Required, None) => Err(IdentityError::Required),
            (_, Some(h)) => {
                let given = hex::decode(h).map_err(|_| IdentityError::Invalid)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|_| IdentityError::Invalid)?;
                mac.update(distinct_id.as_str().as_bytes());
                mac.verify_slice(&given)
                    .map(|()| Some(VerifiedId(distinct_id.clone())))
                    .map_err(|_| IdentityError::Invalid)
            }
        }
    }
}

/// hex(HMAC-SHA256(secret, distinct_id)): what a customer's server computes (tests, tools).
pub fn identity_hash(secret: &str, distinct_id: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(distinct_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentityVerification::{Off, Optional, Required};

    const SECRET: &str = "s3cret";

    fn id(s: &str) -> DistinctId {
        DistinctId::parse(s).unwrap()
    }

    #[test]
    fn only_a_hash_that_verifies_yields_a_verified_id() {
        let alice = id("alice@example.com");
        let good = identity_hash(SECRET, "alice@example.com");
        assert_eq!(Off.verify(SECRET, &alice, Some(&good)), Ok(None));
        assert_eq!(Off.verify(SECRET, &alice, Some("nonsense")), Ok(None));
        assert_eq!(Optional.verify(SECRET, &alice, None), Ok(None));
        assert_eq!(Optional.verify(SECRET, &alice, Some("  ")), Ok(None));
        assert_eq!(
            Optional.verify(SECRET, &alice, Some(&good)),
            Ok(Some(VerifiedId(alice.clone())))
        );
        assert_eq!(
            Optional.verify(SECRET, &alice, Some("00ff")),
            Err(IdentityError::Invalid)
        );
        assert_eq!(
            Required.verify(SECRET, &alice, None),
            Err(IdentityError::Required)
        );
        assert_eq!(
            Required.verify(SECRET, &alice, Some("zz")),
            Err(IdentityError::Invalid)
        );
        assert_eq!(
            Required.verify(SECRET, &id("bob@example.com"), Some(&good)),
            Err(IdentityError::Invalid)
        );
        assert_eq!(
            Required.verify(SECRET, &alice, Some(&good.to_uppercase())),
            Ok(Some(VerifiedId(alice.clone()))),
            "hex is case-insensitive"
        );
        assert_eq!(
            Required.verify("other", &alice, Some(&good)),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn modes_round_trip_and_unknown_stored_values_fail_closed() {
        for m in [Off, Optional, Required] {
            assert_eq!(IdentityVerification::parse(m.as_str(), "f"), Ok(m));
            assert_eq!(IdentityVerification::from_stored(m.as_str()), m);
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::Value::from(m.as_str())
            );
        }
        assert!(IdentityVerification::parse("maybe", "f").is_err());
        assert!(IdentityVerification::parse("Required", "f").is_err());
        assert_eq!(IdentityVerification::from_stored("???"), Required);
    }
}
