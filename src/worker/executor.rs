//! Running one claimed job: its span, its timeout, panic capture, cancellation, and turning
//! what happened into exactly one recorded transition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use super::completer::Completer;
use super::inflight::StopReason;
use super::persist::persist;
use super::{Permits, Shared};
use crate::handlers::{Executor, HandlerError, JobContext};
use crate::queue::{ClaimedJob, Error, FailOutcome, Failure, JobStatus, Lease};

/// After a job is told to stop, how long its handler may take to return before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the attempt came to, before it is written.
enum Outcome {
    Succeeded(Value),
    /// A failed attempt: the user's message in the failure, the operators' detail beside it.
    Failed(Failure, Option<String>),
    Cancelled,
    Requeue,
    /// The worker killed the job before its unrenewed lease could expire: recorded as a failed
    /// attempt (retried like a rescued one), by the worker itself while its fence still holds.
    GiveUp,
    Abandon,
}

/// What a given-up attempt records (users read it; the worker's name is in the history row).
const GAVE_UP: &str = "the worker gave up this attempt: its lease could not be renewed in time";

/// Run `job` (already tracked in flight, with its cancellation token) in its own task.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    completer: Completer,
    jobs: &TaskTracker,
    job: ClaimedJob,
    cancel: CancellationToken,
    permits: Permits,
) {
    let span = info_span!("job", job.id = %job.id, job.kind = %job.kind, job.attempt = job.attempt);
    jobs.spawn(run(shared, completer, job, cancel, permits).instrument(span));
}

/// Give back a claimed job that never started (shutdown): pending again, attempt not used.
pub(crate) fn give_back(shared: Arc<Shared>, jobs: &TaskTracker, job: ClaimedJob) {
    let span = info_span!("job", job.id = %job.id, job.kind = %job.kind, job.attempt = job.attempt);
    jobs.spawn(
        async move {
            let lease = job.lease(&shared.id);
            let written = persist("requeueing", shared.settings.max_backoff, || {
                shared.queue.requeue(&lease)
            })
            .await;
            if let Err(err) = written {
                warn!(error.message = %err, "could not give back an unstarted job; its lease will expire");
            }
            shared.inflight.remove(job.id, job.attempt);
        }
        .instrument(span),
    );
}

async fn run(
    shared: Arc<Shared>,
    completer: Completer,
    job: ClaimedJob,
    cancel: CancellationToken,
    permits: Permits,
) {
    metrics::counter!("studio_jobs_claimed_total", "kind" => job.kind.clone()).increment(1);
    let lease = job.lease(&shared.id);
    let Some(executor) = shared.registry.get(&job.kind).cloned() else {
        // The claim only asks for registered kinds, so this is a bug; fail loudly, keep going.
        drop(permits);
        let failure = Failure::Permanent {
            error: "no worker can run jobs of this kind".to_owned(),
        };
        let detail = format!(
            "no executor for kind {:?} in worker {}",
            job.kind,
            shared.id.as_str()
        );
        record(
            &shared,
            &completer,
            lease,
            &job.kind,
            Outcome::Failed(failure, Some(detail)),
            Duration::ZERO,
        )
        .await;
        return;
    };

    let started = Instant::now();
    // Stopped while waiting for a slot (cancelled, lease lost): do not start it at all.
    let joined = if cancel.is_cancelled() {
        None
    } else {
        let context = JobContext::new(&job, lease.clone(), shared.queue.clone(), cancel.clone());
        execute(&shared, &executor, context, &job).await
    };
    shared.inflight.finishing(job.id, job.attempt);
    drop(permits);
    shared.freed.notify_one();

    let reason = shared.inflight.reason(job.id, job.attempt);
    let outcome = classify(joined, reason, &executor, &job);
    record(
        &shared,
        &completer,
        lease,
        &job.kind,
        outcome,
        started.elapsed(),
    )
    .await;
}

/// Run the handler in its own task (so a panic is contained), racing its timeout and its
/// cancellation. `None` means the handler had to be aborted.
async fn execute(
    shared: &Shared,
    executor: &Executor,
    context: JobContext,
    job: &ClaimedJob,
) -> Option<Result<Result<Value, HandlerError>, JoinError>> {
    let cancel = context.cancel.clone();
    let handler = executor.handler.clone();
    let mut task = tokio::spawn(async move { handler.run(context).await }.in_current_span());
    tokio::select! {
        joined = &mut task => return Some(joined),
        () = tokio::time::sleep(executor.timeout) => {
            shared.inflight.stop_attempt(job.id, job.attempt, StopReason::TimedOut);
        }
        () = cancel.cancelled() => {}
    }
    if shared
        .inflight
        .reason(job.id, job.attempt)
        .is_some_and(StopReason::lease_gone)
    {
        // Another worker may already run it (or soon will): no grace period. Dropping the
        // handler kills a `command` program's whole tree at once.
        task.abort();
        return None;
    }
    match tokio::time::timeout(STOP_GRACE, &mut task).await {
        Ok(joined) => Some(joined),
        Err(_) => {
            warn!("handler ignored its cancellation for {STOP_GRACE:?}; aborting it");
            task.abort();
            None
        }
    }
}

fn classify(
    joined: Option<Result<Result<Value, HandlerError>, JoinError>>,
    reason: Option<StopReason>,
    executor: &Executor,
    job: &ClaimedJob,
) -> Outcome {
    let retry = |error: String, detail: Option<String>| {
        Outcome::Failed(
            Failure::Retryable {
                error,
                delay: executor.backoff.delay(job.attempt),
            },
            detail,
        )
    };
    match (reason, joined) {
        (Some(StopReason::LeaseLost), _) => Outcome::Abandon,
        // Work that finished is kept, even if a stop was asked for meanwhile.
        (_, Some(Ok(Ok(result)))) => Outcome::Succeeded(result),
        (Some(StopReason::LeaseGivenUp), _) => Outcome::GiveUp,
        (Some(StopReason::Cancelled), _) => Outcome::Cancelled,
        (Some(StopReason::Shutdown), _) => Outcome::Requeue,
        (Some(StopReason::TimedOut), _) => retry(
            format!(
                "timed out after {}",
                humantime::format_duration(executor.timeout)
            ),
            None,
        ),
        (None, Some(Ok(Err(HandlerError::Permanent(err))))) => {
            let (error, detail) = split(&err);
            Outcome::Failed(Failure::Permanent { error }, detail)
        }
        (None, Some(Ok(Err(HandlerError::Retryable(err))))) => {
            let (error, detail) = split(&err);
            retry(error, detail)
        }
        (None, Some(Err(join))) => retry(
            "the handler failed unexpectedly".to_owned(),
            Some(format!("handler panicked: {}", panic_message(join))),
        ),
        (None, None) => retry("the handler did not stop when asked".to_owned(), None),
    }
}

/// A handler's error as (what the user reads, what operators read): the outermost message is
/// the handler's choice for users; the causes beneath it are kept for operators only.
fn split(err: &anyhow::Error) -> (String, Option<String>) {
    let error = err.to_string();
    let full = format!("{err:#}");
    (error.clone(), (full != error).then_some(full))
}

fn panic_message(join: JoinError) -> String {
    if !join.is_panic() {
        return "task cancelled".to_owned();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".to_owned())
}

/// Write the outcome (successes go through the batching completer).
async fn record(
    shared: &Shared,
    completer: &Completer,
    lease: Lease,
    kind: &str,
    outcome: Outcome,
    elapsed: Duration,
) {
    let max_backoff = shared.settings.max_backoff;
    let label = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed(..) => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::Requeue => "requeued",
        Outcome::GiveUp => "given_up",
        Outcome::Abandon => "abandoned",
    };
    metrics::histogram!("studio_job_duration_seconds", "kind" => kind.to_owned(), "outcome" => label)
        .record(elapsed.as_secs_f64());
    let written = match outcome {
        Outcome::Succeeded(result) => {
            completer.submit(lease, kind.to_owned(), result).await;
            return;
        }
        Outcome::Failed(failure, detail) => persist("recording a failure", max_backoff, || {
            shared.queue.fail_with_detail(&lease, &failure, detail.as_deref())
        })
            .await
            .map(|outcome| {
                let (counter, status) = match outcome {
                    FailOutcome::Retrying { .. } => ("studio_jobs_retried_total", JobStatus::Pending),
                    FailOutcome::Failed => ("studio_jobs_failed_total", JobStatus::Failed),
                    FailOutcome::Cancelled => ("studio_jobs_cancelled_total", JobStatus::Cancelled),
                };
                metrics::counter!(counter, "kind" => kind.to_owned()).increment(1);
                let error = match &failure {
                    Failure::Retryable { error, .. } | Failure::Permanent { error } => error.as_str(),
                };
                let detail = detail.as_deref().unwrap_or(error);
                match outcome {
                    FailOutcome::Retrying { run_at } => warn!(job.state.to = %status, error = detail, retry_at = %run_at, "attempt failed; will retry"),
                    _ => warn!(job.state.to = %status, error = detail, "job failed"),
                }
            }),
        Outcome::Cancelled => persist("recording a cancellation", max_backoff, || {
            shared.queue.cancel_running(&lease, "cancelled by request")
        })
        .await
        .map(|()| {
            metrics::counter!("studio_jobs_cancelled_total", "kind" => kind.to_owned()).increment(1);
            info!(job.state.to = "cancelled", "job cancelled");
        }),
        Outcome::Requeue => persist("requeueing", max_backoff, || {
            shared.queue.requeue(&lease)
        })
        .await
        .map(|status| info!(job.state.to = %status, "job requeued at shutdown")),
        Outcome::GiveUp => {
            metrics::counter!("studio_jobs_lease_lost_total", "kind" => kind.to_owned()).increment(1);
            let failure = Failure::Retryable {
                error: GAVE_UP.to_owned(),
                delay: Duration::ZERO,
            };
            persist("recording a given-up attempt", max_backoff, || {
                shared.queue.fail(&lease, &failure)
            })
            .await
            .map(|outcome| warn!(job.state.to = ?outcome, "{GAVE_UP}"))
        }
        Outcome::Abandon => {
            metrics::counter!("studio_jobs_lease_lost_total", "kind" => kind.to_owned()).increment(1);
            warn!("lease lost: result dropped; the job's new owner or the rescuer decides");
            Ok(())
        }
    };
    match written {
        Ok(()) => {}
        Err(Error::LeaseLost { .. }) => {
            metrics::counter!("studio_jobs_lease_lost_total", "kind" => kind.to_owned())
                .increment(1);
            warn!("lease lost before the outcome was written; it was dropped");
        }
        Err(err) => {
            error!(error.message = %err, error.cause_chain = ?err, "could not record the job's outcome")
        }
    }
    shared.inflight.remove(lease.job_id, lease.attempt);
}
