//! `[api]` settings: where the job API listens, how it connects, whom it believes.
//!
//! Off unless `api.listen` is set. Secrets (`jwt_secret`, `database_url`, `stream_secret`) are
//! [`SecretString`]s; service tokens are configured as SHA-256 hashes, never in clear.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;

/// The job API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address to serve the API on (`ip:port`); empty (the default) turns the API off.
    pub listen: String,
    /// The API's own login role (a member of `studio_api`); unset: `database.url`.
    pub database_url: Option<SecretString>,
    /// Pool size of the API's connections.
    pub max_connections: u32,
    /// HS256 secret of user tokens (Supabase's legacy JWT secret).
    pub jwt_secret: Option<SecretString>,
    /// JWKS of ES256/RS256 user tokens, e.g. `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`.
    pub jwks_url: Option<String>,
    /// Shortest time between two fetches of the JWKS caused by unknown key ids.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// Age at which the cached JWKS is fetched again (so withdrawn keys stop verifying).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// How long past `jwks_refresh` cached keys keep verifying while the key server cannot be
    /// reached; then tokens signed with them are refused (503) until it answers.
    #[serde(with = "humantime_serde")]
    pub jwks_max_stale: Duration,
    /// Required `aud` claim.
    pub audience: String,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Origins allowed by CORS (`https://app.example.com`); none by default.
    #[serde(deserialize_with = "string_or_list")]
    pub cors_origins: Vec<String>,
    /// Largest request body in bytes (checked before the body is read).
    pub body_limit: usize,
    /// Service tokens of trusted backends, by name.
    pub service_tokens: BTreeMap<String, ServiceTokenSettings>,
    /// Key of the signed stream URLs handed to browsers; unset: random per process (then a
    /// stream URL works only on the replica that issued it).
    pub stream_secret: Option<SecretString>,
    /// How long a signed stream URL can be opened after it was issued.
    #[serde(with = "humantime_serde")]
    pub stream_url_ttl: Duration,
    /// Interval of keep-alive comments on idle streams.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most streams open at once in this process (more are refused with 503).
    pub max_streams: usize,
    /// Requests per second one user may make, sustained (0: no limit); more are 429.
    pub user_requests_per_second: u32,
    /// Requests one user may make at once above the sustained rate.
    pub user_request_burst: u32,
    /// Streams one user may hold open in this process (more are 429).
    pub max_streams_per_user: usize,
    /// Failed authentications per minute from one client address (0: no limit); past it,
    /// requests from that address are 429 until the allowance refills.
    pub auth_failures_per_minute: u32,
    /// Latest `run_at` a create may ask for, from now (a job waiting longer would hold a
    /// quota slot for nothing).
    #[serde(with = "humantime_serde")]
    pub max_run_at_ahead: Duration,
}

/// One service token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenSettings {
    /// SHA-256 of the token, hex (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// The only kinds this service may create, read, follow and cancel.
    #[serde(deserialize_with = "string_or_list")]
    pub kinds: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: String::new(),
            database_url: None,
            max_connections: 10,
            jwt_secret: None,
            jwks_url: None,
            jwks_min_refetch: Duration::from_secs(10),
            // supabase-js (auth-js) caches the JWKS for 10 minutes
            jwks_refresh: Duration::from_secs(600),
            jwks_max_stale: Duration::from_secs(3600),
            audience: "authenticated".to_owned(),
            issuer: None,
            leeway: Duration::from_secs(10),
            cors_origins: Vec::new(),
            body_limit: 2 * 1024 * 1024,
            service_tokens: BTreeMap::new(),
            stream_secret: None,
            stream_url_ttl: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
            max_streams: 20_000,
            max_run_at_ahead: Duration::from_secs(30 * 24 * 3600),
            user_requests_per_second: 20,
            user_request_burst: 60,
            max_streams_per_user: 20,
            auth_failures_per_minute: 30,
        }
    }
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A list from TOML, or one string split on commas and whitespace (what environment variables
/// can carry).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Line(String),
    }
    Ok(match Items::deserialize(d)? {
        Items::List(list) => list,
        Items::Line(line) => line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The JWKS must come over TLS (keys swapped in transit would let anyone sign tokens), except
/// from this machine (`localhost`, 127.0.0.0/8, `::1`: a sidecar or a test).
fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| invalid("api.jwks_url", url, "expected an https:// URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(invalid(
            "api.jwks_url",
            url,
            "must be https:// (keys fetched over plain http could be swapped in transit); http:// is accepted only for localhost",
        )),
        _ => Err(invalid("api.jwks_url", url, "expected an https:// URL")),
    }
}

impl ApiSettings {
    /// The listen address, or `None` when the API is off.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `api.listen` if it is not `ip:port`.
    pub fn listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            invalid(
                "api.listen",
                &self.listen,
                "expected ip:port, e.g. 0.0.0.0:8080, or empty to disable",
            )
        })
    }

    /// Check every value; errors name the key (and never print a secret).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listening = self.listen()?.is_some();
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(invalid(
                "api.jwt_secret",
                "[REDACTED]",
                "must be at least 32 bytes",
            ));
        }
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url)?;
        }
        if listening
            && self.jwt_secret.is_none()
            && self.jwks_url.is_none()
            && self.service_tokens.is_empty()
        {
            return Err(invalid(
                "api.listen",
                &self.listen,
                "the API needs a way to verify callers: set api.jwt_secret, api.jwks_url or api.service_tokens",
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(invalid("api.audience", "(empty)", "must not be empty"));
        }
        if self.max_connections < 2 {
            return Err(invalid(
                "api.max_connections",
                self.max_connections,
                "must be at least 2 (one is the stream listener's)",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.body_limit) {
            return Err(invalid(
                "api.body_limit",
                self.body_limit,
                "must be between 1024 and 67108864 bytes",
            ));
        }
        for origin in &self.cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err()
                || !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "api.cors_origins",
                    origin,
                    "expected origins like https://app.example.com (scheme, host, optional port; no path)",
                ));
            }
        }
        for (name, token) in &self.service_tokens {
            let key = |field: &str| format!("api.service_tokens.{name}.{field}");
            if !(1..=64).contains(&name.len()) {
                return Err(invalid(
                    "api.service_tokens",
                    name,
                    "names are 1-64 characters",
                ));
            }
            if token.sha256.len() != 64 || hex::decode(&token.sha256).is_err() {
                return Err(invalid(
                    key("sha256"),
                    "[REDACTED]",
                    "expected the token's SHA-256 as 64 hex digits",
                ));
            }
            if let Some(bad) = token.kinds.iter().find(|k| !super::valid_kind_name(k)) {
                return Err(invalid(key("kinds"), bad, "not a job kind name"));
            }
        }
        for (key, value) in [
            ("api.jwks_min_refetch", self.jwks_min_refetch),
            ("api.jwks_refresh", self.jwks_refresh),
            ("api.stream_url_ttl", self.stream_url_ttl),
            ("api.keep_alive", self.keep_alive),
            ("api.max_run_at_ahead", self.max_run_at_ahead),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "0s", "must be positive"));
            }
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(invalid(
                "api.leeway",
                humantime::format_duration(self.leeway),
                "must be at most 5m",
            ));
        }
        if self.max_streams_per_user == 0 {
            return Err(invalid("api.max_streams_per_user", 0, "must be at least 1"));
        }
        if self.user_request_burst == 0 {
            return Err(invalid("api.user_request_burst", 0, "must be at least 1"));
        }
        if self.max_streams == 0 {
            return Err(invalid("api.max_streams", 0, "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut ApiSettings)) -> ApiSettings {
        let mut s = ApiSettings {
            listen: "127.0.0.1:8080".into(),
            jwt_secret: Some("x".repeat(32).into()),
            ..ApiSettings::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn off_by_default_and_valid() {
        let s = ApiSettings::default();
        assert_eq!(s.listen().unwrap(), None);
        s.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key_and_hide_secrets() {
        for (s, needle) in [
            (with(|s| s.listen = "nine".into()), "api.listen = nine"),
            (
                with(|s| s.jwt_secret = Some("hunter2".into())),
                "api.jwt_secret = [REDACTED]",
            ),
            (with(|s| s.jwt_secret = None), "api.listen"),
            (
                with(|s| s.jwks_url = Some("ftp://x".into())),
                "api.jwks_url = ftp://x",
            ),
            (
                with(|s| s.jwks_url = Some("http://auth.example.com/jwks.json".into())),
                "api.jwks_url = http://auth.example.com/jwks.json: must be https://",
            ),
            (
                with(|s| s.jwks_url = Some("http://127.0.0.1.example.com/jwks".into())),
                "must be https://",
            ),
            (
                with(|s| s.cors_origins = vec!["https://a.test/".into()]),
                "api.cors_origins = https://a.test/",
            ),
            (with(|s| s.body_limit = 10), "api.body_limit = 10"),
            (
                with(|s| {
                    s.service_tokens.insert(
                        "orch".into(),
                        ServiceTokenSettings {
                            sha256: "hunter2".into(),
                            kinds: vec![],
                        },
                    );
                }),
                "api.service_tokens.orch.sha256 = [REDACTED]",
            ),
        ] {
            let err = s.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn jwks_urls_are_https_or_loopback() {
        for url in [
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
            "http://127.0.0.1:9999/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:8000/jwks.json",
        ] {
            with(|s| s.jwks_url = Some(url.into()))
                .validate()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn lists_come_from_one_string() {
        let s: ApiSettings = serde_json::from_value(
            serde_json::json!({"cors_origins": "https://a.test, https://b.test"}),
        )
        .unwrap();
        assert_eq!(s.cors_origins, ["https://a.test", "https://b.test"]);
    }
}
