//! `[log]`: format (typed at load) and filter directives.

use serde::Deserialize;

use super::rejected;

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// Filter directives (`info`, `studio_worker=debug,sqlx=warn`); `RUST_LOG` overrides.
    pub level: String,
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
