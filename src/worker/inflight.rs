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

    /// Track a newly claimed job; returns its cancellation token. An older attempt of the same
    /// job still tracked here lost its lease (the job was rescued and claimed again): it is told
    /// to stop, and no longer tracked.
    pub(crate) fn insert(&self, job_id: Uuid, attempt: i32) -> CancellationToken {
        let cancel = CancellationToken::new();
        let previous = self.lock().insert(
            job_id,
            Entry {
                attempt,
                cancel: cancel.clone(),
                reason: None,
                renewed: Instant::now(),
            },
        );
        if let Some(old) = previous {
            old.cancel.cancel();
        }
        cancel
    }

    /// Stop tracking `attempt` of a job (its outcome is recorded, or it is abandoned). A newer
    /// attempt of the same job is left alone.
    pub(crate) fn remove(&self, job_id: Uuid, attempt: i32) {
        let mut jobs = self.lock();
        if jobs.get(&job_id).is_some_and(|e| e.attempt == attempt) {
            jobs.remove(&job_id);
        }
    }

    /// Tell a job to stop, whichever attempt runs here. The first reason wins. Returns whether
    /// the job is tracked.
    pub(crate) fn stop(&self, job_id: Uuid, reason: StopReason) -> bool {
        self.stop_where(job_id, reason, |_| true)
    }

    /// Tell `attempt` of a job to stop (not a newer one). Returns whether it is tracked.
    pub(crate) fn stop_attempt(&self, job_id: Uuid, attempt: i32, reason: StopReason) -> bool {
        self.stop_where(job_id, reason, |e| e.attempt == attempt)
    }

    fn stop_where(
        &self,
        job_id: Uuid,
        reason: StopReason,
        matches: impl Fn(&Entry) -> bool,
    ) -> bool {
        let mut jobs = self.lock();
        let Some(entry) = jobs.get_mut(&job_id).filter(|e| matches(e)) else {
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

    /// Why `attempt` of the job was told to stop, if it was. An attempt no longer tracked here
    /// (a newer one replaced it) lost its lease.
    pub(crate) fn reason(&self, job_id: Uuid, attempt: i32) -> Option<StopReason> {
        match self.lock().get(&job_id) {
            Some(entry) if entry.attempt == attempt => entry.reason,
            Some(_) => Some(StopReason::LeaseLost),
            None => None,
        }
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
        assert_eq!(inflight.reason(id, 1), Some(StopReason::Cancelled));
        assert!(
            !inflight.stop(Uuid::new_v4(), StopReason::Shutdown),
            "unknown job"
        );
    }

    #[test]
    fn a_new_attempt_of_the_same_job_supersedes_the_old_one() {
        let inflight = InFlight::default();
        let id = Uuid::new_v4();
        let first = inflight.insert(id, 1);

        let second = inflight.insert(id, 2);
        inflight.remove(id, 1);

        assert!(first.is_cancelled(), "the old attempt is told to stop");
        assert!(!second.is_cancelled());
        assert_eq!(inflight.reason(id, 1), Some(StopReason::LeaseLost));
        assert_eq!(inflight.reason(id, 2), None);
        assert!(
            !inflight.stop_attempt(id, 1, StopReason::LeaseLost),
            "only the old attempt"
        );
        assert_eq!(
            inflight.leases(),
            vec![(id, 2)],
            "removing attempt 1 kept attempt 2"
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
