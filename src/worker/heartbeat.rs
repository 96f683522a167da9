//! Leases of every job in flight: renewed on a timer, and guarded. Also where the worker learns
//! that a job was cancelled, that a lease was lost, or that it cannot reach the database (then it
//! stops claiming).
//!
//! The guard decides from the lease the database granted: each job's lease expires at the
//! earliest when its last acknowledged claim or renewal was sent, plus the lease (the database
//! starts the lease from its own clock, later). A job whose lease is within
//! [`WorkerSettings::lease_margin`] of that expiry is killed at once and given up, so that it
//! never runs past its lease, where the rescuer of another replica may start it again. A
//! healthy worker renews every `heartbeat_interval`, so its leases never come near the margin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Shared;
use super::inflight::StopReason;
#[cfg(doc)]
use crate::config::WorkerSettings;

/// Longest the guard sleeps between looks (new claims may expire before the next known expiry
/// only if they were claimed after the look, so this bounds how late it could notice).
const GUARD_TICK: Duration = Duration::from_millis(100);

/// How long past a renewal's patience the worker still waits for the database's answer (the
/// cancellation's error, normally).
const RENEWAL_ANSWER: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    tokio::join!(renew(&shared, &stop), guard(&shared, &stop));
}

/// Renew every lease held, every `heartbeat_interval`.
async fn renew(shared: &Shared, stop: &CancellationToken) {
    let settings = &shared.settings;
    let mut ticks = tokio::time::interval(settings.heartbeat_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        // Every tick, jobs or not: the gauge must reach 0 when the last job ends.
        metrics::gauge!("studio_worker_running_jobs").set(shared.inflight.len() as f64);
        let leases = shared.inflight.leases();
        if leases.is_empty() {
            // Nothing to renew; but after an outage something must notice the database is back.
            if (!shared.healthy.load(Ordering::Acquire) || shared.outage.is_down())
                && shared.queue.ping().await.is_ok()
            {
                shared.healthy.store(true, Ordering::Release);
                shared.outage.answered();
                shared.wake.scan();
            }
            continue;
        }
        let sent = Instant::now();
        // A slow renewal is still worth waiting for while it can land before the guard's margin;
        // the interval alone would be too short for sub-second intervals on a busy database.
        // The database gives the renewal up after `patience` (and releases its row locks); the
        // worker waits a little longer, so that it normally hears why, and stops waiting on its
        // own only when the database does not answer at all.
        let patience = settings.heartbeat_interval.max(settings.lease / 4);
        let renewal = shared
            .queue
            .heartbeat(&shared.id, &leases, settings.lease, None, patience);
        let renewed = match tokio::time::timeout(patience + RENEWAL_ANSWER, renewal).await {
            Ok(result) => result,
            Err(_) => Err(crate::queue::Error::Db(sqlx::Error::PoolTimedOut)),
        };
        match renewed {
            Ok(held) => {
                shared.outage.answered();
                if !shared.healthy.swap(true, Ordering::AcqRel) {
                    debug!("heartbeats written again; resuming claims");
                    shared.wake.scan();
                }
                let attempts: HashMap<_, _> = leases.iter().copied().collect();
                shared.inflight.renewed(
                    held.iter()
                        .filter_map(|h| attempts.get(&h.job_id).map(|a| (h.job_id, *a))),
                    sent + settings.lease,
                );
                for h in held.iter().filter(|h| h.cancel_requested) {
                    if shared.inflight.stop(h.job_id, StopReason::Cancelled) {
                        info!(job.id = %h.job_id, "cancellation requested; stopping the job");
                    }
                }
                let held: std::collections::HashSet<_> = held.iter().map(|h| h.job_id).collect();
                for (job_id, attempt) in leases.iter().filter(|(id, _)| !held.contains(id)) {
                    // Not running under our lease any more. An attempt being recorded was most
                    // likely just finished by us; its write, fenced by the lease, tells.
                    if shared.inflight.is_finishing(*job_id, *attempt) {
                        continue;
                    }
                    if shared
                        .inflight
                        .stop_attempt(*job_id, *attempt, StopReason::LeaseLost)
                    {
                        warn!(job.id = %job_id, "lease lost (rescued or moved by another writer); killing the job");
                    }
                }
            }
            Err(err) => {
                shared.healthy.store(false, Ordering::Release);
                // Claims wait until a renewal lands; the outage's one line says so.
                shared
                    .outage
                    .failed("renewing leases; not claiming until a renewal lands", &err);
            }
        }
    }
}

/// Kill and give up every job whose lease is about to expire unrenewed. Runs beside the
/// renewals, so that a renewal that hangs cannot let a lease run out under a running job.
async fn guard(shared: &Shared, stop: &CancellationToken) {
    let margin = shared.settings.lease_margin();
    loop {
        let now = Instant::now();
        for (job_id, attempt) in shared.inflight.expiring(now, margin) {
            if shared
                .inflight
                .stop_attempt(job_id, attempt, StopReason::LeaseGivenUp)
            {
                error!(job.id = %job_id, job.attempt = attempt, "lease could not be renewed in time; killing the job and giving it up so it cannot run twice");
            }
        }
        let next = shared
            .inflight
            .earliest_expiry()
            .map_or(now + GUARD_TICK, |expiry| {
                expiry
                    .checked_sub(margin)
                    .unwrap_or(now)
                    .min(now + GUARD_TICK)
            });
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = stop.cancelled() => return,
        }
    }
}
