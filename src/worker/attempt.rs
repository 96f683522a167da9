//! Running one attempt of a claimed job: its span, its timeout, panic capture, cancellation,
//! and classifying what happened into one [`Outcome`] for the completer to write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use super::completer::Completer;
use super::inflight::StopReason;
use super::outcome::Outcome;
use super::{Permits, Shared};
use crate::handlers::{HandlerError, JobContext, KindRuntime};
use crate::queue::{ClaimedJob, Failure};

/// After a job is told to stop, how long its handler may take to return before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

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
pub(crate) fn give_back(
    shared: &Shared,
    completer: Completer,
    jobs: &TaskTracker,
    job: ClaimedJob,
) {
    let span = info_span!("job", job.id = %job.id, job.kind = %job.kind, job.attempt = job.attempt);
    let lease = job.lease(&shared.id);
    jobs.spawn(
        async move {
            completer
                .record(lease, &job.kind, Outcome::Requeue, None)
                .await;
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
    let Some(runtime) = shared.registry.get(&job.kind).cloned() else {
        // The claim only asks for registered kinds, so this is a bug; fail loudly, keep going.
        let failure = Failure::Permanent {
            error: "no worker can run jobs of this kind".to_owned(),
        };
        let detail = format!(
            "no executor for kind {:?} in worker {}",
            job.kind,
            shared.id.as_str()
        );
        completer
            .record(
                lease,
                &job.kind,
                Outcome::Failed(failure, Some(detail)),
                None,
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
        let joined = execute(&shared, &runtime, context, &job).await;
        shared.run_times.record(&job.kind, started.elapsed());
        joined
    };
    shared.inflight.finishing(job.id, job.attempt);

    let reason = shared.inflight.reason(job.id, job.attempt);
    let outcome = classify(joined, reason, &runtime, &job);
    completer
        .record(lease, &job.kind, outcome, Some(started.elapsed()))
        .await;
    // The slot frees once the outcome is written or queued for the writer, not when the
    // handler returns: while outcomes wait, claims wait. Otherwise a worker whose writes fall
    // behind keeps claiming, and the leases it holds (and renews) grow without bound.
    drop(permits);
    shared.freed.notify_one();
}

/// Run the handler in its own task (so a panic is contained), racing its timeout and its
/// cancellation. `None` means the handler had to be aborted.
async fn execute(
    shared: &Shared,
    kind: &KindRuntime,
    context: JobContext,
    job: &ClaimedJob,
) -> Option<Result<Result<Value, HandlerError>, JoinError>> {
    let cancel = context.cancel.clone();
    let handler = kind.handler.clone();
    let mut task = tokio::spawn(async move { handler.run(context).await }.in_current_span());
    tokio::select! {
        joined = &mut task => return Some(joined),
        () = tokio::time::sleep(kind.limits.timeout) => {
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
    kind: &KindRuntime,
    job: &ClaimedJob,
) -> Outcome {
    let retry = |error: String, detail: Option<String>| {
        Outcome::Failed(
            Failure::Retryable {
                error,
                delay: kind.limits.backoff.delay(job.attempt),
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
                humantime::format_duration(kind.limits.timeout)
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
