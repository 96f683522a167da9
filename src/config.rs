//! Settings: defaults, then an optional TOML file, then environment variables; validated once at
//! start into typed values, with errors that name the offending key.
//!
//! Environment variables use the prefix `STUDIO_` and `__` between levels, e.g.
//! `STUDIO_WORKER__CONCURRENCY=8` or `STUDIO_KINDS__RENDER__TIMEOUT=10m`. `DATABASE_URL` is read
//! too (below `STUDIO_DATABASE__URL`). Secrets (`database.url`, `database.password`, HTTP header
//! values) are [`SecretString`]s: `Debug` prints `[REDACTED]`, and they are exposed only where
//! a connection or request is built.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::queue::Backoff;

/// Environment variable prefix (`STUDIO_WORKER__CONCURRENCY`).
pub const ENV_PREFIX: &str = "STUDIO";
/// Environment variable naming the configuration file (same as `--config`).
pub const CONFIG_ENV: &str = "STUDIO_CONFIG";

/// A configuration problem, naming the key (and the value, unless it is secret).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be read or parsed into the settings' shape.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("configuration: {key} = {value}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `worker.concurrency`.
        key: String,
        /// The offending value (`[REDACTED]` for secrets).
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Everything the binary can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database connection.
    pub database: DatabaseSettings,
    /// Claiming and running jobs.
    pub worker: WorkerSettings,
    /// Logs.
    pub log: LogSettings,
    /// Health and metrics endpoint.
    pub http: HttpSettings,
    /// Automatic pruning of old finished jobs (off by default).
    pub retention: RetentionSettings,
    /// Executors by job kind; the worker claims only these kinds.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindSettings>,
    /// The job API (off unless `api.listen` is set; defaults in `ApiSettings::default`).
    #[serde(default)]
    pub api: crate::api::ApiSettings,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (`DATABASE_URL`). Secret: it may hold a password.
    pub url: Option<SecretString>,
    /// Password, overriding any in the URL.
    pub password: Option<SecretString>,
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
    pub ssl_mode: Option<String>,
    /// CA certificate file for verify-ca / verify-full.
    pub ssl_root_cert: Option<PathBuf>,
    /// Keep prepared statements per connection; turn off behind a transaction pooler.
    pub statement_cache: bool,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
}

/// Claim loop, leases and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs run at once by this process, all kinds together.
    pub concurrency: usize,
    /// Jobs claimed ahead of free slots and held (leased, status running) until a slot frees.
    /// Raises throughput for short jobs; 0 (the default) claims only for free slots.
    pub prefetch: usize,
    /// `fair`: round robin over users with due work; `fifo`: priority, then due time.
    pub fairness: String,
    /// At most this many running jobs per user across all replicas (0: no cap; fair only).
    pub max_running_per_user: u32,
    /// Lease taken on each claimed job; renewed by heartbeats.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often leases are renewed (must be well under `lease`).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Polling fallback when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Use LISTEN/NOTIFY for wake-ups; false = poll only (for poolers that cannot LISTEN).
    pub listen: bool,
    /// How often this replica looks for expired leases.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are cancelled and
    /// requeued.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Database outage: longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: String,
    /// Filter directives (`info`, `studio_worker=debug,sqlx=warn`); `RUST_LOG` overrides.
    pub level: String,
}

/// The health/metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address for `/healthz`, `/readyz`, `/metrics`; empty disables the listener.
    pub listen: String,
}

/// Automatic deletion of finished jobs. Off by default: users' job history is product data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Prune in the daemon.
    pub enabled: bool,
    /// Delete succeeded, failed and cancelled jobs that finished longer ago than this.
    #[serde(with = "humantime_serde")]
    pub older_than: Duration,
    /// How often to prune.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Jobs deleted per statement (keeps each transaction short).
    pub batch_size: i64,
}

/// One job kind's executor and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSettings {
    /// `command` or `http`.
    pub executor: String,
    /// At most this many jobs of this kind at once in this process (default: worker.concurrency).
    pub concurrency: Option<usize>,
    /// At most this many jobs of this kind running at once across all replicas (e.g. the slots
    /// of a GPU service). Unset: no cluster-wide cap.
    pub max_running: Option<u32>,
    /// An attempt running longer than this is stopped and counted as a retryable failure.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts for jobs of this kind enqueued through studio-worker (rows carry their own).
    pub max_attempts: Option<i32>,
    /// Delay between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// `command`: program and arguments: a TOML list, or one string split on whitespace (the
    /// form environment variables can carry).
    #[serde(default, deserialize_with = "string_or_list")]
    pub command: Option<Vec<String>>,
    /// `command`: working directory.
    pub working_dir: Option<PathBuf>,
    /// `command`: extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `http`: URL the input is POSTed to.
    pub url: Option<String>,
    /// `http`: request headers (values are secrets: tokens live here).
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Argv {
        List(Vec<String>),
        Line(String),
    }
    Ok(Option::<Argv>::deserialize(d)?.map(|argv| match argv {
        Argv::List(list) => list,
        Argv::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
    }))
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

const DEFAULTS: &str = r#"
[database]
max_connections = 10
connect_timeout = "10s"
startup_timeout = "60s"
statement_cache = true
application_name = "studio-worker"

[worker]
concurrency = 16
prefetch = 0
fairness = "fair"
max_running_per_user = 0
lease = "30s"
heartbeat_interval = "5s"
poll_interval = "2s"
listen = true
rescue_interval = "15s"
shutdown_grace = "25s"
max_backoff = "30s"

[log]
format = "human"
level = "info"

[http]
listen = "0.0.0.0:9090"

[retention]
enabled = false
older_than = "30d"
interval = "1h"
batch_size = 1000
"#;

impl Settings {
    /// Load from the process environment and an optional TOML file.
    ///
    /// # Errors
    /// See [`Settings::load_from`].
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_from(file, std::env::vars().collect())
    }

    /// Load from `env` (instead of the process environment) and an optional TOML file, then
    /// validate.
    ///
    /// # Errors
    /// [`ConfigError::Load`] for unreadable files, unknown keys and wrong types (naming the key);
    /// [`ConfigError::Invalid`] for values out of range or inconsistent.
    pub fn load_from(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let own_url = format!("{ENV_PREFIX}_DATABASE__URL");
        if !env.contains_key(&own_url)
            && let Some(url) = env.get("DATABASE_URL")
        {
            builder = builder.set_override("database.url", url.as_str())?;
        }
        // STUDIO_CONFIG names the file (read by the CLI), it is not a setting.
        let settings_env = env
            .into_iter()
            .filter(|(key, _)| key != CONFIG_ENV)
            .collect();
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(settings_env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        if w.concurrency == 0 || w.concurrency > 10_000 {
            return Err(invalid(
                "worker.concurrency",
                w.concurrency,
                "must be between 1 and 10000",
            ));
        }
        let fair = w.fair()?;
        if !fair && w.max_running_per_user > 0 {
            return Err(invalid(
                "worker.max_running_per_user",
                w.max_running_per_user,
                "per-user caps need worker.fairness = \"fair\"",
            ));
        }
        if w.prefetch > 10_000 {
            return Err(invalid(
                "worker.prefetch",
                w.prefetch,
                "must be at most 10000",
            ));
        }
        if w.lease < Duration::from_secs(2) {
            return Err(invalid(
                "worker.lease",
                humantime::format_duration(w.lease),
                "must be at least 2s",
            ));
        }
        if w.heartbeat_interval.is_zero() || w.heartbeat_interval * 2 > w.lease {
            return Err(invalid(
                "worker.heartbeat_interval",
                humantime::format_duration(w.heartbeat_interval),
                format!(
                    "must be positive and at most half of worker.lease ({})",
                    humantime::format_duration(w.lease)
                ),
            ));
        }
        for (key, value) in [
            ("worker.poll_interval", w.poll_interval),
            ("worker.rescue_interval", w.rescue_interval),
            ("worker.max_backoff", w.max_backoff),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "0s", "must be positive"));
            }
        }
        if self.database.max_connections < 2 {
            return Err(invalid(
                "database.max_connections",
                self.database.max_connections,
                "must be at least 2",
            ));
        }
        let r = &self.retention;
        if !(1..=100_000).contains(&r.batch_size) {
            return Err(invalid(
                "retention.batch_size",
                r.batch_size,
                "must be between 1 and 100000",
            ));
        }
        if r.interval.is_zero() || r.older_than.is_zero() {
            return Err(invalid(
                "retention",
                "0s",
                "interval and older_than must be positive",
            ));
        }
        self.database.ssl_mode()?;
        if let Some(ca) = &self.database.ssl_root_cert
            && !ca.is_file()
        {
            return Err(invalid(
                "database.ssl_root_cert",
                ca.display(),
                "no such file",
            ));
        }
        self.log.format()?;
        self.http.listen()?;
        for (name, kind) in &self.kinds {
            kind.validate(name)?;
        }
        self.api.validate()?;
        Ok(())
    }
}

impl WorkerSettings {
    /// Whether claims are fair (round robin over users) rather than FIFO.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for anything but `fair` or `fifo`.
    pub fn fair(&self) -> Result<bool, ConfigError> {
        match self.fairness.as_str() {
            "fair" => Ok(true),
            "fifo" => Ok(false),
            other => Err(invalid("worker.fairness", other, "expected fair or fifo")),
        }
    }
}

impl DatabaseSettings {
    fn ssl_mode(&self) -> Result<Option<PgSslMode>, ConfigError> {
        self.ssl_mode
            .as_deref()
            .map(|mode| {
                PgSslMode::from_str(mode).map_err(|_| {
                    invalid(
                        "database.ssl_mode",
                        mode,
                        "expected disable, allow, prefer, require, verify-ca or verify-full",
                    )
                })
            })
            .transpose()
    }

    /// Connection options for the pool. The only place the URL and password are exposed.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if no URL is set or it does not parse (the value is not shown).
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
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
        if let Some(mode) = self.ssl_mode()? {
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line (containers).
    Json,
}

impl LogSettings {
    /// The parsed format.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for anything but `human` or `json`.
    pub fn format(&self) -> Result<LogFormat, ConfigError> {
        match self.format.as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(invalid("log.format", other, "expected human or json")),
        }
    }
}

impl HttpSettings {
    /// The listen address, or `None` when disabled.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if it is not `host:port`.
    pub fn listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            invalid(
                "http.listen",
                &self.listen,
                "expected ip:port, e.g. 0.0.0.0:9090, or empty to disable",
            )
        })
    }
}

/// Which executor runs a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// A program run per job.
    Command,
    /// An HTTP POST per job.
    Http,
}

impl KindSettings {
    /// The parsed executor kind.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unknown executor.
    pub fn executor_kind(&self, name: &str) -> Result<ExecutorKind, ConfigError> {
        match self.executor.as_str() {
            "command" => Ok(ExecutorKind::Command),
            "http" => Ok(ExecutorKind::Http),
            other => Err(invalid(
                format!("kinds.{name}.executor"),
                other,
                "expected command or http",
            )),
        }
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("kinds.{name}.{field}");
        if !valid_kind_name(name) {
            return Err(invalid(
                "kinds",
                name,
                "kind names are 1-64 of a-z 0-9 _ . - starting with a letter",
            ));
        }
        match self.executor_kind(name)? {
            ExecutorKind::Command => match &self.command {
                Some(argv) if argv.first().is_some_and(|p| !p.is_empty()) => {}
                _ => {
                    return Err(invalid(
                        key("command"),
                        "(unset)",
                        "the command executor needs a program, e.g. [\"/usr/bin/render\", \"--fast\"]",
                    ));
                }
            },
            ExecutorKind::Http => {
                let url = self.url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        key("url"),
                        if url.is_empty() { "(unset)" } else { url },
                        "the http executor needs an http:// or https:// URL",
                    ));
                }
            }
        }
        if self.concurrency == Some(0) {
            return Err(invalid(key("concurrency"), 0, "must be at least 1"));
        }
        if self.max_running == Some(0) {
            return Err(invalid(
                key("max_running"),
                0,
                "must be at least 1 (leave it unset for no cap)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid(key("timeout"), "0s", "must be positive"));
        }
        if let Some(max) = self.max_attempts
            && !(1..=1000).contains(&max)
        {
            return Err(invalid(
                key("max_attempts"),
                max,
                "must be between 1 and 1000",
            ));
        }
        if self.backoff.max > Duration::from_secs(30 * 86_400)
            || self.backoff.base > self.backoff.max
        {
            return Err(invalid(
                key("backoff"),
                format!(
                    "base {} max {}",
                    humantime::format_duration(self.backoff.base),
                    humantime::format_duration(self.backoff.max)
                ),
                "max must be at most 30 days and at least base",
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter) {
            return Err(invalid(
                key("backoff.jitter"),
                self.backoff.jitter,
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// The kind names the database accepts (`studio_jobs_kind_format`).
pub fn valid_kind_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_load_with_only_a_database_url() {
        let s =
            Settings::load_from(None, env(&[("DATABASE_URL", "postgres://u:pw@db/app")])).unwrap();
        assert_eq!(s.worker.concurrency, 16);
        assert_eq!(s.worker.lease, Duration::from_secs(30));
        assert_eq!(s.database.describe(), "u@db:5432/app");
    }

    #[test]
    fn prefixed_environment_overrides_defaults_and_database_url() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://a@one/x"),
                ("STUDIO_DATABASE__URL", "postgres://b@two/y"),
                ("STUDIO_WORKER__CONCURRENCY", "4"),
                ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                ("STUDIO_KINDS__RENDER__COMMAND", "/usr/bin/render --fast"),
                ("STUDIO_KINDS__RENDER__TIMEOUT", "90s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.worker.concurrency, 4);
        assert_eq!(s.database.describe(), "b@two:5432/y");
        let render = &s.kinds["render"];
        assert_eq!(
            render.command.as_deref(),
            Some(&["/usr/bin/render".to_owned(), "--fast".to_owned()][..])
        );
        assert_eq!(render.timeout, Duration::from_secs(90));
    }

    #[test]
    fn a_toml_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("studio-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("worker.toml");
        std::fs::write(
            &path,
            "[worker]\nconcurrency = 3\nlease = \"1m\"\n[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/echo\", \"a b\"]\n",
        )
        .unwrap();

        let s = Settings::load_from(
            Some(&path),
            env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("STUDIO_WORKER__CONCURRENCY", "5"),
            ]),
        )
        .unwrap();

        assert_eq!(s.worker.concurrency, 5, "environment beats the file");
        assert_eq!(
            s.worker.lease,
            Duration::from_secs(60),
            "the file beats defaults"
        );
        assert_eq!(s.kinds["render"].command.as_ref().unwrap()[1], "a b");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        for (pairs, needle) in [
            (
                vec![("STUDIO_WORKER__CONCURRENCY", "0")],
                "worker.concurrency = 0",
            ),
            (
                vec![("STUDIO_WORKER__CONCURRENCY", "lots")],
                "worker.concurrency",
            ),
            (vec![("STUDIO_WORKER__LEASE", "soon")], "worker.lease"),
            (
                vec![("STUDIO_WORKER__HEARTBEAT_INTERVAL", "20s")],
                "worker.heartbeat_interval = 20s",
            ),
            (vec![("STUDIO_LOG__FORMAT", "xml")], "log.format = xml"),
            (
                vec![("STUDIO_DATABASE__SSL_MODE", "sometimes")],
                "database.ssl_mode = sometimes",
            ),
            (vec![("STUDIO_HTTP__LISTEN", "nine")], "http.listen = nine"),
            (
                vec![("STUDIO_KINDS__RENDER__EXECUTOR", "ftp")],
                "kinds.render.executor = ftp",
            ),
            (
                vec![("STUDIO_KINDS__RENDER__EXECUTOR", "http")],
                "kinds.render.url",
            ),
            (vec![("STUDIO_WORKER__TYPO", "1")], "typo"),
            (
                vec![("STUDIO_WORKER__FAIRNESS", "random")],
                "worker.fairness = random",
            ),
            (
                vec![
                    ("STUDIO_WORKER__FAIRNESS", "fifo"),
                    ("STUDIO_WORKER__MAX_RUNNING_PER_USER", "2"),
                ],
                "worker.max_running_per_user = 2",
            ),
            (
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__MAX_RUNNING", "0"),
                ],
                "kinds.render.max_running = 0",
            ),
        ] {
            let mut vars = env(&pairs);
            vars.insert("DATABASE_URL".into(), "postgres://u@h/d".into());
            let err = Settings::load_from(None, vars)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://u:hunter2@db/app"),
                ("STUDIO_DATABASE__PASSWORD", "hunter3"),
                ("STUDIO_KINDS__HOOK__EXECUTOR", "http"),
                ("STUDIO_KINDS__HOOK__URL", "https://example.test/hook"),
                (
                    "STUDIO_KINDS__HOOK__HEADERS__AUTHORIZATION",
                    "Bearer hunter4",
                ),
            ]),
        )
        .unwrap();
        let debug = format!("{s:?} {}", s.database.describe());
        assert!(!debug.contains("hunter"), "{debug}");

        let bad = Settings::load_from(
            None,
            env(&[("DATABASE_URL", "postgres://u:hunter2@db:notaport/app")]),
        )
        .unwrap()
        .database
        .connect_options()
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("database.url") && !bad.contains("hunter2"),
            "{bad}"
        );
    }

    #[test]
    fn a_password_with_an_unescaped_at_sign_is_not_described() {
        let s = Settings::load_from(
            None,
            env(&[("DATABASE_URL", "postgres://u:p@ss/w@host:5432/db")]),
        )
        .unwrap();
        let described = s.database.describe();
        assert!(!described.contains("ss/w"), "{described}");
        assert!(described.contains("unescaped '@'"), "{described}");
    }

    #[test]
    fn the_config_file_variable_is_not_a_setting() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("STUDIO_CONFIG", "/etc/studio.toml"),
            ]),
        );
        assert!(s.is_ok(), "{:?}", s.err());
    }

    #[test]
    fn kind_names_follow_the_database_rule() {
        assert!(valid_kind_name("render"));
        assert!(valid_kind_name("video.upscale-2x"));
        assert!(!valid_kind_name("Render"));
        assert!(!valid_kind_name(""));
        assert!(!valid_kind_name("1render"));
    }
}
