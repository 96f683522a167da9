//! The daemon's runtime: claims jobs when there is capacity, runs them, keeps their leases,
//! rescues other replicas' expired ones, and drains on shutdown.
//!
//! Tasks, all owned by [`Worker::run`]:
//! - the claim loop (here): waits for free capacity and a reason to look (a notification, the
//!   poll interval, or a full previous batch), then claims a batch sized to the free slots;
//! - one task per job (`attempt`): runs the handler under the kind's timeout, catches panics,
//!   and classifies what happened into one outcome;
//! - `completer`: the one writer of every outcome (successes batched, the rest at once), each
//!   observed exactly once (`outcome`);
//! - `heartbeat`: renews the leases of every job in flight, delivers cancellations, and stops
//!   claims (and jobs about to lose their lease) when the database cannot be reached;
//! - `rescuer`: returns other workers' expired leases to the queue;
//! - `listener`: LISTEN/NOTIFY wake-ups and cancellation requests;
//! - `retention`: optional pruning of old finished jobs;
//! - `scheduler`: enqueues the configured schedules' jobs at their fire times;
//! - `served`: this replica's registration as serving its kinds, and unserved-kind warnings.
//!
//! `maintenance` runs the rescuer, retention and the scheduler alone (`studio-worker scheduler`).

mod attempt;
mod completer;
mod heartbeat;
mod inflight;
mod listener;
mod maintenance;
mod outage;
mod outcome;
mod pacer;
mod prefetch;
mod rescuer;
mod retention;
mod scheduler;
mod served;
mod wake;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{RetentionSettings, ScheduleSettings, WorkerSettings};
use crate::control::schedule::Scheduler;
use crate::handlers::Registry;
use crate::queue::{ClaimCursor, ClaimPolicy, ClaimRequest, ClaimedJob, Queue, WorkerId};

pub use inflight::StopReason;
use pacer::{Pacer, Plan, Room, Woke};

/// Hard deadline, after the shutdown grace, for cancelled jobs to stop and be requeued.
const HARD_STOP: Duration = Duration::from_secs(10);

/// A worker process: one identity, one set of executors, one concurrency budget.
pub struct Worker {
    shared: Arc<Shared>,
    retention: Option<RetentionSettings>,
    scheduler: Option<Scheduler>,
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
    /// The one account of database outages (a line when one starts, a line when it ends).
    outage: outage::Outage,
    /// Claim order and cluster-wide caps (the rotation state is the claim loop's cursor).
    policy: ClaimPolicy,
    /// Whether the policy caps running jobs (claims must then go through the claim planner).
    capped: bool,
    /// How long each kind's jobs typically run here (adaptive prefetch).
    run_times: prefetch::RunTimes,
}

impl Worker {
    /// A worker over `queue` running the kinds in `registry`.
    pub fn new(queue: Queue, registry: Registry, settings: WorkerSettings) -> Self {
        let kind_slots = registry
            .limits()
            .map(|(kind, limits)| {
                let slots = limits.slots(settings.concurrency);
                (kind.to_owned(), Arc::new(Semaphore::new(slots)))
            })
            .collect();
        let policy = ClaimPolicy::for_kinds(registry.limits(), &settings);
        let capped = policy.capped(&registry.kinds());
        Worker {
            shared: Arc::new(Shared {
                capped,
                run_times: prefetch::RunTimes::new(registry.kinds()),
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
                outage: outage::Outage::default(),
            }),
            retention: None,
            scheduler: None,
        }
    }

    /// Also prune old finished jobs, if `settings.enabled`.
    pub fn with_retention(mut self, settings: RetentionSettings) -> Self {
        self.retention = settings.enabled.then_some(settings);
        self
    }

    /// Also enqueue the jobs of `schedules` at their fire times (none: no scheduler task).
    pub fn with_schedules(mut self, schedules: Vec<(String, ScheduleSettings)>) -> Self {
        self.scheduler =
            (!schedules.is_empty()).then(|| Scheduler::new(schedules, chrono::Utc::now()));
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
        let Worker {
            shared,
            retention,
            scheduler,
        } = self;
        if shared.registry.is_empty() {
            anyhow::bail!("no job kinds configured: add at least one [kinds.<name>] section");
        }
        let registered = served::register(&shared).await;
        info!(
            worker.id = %shared.id,
            // The id is opaque (users can read it on their running jobs): this line maps it to
            // the host and process for operators.
            worker.host = %crate::queue::WorkerId::host(),
            worker.pid = std::process::id(),
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
        helpers.spawn(served::run(shared.clone(), registered, background.clone()));
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
        if let Some(scheduler) = scheduler {
            helpers.spawn(scheduler::run(
                shared.clone(),
                scheduler,
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
        served::unregister(&shared).await;
        info!(worker.id = %shared.id, "worker stopped");
        Ok(())
    }
}

/// Claimed jobs waiting for an execution slot (only with `worker.prefetch`).
type Buffer = VecDeque<(ClaimedJob, CancellationToken)>;

/// Claim and start jobs until shutdown; then give back the claimed jobs that never started.
/// The pacer decides when and how to claim; this loop only does it: plan, claim, admit, wait.
async fn claim_loop(
    shared: &Arc<Shared>,
    completer: &completer::Completer,
    jobs: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut buffer = Buffer::new();
    let mut db_backoff = crate::db::Backoff::new(shared.settings.max_backoff);
    let mut cursor = ClaimCursor::default();
    let mut pacer = Pacer::new(
        shared.settings.poll_interval,
        shared.capped,
        shared.settings.concurrency + shared.settings.prefetch,
        Instant::now(),
    );
    loop {
        start_buffered(shared, completer, jobs, &mut buffer);
        if shutdown.is_cancelled() {
            break;
        }
        let healthy = shared.healthy.load(Ordering::Acquire);
        pacer.set_capacity(shared.settings.concurrency + prefetch_allowance(shared));
        if let Some(until) = pacer.linger_until(Instant::now(), healthy, room(shared, &buffer)) {
            while !pacer.enough_room(room(shared, &buffer)) {
                tokio::select! {
                    () = shared.freed.notified() => {}
                    () = tokio::time::sleep_until(until) => break,
                    () = shutdown.cancelled() => break,
                }
                start_buffered(shared, completer, jobs, &mut buffer);
            }
        }

        let plan = pacer.plan(
            Instant::now(),
            shared.wake.take(),
            healthy,
            room_now(shared, &buffer),
        );
        if plan != Plan::Idle {
            let kind_room = match &plan {
                Plan::Search { .. } => room_by_kind(shared, &buffer),
                _ => Vec::new(),
            };
            // Leases start from the database's clock, after this: the earliest they can expire.
            let expires = std::time::Instant::now() + shared.settings.lease;
            let claim = claim(shared, &plan, kind_room, &mut cursor);
            let claimed = while_claiming(claim, shared, completer, jobs, &mut buffer).await;
            let again = match claimed {
                Ok((claimed, full, rate_slot)) => {
                    db_backoff.reset();
                    shared.outage.answered();
                    let again = match &plan {
                        Plan::Named { ids, limit } => {
                            pacer.named_claimed(ids.len(), *limit, claimed.len())
                        }
                        _ => pacer.searched(Instant::now(), full, rate_slot),
                    };
                    admit(shared, &mut buffer, claimed, expires);
                    start_buffered(shared, completer, jobs, &mut buffer);
                    again
                }
                Err(err) => {
                    let delay = db_backoff.next();
                    match &err {
                        crate::queue::Error::Db(db) if crate::db::is_transient(db) => {
                            shared.outage.failed("claiming", &err);
                        }
                        _ => warn!(error.message = %err, retry_in = ?delay, "claim failed"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                    true
                }
            };
            if again {
                continue;
            }
        }

        let wait = pacer.wait(room_now(shared, &buffer));
        let woke = tokio::select! {
            () = shared.wake.notified() => Woke::Notified,
            () = shared.freed.notified(), if wait.on_freed => Woke::Freed,
            () = tokio::time::sleep_until(wait.until) => Woke::Deadline,
            () = shutdown.cancelled() => Woke::Shutdown,
        };
        pacer.woke(Instant::now(), woke);
    }
    for (job, _) in buffer.drain(..) {
        attempt::give_back(shared, completer.clone(), jobs, job);
    }
}

/// What a claim gave: the jobs, whether part of it came back full, and when a kind held back by
/// its rate may start again.
type ClaimOutcome = (Vec<ClaimedJob>, bool, Option<Duration>);

/// Run a claim the pacer planned (`kind_room` for a search, from [`room_by_kind`]).
async fn claim(
    shared: &Arc<Shared>,
    plan: &Plan,
    kind_room: Vec<u32>,
    cursor: &mut ClaimCursor,
) -> crate::queue::Result<ClaimOutcome> {
    match plan {
        Plan::Idle => Ok((Vec::new(), false, None)),
        Plan::Named { ids, limit } => claim_named(shared, ids, *limit).await,
        Plan::Search { limit } => claim_search(shared, kind_room, *limit, cursor).await,
    }
}

/// Await `claim` while jobs already claimed keep starting as slots free up.
async fn while_claiming<T>(
    claim: impl std::future::Future<Output = T>,
    shared: &Arc<Shared>,
    completer: &completer::Completer,
    jobs: &TaskTracker,
    buffer: &mut Buffer,
) -> T {
    tokio::pin!(claim);
    loop {
        tokio::select! {
            claimed = &mut claim => return claimed,
            () = shared.freed.notified(), if !buffer.is_empty() => {
                start_buffered(shared, completer, jobs, buffer);
            }
        }
    }
}

/// Track claimed jobs as in flight (stopping those already asked to cancel) and buffer them.
fn admit(
    shared: &Shared,
    buffer: &mut Buffer,
    claimed: Vec<ClaimedJob>,
    expires: std::time::Instant,
) {
    for job in claimed {
        let cancel = shared.inflight.insert(job.id, job.attempt, expires);
        if job.cancel_requested {
            shared.inflight.stop(job.id, StopReason::Cancelled);
        }
        buffer.push_back((job, cancel));
    }
}

/// The room the pacer plans with.
fn room_now(shared: &Shared, buffer: &Buffer) -> Room {
    Room {
        free: room(shared, buffer),
        tightest_kind: tightest_kind_room(shared),
        buffered: buffer.len(),
    }
}

/// How many more jobs to claim: free slots plus the prefetch allowance, minus what is buffered.
fn room(shared: &Shared, buffer: &Buffer) -> usize {
    (shared.slots.available_permits() + prefetch_allowance(shared)).saturating_sub(buffer.len())
}

/// Jobs this replica may hold claimed ahead, all kinds together: the fixed `worker.prefetch`,
/// or the kinds' adaptive allowances when they add up to more (at most [`prefetch::cap`] of
/// the replica's slots).
fn prefetch_allowance(shared: &Shared) -> usize {
    let adaptive: usize = shared
        .registry
        .kinds()
        .iter()
        .map(|kind| kind_prefetch(shared, kind))
        .sum();
    adaptive
        .min(prefetch::cap(shared.settings.concurrency))
        .max(shared.settings.prefetch)
}

/// Jobs of `kind` this replica may hold claimed ahead: the fixed `worker.prefetch` or the
/// kind's adaptive allowance (its slots, its typical run time, `worker.prefetch_wait`),
/// whichever is larger; none for rate-limited kinds (see [`room_by_kind`]).
fn kind_prefetch(shared: &Shared, kind: &str) -> usize {
    if shared.policy.rate_limited(kind) {
        return 0;
    }
    let slots = shared
        .registry
        .get(kind)
        .map_or(0, |k| k.limits.slots(shared.settings.concurrency));
    let adaptive = prefetch::allowance(
        shared.run_times.typical(kind),
        slots,
        shared.settings.prefetch_wait,
    );
    adaptive.max(shared.settings.prefetch)
}

/// Free slots of the kind with the fewest (every kind has its own limit).
fn tightest_kind_room(shared: &Shared) -> usize {
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

/// Claim up to `limit` jobs in the configured order through the queue's claim planner, each
/// kind within its room here (free slots plus prefetch, minus what is buffered). Returns the
/// jobs, whether part of the claim came back full (so more may be waiting), and when the first
/// kind held back by its rate may start again. Sets `studio_kind_rate_limited` for every
/// rate-limited kind.
async fn claim_search(
    shared: &Arc<Shared>,
    kind_room: Vec<u32>,
    limit: usize,
    cursor: &mut ClaimCursor,
) -> crate::queue::Result<ClaimOutcome> {
    let kinds = shared.registry.kinds();
    let claimed = shared
        .queue
        .claim_planned(
            &ClaimRequest {
                worker: &shared.id,
                kinds: &kinds,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                lease: shared.settings.lease,
                now: None,
            },
            &kind_room,
            &shared.policy,
            cursor,
        )
        .await;
    let full = claimed.full;
    let rate_slot = claimed.next_rate_slot();
    // Every rate-limited kind of this replica: one left out of this claim (no room here, or
    // paused) is not being held back by its rate.
    for kind in shared.policy.rate_by_kind.keys() {
        let held = claimed
            .rates
            .iter()
            .any(|(k, held)| k == kind && held.is_some());
        metrics::gauge!("studio_kind_rate_limited", "kind" => kind.clone()).set(if held {
            1.0
        } else {
            0.0
        });
    }
    let jobs = claimed.into_result()?;
    if !jobs.is_empty() {
        debug!(claimed = jobs.len(), "claimed jobs");
    }
    Ok((jobs, full, rate_slot))
}

/// Each registered kind's room here, in registry order: its free slots plus its prefetch
/// allowance ([`kind_prefetch`]), minus its buffered jobs. Rate-limited kinds get no prefetch allowance: the rate
/// counts claims, so a job claimed ahead and started in a later window would let more than
/// the limit reach the downstream service in that window.
fn room_by_kind(shared: &Shared, buffer: &Buffer) -> Vec<u32> {
    shared
        .registry
        .kinds()
        .iter()
        .map(|kind| {
            let free = shared
                .kind_slots
                .get(kind)
                .map_or(0, |s| s.available_permits());
            let buffered = buffer.iter().filter(|(job, _)| &job.kind == kind).count();
            let room = (free + kind_prefetch(shared, kind)).saturating_sub(buffered);
            u32::try_from(room).unwrap_or(u32::MAX)
        })
        .collect()
}

/// Claim up to `limit` of the jobs announced by id (the pacer bounds it by each kind's room).
/// The second and third values are unused (the pacer judges a named claim on its own, and the
/// by-key path is never taken with rates).
async fn claim_named(
    shared: &Arc<Shared>,
    ids: &[Uuid],
    limit: usize,
) -> crate::queue::Result<ClaimOutcome> {
    let kinds = shared.registry.kinds();
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
    Ok((claimed, false, None))
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

/// `interval` ± 25 %, at random: periodic tasks of replicas that started together spread out.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.75 + 0.5 * rand::random::<f64>())
}
