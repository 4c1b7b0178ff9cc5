//! Teams (tenants): creation with fresh credentials, and everything the request path needs
//! of a team, one file a job: the team itself and how it is shown once created (`model`),
//! whether a widget request's identity hash proves its distinct_id (`identity`), fresh
//! tokens and the digests they are stored and compared by (`tokens`), parsing the team and
//! settings bodies of the admin and operator APIs (`bodies`), and token → team without a
//! query on every request (`cache`). Everything is re-exported here: callers name
//! `crate::teams::…`, whichever file it lives in.

mod bodies;
mod cache;
mod identity;
mod model;
mod tokens;

pub use bodies::{NewTeam, SettingsPatch};
pub use cache::TeamCache;
pub use model::{CreatedTeam, Team};
pub use tokens::{
    new_identity_secret, new_public_token, new_secret_key, secrets_equal, token_digest,
};

use crate::store::PgStore;
use colloquy_actors::store::StoreError;
use uuid::Uuid;

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
    let secret = new_secret_key();
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
