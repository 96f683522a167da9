//! The operations endpoint: `/healthz` (the process answers), `/readyz` (the database answers
//! and its schema is at least this binary's), `/metrics` (Prometheus text, with queue depth
//! refreshed from the database at each scrape).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::db;

/// Longest a probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
}

/// Bind `addr` now (so a taken port fails start-up), then serve until `stop` is cancelled.
///
/// # Errors
/// If the address cannot be bound.
pub async fn start(
    addr: SocketAddr,
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http.listen = {addr}: {e}"))?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { pool, metrics });
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error.message = %err, "http listener failed");
        }
    }))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    let version = tokio::time::timeout(PROBE_TIMEOUT, db::schema_version(&state.pool)).await;
    let expected = db::latest_migration();
    match version {
        Ok(Ok(Some(v))) if v >= expected => (StatusCode::OK, format!("ready (schema {v})\n")),
        Ok(Ok(v)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("schema at {v:?}, this worker needs {expected}: run `studio-worker migrate`\n"),
        ),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database error: {err}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database did not answer in time\n".to_owned(),
        ),
    }
}

async fn render_metrics(State(state): State<AppState>) -> (StatusCode, String) {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_owned(),
        );
    };
    match tokio::time::timeout(PROBE_TIMEOUT, refresh_queue_gauges(&state.pool)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => debug!(error.message = %err, "queue depth not refreshed"),
        Err(_) => debug!("queue depth query timed out"),
    }
    (StatusCode::OK, handle.render())
}

/// Queue depth, oldest due pending job and running jobs, by kind.
async fn refresh_queue_gauges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "select kind,
                count(*) filter (where status = 'pending'),
                count(*) filter (where status = 'running'),
                coalesce(extract(epoch from now() - min(run_at) filter (
                  where status = 'pending' and run_at <= now()))::float8, 0)
           from public.studio_jobs
          where status in ('pending', 'running')
          group by kind",
    )
    .fetch_all(pool)
    .await?;
    for (kind, pending, running, oldest) in rows {
        metrics::gauge!("studio_jobs_pending", "kind" => kind.clone()).set(pending as f64);
        metrics::gauge!("studio_jobs_running", "kind" => kind.clone()).set(running as f64);
        metrics::gauge!("studio_jobs_oldest_pending_seconds", "kind" => kind).set(oldest);
    }
    Ok(())
}
