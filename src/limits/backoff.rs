//! Retry delays of failed jobs (not the reconnection backoff of database outages): exponential in the attempt number, capped, with jitter so that jobs that failed
//! together (a dependency went down) do not all come back in the same instant.

use std::time::Duration;

/// Exponential backoff: attempt `n` (1-based, the attempt that just failed) waits about
/// `base * 2^(n-1)`, never more than `max`, spread by `±jitter` (a fraction, 0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct RetryBackoff {
    /// Delay after the first failed attempt.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Upper bound for any delay, jitter included.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Relative spread: 0.2 means each delay is drawn from ±20% around the exponential value.
    pub jitter: f64,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryBackoff {
    /// The delay before retrying after `attempt` failed, with a fresh random draw.
    pub fn delay(&self, attempt: i32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }

    /// The delay for a given uniform draw `unit` in `[0, 1)`; pure, for tests.
    pub fn delay_with(&self, attempt: i32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 62);
        let raw = self.base.as_secs_f64() * 2f64.powi(exponent);
        let capped = raw.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * spread).min(self.max.as_secs_f64()).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff() -> RetryBackoff {
        RetryBackoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
            jitter: 0.25,
        }
    }

    proptest! {
        #[test]
        fn delay_stays_within_jitter_of_the_exponential(attempt in 1i32..8, unit in 0.0f64..1.0) {
            let expected = 2.0 * 2f64.powi(attempt - 1);
            let got = backoff().delay_with(attempt, unit).as_secs_f64();
            prop_assert!(got >= expected * 0.75 - 1e-9 && got <= expected * 1.25 + 1e-9, "{got} vs {expected}");
        }

        #[test]
        fn delay_never_exceeds_max(attempt in -5i32..10_000, unit in 0.0f64..1.0) {
            prop_assert!(backoff().delay_with(attempt, unit) <= Duration::from_secs(600));
        }

        #[test]
        fn later_attempts_never_wait_less_before_the_cap(attempt in 1i32..8) {
            let b = RetryBackoff { jitter: 0.0, ..backoff() };
            prop_assert!(b.delay_with(attempt + 1, 0.5) >= b.delay_with(attempt, 0.5));
        }
    }

    #[test]
    fn first_retry_waits_the_base_delay_without_jitter() {
        let b = RetryBackoff {
            jitter: 0.0,
            ..backoff()
        };
        assert_eq!(b.delay_with(1, 0.9), Duration::from_secs(2));
        assert_eq!(b.delay_with(3, 0.1), Duration::from_secs(8));
    }
}
