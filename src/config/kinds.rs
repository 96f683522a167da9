//! `[kinds.<name>]`: one job kind's executor and limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::control::rate::RateLimit;
use crate::retry::RetryBackoff;

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
    /// At most this many starts of this kind in any window of a period, across all replicas
    /// (`60/min`, `5/s`, `10/5s`). Unset: no rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
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

    /// A field of the other executor is a mistake (a `url` on a `command` kind would be ignored
    /// silently): refuse it, naming the key. Header values are secrets, so only their names
    /// are shown.
    fn refuse_other_executors_fields(&self, name: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("kinds.{name}.{field}");
        let (other, given): (&str, Option<(&str, String)>) = match self.executor_kind(name)? {
            ExecutorKind::Command => (
                "http",
                self.url
                    .as_ref()
                    .map(|url| ("url", url.clone()))
                    .or_else(|| {
                        (!self.headers.is_empty()).then(|| {
                            let names: Vec<&str> =
                                self.headers.keys().map(String::as_str).collect();
                            ("headers", names.join(","))
                        })
                    })
                    .or_else(|| {
                        (!self.header_files.is_empty()).then(|| {
                            let names: Vec<&str> =
                                self.header_files.keys().map(String::as_str).collect();
                            ("header_files", names.join(","))
                        })
                    }),
            ),
            ExecutorKind::Http => (
                "command",
                self.command
                    .as_ref()
                    .map(|argv| ("command", argv.join(" ")))
                    .or_else(|| {
                        self.working_dir
                            .as_ref()
                            .map(|dir| ("working_dir", dir.display().to_string()))
                    })
                    .or_else(|| {
                        (!self.env.is_empty()).then(|| {
                            let names: Vec<&str> = self.env.keys().map(String::as_str).collect();
                            ("env", names.join(","))
                        })
                    }),
            ),
        };
        match given {
            Some((field, value)) => Err(invalid(
                key(field),
                value,
                format!(
                    "only the {other} executor takes {field}; this kind's executor is {}",
                    self.executor
                ),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
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
        self.refuse_other_executors_fields(name)?;
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
