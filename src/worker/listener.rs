//! The worker's notifications: wake the claim loop when jobs of our kinds are inserted or become
//! due, and deliver cancellation requests for jobs we run. Notifications are hints: any that are
//! missed (reconnects) are covered by a scan at each reconnect, the poll interval and the
//! heartbeat's cancellation check.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

use super::Shared;
use super::inflight::StopReason;
use crate::notify::{self, Announced, Heard};

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let pool = shared.queue.pool().clone();
    notify::listen(
        &pool,
        &[notify::JOBS, notify::CANCEL],
        shared.settings.max_backoff,
        &stop,
        |heard| match heard {
            Heard::Listening => {
                debug!("listening for job notifications");
                // Anything inserted while we were not listening.
                shared.wake.scan();
            }
            Heard::Note { channel, payload } => dispatch(&shared, channel, payload),
            Heard::Lost(err) => shared
                .outage
                .failed("listening for notifications; polling meanwhile", err),
        },
    )
    .await;
}

fn dispatch(shared: &Shared, channel: &str, payload: &str) {
    match channel {
        notify::JOBS => {
            match notify::parse_jobs_payload(payload, |kind| shared.registry.get(kind).is_some()) {
                Some(Announced::Jobs(ids)) => ids.into_iter().for_each(|id| shared.wake.named(id)),
                Some(Announced::Anything) => shared.wake.scan(),
                None => {}
            }
        }
        notify::CANCEL => {
            if let Ok(job_id) = payload.parse::<Uuid>()
                && shared.inflight.stop(job_id, StopReason::Cancelled)
            {
                info!(job.id = %job_id, "cancellation requested; stopping the job");
            }
        }
        _ => {}
    }
}
