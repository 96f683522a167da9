//! The daemon's runtime: claims jobs when there is capacity, runs them, keeps their leases,
//! rescues other replicas' expired ones, and drains on shutdown.
//!
//! Tasks, all owned by [`Worker::run`]:
//! - the claim loop (here): waits for free capacity and a reason to look (a notification, the
//!   poll interval, or a full previous batch), then claims a batch sized to the free slots;
//! - one task per job (`executor`), which records the outcome;
//! - `completer`: writes successes in batches;
//! - `heartbeat`: renews the leases of every job in flight, delivers cancellations, and stops
//!   claims (and jobs about to lose their lease) when the database cannot be reached;
//! - `rescuer`: returns other workers' expired leases to the queue;
//! - `listener`: LISTEN/NOTIFY wake-ups and cancellation requests;
//! - `retention`: optional pruning of old finished jobs.

mod attempt;
mod completer;
mod heartbeat;
mod inflight;
mod listener;
mod outcome;
mod persist;
mod rescuer;
mod retention;
mod wake;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{RetentionSettings, WorkerSettings};
use crate::handlers::Registry;
use crate::queue::{
    ClaimOrder, ClaimPolicy, ClaimRequest, ClaimedJob, Queue, WorkerId, next_rotation,
};

pub use inflight::StopReason;

/// Hard deadline, after the shutdown grace, for cancelled jobs to stop and be requeued.
const HARD_STOP: Duration = Duration::from_secs(10);
/// With a backlog, how long to wait for more free slots before claiming for only a few.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

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
    /// Something may be claimable: a notification, the database back.
    wake: wake::Wakeup,
    /// A job finished and gave back its slot. Not a reason to look for work by itself (an
    /// idle queue stays idle); it matters when the slots (all, or a kind's) were full or claimed
    /// jobs are waiting for one.
    freed: Notify,
    /// Heartbeats are being written; when false, nothing new is claimed.
    healthy: AtomicBool,
    /// Claim order and cluster-wide caps (the fair rotation point is the claim loop's).
    policy: ClaimPolicy,
    /// Whether the policy caps running jobs (claims must then go through `claim_with`).
    capped: bool,
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
        let policy = ClaimPolicy {
            order: if settings.fair().unwrap_or(true) {
                ClaimOrder::Fair { after: Uuid::nil() }
            } else {
                ClaimOrder::Fifo
            },
            max_running_per_user: (settings.max_running_per_user > 0)
                .then_some(settings.max_running_per_user),
            max_running_by_kind: registry
                .kinds()
                .into_iter()
                .filter_map(|kind| {
                    let cap = registry.get(&kind)?.max_running?;
                    Some((kind, cap))
                })
                .collect(),
        };
        let capped = policy.capped(&registry.kinds());
        Worker {
            shared: Arc::new(Shared {
                capped,
                policy,
                queue,
                id: WorkerId::generate(),
                registry,
                slots: Arc::new(Semaphore::new(settings.concurrency)),
                settings,
                inflight: inflight::InFlight::default(),
                kind_slots,
                wake: wake::Wakeup::default(),
                freed: Notify::new(),
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

/// Claimed jobs waiting for an execution slot (only with `worker.prefetch`).
type Buffer = VecDeque<(ClaimedJob, CancellationToken)>;

/// Claim and start jobs until shutdown; then give back the claimed jobs that never started.
async fn claim_loop(
    shared: &Arc<Shared>,
    completer: &completer::Completer,
    jobs: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut buffer = Buffer::new();
    let mut db_backoff = persist::Backoff::new(shared.settings.max_backoff);
    let mut rotation = 0usize;
    let mut fair_after = Uuid::nil();
    // Whether the last claim came back full: there is probably more waiting.
    let mut backlog = false;
    // Whether to search the queue at the next chance (at start, after a poll interval or a freed
    // slot, and whenever a claim could not be made).
    let mut search = true;
    // Searches happen at least this often whatever else wakes the loop: jobs that fall due by
    // time (retries after backoff, scheduled jobs) announce nothing.
    let mut next_poll = tokio::time::Instant::now();
    let capacity = shared.settings.concurrency + shared.settings.prefetch;
    let batch_floor = (capacity / 4).max(1);
    loop {
        start_buffered(shared, completer, jobs, &mut buffer);
        if shutdown.is_cancelled() {
            break;
        }
        let healthy = shared.healthy.load(Ordering::Acquire);
        if healthy && backlog && room(shared, &buffer) < batch_floor {
            // Short jobs finish in bursts: wait a moment for more slots so that one claim
            // serves many of them, instead of one claim per freed slot.
            let until = tokio::time::Instant::now() + CLAIM_LINGER;
            while room(shared, &buffer) < batch_floor {
                tokio::select! {
                    () = shared.freed.notified() => {}
                    () = tokio::time::sleep_until(until) => break,
                    () = shutdown.cancelled() => break,
                }
                start_buffered(shared, completer, jobs, &mut buffer);
            }
        }
        let want = room(shared, &buffer);
        let reasons = shared.wake.take();
        // Jobs announced by id, and nothing else to look for: take them by key (the idle
        // worker's fast path). Anything else searches the queue in the configured order.
        search |= tokio::time::Instant::now() >= next_poll;
        let named_only =
            !(search || backlog || reasons.scan || reasons.named.is_empty() || shared.capped)
                && kind_room(shared) > 0;
        search |= reasons.scan || !reasons.named.is_empty();
        backlog = false;
        if healthy && want > 0 {
            let groups = claim_groups(shared, &buffer, want, rotation);
            // Leases start from the database's clock, after this: the earliest they can expire.
            let expires = std::time::Instant::now() + shared.settings.lease;
            let claim = async {
                if named_only {
                    claim_named(shared, &reasons.named, want).await
                } else {
                    claim_batch(shared, groups, want, &mut fair_after).await
                }
            };
            tokio::pin!(claim);
            // Jobs already claimed keep starting while the next claim is on the wire.
            let claimed = loop {
                tokio::select! {
                    claimed = &mut claim => break claimed,
                    () = shared.freed.notified(), if !buffer.is_empty() => {
                        start_buffered(shared, completer, jobs, &mut buffer);
                    }
                }
            };
            match claimed {
                Ok((claimed, full)) => {
                    db_backoff.reset();
                    if !named_only {
                        next_poll = tokio::time::Instant::now() + shared.settings.poll_interval;
                    }
                    // A full claim: more is probably waiting (for a named claim, announced jobs
                    // the room did not allow), so look again in the configured order.
                    search = named_only && full;
                    backlog = full;
                    for job in claimed {
                        let cancel = shared.inflight.insert(job.id, job.attempt, expires);
                        if job.cancel_requested {
                            shared.inflight.stop(job.id, StopReason::Cancelled);
                        }
                        buffer.push_back((job, cancel));
                    }
                    start_buffered(shared, completer, jobs, &mut buffer);
                    rotation = rotation.wrapping_add(1);
                }
                Err(err) => {
                    let delay = db_backoff.next();
                    warn!(error.message = %err, retry_in = ?delay, "claim failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            if backlog {
                continue; // more is probably waiting
            }
        }
        // A freed slot matters only if there may be something to put in it: the slots (all, or
        // a kind's) were full, or claimed jobs are waiting for one.
        let slot_matters =
            room(shared, &buffer) == 0 || !buffer.is_empty() || kind_room(shared) == 0;
        tokio::select! {
            () = shared.wake.notified() => {}
            () = shared.freed.notified(), if slot_matters => search = true,
            () = tokio::time::sleep_until(next_poll) => {
                search = true;
                next_poll = tokio::time::Instant::now() + shared.settings.poll_interval;
            }
            () = shutdown.cancelled() => {}
        }
    }
    for (job, _) in buffer.drain(..) {
        attempt::give_back(shared, completer.clone(), jobs, job);
    }
}

/// How many more jobs to claim: free slots plus the prefetch allowance, minus what is buffered.
fn room(shared: &Shared, buffer: &Buffer) -> usize {
    (shared.slots.available_permits() + shared.settings.prefetch).saturating_sub(buffer.len())
}

/// Free slots of the kind with the fewest (every kind has its own limit).
fn kind_room(shared: &Shared) -> usize {
    shared
        .kind_slots
        .values()
        .map(|slots| slots.available_permits())
        .min()
        .unwrap_or(0)
}

/// Start buffered jobs, in claim order, for as long as their kinds have free slots.
fn start_buffered(
    shared: &Arc<Shared>,
    completer: &completer::Completer,
    jobs: &TaskTracker,
    buffer: &mut Buffer,
) {
    let mut waiting = Buffer::new();
    while let Some((job, cancel)) = buffer.pop_front() {
        if shared.slots.available_permits() == 0 {
            buffer.push_front((job, cancel));
            break;
        }
        match permits_for(shared, &job.kind) {
            Some(permits) => attempt::spawn(
                shared.clone(),
                completer.clone(),
                jobs,
                job,
                cancel,
                permits,
            ),
            None => waiting.push_back((job, cancel)),
        }
    }
    // Jobs whose kind is at its limit keep their place ahead of the rest.
    while let Some(entry) = waiting.pop_back() {
        buffer.push_front(entry);
    }
}

/// Permits held by a running job: one global slot and one slot of its kind.
pub(crate) struct Permits {
    _global: OwnedSemaphorePermit,
    _kind: OwnedSemaphorePermit,
}

/// How to split a claim of `want` jobs: one claim for all kinds when no kind's room (free slots
/// plus prefetch, minus what is buffered) binds; otherwise one per kind within its room,
/// starting at a rotating kind so that none is always served last.
fn claim_groups(
    shared: &Shared,
    buffer: &Buffer,
    want: usize,
    rotation: usize,
) -> Vec<(Vec<String>, usize)> {
    let kinds = shared.registry.kinds();
    let kind_room = |kind: &str| {
        let free = shared
            .kind_slots
            .get(kind)
            .map_or(0, |s| s.available_permits());
        let buffered = buffer.iter().filter(|(job, _)| job.kind == kind).count();
        (free + shared.settings.prefetch).saturating_sub(buffered)
    };
    if kinds.iter().all(|k| kind_room(k) >= want) {
        vec![(kinds, want)]
    } else {
        let n = kinds.len();
        (0..n)
            .map(|i| kinds[(i + rotation) % n].clone())
            .filter_map(|k| {
                let room = kind_room(&k);
                (room > 0).then(|| (vec![k], room))
            })
            .collect()
    }
}

/// Claim up to `want` jobs, one claim per group of [`claim_groups`]. Returns the jobs, and
/// whether any claim came back full (so more may be waiting).
async fn claim_batch(
    shared: &Arc<Shared>,
    groups: Vec<(Vec<String>, usize)>,
    want: usize,
    fair_after: &mut Uuid,
) -> crate::queue::Result<(Vec<ClaimedJob>, bool)> {
    let mut out = Vec::new();
    let mut full = false;
    let mut remaining = want;
    for (group, room) in groups {
        let limit = room.min(remaining);
        if limit == 0 {
            break;
        }
        let mut policy = shared.policy.clone();
        if let ClaimOrder::Fair { after } = &mut policy.order {
            *after = *fair_after;
        }
        let claimed = shared
            .queue
            .claim_with(
                &ClaimRequest {
                    worker: &shared.id,
                    kinds: &group,
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    lease: shared.settings.lease,
                    now: None,
                },
                &policy,
            )
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            // Earlier groups' jobs are claimed (committed): run them rather than strand them.
            Err(err) if !out.is_empty() => {
                warn!(error.message = %err, claimed = out.len(), "claim failed part-way; running what was claimed");
                return Ok((out, false));
            }
            Err(err) => return Err(err),
        };
        if matches!(policy.order, ClaimOrder::Fair { .. }) {
            *fair_after = next_rotation(*fair_after, &claimed);
        }
        full |= claimed.len() == limit;
        remaining -= claimed.len();
        out.extend(claimed);
    }
    if !out.is_empty() {
        debug!(claimed = out.len(), "claimed jobs");
    }
    Ok((out, full))
}

/// Claim up to `want` of the jobs announced by id (never more than each kind's room). Returns
/// the jobs, and whether the room left some of them unclaimed.
async fn claim_named(
    shared: &Arc<Shared>,
    ids: &[Uuid],
    want: usize,
) -> crate::queue::Result<(Vec<ClaimedJob>, bool)> {
    let kinds = shared.registry.kinds();
    let limit = want.min(kind_room(shared));
    let claimed = shared
        .queue
        .claim_named(
            &ClaimRequest {
                worker: &shared.id,
                kinds: &kinds,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                lease: shared.settings.lease,
                now: None,
            },
            ids,
        )
        .await?;
    // Full only if the limit, not another worker, kept announced jobs back.
    let full = claimed.len() == limit && ids.len() > limit;
    Ok((claimed, full))
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
