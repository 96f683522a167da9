//! `[api]` settings: where the job API listens, how it connects, whom it believes.
//!
//! Off unless `api.listen` is set. Secrets (`jwt_secret`, `database_url`, `stream_secret`) are
//! [`SecretString`]s; service tokens are configured as SHA-256 hashes, never in clear. Every
//! value is typed while it is read (an address, a URL, origins, token hashes), so nothing under
//! `api/` parses configuration again; [`ApiSettings::validate`] checks ranges and combinations.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderValue;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, rejected};

/// The job API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address to serve the API on (`ip:port`); empty (the default, `None`) turns the API off.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
    /// The API's own login role (a member of `studio_api`); unset: `database.url`.
    pub database_url: Option<SecretString>,
    /// Pool size of the API's connections.
    pub max_connections: u32,
    /// HS256 secret of user tokens (Supabase's legacy JWT secret).
    pub jwt_secret: Option<SecretString>,
    /// JWKS of ES256/RS256 user tokens, e.g. `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`.
    #[serde(deserialize_with = "jwks_url")]
    pub jwks_url: Option<Url>,
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
    #[serde(deserialize_with = "origins")]
    pub cors_origins: Vec<Origin>,
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
    pub sha256: TokenHash,
    /// The only kinds this service may create, read, follow and cancel.
    #[serde(deserialize_with = "string_or_list")]
    pub kinds: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: None,
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

/// Whether a JWKS URL may be used: https, or plain http only from this machine (`localhost`,
/// 127.0.0.0/8, `::1`: a sidecar or a test); keys fetched over plain http from elsewhere could
/// be swapped in transit and would let anyone sign tokens.
fn jwks_url_problem(url: &Url) -> Option<&'static str> {
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => None,
        "http" if loopback => None,
        "http" => Some(
            "must be https:// (keys fetched over plain http could be swapped in transit); http:// is accepted only for localhost",
        ),
        _ => Some("expected an https:// URL"),
    }
}

/// An origin allowed by CORS: scheme, host and optional port, no path
/// (`https://app.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Origin {
    /// The origin as the header value CORS answers with.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(origin: &str) -> Result<Self, Self::Err> {
        match HeaderValue::from_str(origin) {
            Ok(value)
                if (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/') =>
            {
                Ok(Origin(value))
            }
            _ => Err(rejected(
                "api.cors_origins",
                origin,
                "expected origins like https://app.example.com (scheme, host, optional port; no path)",
            )),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.to_str().unwrap_or_default())
    }
}

/// The SHA-256 of a service token (configured as 64 hex digits). Not shown by `Debug`.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for TokenHash {
    fn from(hash: [u8; 32]) -> Self {
        TokenHash(hash)
    }
}

impl TryFrom<String> for TokenHash {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, Self::Error> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex.trim(), &mut hash).map_err(|_| {
            "sha256 = [REDACTED]: expected the token's SHA-256 as 64 hex digits".to_owned()
        })?;
        Ok(TokenHash(hash))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash([REDACTED])")
    }
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let listen = String::deserialize(d)?;
    if listen.trim().is_empty() {
        return Ok(None);
    }
    listen.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(rejected(
            "api.listen",
            &listen,
            "expected ip:port, e.g. 0.0.0.0:8080, or empty to disable",
        ))
    })
}

fn jwks_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let Some(url) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let refuse =
        || serde::de::Error::custom(rejected("api.jwks_url", &url, "expected an http(s):// URL"));
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(refuse());
    }
    let parsed = Url::parse(&url).map_err(|_| refuse())?;
    match jwks_url_problem(&parsed) {
        None => Ok(Some(parsed)),
        Some(why) => Err(serde::de::Error::custom(rejected(
            "api.jwks_url",
            &url,
            why,
        ))),
    }
}

fn origins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Origin>, D::Error> {
    string_or_list(d)?
        .iter()
        .map(|origin| origin.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl ApiSettings {
    /// Check every value; errors name the key (and never print a secret).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listening = self.listen.is_some();
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(invalid(
                "api.jwt_secret",
                "[REDACTED]",
                "must be at least 32 bytes",
            ));
        }
        if listening
            && self.jwt_secret.is_none()
            && self.jwks_url.is_none()
            && self.service_tokens.is_empty()
        {
            return Err(invalid(
                "api.listen",
                self.listen
                    .map_or_else(String::new, |addr| addr.to_string()),
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
        for (name, token) in &self.service_tokens {
            let key = |field: &str| format!("api.service_tokens.{name}.{field}");
            if !(1..=64).contains(&name.len()) {
                return Err(invalid(
                    "api.service_tokens",
                    name,
                    "names are 1-64 characters",
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
            listen: Some("127.0.0.1:8080".parse().unwrap()),
            jwt_secret: Some("x".repeat(32).into()),
            ..ApiSettings::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn off_by_default_and_valid() {
        let s = ApiSettings::default();
        assert_eq!(s.listen, None);
        s.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key_and_hide_secrets() {
        for (s, needle) in [
            (
                with(|s| s.jwt_secret = Some("hunter2".into())),
                "api.jwt_secret = [REDACTED]",
            ),
            (with(|s| s.jwt_secret = None), "api.listen"),
            (with(|s| s.body_limit = 10), "api.body_limit = 10"),
        ] {
            let err = s.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn values_that_do_not_parse_are_refused_while_reading_naming_their_key() {
        for (value, needle) in [
            (serde_json::json!({"listen": "nine"}), "api.listen = nine"),
            (
                serde_json::json!({"jwks_url": "ftp://x"}),
                "api.jwks_url = ftp://x",
            ),
            (
                serde_json::json!({"jwks_url": "http://auth.example.com/jwks.json"}),
                "api.jwks_url = http://auth.example.com/jwks.json: must be https://",
            ),
            (
                serde_json::json!({"jwks_url": "http://127.0.0.1.example.com/jwks"}),
                "must be https://",
            ),
            (
                serde_json::json!({"cors_origins": "https://a.test/"}),
                "api.cors_origins = https://a.test/",
            ),
            (
                serde_json::json!({"service_tokens": {"orch": {"sha256": "hunter2", "kinds": []}}}),
                "sha256 = [REDACTED]",
            ),
        ] {
            let err = serde_json::from_value::<ApiSettings>(value)
                .expect_err(needle)
                .to_string();
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
            let s: ApiSettings = serde_json::from_value(serde_json::json!({ "jwks_url": url }))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(s.jwks_url.map(String::from).as_deref(), Some(url));
        }
    }

    #[test]
    fn lists_come_from_one_string() {
        let s: ApiSettings = serde_json::from_value(
            serde_json::json!({"cors_origins": "https://a.test, https://b.test"}),
        )
        .unwrap();
        let origins: Vec<String> = s.cors_origins.iter().map(Origin::to_string).collect();
        assert_eq!(origins, ["https://a.test", "https://b.test"]);
    }
}
