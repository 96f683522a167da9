//! `[kinds.<name>]`: one job kind's executor and limits, parsed at load into a
//! [`KindSettings`]: its [`KindLimits`] and a typed [`ExecutorSettings`].
//!
//! The file and the environment give a flat table ([`RawKind`], every key of either executor
//! beside the limits, `deny_unknown_fields`); [`RawKind::into_settings`] turns it into the typed
//! value with the kind's name at hand, so every refusal names its key (`kinds.<name>.<field>`)
//! and the loader can name the environment variable that set it. (serde's `try_from` does not
//! know the map key, and `flatten` does not work with `deny_unknown_fields`.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::limits::{DEFAULT_KIND_TIMEOUT, KindLimits, RateLimit, RetryBackoff};

/// One job kind: what runs its jobs and what it may do.
#[derive(Debug, Clone)]
pub struct KindSettings {
    /// Concurrency, cluster cap, rate, timeout, backoff, attempts.
    pub limits: KindLimits,
    /// The built-in handler that runs its jobs.
    pub executor: ExecutorSettings,
}

/// Which built-in handler runs a kind, with that handler's settings.
#[derive(Debug, Clone)]
pub enum ExecutorSettings {
    /// A program run per job (`executor = "command"`).
    Command(CommandExecutor),
    /// An HTTP POST per job (`executor = "http"`).
    Http(HttpExecutor),
}

impl ExecutorSettings {
    /// The `executor` value that chose it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            ExecutorSettings::Command(_) => "command",
            ExecutorSettings::Http(_) => "http",
        }
    }
}

/// `executor = "command"`.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    /// Program and arguments (a program is always there).
    pub command: Vec<String>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

/// `executor = "http"`.
#[derive(Debug, Clone)]
pub struct HttpExecutor {
    /// URL the input is POSTed to (`http://` or `https://`).
    pub url: String,
    /// Request headers (values are secrets: tokens live here).
    pub headers: BTreeMap<String, SecretString>,
    /// Request headers whose values are read from files (mounted secrets) at each request, so a
    /// rotated token is used without a restart.
    pub header_files: BTreeMap<String, PathBuf>,
}

/// `[kinds.<name>]` as written: both executors' keys beside the limits. Only the loader reads
/// it, through [`RawKind::into_settings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKind {
    /// `command` or `http`.
    executor: String,
    /// At most this many jobs of this kind at once in this process (default: worker.concurrency).
    concurrency: Option<usize>,
    /// At most this many jobs of this kind running at once across all replicas. Unset: no cap.
    max_running: Option<u32>,
    /// At most this many starts of this kind in any window of a period, across all replicas
    /// (`60/min`, `5/s`, `10/5s`). Unset: no rate limit.
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    /// How many of `rate_limit`'s starts may go together in one slice of `period / count`
    /// (default 1: spread evenly; the rate's count: the whole period's starts at once).
    rate_burst: Option<u32>,
    /// An attempt running longer than this is stopped and counted as a retryable failure.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    timeout: Duration,
    /// Attempts of jobs of this kind whose writer gave none.
    max_attempts: Option<i32>,
    /// Delay between attempts.
    #[serde(default)]
    backoff: RetryBackoff,
    /// `command`: program and arguments: a TOML list, or one string split on whitespace (the
    /// form environment variables can carry).
    #[serde(default, deserialize_with = "string_or_list")]
    command: Option<Vec<String>>,
    /// `command`: working directory.
    working_dir: Option<PathBuf>,
    /// `command`: extra environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `http`: URL the input is POSTed to.
    url: Option<String>,
    /// `http`: request headers.
    #[serde(default)]
    headers: BTreeMap<String, SecretString>,
    /// `http`: request headers whose values are read from files.
    #[serde(default)]
    header_files: BTreeMap<String, PathBuf>,
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
    DEFAULT_KIND_TIMEOUT
}

/// The names of a table's keys, for messages (header values are secrets: never shown).
fn names<V>(table: &BTreeMap<String, V>) -> Option<String> {
    (!table.is_empty()).then(|| {
        table
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    })
}

impl RawKind {
    /// The typed settings of kind `name`, or the first thing wrong with them, naming its key.
    /// A field of the other executor is refused (a `url` on a `command` kind would be ignored
    /// silently).
    pub(super) fn into_settings(self, name: &str) -> Result<KindSettings, ConfigError> {
        let key = |field: &str| format!("kinds.{name}.{field}");
        if !valid_kind_name(name) {
            return Err(invalid(
                "kinds",
                name,
                "kind names are 1-64 of a-z 0-9 _ . - starting with a letter",
            ));
        }
        let (executor, other, given) = match self.executor.as_str() {
            "command" => {
                let command = match self.command {
                    Some(argv) if argv.first().is_some_and(|p| !p.is_empty()) => argv,
                    _ => {
                        return Err(invalid(
                            key("command"),
                            "(unset)",
                            "the command executor needs a program, e.g. [\"/usr/bin/render\", \"--fast\"]",
                        ));
                    }
                };
                let given = self
                    .url
                    .map(|url| ("url", url))
                    .or_else(|| names(&self.headers).map(|n| ("headers", n)))
                    .or_else(|| names(&self.header_files).map(|n| ("header_files", n)));
                let executor = ExecutorSettings::Command(CommandExecutor {
                    command,
                    working_dir: self.working_dir,
                    env: self.env,
                });
                (executor, "http", given)
            }
            "http" => {
                for (name, path) in &self.header_files {
                    if !path.is_file() {
                        return Err(invalid(
                            key(&format!("header_files.{name}")),
                            path.display(),
                            "no such file",
                        ));
                    }
                }
                let url = self.url.unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        key("url"),
                        if url.is_empty() {
                            "(unset)"
                        } else {
                            url.as_str()
                        },
                        "the http executor needs an http:// or https:// URL",
                    ));
                }
                let given = self
                    .command
                    .map(|argv| ("command", argv.join(" ")))
                    .or_else(|| {
                        self.working_dir
                            .map(|dir| ("working_dir", dir.display().to_string()))
                    })
                    .or_else(|| names(&self.env).map(|n| ("env", n)));
                let executor = ExecutorSettings::Http(HttpExecutor {
                    url,
                    headers: self.headers,
                    header_files: self.header_files,
                });
                (executor, "command", given)
            }
            other => {
                return Err(invalid(key("executor"), other, "expected command or http"));
            }
        };
        if let Some((field, value)) = given {
            return Err(invalid(
                key(field),
                value,
                format!(
                    "only the {other} executor takes {field}; this kind's executor is {}",
                    executor.name()
                ),
            ));
        }
        let limits = KindLimits {
            concurrency: self.concurrency,
            max_running: self.max_running,
            rate_limit: match (self.rate_limit, self.rate_burst) {
                (Some(rate), Some(burst)) => Some(
                    rate.with_burst(burst)
                        .map_err(|reason| invalid(key("rate_burst"), burst, reason))?,
                ),
                (None, Some(burst)) => {
                    return Err(invalid(
                        key("rate_burst"),
                        burst,
                        "only a kind with a rate_limit takes rate_burst",
                    ));
                }
                (rate, None) => rate,
            },
            timeout: self.timeout,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
        };
        check_limits(&limits, name)?;
        Ok(KindSettings { limits, executor })
    }
}

/// The range checks of a kind's limits.
fn check_limits(limits: &KindLimits, name: &str) -> Result<(), ConfigError> {
    let key = |field: &str| format!("kinds.{name}.{field}");
    if limits.concurrency == Some(0) {
        return Err(invalid(key("concurrency"), 0, "must be at least 1"));
    }
    if limits.max_running == Some(0) {
        return Err(invalid(
            key("max_running"),
            0,
            "must be at least 1 (leave it unset for no cap)",
        ));
    }
    if limits.timeout.is_zero() {
        return Err(invalid(key("timeout"), "0s", "must be positive"));
    }
    if let Some(max) = limits.max_attempts
        && !(1..=1000).contains(&max)
    {
        return Err(invalid(
            key("max_attempts"),
            max,
            "must be between 1 and 1000",
        ));
    }
    let backoff = &limits.backoff;
    if backoff.max > Duration::from_secs(30 * 86_400) || backoff.base > backoff.max {
        return Err(invalid(
            key("backoff"),
            format!(
                "base {} max {}",
                humantime::format_duration(backoff.base),
                humantime::format_duration(backoff.max)
            ),
            "max must be at most 30 days and at least base",
        ));
    }
    if !(0.0..=1.0).contains(&backoff.jitter) {
        return Err(invalid(
            key("backoff.jitter"),
            backoff.jitter,
            "must be between 0 and 1",
        ));
    }
    Ok(())
}

/// `kind` if the database accepts it as a kind name, else the caller's error built from it:
/// the one check the operator commands (pause, declare, quotas) make before connecting.
pub fn checked_kind_name<E>(kind: &str, invalid: impl FnOnce(String) -> E) -> Result<&str, E> {
    if valid_kind_name(kind) {
        Ok(kind)
    } else {
        Err(invalid(kind.to_owned()))
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
