//! This replica's registration as serving its kinds (`control::kinds`), and the warning when a
//! kind has due jobs that no live replica serves.
//!
//! The replica registers before it logs that it started, refreshes on the rescue interval (the
//! row stays valid for [`FRESH_FOR_INTERVALS`] of them, so two missed refreshes are harmless),
//! and unregisters after draining. Each refresh also looks for unserved kinds and logs a warning
//! when one becomes unserved and an info line when it is served again: once per change, not
//! every tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Shared;
use crate::control::kinds::{FRESH_FOR_INTERVALS, Kinds};

fn kinds(shared: &Shared) -> Kinds {
    Kinds::new(shared.queue.pool().clone())
}

/// Register this replica's kinds; whether that worked. A failure is logged (an outage once,
/// through `Outage`); [`run`] tries again as soon as the database answers.
pub(crate) async fn register(shared: &Shared) -> bool {
    let fresh_for = shared.settings.rescue_interval * FRESH_FOR_INTERVALS;
    match kinds(shared)
        .register(&shared.id, &shared.registry.kinds(), fresh_for)
        .await
    {
        Ok(()) => {
            shared.outage.answered();
            true
        }
        Err(crate::control::kinds::Error::Db(err)) if crate::db::is_transient(&err) => {
            shared
                .outage
                .failed("registering the kinds this replica serves", &err);
            false
        }
        Err(err) => {
            warn!(error.message = %err, "could not register the kinds this replica serves; retrying");
            false
        }
    }
}

/// Longest wait before registering again after a failed registration (the database's return
/// also wakes it at once).
const RETRY_AT_MOST: Duration = Duration::from_secs(2);

/// Refresh the registration and watch for unserved kinds until `stop`. `registered`: whether
/// the registration at start worked; while the latest one failed, it is retried as soon as the
/// database answers again (an outage's end, seen by any task), and at least every
/// [`RETRY_AT_MOST`], not only at the next refresh: otherwise a kind this very replica serves
/// would read as unserved for up to a rescue interval after an outage.
pub(crate) async fn run(shared: Arc<Shared>, mut registered: bool, stop: CancellationToken) {
    // Unserved kinds last seen, with their due pending jobs then.
    let mut unserved: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let wait = if registered {
            super::jittered(shared.settings.rescue_interval)
        } else {
            RETRY_AT_MOST.min(shared.settings.rescue_interval)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.outage.back(), if !registered => {}
            () = stop.cancelled() => return,
        }
        registered = register(&shared).await;
        if !registered {
            continue;
        }
        match kinds(&shared).serving().await {
            Ok(serving) => {
                let now: BTreeMap<String, i64> = serving
                    .into_iter()
                    .filter(|k| k.unserved)
                    .map(|k| (k.kind, k.due_pending))
                    .collect();
                for (kind, due) in &now {
                    if !unserved.contains_key(kind) {
                        warn!(job.kind = %kind, due_pending = due,
                              "kind unserved: it has due pending jobs and no live replica serves it");
                    }
                }
                for kind in unserved.keys().filter(|k| !now.contains_key(*k)) {
                    info!(job.kind = %kind, "kind served again (or no job of it is waiting)");
                }
                unserved = now;
            }
            Err(err) => debug!(error.message = %err, "unserved kinds not checked"),
        }
    }
}

/// Remove this replica's registration (graceful shutdown); the kinds stay known.
pub(crate) async fn unregister(shared: &Shared) {
    match kinds(shared).unregister(&shared.id).await {
        Ok(_) => debug!("kinds unregistered"),
        Err(err) => warn!(error.message = %err,
                          "could not unregister this replica's kinds; they lapse on their own"),
    }
}
