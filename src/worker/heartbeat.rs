//! Lease renewal for every job in flight. Also where the worker learns that a job was cancelled,
//! that a lease was lost, or that it cannot reach the database (then it stops claiming, and
//! stops jobs whose lease would expire before it can be renewed, so that no job ever runs in two
//! places at once).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Shared;
use super::inflight::StopReason;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let settings = &shared.settings;
    let mut ticks = tokio::time::interval(settings.heartbeat_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A lease renewed longer ago than this may expire before the next heartbeat could renew it
    // (one interval to the next tick, one for that heartbeat's own time limit).
    let unsafe_after = settings
        .lease
        .saturating_sub(settings.heartbeat_interval * 2);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        // Checked on every tick, not only after a failed heartbeat: a heartbeat that hangs (a
        // dead connection) must not let leases run out under running jobs.
        for job_id in shared.inflight.stale(unsafe_after) {
            if shared.inflight.stop(job_id, StopReason::LeaseLost) {
                error!(job.id = %job_id, "lease could not be renewed in time; stopping the job so it cannot run twice");
            }
        }
        let leases = shared.inflight.leases();
        if leases.is_empty() {
            // Nothing to renew; but after an outage something must notice the database is back.
            if !shared.healthy.load(Ordering::Acquire) && shared.queue.ping().await.is_ok() {
                shared.healthy.store(true, Ordering::Release);
                info!("database reachable again; resuming claims");
                shared.wake.scan();
            }
            continue;
        }
        let sent = Instant::now();
        let renewal = shared
            .queue
            .heartbeat(&shared.id, &leases, settings.lease, None);
        let renewed = match tokio::time::timeout(settings.heartbeat_interval, renewal).await {
            Ok(result) => result,
            Err(_) => Err(crate::queue::Error::Db(sqlx::Error::PoolTimedOut)),
        };
        match renewed {
            Ok(held) => {
                if !shared.healthy.swap(true, Ordering::AcqRel) {
                    info!("heartbeats written again; resuming claims");
                    shared.wake.scan();
                }
                shared.inflight.renewed(held.iter().map(|h| h.job_id), sent);
                for h in held.iter().filter(|h| h.cancel_requested) {
                    if shared.inflight.stop(h.job_id, StopReason::Cancelled) {
                        info!(job.id = %h.job_id, "cancellation requested; stopping the job");
                    }
                }
                let held: HashSet<_> = held.iter().map(|h| h.job_id).collect();
                for (job_id, attempt) in leases.iter().filter(|(id, _)| !held.contains(id)) {
                    if shared
                        .inflight
                        .stop_attempt(*job_id, *attempt, StopReason::LeaseLost)
                    {
                        warn!(job.id = %job_id, "lease lost (rescued or moved by another writer); stopping the job");
                    }
                }
            }
            Err(err) => {
                if shared.healthy.swap(false, Ordering::AcqRel) {
                    error!(error.message = %err, "heartbeat failed or timed out; not claiming new jobs until it succeeds");
                }
            }
        }
        metrics::gauge!("studio_worker_running_jobs").set(shared.inflight.len() as f64);
    }
}
