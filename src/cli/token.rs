//! `token`: a user's access token for the job API, signed with `api.jwt_secret` (HS256), the
//! way Supabase Auth signs them: for demos, tests and scripts where no sign-in page exists.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::{ApiSettings, ConfigError, Settings};

/// Longest lifetime `--expires` accepts.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The token for `user`, valid for `expires` from now, on stdout.
pub(super) fn token(settings: &Settings, user: Uuid, expires: Duration) -> anyhow::Result<()> {
    println!(
        "{}",
        sign(&settings.api, user, expires, chrono::Utc::now().timestamp())?
    );
    Ok(())
}

fn sign(api: &ApiSettings, user: Uuid, expires: Duration, now: i64) -> anyhow::Result<String> {
    let Some(secret) = &api.jwt_secret else {
        return Err(ConfigError::Invalid {
            key: "api.jwt_secret".to_owned(),
            value: "(unset)".to_owned(),
            reason: "`token` signs with the API's HS256 secret: set STUDIO_API__JWT_SECRET (the \
                     one the API verifies with; on Supabase, sign users in instead)"
                .to_owned(),
        }
        .into());
    };
    if expires.is_zero() || expires > MAX_LIFETIME {
        return Err(super::report::BadArgument(format!(
            "--expires {}: between 1s and 30days",
            humantime::format_duration(expires)
        ))
        .into());
    }
    let lifetime = i64::try_from(expires.as_secs()).unwrap_or(i64::MAX);
    let mut claims = serde_json::json!({
        "sub": user,
        "role": "authenticated",
        "aud": api.audience,
        "iat": now,
        "exp": now.saturating_add(lifetime),
    });
    if let Some(issuer) = &api.issuer {
        claims["iss"] = serde_json::Value::from(issuer.as_str());
    }
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes())?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_carries_what_the_api_verifies() {
        let mut api = ApiSettings {
            jwt_secret: Some("s".repeat(32).into()),
            issuer: Some("https://ref.supabase.co/auth/v1".into()),
            ..ApiSettings::default()
        };
        let user = Uuid::new_v4();
        let token = sign(&api, user, Duration::from_secs(3600), 1_000).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&["authenticated"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret("s".repeat(32).as_bytes()).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], user.to_string());
        assert_eq!(claims["role"], "authenticated");
        assert_eq!(claims["exp"], 4_600);
        assert_eq!(claims["iss"], "https://ref.supabase.co/auth/v1");

        api.jwt_secret = None;
        let refused = sign(&api, user, Duration::from_secs(60), 0).unwrap_err();
        assert!(refused.is::<ConfigError>(), "{refused}");
    }
}
