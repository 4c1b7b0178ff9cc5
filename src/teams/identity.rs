//! Identity verification as a team asks for it: whether a widget request's identity hash
//! proves the distinct_id it names.

use super::Team;
use colloquy_actors::domain::{DistinctId, IdentityError, VerifiedId};

impl Team {
    /// Identity verification as this team asks: `Some` only when `hash` proves `distinct_id`
    /// (hex(HMAC-SHA256(identity_secret, distinct_id)), constant-time); see
    /// [`IdentityVerification::verify`](colloquy_actors::domain::IdentityVerification::verify).
    pub fn verify_identity(
        &self,
        distinct_id: &DistinctId,
        hash: Option<&str>,
    ) -> Result<Option<VerifiedId>, IdentityError> {
        self.identity_verification
            .verify(&self.identity_secret, distinct_id, hash)
    }
}
