//! Who is calling: a signed-in user with their Supabase access token, or a trusted backend with a
//! service token acting for one user (`X-On-Behalf-Of`).
//!
//! Either way the result is the same [`Identity`]: a user id and the claims that
//! `queue::user::UserTx` hands to the database, where RLS decides. Every refusal of a token is
//! the same 401 (`WWW-Authenticate: Bearer error="invalid_token"`); which check failed is not
//! said, nor logged with the token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::digest;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::jwks::Jwks;
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
}

impl Identity {
    /// The service's name, if a service token made the request.
    pub fn service_name(&self) -> Option<&str> {
        self.service.as_deref().map(|s| s.name.as_str())
    }

    /// Identity for a signed stream URL: the user it was issued to, with minimal claims.
    pub fn for_stream(user: Uuid, audience: &str) -> Identity {
        Identity {
            user,
            claims: json!({ "sub": user, "role": "authenticated", "aud": audience }),
            service: None,
        }
    }
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
            .map(|url| Jwks::new(url, settings.jwks_min_refetch))
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
    async fn user(&self, token: &str) -> Option<Identity> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone()?,
            Algorithm::ES256 | Algorithm::RS256 => {
                let found = self.jwks.as_ref()?.key(header.kid.as_deref()?).await?;
                // A key verifies only its own algorithm (no RS256 key as an HS256 secret).
                if found.alg != header.alg {
                    return None;
                }
                found.key
            }
            _ => return None,
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
            .ok()?
            .claims;
        if claims.get("role").and_then(Value::as_str) != Some("authenticated") {
            return None;
        }
        let user = claims.get("sub")?.as_str()?.parse::<Uuid>().ok()?;
        Some(Identity {
            user,
            claims,
            service: None,
        })
    }

    /// The identity behind a request's headers.
    ///
    /// # Errors
    /// 401 for missing or unverifiable credentials; for service tokens, 400 when
    /// `X-On-Behalf-Of` is missing or not a UUID.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if let Some(service) = self.service(token) {
            let on_behalf = headers.get(ON_BEHALF_OF).ok_or_else(|| {
                ApiError::bad_request("service tokens must name the user in X-On-Behalf-Of")
            })?;
            let user = on_behalf
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<Uuid>().ok())
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
            });
        }
        self.user(token).await.ok_or_else(ApiError::unauthorized)
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
        state.verifier.identify(&parts.headers).await
    }
}
