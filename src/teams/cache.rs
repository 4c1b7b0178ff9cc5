//! The in-memory cache that turns a widget token or operator key into its team without a
//! query on every request.

use super::{token_digest, Team};
use crate::store::PgStore;
use colloquy_actors::store::StoreError;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

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
