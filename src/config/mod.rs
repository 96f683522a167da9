//! Settings: defaults, then an optional TOML file, then environment variables; validated once at
//! start into typed values, with errors that name the offending key.
//!
//! Environment variables use the prefix `STUDIO_` and `__` between levels, e.g.
//! `STUDIO_WORKER__CONCURRENCY=8` or `STUDIO_KINDS__RENDER__TIMEOUT=10m`. Only names with a
//! section (`STUDIO_<SECTION>__<KEY>`) are settings: single-level ones such as Supabase's
//! `STUDIO_PORT` or `STUDIO_DEFAULT_PROJECT` belong to other programs and are ignored.
//! `DATABASE_URL` is read too (below `STUDIO_DATABASE__URL`). Errors about a value from the
//! environment name the variable. Secrets (`database.url`, `database.password`, HTTP header
//! values) are [`SecretString`](secrecy::SecretString)s: `Debug` prints `[REDACTED]`, and they are exposed only where
//! a connection or request is built.
//!
//! Each section lives in its own file with its struct, its parsing and its validation:
//! `database`, `worker` (and `[retention]`), `kinds`, `log`, `ops` (`[http]`), `api`,
//! `schedules`, `autoscale`, `dashboard`. This file holds the loader, [`ConfigError`] and the
//! embedded defaults.

mod api;
mod autoscale;
mod dashboard;
mod database;
mod kinds;
mod log;
mod ops;
mod schedules;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

pub use api::{ApiSettings, ServiceTokenSettings};
pub use autoscale::AutoscaleSettings;
pub use dashboard::{DashboardSettings, OperatorRole, OperatorSettings};
pub use database::DatabaseSettings;
pub use kinds::{
    CommandExecutor, ExecutorSettings, HttpExecutor, KindSettings, checked_kind_name,
    valid_kind_name,
};
pub use log::{LogFormat, LogSettings};
pub use ops::HttpSettings;
pub use schedules::{CatchUp, CronExpression, ScheduleSettings};
pub use worker::{Fairness, RetentionSettings, WorkerSettings};

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

/// Everything the binary can be configured with, parsed and checked ([`Settings::load`] is
/// the only way to one from a file or the environment).
#[derive(Debug, Clone)]
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
    /// Executors and limits by job kind; the worker claims only these kinds.
    pub kinds: BTreeMap<String, KindSettings>,
    /// The job API (off unless `api.listen` is set; defaults in `ApiSettings::default`).
    pub api: ApiSettings,
    /// Periodic jobs by schedule name, enqueued by every `run` replica (once per fire time).
    pub schedules: BTreeMap<String, ScheduleSettings>,
    /// The `/metrics` autoscaling demand gauge (defaults in `AutoscaleSettings::default`).
    pub autoscale: AutoscaleSettings,
    /// The operators' dashboard (off unless `dashboard.listen` is set).
    pub dashboard: DashboardSettings,
}

/// [`Settings`] as the file and the environment give them, before the kinds are typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    database: DatabaseSettings,
    worker: WorkerSettings,
    log: LogSettings,
    http: HttpSettings,
    retention: RetentionSettings,
    #[serde(default)]
    kinds: BTreeMap<String, kinds::RawKind>,
    #[serde(default)]
    api: ApiSettings,
    #[serde(default)]
    schedules: BTreeMap<String, ScheduleSettings>,
    #[serde(default)]
    autoscale: AutoscaleSettings,
    #[serde(default)]
    dashboard: DashboardSettings,
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
prefetch_wait = "5ms"
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

/// The embedded defaults alone (no file, no environment, not validated: no database URL).
fn defaults() -> RawSettings {
    config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        // A constant that every load parses first; `defaults_load_with_only_a_database_url`
        // and `section_defaults_are_the_embedded_defaults` fail if it ever stops parsing.
        .expect("the embedded DEFAULTS parse")
}

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
        let settings: RawSettings = builder
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
            .into_settings()
            .map_err(|e| name_variable(e, &sources))
    }
}

impl RawSettings {
    /// Check every section and type the kinds; the first error names its key.
    fn into_settings(self) -> Result<Settings, ConfigError> {
        self.worker.validate()?;
        self.database.validate()?;
        self.retention.validate()?;
        let kinds = self
            .kinds
            .into_iter()
            .map(|(name, raw)| raw.into_settings(&name).map(|kind| (name, kind)))
            .collect::<Result<_, ConfigError>>()?;
        self.api.validate()?;
        self.autoscale.validate()?;
        self.dashboard.validate()?;
        for (name, schedule) in &self.schedules {
            schedule.validate(name)?;
        }
        Ok(Settings {
            database: self.database,
            worker: self.worker,
            log: self.log,
            http: self.http,
            retention: self.retention,
            kinds,
            api: self.api,
            schedules: self.schedules,
            autoscale: self.autoscale,
            dashboard: self.dashboard,
        })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let ExecutorSettings::Command(command) = &render.executor else {
            panic!("{render:?}")
        };
        assert_eq!(command.command, ["/usr/bin/render", "--fast"]);
        assert_eq!(render.limits.timeout, Duration::from_secs(90));
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
        let ExecutorSettings::Command(command) = &s.kinds["render"].executor else {
            panic!("{:?}", s.kinds["render"])
        };
        assert_eq!(command.command[1], "a b");
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
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__URL", "https://example.test/x"),
                ],
                "kinds.render.url = https://example.test/x: only the http executor takes url",
            ),
            (
                vec![
                    ("STUDIO_KINDS__HOOK__EXECUTOR", "http"),
                    ("STUDIO_KINDS__HOOK__URL", "https://example.test/x"),
                    ("STUDIO_KINDS__HOOK__COMMAND", "/bin/true"),
                ],
                "kinds.hook.command = /bin/true: only the command executor takes command",
            ),
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
            (
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__RATE_LIMIT", "0/s"),
                ],
                "kinds.render.rate_limit",
            ),
            (
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__RATE_LIMIT", "fast"),
                ],
                "kinds.render.rate_limit",
            ),
            (
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__RATE_LIMIT", "10/s"),
                    ("STUDIO_KINDS__RENDER__RATE_BURST", "11"),
                ],
                "kinds.render.rate_burst = 11",
            ),
            (
                vec![
                    ("STUDIO_KINDS__RENDER__EXECUTOR", "command"),
                    ("STUDIO_KINDS__RENDER__COMMAND", "/bin/true"),
                    ("STUDIO_KINDS__RENDER__RATE_BURST", "2"),
                ],
                "kinds.render.rate_burst = 2",
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
    fn section_defaults_are_the_embedded_defaults() {
        let loaded = Settings::load_from(None, env(&[("DATABASE_URL", "postgres://u@h/d")]))
            .unwrap()
            .worker;
        let default = WorkerSettings::default();

        assert_eq!(format!("{default:?}"), format!("{loaded:?}"));
        assert_eq!(
            format!("{:?}", RetentionSettings::default()),
            format!("{:?}", defaults().retention)
        );
    }

    #[test]
    fn kind_names_follow_the_database_rule() {
        assert!(valid_kind_name("render"));
        assert!(valid_kind_name("video.upscale-2x"));
        assert!(!valid_kind_name("Render"));
        assert!(!valid_kind_name(""));
        assert!(!valid_kind_name("1render"));
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
}
