//! The autoscaling demand on `/metrics` (migration 0025): the number KEDA's PostgreSQL trigger
//! reads, for teams that scale on Prometheus instead.
//!
//! - `studio_autoscale_demand_replicas`: `studio_autoscale_demand(kinds, per_replica, horizon)`
//!   for this process's configured kinds (all kinds when it configures none), `[autoscale]`'s
//!   `per_replica` (default `worker.concurrency`) and `horizon`.
//! - `studio_autoscale_runnable_jobs`: the same count before the division (per_replica 1).
//!
//! Read at each scrape; a failed read keeps the last values (a database hiccup must not read as
//! "scale to zero").

use std::time::Duration;

use sqlx::PgPool;
use tracing::debug;

use crate::config::Settings;
use crate::control::autoscale;

/// Longest a scrape waits for the demand.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the gauge asks.
#[derive(Debug, Clone)]
pub(crate) struct DemandGauge {
    kinds: Option<Vec<String>>,
    per_replica: u32,
    horizon: Duration,
}

impl DemandGauge {
    /// The question `settings` asks: its kinds, `[autoscale]`, `worker.concurrency`.
    pub(crate) fn from_settings(settings: &Settings) -> Self {
        let kinds: Vec<String> = settings.kinds.keys().cloned().collect();
        let concurrency = u32::try_from(settings.worker.concurrency).unwrap_or(u32::MAX);
        DemandGauge {
            kinds: (!kinds.is_empty()).then_some(kinds),
            per_replica: settings.autoscale.per_replica.unwrap_or(concurrency).max(1),
            horizon: settings.autoscale.horizon,
        }
    }

    /// Read the demand and set the gauges.
    pub(crate) async fn refresh(&self, pool: &PgPool) {
        let read = autoscale::demand(pool, self.kinds.as_deref(), 1, self.horizon);
        match tokio::time::timeout(TIMEOUT, read).await {
            Ok(Ok(jobs)) => {
                let jobs = u64::try_from(jobs).unwrap_or(0);
                metrics::gauge!("studio_autoscale_runnable_jobs").set(jobs as f64);
                metrics::gauge!("studio_autoscale_demand_replicas")
                    .set(jobs.div_ceil(u64::from(self.per_replica)) as f64);
            }
            Ok(Err(err)) => {
                debug!(error.message = %err, "autoscaling demand not refreshed; its gauges keep their last values");
            }
            Err(_) => debug!("autoscaling demand timed out; its gauges keep their last values"),
        }
    }
}
