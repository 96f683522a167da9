//! The jobs this worker has claimed and not yet recorded: their leases, their cancellation
//! tokens and, once decided, why they were told to stop.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a running job was told to stop; decides what is recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its owner or an operator cancelled it: recorded as `cancelled`.
    Cancelled,
    /// It ran past its kind's timeout: a retryable failure.
    TimedOut,
    /// The worker is shutting down: back to `pending`, attempt not used.
    Shutdown,
    /// Its lease is gone (or about to be, with the database unreachable): nothing is recorded;
    /// the rescuer (or the new owner) decides.
    LeaseLost,
}

struct Entry {
    attempt: i32,
    cancel: CancellationToken,
    reason: Option<StopReason>,
    renewed: Instant,
}

/// Jobs in flight, keyed by job id.
#[derive(Default)]
pub(crate) struct InFlight {
    jobs: Mutex<HashMap<Uuid, Entry>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removals), so a poisoned lock is still usable.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Track a newly claimed job; returns its cancellation token.
    pub(crate) fn insert(&self, job_id: Uuid, attempt: i32) -> CancellationToken {
        let cancel = CancellationToken::new();
        self.lock().insert(
            job_id,
            Entry {
                attempt,
                cancel: cancel.clone(),
                reason: None,
                renewed: Instant::now(),
            },
        );
        cancel
    }

    /// Stop tracking a job (its outcome is recorded, or it is abandoned).
    pub(crate) fn remove(&self, job_id: Uuid) {
        self.lock().remove(&job_id);
    }

    /// Tell a job to stop. The first reason wins. Returns whether the job is tracked.
    pub(crate) fn stop(&self, job_id: Uuid, reason: StopReason) -> bool {
        let mut jobs = self.lock();
        let Some(entry) = jobs.get_mut(&job_id) else {
            return false;
        };
        entry.reason.get_or_insert(reason);
        entry.cancel.cancel();
        true
    }

    /// Tell every job to stop; returns how many were told.
    pub(crate) fn stop_all(&self, reason: StopReason) -> usize {
        let mut jobs = self.lock();
        for entry in jobs.values_mut() {
            entry.reason.get_or_insert(reason);
            entry.cancel.cancel();
        }
        jobs.len()
    }

    /// Why the job was told to stop, if it was.
    pub(crate) fn reason(&self, job_id: Uuid) -> Option<StopReason> {
        self.lock().get(&job_id).and_then(|e| e.reason)
    }

    /// (job id, attempt) of every tracked job whose lease is still wanted.
    pub(crate) fn leases(&self) -> Vec<(Uuid, i32)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.reason != Some(StopReason::LeaseLost))
            .map(|(id, e)| (*id, e.attempt))
            .collect()
    }

    /// Note that these leases were renewed at `at`.
    pub(crate) fn renewed(&self, job_ids: impl IntoIterator<Item = Uuid>, at: Instant) {
        let mut jobs = self.lock();
        for id in job_ids {
            if let Some(entry) = jobs.get_mut(&id) {
                entry.renewed = at;
            }
        }
    }

    /// Jobs whose lease was last renewed more than `age` ago.
    pub(crate) fn stale(&self, age: Duration) -> Vec<Uuid> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.renewed.elapsed() > age)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether the job is tracked.
    pub(crate) fn contains(&self, job_id: Uuid) -> bool {
        self.lock().contains_key(&job_id)
    }

    /// Number of jobs tracked.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins_and_cancels_the_token() {
        let inflight = InFlight::default();
        let id = Uuid::new_v4();
        let token = inflight.insert(id, 1);

        assert!(inflight.stop(id, StopReason::Cancelled));
        assert!(inflight.stop(id, StopReason::Shutdown));

        assert!(token.is_cancelled());
        assert_eq!(inflight.reason(id), Some(StopReason::Cancelled));
        assert!(
            !inflight.stop(Uuid::new_v4(), StopReason::Shutdown),
            "unknown job"
        );
    }

    #[test]
    fn lost_leases_are_no_longer_renewed() {
        let inflight = InFlight::default();
        let (kept, lost) = (Uuid::new_v4(), Uuid::new_v4());
        inflight.insert(kept, 1);
        inflight.insert(lost, 2);

        inflight.stop(lost, StopReason::LeaseLost);

        assert_eq!(inflight.leases(), vec![(kept, 1)]);
    }
}
