//! Logging: an `EnvFilter` (`RUST_LOG` beats `log.level`) and a human or JSON formatter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};

/// The driver's own lines are quiet unless `log.level` (or `RUST_LOG`) names sqlx: PostgreSQL's
/// notices (`relation "_sqlx_migrations" already exists, skipping`, `wal_level is insufficient`
/// from the guarded Realtime step) and the pool's complaints during an outage (`error occurred
/// while testing the connection on-release`, `time to acquire exceeded slow threshold`, the
/// server's `terminating connection due to administrator command`). They describe the driver
/// and the server, not the user's task; the worker says once when the database becomes
/// unavailable and once when it answers again (`worker::outage`), and errors that matter reach
/// the user through the worker's own messages.
fn with_quiet_notices(level: &str) -> String {
    if level.contains("sqlx") {
        level.to_owned()
    } else {
        format!("{level},sqlx=off")
    }
}

/// Whether log lines may carry ANSI colour: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>). Piped output, files and log collectors get plain text.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the global subscriber, writing to `writer` (stderr in the binary). Returns an error if
/// the filter does not parse or a subscriber is already installed.
///
/// # Errors
/// A bad `log.level` / `RUST_LOG` directive, or a second installation.
pub fn init<W>(settings: &LogSettings, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(with_quiet_notices(&settings.level))
            .map_err(|e| anyhow::anyhow!("log.level = {}: {e}", settings.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(writer);
    match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.with_target(false).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::with_quiet_notices;

    #[test]
    fn the_driver_is_quiet_unless_named() {
        assert_eq!(with_quiet_notices("info"), "info,sqlx=off");
        assert_eq!(with_quiet_notices("info,sqlx=debug"), "info,sqlx=debug");
    }
}
