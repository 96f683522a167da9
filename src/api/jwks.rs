//! The signing keys of user tokens (ES256, RS256), fetched from `api.jwks_url` and cached.
//!
//! A token naming a key id the cache does not hold makes the cache fetch the set again, so keys
//! rotate without a restart; at most one such fetch per `api.jwks_min_refetch`, so tokens with
//! made-up key ids cannot turn the API into a load generator against the key server. The set
//! is also fetched again once it is `api.jwks_refresh` old, so that withdrawn keys stop being
//! accepted. While the key server cannot be reached the cached keys keep verifying for
//! `api.jwks_max_stale` more; after that they are refused ([`KeyError::Stale`]: logged, counted
//! in `studio_api_jwks_stale_refusals_total`) until a fetch succeeds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tracing::{info, warn};

/// Longest wait for the key server.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A verification key and the one algorithm it may verify.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm (from the JWK's `alg`, else its key type).
    pub alg: Algorithm,
}

type Snapshot = (Arc<HashMap<String, VerifyingKey>>, Option<Instant>);

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The key server does not publish this key id (any more).
    Unknown,
    /// The cached keys are older than `jwks_refresh + jwks_max_stale` and the key server
    /// cannot be reached: nothing is trusted until it answers.
    Stale,
}

/// How long keys are trusted.
#[derive(Debug, Clone, Copy)]
pub struct KeyAges {
    /// Shortest time between fetches caused by unknown key ids.
    pub min_refetch: Duration,
    /// Age at which the set is fetched again.
    pub refresh: Duration,
    /// Extra age the set is trusted while fetching fails.
    pub max_stale: Duration,
}

/// The cache.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    ages: KeyAges,
    /// The keys and when they were fetched.
    keys: RwLock<Snapshot>,
    /// Held while fetching; the time of the last fetch (successful or not).
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).finish()
    }
}

impl Jwks {
    /// An empty cache for `url`; the first lookup fetches.
    ///
    /// # Errors
    /// The HTTP client cannot be built (TLS set-up).
    pub fn new(url: String, ages: KeyAges) -> Result<Jwks, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Jwks {
            url,
            client,
            ages,
            keys: RwLock::new((Arc::new(HashMap::new()), None)),
            fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// The key with id `kid`, fetching the set again if it is unknown (or the set is due for
    /// a refresh) and no fetch happened within `min_refetch`.
    ///
    /// # Errors
    /// [`KeyError`].
    pub async fn key(&self, kid: &str) -> Result<VerifyingKey, KeyError> {
        let fresh = |at: Option<Instant>| at.is_some_and(|at| at.elapsed() < self.ages.refresh);
        let (keys, fetched_at) = self.snapshot();
        if fresh(fetched_at)
            && let Some(key) = keys.get(kid)
        {
            return Ok(key.clone());
        }
        let mut last = self.fetch.lock().await;
        // Someone else may have fetched while we waited.
        let (keys, fetched_at) = self.snapshot();
        if fresh(fetched_at)
            && let Some(key) = keys.get(kid)
        {
            return Ok(key.clone());
        }
        if last.is_none_or(|at| at.elapsed() >= self.ages.min_refetch) {
            *last = Some(Instant::now());
            match self.download().await {
                Ok(keys) => {
                    info!(keys = keys.len(), "fetched the JWKS");
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) =
                        (Arc::new(keys), Some(Instant::now()));
                }
                // Keep the keys we had for a while: a key server outage must not log every
                // user out at once.
                Err(err) => {
                    warn!(error.message = %err, "cannot fetch the JWKS; keeping the cached keys")
                }
            }
        }
        let (keys, fetched_at) = self.snapshot();
        let key = keys.get(kid).ok_or(KeyError::Unknown)?;
        let trusted = self.ages.refresh.saturating_add(self.ages.max_stale);
        if fetched_at.is_some_and(|at| at.elapsed() < trusted) {
            return Ok(key.clone());
        }
        warn!(
            max_stale = %humantime::format_duration(self.ages.max_stale),
            "the JWKS could not be fetched for longer than api.jwks_max_stale; refusing tokens until it answers"
        );
        metrics::counter!("studio_api_jwks_stale_refusals_total").increment(1);
        Err(KeyError::Stale)
    }

    fn snapshot(&self) -> Snapshot {
        // A poisoned lock still holds a whole value (writers only swap it).
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn download(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.without_url().to_string())?
            .json()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok(set
            .keys
            .iter()
            .filter(|jwk| {
                jwk.common
                    .public_key_use
                    .as_ref()
                    .is_none_or(|u| *u == PublicKeyUse::Signature)
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let family = match &jwk.algorithm {
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => return None, // only ES256 and RS256 user tokens are accepted
                };
                let alg = match jwk.common.key_algorithm {
                    None => family,
                    Some(KeyAlgorithm::ES256) if family == Algorithm::ES256 => family,
                    Some(KeyAlgorithm::RS256) if family == Algorithm::RS256 => family,
                    Some(_) => return None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, VerifyingKey { key, alg }))
            })
            .collect())
    }
}
