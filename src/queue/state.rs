//! Job status and the legal transitions between statuses.
//!
//! The database enforces the same rules (`public.studio_job_transition_allowed`, migration 0003);
//! this copy lets Rust code reason about states without a round trip, and the integration tests
//! check that the two agree on every pair.

use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. Stored as text in `studio_jobs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be claimed once `run_at` has passed. In: creation, a retryable failure, an
    /// expired lease, a worker shutdown, an operator's retry. Out: claimed, or cancelled.
    Pending,
    /// Claimed by one worker, which holds a lease it keeps extending. Out: succeeded, failed,
    /// cancelled, or back to pending.
    Running,
    /// The handler returned a result. Terminal (an operator may retry it).
    Succeeded,
    /// A permanent error, or a retryable one with no attempts left. Terminal.
    Failed,
    /// Cancelled by its owner or an operator. Terminal.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The value stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job has finished (only an operator's retry moves it again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether `self -> to` is a legal status change. `attempt_delta` is the new attempt minus the
    /// old one: a claim (pending -> running) must use exactly one attempt.
    pub fn can_become(self, to: JobStatus, attempt_delta: i32) -> bool {
        use JobStatus::*;
        match (self, to) {
            (Pending, Running) => attempt_delta == 1,
            (Pending, Cancelled) => true,
            (Running, Succeeded | Failed | Cancelled | Pending) => true,
            (Succeeded | Failed | Cancelled, Pending) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is not one of [`JobStatus::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown job status {0:?} (expected pending, running, succeeded, failed or cancelled)")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl TryFrom<String> for JobStatus {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = JobStatus> {
        proptest::sample::select(JobStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn text_form_round_trips(status in any_status()) {
            prop_assert_eq!(status.as_str().parse::<JobStatus>().ok(), Some(status));
        }

        #[test]
        fn only_pending_leaves_a_terminal_status(from in any_status(), to in any_status(), d in -2i32..3) {
            if from.is_terminal() && from.can_become(to, d) {
                prop_assert_eq!(to, JobStatus::Pending);
            }
        }

        #[test]
        fn a_claim_uses_exactly_one_attempt(d in -5i32..5) {
            prop_assert_eq!(JobStatus::Pending.can_become(JobStatus::Running, d), d == 1);
        }
    }

    #[test]
    fn success_requires_running_first() {
        assert!(!JobStatus::Pending.can_become(JobStatus::Succeeded, 0));
        assert!(JobStatus::Running.can_become(JobStatus::Succeeded, 0));
        assert!(!JobStatus::Cancelled.can_become(JobStatus::Succeeded, 0));
        assert!(!JobStatus::Succeeded.can_become(JobStatus::Running, 1));
    }
}
