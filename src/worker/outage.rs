//! One account of a database outage: a warning when the first of the worker's tasks finds the
//! database unavailable, an info line when one finds it answering again, and nothing from the
//! others in between (they say what they retry at debug level). The driver's own lines are quiet
//! by default (`telemetry`). Tasks waiting for the database back (the kinds' registration) are
//! woken by [`Outage::back`]. A transition that fails because the connection dropped is retried
//! through [`retry_while_unreachable`] until the database answers.

use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::db::{Backoff, is_transient};
use crate::queue::Error;
use tracing::{debug, info, warn};

#[derive(Default)]
pub(crate) struct Outage {
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
    back: Notify,
}

impl Outage {
    /// `what` failed because the database is unavailable (`err`): the outage's one warning if
    /// it starts here.
    pub(crate) fn failed(&self, what: &str, err: &dyn Display) {
        if self.down.swap(true, Ordering::AcqRel) {
            debug!(error.message = %err, "{what}: database still unavailable, retrying");
            return;
        }
        if let Ok(mut since) = self.since.lock() {
            *since = Some(Instant::now());
        }
        warn!(error.message = %err, "database unavailable ({what}); retrying until it answers, quietly");
    }

    /// The database answered: the outage's one info line if it ends here; waiters are woken.
    pub(crate) fn answered(&self) {
        if !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let lasted = self
            .since
            .lock()
            .ok()
            .and_then(|mut since| since.take())
            .map(|since| since.elapsed());
        info!(
            outage.seconds = lasted.map(|d| d.as_secs_f64()),
            "database answers again"
        );
        self.back.notify_waiters();
    }

    /// Whether an outage is under way.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Resolves when the database next answers after an outage.
    pub(crate) async fn back(&self) {
        self.back.notified().await;
    }
}

/// Run `op` until it succeeds or fails for a reason other than a transient database error.
/// The outage is reported once, through `outage`.
pub(crate) async fn retry_while_unreachable<T, F, Fut>(
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
