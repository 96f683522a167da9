//! Who is calling: a signed-in user with their Supabase access token, or a trusted backend with a
//! service token acting for one user (`X-On-Behalf-Of`).
//!
//! Either way the result is the same [`Identity`]: a user id and the claims that
//! `queue::user::UserTx` hands to the database, where RLS decides. A refused token is a 401 that
//! says which check failed ([`Refusal`], RFC 6750's `error_description`, as Supabase says "JWT
//! expired"), never anything about the keys; the reason is logged at info with the request id,
//! never the token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::digest;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::jwks::{Jwks, KeyAges, KeyError};
use crate::config::ApiSettings;

/// The header naming the user a service token acts for.
pub const ON_BEHALF_OF: &str = "x-on-behalf-of";

/// A configured service token.
#[derive(Debug)]
pub struct ServiceToken {
    /// Its name (recorded on the jobs it creates).
    pub name: String,
    sha256: [u8; 32],
    /// Kinds it may create.
    pub kinds: Vec<String>,
}

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user the request acts for.
    pub user: Uuid,
    /// Claims for `request.jwt.claims` (the token's own for users).
    pub claims: Value,
    /// The service acting for the user, if any.
    pub service: Option<Arc<ServiceToken>>,
    /// When the credentials expire (a user token's `exp`; `None` for service tokens): a
    /// stream they opened ends then.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// The service's name, if a service token made the request.
    pub fn service_name(&self) -> Option<&str> {
        self.service.as_deref().map(|s| s.name.as_str())
    }

    /// Whether this caller may create, read, follow and cancel jobs of `kind`: users any of
    /// their own (RLS decides which are theirs), a service token only its `kinds`. Jobs of other
    /// kinds are answered like someone else's: 404 (403 for a create).
    pub fn may_use_kind(&self, kind: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| s.kinds.iter().any(|k| k == kind))
    }

    /// The kinds a service token is held to (`None` for users).
    pub fn kinds(&self) -> Option<Vec<String>> {
        self.service.as_deref().map(|s| s.kinds.clone())
    }

    /// Identity for a signed stream URL: the user it was issued to, with minimal claims.
    pub fn for_stream(user: Uuid, audience: &str, expires_at: Option<DateTime<Utc>>) -> Identity {
        Identity {
            user,
            claims: json!({ "sub": user, "role": "authenticated", "aud": audience }),
            service: None,
            expires_at,
        }
    }
}

/// Why credentials were refused: the `error_description` of the 401 and the `reason` label of
/// `studio_api_auth_refusals_total`. Nothing here tells a caller which keys exist: an unknown
/// key id and a bad signature are the same [`Refusal::Signature`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a JWT (nor a service token).
    Malformed,
    /// An algorithm the API does not accept (`none`, HS384, …).
    Algorithm,
    /// The signature does not verify with any key the API trusts.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `aud` is not `api.audience`.
    Audience,
    /// `iss` is not `api.issuer`.
    Issuer,
    /// `exp`, `sub` or `aud` is missing.
    MissingClaim,
    /// `role` is not `authenticated`.
    Role,
    /// `sub` is not a user id in the canonical UUID form.
    Subject,
    /// A signed stream URL's token that is forged, for another job, or expired.
    StreamToken,
    /// The keys of ES256/RS256 tokens cannot be fetched and the cached ones are too old to
    /// trust: not the caller's fault, answered 503.
    KeysUnavailable,
}

impl Refusal {
    /// For the caller (RFC 6750 `error_description`: printable ASCII without `"` or `\`).
    pub fn description(self) -> &'static str {
        match self {
            Refusal::Missing => "missing credentials: send Authorization: Bearer <access token>",
            Refusal::Malformed => "invalid JWT: cannot be parsed",
            Refusal::Algorithm => "invalid JWT: signing algorithm not accepted",
            Refusal::Signature => "invalid JWT: signature cannot be verified",
            Refusal::Expired => "JWT expired",
            Refusal::NotYetValid => "JWT not yet valid (nbf)",
            Refusal::Audience => "invalid JWT: audience (aud) not accepted",
            Refusal::Issuer => "invalid JWT: issuer (iss) not accepted",
            Refusal::MissingClaim => "invalid JWT: exp, sub and aud are required",
            Refusal::Role => "invalid JWT: role must be authenticated",
            Refusal::Subject => "invalid JWT: sub must be a user id (UUID)",
            Refusal::StreamToken => "invalid or expired stream token: ask for a new stream URL",
            Refusal::KeysUnavailable => "access tokens cannot be verified right now; retry later",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Audience => "audience",
            Refusal::Issuer => "issuer",
            Refusal::MissingClaim => "missing_claim",
            Refusal::Role => "role",
            Refusal::Subject => "subject",
            Refusal::StreamToken => "stream_token",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }

    fn from_jwt(err: &jsonwebtoken::errors::Error) -> Refusal {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidAudience => Refusal::Audience,
            ErrorKind::InvalidIssuer => Refusal::Issuer,
            ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
            ErrorKind::InvalidSubject => Refusal::Subject,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::Algorithm,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => Refusal::Malformed,
            _ => Refusal::Signature,
        }
    }
}

/// `sub` as a user id: only the canonical 36-character form, which PostgreSQL's `uuid` cast
/// (`auth.uid()`) also reads; `urn:uuid:…`, braces or no hyphens are refused here rather than
/// failing in the database.
fn user_id(sub: &str) -> Option<Uuid> {
    (sub.len() == 36).then(|| sub.parse().ok()).flatten()
}

/// Verifies bearer credentials.
#[derive(Debug)]
pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    audience: String,
    issuer: Option<String>,
    leeway: u64,
    services: Vec<Arc<ServiceToken>>,
}

impl Verifier {
    /// A verifier for `settings` (already validated).
    ///
    /// # Errors
    /// The HS256 secret cannot be used or the JWKS client cannot be built.
    pub fn new(settings: &ApiSettings) -> anyhow::Result<Verifier> {
        let hs256 = settings
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()))
            .transpose()
            .map_err(|_| anyhow::anyhow!("api.jwt_secret: not usable as an HS256 key"))?;
        let jwks = settings
            .jwks_url
            .clone()
            .map(|url| {
                Jwks::new(
                    url,
                    KeyAges {
                        min_refetch: settings.jwks_min_refetch,
                        refresh: settings.jwks_refresh,
                        max_stale: settings.jwks_max_stale,
                    },
                )
            })
            .transpose()?;
        let mut services = Vec::new();
        for (name, token) in &settings.service_tokens {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(&token.sha256, &mut sha256)
                .map_err(|_| anyhow::anyhow!("api.service_tokens.{name}.sha256: not hex"))?;
            services.push(Arc::new(ServiceToken {
                name: name.clone(),
                sha256,
                kinds: token.kinds.clone(),
            }));
        }
        Ok(Verifier {
            hs256,
            jwks,
            audience: settings.audience.clone(),
            issuer: settings.issuer.clone(),
            leeway: settings.leeway.as_secs(),
            services,
        })
    }

    /// The audience required of user tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The service token `token` is, if any. Every configured hash is compared, in constant
    /// time, whatever matches first.
    fn service(&self, token: &str) -> Option<Arc<ServiceToken>> {
        let hash = digest::digest(&digest::SHA256, token.as_bytes());
        let mut found = None;
        for service in &self.services {
            if bool::from(service.sha256.ct_eq(hash.as_ref())) {
                found = Some(service.clone());
            }
        }
        found
    }

    /// Verify a user's access token: signature with the key its algorithm calls for, then
    /// `exp`, `nbf`, `aud`, `iss`, `role = authenticated` and `sub` a UUID.
    async fn user(&self, token: &str) -> Result<Identity, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refusal::from_jwt(&e))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or(Refusal::Algorithm)?,
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(Refusal::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(Refusal::Signature)?;
                let found = jwks.key(kid).await.map_err(|e| match e {
                    KeyError::Unknown => Refusal::Signature,
                    KeyError::Stale => Refusal::KeysUnavailable,
                })?;
                // A key verifies only its own algorithm (no RS256 key as an HS256 secret).
                if found.alg != header.alg {
                    return Err(Refusal::Signature);
                }
                found.key
            }
            _ => return Err(Refusal::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| Refusal::from_jwt(&e))?
            .claims;
        if claims.get("role").and_then(Value::as_str) != Some("authenticated") {
            return Err(Refusal::Role);
        }
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(user_id)
            .ok_or(Refusal::Subject)?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| DateTime::from_timestamp(exp, 0));
        Ok(Identity {
            user,
            claims,
            service: None,
            expires_at,
        })
    }

    /// The identity behind a request's headers.
    ///
    /// # Errors
    /// 401 for missing or unverifiable credentials, saying which check failed; for service
    /// tokens, 400 when `X-On-Behalf-Of` is missing or not a UUID.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = bearer(headers).ok_or_else(|| ApiError::unauthorized(Refusal::Missing))?;
        if let Some(service) = self.service(token) {
            let on_behalf = headers.get(ON_BEHALF_OF).ok_or_else(|| {
                ApiError::bad_request("service tokens must name the user in X-On-Behalf-Of")
            })?;
            let user = on_behalf
                .to_str()
                .ok()
                .and_then(|v| user_id(v.trim()))
                .ok_or_else(|| {
                    ApiError::bad_request("X-On-Behalf-Of: expected a user id (UUID)")
                })?;
            return Ok(Identity {
                user,
                claims: json!({
                    "sub": user,
                    "role": "authenticated",
                    "aud": self.audience,
                    "studio_service": service.name,
                }),
                service: Some(service),
                expires_at: None,
            });
        }
        self.user(token).await.map_err(ApiError::unauthorized)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<ApiState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state.authenticate(&parts.headers, peer(parts)).await
    }
}

/// The client's address, when the server recorded it.
pub fn peer(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The client's address as an extractor (`None` when the server did not record it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts)))
    }
}
