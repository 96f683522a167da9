//! The shutdown signal: SIGTERM (Kubernetes, docker compose) or SIGINT (Ctrl-C).

use tokio::signal::unix::{self, SignalKind};

/// Resolves when the process receives SIGTERM or SIGINT.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    let mut term = unix::signal(SignalKind::terminate())?;
    let mut int = unix::signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
