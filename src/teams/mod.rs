//! Teams (tenants): creation with fresh credentials, and the in-memory cache that turns a
//! widget token or operator key into its team without a query on every request.

use crate::store::PgStore;
use colloquy_actors::domain::{
    AllowedDomains, DistinctId, IdentityError, IdentityVerification, RateLimits, SuspicionSettings,
    ValidationError, VerifiedId,
};
use colloquy_actors::store::StoreError;
use dashmap::DashMap;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

impl Team {
    /// Identity verification as this team asks: `Some` only when `hash` proves `distinct_id`
    /// (hex(HMAC-SHA256(identity_secret, distinct_id)), constant-time); see
    /// [`IdentityVerification::verify`].
    pub fn verify_identity(
        &self,
        distinct_id: &DistinctId,
        hash: Option<&str>,
    ) -> Result<Option<VerifiedId>, IdentityError> {
        self.identity_verification
            .verify(&self.identity_secret, distinct_id, hash)
    }
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

/// A validated `POST /api/teams` body.
#[derive(Debug, Clone)]
pub struct NewTeam {
    /// Name.
    pub name: String,
    /// Widget API switch (default on).
    pub conversations_enabled: bool,
    /// Allowed embedding hosts (default: anywhere).
    pub allowed_widget_domains: AllowedDomains,
    /// Budgets (defaults for keys not given).
    pub rate_limits: RateLimits,
    /// Identity verification mode (default off).
    pub identity_verification: IdentityVerification,
    /// Spam-defence settings (defaults for keys not given).
    pub suspicion: SuspicionSettings,
}

impl NewTeam {
    /// Just a name, everything else default (the CLI's `team create`).
    pub fn named(name: &str) -> Result<Self, ValidationError> {
        let mut body = Map::new();
        body.insert("name".into(), Value::from(name));
        Self::parse(&body)
    }

    /// Parses the admin API body; unknown fields are refused, naming them.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, ValidationError> {
        const KNOWN: [&str; 6] = [
            "name",
            "conversations_enabled",
            "allowed_widget_domains",
            "rate_limits",
            "identity_verification",
            "suspicion",
        ];
        if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ValidationError::new(unknown.as_str(), "unknown field"));
        }
        let name = match body.get("name") {
            Some(Value::String(s))
                if (1..=200).contains(&s.trim().chars().count()) && !s.contains('\0') =>
            {
                s.trim().to_owned()
            }
            _ => {
                return Err(ValidationError::new(
                    "name",
                    "name must be a string of 1 to 200 characters",
                ))
            }
        };
        let conversations_enabled = match body.get("conversations_enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            _ => {
                return Err(ValidationError::new(
                    "conversations_enabled",
                    "conversations_enabled must be a boolean",
                ))
            }
        };
        let allowed_widget_domains = match body.get("allowed_widget_domains") {
            None | Some(Value::Null) => AllowedDomains::default(),
            Some(Value::Array(items)) if items.len() <= 100 => {
                let mut hosts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s)
                            if (1..=253).contains(&s.trim().len())
                                && !s.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                        {
                            hosts.push(s.clone())
                        }
                        _ => {
                            return Err(ValidationError::new(
                                "allowed_widget_domains",
                                "each allowed domain must be a host name such as shop.example.com or *.example.com",
                            ))
                        }
                    }
                }
                AllowedDomains::parse(hosts)?
            }
            _ => {
                return Err(ValidationError::new(
                    "allowed_widget_domains",
                    "allowed_widget_domains must be a list of at most 100 host names",
                ))
            }
        };
        let rate_limits = match body.get("rate_limits") {
            None | Some(Value::Null) => RateLimits::default(),
            Some(v) => RateLimits::default().merge_json(v)?,
        };
        let identity_verification = match body.get("identity_verification") {
            None | Some(Value::Null) => IdentityVerification::Off,
            Some(Value::String(s)) => IdentityVerification::parse(s, "identity_verification")?,
            _ => {
                return Err(ValidationError::new(
                    "identity_verification",
                    "identity_verification must be off, optional or required",
                ))
            }
        };
        let suspicion = match body.get("suspicion") {
            None | Some(Value::Null) => SuspicionSettings::default(),
            Some(v) => SuspicionSettings::default().merge_json(v)?,
        };
        Ok(Self {
            name,
            conversations_enabled,
            allowed_widget_domains,
            rate_limits,
            identity_verification,
            suspicion,
        })
    }
}

/// A validated `PATCH /api/conversations/settings` body: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    /// New widget switch.
    pub conversations_enabled: Option<bool>,
    /// New allowed hosts.
    pub allowed_widget_domains: Option<AllowedDomains>,
    /// New budgets (merged over the current ones).
    pub rate_limits: Option<RateLimits>,
    /// New identity verification mode.
    pub identity_verification: Option<IdentityVerification>,
    /// New notification recipients.
    pub notification_recipients: Option<Vec<String>>,
    /// New spam-defence settings (merged over the current ones).
    pub suspicion: Option<SuspicionSettings>,
}

impl SettingsPatch {
    /// Parses a settings change against the team's current settings; unknown fields are refused.
    pub fn parse(current: &Team, body: &Map<String, Value>) -> Result<Self, ValidationError> {
        const KNOWN: [&str; 6] = [
            "conversations_enabled",
            "allowed_widget_domains",
            "rate_limits",
            "identity_verification",
            "notification_recipients",
            "suspicion",
        ];
        if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ValidationError::new(unknown.as_str(), "unknown field"));
        }
        // The team-creation rules apply to each field; reuse them.
        let mut as_new = body.clone();
        as_new.remove("notification_recipients");
        as_new.insert("name".into(), Value::from(current.name.clone()));
        as_new.remove("rate_limits");
        as_new.remove("suspicion");
        let parsed = NewTeam::parse(&as_new)?;
        let notification_recipients = match body.get("notification_recipients") {
            None => None,
            Some(Value::Array(items)) if items.len() <= 20 => Some(
                items
                    .iter()
                    .map(|v| match v.as_str().map(str::trim) {
                        Some(e)
                            if e.contains('@')
                                && (3..=254).contains(&e.len())
                                && !e.chars().any(char::is_control) =>
                        {
                            Ok(e.to_owned())
                        }
                        _ => Err(ValidationError::new(
                            "notification_recipients",
                            "each recipient must be an email address",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ValidationError::new(
                    "notification_recipients",
                    "notification_recipients must be a list of at most 20 email addresses",
                ))
            }
        };
        Ok(Self {
            conversations_enabled: body
                .contains_key("conversations_enabled")
                .then_some(parsed.conversations_enabled),
            allowed_widget_domains: body
                .contains_key("allowed_widget_domains")
                .then_some(parsed.allowed_widget_domains),
            rate_limits: body
                .get("rate_limits")
                .map(|v| current.rate_limits.merge_json(v))
                .transpose()?,
            identity_verification: body
                .contains_key("identity_verification")
                .then_some(parsed.identity_verification),
            notification_recipients,
            suspicion: body
                .get("suspicion")
                .map(|v| current.suspicion.merge_json(v))
                .transpose()?,
        })
    }
}

/// Creates a team with fresh credentials; the secret key is returned once and stored hashed.
pub async fn create(store: &PgStore, new: NewTeam) -> Result<CreatedTeam, StoreError> {
    let team = Team {
        id: Uuid::now_v7(),
        name: new.name,
        public_token: new_public_token(),
        conversations_enabled: new.conversations_enabled,
        allowed_widget_domains: new.allowed_widget_domains,
        rate_limits: new.rate_limits,
        identity_verification: new.identity_verification,
        identity_secret: new_identity_secret(),
        notification_recipients: Vec::new(),
        suspicion: new.suspicion,
    };
    let secret = random_token("sk_", 43);
    store.insert_team(&team, &token_digest(&secret)).await?;
    Ok(CreatedTeam::new(&team, Some(secret)))
}

/// `colloquy team create`: creates, or with `if_not_exists` shows the existing team of that
/// name (without its secret key, which is not stored).
pub async fn create_from_cli(
    store: &PgStore,
    name: &str,
    if_not_exists: bool,
) -> anyhow::Result<CreatedTeam> {
    let new = NewTeam::named(name).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if if_not_exists {
        if let Some(team) = store.team_by_name(&new.name).await? {
            return Ok(CreatedTeam::new(&team, None));
        }
    }
    Ok(create(store, new).await?)
}

/// How long a cached team is trusted; settings changes through other nodes show up by then.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Unknown tokens remembered at most; beyond it they are simply looked up again.
const MAX_NEGATIVE: usize = 10_000;

/// A lookup's answer (`None`: no such team) and when it was made.
type CachedTeam = (Option<Arc<Team>>, Instant);

/// Token → team, cached for a few seconds (including "no such team", boundedly), so the
/// widget's polling does not query the teams table on every request.
///
/// Widget tokens are public (they ship in web pages): they are cached by their text, so a
/// hit costs a hash of the token and no SHA-256 (the digest is only computed on a miss, to
/// query the database). Operator keys are secrets: they stay keyed by their digest, so that
/// the map's key comparisons never run over the secret itself. Both maps keep the standard
/// keyed hasher: their keys are chosen by strangers (unknown tokens are remembered too).
#[derive(Clone)]
pub struct TeamCache {
    public: Arc<DashMap<Box<str>, CachedTeam>>,
    secret: Arc<DashMap<[u8; 32], CachedTeam>>,
    /// False while another node may change teams unannounced (see `crate::cluster`):
    /// every lookup then reads the database.
    trusted: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for TeamCache {
    fn default() -> Self {
        Self {
            public: Arc::default(),
            secret: Arc::default(),
            trusted: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl TeamCache {
    /// The team whose widget token this is.
    pub async fn by_public_token(
        &self,
        store: &PgStore,
        token: &str,
    ) -> Result<Option<Arc<Team>>, StoreError> {
        if let Some(hit) = self.cached(&self.public, token) {
            return Ok(hit);
        }
        let found = store
            .team_by_public_digest(&token_digest(token))
            .await?
            .map(Arc::new);
        self.remember(&self.public, token.into(), &found);
        Ok(found)
    }

    /// The team whose operator key this is.
    pub async fn by_secret_key(
        &self,
        store: &PgStore,
        key: &str,
    ) -> Result<Option<Arc<Team>>, StoreError> {
        let digest = token_digest(key);
        if let Some(hit) = self.cached(&self.secret, &digest) {
            return Ok(hit);
        }
        let found = store.team_by_secret_digest(&digest).await?.map(Arc::new);
        self.remember(&self.secret, digest, &found);
        Ok(found)
    }

    /// Says whether cached teams may answer (the cluster decides); untrusted, every lookup
    /// reads the database.
    pub fn set_trusted(&self, trusted: bool) {
        self.trusted
            .store(trusted, std::sync::atomic::Ordering::Release);
    }

    /// Forgets every cached team (after the change feed was down).
    pub fn clear(&self) {
        self.public.clear();
        self.secret.clear();
    }

    /// Forgets every cached credential of a team, after its settings or tokens changed.
    pub fn invalidate(&self, team_id: Uuid) {
        let other = |(team, _): &mut CachedTeam| team.as_ref().is_none_or(|t| t.id != team_id);
        self.public.retain(|_, e| other(e));
        self.secret.retain(|_, e| other(e));
    }

    /// A fresh cached answer, if trusted.
    fn cached<K, Q>(&self, map: &DashMap<K, CachedTeam>, key: &Q) -> Option<Option<Arc<Team>>>
    where
        K: std::borrow::Borrow<Q> + Eq + std::hash::Hash,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        if !self.trusted.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        map.get(key)
            .filter(|e| e.value().1.elapsed() < CACHE_TTL)
            .map(|e| e.value().0.clone())
    }

    /// Caches a database answer ("no such team" only while fewer than `MAX_NEGATIVE` are).
    fn remember<K: Eq + std::hash::Hash>(
        &self,
        map: &DashMap<K, CachedTeam>,
        key: K,
        found: &Option<Arc<Team>>,
    ) {
        if found.is_some() || map.len() < MAX_NEGATIVE {
            map.insert(key, (found.clone(), Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_name_alone_gets_the_defaults() {
        let t = NewTeam::parse(&body(json!({"name": " Acme "}))).unwrap();
        assert_eq!(t.name, "Acme");
        assert!(t.conversations_enabled);
        assert_eq!(t.rate_limits, RateLimits::default());
        assert_eq!(t.identity_verification, IdentityVerification::Off);
    }

    #[test]
    fn bad_fields_are_named() {
        for (v, field) in [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "a", "colour": 1}), "colour"),
            (
                json!({"name": "a", "conversations_enabled": "yes"}),
                "conversations_enabled",
            ),
            (
                json!({"name": "a", "allowed_widget_domains": "x.com"}),
                "allowed_widget_domains",
            ),
            (
                json!({"name": "a", "rate_limits": {"nope": 1}}),
                "rate_limits.nope",
            ),
            (
                json!({"name": "a", "identity_verification": "maybe"}),
                "identity_verification",
            ),
        ] {
            assert_eq!(NewTeam::parse(&body(v)).unwrap_err().field, field);
        }
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_equal("a-long-admin-token", "a-long-admin-token"));
        assert!(!secrets_equal("a-long-admin-token", "a-long-admin-tokeN"));
        assert!(!secrets_equal("", "x"));
    }
}
