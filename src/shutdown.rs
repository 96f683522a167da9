//! The shutdown signal: SIGTERM (Kubernetes, docker compose) or SIGINT (Ctrl-C).

use tokio::signal::unix::{self, Signal, SignalKind};

/// SIGTERM and SIGINT handlers, installed when this is created: a signal that arrives before
/// anyone awaits [`Signals::recv`] is kept, not lost to the default action (which would kill
/// the process without draining).
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Install the handlers now.
    ///
    /// # Errors
    /// If the signal handlers cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: unix::signal(SignalKind::terminate())?,
            int: unix::signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves with the signal's name when the process receives SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Resolves when the process receives SIGTERM or SIGINT (handlers installed on first poll;
/// use [`Signals::install`] where a signal may arrive before that).
///
/// # Errors
/// If the signal handlers cannot be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    Ok(Signals::install()?.recv().await)
}
