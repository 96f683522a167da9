//! What a job kind may do: its limits, in one value, parsed once at load (`[kinds.<k>]`) or
//! given by an embedder ([`crate::handlers::KindRuntime`]).
//!
//! The ground floor: this module imports nothing of the crate. Everything that enforces a
//! limit reads it from a [`KindLimits`]: the worker's slots (`concurrency`), the claim's policy
//! (`max_running`, `rate_limit`, built once by `queue::ClaimPolicy::for_kinds`), the attempt
//! (`timeout`), the outcome (`backoff`), and the database's default attempts of the kind
//! (`max_attempts`, learned when a replica registers the kind).

mod backoff;
mod rate;

use std::time::Duration;

pub use backoff::RetryBackoff;
pub use rate::{RateLimit, RateParseError, Start};

/// A kind's attempt timeout when none is configured (10 minutes).
pub const DEFAULT_KIND_TIMEOUT: Duration = Duration::from_secs(600);

/// The limits of one job kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindLimits {
    /// At most this many jobs of the kind at once in this process (`None`: the worker's
    /// `concurrency`; never more than it).
    pub concurrency: Option<usize>,
    /// At most this many jobs of the kind running at once across all replicas (e.g. the slots
    /// of a GPU service). `None`: no cluster-wide cap.
    pub max_running: Option<u32>,
    /// At most this many starts of the kind in any window of a period, across all replicas,
    /// spread one per `period / count` unless its burst allows more. `None`: no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// An attempt running longer than this is stopped and counted as a retryable failure.
    pub timeout: Duration,
    /// Delay between attempts.
    pub backoff: RetryBackoff,
    /// Attempts of a job of the kind whose writer gave none (`None`: the database's default, 3).
    pub max_attempts: Option<i32>,
}

impl Default for KindLimits {
    /// No limit of its own: the worker's concurrency, the default timeout and backoff, no
    /// cluster-wide cap or rate, the database's default attempts.
    fn default() -> Self {
        KindLimits {
            concurrency: None,
            max_running: None,
            rate_limit: None,
            timeout: DEFAULT_KIND_TIMEOUT,
            backoff: RetryBackoff::default(),
            max_attempts: None,
        }
    }
}

impl KindLimits {
    /// The kind's slots in a process whose slots are `worker_concurrency`: its own
    /// `concurrency`, never more than the worker's.
    #[must_use]
    pub fn slots(&self, worker_concurrency: usize) -> usize {
        self.concurrency
            .map_or(worker_concurrency, |c| c.min(worker_concurrency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_slots_never_exceed_the_workers() {
        let own = |concurrency| KindLimits {
            concurrency,
            ..KindLimits::default()
        };
        assert_eq!(own(None).slots(16), 16);
        assert_eq!(own(Some(4)).slots(16), 4);
        assert_eq!(own(Some(40)).slots(16), 16);
    }
}
