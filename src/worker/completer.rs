//! The one writer of every transition an attempt ends in. Successes are written in batches:
//! each write takes everything that finished while the previous one was in flight, so an idle
//! worker writes at once and a busy one writes hundreds of completions per statement. Every
//! other outcome is written at once by the job's own task. Either way the attempt is then
//! observed exactly once ([`observe`]).

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashSet;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info_span, warn};
use uuid::Uuid;

use super::Shared;
use super::outage::retry_while_unreachable;
use super::outcome::{Ended, Outcome, Written, observe};
use crate::queue::{Error, FailOutcome, Failure, JobStatus, Lease};

/// What a given-up attempt records (users read it; the worker's name is in the history row).
const GAVE_UP: &str = "the worker gave up this attempt: its lease could not be renewed in time";

/// Most completions per statement.
const MAX_BATCH: usize = 1000;
/// Completions waiting to be written before job tasks wait for room: the next batch, while one
/// is being written. A task waiting for room holds its slot, so while the writes fall behind the
/// worker claims nothing more (`attempt::run`), and the leases it holds stay bounded.
const QUEUE_LIMIT: usize = MAX_BATCH;
/// At shutdown, how long the last writes may take.
const FLUSH_DEADLINE: Duration = Duration::from_secs(15);

struct Done {
    lease: Lease,
    kind: String,
    result: Value,
    elapsed: Duration,
}

/// Handle for recording outcomes (one clone per job task).
#[derive(Clone)]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Done>,
}

/// The writing task; [`CompleterTask::finish`] flushes it.
pub(crate) struct CompleterTask(JoinHandle<()>);

impl Completer {
    pub(crate) fn start(shared: Arc<Shared>) -> (Self, CompleterTask) {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        (
            Completer {
                shared: shared.clone(),
                tx,
            },
            CompleterTask(tokio::spawn(write_loop(shared, rx))),
        )
    }

    /// Record what `lease`'s attempt came to: a success is queued for the next batch, anything
    /// else written now. `elapsed` is how long it ran (none if it never started).
    pub(crate) async fn record(
        &self,
        lease: Lease,
        kind: &str,
        outcome: Outcome,
        elapsed: Option<Duration>,
    ) {
        let ended = outcome.ended();
        let shared = &self.shared;
        let max_backoff = shared.settings.max_backoff;
        let (written, error) = match outcome {
            Outcome::Succeeded(result) => {
                let done = Done {
                    lease,
                    kind: kind.to_owned(),
                    result,
                    elapsed: elapsed.unwrap_or_default(),
                };
                if self.tx.send(done).await.is_err() {
                    // The writer stops only after every sender is gone, so this cannot happen.
                    warn!("completion writer gone; the lease will expire and the job rerun");
                }
                return;
            }
            Outcome::Failed(failure, detail) => {
                let written = retry_while_unreachable(
                    "recording a failure",
                    &shared.outage,
                    max_backoff,
                    || {
                        shared
                            .queue
                            .fail_with_detail(&lease, &failure, detail.as_deref())
                    },
                )
                .await;
                let error = detail.unwrap_or_else(|| message(&failure).to_owned());
                (failed(written), Some(error))
            }
            Outcome::GiveUp => {
                let failure = Failure::Retryable {
                    error: GAVE_UP.to_owned(),
                    delay: Duration::ZERO,
                };
                let written = retry_while_unreachable(
                    "recording a given-up attempt",
                    &shared.outage,
                    max_backoff,
                    || shared.queue.fail(&lease, &failure),
                )
                .await;
                (failed(written), Some(GAVE_UP.to_owned()))
            }
            Outcome::Cancelled => {
                let written = retry_while_unreachable(
                    "recording a cancellation",
                    &shared.outage,
                    max_backoff,
                    || shared.queue.cancel_running(&lease, "cancelled by request"),
                )
                .await;
                (moved(written.map(|()| JobStatus::Cancelled)), None)
            }
            Outcome::Requeue => {
                let written =
                    retry_while_unreachable("requeueing", &shared.outage, max_backoff, || {
                        shared.queue.requeue(&lease)
                    })
                    .await;
                (moved(written), None)
            }
            Outcome::Abandon => (Written::Nothing, None),
        };
        observe(
            shared,
            &lease,
            kind,
            ended,
            &written,
            error.as_deref(),
            elapsed,
        );
    }
}

fn message(failure: &Failure) -> &str {
    match failure {
        Failure::Retryable { error, .. } | Failure::Permanent { error } => error,
    }
}

fn moved(written: Result<JobStatus, Error>) -> Written {
    match written {
        Ok(to) => Written::Moved { to, retry_at: None },
        Err(Error::LeaseLost { .. }) => Written::LeaseLost,
        Err(err) => Written::Failed(err),
    }
}

fn failed(written: Result<FailOutcome, Error>) -> Written {
    match written {
        Ok(FailOutcome::Retrying { run_at }) => Written::Moved {
            to: JobStatus::Pending,
            retry_at: Some(run_at),
        },
        Ok(FailOutcome::Failed) => moved(Ok(JobStatus::Failed)),
        Ok(FailOutcome::Cancelled) => moved(Ok(JobStatus::Cancelled)),
        Err(err) => moved(Err(err)),
    }
}

impl CompleterTask {
    /// Write what is queued and stop, once `completer` and every job task's clone are gone.
    pub(crate) async fn finish(self, completer: Completer) {
        drop(completer);
        if tokio::time::timeout(FLUSH_DEADLINE, self.0).await.is_err() {
            warn!(
                "completions not written within {FLUSH_DEADLINE:?}; those jobs will be rescued and rerun"
            );
        }
    }
}

async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Done>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&shared, &batch).await;
        batch.clear();
    }
}

async fn write(shared: &Shared, batch: &[Done]) {
    let max_backoff = shared.settings.max_backoff;
    let rows: Vec<_> = batch
        .iter()
        .map(|d| (d.lease.job_id, d.lease.attempt, &d.result))
        .collect();
    let written =
        retry_while_unreachable("recording successes", &shared.outage, max_backoff, || {
            shared.queue.complete_many(&shared.id, &rows)
        })
        .await;
    let mut refused = std::collections::HashMap::new();
    let completed: HashSet<Uuid> = match written {
        Ok(completed) => completed.into_iter().collect(),
        Err(err) => {
            // One result the database refuses (too large, a NUL in JSON) must not cost the
            // others theirs: write them one by one, and fail the ones that cannot be stored.
            warn!(error.message = %err, jobs = batch.len(), "a batch of results was refused; writing them one by one");
            let mut completed = HashSet::new();
            for (done, row) in batch.iter().zip(&rows) {
                let one = retry_while_unreachable(
                    "recording a success",
                    &shared.outage,
                    max_backoff,
                    || {
                        shared
                            .queue
                            .complete_many(&shared.id, std::slice::from_ref(row))
                    },
                )
                .await;
                match one {
                    Ok(ids) => completed.extend(ids),
                    Err(err) => {
                        let failure = Failure::Permanent {
                            error: "the result could not be stored".to_owned(),
                        };
                        let detail = format!("the result could not be stored: {err}");
                        let written = retry_while_unreachable(
                            "recording a failure",
                            &shared.outage,
                            max_backoff,
                            || {
                                shared
                                    .queue
                                    .fail_with_detail(&done.lease, &failure, Some(&detail))
                            },
                        )
                        .await;
                        refused.insert(done.lease.job_id, (failed(written), detail));
                    }
                }
            }
            completed
        }
    };
    for done in batch {
        let span = info_span!("job", job.id = %done.lease.job_id, job.kind = %done.kind, job.attempt = done.lease.attempt);
        let _entered = span.enter();
        let (written, error) = match refused.remove(&done.lease.job_id) {
            Some((written, detail)) => (written, Some(detail)),
            None if completed.contains(&done.lease.job_id) => (
                Written::Moved {
                    to: JobStatus::Succeeded,
                    retry_at: None,
                },
                None,
            ),
            None => (Written::LeaseLost, None),
        };
        observe(
            shared,
            &done.lease,
            &done.kind,
            Ended::Succeeded,
            &written,
            error.as_deref(),
            Some(done.elapsed),
        );
    }
}
