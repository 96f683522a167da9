//! Settings: defaults, then an optional TOML file, then environment variables; validated once at
//! start into typed values, with errors that name the offending key.
//!
//! Environment variables use the prefix `STUDIO_` and `__` between levels, e.g.
//! `STUDIO_WORKER__CONCURRENCY=8` or `STUDIO_KINDS__RENDER__TIMEOUT=10m`. Only names with a
//! section (`STUDIO_<SECTION>__<KEY>`) are settings: single-level ones such as Supabase's
//! `STUDIO_PORT` or `STUDIO_DEFAULT_PROJECT` belong to other programs and are ignored.
//! `DATABASE_URL` is read too (below `STUDIO_DATABASE__URL`). Errors about a value from the
//! environment name the variable. Secrets (`database.url`, `database.password`, HTTP header
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

use crate::retry::RetryBackoff;

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
    /// A value from an environment variable was refused; names the variable.
    #[error("{error} (from environment variable {variable})")]
    FromEnv {
        /// The variable, e.g. `STUDIO_WORKER__CONCURRENCY`.
        variable: String,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
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

/// The text of an [`ConfigError::Invalid`], for values refused while deserializing (the loader
/// adds the `configuration:` prefix and the key).
fn rejected(key: &str, value: &str, reason: &str) -> String {
    format!("{key} = {value}: {reason}")
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
}

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
    pub fairness: Fairness,
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

/// The order claims take due jobs in (`worker.fairness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Fairness {
    /// Round robin over users with due work.
    Fair,
    /// Priority, then due time.
    Fifo,
}

impl TryFrom<String> for Fairness {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "fair" => Ok(Fairness::Fair),
            "fifo" => Ok(Fairness::Fifo),
            other => Err(rejected("worker.fairness", other, "expected fair or fifo")),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// Filter directives (`info`, `studio_worker=debug,sqlx=warn`); `RUST_LOG` overrides.
    pub level: String,
}

/// The health/metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address for `/healthz`, `/readyz`, `/metrics`; empty (`None`) disables the listener.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
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

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let listen = String::deserialize(d)?;
    if listen.trim().is_empty() {
        return Ok(None);
    }
    listen.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(rejected(
            "http.listen",
            &listen,
            "expected ip:port, e.g. 127.0.0.1:9090, or empty to disable",
        ))
    })
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
    pub backoff: RetryBackoff,
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
    /// `http`: request headers whose values are read from files (mounted secrets) at each
    /// request, so a rotated token is used without a restart.
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
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

/// A kind's attempt timeout when none is configured (10 minutes).
pub const DEFAULT_KIND_TIMEOUT: Duration = Duration::from_secs(600);

fn default_timeout() -> Duration {
    DEFAULT_KIND_TIMEOUT
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
listen = "127.0.0.1:9090"

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
        // Which variable set which key, to name it in errors.
        let mut sources: Vec<(String, String)> = Vec::new();
        let own_url = format!("{ENV_PREFIX}_DATABASE__URL");
        if !env.contains_key(&own_url)
            && let Some(url) = env.get("DATABASE_URL")
        {
            builder = builder.set_override("database.url", url.as_str())?;
            sources.push(("database.url".to_owned(), "DATABASE_URL".to_owned()));
        }
        // Settings live in sections, so a setting's name has a `__` after the section. Anything
        // else under the prefix (STUDIO_CONFIG, which names the file, or the single-level
        // STUDIO_PORT / STUDIO_DEFAULT_PROJECT of Supabase's own .env) is not ours.
        let settings_env: HashMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| setting_key(name).is_some())
            .collect();
        for name in settings_env.keys() {
            if let Some(key) = setting_key(name) {
                sources.push((key, name.clone()));
            }
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(settings_env)),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| name_variable(ConfigError::Load(e), &sources))?;
        settings
            .validate()
            .map_err(|e| name_variable(e, &sources))?;
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
        if w.fairness == Fairness::Fifo && w.max_running_per_user > 0 {
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
        if self.database.password.is_some() && self.database.password_file.is_some() {
            return Err(invalid(
                "database.password_file",
                "(set)",
                "set database.password or database.password_file, not both",
            ));
        }
        self.database.password_from_file()?;
        self.database.check_scheme()?;
        if let Some(ca) = &self.database.ssl_root_cert
            && !ca.is_file()
        {
            return Err(invalid(
                "database.ssl_root_cert",
                ca.display(),
                "no such file",
            ));
        }
        for (name, kind) in &self.kinds {
            kind.validate(name)?;
        }
        Ok(())
    }
}

/// The dotted key a `STUDIO_<SECTION>__<KEY>` variable sets, or `None` for any other name.
fn setting_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.strip_prefix('_')?;
    let (section, key) = rest.split_once("__")?;
    if section.is_empty() || key.is_empty() {
        return None;
    }
    Some(rest.to_lowercase().replace("__", "."))
}

/// The key an error is about, as far as it says.
fn error_key(err: &ConfigError) -> Option<String> {
    match err {
        ConfigError::Invalid { key, .. } => Some(key.clone()),
        ConfigError::Load(load) => {
            let mut key = match load {
                config::ConfigError::Type { key, .. } | config::ConfigError::At { key, .. } => {
                    key.clone()
                }
                _ => None,
            };
            // serde reports an unknown field by name, with the enclosing key (if any).
            let text = load.to_string();
            if let Some(field) = text
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field)
            {
                key = Some(match key {
                    Some(parent) => format!("{parent}.{field}"),
                    None => field.to_owned(),
                });
            }
            key
        }
        ConfigError::FromEnv { .. } => None,
    }
}

/// `err`, naming the environment variable that set the key it is about (if one did).
fn name_variable(err: ConfigError, sources: &[(String, String)]) -> ConfigError {
    let Some(key) = error_key(&err) else {
        return err;
    };
    let key = key.to_lowercase();
    let variable = sources
        .iter()
        .find(|(set, _)| *set == key)
        .or_else(|| {
            sources.iter().find(|(set, _)| {
                set.starts_with(&format!("{key}.")) || key.starts_with(&format!("{set}."))
            })
        })
        .map(|(_, variable)| variable.clone());
    match variable {
        Some(variable) => ConfigError::FromEnv {
            variable,
            error: Box::new(err),
        },
        None => err,
    }
}

impl WorkerSettings {
    /// How long before its lease could expire unrenewed a running job is killed and given up:
    /// a quarter of the lease, at most one second. The check at start (lease ≥ 2 s, heartbeat
    /// interval ≤ lease / 2) leaves a renewal at least `lease − interval − margin ≥ lease / 4`
    /// (0.5 s or more) to complete before a healthy job would come near the margin.
    pub fn lease_margin(&self) -> Duration {
        (self.lease / 4).min(Duration::from_secs(1))
    }

    /// Whether claims are fair (round robin over users) rather than FIFO.
    pub fn fair(&self) -> bool {
        self.fairness == Fairness::Fair
    }
}

impl DatabaseSettings {
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line (containers).
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(rejected("log.format", other, "expected human or json")),
        }
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
                for (name, path) in &self.header_files {
                    if !path.is_file() {
                        return Err(invalid(
                            key(&format!("header_files.{name}")),
                            path.display(),
                            "no such file",
                        ));
                    }
                }
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
    fn supabase_self_hosted_variables_are_not_settings() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("STUDIO_PORT", "3000"),
                ("STUDIO_DEFAULT_ORGANIZATION", "Default Organization"),
                ("STUDIO_DEFAULT_PROJECT", "Default Project"),
            ]),
        );
        assert!(s.is_ok(), "{:?}", s.err());
    }

    #[test]
    fn environment_errors_name_the_variable() {
        for (name, value) in [
            ("STUDIO_WORKER__CONCURRENCY", "lots"),
            ("STUDIO_WORKER__CONCURRENCY", "0"),
            ("STUDIO_WORKER__TYPO", "1"),
            ("STUDIO_WORKR__CONCURRENCY", "4"),
            ("STUDIO_HTTP__LISTEN", "nine"),
        ] {
            let err = Settings::load_from(
                None,
                env(&[("DATABASE_URL", "postgres://u@h/d"), (name, value)]),
            )
            .expect_err(name)
            .to_string();
            assert!(err.contains(name), "{err:?} should name {name}");
        }
    }

    #[test]
    fn the_operations_endpoint_listens_on_loopback_by_default() {
        let s = Settings::load_from(None, env(&[("DATABASE_URL", "postgres://u@h/d")])).unwrap();
        assert_eq!(s.http.listen, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn only_postgresql_urls_are_accepted() {
        for url in ["mysql://u@h/d", "http://h/d", "h:5432/d"] {
            let err = Settings::load_from(None, env(&[("DATABASE_URL", url)]))
                .expect_err(url)
                .to_string();
            assert!(err.contains("database.url"), "{err}");
            assert!(err.contains("DATABASE_URL"), "{err}");
        }
        for url in ["postgres://u@h/d", "postgresql://u@h/d"] {
            assert!(Settings::load_from(None, env(&[("DATABASE_URL", url)])).is_ok());
        }
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
