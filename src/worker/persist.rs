//! Writing through database outages: a transition that fails because the connection dropped is
//! retried with capped exponential backoff until the database answers.

use std::future::Future;
use std::time::Duration;

use super::outage::Outage;
use crate::db::{Backoff, is_transient};
use crate::queue::Error;

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
