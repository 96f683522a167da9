//! Writing through database outages: a transition that fails because the connection dropped is
//! retried with capped exponential backoff until the database answers.

use std::future::Future;
use std::time::Duration;

use super::outage::Outage;
use crate::db::is_transient;
use crate::queue::Error;

/// Capped exponential backoff with jitter, starting at 50 ms.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(50);

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff { next: FIRST, max }
    }

    /// The next wait (doubling, capped, ±20% jitter).
    pub(crate) fn next(&mut self) -> Duration {
        let current = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        current.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// Run `op` until it succeeds or fails for a reason other than a transient database error.
/// The outage is reported once, through `outage`.
pub(crate) async fn persist<T, F, Fut>(
    what: &str,
    outage: &Outage,
    max_backoff: Duration,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new(max_backoff);
    loop {
        match op().await {
            Err(Error::Db(err)) if is_transient(&err) => {
                outage.failed(what, &err);
                tokio::time::sleep(backoff.next()).await;
            }
            other => {
                if other.is_ok() {
                    outage.answered();
                }
                return other;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(300));
        let waits: Vec<Duration> = (0..5).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(40) && waits[0] <= Duration::from_millis(60));
        assert!(waits[1] >= Duration::from_millis(80) && waits[1] <= Duration::from_millis(120));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(360)));
        b.reset();
        assert!(b.next() <= Duration::from_millis(60));
    }
}
