//! LISTEN/NOTIFY: wake the claim loop when jobs of our kinds are inserted or become due, and
//! deliver cancellation requests for jobs we run. Notifications are hints: any that are missed
//! (reconnects) are covered by the poll interval and the heartbeat's cancellation check.

use std::sync::Arc;

use sqlx::postgres::{PgListener, PgNotification};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::Shared;
use super::inflight::StopReason;
use super::persist::Backoff;

/// Channel of new/claimable jobs (payload: comma-separated kinds, or empty).
pub const JOBS_CHANNEL: &str = "studio_jobs";
/// Channel of cancellation requests for running jobs (payload: job id).
pub const CANCEL_CHANNEL: &str = "studio_jobs_cancel";

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::new(shared.settings.max_backoff);
    loop {
        let connect = async {
            let mut listener = PgListener::connect_with(shared.queue.pool()).await?;
            listener.listen_all([JOBS_CHANNEL, CANCEL_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            connected = connect => connected,
            () = stop.cancelled() => return,
        };
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                debug!("listening for job notifications");
                // Anything inserted while we were not listening.
                shared.wake.notify_one();
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        () = stop.cancelled() => return,
                    };
                    match received {
                        Ok(Some(notification)) => dispatch(&shared, &notification),
                        Ok(None) => {
                            info!("notification connection re-established");
                            shared.wake.notify_one();
                        }
                        Err(err) => {
                            warn!(error.message = %err, "notification connection lost; polling until it is back");
                            break;
                        }
                    }
                }
            }
            Err(err) => warn!(error.message = %err, "cannot LISTEN; polling until it works"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn dispatch(shared: &Shared, notification: &PgNotification) {
    let payload = notification.payload();
    match notification.channel() {
        JOBS_CHANNEL
            if payload.is_empty()
                || payload
                    .split(',')
                    .any(|kind| shared.registry.get(kind).is_some()) =>
        {
            shared.wake.notify_one();
        }
        CANCEL_CHANNEL => {
            if let Ok(job_id) = payload.parse::<Uuid>()
                && shared.inflight.stop(job_id, StopReason::Cancelled)
            {
                info!(job.id = %job_id, "cancellation requested; stopping the job");
            }
        }
        _ => {}
    }
}
