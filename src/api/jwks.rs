//! The signing keys of user tokens (ES256, RS256), fetched from `api.jwks_url` and cached.
//!
//! A token naming a key id the cache does not hold makes the cache fetch the set again, so keys
//! rotate without a restart; at most one such fetch per `api.jwks_min_refetch`, so tokens with
//! made-up key ids cannot turn the API into a load generator against the key server. The set
//! is also refreshed after [`MAX_AGE`] so that withdrawn keys stop being accepted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tracing::{info, warn};

/// Keys older than this are fetched again on the next lookup.
pub const MAX_AGE: Duration = Duration::from_secs(600);

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

/// The cache.
pub struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    min_refetch: Duration,
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
    pub fn new(url: reqwest::Url, min_refetch: Duration) -> Result<Jwks, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Jwks {
            url,
            client,
            min_refetch,
            keys: RwLock::new((Arc::new(HashMap::new()), None)),
            fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// The key with id `kid`, fetching the set again if it is unknown (or the set is old) and no
    /// fetch happened within `min_refetch`.
    pub async fn key(&self, kid: &str) -> Option<VerifyingKey> {
        let (keys, fetched_at) = self.snapshot();
        if fetched_at.is_some_and(|at| at.elapsed() < MAX_AGE)
            && let Some(key) = keys.get(kid)
        {
            return Some(key.clone());
        }
        let mut last = self.fetch.lock().await;
        // Someone else may have fetched while we waited.
        let (keys, fetched_at) = self.snapshot();
        if fetched_at.is_some_and(|at| at.elapsed() < MAX_AGE)
            && let Some(key) = keys.get(kid)
        {
            return Some(key.clone());
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return keys.get(kid).cloned();
        }
        *last = Some(Instant::now());
        match self.download().await {
            Ok(keys) => {
                info!(keys = keys.len(), "fetched the JWKS");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) =
                    (Arc::new(keys), Some(Instant::now()));
            }
            // Keep the keys we had: a key server outage must not log every user out.
            Err(err) => {
                warn!(error.message = %err, "cannot fetch the JWKS; keeping the cached keys")
            }
        }
        self.snapshot().0.get(kid).cloned()
    }

    fn snapshot(&self) -> Snapshot {
        // A poisoned lock still holds a whole value (writers only swap it).
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn download(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let set: JwkSet = self
            .client
            .get(self.url.clone())
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
