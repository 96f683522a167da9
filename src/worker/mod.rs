//! The daemon's runtime: claims jobs when there is capacity, runs them, keeps their leases,
//! rescues other replicas' expired ones, and drains on shutdown.
//!
//! Tasks, all owned by [`Worker::run`]:
//! - the claim loop (here): waits for free capacity and a reason to look (a notification, the
//!   poll interval, or a full previous batch), then claims a batch sized to the free slots;
//! - one task per job ([`executor`]), which records the outcome;
//! - [`completer`]: writes successes in batches;
//! - [`heartbeat`]: renews the leases of every job in flight, delivers cancellations, and stops
//!   claims (and jobs about to lose their lease) when the database cannot be reached;
//! - [`rescuer`]: returns other workers' expired leases to the queue;
//! - [`listener`]: LISTEN/NOTIFY wake-ups and cancellation requests;
//! - [`retention`]: optional pruning of old finished jobs.

mod completer;
mod executor;
mod heartbeat;
mod inflight;
mod listener;
mod persist;
mod rescuer;
mod retention;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{RetentionSettings, WorkerSettings};
use crate::handlers::Registry;
use crate::queue::{ClaimRequest, ClaimedJob, Queue, WorkerId};

pub use inflight::StopReason;

/// Hard deadline, after the shutdown grace, for cancelled jobs to stop and be requeued.
const HARD_STOP: Duration = Duration::from_secs(10);

/// A worker process: one identity, one set of executors, one concurrency budget.
pub struct Worker {
    shared: Arc<Shared>,
    retention: Option<RetentionSettings>,
}

/// State shared by the worker's tasks.
struct Shared {
    queue: Queue,
    id: WorkerId,
    registry: Registry,
    settings: WorkerSettings,
    /// Every job claimed and not yet recorded.
    inflight: inflight::InFlight,
    /// Free execution slots (all kinds).
    slots: Arc<Semaphore>,
    /// Free execution slots per kind.
    kind_slots: HashMap<String, Arc<Semaphore>>,
    /// Something may be claimable: a notification, a freed slot, the database back.
    wake: Notify,
    /// Heartbeats are being written; when false, nothing new is claimed.
    healthy: AtomicBool,
}

impl Worker {
    /// A worker over `queue` running the kinds in `registry`.
    pub fn new(queue: Queue, registry: Registry, settings: WorkerSettings) -> Self {
        let kind_slots = registry
            .kinds()
            .into_iter()
            .filter_map(|kind| {
                let limit = registry.get(&kind)?.concurrency.min(settings.concurrency);
                Some((kind, Arc::new(Semaphore::new(limit))))
            })
            .collect();
        Worker {
            shared: Arc::new(Shared {
                queue,
                id: WorkerId::generate(),
                registry,
                slots: Arc::new(Semaphore::new(settings.concurrency)),
                settings,
                inflight: inflight::InFlight::default(),
                kind_slots,
                wake: Notify::new(),
                healthy: AtomicBool::new(true),
            }),
            retention: None,
        }
    }

    /// Also prune old finished jobs, if `settings.enabled`.
    pub fn with_retention(mut self, settings: RetentionSettings) -> Self {
        self.retention = settings.enabled.then_some(settings);
        self
    }

    /// This process's identity (`locked_by` of the jobs it runs).
    pub fn id(&self) -> &WorkerId {
        &self.shared.id
    }

    /// Run until `shutdown` is cancelled, then drain: running jobs get
    /// `worker.shutdown_grace` to finish, the rest are cancelled and put back to pending without
    /// using up an attempt.
    ///
    /// # Errors
    /// Only if the worker cannot start (no kinds); database trouble is retried, never returned.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker { shared, retention } = self;
        if shared.registry.is_empty() {
            anyhow::bail!("no job kinds configured: add at least one [kinds.<name>] section");
        }
        info!(
            worker.id = %shared.id,
            kinds = ?shared.registry.kinds(),
            concurrency = shared.settings.concurrency,
            listen = shared.settings.listen,
            "worker started"
        );

        let background = CancellationToken::new();
        let (completer, completer_task) = completer::Completer::start(shared.clone());
        let helpers = TaskTracker::new();
        helpers.spawn(heartbeat::run(shared.clone(), background.clone()));
        helpers.spawn(rescuer::run(shared.clone(), background.clone()));
        if shared.settings.listen {
            helpers.spawn(listener::run(shared.clone(), background.clone()));
        }
        if let Some(retention) = retention {
            helpers.spawn(retention::run(
                shared.clone(),
                retention,
                background.clone(),
            ));
        }
        helpers.close();

        let jobs = TaskTracker::new();
        claim_loop(&shared, &completer, &jobs, &shutdown).await;

        drain(&shared, &jobs).await;
        completer_task.finish(completer).await;
        background.cancel();
        helpers.wait().await;
        info!(worker.id = %shared.id, "worker stopped");
        Ok(())
    }
}

/// Claim and spawn until shutdown.
async fn claim_loop(
    shared: &Arc<Shared>,
    completer: &completer::Completer,
    jobs: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut db_backoff = persist::Backoff::new(shared.settings.max_backoff);
    let mut rotation = 0usize;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let free = shared.slots.available_permits();
        let ready = free > 0 && shared.healthy.load(Ordering::Acquire);
        let mut full_batch = false;
        if ready {
            match claim_batch(shared, free, rotation).await {
                Ok((claimed, limit_reached)) => {
                    db_backoff.reset();
                    full_batch = limit_reached;
                    for (job, permits) in claimed {
                        executor::spawn(shared.clone(), completer.clone(), jobs, job, permits);
                    }
                }
                Err(err) => {
                    let delay = db_backoff.next();
                    warn!(error.message = %err, retry_in = ?delay, "claim failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                    continue;
                }
            }
            rotation = rotation.wrapping_add(1);
        }
        if full_batch && shared.slots.available_permits() > 0 {
            continue; // more is probably waiting
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.settings.poll_interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Permits held by a running job: one global slot and one slot of its kind.
pub(crate) struct Permits {
    _global: OwnedSemaphorePermit,
    _kind: OwnedSemaphorePermit,
}

/// Claim up to `free` jobs, respecting each kind's free slots. Returns the jobs with their
/// permits, and whether any claim came back full (so more may be waiting).
async fn claim_batch(
    shared: &Arc<Shared>,
    free: usize,
    rotation: usize,
) -> crate::queue::Result<(Vec<(ClaimedJob, Permits)>, bool)> {
    let kinds = shared.registry.kinds();
    let kind_free = |kind: &str| {
        shared
            .kind_slots
            .get(kind)
            .map_or(0, |s| s.available_permits())
    };
    // One claim for all kinds when no kind limit binds; otherwise one per kind, starting at a
    // rotating kind so that none is always served last.
    let groups: Vec<(Vec<String>, usize)> = if kinds.iter().all(|k| kind_free(k) >= free) {
        vec![(kinds, free)]
    } else {
        let n = kinds.len();
        (0..n)
            .map(|i| kinds[(i + rotation) % n].clone())
            .filter(|k| kind_free(k) > 0)
            .map(|k| {
                let limit = kind_free(&k);
                (vec![k], limit)
            })
            .collect()
    };

    let mut out = Vec::new();
    let mut full = false;
    let mut remaining = free;
    for (group, kind_limit) in groups {
        let limit = kind_limit.min(remaining);
        if limit == 0 {
            break;
        }
        let claimed = shared
            .queue
            .claim(&ClaimRequest {
                worker: &shared.id,
                kinds: &group,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                lease: shared.settings.lease,
                now: None,
            })
            .await?;
        full |= claimed.len() == limit;
        remaining -= claimed.len();
        for job in claimed {
            match permits_for(shared, &job.kind) {
                Some(permits) => out.push((job, permits)),
                // Cannot happen: slots were counted before claiming and only this loop takes
                // them. Give the job back rather than run it over the limit.
                None => {
                    warn!(job.id = %job.id, "no free slot for a claimed job; requeueing it");
                    let lease = job.lease(&shared.id);
                    if let Err(err) = shared
                        .queue
                        .requeue(&lease, "worker had no free slot")
                        .await
                    {
                        warn!(error.message = %err, job.id = %job.id, "requeue failed; the lease will expire");
                    }
                }
            }
        }
    }
    if !out.is_empty() {
        debug!(claimed = out.len(), "claimed jobs");
    }
    Ok((out, full))
}

fn permits_for(shared: &Shared, kind: &str) -> Option<Permits> {
    let kind = shared
        .kind_slots
        .get(kind)?
        .clone()
        .try_acquire_owned()
        .ok()?;
    let global = shared.slots.clone().try_acquire_owned().ok()?;
    Some(Permits {
        _global: global,
        _kind: kind,
    })
}

/// Let running jobs finish within the grace period, then stop the rest (they are requeued by
/// their tasks) and wait for them a little longer.
async fn drain(shared: &Arc<Shared>, jobs: &TaskTracker) {
    jobs.close();
    let running = jobs.len();
    if running > 0 {
        info!(running, grace = ?shared.settings.shutdown_grace, "draining: waiting for running jobs");
    }
    if tokio::time::timeout(shared.settings.shutdown_grace, jobs.wait())
        .await
        .is_ok()
    {
        return;
    }
    let stopped = shared.inflight.stop_all(StopReason::Shutdown);
    warn!(
        stopped,
        "shutdown grace over: cancelling running jobs and requeueing them"
    );
    if tokio::time::timeout(HARD_STOP, jobs.wait()).await.is_err() {
        warn!(
            left = jobs.len(),
            "jobs did not stop in time; their leases will expire and another worker will rescue them"
        );
    }
}
