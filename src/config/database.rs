//! `[database]`: how to reach PostgreSQL. The URL and password are secrets, exposed only in
//! [`DatabaseSettings::connect_options`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{ConfigError, invalid, rejected};

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (`DATABASE_URL`). Secret: it may hold a password.
    pub url: Option<SecretString>,
    /// Password, overriding any in the URL.
    pub password: Option<SecretString>,
    /// File holding the password (a mounted secret), overriding any in the URL. Read at start
    /// and again whenever it changes, so new connections use a rotated password without a
    /// restart.
    pub password_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
    /// Give up connecting (or waiting for a pooled connection) after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// At start-up, keep retrying an unreachable database for this long (containers often
    /// start before the database is up). Wrong credentials fail at once.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// TLS mode: disable, allow, prefer, require, verify-ca, verify-full.
    #[serde(default, deserialize_with = "ssl_mode")]
    pub ssl_mode: Option<PgSslMode>,
    /// CA certificate file for verify-ca / verify-full.
    pub ssl_root_cert: Option<PathBuf>,
    /// Keep prepared statements per connection; turn off behind a transaction pooler.
    pub statement_cache: bool,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
}

fn ssl_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PgSslMode>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|mode| {
            PgSslMode::from_str(&mode).map_err(|_| {
                serde::de::Error::custom(rejected(
                    "database.ssl_mode",
                    &mode,
                    "expected disable, allow, prefer, require, verify-ca or verify-full",
                ))
            })
        })
        .transpose()
}

impl DatabaseSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections < 2 {
            return Err(invalid(
                "database.max_connections",
                self.max_connections,
                "must be at least 2",
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                "database.password_file",
                "(set)",
                "set database.password or database.password_file, not both",
            ));
        }
        self.password_from_file()?;
        self.check_scheme()?;
        if let Some(ca) = &self.ssl_root_cert
            && !ca.is_file()
        {
            return Err(invalid(
                "database.ssl_root_cert",
                ca.display(),
                "no such file",
            ));
        }
        Ok(())
    }

    /// A URL, when set, must be a PostgreSQL one (sqlx would read `mysql://…` as PostgreSQL).
    fn check_scheme(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let scheme = url
            .expose_secret()
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(()),
            Some(other) => Err(invalid(
                "database.url",
                format!("{other}://[REDACTED]"),
                "expected a postgres:// or postgresql:// URL",
            )),
            None => Err(invalid(
                "database.url",
                "[REDACTED]",
                "expected a postgres:// or postgresql:// URL",
            )),
        }
    }

    /// Connection options for the pool. The only place the URL and password are exposed.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if no URL is set or it does not parse (the value is not shown).
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        self.check_scheme()?;
        let url = self.url.as_ref().ok_or_else(|| {
            invalid(
                "database.url",
                "(unset)",
                "set DATABASE_URL or STUDIO_DATABASE__URL",
            )
        })?;
        let mut options = PgConnectOptions::from_str(url.expose_secret()).map_err(|e| {
            invalid(
                "database.url",
                "[REDACTED]",
                format!("not a PostgreSQL URL: {}", redacted_reason(&e)),
            )
        })?;
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        if let Some(password) = self.password_from_file()? {
            options = options.password(password.expose_secret());
        }
        if let Some(mode) = self.ssl_mode {
            options = options.ssl_mode(mode);
        }
        if let Some(ca) = &self.ssl_root_cert {
            if !ca.is_file() {
                return Err(invalid(
                    "database.ssl_root_cert",
                    ca.display(),
                    "no such file",
                ));
            }
            options = options.ssl_root_cert(ca);
        }
        if !self.statement_cache {
            options = options.statement_cache_capacity(0);
        }
        Ok(options.application_name(&self.application_name))
    }

    /// The password in `database.password_file`, read now (the file's last line break is not
    /// part of it).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key if the file cannot be read or is empty.
    pub fn password_from_file(&self) -> Result<Option<SecretString>, ConfigError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("database.password_file", path.display(), e.to_string()))?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(invalid(
                "database.password_file",
                path.display(),
                "the file is empty",
            ));
        }
        Ok(Some(SecretString::from(password.to_owned())))
    }

    /// User, host, port and database, for logs (never the password).
    pub fn describe(&self) -> String {
        // An unescaped '@' in the password makes the URL parse with part of the password as the
        // host: describing that would print it.
        let authority_ats = self.url.as_ref().map_or(0, |url| {
            let url = url.expose_secret();
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            rest.matches('@').count()
        });
        if authority_ats > 1 {
            return "(database.url has an unescaped '@': percent-encode the password as %40, or set database.password)".to_owned();
        }
        match self.connect_options() {
            Ok(o) => format!(
                "{}@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            Err(_) => "(invalid database.url)".to_owned(),
        }
    }
}

/// sqlx's URL errors do not echo the URL, but keep only the error kind to be safe.
fn redacted_reason(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Configuration(source) => source.to_string(),
        _ => "unparseable".to_owned(),
    }
}
