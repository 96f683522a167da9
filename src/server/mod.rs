//! The one HTTP server assembly. Each surface builds its own `Router` (`ops::router`,
//! `api::router`, `dashboard::router`) and [`serve`] binds it, serves it and shuts it down on a
//! token. Surfaces keep separate listeners: each has its own address key and security posture.

pub(crate) mod demand;
pub(crate) mod ops;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bind `addr` now (so a taken port fails start-up, naming `key`), then serve `router` until
/// `stop` is cancelled, finishing requests in progress. Returns the bound address (port 0
/// picks one) and the serving task.
///
/// # Errors
/// If the address cannot be bound.
pub(crate) async fn serve(
    key: &str,
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{key} = {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let key = key.to_owned();
    let task = tokio::spawn(async move {
        // Connect info: the dashboard limits sign-in attempts per client address.
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(err) = served {
            tracing::error!(error.message = %err, listener = %key, "http listener failed");
        }
    });
    Ok((bound, task))
}
