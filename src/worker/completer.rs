//! Successful attempts, written in batches: each write takes everything that finished while the
//! previous one was in flight, so an idle worker writes at once and a busy one writes hundreds
//! of completions per statement.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Shared;
use super::persist::persist;
use std::collections::HashSet;

use uuid::Uuid;

use crate::queue::{Failure, Lease};

/// Most completions per statement.
const MAX_BATCH: usize = 1000;
/// Completions waiting to be written before job tasks wait for room.
const QUEUE_LIMIT: usize = 10_000;
/// At shutdown, how long the last writes may take.
const FLUSH_DEADLINE: Duration = Duration::from_secs(15);

struct Done {
    lease: Lease,
    kind: String,
    result: Value,
}

/// Handle for submitting successes (one clone per job task).
#[derive(Clone)]
pub(crate) struct Completer {
    tx: mpsc::Sender<Done>,
}

/// The writing task; [`CompleterTask::finish`] flushes it.
pub(crate) struct CompleterTask(JoinHandle<()>);

impl Completer {
    pub(crate) fn start(shared: Arc<Shared>) -> (Self, CompleterTask) {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        (
            Completer { tx },
            CompleterTask(tokio::spawn(write_loop(shared, rx))),
        )
    }

    /// Queue a success for writing.
    pub(crate) async fn submit(&self, lease: Lease, kind: String, result: Value) {
        if self
            .tx
            .send(Done {
                lease,
                kind,
                result,
            })
            .await
            .is_err()
        {
            // The writer stops only after every sender is gone, so this cannot happen.
            warn!("completion writer gone; the lease will expire and the job rerun");
        }
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
    let written = persist("recording successes", max_backoff, || {
        shared.queue.complete_many(&shared.id, &rows)
    })
    .await;
    let mut failed = HashSet::new();
    let completed: HashSet<Uuid> = match written {
        Ok(completed) => completed.into_iter().collect(),
        Err(err) => {
            // One result the database refuses (too large, a NUL in JSON) must not cost the
            // others theirs: write them one by one, and fail the ones that cannot be stored.
            warn!(error.message = %err, jobs = batch.len(), "a batch of results was refused; writing them one by one");
            let mut completed = HashSet::new();
            for (done, row) in batch.iter().zip(&rows) {
                let one = persist("recording a success", max_backoff, || {
                    shared
                        .queue
                        .complete_many(&shared.id, std::slice::from_ref(row))
                })
                .await;
                match one {
                    Ok(ids) => completed.extend(ids),
                    Err(err) => {
                        let failure = Failure::Permanent {
                            error: format!("the result could not be stored: {err}"),
                        };
                        let recorded = persist("recording a failure", max_backoff, || {
                            shared.queue.fail(&done.lease, &failure)
                        })
                        .await;
                        if recorded.is_ok() {
                            failed.insert(done.lease.job_id);
                            metrics::counter!("studio_jobs_failed_total", "kind" => done.kind.clone()).increment(1);
                            warn!(job.id = %done.lease.job_id, job.state.to = "failed", error.message = %err, "result refused by the database; job failed");
                        }
                    }
                }
            }
            completed
        }
    };
    for done in batch {
        if completed.contains(&done.lease.job_id) {
            metrics::counter!("studio_jobs_succeeded_total", "kind" => done.kind.clone())
                .increment(1);
            info!(job.id = %done.lease.job_id, job.kind = %done.kind, job.attempt = done.lease.attempt, job.state.to = "succeeded", "job succeeded");
        } else if !failed.contains(&done.lease.job_id) {
            metrics::counter!("studio_jobs_lease_lost_total", "kind" => done.kind.clone())
                .increment(1);
            warn!(job.id = %done.lease.job_id, "lease lost before the result was written; it was dropped");
        }
        shared
            .inflight
            .remove(done.lease.job_id, done.lease.attempt);
    }
}
