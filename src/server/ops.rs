//! The operations surface: `/healthz` (the process answers), `/readyz` (the database answers
//! and its schema is at least this binary's), `/metrics` (Prometheus text, with queue depth
//! refreshed from the database at each scrape).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::debug;

use crate::control::kinds::{KindServing, Kinds};
use crate::db;
use crate::queue::Queue;

/// Longest a probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the operations routes read.
#[derive(Clone)]
pub(crate) struct OpsState {
    /// The queue (its pool answers `/readyz`; its gauges feed `/metrics`).
    pub queue: Queue,
    /// The installed Prometheus recorder; `None` answers `/metrics` with 404.
    pub metrics: Option<PrometheusHandle>,
    /// Kinds whose depth gauges were set: a kind whose rows are all gone (finished and pruned,
    /// or none left pending or running) drops out of the refresh query, and its gauges must go
    /// to 0 rather than keep their last value.
    pub gauged: Arc<Mutex<BTreeSet<String>>>,
    /// Whether this process reads the kind registry for `studio_kind_replicas` and
    /// `studio_kind_unserved`: the worker does; the job API's role may not read it (42501 at
    /// every scrape), so the API exports neither.
    pub kind_serving: bool,
    /// Kinds whose `studio_kind_replicas`/`studio_kind_unserved` were set: a kind that is no
    /// longer listed (forgotten, nothing due) goes to 0. Only a successful read changes them.
    pub served: Arc<Mutex<BTreeSet<String>>>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub(crate) fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn ready(State(state): State<OpsState>) -> (StatusCode, String) {
    let version = tokio::time::timeout(PROBE_TIMEOUT, db::schema_version(state.queue.pool())).await;
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

async fn render_metrics(State(state): State<OpsState>) -> (StatusCode, String) {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_owned(),
        );
    };
    // Known kinds and their live replicas (control::kinds). When the read fails, their gauges
    // keep their last values: zeroing them would read as "no replica" during a database hiccup.
    let serving = if state.kind_serving {
        let kinds = Kinds::new(state.queue.pool().clone());
        match tokio::time::timeout(PROBE_TIMEOUT, kinds.serving()).await {
            Ok(Ok(serving)) => Some(serving),
            Ok(Err(err)) => {
                debug!(error.message = %err, "kind replicas not refreshed; their gauges keep their last values");
                None
            }
            Err(_) => {
                debug!("kind replicas query timed out; their gauges keep their last values");
                None
            }
        }
    } else {
        None
    };
    if let Some(serving) = &serving {
        set_serving(&state, serving);
    }
    let serving = serving.unwrap_or_default();
    match tokio::time::timeout(PROBE_TIMEOUT, state.queue.gauges()).await {
        Ok(Ok(gauges)) => {
            let now: BTreeSet<String> = gauges
                .iter()
                .map(|g| g.kind.clone())
                .chain(serving.iter().map(|k| k.kind.clone()))
                .collect();
            // A poisoned lock only means another scrape panicked mid-update: the set is fine.
            let mut gauged = state
                .gauged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for gone in gauged.difference(&now) {
                for name in [
                    "studio_jobs_pending",
                    "studio_jobs_running",
                    "studio_jobs_oldest_pending_seconds",
                    "studio_kind_paused",
                ] {
                    metrics::gauge!(name, "kind" => gone.clone()).set(0.0);
                }
            }
            *gauged = now;
            drop(gauged);
            // A known kind without pending or running jobs (and not paused, or the queue's
            // gauges would list it) has its depth gauges at 0.
            for k in &serving {
                if !gauges.iter().any(|g| g.kind == k.kind) {
                    for name in [
                        "studio_jobs_pending",
                        "studio_jobs_running",
                        "studio_jobs_oldest_pending_seconds",
                        "studio_kind_paused",
                    ] {
                        metrics::gauge!(name, "kind" => k.kind.clone()).set(0.0);
                    }
                }
            }
            for g in gauges {
                metrics::gauge!("studio_jobs_pending", "kind" => g.kind.clone())
                    .set(g.pending as f64);
                metrics::gauge!("studio_jobs_running", "kind" => g.kind.clone())
                    .set(g.running as f64);
                metrics::gauge!("studio_jobs_oldest_pending_seconds", "kind" => g.kind.clone())
                    .set(g.oldest_pending_seconds);
                metrics::gauge!("studio_kind_paused", "kind" => g.kind).set(if g.paused {
                    1.0
                } else {
                    0.0
                });
            }
        }
        Ok(Err(err)) => debug!(error.message = %err, "queue depth not refreshed"),
        Err(_) => debug!("queue depth query timed out"),
    }
    (StatusCode::OK, handle.render())
}

/// `studio_kind_replicas` and `studio_kind_unserved` from a successful read of the registry;
/// kinds no longer listed go to 0.
fn set_serving(state: &OpsState, serving: &[KindServing]) {
    let now: BTreeSet<String> = serving.iter().map(|k| k.kind.clone()).collect();
    // A poisoned lock only means another scrape panicked mid-update: the set is fine.
    let mut served = state
        .served
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for gone in served.difference(&now) {
        metrics::gauge!("studio_kind_replicas", "kind" => gone.clone()).set(0.0);
        metrics::gauge!("studio_kind_unserved", "kind" => gone.clone()).set(0.0);
    }
    *served = now;
    drop(served);
    for k in serving {
        metrics::gauge!("studio_kind_replicas", "kind" => k.kind.clone()).set(k.replicas as f64);
        metrics::gauge!("studio_kind_unserved", "kind" => k.kind.clone()).set(if k.unserved {
            1.0
        } else {
            0.0
        });
    }
}
