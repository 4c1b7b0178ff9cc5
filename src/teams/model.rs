//! The team as the request path sees it, and as the admin API shows it once created.

use colloquy_actors::domain::{
    AllowedDomains, IdentityVerification, RateLimits, SuspicionSettings,
};
use serde::Serialize;
use uuid::Uuid;

/// A team as the request path needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    /// Team id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The widget token (public: it ships in web pages).
    pub public_token: String,
    /// Whether the widget API answers at all.
    pub conversations_enabled: bool,
    /// Hosts the widget may be embedded on.
    pub allowed_widget_domains: AllowedDomains,
    /// Rate budgets.
    pub rate_limits: RateLimits,
    /// Whether widget requests prove who they are.
    pub identity_verification: IdentityVerification,
    /// HMAC key for identity verification (needed in clear to compute the HMAC).
    pub identity_secret: String,
    /// Who is mailed about new tickets.
    pub notification_recipients: Vec<String>,
    /// Spam-defence thresholds and weights.
    pub suspicion: SuspicionSettings,
}

/// What creating a team returns: the team plus the secret key, shown only this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTeam {
    /// Team id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Widget token.
    pub public_token: String,
    /// Operator key; `None` when an existing team is shown again.
    pub secret_api_key: Option<String>,
    /// Identity verification secret.
    pub identity_secret: String,
    /// Widget API switch.
    pub conversations_enabled: bool,
    /// Allowed embedding hosts.
    pub allowed_widget_domains: Vec<String>,
    /// Every budget, defaults filled in.
    pub rate_limits: RateLimits,
    /// Identity verification mode.
    pub identity_verification: IdentityVerification,
    /// Spam-defence settings.
    pub suspicion: SuspicionSettings,
}

impl CreatedTeam {
    /// The public view of a team plus, when just created, its secret key.
    pub fn new(team: &Team, secret_api_key: Option<String>) -> Self {
        Self {
            id: team.id,
            name: team.name.clone(),
            public_token: team.public_token.clone(),
            secret_api_key,
            identity_secret: team.identity_secret.clone(),
            conversations_enabled: team.conversations_enabled,
            allowed_widget_domains: team.allowed_widget_domains.entries().to_vec(),
            rate_limits: team.rate_limits,
            identity_verification: team.identity_verification,
            suspicion: team.suspicion,
        }
    }
}
