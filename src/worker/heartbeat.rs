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
    // A lease renewed longer ago than this may expire before the next successful heartbeat.
    let unsafe_after = settings.lease.saturating_sub(settings.heartbeat_interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let leases = shared.inflight.leases();
        if leases.is_empty() {
            // Nothing to renew; but after an outage something must notice the database is back.
            if !shared.healthy.load(Ordering::Acquire) && shared.queue.ping().await.is_ok() {
                shared.healthy.store(true, Ordering::Release);
                info!("database reachable again; resuming claims");
                shared.wake.notify_one();
            }
            continue;
        }
        let sent = Instant::now();
        match shared
            .queue
            .heartbeat(&shared.id, &leases, settings.lease, None)
            .await
        {
            Ok(held) => {
                if !shared.healthy.swap(true, Ordering::AcqRel) {
                    info!("heartbeats written again; resuming claims");
                    shared.wake.notify_one();
                }
                shared.inflight.renewed(held.iter().map(|h| h.job_id), sent);
                for h in held.iter().filter(|h| h.cancel_requested) {
                    if shared.inflight.stop(h.job_id, StopReason::Cancelled) {
                        info!(job.id = %h.job_id, "cancellation requested; stopping the job");
                    }
                }
                let held: HashSet<_> = held.iter().map(|h| h.job_id).collect();
                for (job_id, _) in leases.iter().filter(|(id, _)| !held.contains(id)) {
                    if shared.inflight.contains(*job_id) {
                        warn!(job.id = %job_id, "lease lost (rescued or moved by another writer); stopping the job");
                        shared.inflight.stop(*job_id, StopReason::LeaseLost);
                    }
                }
            }
            Err(err) => {
                if shared.healthy.swap(false, Ordering::AcqRel) {
                    error!(error.message = %err, "heartbeat failed; not claiming new jobs until it succeeds");
                }
                for job_id in shared.inflight.stale(unsafe_after) {
                    if shared.inflight.stop(job_id, StopReason::LeaseLost) {
                        error!(job.id = %job_id, "lease could not be renewed in time; stopping the job so it cannot run twice");
                    }
                }
            }
        }
        metrics::gauge!("studio_worker_running_jobs").set(shared.inflight.len() as f64);
    }
}
