//! The worker's timers without a worker (`studio-worker scheduler`): schedules, expired-lease
//! rescue and retention keep running when the worker replicas are scaled to zero.
//!
//! The same tasks as in every `run` replica, over the same statements: a schedule's fire time
//! is still enqueued once (the database's key decides, whoever fires), a lapsed lease is still
//! rescued once (SKIP LOCKED), and any number of maintenance and worker processes may run them
//! side by side. Nothing is claimed here.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::{Worker, rescuer, retention, scheduler};

impl Worker {
    /// Run the schedules (if any), the rescue of expired leases and retention (if enabled)
    /// until `shutdown` is cancelled. Claims nothing: build the worker with an empty registry.
    ///
    /// # Errors
    /// None today; a `Result` like [`Worker::run`]'s, for the binary's one error path.
    pub async fn maintain(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker {
            shared,
            retention,
            scheduler,
        } = self;
        info!(
            worker.id = %shared.id,
            schedules = scheduler.as_ref().map_or(0, |s| s.schedules().len()),
            retention = retention.is_some(),
            "maintenance started: schedules, expired-lease rescue, retention (no jobs are claimed)"
        );
        let helpers = TaskTracker::new();
        helpers.spawn(rescuer::run(shared.clone(), shutdown.clone()));
        if let Some(retention) = retention {
            helpers.spawn(retention::run(shared.clone(), retention, shutdown.clone()));
        }
        if let Some(scheduler) = scheduler {
            helpers.spawn(scheduler::run(shared.clone(), scheduler, shutdown.clone()));
        }
        helpers.close();
        helpers.wait().await;
        info!(worker.id = %shared.id, "maintenance stopped");
        Ok(())
    }
}
