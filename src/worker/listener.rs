//! LISTEN/NOTIFY: wake the claim loop when jobs of our kinds are inserted or become due, and
//! deliver cancellation requests for jobs we run. Notifications are hints: any that are missed
//! (reconnects) are covered by the poll interval and the heartbeat's cancellation check.

use std::sync::Arc;

use sqlx::postgres::{PgListener, PgNotification};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

use super::Shared;
use super::inflight::StopReason;
use super::persist::Backoff;

/// Channel of new/claimable jobs. Payload: comma-separated kinds, or empty (look anyway); a
/// single-job insert adds `#<id>` after its kind.
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
                shared.wake.scan();
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        () = stop.cancelled() => return,
                    };
                    match received {
                        Ok(Some(notification)) => dispatch(&shared, &notification),
                        Ok(None) => {
                            debug!("notification connection re-established");
                            shared.wake.scan();
                        }
                        Err(err) => {
                            shared
                                .outage
                                .failed("listening for notifications; polling meanwhile", &err);
                            break;
                        }
                    }
                }
            }
            Err(err) => shared
                .outage
                .failed("listening for notifications; polling meanwhile", &err),
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
        JOBS_CHANNEL => {
            match parse_jobs_payload(payload, |kind| shared.registry.get(kind).is_some()) {
                Some(Announced::Jobs(ids)) => ids.into_iter().for_each(|id| shared.wake.named(id)),
                Some(Announced::Anything) => shared.wake.scan(),
                None => {}
            }
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

/// What a notification on [`JOBS_CHANNEL`] tells a worker that runs the kinds `runs` accepts.
#[derive(Debug, PartialEq, Eq)]
enum Announced {
    /// These new jobs, and nothing else.
    Jobs(Vec<Uuid>),
    /// Something may be claimable: search the queue.
    Anything,
}

fn parse_jobs_payload(payload: &str, runs: impl Fn(&str) -> bool) -> Option<Announced> {
    if payload.is_empty() {
        return Some(Announced::Anything);
    }
    let (ids, kinds): (Vec<&str>, Vec<&str>) = payload.split(',').partition(|t| t.starts_with('#'));
    if !kinds.iter().any(|kind| runs(kind)) {
        return None;
    }
    let ids: Vec<Uuid> = ids.iter().filter_map(|t| t[1..].parse().ok()).collect();
    // Ids are sent only for one job of one kind; anything else is a search.
    if kinds.len() == 1 && !ids.is_empty() {
        Some(Announced::Jobs(ids))
    } else {
        Some(Announced::Anything)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Option<Announced> {
        parse_jobs_payload(payload, |kind| kind == "render" || kind == "upscale")
    }

    #[test]
    fn a_single_insert_names_its_job() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse(&format!("render,#{id}")),
            Some(Announced::Jobs(vec![id]))
        );
        assert_eq!(parse(&format!("transcode,#{id}")), None);
    }

    #[test]
    fn kinds_alone_or_nothing_mean_search() {
        assert_eq!(parse(""), Some(Announced::Anything));
        assert_eq!(parse("render"), Some(Announced::Anything));
        assert_eq!(parse("transcode,upscale"), Some(Announced::Anything));
        assert_eq!(parse("transcode"), None);
        assert_eq!(parse("render,#not-a-uuid"), Some(Announced::Anything));
    }
}
