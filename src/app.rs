//! The daemon, assembled: connect, check the schema, install metrics, serve the operations
//! endpoint, run the worker until SIGTERM/SIGINT, drain, close.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::control::autoscale;
use crate::handlers::Registry;
use crate::queue::Queue;
use crate::server::demand::DemandGauge;
use crate::server::{self, ops, ops::OpsState};
use crate::worker::Worker;
use crate::{api, db, shutdown};

/// Run the worker daemon with `registry`'s executors until a shutdown signal.
///
/// # Errors
/// Start-up failures: database unreachable or refusing us, schema too old, port taken, no kinds.
pub async fn run(settings: Settings, registry: Registry) -> anyhow::Result<()> {
    if registry.is_empty() {
        return Err(crate::config::ConfigError::Invalid {
            key: "kinds".to_owned(),
            value: "(none)".to_owned(),
            reason: "no job kinds configured: add at least one [kinds.<name>] section (or STUDIO_KINDS__<NAME>__EXECUTOR)".to_owned(),
        }
        .into());
    }
    // Installed before anything can log that it started: a SIGTERM from then on drains.
    let mut signals = shutdown::Signals::install()?;
    let pool = db::connect(&settings.database, settings.database.startup_timeout).await?;
    check_schema(&pool).await?;
    publish_limits(&settings, &pool, "run").await;

    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let name = signals.recv().await;
        info!(
            signal = name,
            "shutdown requested: no new claims, draining running jobs"
        );
        signal_token.cancel();
    });

    // Every HTTP surface joins here: its router, served on its own listener.
    let http_stop = CancellationToken::new();
    let ops_task = serve_ops(&settings, &pool, true, &http_stop).await?;

    // The job API, when api.listen is set (its own pool and role; see api::start).
    let api = api::start(&settings, http_stop.clone()).await?;
    // The operators' dashboard, when dashboard.listen is set (its own small pool).
    let dashboard = crate::dashboard::start(&settings, http_stop.clone()).await?;

    let worker = Worker::new(Queue::new(pool.clone()), registry, settings.worker.clone())
        .with_retention(settings.retention.clone())
        .with_schedules(schedules(&settings));
    let result = worker.run(shutdown).await;

    http_stop.cancel();
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    if let Some(api) = api {
        api.finished().await;
    }
    if let Some(dashboard) = dashboard {
        dashboard.finished().await;
    }
    pool.close().await;
    result
}

/// Refuse to start on a schema older than this binary.
async fn check_schema(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let expected = db::latest_migration();
    match db::schema_version(pool).await {
        Ok(Some(version)) if version >= expected => Ok(()),
        Ok(version) => anyhow::bail!(
            "the database schema is at version {} but this worker needs {expected}: run `studio-worker migrate` (or `supabase db push`) first",
            version.map_or_else(|| "(none recorded)".to_owned(), |v| v.to_string())
        ),
        Err(err) => Err(anyhow::Error::new(err).context(
            "cannot read the schema version: run `studio-worker migrate`, and check that the worker's role is a member of studio_worker",
        )),
    }
}

/// Tell the database the claim limits of the configured kinds, so that the autoscaling demand
/// counts with them while no worker runs (migration 0025). A failure is a warning: the demand
/// then counts with the limits published before.
async fn publish_limits(settings: &Settings, pool: &sqlx::PgPool, by: &str) {
    let limits = autoscale::limits_of(settings);
    let by = format!("{by}@{}", hostname());
    if let Err(err) = autoscale::publish_limits(pool, &limits, &by).await {
        tracing::warn!(error.message = %err, "could not publish the kinds' limits for the autoscaling demand; it counts with the ones published before");
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_owned())
}

/// Run the worker's timers without a worker, until a shutdown signal: `studio-worker
/// scheduler`, one always-on process so that schedules fire, expired leases are rescued and
/// retention runs while the worker replicas are scaled to zero. Publishes the configured kinds'
/// limits for the autoscaling demand and serves the operations endpoint (with the demand gauge).
///
/// # Errors
/// Start-up failures: database unreachable or refusing us, schema too old, port taken.
pub async fn run_scheduler(settings: Settings) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::install()?;
    let pool = db::connect(&settings.database, settings.database.startup_timeout).await?;
    check_schema(&pool).await?;
    publish_limits(&settings, &pool, "scheduler").await;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let name = signals.recv().await;
        info!(signal = name, "shutdown requested: stopping the scheduler");
        signal_token.cancel();
    });
    let http_stop = CancellationToken::new();
    let ops_task = serve_ops(&settings, &pool, true, &http_stop).await?;
    let maintenance = Worker::new(
        Queue::new(pool.clone()),
        Registry::new(),
        settings.worker.clone(),
    )
    .with_retention(settings.retention.clone())
    .with_schedules(schedules(&settings));
    let result = maintenance.maintain(shutdown).await;
    http_stop.cancel();
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    pool.close().await;
    result
}

/// The configured schedules, each job's attempts defaulting to its kind's `max_attempts`.
fn schedules(settings: &Settings) -> Vec<(String, crate::config::ScheduleSettings)> {
    settings
        .schedules
        .iter()
        .map(|(name, schedule)| {
            let mut schedule = schedule.clone();
            schedule.max_attempts = schedule
                .max_attempts
                .or_else(|| settings.kinds.get(&schedule.kind)?.limits.max_attempts);
            (name.clone(), schedule)
        })
        .collect()
}

/// Serve the job API (and the operations endpoint) without a worker, until a shutdown signal:
/// `studio-worker api`, so that the API and the workers scale apart.
///
/// # Errors
/// Start-up failures: `api.listen` unset, database unreachable or refusing the API's role, port
/// taken.
pub async fn serve_api(settings: Settings) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::install()?;
    let stop = CancellationToken::new();
    let Some(api) = api::start(&settings, stop.clone()).await? else {
        // A configuration problem: exit code 2.
        return Err(crate::config::ConfigError::Invalid {
            key: "api.listen".to_owned(),
            value: "(unset)".to_owned(),
            reason: "`studio-worker api` serves the job API: set STUDIO_API__LISTEN \
                     (e.g. 0.0.0.0:8080)"
                .to_owned(),
        }
        .into());
    };
    // The API's role may not read the kind registry: its /metrics leaves the kinds' gauges out.
    let ops_task = serve_ops(&settings, api.pool(), false, &stop).await?;
    let name = signals.recv().await;
    info!(signal = name, "shutdown requested: closing the job API");
    stop.cancel();
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    api.finished().await;
    Ok(())
}

/// The operations surface on `http.listen`, if set; `kind_serving` when `pool`'s role may read
/// the kind registry (the worker's, not the job API's).
async fn serve_ops(
    settings: &Settings,
    pool: &sqlx::PgPool,
    kind_serving: bool,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = settings.http.listen else {
        return Ok(None);
    };
    let ops = ops::router(OpsState {
        queue: Queue::new(pool.clone()),
        metrics: Some(install_metrics()?),
        gauged: Default::default(),
        kind_serving,
        served: Default::default(),
        demand: Some(DemandGauge::from_settings(settings)),
    });
    let (addr, task) = server::serve("http.listen", addr, ops, stop.clone()).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(Some(task))
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("studio_job_duration_seconds".to_owned()),
            &[
                0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
            ],
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
