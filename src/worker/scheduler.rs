//! Fires the configured schedules: sleeps until the next fire time of any schedule, then
//! enqueues what is due. Every replica runs it; which replica's insert creates a fire time's
//! job is decided by the database's key, not by timing (`control::schedule`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::Shared;
use crate::control::Control;
use crate::control::autoscale::{self, NextFire};
use crate::control::kinds::Kinds;
use crate::control::schedule::{Fired, Scheduler, next_fire};
use crate::db::Backoff;
use crate::queue::Error;

/// The longest sleep between two looks, so a clock step (NTP, a suspended VM) is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub(crate) async fn run(shared: Arc<Shared>, mut scheduler: Scheduler, stop: CancellationToken) {
    let served = shared.registry.kinds();
    for (name, schedule) in scheduler.schedules() {
        // A maintenance process serves no kind: nothing to say about each schedule.
        if !served.is_empty() && !served.contains(&schedule.kind) {
            info!(
                schedule = %name,
                kind = %schedule.kind,
                "schedule's kind is not served by this replica: its jobs wait for a replica that serves it"
            );
        }
    }
    let pool = shared.queue.pool().clone();
    let kinds = Control::new(pool.clone()).kinds();
    let mut declared = false;
    let mut backoff = Backoff::new(shared.settings.max_backoff);
    loop {
        let now = Utc::now();
        if !declared {
            match declare(&kinds, &scheduler).await {
                Ok(()) => declared = true,
                // The tick below meets the same database and backs off; declaring is retried.
                Err(err) => debug!(error.message = %err, "schedules' kinds not declared yet"),
            }
        }
        let wait = match scheduler.tick(&pool, now).await {
            Ok(tick) => {
                backoff.reset();
                for fired in tick.fired {
                    report(fired);
                }
                publish_next_fires(&pool, &scheduler).await;
                for (name, at) in tick.last {
                    metrics::gauge!("studio_schedule_last_fire_timestamp_seconds", "schedule" => name)
                        .set(at.timestamp() as f64);
                }
                // A fire time already past (the tick took long) is looked at again at once.
                tick.next.map_or(MAX_SLEEP, |next| {
                    (next - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(MAX_SLEEP)
                })
            }
            Err(err) => {
                let delay = backoff.next();
                shared.outage.failed("firing schedules", &err);
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How long a published next fire time counts for the autoscaler: three of the longest sleeps
/// between two ticks, each of which publishes again.
const NEXT_FIRE_FRESH_FOR: Duration = Duration::from_secs(3 * 60);

/// Tell the autoscaling demand (migration 0025) when each schedule fires next, so that a
/// worker is started for it while none runs. A failure is logged; the next tick publishes again.
async fn publish_next_fires(pool: &sqlx::PgPool, scheduler: &Scheduler) {
    let now = Utc::now();
    let fires: Vec<NextFire> = scheduler
        .schedules()
        .iter()
        .filter_map(|(name, schedule)| {
            Some(NextFire {
                schedule: name.clone(),
                kind: schedule.kind.clone(),
                user: schedule.user,
                at: next_fire(schedule, now)?,
            })
        })
        .collect();
    if let Err(err) = autoscale::publish_next_fires(pool, &fires, NEXT_FIRE_FRESH_FOR).await {
        debug!(error.message = %err, "schedules' next fire times not published for the autoscaler");
    }
}

/// A schedule in the configuration declares its kind (`kinds declare`), as its replicas would
/// register it: without this, every fire time of a kind no replica has served yet would be
/// refused as unknown. A mistyped kind then shows up as unserved (`kinds`, `/metrics`, a log
/// line) instead of as an error at each fire time.
async fn declare(kinds: &Kinds, scheduler: &Scheduler) -> crate::control::Result<()> {
    for (name, schedule) in scheduler.schedules() {
        if kinds
            .declare(&schedule.kind, Some(&format!("schedule:{name}")))
            .await?
        {
            info!(schedule = %name, kind = %schedule.kind, "schedule declared its kind");
        }
    }
    Ok(())
}

fn report(fired: Fired) {
    match fired {
        Fired::Enqueued {
            schedule,
            fire_time,
            job_id,
        } => {
            info!(%schedule, %fire_time, job.id = %job_id, "schedule fired: job enqueued");
            metrics::counter!("studio_schedule_fires_total", "schedule" => schedule).increment(1);
        }
        Fired::Taken {
            schedule,
            fire_time,
        } => {
            debug!(%schedule, %fire_time, "schedule fired: another replica enqueued the job");
        }
        Fired::Skipped {
            schedule,
            fire_time,
        } => {
            info!(%schedule, %fire_time, "schedule missed a fire time during downtime: skipped (catch_up = \"skip\")");
        }
        Fired::Refused {
            schedule,
            fire_time,
            error,
        } => {
            let check = match &error {
                Error::UnknownUser(_) => format!("schedules.{schedule}.user"),
                Error::UnknownKind(_) => format!("schedules.{schedule}.kind (`kinds declare`)"),
                _ => format!("schedules.{schedule}"),
            };
            error!(%schedule, %fire_time, error.message = %error,
                   "schedule could not enqueue its job: check {check}");
            metrics::counter!("studio_schedule_errors_total", "schedule" => schedule).increment(1);
        }
    }
}
