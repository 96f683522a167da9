//! Expired-lease rescue. Every replica runs it; the statement's SKIP LOCKED and re-check make
//! concurrent rescuers harmless, so no leader election is needed.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Shared;

/// Jobs rescued per statement.
const BATCH: u32 = 100;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let wait = super::jittered(shared.settings.rescue_interval);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        loop {
            match shared.queue.rescue_expired(BATCH, None).await {
                Ok(rescued) => {
                    for job in &rescued {
                        metrics::counter!("studio_jobs_rescued_total", "kind" => job.kind.clone())
                            .increment(1);
                        warn!(job.id = %job.id, job.kind = %job.kind, job.state.to = %job.status,
                              previous_worker = %job.previous_worker, "rescued a job whose lease expired");
                    }
                    if rescued.len() < BATCH as usize {
                        break;
                    }
                }
                Err(err) => {
                    debug!(error.message = %err, "rescue skipped: database unavailable");
                    break;
                }
            }
        }
    }
}
