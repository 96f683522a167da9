//! The operations surface: `/healthz` (the process answers), `/readyz` (the database answers
//! and its schema is at least this binary's), `/metrics` (Prometheus text, with queue depth
//! refreshed from the database at each scrape).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::debug;

use crate::control::Control;
use crate::control::kinds::KindReplicas;
use crate::db;
use crate::queue::{KindGauges, Queue};

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
    /// The autoscaling demand gauges (`server::demand`), when this process exports them.
    pub demand: Option<super::demand::DemandGauge>,
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
    // Known kinds and their live replicas (control::kinds), read without the jobs: the queue's
    // gauges count the due pending jobs in their own scan. When either read fails, the kinds'
    // serving gauges keep their last values: zeroing them would read as "no replica" during a
    // database hiccup.
    let registry = if state.kind_serving {
        let kinds = Control::new(state.queue.pool().clone()).kinds();
        match tokio::time::timeout(PROBE_TIMEOUT, kinds.replicas()).await {
            Ok(Ok(registry)) => Some(registry),
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
    if let Some(demand) = &state.demand {
        demand.refresh(state.queue.pool()).await;
    }
    match tokio::time::timeout(PROBE_TIMEOUT, state.queue.admin().gauges()).await {
        Ok(Ok(gauges)) => {
            set_depth(&state, &gauges, registry.as_deref().unwrap_or_default());
            if let Some(registry) = &registry {
                set_serving(&state, &gauges, registry);
            }
        }
        Ok(Err(err)) => debug!(error.message = %err, "queue depth not refreshed"),
        Err(_) => debug!("queue depth query timed out"),
    }
    (StatusCode::OK, handle.render())
}

/// The depth gauges of the kinds with jobs or paused, and of the known kinds (0 when they have
/// none); kinds no longer listed go to 0.
fn set_depth(state: &OpsState, gauges: &[KindGauges], known: &[KindReplicas]) {
    const DEPTH: [&str; 4] = [
        "studio_jobs_pending",
        "studio_jobs_running",
        "studio_jobs_oldest_pending_seconds",
        "studio_kind_paused",
    ];
    let now: BTreeSet<String> = gauges
        .iter()
        .map(|g| g.kind.clone())
        .chain(known.iter().map(|k| k.kind.clone()))
        .collect();
    // A poisoned lock only means another scrape panicked mid-update: the set is fine.
    let mut gauged = state
        .gauged
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for gone in gauged.difference(&now) {
        for name in DEPTH {
            metrics::gauge!(name, "kind" => gone.clone()).set(0.0);
        }
    }
    *gauged = now;
    drop(gauged);
    // A known kind without pending or running jobs (and not paused, or the queue's gauges
    // would list it) has its depth gauges at 0.
    for k in known {
        if !gauges.iter().any(|g| g.kind == k.kind) {
            for name in DEPTH {
                metrics::gauge!(name, "kind" => k.kind.clone()).set(0.0);
            }
        }
    }
    for g in gauges {
        metrics::gauge!("studio_jobs_pending", "kind" => g.kind.clone()).set(g.pending as f64);
        metrics::gauge!("studio_jobs_running", "kind" => g.kind.clone()).set(g.running as f64);
        metrics::gauge!("studio_jobs_oldest_pending_seconds", "kind" => g.kind.clone())
            .set(g.oldest_pending_seconds);
        metrics::gauge!("studio_kind_paused", "kind" => g.kind.clone()).set(if g.paused {
            1.0
        } else {
            0.0
        });
    }
}

/// `studio_kind_replicas` and `studio_kind_unserved` (due pending jobs, no live replica) of the
/// known kinds, the kinds with a live replica and the kinds with due pending jobs, from
/// successful reads of the registry and the queue; kinds no longer listed go to 0.
fn set_serving(state: &OpsState, gauges: &[KindGauges], registry: &[KindReplicas]) {
    let due: BTreeMap<&str, i64> = gauges
        .iter()
        .filter(|g| g.due_pending > 0)
        .map(|g| (g.kind.as_str(), g.due_pending))
        .collect();
    let replicas: BTreeMap<&str, i64> = registry
        .iter()
        .map(|k| (k.kind.as_str(), k.replicas))
        .collect();
    let now: BTreeSet<String> = replicas
        .keys()
        .chain(due.keys())
        .map(|k| (*k).to_owned())
        .collect();
    // A poisoned lock only means another scrape panicked mid-update: the set is fine.
    let mut served = state
        .served
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for gone in served.difference(&now) {
        metrics::gauge!("studio_kind_replicas", "kind" => gone.clone()).set(0.0);
        metrics::gauge!("studio_kind_unserved", "kind" => gone.clone()).set(0.0);
    }
    for kind in &now {
        let live = replicas.get(kind.as_str()).copied().unwrap_or(0);
        let unserved = due.contains_key(kind.as_str()) && live == 0;
        metrics::gauge!("studio_kind_replicas", "kind" => kind.clone()).set(live as f64);
        metrics::gauge!("studio_kind_unserved", "kind" => kind.clone()).set(if unserved {
            1.0
        } else {
            0.0
        });
    }
    *served = now;
}
