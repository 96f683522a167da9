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
    /// Its lease could not be renewed in time (the database is unreachable or slow): the worker
    /// kills it at once, before the lease can expire, and records that it gave the job up.
    LeaseGivenUp,
    /// Its lease is gone (rescued, or moved by another writer): killed at once, nothing is
    /// recorded; the rescuer or the new owner decides.
    LeaseLost,
}

impl StopReason {
    /// Whether the job may already run elsewhere (or soon will): no grace period, and its lease
    /// is no longer renewed.
    pub(crate) fn lease_gone(self) -> bool {
        matches!(self, StopReason::LeaseGivenUp | StopReason::LeaseLost)
    }
}

struct Entry {
    attempt: i32,
    cancel: CancellationToken,
    reason: Option<StopReason>,
    /// When the lease expires at the earliest: the moment the claim or the last renewal that
    /// the database acknowledged was *sent*, plus the lease it granted (the database computes
    /// the expiry from its own clock, later than that moment, so the real expiry is never
    /// earlier than this).
    expires: Instant,
    /// The attempt's handler returned and its outcome is being written: a renewal that no
    /// longer finds the job running means it was just recorded, not that the lease was lost.
    finishing: bool,
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
    /// to stop, and no longer tracked. `expires` is the lease's earliest expiry (see
    /// [`Entry::expires`]).
    pub(crate) fn insert(&self, job_id: Uuid, attempt: i32, expires: Instant) -> CancellationToken {
        let cancel = CancellationToken::new();
        let previous = self.lock().insert(
            job_id,
            Entry {
                attempt,
                cancel: cancel.clone(),
                reason: None,
                expires,
                finishing: false,
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

    /// Note that `attempt`'s handler returned: its outcome is being written.
    pub(crate) fn finishing(&self, job_id: Uuid, attempt: i32) {
        if let Some(entry) = self
            .lock()
            .get_mut(&job_id)
            .filter(|e| e.attempt == attempt)
        {
            entry.finishing = true;
        }
    }

    /// Whether `attempt` of the job is being recorded (see [`InFlight::finishing`]).
    pub(crate) fn is_finishing(&self, job_id: Uuid, attempt: i32) -> bool {
        self.lock()
            .get(&job_id)
            .is_some_and(|e| e.attempt == attempt && e.finishing)
    }

    /// (job id, attempt) of every tracked job whose lease is still wanted (including attempts
    /// being recorded: their writes are fenced by the lease).
    pub(crate) fn leases(&self) -> Vec<(Uuid, i32)> {
        self.lock()
            .iter()
            .filter(|(_, e)| !e.reason.is_some_and(StopReason::lease_gone))
            .map(|(id, e)| (*id, e.attempt))
            .collect()
    }

    /// Note that these leases (job id, attempt) were renewed and now expire at the earliest at
    /// `expires`. A lease of an attempt no longer tracked is ignored.
    pub(crate) fn renewed(&self, leases: impl IntoIterator<Item = (Uuid, i32)>, expires: Instant) {
        let mut jobs = self.lock();
        for (id, attempt) in leases {
            if let Some(entry) = jobs.get_mut(&id).filter(|e| e.attempt == attempt) {
                entry.expires = entry.expires.max(expires);
            }
        }
    }

    /// Running attempts whose lease expires within `margin` of `now`: they must stop before
    /// the lease is gone. Attempts being recorded are not included (nothing is left to stop).
    pub(crate) fn expiring(&self, now: Instant, margin: Duration) -> Vec<(Uuid, i32)> {
        self.lock()
            .iter()
            .filter(|(_, e)| !e.finishing && e.reason.is_none_or(|r| !r.lease_gone()))
            .filter(|(_, e)| e.expires.saturating_duration_since(now) <= margin)
            .map(|(id, e)| (*id, e.attempt))
            .collect()
    }

    /// The earliest lease expiry among running attempts, if any.
    pub(crate) fn earliest_expiry(&self) -> Option<Instant> {
        self.lock()
            .values()
            .filter(|e| !e.finishing && e.reason.is_none_or(|r| !r.lease_gone()))
            .map(|e| e.expires)
            .min()
    }

    /// Number of jobs tracked.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn the_first_stop_reason_wins_and_cancels_the_token() {
        let inflight = InFlight::default();
        let id = Uuid::new_v4();
        let token = inflight.insert(id, 1, later());

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
        let first = inflight.insert(id, 1, later());

        let second = inflight.insert(id, 2, later());
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
        inflight.insert(kept, 1, later());
        inflight.insert(lost, 2, later());

        inflight.stop(lost, StopReason::LeaseLost);

        assert_eq!(inflight.leases(), vec![(kept, 1)]);
    }

    #[test]
    fn leases_expiring_within_the_margin_are_reported_until_renewed() {
        let inflight = InFlight::default();
        let now = Instant::now();
        let (soon, fine, done) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        inflight.insert(soon, 1, now + Duration::from_millis(400));
        inflight.insert(fine, 1, now + Duration::from_secs(10));
        inflight.insert(done, 1, now + Duration::from_millis(100));
        inflight.finishing(done, 1);

        assert_eq!(
            inflight.expiring(now, Duration::from_millis(500)),
            vec![(soon, 1)],
            "only the running attempt near its expiry"
        );
        assert_eq!(
            inflight.earliest_expiry(),
            Some(now + Duration::from_millis(400))
        );

        inflight.renewed([(soon, 1)], now + Duration::from_secs(3));
        assert!(
            inflight
                .expiring(now, Duration::from_millis(500))
                .is_empty()
        );
        assert!(inflight.is_finishing(done, 1));
    }

    #[test]
    fn a_renewal_never_moves_an_expiry_earlier_nor_touches_another_attempt() {
        let inflight = InFlight::default();
        let now = Instant::now();
        let id = Uuid::new_v4();
        inflight.insert(id, 2, now + Duration::from_secs(5));

        inflight.renewed([(id, 2)], now + Duration::from_secs(1));
        inflight.renewed([(id, 1)], now + Duration::from_secs(60));

        assert_eq!(
            inflight.earliest_expiry(),
            Some(now + Duration::from_secs(5))
        );
    }

    #[test]
    fn given_up_leases_are_no_longer_renewed_nor_reported_again() {
        let inflight = InFlight::default();
        let now = Instant::now();
        let id = Uuid::new_v4();
        inflight.insert(id, 1, now);

        assert!(inflight.stop_attempt(id, 1, StopReason::LeaseGivenUp));

        assert!(inflight.leases().is_empty());
        assert!(inflight.expiring(now, Duration::from_secs(1)).is_empty());
    }
}
